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
//! | `KV_KEY_REVS` | (user key, main, sub) | kind (0 put, 1 tombstone) | every retained change, grouped by key |
//! | `KV_HISTORY` | (main, sub) | kind byte + prost `mvccpb::KeyValue` | every retained change, in revision order |
//!
//! Revisions follow etcd: an empty store is at revision 1; every request that changes
//! something moves it by exactly one (main revision), and its changes are numbered by sub
//! revision 0, 1, 2, ... A put's KeyValue has `create_revision` (first put since the key last
//! did not exist), `mod_revision`, `version` (1 at creation, +1 per put) and `lease`. A delete
//! is recorded as a tombstone whose KeyValue holds only `key` and `mod_revision`.
//!
//! Writes per change, all in the caller's write transaction:
//! - put: 1 `KV_LATEST` get (previous KeyValue), then 3 inserts: `KV_LATEST`, `KV_KEY_REVS`,
//!   `KV_HISTORY` (the KeyValue is encoded once and shared by `KV_LATEST` and `KV_HISTORY`);
//! - delete of a key: 1 `KV_LATEST` remove and 2 inserts (`KV_KEY_REVS`, `KV_HISTORY`);
//! - plus one `META` insert per request that changed anything.
//!
//! Reads:
//! - at the current revision: one ordered scan of `KV_LATEST` (history is not touched);
//! - at an older revision R: per distinct key of the range, one seek in `KV_KEY_REVS` for the
//!   key's last change at or below R, and one `KV_HISTORY` get if that change is a put;
//! - watch catch-up: a scan of `KV_HISTORY` from (R, 0) yields all events >= R in order; an
//!   event's prev_kv costs one seek in `KV_KEY_REVS` and one `KV_HISTORY` get
//!   ([`history::HistoryView`]).
//!
//! Invariants:
//! - `KV_LATEST[k]` exists iff the last `KV_KEY_REVS` entry of `k` is a put, and then equals
//!   the `KV_HISTORY` record that entry points to;
//! - `KV_KEY_REVS` and `KV_HISTORY` hold the same set of (key, main, sub) changes;
//! - every main revision in `KV_HISTORY` is <= the current revision.
//!
//! Compaction at C (requires compacted < C <= current) records C in `META`, then deletes from
//! `KV_HISTORY` and `KV_KEY_REVS` every change at or below C except, per key, the last one at
//! or below C when it is a put. Reads at revisions >= C therefore still see exactly what they
//! saw before; reads below C fail with `Compacted`. `KV_LATEST` is untouched. Like etcd 3.4.23,
//! a tombstone at or below C is removed too, so watches starting at or below C cannot replay it.

mod codec;
pub mod compaction;
pub mod error;
mod go_sort;
pub mod history;
pub mod range;
pub mod tables;
pub mod write;

#[cfg(test)]
mod model;
#[cfg(test)]
mod model_test;
#[cfg(test)]
pub(crate) mod tests;

use redb::{ReadOnlyTable, ReadTransaction};

use crate::proto::etcdserverpb::{RangeRequest, RangeResponse};
use crate::proto::mvccpb::Event;
use crate::storage::schema::{KV_HISTORY, KV_KEY_REVS, KV_LATEST, META};
use error::{KvError, StorageError};
use tables::{KvTables, Revisions};

pub type ReadTables = KvTables<
    ReadOnlyTable<&'static [u8], &'static [u8]>,
    ReadOnlyTable<(&'static [u8], i64, i64), u8>,
    ReadOnlyTable<(i64, i64), &'static [u8]>,
>;

pub use history::HistoryView;

pub(crate) fn open_read_tables(txn: &ReadTransaction) -> Result<ReadTables, StorageError> {
    Ok(KvTables {
        latest: txn.open_table(KV_LATEST)?,
        key_revs: txn.open_table(KV_KEY_REVS)?,
        history: txn.open_table(KV_HISTORY)?,
    })
}

pub(crate) fn read_revisions(txn: &ReadTransaction) -> Result<Revisions, StorageError> {
    Revisions::load(&txn.open_table(META)?)
}

/// etcd's Range at the state of `txn`. The header carries only `revision`.
pub fn range(txn: &ReadTransaction, req: &RangeRequest) -> Result<RangeResponse, KvError> {
    let tables = open_read_tables(txn)?;
    let revs = read_revisions(txn)?;
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
pub fn events_since(
    txn: &ReadTransaction,
    start_rev: i64,
    max_events: usize,
) -> Result<Vec<Event>, KvError> {
    let history = txn.open_table(KV_HISTORY).map_err(StorageError::from)?;
    Ok(history::events_from(&history, start_rev, max_events)?)
}

impl From<StorageError> for KvError {
    fn from(e: StorageError) -> Self {
        KvError::Storage(e.to_string())
    }
}
