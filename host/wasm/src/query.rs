//! Answering a range query over keys visited in key order: filters by revision, then either
//! takes the first `limit` matches (key order: the scan stops there) or keeps the best `limit`
//! under another sort in a bounded heap (the scan must see every key). Pure, so every replica
//! answers alike; the caller pays for `scanned` keys.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::ControlFlow;

use crate::store::{RangeAnswer, RangeQuery, SortBy, StoreFailure, StoredKv};

/// A candidate in the heap, ordered so that the heap's top is the worst one kept.
struct Ranked {
    kv: StoredKv,
    sort_by: SortBy,
    descending: bool,
}

impl Ranked {
    /// The query's order: better first.
    fn order(&self, other: &Self) -> Ordering {
        let by = match self.sort_by {
            SortBy::Key => Ordering::Equal,
            SortBy::Version => self.kv.version.cmp(&other.kv.version),
            SortBy::CreateRevision => self.kv.create_revision.cmp(&other.kv.create_revision),
            SortBy::ModRevision => self.kv.mod_revision.cmp(&other.kv.mod_revision),
            SortBy::Value => self.kv.value.cmp(&other.kv.value),
        };
        // Ties by key; descending reverses the whole order, ties included (etcd leaves ties
        // unspecified; every replica must agree on one).
        let order = by.then_with(|| self.kv.key.cmp(&other.kv.key));
        if self.descending {
            order.reverse()
        } else {
            order
        }
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.order(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.order(other)
    }
}

pub(crate) struct Search<'q> {
    query: &'q RangeQuery,
    scan_max: u64,
    bytes_max: u64,
    scanned: u64,
    matched: u64,
    /// Bytes of candidates taken so far (never decreased: a bound on the work, not the heap).
    bytes: u64,
    in_key_order: Vec<StoredKv>,
    heap: BinaryHeap<Ranked>,
    out_of_fuel: bool,
}

impl<'q> Search<'q> {
    pub(crate) fn new(query: &'q RangeQuery, scan_max: u64, bytes_max: u64) -> Self {
        debug_assert!(query.limit > 0, "the host bounds the limit to at least 1");
        Search {
            query,
            scan_max,
            bytes_max,
            scanned: 0,
            matched: 0,
            bytes: 0,
            in_key_order: Vec::new(),
            heap: BinaryHeap::new(),
            out_of_fuel: false,
        }
    }

    fn matches(&self, kv: &StoredKv) -> bool {
        let q = self.query;
        let within = |value: i64, min: i64, max: i64| {
            (min == 0 || value >= min) && (max == 0 || value <= max)
        };
        within(
            kv.create_revision,
            q.min_create_revision,
            q.max_create_revision,
        ) && within(kv.mod_revision, q.min_mod_revision, q.max_mod_revision)
    }

    pub(crate) fn visit(&mut self, mut kv: StoredKv) -> ControlFlow<()> {
        self.scanned += 1;
        if self.scanned > self.scan_max {
            self.out_of_fuel = true;
            return ControlFlow::Break(());
        }
        if !self.matches(&kv) {
            return ControlFlow::Continue(());
        }
        self.matched += 1;
        let q = self.query;
        if q.count_only {
            return ControlFlow::Continue(());
        }
        if q.keys_only && q.sort_by != SortBy::Value {
            kv.value = Vec::new();
        }
        self.bytes = self
            .bytes
            .saturating_add((kv.key.len() + kv.value.len()) as u64);
        if self.bytes > self.bytes_max {
            self.out_of_fuel = true;
            return ControlFlow::Break(());
        }
        if q.sort_by == SortBy::Key {
            // Visited in the query's own order: the first `limit` are the answer, and one more
            // match is all `more` needs.
            if self.in_key_order.len() == q.limit {
                return ControlFlow::Break(());
            }
            self.in_key_order.push(kv);
            return ControlFlow::Continue(());
        }
        self.heap.push(Ranked {
            kv,
            sort_by: q.sort_by,
            descending: q.descending,
        });
        if self.heap.len() > q.limit {
            self.heap.pop();
        }
        ControlFlow::Continue(())
    }

