//! The in-memory store, leases and clock a [`super::Harness`] drives, and the thread-local
//! "current call" through which the SDK's `store` and `context` functions reach them on native
//! targets. Semantics follow Baton's host: reads see the call's buffered writes, which commit as
//! one revision only when the call succeeds; revisions, versions and lease attachments are
//! etcd's; a host refusal (unknown lease, empty key, write in a read-only call) stops the guest
//! at once, as a trap would.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;

use baton_limits::GUEST_RANGE_KEYS_MAX;

use crate::store::{Kv, LeaseInfo, RangeRequest, RangeResult, SortBy};

/// etcd's revision of an empty store; the first write is revision 2.
const REVISION_INITIAL: i64 = 1;
/// What etcd answers a put naming a lease that does not exist (clients match on it).
pub(crate) const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
const EMPTY_KEY: &str = "etcdserver: key is not provided";
pub(crate) const READ_ONLY_WRITE: &str =
    "a read-only call cannot write; call it without read-only to go through the log";

/// A live key's record.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    value: Vec<u8>,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct Lease {
    pub(crate) ttl_s: i64,
    pub(crate) expires_ms: u64,
}

/// A key's buffered change: `Some((value, lease))` for a put, `None` for a delete.
pub(crate) type Writes = BTreeMap<Vec<u8>, Option<(Vec<u8>, i64)>>;

/// Everything the harness's members would agree on.
#[derive(Debug)]
pub(crate) struct World {
    pub(crate) kvs: BTreeMap<Vec<u8>, Stored>,
    pub(crate) revision: i64,
    /// Every changed key with the revision that changed it, in revision order: what wakes a
    /// waiting call.
    pub(crate) events: Vec<(i64, Vec<u8>)>,
    pub(crate) leases: BTreeMap<i64, Lease>,
    pub(crate) lease_seq: u64,
    pub(crate) now_ms: u64,
    pub(crate) log_index: u64,
    pub(crate) module_name: String,
    pub(crate) module_hash: String,
    pub(crate) caller: String,
}

impl Default for World {
    fn default() -> Self {
        World {
            kvs: BTreeMap::new(),
            revision: REVISION_INITIAL,
            events: Vec::new(),
            leases: BTreeMap::new(),
            lease_seq: 0,
            now_ms: 0,
            log_index: 0,
            module_name: String::new(),
            module_hash: String::new(),
            caller: String::new(),
        }
    }
}

/// A key as a call sees it: stored, or overlaid by the call's own write.
struct View<'a> {
    key: &'a [u8],
    value: &'a [u8],
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: i64,
}

impl View<'_> {
    fn to_kv(&self, keys_only: bool) -> Kv {
        Kv {
            key: self.key.to_vec(),
            value: if keys_only {
                Vec::new()
            } else {
                self.value.to_vec()
            },
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }
}

type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The bounds of [start, end) in etcd's convention; None when the range is empty.
fn bounds<'a>(start: &'a [u8], end: &'a [u8]) -> Option<KeyBounds<'a>> {
    match end {
        [] => Some((Bound::Included(start), Bound::Included(start))),
        [0] => Some((Bound::Included(start), Bound::Unbounded)),
        end if end > start => Some((Bound::Included(start), Bound::Excluded(end))),
        _ => None,
    }
}

fn stored_view<'a>(key: &'a [u8], s: &'a Stored) -> View<'a> {
    View {
        key,
        value: &s.value,
        create_revision: s.create_revision,
        mod_revision: s.mod_revision,
        version: s.version,
        lease: s.lease,
    }
}

/// What `change` (written at `write_rev`) makes of a key whose stored record is `prev`.
fn overlaid<'a>(
    key: &'a [u8],
    change: &'a Option<(Vec<u8>, i64)>,
    prev: Option<&Stored>,
    write_rev: i64,
) -> Option<View<'a>> {
    let (value, lease) = change.as_ref()?;
    Some(View {
        key,
        value,
        create_revision: prev.map_or(write_rev, |p| p.create_revision),
        mod_revision: write_rev,
        version: prev.map_or(0, |p| p.version) + 1,
        lease: *lease,
    })
}

