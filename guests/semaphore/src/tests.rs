//! The semaphore's documented behaviour on the SDK's in-memory harness: N holders at once,
//! FIFO hand-off through the chain of waiters, leases ending, abandonment, fencing, the permit
//! count callers must agree on, and the right holders past 10 000 contenders.

use baton_sdk::KeyRange;
use baton_sdk::json::json;
use baton_sdk::testing::{Call, Harness};

use super::Semaphore;

const TTL_S: i64 = 60;
const S: &[u8] = br#"{"name":"S"}"#;

fn key(lease: i64) -> String {
    format!("S/contenders/{lease:x}")
}

fn acquire(h: &mut Harness, lease: i64, permits: u32) -> Call {
    let input = json!({"name": "S", "permits": permits}).to_string();
    h.call("acquire", input, lease)
}

fn try_acquire(h: &mut Harness, lease: i64, permits: u32) -> Call {
    let input = json!({"name": "S", "permits": permits}).to_string();
    h.call("try-acquire", input, lease)
}

fn token(call: &Call) -> i64 {
    call.json()["token"].as_i64().expect("a token")
}

fn fenced_put(h: &mut Harness, token: i64, lease: i64) -> Call {
    let input = json!({"name": "S", "token": token, "key": "fenced", "value": token.to_string()});
    h.call("fenced-put", input.to_string(), lease)
}

fn with_leases(n: usize) -> (Harness, Vec<i64>) {
    let mut h = Harness::new::<Semaphore>("semaphore");
    let leases = (0..n).map(|_| h.grant_lease(TTL_S)).collect();
    (h, leases)
}

/// Resumes every waiting call whose condition fired, until none does; returns the calls as
/// they stand (finished ones keep their last run).
fn settle(h: &mut Harness, calls: &mut [Call]) {
    loop {
        let mut woke = false;
        for call in calls.iter_mut() {
            if let Some(again) = h.resume(call) {
                *call = again;
                woke = true;
            }
        }
        if !woke {
            return;
        }
    }
}

#[test]
fn n_holders_at_once_then_waiters_in_arrival_order() {
    let (mut h, l) = with_leases(5);
    let mut calls: Vec<Call> = l.iter().map(|&lease| acquire(&mut h, lease, 2)).collect();
    assert!(calls[0].is_done() && calls[1].is_done(), "two permits");
    assert!(calls[2..].iter().all(Call::is_waiting));
    assert_eq!(
        calls[2].wait().expect("waits").keys,
        [KeyRange::key(key(l[0])), KeyRange::key(key(l[1]))],
        "the first waiter watches the holders"
    );
    assert_eq!(
        calls[3].wait().expect("waits").keys,
        [KeyRange::key(key(l[2]))],
        "later waiters watch the one just ahead"
    );
    assert_eq!(calls[3].wait().expect("waits").leases, [l[3]]);

    // The second holder leaves first: the first waiter takes its permit, the next moves up.
    assert_eq!(h.call("release", S, l[1]).json(), json!({"released": true}));
    settle(&mut h, &mut calls);
    assert!(calls[2].is_done(), "the first waiter is granted");
    assert!(calls[3].is_waiting() && calls[4].is_waiting());
    assert_eq!(
        calls[3].wait().expect("waits").keys,
        [KeyRange::key(key(l[0])), KeyRange::key(key(l[2]))],
        "the next waiter now watches the holders"
    );
    assert!(token(&calls[2]) > token(&calls[1]), "tokens only grow");

    // Both holders leave at once: both waiters are granted, in order.
    h.call("release", S, l[0]);
    h.call("release", S, l[2]);
    settle(&mut h, &mut calls);
    assert!(calls[3].is_done() && calls[4].is_done());
    assert!(token(&calls[4]) > token(&calls[3]));
    let holders = h.call_read_only("holders", S, 0).json();
    assert_eq!(holders["permits"], 2);
    assert_eq!(holders["waiting"], 0);
    assert_eq!(holders["holders"][0]["key"], key(l[3]));
    assert_eq!(holders["holders"][1]["token"], token(&calls[4]));
}

