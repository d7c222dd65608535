//! Revisioned key-value store over redb with etcd 3.4's semantics.
//!
//! # Storage contract
//!
//! Tables (defined in [`crate::storage::schema`]):
//!
//! | table | key | value | holds |
//! |---|---|---|---|
//! | `META` | name | bytes | `mvcc.revision` (current revision, i64 BE; absent = 1), `mvcc.compact_revision` (absent = -1), and the raft state machine's own `raft.*` keys |
//! | `KV_LATEST` | user key | prost `mvccpb::KeyValue` | every live key at the current revision; deleted keys are absent |
//! | `KV_HISTORY` | (main, sub) | kind byte + prost `mvccpb::KeyValue` | every retained change, in revision order |
//!
//! Beside them, in memory, the [`key_index::KeyIndex`] lists every retained change grouped by
//! key, (main, sub) and kind, like etcd's `treeIndex`; it is rebuilt from `KV_HISTORY` when
//! the store is opened or replaced by a snapshot.
//!
//! Revisions follow etcd: an empty store is at revision 1; every request that changes
//! something moves it by exactly one (main revision), and its changes are numbered by sub
//! revision 0, 1, 2, ... A put's KeyValue has `create_revision` (first put since the key last
//! did not exist), `mod_revision`, `version` (1 at creation, +1 per put) and `lease`. A delete
//! is recorded as a tombstone whose KeyValue holds only `key` and `mod_revision`.
//!
//! Writes per change, all in the caller's write transaction:
//! - put: 1 `KV_LATEST` get (previous KeyValue), then 2 inserts: `KV_LATEST`, `KV_HISTORY`
//!   (the KeyValue is encoded once and shared by both), and one entry in the key index;
//! - delete of a key: 1 `KV_LATEST` remove, 1 `KV_HISTORY` insert, one key index entry;
//! - plus one `META` insert per request that changed anything.
//!
//! Reads:
//! - at the current revision: one ordered scan of `KV_LATEST` (history is not touched);
//! - at an older revision R: the key index names, per key of the range, its last change at or
//!   below R, and each that is a put costs one `KV_HISTORY` get;
//! - watch catch-up: a scan of `KV_HISTORY` from (R, 0) yields all events >= R in order; an
//!   event's prev_kv costs one key index lookup and one `KV_HISTORY` get
//!   ([`history::HistoryView`]).
//!
//! Invariants:
//! - `KV_LATEST[k]` exists iff the last key index entry of `k` is a put, and then equals
//!   the `KV_HISTORY` record that entry points to;
//! - the key index and `KV_HISTORY` hold the same set of (key, main, sub) changes;
//! - every main revision in `KV_HISTORY` is <= the current revision.
//!
//! Compaction at C (requires compacted < C <= current) records C in `META`, then deletes from
//! `KV_HISTORY` and the key index every change at or below C except, per key, the last one at
//! or below C when it is a put. Reads at revisions >= C therefore still see exactly what they
//! saw before; reads below C fail with `Compacted`. `KV_LATEST` is untouched. Like etcd 3.4.23,
//! a tombstone at or below C is removed too, so watches starting at or below C cannot replay it.

pub mod checks;
mod codec;
pub mod compaction;
pub mod error;
mod go_sort;
mod history;
pub mod key_index;
pub mod key_range;
pub mod range;
pub mod tables;
pub mod write;

#[cfg(test)]
mod model;
#[cfg(test)]
mod model_test;
#[cfg(test)]
pub(crate) mod tests;

use std::ops::Deref;
use std::sync::Arc;

use redb::{ReadOnlyTable, ReadTransaction};

use crate::storage::schema::{KV_HISTORY, KV_LATEST, META};
use baton_proto::etcdserverpb::{RangeRequest, RangeResponse};
#[cfg(test)]
use baton_proto::mvccpb::Event;
use error::{KvError, StorageError};
use key_index::KeyIndex;
use tables::{KvTables, Revisions};

type ReadTables =
    KvTables<ReadOnlyTable<&'static [u8], &'static [u8]>, ReadOnlyTable<(i64, i64), &'static [u8]>>;

pub use history::HistoryView;

/// A consistent read of this member's store: a redb read transaction and the key index that
/// reads below its revision consult. Derefs to the transaction for every other table.
pub struct ReadView {
    txn: ReadTransaction,
    index: Arc<KeyIndex>,
}

impl ReadView {
    pub fn new(txn: ReadTransaction, index: Arc<KeyIndex>) -> Self {
        ReadView { txn, index }
    }

    pub fn into_txn(self) -> ReadTransaction {
        self.txn
    }
}

impl Deref for ReadView {
    type Target = ReadTransaction;

    fn deref(&self) -> &ReadTransaction {
        &self.txn
    }
}

pub(crate) fn open_read_tables(view: &ReadView) -> Result<ReadTables, StorageError> {
    Ok(KvTables {
        latest: view.open_table(KV_LATEST)?,
        index: view.index.clone(),
        history: view.open_table(KV_HISTORY)?,
    })
}

/// The key index of the store `txn` reads, built from its `KV_HISTORY`.
pub fn load_key_index(txn: &ReadTransaction) -> Result<KeyIndex, StorageError> {
    let index = KeyIndex::default();
    rebuild_key_index(&index, txn)?;
    Ok(index)
}

/// Replaces `index` with that of the store `txn` reads (after a snapshot replaced it).
pub fn rebuild_key_index(index: &KeyIndex, txn: &ReadTransaction) -> Result<(), StorageError> {
    let history = txn.open_table(KV_HISTORY)?;
    index.rebuild(&history, read_revisions(txn)?.compact)
}

pub(crate) fn read_revisions(txn: &ReadTransaction) -> Result<Revisions, StorageError> {
    Revisions::load(&txn.open_table(META)?)
}

/// etcd's Range at the state of `txn`. The header carries only `revision`.
pub fn range(view: &ReadView, req: &RangeRequest) -> Result<RangeResponse, KvError> {
    let tables = open_read_tables(view)?;
    let revs = read_revisions(view)?;
    Ok(range::range_at(&tables, revs.current, revs.compact, req)?)
}

/// The store's revision (1 when empty).
pub fn current_revision(txn: &ReadTransaction) -> Result<i64, KvError> {
    Ok(read_revisions(txn)?.current)
}

/// The compacted revision: reads below it fail. -1 if the store was never compacted.
pub fn compact_revision(txn: &ReadTransaction) -> Result<i64, KvError> {
    Ok(read_revisions(txn)?.compact)
}

/// Up to `max_events` events with revision >= `start_rev`, in order, without prev_kv.
/// Check `start_rev` against [`compact_revision`] first: older events may be gone.
#[cfg(test)]
fn events_since(
    txn: &ReadTransaction,
    start_rev: i64,
    max_events: usize,
) -> Result<Vec<Event>, KvError> {
    let history = txn.open_table(KV_HISTORY).map_err(StorageError::from)?;
    Ok(history::events_from(&history, start_rev, max_events)?)
}

impl From<StorageError> for KvError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Compacted(_) => KvError::Compacted,
            e => KvError::Storage(e.to_string()),
        }
    }
}
