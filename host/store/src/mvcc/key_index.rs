//! The per-key change index, kept in memory like etcd's `treeIndex`: for every key, the
//! (main, sub) revisions of its retained changes in order, each a put or a tombstone.
//!
//! It answers "which change of key k is live at revision R" for reads below the current
//! revision, and which changes a compaction may drop. It used to be a redb table; kept there, its
//! mid-tree insert per change cost about a sixth of an applied increment's CPU on every member,
//! for a lookup only historical reads and compaction make. It is a function of `KV_HISTORY`
//! (every change names its key), so it is rebuilt from that table when a member starts or
//! installs a snapshot, and never written to disk.
//!
//! Writers (the state machine's apply, one at a time) add changes before their transaction
//! commits. Readers see the index as it is now, not as of their redb snapshot, so every lookup
//! takes the reader's revision and ignores newer changes; a compaction that ran since the
//! reader's snapshot is detected by [`IndexError::Compacted`] instead of answering from
//! history it already dropped.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::mvcc::codec::decode_history;
use crate::mvcc::error::StorageError;
use crate::mvcc::tables::{COMPACT_REVISION_NONE, HistoryTable, KeySpan};
use crate::storage::schema::REV_KIND_TOMBSTONE;

/// One change of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Change {
    main: i64,
    sub: i64,
    tombstone: bool,
}

impl Change {
    fn rev(&self) -> (i64, i64) {
        (self.main, self.sub)
    }
}

#[derive(Debug, Default)]
struct State {
    /// Changes of each key, ascending by (main, sub); a key with no retained change is absent.
    keys: BTreeMap<Vec<u8>, Vec<Change>>,
    /// Highest revision compacted through this index; reads below it must fail.
    compacted: i64,
}

/// A key and its changes as (main, sub, tombstone), as [`KeyIndex::dump`] lists them.
#[cfg(test)]
type KeyChanges = (Vec<u8>, Vec<(i64, i64, bool)>);

/// A read asked for a revision a compaction has dropped since the reader's snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("revision {rev} was compacted (at {compacted}) during the read")]
    Compacted { rev: i64, compacted: i64 },
}

/// Shared by the state machine (the one writer) and every reader of this member's store.
#[derive(Debug)]
pub struct KeyIndex {
    state: RwLock<State>,
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex {
            state: RwLock::new(State {
                keys: BTreeMap::new(),
                compacted: COMPACT_REVISION_NONE,
            }),
        }
    }
}

impl KeyIndex {
    /// Replaces the whole index with the changes in `history`, of a store compacted at
    /// `compacted`.
    pub(crate) fn rebuild(
        &self,
        history: &impl HistoryTable,
        compacted: i64,
    ) -> Result<(), StorageError> {
        let mut keys: BTreeMap<Vec<u8>, Vec<Change>> = BTreeMap::new();
        for entry in history.iter().map_err(redb::Error::from)? {
            let (rev, record) = entry.map_err(redb::Error::from)?;
            let (main, sub) = rev.value();
            let (kind, kv) = decode_history(record.value())?;
            let change = Change {
                main,
                sub,
                tombstone: kind == REV_KIND_TOMBSTONE,
            };
            // History is in revision order, so each key's list comes out sorted.
            keys.entry(kv.key).or_default().push(change);
        }
        let mut state = self.write();
        state.keys = keys;
        state.compacted = compacted;
        Ok(())
    }

    /// Empties the index while a snapshot replaces the store: until [`Self::rebuild`], every
    /// read below the current revision fails as compacted (a clean error to retry) rather
    /// than pairing this index with the other store's history.
    pub fn suspend(&self) {
        let mut state = self.write();
        state.keys.clear();
        state.compacted = i64::MAX;
    }

