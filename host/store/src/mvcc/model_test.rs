//! Randomized comparison of the redb store with the reference model: seeded sequences of
//! Put / DeleteRange / Txn / Compaction / Range must produce identical responses, events and
//! errors, and identical state at every retained revision.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redb::ReadableDatabase;

use crate::mvcc::checks::check_txn;
use crate::mvcc::model::Model;
use crate::ops::kv::{ApplyError, KvError, KvRequest, KvResponse};
use crate::testing::TestStore;
use baton_limits::TXN_OPS_MAX;
use baton_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest, compare, request_op,
};

const SEEDS: u64 = 24;
const STEPS_PER_SEED: usize = 300;
const TXN_DEPTH_MAX: u32 = 2;
const VALUES: [&str; 4] = ["", "x", "y", "zz"];

struct Gen {
    rng: StdRng,
}

impl Gen {
    fn chance(&mut self, percent: u32) -> bool {
        self.rng.random_range(0..100) < percent
    }

    /// Keys over a tiny alphabet so that ranges, prefixes and collisions are common.
    fn key(&mut self) -> Vec<u8> {
        let len = self.rng.random_range(1..=2);
        (0..len)
            .map(|_| self.rng.random_range(b'a'..=b'd'))
            .collect()
    }

    fn range_end(&mut self, key: &[u8]) -> Vec<u8> {
        match self.rng.random_range(0..10) {
            0..=3 => vec![],
            4 => vec![0],
            5..=7 => {
                let mut end = key.to_vec();
                if let Some(last) = end.last_mut() {
                    *last += 1;
                }
                end
            }
            _ => self.key(),
        }
    }

    fn value(&mut self) -> Vec<u8> {
        VALUES[self.rng.random_range(0..VALUES.len())].into()
    }

    fn revision(&mut self, m: &Model) -> i64 {
        match self.rng.random_range(0..10) {
            0..=4 => 0,
            5 => -self.rng.random_range(1..3),
            _ => self.rng.random_range(m.compact.max(0)..=m.rev + 1),
        }
    }

    fn put(&mut self) -> PutRequest {
        let ignore_value = self.chance(10);
        let ignore_lease = self.chance(10);
        PutRequest {
            key: self.key(),
            value: if ignore_value { vec![] } else { self.value() },
            lease: if !ignore_lease && self.chance(3) {
                42
            } else {
                0
            },
            prev_kv: self.chance(40),
            ignore_value,
            ignore_lease,
        }
    }

    fn delete(&mut self) -> DeleteRangeRequest {
        let key = self.key();
        DeleteRangeRequest {
            range_end: self.range_end(&key),
            key,
            prev_kv: self.chance(50),
        }
    }

    fn range(&mut self, m: &Model) -> RangeRequest {
        let key = self.key();
        let bound = |g: &mut Gen| {
            if g.chance(15) {
                g.rng.random_range(1..=m.rev + 1)
            } else {
                0
            }
        };
        RangeRequest {
            range_end: self.range_end(&key),
            key,
            limit: match self.rng.random_range(0..10) {
                0..=5 => 0,
                6 => -1,
                _ => self.rng.random_range(1..4),
            },
            revision: self.revision(m),
            sort_order: if self.chance(40) {
                self.rng.random_range(0..=3)
            } else {
                0
            },
            sort_target: if self.chance(40) {
                self.rng.random_range(0..=5)
            } else {
                0
            },
            serializable: self.chance(50),
            keys_only: self.chance(15),
            count_only: self.chance(10),
            min_mod_revision: bound(self),
            max_mod_revision: bound(self),
            min_create_revision: bound(self),
            max_create_revision: bound(self),
        }
    }

    fn compare(&mut self, m: &Model) -> Compare {
        use compare::TargetUnion as U;
        let key = self.key();
        let target = if self.chance(3) {
            7
        } else {
            self.rng.random_range(0..=4)
        };
        // Mostly the operand kind that matches the target, sometimes another one.
        let kind = if self.chance(90) {
            target
        } else {
            self.rng.random_range(0..=4)
        };
        let rev = self.rng.random_range(0..=m.rev + 1);
        let union = match kind {
            0 => U::Version(self.rng.random_range(0..4)),
            1 => U::CreateRevision(rev),
            2 => U::ModRevision(rev),
            3 => U::Value(self.value()),
            _ => U::Lease(if self.chance(80) { 0 } else { 42 }),
        };
        Compare {
            result: if self.chance(3) {
                9
            } else {
                self.rng.random_range(0..=3)
            },
            target,
            range_end: if self.chance(25) {
                self.range_end(&key)
            } else {
                vec![]
            },
            key,
            target_union: if self.chance(95) { Some(union) } else { None },
        }
    }

    fn ops(&mut self, m: &Model, depth: u32) -> Vec<RequestOp> {
        let n = self.rng.random_range(0..=3);
        (0..n)
            .map(|_| {
                let request = match self.rng.random_range(0..10) {
                    0..=2 => request_op::Request::RequestRange(self.range(m)),
                    3..=6 => request_op::Request::RequestPut(self.put()),
                    7 | 8 => request_op::Request::RequestDeleteRange(self.delete()),
                    _ if depth < TXN_DEPTH_MAX => {
                        request_op::Request::RequestTxn(self.txn(m, depth + 1))
                    }
                    _ => request_op::Request::RequestRange(self.range(m)),
                };
                RequestOp {
                    request: Some(request),
                }
            })
            .collect()
    }