#[test]
fn a_holders_lease_ending_frees_its_permit_and_a_waiters_fails_it() {
    let (mut h, l) = with_leases(4);
    acquire(&mut h, l[0], 1);
    let b = acquire(&mut h, l[1], 1);
    let c = acquire(&mut h, l[2], 1);
    let d = acquire(&mut h, l[3], 1);
    // b's lease ends while it waits: b fails, c moves up to first waiter.
    h.revoke(l[1]);
    let b = h.resume(&b).expect("its own lease ending wakes b");
    assert_eq!(b.error(), Some("etcdserver: requested lease not found"));
    assert!(h.get(key(l[1])).is_none(), "and it did not queue again");
    let c = h.resume(&c).expect("b's key going wakes c");
    assert_eq!(c.wait().expect("waits").keys, [KeyRange::key(key(l[0]))]);
    assert!(!h.woken(&d), "d still waits behind c");

    // The holder's lease expires (only c and d keep theirs alive).
    h.advance_ms(TTL_S as u64 * 500);
    h.keep_alive(l[2]);
    h.keep_alive(l[3]);
    h.advance_ms(TTL_S as u64 * 500);
    assert!(!h.lease_exists(l[0]));
    let c = h.resume(&c).expect("the holder's key going wakes c");
    assert_eq!(c.json()["key"], key(l[2]));
    let d = h.resume(&d).expect("c's grant wakes d");
    assert_eq!(
        d.wait().expect("d is first in line").keys,
        [KeyRange::key(key(l[2]))]
    );
}

#[test]
fn abandoning_a_waiter_withdraws_it_and_the_line_closes_up() {
    let (mut h, l) = with_leases(4);
    acquire(&mut h, l[0], 1);
    acquire(&mut h, l[1], 1);
    let c = acquire(&mut h, l[2], 1);
    let input = json!({"name": "S", "permits": 1}).to_string();
    assert_eq!(h.abandon("acquire", &input, l[1]), Ok(()));
    assert!(h.get(key(l[1])).is_none(), "b's key went at once");
    let c = h.resume(&c).expect("b's key going wakes c");
    assert_eq!(
        c.wait().expect("a still holds").keys,
        [KeyRange::key(key(l[0]))]
    );

    // An abandoned grant hands its permit on too.
    assert_eq!(h.abandon("acquire", &input, l[0]), Ok(()));
    let c = h.resume(&c).expect("a's key going wakes c");
    assert_eq!(c.json()["key"], key(l[2]));

    // Other functions, no lease, or bad input: nothing to withdraw.
    let revision = h.revision();
    assert_eq!(h.abandon("release", &input, l[2]), Ok(()));
    assert_eq!(h.abandon("acquire", &input, 0), Ok(()));
    assert_eq!(h.abandon("acquire", "{", l[2]), Ok(()));
    assert_eq!(h.revision(), revision);
    let d = try_acquire(&mut h, l[3], 1);
    assert_eq!(d.json(), json!({"acquired": false}));
}

#[test]
fn try_acquire_takes_a_free_permit_and_never_queues() {
    let (mut h, l) = with_leases(3);
    let a = try_acquire(&mut h, l[0], 2);
    assert_eq!(a.json()["acquired"], true);
    assert_eq!(a.json()["key"], key(l[0]));
    let b = try_acquire(&mut h, l[1], 2);
    assert_eq!(b.json()["acquired"], true);
    let revision = h.revision();
    let c = try_acquire(&mut h, l[2], 2);
    assert_eq!(c.json(), json!({"acquired": false}));
    assert_eq!(h.revision(), revision, "no key queued");
    assert_eq!(h.keys("S/contenders/").len(), 2);
    // A waiter queued ahead keeps its turn: try-acquire does not jump it.
    let waiting = acquire(&mut h, l[2], 2);
    h.call("release", S, l[0]);
    let again = try_acquire(&mut h, l[0], 2);
    assert_eq!(again.json(), json!({"acquired": false}));
    assert!(h.resume(&waiting).expect("woken").is_done());
}

#[test]
fn callers_must_agree_on_the_permit_count_while_it_is_in_use() {
    let (mut h, l) = with_leases(2);
    acquire(&mut h, l[0], 2);
    assert_eq!(h.get_str("S/limit"), Some("2".into()));
    let refused = acquire(&mut h, l[1], 3);
    assert_eq!(
        refused.error(),
        Some("semaphore S has 2 permits, not 3 (callers must agree while it is in use)")
    );
    assert!(h.get(key(l[1])).is_none());
    for bad in [0, super::SEMAPHORE_PERMITS_MAX + 1] {
        assert!(
            acquire(&mut h, l[1], bad).error().is_some(),
            "{bad} permits"
        );
    }
    // Once empty, the next caller re-sizes it.
    h.call("release", S, l[0]);
    assert!(acquire(&mut h, l[1], 3).is_done());
    assert_eq!(h.get_str("S/limit"), Some("3".into()));
    // Calls without a lease are refused.
    assert!(
        acquire(&mut h, 0, 3)
            .error()
            .is_some_and(|e| e.contains("lease"))
    );
    assert!(h.call("release", S, 0).error().is_some());
}