    /// Records a change the current apply makes at (main, sub).
    pub(crate) fn record(&self, key: &[u8], main: i64, sub: i64, tombstone: bool) {
        let change = Change {
            main,
            sub,
            tombstone,
        };
        let mut state = self.write();
        let changes = match state.keys.get_mut(key) {
            Some(changes) => changes,
            None => state.keys.entry(key.to_vec()).or_default(),
        };
        match changes.last() {
            Some(last) if last.rev() >= change.rev() => {
                // Not reached by apply, which only moves forward; kept sorted regardless.
                if let Err(at) = changes.binary_search_by_key(&change.rev(), Change::rev) {
                    changes.insert(at, change);
                }
            }
            _ => changes.push(change),
        }
    }

    /// (main, sub) of the put that makes `key` live at `rev`, or `None` if it was absent then.
    pub(crate) fn put_at(&self, key: &[u8], rev: i64) -> Result<Option<(i64, i64)>, IndexError> {
        let state = self.read();
        check_not_compacted(&state, rev)?;
        Ok(state
            .keys
            .get(key)
            .and_then(|changes| live_at(changes, rev)))
    }

    /// (main, sub) of the put behind every key of `span` live at `rev`, in key order.
    pub(crate) fn live_in(
        &self,
        span: KeySpan<'_>,
        rev: i64,
    ) -> Result<Vec<(i64, i64)>, IndexError> {
        let state = self.read();
        check_not_compacted(&state, rev)?;
        if span.is_empty() {
            return Ok(Vec::new());
        }
        let bounds: (Bound<&[u8]>, Bound<&[u8]>) = span.bounds();
        Ok(state
            .keys
            .range::<[u8], _>(bounds)
            .filter_map(|(_, changes)| live_at(changes, rev))
            .collect())
    }

    /// Compacts the index at `rev`: drops every change at or below it except, per key, the last
    /// one at or below it when that is a put. Returns the dropped (main, sub) revisions, in no
    /// particular order, for the caller to remove from history.
    pub(crate) fn compact(&self, rev: i64) -> Vec<(i64, i64)> {
        let mut state = self.write();
        state.compacted = state.compacted.max(rev);
        let mut dropped = Vec::new();
        state.keys.retain(|_, changes| {
            // Changes at or below `rev` are the prefix [..upto].
            let upto = changes.partition_point(|c| c.main <= rev);
            let keep_last = upto > 0 && !changes[upto - 1].tombstone;
            let drop_to = if keep_last { upto - 1 } else { upto };
            dropped.extend(changes.drain(..drop_to).map(|c| c.rev()));
            !changes.is_empty()
        });
        dropped
    }

    /// How many changes the index holds.
    #[cfg(test)]
    pub(crate) fn changes(&self) -> usize {
        self.read().keys.values().map(Vec::len).sum()
    }

