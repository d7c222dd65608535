//! Writes of one applied request: every change of the request shares main revision
//! `begin + 1` and takes the next sub revision, as in etcd's `storeTxnWrite`.

use std::sync::Arc;

use redb::{Table, WriteTransaction};

use crate::mvcc::codec::{encode_history, encode_i64};
use crate::mvcc::error::StorageError;
use crate::mvcc::key_index::KeyIndex;
use crate::mvcc::tables::{KeySpan, KvTables, Revisions};
use crate::storage::schema::{
    KV_HISTORY, KV_LATEST, META, META_COMPACT_REVISION, META_REVISION, REV_KIND_PUT,
    REV_KIND_TOMBSTONE,
};
use baton_proto::mvccpb::{Event, KeyValue, event::EventType};

type WriteTables<'t> =
    KvTables<Table<'t, &'static [u8], &'static [u8]>, Table<'t, (i64, i64), &'static [u8]>>;

/// The tables of one write transaction plus the revision bookkeeping of one request.
pub struct WriteCtx<'t> {
    pub tables: WriteTables<'t>,
    meta: Table<'t, &'static str, &'static [u8]>,
    /// Store revision before this request.
    pub begin: i64,
    pub(crate) compact: i64,
    /// The transaction the tables belong to, for lookups in other tables (leases).
    txn: &'t WriteTransaction,
    /// Changes made so far; also the sub revision of the next one.
    changes: i64,
    events: Vec<Event>,
}

impl<'t> WriteCtx<'t> {
    /// Opens the KV tables of `txn`; changes are recorded in `index` too, which must be the
    /// index of this transaction's database.
    pub(crate) fn open(
        txn: &'t WriteTransaction,
        index: &Arc<KeyIndex>,
    ) -> Result<Self, StorageError> {
        let meta = txn.open_table(META)?;
        let revs = Revisions::load(&meta)?;
        if revs.compact > revs.current {
            return Err(StorageError::Invariant(format!(
                "compacted revision {} is past the current revision {}",
                revs.compact, revs.current
            )));
        }
        Ok(WriteCtx {
            tables: KvTables {
                latest: txn.open_table(KV_LATEST)?,
                index: index.clone(),
                history: txn.open_table(KV_HISTORY)?,
            },
            meta,
            begin: revs.current,
            compact: revs.compact,
            txn,
            changes: 0,
            events: Vec::new(),
        })
    }

    /// The write transaction; it must not be used to open a table this context holds open.
    pub(crate) fn txn(&self) -> &'t WriteTransaction {
        self.txn
    }

    /// The revision this request's changes get.
    pub(crate) fn write_rev(&self) -> i64 {
        self.begin + 1
    }

    /// The newest revision reads inside this request see (etcd's `storeTxnWrite.Range`).
    pub fn view_rev(&self) -> i64 {
        if self.changes > 0 {
            self.begin + 1
        } else {
            self.begin
        }
    }

    /// Writes `key` = `value`: 1 read, 2 inserts and a key index entry. The event carries the
    /// previous KeyValue.
    pub fn put(&mut self, key: &[u8], value: Vec<u8>, lease: i64) -> Result<(), StorageError> {
        let prev = self.tables.latest_get(key)?;
        self.put_over(key, value, lease, prev)
    }

    /// [`Self::put`] for a caller that has just read `prev`, the key's live KeyValue.
    pub(crate) fn put_over(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        lease: i64,
        prev: Option<KeyValue>,
    ) -> Result<(), StorageError> {
        let rev = self.write_rev();
        let sub = self.changes;
        if let Some(prev) = &prev {
            check_prev(key, prev, rev)?;
        }
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(0, |p| p.version) + 1,
            value,
            lease,
        };
        let record = encode_history(REV_KIND_PUT, &kv);
        self.tables.latest.insert(key, &record[1..])?;
        self.tables.history.insert((rev, sub), record.as_slice())?;
        self.tables.index.record(key, rev, sub, false);
        self.changes += 1;
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev,
        });
        Ok(())
    }

    /// Deletes every live key of `span`; returns their KeyValues before deletion, in key order.
    pub fn delete_span(&mut self, span: KeySpan<'_>) -> Result<Vec<KeyValue>, StorageError> {
        let view = self.view_rev();
        let doomed = self.tables.scan(span, view, view, None)?.kvs;
        let rev = self.write_rev();
        for prev in &doomed {
            let sub = self.changes;
            let tomb = KeyValue {
                key: prev.key.clone(),
                mod_revision: rev,
                ..Default::default()
            };
            let record = encode_history(REV_KIND_TOMBSTONE, &tomb);
            self.tables.latest.remove(prev.key.as_slice())?;
            self.tables.history.insert((rev, sub), record.as_slice())?;
            self.tables.index.record(&prev.key, rev, sub, true);
            self.changes += 1;
            self.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(tomb),
                prev_kv: Some(prev.clone()),
            });
        }
        Ok(doomed)
    }

    pub(crate) fn set_compact(&mut self, rev: i64) -> Result<(), StorageError> {
        self.meta
            .insert(META_COMPACT_REVISION, encode_i64(rev).as_slice())?;
        self.compact = rev;
        Ok(())
    }

    /// Records the new store revision if anything changed; returns the events in order.
    pub(crate) fn finish(mut self) -> Result<Vec<Event>, StorageError> {
        self.finish_request()
    }

    /// [`Self::finish`] for a context that stays open for the next request of the same
    /// transaction: that request starts at the revision this one ends at.
    pub fn finish_request(&mut self) -> Result<Vec<Event>, StorageError> {
        if self.changes > 0 {
            self.begin += 1;
            self.meta
                .insert(META_REVISION, encode_i64(self.begin).as_slice())?;
            self.changes = 0;
        }
        Ok(std::mem::take(&mut self.events))
    }
}

/// A key's live KeyValue must be older than the write replacing it, and its versions must have
/// counted up from 1: otherwise revisions went back or a version would not grow.
fn check_prev(key: &[u8], prev: &KeyValue, rev: i64) -> Result<(), StorageError> {
    if prev.mod_revision < rev
        && prev.version >= 1
        && 0 < prev.create_revision
        && prev.create_revision <= prev.mod_revision
    {
        return Ok(());
    }
    Err(StorageError::Invariant(format!(
        "put of {:?} at revision {rev} over a live value with create revision {}, mod revision \
         {} and version {}",
        String::from_utf8_lossy(key),
        prev.create_revision,
        prev.mod_revision,
        prev.version
    )))
}
