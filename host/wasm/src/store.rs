//! The store as a guest sees it. `baton_apply` implements [`GuestStore`] over a write
//! transaction and buffers the writes, so a failed call can be dropped without touching the
//! database.

use std::ops::ControlFlow;

/// A live key with its revision metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

/// Why a store operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreFailure {
    /// A deterministic refusal (e.g. an unknown lease): the call fails with this message and
    /// commits nothing, identically on every replica.
    #[error("{0}")]
    Refused(String),
    /// The call's fuel ran out while the host was working for it (a long scan).
    #[error("host work used up the call's fuel")]
    OutOfFuel,
    /// The database failed: the node must stop rather than answer differently from its peers.
    #[error("storage failed: {0}")]
    Fatal(String),
}

/// What a range is ordered by (contract 0.2's `sort-by`); ties go by key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    #[default]
    Key,
    Version,
    CreateRevision,
    ModRevision,
    Value,
}

/// A range query (contract 0.2's `range-request`), with the limit already bounded by the host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeQuery {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    /// At least 1.
    pub limit: usize,
    pub sort_by: SortBy,
    pub descending: bool,
    /// Inclusive bounds; 0 is unbounded.
    pub min_create_revision: i64,
    pub max_create_revision: i64,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub keys_only: bool,
    pub count_only: bool,
}

/// What a range query found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeAnswer {
    pub kvs: Vec<StoredKv>,
    pub more: bool,
    /// Matching keys: all of them for a count-only query, else `kvs.len()`.
    pub count: u64,
    /// Keys the host looked at, matching or not (what the call pays for).
    pub scanned: u64,
}

/// Lease facts every member agrees on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseFacts {
    pub id: i64,
    pub granted_ttl_s: i64,
}

/// A visitor over keys in order: `Break` stops the scan early.
pub type Visit<'a> = dyn FnMut(StoredKv) -> ControlFlow<()> + 'a;

/// Transactional key-value access for one call. Ranges use etcd's convention: an empty `end`
/// is just `start`; `end` = `[0]` is every key >= `start`.
pub trait GuestStore {
    /// Writes `key`; `lease` 0 means none.
    fn put(&mut self, key: &[u8], value: &[u8], lease: i64) -> Result<(), StoreFailure>;
    /// Deletes the live keys of [start, end); returns how many there were.
    fn delete_range(&mut self, start: &[u8], end: &[u8]) -> Result<u64, StoreFailure>;
    /// Visits the live keys of [start, end) in key order (reversed when `reverse`) until
    /// `visit` breaks or the keys run out.
    fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreFailure>;
    /// The lease `id`, if it exists.
    fn lease(&mut self, id: i64) -> Result<Option<LeaseFacts>, StoreFailure>;

    /// The live key `key`, if any (a range of one key).
    fn get(&mut self, key: &[u8]) -> Result<Option<StoredKv>, StoreFailure> {
        Ok(self.range(key, &[], 1, false)?.pop())
    }

    /// Live keys of [start, end) in key order (reversed when `reverse`), at most `limit`.
    fn range(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<StoredKv>, StoreFailure> {
        let mut found = Vec::new();
        if limit == 0 {
            return Ok(found);
        }
        self.scan(start, end, reverse, &mut |kv| {
            found.push(kv);
            if found.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        Ok(found)
    }

    /// Answers `query`, looking at no more than `scan_max` keys and holding no more than
    /// `bytes_max` bytes of candidates (either past its bound fails with
    /// [`StoreFailure::OutOfFuel`]).
    fn range_query(
        &mut self,
        query: &RangeQuery,
        scan_max: u64,
        bytes_max: u64,
    ) -> Result<RangeAnswer, StoreFailure> {
        let mut search = crate::query::Search::new(query, scan_max, bytes_max);
        let reverse = query.sort_by == SortBy::Key && query.descending;
        self.scan(&query.start, &query.end, reverse, &mut |kv| {
            search.visit(kv)
        })?;
        search.finish()
    }
}