/// Orders two keys by the request's sort, ties by key, reversed as a whole when descending.
fn compare(a: &View<'_>, b: &View<'_>, by: SortBy, descending: bool) -> Ordering {
    let target = match by {
        SortBy::Key => Ordering::Equal,
        SortBy::Version => a.version.cmp(&b.version),
        SortBy::CreateRevision => a.create_revision.cmp(&b.create_revision),
        SortBy::ModRevision => a.mod_revision.cmp(&b.mod_revision),
        SortBy::Value => a.value.cmp(b.value),
    };
    let order = target.then_with(|| a.key.cmp(b.key));
    if descending { order.reverse() } else { order }
}

/// Whether `v` passes the request's revision filters (0 = unbounded).
fn passes(v: &View<'_>, r: &RangeRequest) -> bool {
    let above = |value: i64, min: i64| min == 0 || value >= min;
    let below = |value: i64, max: i64| max == 0 || value <= max;
    above(v.create_revision, r.min_create_revision)
        && below(v.create_revision, r.max_create_revision)
        && above(v.mod_revision, r.min_mod_revision)
        && below(v.mod_revision, r.max_mod_revision)
}

impl World {
    /// Live keys in [start, end) as a call with `writes` (at `write_rev`) sees them, in key
    /// order (reversed when `reverse`).
    fn live<'a>(
        &'a self,
        writes: &'a Writes,
        write_rev: i64,
        start: &'a [u8],
        end: &'a [u8],
        reverse: bool,
    ) -> Box<dyn Iterator<Item = View<'a>> + 'a> {
        let Some(b) = bounds(start, end) else {
            return Box::new(std::iter::empty());
        };
        let stored = self.kvs.range::<[u8], _>(b);
        let buffered = writes.range::<[u8], _>(b);
        let stored_entry = |(k, s): (&'a Vec<u8>, &'a Stored)| -> Entry<'a> { (k, Some(s), None) };
        let buffered_entry =
            |(k, c): (&'a Vec<u8>, &'a Option<(Vec<u8>, i64)>)| -> Entry<'a> { (k, None, Some(c)) };
        // A buffered change shadows the stored record it replaces (Merge pairs them).
        let view = move |(key, stored, change): Entry<'a>| match change {
            Some(change) => overlaid(key, change, stored, write_rev),
            None => stored.map(|s| stored_view(key, s)),
        };
        if reverse {
            let merged = Merge {
                a: stored.rev().map(stored_entry).peekable(),
                b: buffered.rev().map(buffered_entry).peekable(),
                reverse: true,
            };
            Box::new(merged.filter_map(view))
        } else {
            let merged = Merge {
                a: stored.map(stored_entry).peekable(),
                b: buffered.map(buffered_entry).peekable(),
                reverse: false,
            };
            Box::new(merged.filter_map(view))
        }
    }

    pub(crate) fn get(&self, writes: &Writes, write_rev: i64, key: &[u8]) -> Option<Kv> {
        self.live(writes, write_rev, key, &[], false)
            .next()
            .map(|v| v.to_kv(false))
    }

    /// A range as the host answers it: sorted (ties by key), filtered, capped at the host's
    /// limit, keys-only or count-only as asked.
    pub(crate) fn range(&self, writes: &Writes, write_rev: i64, r: &RangeRequest) -> RangeResult {
        let cap = GUEST_RANGE_KEYS_MAX;
        let limit = match usize::try_from(r.limit) {
            Ok(0) | Err(_) => cap,
            Ok(n) => n.min(cap),
        };
        if r.count_only {
            let count = self
                .live(writes, write_rev, &r.start, &r.end, false)
                .filter(|v| passes(v, r))
                .count();
            return RangeResult {
                kvs: Vec::new(),
                more: false,
                count: count as u64,
            };
        }
        let (found, more) = if r.sort_by == SortBy::Key {
            let mut matching = self
                .live(writes, write_rev, &r.start, &r.end, r.descending)
                .filter(|v| passes(v, r));
            let found: Vec<View<'_>> = matching.by_ref().take(limit).collect();
            (found, matching.next().is_some())
        } else {
            let mut all: Vec<View<'_>> = self
                .live(writes, write_rev, &r.start, &r.end, false)
                .filter(|v| passes(v, r))
                .collect();
            let order = |a: &View<'_>, b: &View<'_>| compare(a, b, r.sort_by, r.descending);
            let more = all.len() > limit;
            if more {
                // Linear selection of the first `limit`, then a sort of only those.
                all.select_nth_unstable_by(limit, order);
                all.truncate(limit);
            }
            all.sort_by(order);
            (all, more)
        };
        let kvs: Vec<Kv> = found.iter().map(|v| v.to_kv(r.keys_only)).collect();
        RangeResult {
            count: kvs.len() as u64,
            kvs,
            more,
        }
    }

    /// Buffers the deletion of every live key in [start, end); returns how many.
    pub(crate) fn delete_range(
        &self,
        writes: &mut Writes,
        write_rev: i64,
        start: &[u8],
        end: &[u8],
    ) -> u64 {
        let doomed: Vec<Vec<u8>> = self
            .live(writes, write_rev, start, end, false)
            .map(|v| v.key.to_vec())
            .collect();
        for key in &doomed {
            writes.insert(key.clone(), None);
        }
        doomed.len() as u64
    }

    /// Checks a put as the host does; `Err` is the message the call fails with.
    pub(crate) fn check_put(&self, key: &[u8], lease: i64) -> Result<(), String> {
        if key.is_empty() {
            return Err(EMPTY_KEY.into());
        }
        if lease != 0 && !self.leases.contains_key(&lease) {
            return Err(LEASE_NOT_FOUND.into());
        }
        Ok(())
    }

    /// Applies `writes` as one revision (none if nothing changed); returns the store's revision.
    pub(crate) fn commit(&mut self, writes: Writes) -> i64 {
        let rev = self.revision + 1;
        let mut changed = false;
        for (key, change) in writes {
            match change {
                Some((value, lease)) => {
                    let prev = self.kvs.get(&key);
                    let stored = Stored {
                        value,
                        create_revision: prev.map_or(rev, |p| p.create_revision),
                        mod_revision: rev,
                        version: prev.map_or(0, |p| p.version) + 1,
                        lease,
                    };
                    self.kvs.insert(key.clone(), stored);
                }
                None => {
                    if self.kvs.remove(&key).is_none() {
                        continue;
                    }
                }
            }
            self.events.push((rev, key));
            changed = true;
        }
        if changed {
            self.revision = rev;
        }
        self.revision
    }

    /// Ends `lease`: its keys go in one revision. Returns whether it existed.
    pub(crate) fn end_lease(&mut self, lease: i64) -> bool {
        if self.leases.remove(&lease).is_none() {
            return false;
        }
        self.log_index += 1;
        let attached: Writes = self
            .kvs
            .iter()
            .filter(|(_, s)| s.lease == lease)
            .map(|(k, _)| (k.clone(), None))
            .collect();
        self.commit(attached);
        true
    }

    /// Whether a key in `ranges` changed after revision `after`.
    pub(crate) fn changed_since(&self, after: i64, ranges: &[crate::KeyRange]) -> bool {
        let first = self.events.partition_point(|(rev, _)| *rev <= after);
        self.events[first..]
            .iter()
            .any(|(_, key)| ranges.iter().any(|r| r.contains(key)))
    }

    pub(crate) fn lease_info(&self, id: i64) -> Option<LeaseInfo> {
        self.leases.get(&id).map(|l| LeaseInfo {
            id,
            granted_ttl_s: l.ttl_s,
        })
    }
}

