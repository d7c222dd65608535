//! Seeded random operations over a small key space, so ops collide and histories get deep.

use etcd_client::{CompareOp, SortOrder, SortTarget};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use super::model::{
    CompareSpec, CompareTarget, DeleteSpec, KeyRange, Op, PutSpec, RangeSpec, TxnOpSpec, TxnSpec,
};

/// Ten keys: few enough to collide constantly, with nested prefixes for range ops.
const KEYS: [&str; 10] = ["a", "a/1", "a/2", "a/3", "b", "b/1", "c", "c/1/x", "d", "e"];
/// Range starts and ends, including some that match no key.
const RANGE_KEYS: [&str; 8] = ["a", "a/", "b", "c/", "c/1/", "d", "z", "0"];
const VALUES: [&str; 5] = ["", "v0", "v1", "v2", "x"];
/// A lease id no server has granted.
const UNKNOWN_LEASE: i64 = 0x7e57;
/// Lease ids the run grants, revokes and attaches keys to.
const LEASE_IDS: [i64; 3] = [0x1001, 0x1002, 0x1003];
/// Far longer than any run: expiry timing is not what this test compares.
const LEASE_TTL_S: i64 = 3600;
/// Most operations in one txn branch; one more is an error the test provokes on purpose.
const TXN_OPS_MAX: usize = 128;
/// Nesting depth of generated txns (etcd allows arbitrary depth).
const TXN_DEPTH_MAX: usize = 2;

/// What the generator knows of the reference server's history.
pub(super) struct History {
    pub current_revision: i64,
    pub compacted_revision: i64,
}

pub(super) struct Generator {
    rng: StdRng,
    /// Single-member clusters allow serializable reads and txn reads of invalid revisions.
    single_member: bool,
}

impl Generator {
    pub(super) fn new(rng: StdRng, single_member: bool) -> Self {
        Self { rng, single_member }
    }

    pub(super) fn op(&mut self, h: &History) -> Op {
        match self.rng.random_range(0..100) {
            0..30 => Op::Put(self.put(None)),
            30..60 => Op::Range(self.range(h, false)),
            60..70 => Op::Delete(self.delete(false)),
            70..91 => Op::Txn(self.txn(h, 0)),
            91..94 => Op::LeaseGrant {
                id: self.lease_id(),
                ttl: LEASE_TTL_S,
            },
            94..96 => Op::LeaseRevoke {
                id: if self.chance(10) {
                    UNKNOWN_LEASE
                } else {
                    self.lease_id()
                },
            },
            _ => Op::Compact {
                revision: self.compaction_revision(h),
                physical: self.chance(50),
            },
        }
    }

    fn lease_id(&mut self) -> i64 {
        LEASE_IDS
            .choose(&mut self.rng)
            .copied()
            .unwrap_or(LEASE_IDS[0])
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.rng.random_range(0..100) < percent
    }

    fn key(&mut self) -> String {
        if self.chance(1) {
            return String::new(); // invalid on purpose
        }
        KEYS.choose(&mut self.rng)
            .copied()
            .unwrap_or("a")
            .to_owned()
    }

    fn value(&mut self) -> String {
        VALUES
            .choose(&mut self.rng)
            .copied()
            .unwrap_or("")
            .to_owned()
    }

    fn key_range(&mut self) -> KeyRange {
        match self.rng.random_range(0..100) {
            0..40 => KeyRange::Single,
            40..65 => KeyRange::Prefix,
            65..75 => KeyRange::FromKey,
            75..88 => KeyRange::UpTo(
                RANGE_KEYS
                    .choose(&mut self.rng)
                    .copied()
                    .unwrap_or("z")
                    .to_owned(),
            ),
            _ => KeyRange::All,
        }
    }

    fn range_start(&mut self, range: &KeyRange) -> String {
        match range {
            KeyRange::Single => self.key(),
            _ if self.chance(50) => RANGE_KEYS
                .choose(&mut self.rng)
                .copied()
                .unwrap_or("a")
                .to_owned(),
            _ => self.key(),
        }
    }

    /// Mostly current reads, plus historical, compacted, future and negative ones.
    fn read_revision(&mut self, h: &History, in_txn: bool) -> i64 {
        if in_txn && !self.single_member {
            // etcd 3.4 drops txn ranges on members that do not answer the client before it
            // checks their revisions, so an invalid one makes members diverge: only valid ones.
            let oldest = h.compacted_revision.max(1);
            return if self.chance(30) {
                self.rng.random_range(oldest..=h.current_revision)
            } else {
                0
            };
        }
        match self.rng.random_range(0..100) {
            0..65 => 0,
            65..83 => self.rng.random_range(1..=h.current_revision),
            83..90 => self
                .rng
                .random_range(h.current_revision + 1..=h.current_revision + 3),
            90..95 if h.compacted_revision > 1 => self.rng.random_range(1..h.compacted_revision),
            _ => -self.rng.random_range(1..=2),
        }
    }

    fn compaction_revision(&mut self, h: &History) -> i64 {
        let low = h.compacted_revision.max(1) - 1;
        if self.chance(15) {
            self.rng.random_range(low..=h.current_revision + 2)
        } else {
            // Usually a valid target somewhat behind the head, so reads of old revisions fail.
            let lag = self.rng.random_range(0..=10);
            (h.current_revision - lag)
                .max(h.compacted_revision + 1)
                .min(h.current_revision)
        }
    }