#[test]
fn fenced_put_accepts_only_current_holders_tokens() {
    let (mut h, l) = with_leases(3);
    let a = acquire(&mut h, l[0], 2);
    let b = acquire(&mut h, l[1], 2);
    let c = acquire(&mut h, l[2], 2);
    assert!(fenced_put(&mut h, token(&a), l[0]).is_done());
    assert!(fenced_put(&mut h, token(&b), l[1]).is_done());
    let waiter_token = h.get(key(l[2])).expect("queued").create_revision;
    assert!(
        fenced_put(&mut h, waiter_token, l[2]).error().is_some(),
        "a waiter's token is refused"
    );
    h.revoke(l[0]);
    let c = h.resume(&c).expect("woken");
    assert!(fenced_put(&mut h, token(&c), l[2]).is_done());
    let stale = fenced_put(&mut h, token(&a), l[0]);
    assert_eq!(
        stale.error(),
        Some(
            format!(
                "semaphore S: stale fencing token {} (no holder has it)",
                token(&a)
            )
            .as_str()
        )
    );
    assert_eq!(h.get_str("fenced"), Some(token(&c).to_string()));
}

#[test]
fn acquire_is_idempotent_for_a_lease() {
    let (mut h, l) = with_leases(1);
    let first = acquire(&mut h, l[0], 1);
    let revision = h.revision();
    let again = acquire(&mut h, l[0], 1);
    assert_eq!(first.json(), again.json());
    assert_eq!(h.revision(), revision, "a held grant is not written again");
    assert!(h.call("nope", S, l[0]).error().is_some());
}

#[test]
fn the_oldest_contenders_hold_past_ten_thousand_contenders() {
    // The holders' keys sort after every other in key order, so a key-ordered range capped at
    // 10 000 keys would never see them.
    let mut h = Harness::new::<Semaphore>("semaphore");
    let holders = [0x7fff_fff0, 0x7fff_fff1];
    let mut tokens = Vec::new();
    for lease in holders {
        h.grant_lease_id(lease, TTL_S);
        tokens.push(token(&acquire(&mut h, lease, 2)));
    }
    let filler_lease = 0x1000;
    h.grant_lease_id(filler_lease, TTL_S);
    for i in 0..10_001 {
        h.put_with_lease(format!("S/contenders/0{i:05}"), "", filler_lease);
    }
    let newcomer = 0x1;
    h.grant_lease_id(newcomer, TTL_S);
    let waiting = acquire(&mut h, newcomer, 2);
    assert_eq!(
        waiting.wait().expect("waits").keys,
        [KeyRange::key("S/contenders/010000")],
        "behind the youngest filler"
    );
    let listed = h.call_read_only("holders", S, 0).json();
    assert_eq!(listed["holders"][0]["token"], tokens[0]);
    assert_eq!(listed["holders"][1]["token"], tokens[1]);
    assert_eq!(listed["waiting"], 10_002);
    assert!(fenced_put(&mut h, tokens[1], holders[1]).is_done());
}

#[test]
fn past_the_wait_bound_the_first_waiter_watches_every_contender() {
    let permits = super::GUEST_WAIT_CONDITIONS_MAX as u32;
    let (mut h, l) = with_leases(permits as usize + 1);
    for &lease in &l[..permits as usize] {
        assert!(acquire(&mut h, lease, permits).is_done());
    }
    let waiter = acquire(&mut h, l[permits as usize], permits);
    assert_eq!(
        waiter.wait().expect("waits").keys,
        [KeyRange::prefix("S/contenders/")]
    );
    h.call("release", S, l[7]);
    assert!(h.resume(&waiter).expect("woken").is_done());
}

#[test]
fn declared_functions_are_the_ones_it_runs() {
    baton_sdk::testing::Harness::check_declared::<super::Semaphore>(super::FUNCTIONS);
}
