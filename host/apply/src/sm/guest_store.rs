//! The store a guest call sees: reads go to the batch's write transaction (so they see earlier
//! commands of the same batch), writes are buffered here and reach mvcc only if the call
//! succeeds — a trap halfway through a call leaves no partial writes. A read-only call, served
//! outside the log, reads a read transaction and may not write at all.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};
use std::rc::Rc;
use std::sync::Arc;

use prost::Message;
use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, WriteTransaction};

use baton_proto::mvccpb::KeyValue;
use baton_store::mvcc::error::{KvError, StorageError};
use baton_store::mvcc::tables::KeySpan;
use baton_store::mvcc::write::WriteCtx;
use baton_store::ops::shared_write::SharedWriteCtx;
use baton_store::storage::schema::{KV_LATEST, LEASES};
use baton_wasm::{GuestStore, LeaseFacts, StoreFailure, StoredKv, Visit};

/// A key's buffered change: `Some((value, lease))` for a put, `None` for a delete.
type Change = Option<(Vec<u8>, i64)>;

/// Writes of one call, in key order; the last change per key wins.
#[derive(Debug, Default)]
pub(crate) struct BufferedWrites {
    changes: BTreeMap<Vec<u8>, Change>,
}

impl BufferedWrites {
    /// Applies the buffered changes as ONE revision (one event per changed key, in key order).
    pub(crate) fn commit(self, w: &mut WriteCtx<'_>) -> Result<(), StorageError> {
        for (key, change) in self.changes {
            match change {
                Some((value, lease)) => w.put(&key, value, lease)?,
                None => {
                    w.delete_span(KeySpan::Single(&key))?;
                }
            }
        }
        Ok(())
    }
}

/// [`GuestStore`] over a write transaction plus the call's buffered writes.
pub(crate) struct TxnGuestStore {
    txn: Arc<WriteTransaction>,
    /// The entry's open KV tables: the transaction's own must not be opened again meanwhile.
    kv: SharedWriteCtx,
    writes: Rc<RefCell<BufferedWrites>>,
    /// The revision the call's writes will get.
    write_rev: i64,
}

fn fatal(e: impl std::fmt::Display) -> StoreFailure {
    StoreFailure::Fatal(e.to_string())
}

impl TxnGuestStore {
    pub(crate) fn new(
        txn: Arc<WriteTransaction>,
        kv: SharedWriteCtx,
        writes: Rc<RefCell<BufferedWrites>>,
        write_rev: i64,
    ) -> Self {
        TxnGuestStore {
            txn,
            kv,
            writes,
            write_rev,
        }
    }