/// One entry of a merged walk: the key, its stored record, its buffered change.
type Entry<'a> = (
    &'a [u8],
    Option<&'a Stored>,
    Option<&'a Option<(Vec<u8>, i64)>>,
);

/// Merges two key-ordered walks (both ascending, or both descending when `reverse`); on equal
/// keys, one entry carries both the stored record and the change.
struct Merge<'a, A: Iterator<Item = Entry<'a>>, B: Iterator<Item = Entry<'a>>> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
    reverse: bool,
}

impl<'a, A: Iterator<Item = Entry<'a>>, B: Iterator<Item = Entry<'a>>> Iterator
    for Merge<'a, A, B>
{
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        let order = match (self.a.peek(), self.b.peek()) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) if self.reverse => b.0.cmp(a.0),
            (Some(a), Some(b)) => a.0.cmp(b.0),
        };
        match order {
            Ordering::Less => self.a.next(),
            Ordering::Greater => self.b.next(),
            Ordering::Equal => {
                let (key, stored, _) = self.a.next()?;
                let (_, _, change) = self.b.next()?;
                Some((key, stored, change))
            }
        }
    }
}

/// Facts about the running call.
#[derive(Debug, Clone)]
pub(crate) struct CallFacts {
    pub(crate) log_index: u64,
    /// The revision its writes commit at (read-only: the store's current one).
    pub(crate) revision: i64,
    pub(crate) proposal_time_ms: u64,
    pub(crate) caller_lease: i64,
    pub(crate) read_only: bool,
}