    pub(crate) fn finish(self) -> Result<RangeAnswer, StoreFailure> {
        if self.out_of_fuel {
            return Err(StoreFailure::OutOfFuel);
        }
        let q = self.query;
        if q.count_only {
            return Ok(RangeAnswer {
                kvs: Vec::new(),
                more: false,
                count: self.matched,
                scanned: self.scanned,
            });
        }
        let mut kvs = if q.sort_by == SortBy::Key {
            self.in_key_order
        } else {
            let mut kept = self.heap.into_sorted_vec();
            kept.truncate(q.limit);
            kept.into_iter().map(|r| r.kv).collect()
        };
        if q.keys_only {
            for kv in &mut kvs {
                kv.value = Vec::new();
            }
        }
        Ok(RangeAnswer {
            more: self.matched > kvs.len() as u64,
            count: kvs.len() as u64,
            kvs,
            scanned: self.scanned,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, create: i64, modr: i64) -> StoredKv {
        StoredKv {
            key: key.as_bytes().to_vec(),
            value: format!("v{modr}").into_bytes(),
            create_revision: create,
            mod_revision: modr,
            version: modr - create + 1,
            lease: 0,
        }
    }

    fn run(query: &RangeQuery, kvs: &[StoredKv]) -> RangeAnswer {
        let mut search = Search::new(query, u64::MAX, u64::MAX);
        let mut ordered = kvs.to_vec();
        ordered.sort_by(|a, b| a.key.cmp(&b.key));
        if query.sort_by == SortBy::Key && query.descending {
            ordered.reverse();
        }
        for kv in ordered {
            if search.visit(kv).is_break() {
                break;
            }
        }
        search.finish().unwrap()
    }

    fn keys(answer: &RangeAnswer) -> Vec<String> {
        let key = |kv: &StoredKv| String::from_utf8(kv.key.clone()).unwrap();
        answer.kvs.iter().map(key).collect()
    }

    fn sample() -> Vec<StoredKv> {
        vec![
            kv("a", 5, 9),
            kv("b", 3, 3),
            kv("c", 7, 8),
            kv("d", 3, 4),
            kv("e", 1, 10),
        ]
    }

    #[test]
    fn sorts_by_create_revision_with_ties_by_key_and_a_limit() {
        let query = RangeQuery {
            limit: 3,
            sort_by: SortBy::CreateRevision,
            ..Default::default()
        };
        let answer = run(&query, &sample());
        assert_eq!(keys(&answer), ["e", "b", "d"]);
        assert!(answer.more);
        let descending = RangeQuery {
            descending: true,
            ..query
        };
        let answer = run(&descending, &sample());
        assert_eq!(keys(&answer), ["c", "a", "d"]);
    }

    #[test]
    fn revision_filters_are_inclusive_and_zero_is_unbounded() {
        let query = RangeQuery {
            limit: 10,
            max_create_revision: 3,
            min_mod_revision: 4,
            ..Default::default()
        };
        assert_eq!(keys(&run(&query, &sample())), ["d", "e"]);
        // Created at 3 exactly and modified at 4 or later: only d.
        let count = RangeQuery {
            count_only: true,
            min_create_revision: 3,
            ..query
        };
        let answer = run(&count, &sample());
        assert_eq!((answer.count, answer.kvs.len()), (1, 0));
    }

    #[test]
    fn key_order_stops_after_the_limit_and_keys_only_drops_values() {
        let query = RangeQuery {
            limit: 2,
            descending: true,
            keys_only: true,
            ..Default::default()
        };
        let answer = run(&query, &sample());
        assert_eq!(keys(&answer), ["e", "d"]);
        assert!(answer.more);
        assert!(answer.kvs.iter().all(|kv| kv.value.is_empty()));
        // It stopped at the first match past the limit.
        assert_eq!(answer.scanned, 3);
    }

    #[test]
    fn the_scan_bound_fails_the_query() {
        let query = RangeQuery {
            limit: 1,
            sort_by: SortBy::ModRevision,
            ..Default::default()
        };
        let mut search = Search::new(&query, 2, u64::MAX);
        for kv in sample() {
            if search.visit(kv).is_break() {
                break;
            }
        }
        assert_eq!(search.finish(), Err(StoreFailure::OutOfFuel));
    }
}