    /// Every key's changes as (main, sub, tombstone), for comparing two indexes.
    #[cfg(test)]
    pub(crate) fn dump(&self) -> Vec<KeyChanges> {
        let state = self.read();
        state
            .keys
            .iter()
            .map(|(k, cs)| {
                (
                    k.clone(),
                    cs.iter().map(|c| (c.main, c.sub, c.tombstone)).collect(),
                )
            })
            .collect()
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // The state is consistent after any panic (each mutation is a single push/retain), so
        // a poisoned lock is still safe to use.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn check_not_compacted(state: &State, rev: i64) -> Result<(), IndexError> {
    if rev < state.compacted {
        return Err(IndexError::Compacted {
            rev,
            compacted: state.compacted,
        });
    }
    Ok(())
}

/// The put live at `rev` among `changes` (ascending), if the last change at or below it is one.
fn live_at(changes: &[Change], rev: i64) -> Option<(i64, i64)> {
    let upto = changes.partition_point(|c| c.main <= rev);
    let last = changes[..upto].last()?;
    (!last.tombstone).then_some(last.rev())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(changes: &[(&[u8], i64, i64, bool)]) -> KeyIndex {
        let index = KeyIndex::default();
        for &(key, main, sub, tombstone) in changes {
            index.record(key, main, sub, tombstone);
        }
        index
    }

    #[test]
    fn put_at_finds_the_last_change_at_or_below_the_revision() {
        let index = index_of(&[
            (b"a", 2, 0, false),
            (b"a", 4, 1, false),
            (b"a", 6, 0, true),
            (b"a", 8, 0, false),
        ]);
        assert_eq!(index.put_at(b"a", 1), Ok(None));
        assert_eq!(index.put_at(b"a", 2), Ok(Some((2, 0))));
        assert_eq!(index.put_at(b"a", 5), Ok(Some((4, 1))));
        assert_eq!(index.put_at(b"a", 6), Ok(None), "deleted at 6");
        assert_eq!(index.put_at(b"a", 9), Ok(Some((8, 0))));
        assert_eq!(index.put_at(b"b", 9), Ok(None));
    }

    #[test]
    fn live_in_lists_live_keys_of_the_span_in_key_order() {
        let index = index_of(&[
            (b"a", 2, 0, false),
            (b"b", 2, 1, false),
            (b"c", 3, 0, false),
            (b"b", 4, 0, true),
            (b"d", 5, 0, false),
        ]);
        let all = KeySpan::From(b"");
        assert_eq!(index.live_in(all, 3), Ok(vec![(2, 0), (2, 1), (3, 0)]));
        assert_eq!(index.live_in(all, 5), Ok(vec![(2, 0), (3, 0), (5, 0)]));
        assert_eq!(
            index.live_in(KeySpan::Until(b"b", b"d"), 3),
            Ok(vec![(2, 1), (3, 0)])
        );
        assert_eq!(index.live_in(KeySpan::Single(b"c"), 2), Ok(vec![]));
    }

    #[test]
    fn compaction_keeps_what_reads_at_and_after_it_see() {
        let index = index_of(&[
            (b"a", 2, 0, false),
            (b"a", 3, 0, false),
            (b"b", 3, 1, false),
            (b"b", 4, 0, true),
            (b"c", 5, 0, false),
        ]);
        // Every key live at each revision the compaction must leave readable.
        let reads_from_4 = || -> Vec<_> {
            (4..=6)
                .map(|r| index.live_in(KeySpan::From(b""), r))
                .collect()
        };
        let before = reads_from_4();
        let mut dropped = index.compact(4);
        dropped.sort();
        // a@2 is superseded by a@3; b's tombstone at 4 takes its put at 3 with it.
        assert_eq!(dropped, vec![(2, 0), (3, 1), (4, 0)]);
        assert_eq!(before, reads_from_4());
        assert_eq!(
            index.put_at(b"a", 3),
            Err(IndexError::Compacted {
                rev: 3,
                compacted: 4
            })
        );
    }

    #[test]
    fn a_suspended_index_refuses_every_read_as_compacted() {
        let index = index_of(&[(b"a", 2, 0, false)]);
        index.suspend();
        assert!(matches!(
            index.put_at(b"a", 2),
            Err(IndexError::Compacted { .. })
        ));
        assert!(index.live_in(KeySpan::From(b""), 5).is_err());
        assert_eq!(index.changes(), 0);
    }

    #[test]
    fn an_inverted_span_is_empty() {
        let index = index_of(&[(b"a", 2, 0, false), (b"c", 3, 0, false)]);
        assert_eq!(index.live_in(KeySpan::Until(b"c", b"a"), 3), Ok(vec![]));
        assert_eq!(index.live_in(KeySpan::Until(b"c", b"c"), 3), Ok(vec![]));
    }

    #[test]
    fn out_of_order_records_stay_sorted() {
        let index = index_of(&[(b"a", 5, 0, false), (b"a", 3, 0, true), (b"a", 5, 0, false)]);
        assert_eq!(index.put_at(b"a", 4), Ok(None));
        assert_eq!(index.put_at(b"a", 5), Ok(Some((5, 0))));
        assert_eq!(index.compact(5), vec![(3, 0)]);
    }
}
