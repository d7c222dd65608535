//! Typed access to the MVCC tables, generic over redb's read-only and writable tables so the
//! same read code serves read transactions and reads inside a write transaction.

use std::ops::Bound;
use std::sync::Arc;

use redb::ReadableTable;

use crate::mvcc::codec::{decode_history, decode_i64, decode_kv};
use crate::mvcc::error::StorageError;
use crate::mvcc::key_index::KeyIndex;
use crate::storage::schema::{META_COMPACT_REVISION, META_REVISION};
use baton_proto::mvccpb::KeyValue;

/// Revision of an empty store.
const REVISION_INITIAL: i64 = 1;
/// Compacted revision of a store never compacted (etcd's initial `compactMainRev`).
pub(crate) const COMPACT_REVISION_NONE: i64 = -1;

pub trait LatestTable: ReadableTable<&'static [u8], &'static [u8]> {}
impl<T: ReadableTable<&'static [u8], &'static [u8]>> LatestTable for T {}
pub trait HistoryTable: ReadableTable<(i64, i64), &'static [u8]> {}
impl<T: ReadableTable<(i64, i64), &'static [u8]>> HistoryTable for T {}
pub(crate) trait MetaTable: ReadableTable<&'static str, &'static [u8]> {}
impl<T: ReadableTable<&'static str, &'static [u8]>> MetaTable for T {}

/// The store's current and compacted revisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Revisions {
    pub(crate) current: i64,
    pub(crate) compact: i64,
}

impl Revisions {
    pub(crate) fn load(meta: &impl MetaTable) -> Result<Self, StorageError> {
        let read = |name: &str, default: i64| -> Result<i64, StorageError> {
            match meta.get(name).map_err(redb::Error::from)? {
                Some(v) => decode_i64(v.value()),
                None => Ok(default),
            }
        };
        Ok(Revisions {
            current: read(META_REVISION, REVISION_INITIAL)?,
            compact: read(META_COMPACT_REVISION, COMPACT_REVISION_NONE)?,
        })
    }
}

/// Which keys a request covers, decoded from etcd's (key, range_end) convention.
#[derive(Debug, Clone, Copy)]
pub enum KeySpan<'a> {
    /// range_end empty: just `key`.
    Single(&'a [u8]),
    /// range_end "\0": every key >= `key`.
    From(&'a [u8]),
    /// [key, end); empty when end <= key.
    Until(&'a [u8], &'a [u8]),
}

impl<'a> KeySpan<'a> {
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => KeySpan::Single(key),
            [0] => KeySpan::From(key),
            end => KeySpan::Until(key, end),
        }
    }

    pub(crate) fn contains(&self, k: &[u8]) -> bool {
        match *self {
            KeySpan::Single(key) => k == key,
            KeySpan::From(key) => k >= key,
            KeySpan::Until(key, end) => k >= key && k < end,
        }
    }

    pub(crate) fn bounds(&self) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
        match *self {
            KeySpan::Single(key) => (Bound::Included(key), Bound::Included(key)),
            KeySpan::From(key) => (Bound::Included(key), Bound::Unbounded),
            KeySpan::Until(key, end) => (Bound::Included(key), Bound::Excluded(end)),
        }
    }

    /// redb (and `BTreeMap`) panic on a range whose start is above its end; such spans are
    /// empty.
    pub(crate) fn is_empty(&self) -> bool {
        matches!(*self, KeySpan::Until(key, end) if end <= key)
    }
}

/// What a range scan found: the first `fetch_max` KeyValues and the count of all keys.
#[derive(Debug, Default)]
pub(crate) struct Found {
    pub(crate) kvs: Vec<KeyValue>,
    pub(crate) count: i64,
}

/// The two KV tables, opened in one transaction, and the member's in-memory key index.
pub struct KvTables<L, H> {
    pub latest: L,
    pub(crate) index: Arc<KeyIndex>,
    pub(crate) history: H,
}

impl<L: LatestTable, H: HistoryTable> KvTables<L, H> {
    /// The live KeyValue of `key` at the current revision.
    pub(crate) fn latest_get(&self, key: &[u8]) -> Result<Option<KeyValue>, StorageError> {
        match self.latest.get(key).map_err(redb::Error::from)? {
            Some(v) => Ok(Some(decode_kv(v.value())?)),
            None => Ok(None),
        }
    }

    /// Keys of `span` live at `rev`; `current` is the view's newest revision. Decodes at most
    /// `fetch_max` values (`None`: all; `Some(0)`: count only), counts every key.
    pub(crate) fn scan(
        &self,
        span: KeySpan<'_>,
        rev: i64,
        current: i64,
        fetch_max: Option<usize>,
    ) -> Result<Found, StorageError> {
        if span.is_empty() {
            return Ok(Found::default());
        }
        if rev >= current {
            self.scan_latest(span, fetch_max)
        } else {
            self.scan_history(span, rev, fetch_max)
        }
    }

    fn scan_latest(
        &self,
        span: KeySpan<'_>,
        fetch_max: Option<usize>,
    ) -> Result<Found, StorageError> {
        let mut found = Found::default();
        for entry in self
            .latest
            .range::<&[u8]>(span.bounds())
            .map_err(redb::Error::from)?
        {
            let (_, v) = entry.map_err(redb::Error::from)?;
            found.count += 1;
            if fetch_max.is_none_or(|max| found.kvs.len() < max) {
                found.kvs.push(decode_kv(v.value())?);
            }
        }
        Ok(found)
    }

    /// Looks up in the key index which change of each key was live at `rev`, then reads the
    /// first `fetch_max` of them from history: the cost grows with the number of keys, not
    /// with the length of their histories.
    fn scan_history(
        &self,
        span: KeySpan<'_>,
        rev: i64,
        fetch_max: Option<usize>,
    ) -> Result<Found, StorageError> {
        let live = self.index.live_in(span, rev)?;
        let fetch = fetch_max.unwrap_or(usize::MAX);
        let kvs = live
            .iter()
            .take(fetch)
            .map(|&(main, sub)| self.history_kv(main, sub))
            .collect::<Result<_, _>>()?;
        Ok(Found {
            kvs,
            count: live.len() as i64,
        })
    }

    /// (main, sub) of the put that makes `key` live at `rev`, or None if absent then.
    pub(crate) fn put_at(&self, key: &[u8], rev: i64) -> Result<Option<(i64, i64)>, StorageError> {
        Ok(self.index.put_at(key, rev)?)
    }

    /// The KeyValue written at (main, sub).
    pub(crate) fn history_kv(&self, main: i64, sub: i64) -> Result<KeyValue, StorageError> {
        let record = self
            .history
            .get((main, sub))
            .map_err(redb::Error::from)?
            .ok_or_else(|| StorageError::Corrupt(format!("history lacks revision {main}.{sub}")))?;
        Ok(decode_history(record.value())?.1)
    }
}
