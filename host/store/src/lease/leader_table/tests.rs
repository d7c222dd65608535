use super::*;
use baton_limits::{LEASE_CHECKPOINT_STALENESS_MS_MAX, LEASE_CHECKPOINT_TICK_MS};

fn leading(now_ms: u64) -> LeaderTable {
    let mut t = LeaderTable::default();
    t.activate(now_ms, []);
    t
}

fn grant(t: &mut LeaderTable, now_ms: u64, id: i64, ttl_s: i64) {
    t.apply(now_ms, LeaseChange::Granted { id, ttl_s });
}

fn record(ttl_s: i64, remaining_s: i64) -> LeaseRecord {
    LeaseRecord { ttl_s, remaining_s }
}

#[test]
fn a_table_that_does_not_lead_answers_nothing_and_ignores_changes() {
    let mut t = LeaderTable::default();
    t.apply(0, LeaseChange::Granted { id: 1, ttl_s: 5 });
    assert_eq!(t.renew(0, 1), Err(NotLeading));
    assert_eq!(t.time_to_live(0, 1), Err(NotLeading));
    assert!(t.take_expired(u64::MAX, 10).is_empty());
    t.activate(0, []);
    assert_eq!(
        t.renew(0, 1),
        Ok(Renewal::NotFound),
        "the change was not remembered"
    );
}

#[test]
fn renewal_moves_the_deadline_and_expiry_hands_each_lease_out_once() {
    let mut t = leading(0);
    grant(&mut t, 0, 7, 5);
    assert_eq!(t.time_to_live(1_500, 7), Ok(Some((3, 5))));
    assert!(t.take_expired(4_999, 10).is_empty());
    assert_eq!(
        t.renew(4_000, 7),
        Ok(Renewal::Renewed {
            ttl_s: 5,
            must_clear: false
        })
    );
    assert!(t.take_expired(8_999, 10).is_empty(), "renewed until 9000");
    assert_eq!(t.take_expired(9_000, 10), vec![7]);
    assert!(
        t.take_expired(20_000, 10).is_empty(),
        "already being revoked"
    );
    assert_eq!(t.renew(9_001, 7), Ok(Renewal::Expired));
    t.revoke_failed(7);
    assert_eq!(
        t.take_expired(9_100, 10),
        vec![7],
        "a failed revoke is retried"
    );
    t.apply(9_200, LeaseChange::Revoked { id: 7 });
    assert_eq!(t.renew(9_300, 7), Ok(Renewal::NotFound));
    assert!(t.is_empty());
}

#[test]
fn expiry_is_earliest_first_and_bounded() {
    let mut t = leading(0);
    for (id, ttl_s) in [(1, 9), (2, 3), (3, 6), (4, 30)] {
        grant(&mut t, 0, id, ttl_s);
    }
    assert_eq!(t.take_expired(10_000, 2), vec![2, 3]);
    assert_eq!(t.take_expired(10_000, 2), vec![1]);
    assert_eq!(t.len(), 4, "expired leases stay until their revoke commits");
}

#[test]
fn takeover_starts_at_the_recorded_remaining_ttl_or_the_full_ttl() {
    let mut t = LeaderTable::default();
    t.activate(100_000, [(1, record(60, 0)), (2, record(60, 12))]);
    assert_eq!(t.time_to_live(100_000, 1), Ok(Some((60, 60))));
    assert_eq!(t.time_to_live(100_000, 2), Ok(Some((12, 60))));
    assert_eq!(t.take_expired(112_000, 10), vec![2]);
    // A renewal of a lease with a recorded remaining TTL must clear it first.
    assert_eq!(
        t.renew(101_000, 1),
        Ok(Renewal::Renewed {
            ttl_s: 60,
            must_clear: false
        })
    );
    t.revoke_failed(2);
    t.activate(200_000, [(2, record(60, 12))]);
    assert_eq!(
        t.renew(201_000, 2),
        Ok(Renewal::Renewed {
            ttl_s: 60,
            must_clear: true
        })
    );
    assert!(t.clear_pending(2));
    assert_eq!(t.pending_clears(), vec![2]);
    t.clears_committed(&[2]);
    assert!(!t.clear_pending(2));
    assert_eq!(
        t.renew(202_000, 2),
        Ok(Renewal::Renewed {
            ttl_s: 60,
            must_clear: false
        })
    );
}

#[test]
fn leases_renewed_every_third_of_their_ttl_are_never_checkpointed() {
    let mut t = leading(0);
    grant(&mut t, 0, 1, 6);
    grant(&mut t, 0, 2, 600);
    let mut now = 0;
    while now < 3_600_000 {
        now += LEASE_CHECKPOINT_TICK_MS;
        if now % 2_000 == 0 {
            t.renew(now, 1).unwrap();
        }
        if now % 200_000 == 0 {
            t.renew(now, 2).unwrap();
        }
        assert!(t.take_due_checkpoints(now, 100).is_empty(), "at {now} ms");
    }
}