    fn txn(&mut self, m: &Model, depth: u32) -> TxnRequest {
        let n = self.rng.random_range(0..=2);
        TxnRequest {
            compare: (0..n).map(|_| self.compare(m)).collect(),
            success: self.ops(m, depth),
            failure: self.ops(m, depth),
        }
    }

    /// A txn that passes the API checks (most of the time; else whatever was generated last,
    /// which both sides must still handle identically).
    fn checked_txn(&mut self, m: &Model) -> TxnRequest {
        let mut t = self.txn(m, 0);
        for _ in 0..20 {
            if check_txn(&t, TXN_OPS_MAX).is_ok() {
                break;
            }
            t = self.txn(m, 0);
        }
        t
    }
}

fn store_result(
    r: Result<crate::ops::kv::Applied, ApplyError>,
) -> Result<(KvResponse, Vec<baton_proto::mvccpb::Event>), KvError> {
    match r {
        Ok(a) => Ok((a.response, a.events)),
        Err(ApplyError::Rejected(e)) => Err(e),
        Err(ApplyError::Storage(e)) => panic!("storage failure: {e}"),
    }
}

fn full_scan(rev: i64) -> RangeRequest {
    RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision: rev,
        ..Default::default()
    }
}

fn run_seed(seed: u64) {
    let mut g = Gen {
        rng: StdRng::seed_from_u64(seed),
    };
    let store = TestStore::new();
    let mut model = Model::new();
    for step in 0..STEPS_PER_SEED {
        let req = match g.rng.random_range(0..100) {
            0..=34 => Some(KvRequest::Put(g.put())),
            35..=44 => Some(KvRequest::DeleteRange(g.delete())),
            45..=64 => Some(KvRequest::Txn(g.checked_txn(&model))),
            65..=67 => {
                let revision = g.rng.random_range(model.compact - 1..=model.rev + 1);
                Some(KvRequest::Compaction(CompactionRequest {
                    revision,
                    physical: g.chance(50),
                }))
            }
            _ => None,
        };
        let ctx = format!("seed {seed} step {step}: {req:?}");
        match req {
            Some(req) => {
                let expected = model.apply(&req);
                assert_eq!(store_result(store.apply(req)), expected, "{ctx}");
            }
            None => {
                let r = g.range(&model);
                assert_eq!(
                    store.range(&r),
                    model.range(model.rev, &r),
                    "seed {seed} step {step}: {r:?}"
                );
                if let KvRequest::Txn(t) = KvRequest::Txn(g.checked_txn(&model))
                    && crate::ops::txn::is_txn_read_only(&t)
                {
                    let via_read = crate::ops::txn::txn_read_only(&store.view(), &t);
                    let via_model = model
                        .clone()
                        .apply(&KvRequest::Txn(t.clone()))
                        .map(|(r, _)| r);
                    assert_eq!(
                        via_read.map(KvResponse::Txn),
                        via_model,
                        "{ctx} read-only {t:?}"
                    );
                }
            }
        }
        assert_eq!(store.rev(), model.rev, "{ctx}");
    }
    check_table_invariants(&store);
    // Every revision still readable must show the same state.
    for rev in model.compact.max(1)..=model.rev {
        assert_eq!(
            store.range(&full_scan(rev)),
            model.range(model.rev, &full_scan(rev)),
            "seed {seed} rev {rev}"
        );
    }
}

#[test]
fn store_matches_model_on_random_operations() {
    for seed in 0..SEEDS {
        run_seed(seed);
    }
}

/// The storage contract of `mvcc/mod.rs`: KV_LATEST holds exactly the keys whose last change
/// is a put, with that change's bytes; the key index and KV_HISTORY list the same changes; and
/// an index rebuilt from the tables (as at start-up) equals the one apply kept up to date.
fn check_table_invariants(store: &TestStore) {
    use redb::ReadableTableMetadata;

    use crate::storage::schema::{KV_HISTORY, KV_LATEST, REV_KIND_PUT, REV_KIND_TOMBSTONE};
    let txn = store.db.begin_read().unwrap();
    let latest = txn.open_table(KV_LATEST).unwrap();
    let history = txn.open_table(KV_HISTORY).unwrap();
    let index = store.index.dump();
    assert_eq!(store.index.changes() as u64, history.len().unwrap());
    let mut live = Vec::new();
    for (key, changes) in &index {
        for &(main, sub, tombstone) in changes {
            let record = history
                .get((main, sub))
                .unwrap()
                .expect("history has every indexed change");
            let kind = if tombstone {
                REV_KIND_TOMBSTONE
            } else {
                REV_KIND_PUT
            };
            assert_eq!(record.value()[0], kind);
        }
        if let Some(&(main, sub, false)) = changes.last() {
            live.push((key, main, sub));
        }
    }
    assert_eq!(latest.len().unwrap(), live.len() as u64);
    for (key, main, sub) in live {
        let stored = latest
            .get(key.as_slice())
            .unwrap()
            .expect("live key in KV_LATEST");
        let record = history.get((main, sub)).unwrap().unwrap();
        assert_eq!(stored.value(), &record.value()[1..]);
    }
    let rebuilt = crate::mvcc::load_key_index(&txn).unwrap();
    assert_eq!(rebuilt.dump(), index, "index rebuilt from history differs");
}