    fn merged(
        &self,
        span: KeySpan<'_>,
        reverse: bool,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreFailure> {
        let writes = self.writes.borrow();
        self.kv.with(|w| {
            let latest = &w.tables.latest;
            merged(latest, &writes, self.write_rev, span, reverse, visit)
        })
    }
}

/// Visits the live keys of `span` in `table`, merged with the buffered `writes` (which get
/// `write_rev`), in key order (reversed when `reverse`), until `visit` breaks.
fn merged(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    writes: &BufferedWrites,
    write_rev: i64,
    span: KeySpan<'_>,
    reverse: bool,
    visit: &mut Visit<'_>,
) -> Result<(), StoreFailure> {
    let Some(bounds) = bounds(span) else {
        return Ok(());
    };
    let stored = table.range::<&[u8]>(bounds).map_err(fatal)?;
    let mut stored: Box<dyn Iterator<Item = _>> = if reverse {
        Box::new(stored.rev())
    } else {
        Box::new(stored)
    };
    let owned = (own(bounds.0), own(bounds.1));
    let buffered = writes.changes.range::<Vec<u8>, _>(owned);
    let mut buffered: Box<dyn Iterator<Item = _>> = if reverse {
        Box::new(buffered.rev())
    } else {
        Box::new(buffered)
    };
    let (mut next_stored, mut next_buffered) = (stored.next(), buffered.next());
    loop {
        let stored_key = match &next_stored {
            Some(Ok((k, _))) => Some(k.value().to_vec()),
            Some(Err(e)) => return Err(fatal(e)),
            None => None,
        };
        let take_buffered = match (&stored_key, &next_buffered) {
            (None, None) => break,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (Some(sk), Some((bk, _))) => (bk.as_slice() <= sk.as_slice()) != reverse || *bk == sk,
        };
        if take_buffered {
            let Some((key, change)) = next_buffered else {
                break;
            };
            let prev = if stored_key.as_deref() == Some(key.as_slice()) {
                let prev = decode(next_stored.take())?;
                next_stored = stored.next();
                prev
            } else {
                None
            };
            next_buffered = buffered.next();
            if let Some(kv) = overlaid(write_rev, key, change, prev)
                && visit(kv).is_break()
            {
                break;
            }
        } else {
            let found = decode(next_stored.take())?;
            next_stored = stored.next();
            if let Some(kv) = found
                && visit(stored_kv(kv)).is_break()
            {
                break;
            }
        }
    }
    Ok(())
}

/// What a buffered change looks like to the guest, given the key's stored KeyValue.
fn overlaid(
    write_rev: i64,
    key: &[u8],
    change: &Change,
    prev: Option<KeyValue>,
) -> Option<StoredKv> {
    let (value, lease) = change.as_ref()?;
    Some(StoredKv {
        key: key.to_vec(),
        value: value.clone(),
        create_revision: prev.as_ref().map_or(write_rev, |p| p.create_revision),
        mod_revision: write_rev,
        version: prev.as_ref().map_or(0, |p| p.version) + 1,
        lease: *lease,
    })
}

type StoredEntry<'a> = Option<
    Result<
        (
            redb::AccessGuard<'a, &'static [u8]>,
            redb::AccessGuard<'a, &'static [u8]>,
        ),
        redb::StorageError,
    >,
>;

fn decode(entry: StoredEntry<'_>) -> Result<Option<KeyValue>, StoreFailure> {
    match entry {
        Some(Ok((_, v))) => KeyValue::decode(v.value()).map(Some).map_err(fatal),
        Some(Err(e)) => Err(fatal(e)),
        None => Ok(None),
    }
}

fn stored_kv(kv: KeyValue) -> StoredKv {
    StoredKv {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

fn own(bound: Bound<&[u8]>) -> Bound<Vec<u8>> {
    bound.map(<[u8]>::to_vec)
}

/// Lower and upper bound of a key range.
type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The key bounds of `span`; None when it is empty (redb and BTreeMap panic on inverted ranges).
fn bounds(span: KeySpan<'_>) -> Option<KeyBounds<'_>> {
    match span {
        KeySpan::Single(key) => Some((Bound::Included(key), Bound::Included(key))),
        KeySpan::From(key) => Some((Bound::Included(key), Bound::Unbounded)),
        KeySpan::Until(key, end) if end > key => Some((Bound::Included(key), Bound::Excluded(end))),
        KeySpan::Until(..) => None,
    }
}

impl GuestStore for TxnGuestStore {
    fn put(&mut self, key: &[u8], value: &[u8], lease: i64) -> Result<(), StoreFailure> {
        if key.is_empty() {
            return Err(StoreFailure::Refused(KvError::EmptyKey.to_string()));
        }
        // Checked at the put, like a Put request: the call fails and commits nothing. No lease
        // can end during the call (the apply path runs one command at a time).
        if lease != 0 && !baton_store::lease::store::exists(&self.txn, lease).map_err(fatal)? {
            return Err(StoreFailure::Refused(KvError::LeaseNotFound.to_string()));
        }
        let change = Some((value.to_vec(), lease));
        self.writes
            .borrow_mut()
            .changes
            .insert(key.to_vec(), change);
        Ok(())
    }

    fn delete_range(&mut self, start: &[u8], end: &[u8]) -> Result<u64, StoreFailure> {
        let mut live = Vec::new();
        self.merged(KeySpan::new(start, end), false, &mut |kv| {
            live.push(kv.key);
            ControlFlow::Continue(())
        })?;
        let mut writes = self.writes.borrow_mut();
        for key in &live {
            writes.changes.insert(key.clone(), None);
        }
        Ok(live.len() as u64)
    }

    fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreFailure> {
        self.merged(KeySpan::new(start, end), reverse, visit)
    }

    fn lease(&mut self, id: i64) -> Result<Option<LeaseFacts>, StoreFailure> {
        let table = self.txn.open_table(LEASES).map_err(fatal)?;
        lease_facts(&table, id)
    }
}

fn lease_facts(
    table: &impl ReadableTable<i64, (i64, i64)>,
    id: i64,
) -> Result<Option<LeaseFacts>, StoreFailure> {
    let found = baton_store::lease::store::get(table, id).map_err(fatal)?;
    Ok(found.map(|record| LeaseFacts {
        id,
        granted_ttl_s: record.ttl_s,
    }))
}

/// What a read-only call's guest is told when it tries to write.
const READ_ONLY_WRITE: &str =
    "a read-only call cannot write; call it without read-only to go through the log";

/// [`GuestStore`] over a read transaction, for calls served without a log entry: reads see the
/// view, writes are refused (the call then fails and nothing changes anywhere).
pub struct ReadOnlyGuestStore {
    latest: ReadOnlyTable<&'static [u8], &'static [u8]>,
    leases: ReadOnlyTable<i64, (i64, i64)>,
}

impl ReadOnlyGuestStore {
    pub fn new(txn: &ReadTransaction) -> Result<Self, StoreFailure> {
        let latest = txn.open_table(KV_LATEST).map_err(fatal)?;
        let leases = txn.open_table(LEASES).map_err(fatal)?;
        Ok(ReadOnlyGuestStore { latest, leases })
    }
}

impl GuestStore for ReadOnlyGuestStore {
    fn put(&mut self, _key: &[u8], _value: &[u8], _lease: i64) -> Result<(), StoreFailure> {
        Err(StoreFailure::Refused(READ_ONLY_WRITE.into()))
    }

    fn delete_range(&mut self, _start: &[u8], _end: &[u8]) -> Result<u64, StoreFailure> {
        Err(StoreFailure::Refused(READ_ONLY_WRITE.into()))
    }

    fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreFailure> {
        let none = BufferedWrites::default();
        merged(
            &self.latest,
            &none,
            0,
            KeySpan::new(start, end),
            reverse,
            visit,
        )
    }

    fn lease(&mut self, id: i64) -> Result<Option<LeaseFacts>, StoreFailure> {
        lease_facts(&self.leases, id)
    }
}
