//! The double barrier's documented behaviour on the SDK's in-memory harness: enter waits for
//! `count`, leave waits for everyone (the lowest last), a dead caller neither blocks nor is
//! waited for, abandonment withdraws, and a stale `ready` releases nobody.

use baton_sdk::KeyRange;
use baton_sdk::json::json;
use baton_sdk::testing::{Call, Harness};

use super::DoubleBarrier;

const TTL_S: i64 = 60;
const B: &[u8] = br#"{"name":"B"}"#;

fn enter(h: &mut Harness, lease: i64, count: u64) -> Call {
    h.call(
        "enter",
        json!({"name": "B", "count": count}).to_string(),
        lease,
    )
}

fn key(lease: i64) -> String {
    format!("B/waiters/{lease:x}")
}

fn with_leases(n: usize) -> (Harness, Vec<i64>) {
    let mut h = Harness::new::<DoubleBarrier>("double-barrier");
    let leases = (0..n).map(|_| h.grant_lease(TTL_S)).collect();
    (h, leases)
}

#[test]
fn enter_waits_for_count_and_leave_for_everyone() {
    let (mut h, l) = with_leases(4);
    let a = enter(&mut h, l[0], 3);
    let b = enter(&mut h, l[1], 3);
    assert_eq!(a.wait().expect("waits").keys, [KeyRange::key("B/ready")]);
    assert!(b.is_waiting());
    let c = enter(&mut h, l[2], 3);
    assert_eq!(
        c.json(),
        json!({"key": key(l[2])}),
        "the third releases everyone"
    );
    assert_eq!(
        h.resume(&a).expect("woken").json(),
        json!({"key": key(l[0])})
    );
    assert!(h.resume(&b).expect("woken").is_done());
    assert_eq!(enter(&mut h, l[3], 3).error(), Some("too many clients"));

    // c leaves first: not the lowest, so its key goes and it waits for a (the lowest).
    let c_leave = h.call("leave", B, l[2]);
    assert_eq!(
        c_leave.wait().expect("waits").keys,
        [KeyRange::key(key(l[0]))]
    );
    assert!(h.get(key(l[2])).is_none());
    // a, the lowest, waits for the highest left (b).
    let a_leave = h.call("leave", B, l[0]);
    assert_eq!(
        a_leave.wait().expect("waits").keys,
        [KeyRange::key(key(l[1]))]
    );
    let b_leave = h.call("leave", B, l[1]);
    assert!(b_leave.is_waiting());
    let a_leave = h.resume(&a_leave).expect("b going wakes a");
    assert_eq!(a_leave.json(), json!({"left": true}));
    assert!(
        h.get("B/ready").is_none() && h.keys("B/").is_empty(),
        "a round leaves nothing"
    );
    for waiting in [c_leave, b_leave] {
        assert_eq!(
            h.resume(&waiting).expect("woken").json(),
            json!({"left": true})
        );
    }
}

#[test]
fn a_ready_left_from_an_earlier_round_releases_nobody() {
    let (mut h, l) = with_leases(2);
    h.put("B/ready", "");
    let a = enter(&mut h, l[0], 2);
    assert!(a.is_waiting(), "the old ready is older than a's entry");
    assert!(enter(&mut h, l[1], 2).is_done());
    assert!(h.resume(&a).expect("woken").is_done());
}

#[test]
fn a_dead_caller_neither_blocks_leave_nor_gets_entered() {
    let (mut h, l) = with_leases(3);
    let a = enter(&mut h, l[0], 3);
    let b = enter(&mut h, l[1], 3);
    // b dies waiting: its key goes, and it fails.
    h.revoke(l[1]);
    let b = h.resume(&b).expect("its lease ending wakes b");
    assert_eq!(b.error(), Some("etcdserver: requested lease not found"));
    assert!(!h.woken(&a), "a still waits for ready");
    let c = enter(&mut h, l[2], 3);
    assert!(c.is_waiting(), "two entered, not three");
    let d_lease = h.grant_lease(TTL_S);
    assert!(enter(&mut h, d_lease, 3).is_done());
    assert!(h.resume(&a).expect("woken").is_done());

    // a (the lowest) waits on d; d dies instead of leaving; a then waits on c.
    let a_leave = h.call("leave", B, l[0]);
    assert_eq!(
        a_leave.wait().expect("waits").keys,
        [KeyRange::key(key(d_lease))]
    );
    h.revoke(d_lease);
    let a_leave = h.resume(&a_leave).expect("woken");
    assert_eq!(
        a_leave.wait().expect("waits").keys,
        [KeyRange::key(key(l[2]))]
    );
    h.call("leave", B, l[2]);
    assert!(h.resume(&a_leave).expect("woken").is_done());
}

#[test]
fn abandoned_calls_withdraw_their_keys() {
    let (mut h, l) = with_leases(3);
    let input = json!({"name": "B", "count": 2}).to_string();
    enter(&mut h, l[0], 2);
    assert_eq!(h.abandon("enter", &input, l[0]), Ok(()));
    assert!(h.keys("B/").is_empty(), "a's entry is withdrawn");
    let b = enter(&mut h, l[1], 2);
    assert!(b.is_waiting(), "a no longer counts");
    assert!(enter(&mut h, l[2], 2).is_done());
    assert!(h.resume(&b).expect("woken").is_done());

    // b, the lowest, waits on c and abandons: c is alone and leaves at once.
    let b_leave = h.call("leave", B, l[1]);
    assert!(b_leave.is_waiting());
    assert_eq!(h.abandon("leave", B, l[1]), Ok(()));
    assert_eq!(h.call("leave", B, l[2]).json(), json!({"left": true}));
    assert!(h.keys("B/").is_empty());

    let revision = h.revision();
    assert_eq!(h.abandon("other", B, l[1]), Ok(()));
    assert_eq!(h.abandon("enter", &input, 0), Ok(()));
    assert_eq!(h.abandon("enter", "{", l[1]), Ok(()));
    assert_eq!(h.revision(), revision);
    assert!(enter(&mut h, l[1], 0).error().is_some());
    assert!(
        enter(&mut h, 0, 2)
            .error()
            .is_some_and(|e| e.contains("lease"))
    );
    assert_eq!(
        h.call("leave", B, l[1]).json(),
        json!({"left": true}),
        "nobody entered"
    );
}

#[test]
fn declared_functions_are_the_ones_it_runs() {
    baton_sdk::testing::Harness::check_declared::<super::DoubleBarrier>(super::FUNCTIONS);
}