/// The world lent to one running call, with the call's buffered writes.
pub(crate) struct Scope {
    pub(crate) world: World,
    pub(crate) facts: CallFacts,
    pub(crate) writes: Writes,
}

/// The panic payload with which a refused host call stops the guest; the harness catches it
/// and fails the call with the message, as the host does after a trap.
pub(crate) struct HostStop(pub(crate) String);

thread_local! {
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Lends `scope` to the SDK for the duration of `run`, then takes it back.
pub(crate) fn enter<T>(scope: Scope, run: impl FnOnce() -> T) -> (Scope, std::thread::Result<T>) {
    SCOPE.with(|s| *s.borrow_mut() = Some(scope));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run));
    let scope = SCOPE.with(|s| s.borrow_mut().take());
    match scope {
        Some(scope) => (scope, result),
        // Only `enter` takes it, and calls do not nest.
        None => unreachable!("the harness's world vanished during a call"),
    }
}

/// Runs `f` on the current call's scope; a host refusal stops the guest.
fn with<T>(f: impl FnOnce(&mut Scope) -> Result<T, String>) -> T {
    let result = SCOPE.with(|s| match s.borrow_mut().as_mut() {
        Some(scope) => f(scope),
        None => panic!(
            "baton_sdk: store or context used outside a module call; on native targets run the \
             module through baton_sdk::testing::Harness"
        ),
    });
    match result {
        Ok(value) => value,
        // resume_unwind skips the panic hook: a refusal is an outcome, not a test failure.
        Err(message) => std::panic::resume_unwind(Box::new(HostStop(message))),
    }
}

/// The `store` import, served by the current call's scope.
pub(crate) mod store {
    use super::*;

    pub(crate) fn get(key: &[u8]) -> Option<Kv> {
        with(|s| Ok(s.world.get(&s.writes, s.facts.revision, key)))
    }

    pub(crate) fn put(key: &[u8], value: &[u8], lease: Option<i64>) {
        with(|s| {
            if s.facts.read_only {
                return Err(READ_ONLY_WRITE.into());
            }
            let lease = lease.unwrap_or(0);
            s.world.check_put(key, lease)?;
            s.writes.insert(key.to_vec(), Some((value.to_vec(), lease)));
            Ok(())
        })
    }

    pub(crate) fn delete(key: &[u8]) -> bool {
        delete_range(key, &[]) > 0
    }

    pub(crate) fn delete_range(start: &[u8], end: &[u8]) -> u64 {
        with(|s| {
            if s.facts.read_only {
                return Err(READ_ONLY_WRITE.into());
            }
            Ok(s.world
                .delete_range(&mut s.writes, s.facts.revision, start, end))
        })
    }

    pub(crate) fn range(request: &RangeRequest) -> RangeResult {
        with(|s| Ok(s.world.range(&s.writes, s.facts.revision, request)))
    }

    pub(crate) fn lease(id: i64) -> Option<LeaseInfo> {
        with(|s| Ok(s.world.lease_info(id)))
    }
}

/// The `context` import, served by the current call's scope.
pub(crate) mod context {
    use super::with;

    pub(crate) fn log_index() -> u64 {
        with(|s| Ok(s.facts.log_index))
    }

    pub(crate) fn revision() -> i64 {
        with(|s| Ok(s.facts.revision))
    }

    pub(crate) fn proposal_time_ms() -> u64 {
        with(|s| Ok(s.facts.proposal_time_ms))
    }

    pub(crate) fn caller_lease() -> i64 {
        with(|s| Ok(s.facts.caller_lease))
    }

    pub(crate) fn caller() -> String {
        with(|s| Ok(s.world.caller.clone()))
    }

    pub(crate) fn module_name() -> String {
        with(|s| Ok(s.world.module_name.clone()))
    }

    pub(crate) fn module_hash() -> String {
        with(|s| Ok(s.world.module_hash.clone()))
    }
}
