//! The call's transactional view of the store: reads see the call's own earlier writes, and
//! every write commits as one revision when the call succeeds (none when it fails). Keys the
//! call wrote read back with the call's own revision as their mod revision.
//!
//! Simple reads are one function each ([`get`], [`range`], [`prefix`]); [`Range`] builds the
//! rest (etcd's sorts, revision filters, keys-only, counts). On native targets every function
//! here reads and writes the world of the running [`crate::testing::Harness`] call.

#[cfg(target_arch = "wasm32")]
use crate::bindings::baton::module::store as host;
use crate::bindings::baton::module::store as wit;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::world::store as host;

pub use wit::{Kv, LeaseInfo, RangeRequest, RangeResult, SortBy};

pub fn get(key: impl AsRef<[u8]>) -> Option<Kv> {
    host::get(key.as_ref())
}

/// The value of `key`, if it exists.
pub fn get_value(key: impl AsRef<[u8]>) -> Option<Vec<u8>> {
    get(key).map(|kv| kv.value)
}

/// Writes `key`. An empty key fails the call.
pub fn put(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
    host::put(key.as_ref(), value.as_ref(), None);
}

/// Writes `key` attached to `lease`; the call fails ("etcdserver: requested lease not found")
/// if the lease does not exist.
pub fn put_with_lease(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, lease: i64) {
    host::put(key.as_ref(), value.as_ref(), Some(lease));
}

/// Deletes `key`; returns whether it existed.
pub fn delete(key: impl AsRef<[u8]>) -> bool {
    host::delete(key.as_ref())
}

/// Deletes every key in [start, end). As in etcd, an empty `end` means just `start` and
/// [`ALL_FROM`] means every key >= start.
pub fn delete_range(start: impl AsRef<[u8]>, end: impl AsRef<[u8]>) -> u64 {
    host::delete_range(start.as_ref(), end.as_ref())
}

/// Keys in [start, end) in key order (`end` as for [`delete_range`]), at most the host's cap.
pub fn range(start: impl AsRef<[u8]>, end: impl AsRef<[u8]>) -> Vec<Kv> {
    Range::new(start, end).kvs()
}

/// Keys starting with `prefix`, at most `limit` (0: the host's cap), descending when `reverse`.
pub fn prefix(prefix: impl AsRef<[u8]>, limit: u32, reverse: bool) -> Vec<Kv> {
    let range = Range::prefix(prefix).limit(limit);
    if reverse { range.descending() } else { range }.kvs()
}

/// The lease `id`, if it exists (was granted and has not ended).
pub fn lease(id: i64) -> Option<LeaseInfo> {
    host::lease(id)
}

/// A range end meaning "every key >= start".
pub const ALL_FROM: &[u8] = &[0];

/// The smallest key greater than every key starting with `prefix` (etcd's `GetPrefixRangeEnd`);
/// [`ALL_FROM`] when `prefix` is all 0xff bytes.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    ALL_FROM.to_vec()
}

/// A range read in etcd's terms, built step by step and run with [`Range::get`],
/// [`Range::kvs`], [`Range::first`] or [`Range::count`]:
///
/// ```ignore
/// // The oldest contender under "L/", whatever their number.
/// let holder = store::Range::prefix("L/").sort_by(SortBy::CreateRevision).first();
/// ```
///
/// Key-ordered ranges stop at the limit; other sorts and counts look at every key in the range,
/// and the call pays fuel for each. Ties in a sort are broken by key (descending reverses both).
#[derive(Debug, Clone)]
pub struct Range {
    request: RangeRequest,
}

impl Range {
    /// Keys in [start, end), `end` in etcd's convention (see [`delete_range`]).
    pub fn new(start: impl AsRef<[u8]>, end: impl AsRef<[u8]>) -> Self {
        Range {
            request: RangeRequest {
                start: start.as_ref().to_vec(),
                end: end.as_ref().to_vec(),
                limit: 0,
                sort_by: SortBy::Key,
                descending: false,
                min_create_revision: 0,
                max_create_revision: 0,
                min_mod_revision: 0,
                max_mod_revision: 0,
                keys_only: false,
                count_only: false,
            },
        }
    }

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: impl AsRef<[u8]>) -> Self {
        let end = prefix_end(prefix.as_ref());
        Range::new(prefix, end)
    }

    /// Every key >= `start`.
    pub fn from(start: impl AsRef<[u8]>) -> Self {
        Range::new(start, ALL_FROM)
    }

    /// At most `n` keys; 0 means the host's cap (10 000).
    pub fn limit(mut self, n: u32) -> Self {
        self.request.limit = n;
        self
    }

    /// Orders by `by` (ascending unless [`Range::descending`]).
    pub fn sort_by(mut self, by: SortBy) -> Self {
        self.request.sort_by = by;
        self
    }

    pub fn descending(mut self) -> Self {
        self.request.descending = true;
        self
    }

    /// Only keys created at or after revision `rev`.
    pub fn min_create_revision(mut self, rev: i64) -> Self {
        self.request.min_create_revision = rev;
        self
    }

    /// Only keys created at or before revision `rev`. A `rev` of 0 means no bound.
    pub fn max_create_revision(mut self, rev: i64) -> Self {
        self.request.max_create_revision = rev;
        self
    }

    /// Only keys last changed at or after revision `rev`.
    pub fn min_mod_revision(mut self, rev: i64) -> Self {
        self.request.min_mod_revision = rev;
        self
    }

    /// Only keys last changed at or before revision `rev`. A `rev` of 0 means no bound.
    pub fn max_mod_revision(mut self, rev: i64) -> Self {
        self.request.max_mod_revision = rev;
        self
    }

    /// Values come back empty.
    pub fn keys_only(mut self) -> Self {
        self.request.keys_only = true;
        self
    }

    /// The request as the host receives it.
    pub fn request(&self) -> &RangeRequest {
        &self.request
    }

    /// Runs the range: the matching keys, whether there were more, and their count.
    pub fn get(self) -> RangeResult {
        host::range(&self.request)
    }

    /// Runs the range and keeps only the key-values.
    pub fn kvs(self) -> Vec<Kv> {
        self.get().kvs
    }

    /// The first key in the range's order, if any.
    pub fn first(self) -> Option<Kv> {
        self.limit(1).kvs().into_iter().next()
    }

    /// How many keys match, without moving any of them.
    pub fn count(mut self) -> u64 {
        self.request.count_only = true;
        self.get().count
    }
}