    fn put(&mut self, key: Option<String>) -> PutSpec {
        let ignore_value = self.chance(5);
        PutSpec {
            key: key.unwrap_or_else(|| self.key()),
            // With ignore_value the value must be empty; sometimes it is not (an error).
            value: if ignore_value && self.chance(70) {
                String::new()
            } else {
                self.value()
            },
            lease: match self.rng.random_range(0..100) {
                0..2 => UNKNOWN_LEASE,
                2..22 => self.lease_id(),
                _ => 0,
            },
            prev_kv: self.chance(35),
            ignore_value,
            ignore_lease: self.chance(5),
        }
    }

    fn delete(&mut self, single_key: bool) -> DeleteSpec {
        let range = if single_key {
            KeyRange::Single
        } else {
            self.key_range()
        };
        DeleteSpec {
            key: self.range_start(&range),
            range,
            prev_kv: self.chance(50),
        }
    }

    fn range(&mut self, h: &History, in_txn: bool) -> RangeSpec {
        let range = self.key_range();
        let targets = [
            SortTarget::Key,
            SortTarget::Version,
            SortTarget::Create,
            SortTarget::Mod,
            SortTarget::Value,
        ];
        let orders = [SortOrder::None, SortOrder::Ascend, SortOrder::Descend];
        let sort = if self.chance(45) {
            let target = *targets.choose(&mut self.rng).unwrap_or(&SortTarget::Key);
            Some((
                target,
                *orders.choose(&mut self.rng).unwrap_or(&SortOrder::None),
            ))
        } else {
            None
        };
        let mut filter = || {
            if self.chance(7) {
                self.rng.random_range(1..=h.current_revision)
            } else {
                0
            }
        };
        let (min_mod, max_mod, min_create, max_create) = (filter(), filter(), filter(), filter());
        RangeSpec {
            key: self.range_start(&range),
            range,
            limit: match self.rng.random_range(0..100) {
                0..60 => 0,
                60..95 => self.rng.random_range(1..=4),
                _ => -1,
            },
            revision: self.read_revision(h, in_txn),
            sort,
            keys_only: self.chance(10),
            count_only: self.chance(10),
            serializable: self.single_member && self.chance(20),
            min_mod_revision: min_mod,
            max_mod_revision: max_mod,
            min_create_revision: min_create,
            max_create_revision: max_create,
        }
    }

    fn compare(&mut self, h: &History) -> CompareSpec {
        let results = [
            CompareOp::Equal,
            CompareOp::Greater,
            CompareOp::Less,
            CompareOp::NotEqual,
        ];
        let near_head = |rng: &mut StdRng| rng.random_range(0..=h.current_revision + 1);
        let target = match self.rng.random_range(0..5) {
            0 => CompareTarget::Value(self.value()),
            1 => CompareTarget::Version(self.rng.random_range(0..=4)),
            2 => CompareTarget::Create(near_head(&mut self.rng)),
            3 => CompareTarget::Mod(near_head(&mut self.rng)),
            _ => CompareTarget::Lease(self.rng.random_range(0..=1)),
        };
        CompareSpec {
            key: self.key(),
            prefix: self.chance(15),
            target,
            result: *results.choose(&mut self.rng).unwrap_or(&CompareOp::Equal),
        }
    }

    pub(super) fn txn(&mut self, h: &History, depth: usize) -> TxnSpec {
        let compares = (0..self.rng.random_range(0..=3))
            .map(|_| self.compare(h))
            .collect();
        let mut success = self.branch(h, depth);
        let failure = self.branch(h, depth);
        if depth == 0 && !self.single_member && success.is_empty() && failure.is_empty() {
            // etcd 3.4 counts a txn without ops as serializable and answers it from the
            // receiving member's state with no read barrier: a lagging follower would answer
            // an older revision, so such txns are only sent to single members.
            success.push(TxnOpSpec::Range(self.range(h, true)));
        }
        TxnSpec {
            compares,
            success,
            failure,
        }
    }

    fn branch(&mut self, h: &History, depth: usize) -> Vec<TxnOpSpec> {
        if self.chance(1) {
            // One op too many: rejected as a whole.
            return (0..=TXN_OPS_MAX)
                .map(|_| TxnOpSpec::Range(self.range(h, true)))
                .collect();
        }
        let mut used: Vec<String> = Vec::new();
        let mut ops = Vec::new();
        for _ in 0..self.rng.random_range(0..=4) {
            // Mostly distinct write keys per branch; sometimes a duplicate (an error).
            let mut fresh_key = |g: &mut Self| {
                let mut key = g.key();
                for _ in 0..KEYS.len() {
                    if !used.contains(&key) || g.chance(10) {
                        break;
                    }
                    key = g.key();
                }
                used.push(key.clone());
                key
            };
            let op = match self.rng.random_range(0..100) {
                0..45 => {
                    let key = fresh_key(self);
                    TxnOpSpec::Put(self.put(Some(key)))
                }
                45..75 => TxnOpSpec::Range(self.range(h, true)),
                75..90 => {
                    let key = fresh_key(self);
                    let mut delete = self.delete(true);
                    delete.key = key;
                    TxnOpSpec::Delete(delete)
                }
                _ if depth < TXN_DEPTH_MAX => TxnOpSpec::Txn(self.txn(h, depth + 1)),
                _ => TxnOpSpec::Range(self.range(h, true)),
            };
            ops.push(op);
        }
        ops
    }
}