#[test]
fn idle_leases_are_checkpointed_after_half_their_ttl_capped() {
    let mut t = leading(0);
    grant(&mut t, 0, 1, 6);
    grant(&mut t, 0, 2, 3_600);
    let cap = LEASE_CHECKPOINT_STALENESS_MS_MAX;
    assert!(
        cap < 3_600_000 / 2,
        "lease 2's TTL must exceed twice the cap"
    );
    assert!(t.take_due_checkpoints(2_999, 100).is_empty());
    assert_eq!(
        t.take_due_checkpoints(3_000, 100),
        vec![Checkpoint {
            id: 1,
            remaining_s: 3
        }]
    );
    // Half of lease 1's TTL after its checkpoint it has expired: nothing more to record.
    assert!(t.take_due_checkpoints(5_999, 100).is_empty());
    assert_eq!(
        t.take_due_checkpoints(cap, 100),
        vec![Checkpoint {
            id: 2,
            remaining_s: 3_600 - (cap / 1_000) as i64
        }]
    );
    assert!(t.take_due_checkpoints(2 * cap - 1, 100).is_empty());
    assert_eq!(t.take_due_checkpoints(2 * cap, 100).len(), 1);
    // Now recorded: a renewal must clear.
    assert_eq!(
        t.renew(2 * cap + 1, 2),
        Ok(Renewal::Renewed {
            ttl_s: 3_600,
            must_clear: true
        })
    );
}

#[test]
fn checkpoints_are_bounded_per_pass() {
    let mut t = leading(0);
    for id in 1..=10 {
        grant(&mut t, 0, id, 10);
    }
    assert_eq!(t.take_due_checkpoints(5_000, 4).len(), 4);
    assert_eq!(t.take_due_checkpoints(5_000, 4).len(), 4);
    assert_eq!(t.take_due_checkpoints(5_000, 4).len(), 2);
    assert!(t.take_due_checkpoints(5_000, 4).is_empty());
}

/// A small deterministic generator; the schedule only needs to be varied, not secure.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// Random renewals, checkpoint passes and leader changes over one lease, with the log's record
/// of it kept alongside: a new leader's deadline is never before the deadline the last
/// acknowledged renewal promised, and exceeds the old leader's deadline by at most the
/// leadership gap, the staleness bound, one checkpoint tick and one second of rounding.
#[test]
fn leader_changes_never_expire_early_and_extend_boundedly() {
    for seed in 0..300 {
        let mut rng = Lcg(seed);
        let ttl_s = [2, 5, 30, 300, 7_200][rng.below(5) as usize];
        let ttl_ms = ttl_s as u64 * 1_000;
        let mut logged = record(ttl_s, 0);
        let mut t = leading(0);
        grant(&mut t, 0, 1, ttl_s);
        let (mut promised_ms, mut deadline_ms) = (ttl_ms, ttl_ms);
        let mut now = 0;
        for _ in 0..2_000 {
            now += LEASE_CHECKPOINT_TICK_MS;
            if now >= deadline_ms {
                break;
            }
            for cp in t.take_due_checkpoints(now, 10) {
                logged.remaining_s = cp.remaining_s;
            }
            if rng.below(8) == 0 {
                let renewal = t.renew(now, 1).unwrap();
                let Renewal::Renewed { must_clear, .. } = renewal else {
                    panic!("seed {seed}: live lease not renewed: {renewal:?}");
                };
                if must_clear {
                    let ids = t.pending_clears();
                    assert_eq!(ids, vec![1]);
                    logged.remaining_s = 0;
                    t.clears_committed(&ids);
                }
                promised_ms = now + ttl_ms;
                deadline_ms = promised_ms;
            }
            if rng.below(12) == 0 {
                let gap_ms = 1_000 + rng.below(3_000);
                now += gap_ms;
                t.activate(now, [(1, logged)]);
                let new_deadline = t.deadline_ms(1).unwrap();
                assert!(
                    new_deadline >= promised_ms,
                    "seed {seed}: early: {new_deadline} < promised {promised_ms}"
                );
                let bound = deadline_ms
                    + gap_ms
                    + checkpoint_staleness_ms(ttl_s)
                    + LEASE_CHECKPOINT_TICK_MS
                    + 1_000;
                assert!(
                    new_deadline <= bound,
                    "seed {seed}: extended too far: {new_deadline} > {bound}"
                );
                deadline_ms = new_deadline;
            }
        }
    }
}
