//! The lock's documented behaviour on the SDK's in-memory harness: FIFO hand-off, a holder's or
//! waiter's lease ending, abandonment, fencing, and the right holder past 10 000 contenders.

use baton_sdk::KeyRange;
use baton_sdk::json::json;
use baton_sdk::testing::{Call, Harness};

use super::Lock;

const L: &[u8] = br#"{"name":"L"}"#;
const TTL_S: i64 = 60;

fn key(lease: i64) -> String {
    format!("L/{lease:x}")
}

fn acquire(h: &mut Harness, lease: i64) -> Call {
    h.call("acquire", L, lease)
}

fn token(call: &Call) -> i64 {
    call.json()["token"].as_i64().expect("a token")
}

fn fenced_put(h: &mut Harness, token: i64, lease: i64) -> Call {
    let input = json!({"name": "L", "token": token, "key": "fenced", "value": token.to_string()});
    h.call("fenced-put", input.to_string(), lease)
}

/// A harness with `n` leases granted.
fn with_leases(n: usize) -> (Harness, Vec<i64>) {
    let mut h = Harness::new::<Lock>("lock");
    let leases = (0..n).map(|_| h.grant_lease(TTL_S)).collect();
    (h, leases)
}

#[test]
fn waiters_are_granted_in_arrival_order() {
    let (mut h, l) = with_leases(3);
    let a = acquire(&mut h, l[0]);
    assert_eq!(a.json()["key"], key(l[0]));
    let b = acquire(&mut h, l[1]);
    let c = acquire(&mut h, l[2]);
    let b_waits = b.wait().expect("b waits");
    assert_eq!(b_waits.keys, [KeyRange::key(key(l[0]))], "b waits on a");
    assert_eq!(b_waits.leases, [l[1]], "and on its own lease");
    assert_eq!(c.wait().expect("c waits").keys, [KeyRange::key(key(l[1]))]);

    let released = h.call("release", L, l[0]);
    assert_eq!(released.json(), json!({"released": true}));
    assert!(!h.woken(&c), "c waits on b, which is still there");
    let b = h.resume(&b).expect("a's release wakes b");
    assert_eq!(b.json()["key"], key(l[1]));
    assert!(token(&b) > token(&a), "tokens only grow");
    assert!(h.resume(&c).is_none());

    h.call("release", L, l[1]);
    let c = h.resume(&c).expect("b's release wakes c");
    assert!(token(&c) > token(&b));
    assert!(
        !h.call("release", L, l[1]).json()["released"]
            .as_bool()
            .expect("bool")
    );
}

#[test]
fn the_next_waiter_is_granted_when_the_holders_lease_ends() {
    let (mut h, l) = with_leases(2);
    acquire(&mut h, l[0]);
    let b = acquire(&mut h, l[1]);
    // Only b keeps its lease alive: a's expires.
    h.advance_ms(TTL_S as u64 * 1000 / 2);
    h.keep_alive(l[1]);
    h.advance_ms(TTL_S as u64 * 1000 / 2);
    assert!(!h.lease_exists(l[0]) && h.get(key(l[0])).is_none());
    let b = h.resume(&b).expect("a's key going wakes b");
    assert_eq!(b.json()["key"], key(l[1]));

    let c_lease = h.grant_lease(TTL_S);
    let c = acquire(&mut h, c_lease);
    h.revoke(l[1]);
    assert_eq!(h.resume(&c).expect("revoked").json()["key"], key(c_lease));
}

#[test]
fn a_waiter_whose_lease_ended_fails_and_the_next_waits_on_the_holder() {
    let (mut h, l) = with_leases(3);
    let a = acquire(&mut h, l[0]);
    let b = acquire(&mut h, l[1]);
    let c = acquire(&mut h, l[2]);
    h.revoke(l[1]);
    assert!(h.get(key(l[1])).is_none(), "b's key went with its lease");
    let b = h.resume(&b).expect("its own lease ending wakes b");
    assert_eq!(b.error(), Some("etcdserver: requested lease not found"));
    assert!(h.get(key(l[1])).is_none(), "and it did not come back");

    let c = h.resume(&c).expect("b's key going wakes c");
    assert_eq!(
        c.wait().expect("a still holds").keys,
        [KeyRange::key(key(l[0]))],
        "c now waits on a"
    );
    assert!(fenced_put(&mut h, token(&a), l[0]).is_done());
}

#[test]
fn abandoning_a_waiter_removes_it_and_grants_nobody() {
    let (mut h, l) = with_leases(3);
    let a = acquire(&mut h, l[0]);
    acquire(&mut h, l[1]);
    let c = acquire(&mut h, l[2]);

    assert_eq!(h.abandon("acquire", L, l[1]), Ok(()));
    assert_eq!(h.keys("L/"), {
        let mut left = vec![key(l[0]), key(l[2])];
        left.sort();
        left
    });
    let c = h.resume(&c).expect("b's key going wakes c");
    assert!(c.is_waiting(), "a still holds the lock");
    assert_eq!(c.wait().expect("waits").keys, [KeyRange::key(key(l[0]))]);
    assert!(
        fenced_put(&mut h, token(&a), l[0]).is_done(),
        "a's token is still good"
    );

    // Abandoning anything else, or with no lease, touches nothing.
    let revision = h.revision();
    assert_eq!(h.abandon("release", L, l[0]), Ok(()));
    assert_eq!(h.abandon("acquire", L, 0), Ok(()));
    assert_eq!(h.abandon("acquire", b"not json", l[0]), Ok(()));
    assert_eq!(h.revision(), revision);
}

#[test]
fn abandoning_a_fresh_grant_hands_the_lock_on() {
    let (mut h, l) = with_leases(2);
    acquire(&mut h, l[0]);
    let b = acquire(&mut h, l[1]);
    // a's client left before it saw the grant: nobody will use it.
    assert_eq!(h.abandon("acquire", L, l[0]), Ok(()));
    let b = h.resume(&b).expect("woken");
    assert_eq!(b.json()["key"], key(l[1]));
}

#[test]
fn fenced_put_refuses_a_stale_token() {
    let (mut h, l) = with_leases(2);
    let a = acquire(&mut h, l[0]);
    let ok = fenced_put(&mut h, token(&a), l[0]);
    assert_eq!(ok.json(), json!({"revision": h.revision()}));
    assert_eq!(h.get_str("fenced"), Some(token(&a).to_string()));

    h.revoke(l[0]);
    let b = acquire(&mut h, l[1]);
    let stale = fenced_put(&mut h, token(&a), l[0]);
    let expected = format!(
        "lock L: stale fencing token {} (the holder's is {})",
        token(&a),
        token(&b)
    );
    assert_eq!(stale.error(), Some(expected.as_str()));
    assert_eq!(
        h.get_str("fenced"),
        Some(token(&a).to_string()),
        "not overwritten"
    );
    assert!(fenced_put(&mut h, token(&b), l[1]).is_done());
}

#[test]
fn acquire_needs_a_lease_and_is_idempotent_for_it() {
    let (mut h, l) = with_leases(1);
    let refused = acquire(&mut h, 0);
    assert!(
        refused
            .error()
            .is_some_and(|e| e.contains("call with a lease"))
    );
    let first = acquire(&mut h, l[0]);
    let again = acquire(&mut h, l[0]);
    assert_eq!(first.json(), again.json(), "the same key and token");
    assert!(h.call("nope", L, l[0]).error().is_some());
}

#[test]
fn the_oldest_contender_holds_past_ten_thousand_contenders() {
    // The holder's key sorts after every other in key order, so a range in key order capped at
    // 10 000 keys never sees it.
    let mut h = Harness::new::<Lock>("lock");
    let holder_lease = 0x7fff_ffff;
    h.grant_lease_id(holder_lease, TTL_S);
    let holder = acquire(&mut h, holder_lease);
    let contenders = 10_001;
    for i in 0..contenders {
        // etcdctl lock contenders queue up behind it the same way.
        let lease = 0x1000_0000 + i;
        h.grant_lease_id(lease, TTL_S);
        h.put_with_lease(key(lease), "", lease);
    }
    let youngest = h
        .get(key(0x1000_0000 + contenders - 1))
        .expect("a contender");
    assert!(
        fenced_put(&mut h, token(&holder), holder_lease).is_done(),
        "the holder's token is accepted"
    );
    let refused = fenced_put(&mut h, youngest.create_revision, holder_lease);
    assert!(refused.error().is_some(), "a waiter's is not");

    // A newcomer whose key sorts first of all waits on the contender that arrived just before.
    let newcomer_lease = 0x1;
    h.grant_lease_id(newcomer_lease, TTL_S);
    let newcomer = acquire(&mut h, newcomer_lease);
    assert_eq!(
        newcomer.wait().map(|w| w.keys.clone()),
        Some(vec![KeyRange::key(&youngest.key)])
    );
}

/// RISKS.md R14: a waiter whose client gave up must not block the lock after the holder leaves.
#[test]
fn an_abandoned_waiter_does_not_block_the_next_caller() {
    let (mut h, l) = with_leases(3);
    acquire(&mut h, l[0]);
    acquire(&mut h, l[1]);
    // B's deadline passes while it waits; its lease stays alive (a session lease).
    assert_eq!(h.abandon("acquire", L, l[1]), Ok(()));
    h.call("release", L, l[0]);
    let c = acquire(&mut h, l[2]);
    assert_eq!(c.json()["key"], key(l[2]), "C gets the lock at once");
}

/// RISKS.md R15: a waiter re-run (woken spuriously, e.g. by a compaction) after 10 000 younger
/// keys that sort before the holder's must still wait.
#[test]
fn a_waiter_rerun_behind_ten_thousand_fillers_still_waits() {
    let mut h = Harness::new::<Lock>("lock");
    let holder_lease = 0x7fff_ffff_ffff_fff0;
    h.grant_lease_id(holder_lease, TTL_S);
    let holder = acquire(&mut h, holder_lease);
    h.grant_lease_id(0x1, TTL_S);
    let waiter = acquire(&mut h, 0x1);
    assert!(waiter.is_waiting());
    let filler_lease = h.grant_lease(TTL_S);
    for i in 0..10_000 {
        h.put_with_lease(format!("L/2{i:04}"), "", filler_lease);
    }
    let waiter = h.rerun(&waiter);
    assert_eq!(
        waiter.wait().map(|w| w.keys.clone()),
        Some(vec![KeyRange::key(key(holder_lease))]),
        "still behind the holder"
    );
    let filler = h.get("L/20000").expect("a filler").create_revision;
    assert!(fenced_put(&mut h, filler, holder_lease).error().is_some());
    assert!(fenced_put(&mut h, token(&holder), holder_lease).is_done());
}

#[test]
fn try_acquire_grants_or_answers_at_once() {
    let (mut h, l) = with_leases(2);
    let a = h.call("try-acquire", L, l[0]);
    assert_eq!(a.json()["acquired"], true);
    assert_eq!(a.json()["key"], key(l[0]));
    let b = h.call("try-acquire", L, l[1]);
    assert_eq!(
        b.json(),
        json!({"acquired": false, "holder_token": token(&a)})
    );
    assert!(h.get(key(l[1])).is_none(), "a refused try leaves no key");
    assert_eq!(
        h.call("try-acquire", L, l[0]).json(),
        a.json(),
        "re-entrant"
    );
    h.call("release", L, l[0]);
    let b = h.call("try-acquire", L, l[1]);
    assert!(token(&b) > token(&a));
}

fn fenced_txn(h: &mut Harness, token: i64, ops: baton_sdk::json::Value) -> Call {
    let input = json!({"name": "L", "token": token, "ops": ops});
    h.call("fenced-txn", input.to_string(), 0)
}

#[test]
fn fenced_txn_applies_all_ops_or_none() {
    let (mut h, l) = with_leases(2);
    h.put("gone", "x");
    let a = acquire(&mut h, l[0]);
    let ops = json!([{"put": "x", "value": "1"}, {"put_hex": "ff00", "value_hex": "01"},
        {"delete": "gone"}]);
    let done = fenced_txn(&mut h, token(&a), ops);
    assert_eq!(done.json(), json!({"revision": h.revision()}));
    assert_eq!(h.get_str("x"), Some("1".into()));
    assert_eq!(h.get([0xff, 0]).map(|kv| kv.value), Some(vec![1]));
    assert!(h.get("gone").is_none());

    h.revoke(l[0]);
    let b = acquire(&mut h, l[1]);
    let revision = h.revision();
    let stale = fenced_txn(&mut h, token(&a), json!([{"put": "x", "value": "2"}]));
    assert!(
        stale
            .error()
            .is_some_and(|e| e.contains("stale fencing token"))
    );
    assert_eq!(h.revision(), revision, "nothing written");
    let bad = fenced_txn(&mut h, token(&b), json!([{"put": "x", "delete": "y"}]));
    assert!(bad.error().is_some());
    assert_eq!(h.get_str("x"), Some("1".into()));
}

#[test]
fn names_and_keys_may_be_any_bytes() {
    let (mut h, l) = with_leases(1);
    let name = json!({"name_hex": "ff"}).to_string();
    let a = h.call("acquire", &name, l[0]);
    let expected = baton_sdk::bytes::to_hex(format!("\u{0}/{:x}", l[0]).as_bytes());
    let expected = format!("ff{}", &expected[2..]);
    assert_eq!(a.json()["key_hex"], expected);
    assert!(a.json().get("key").is_none());
    let put = json!({"name_hex": "ff", "token": token(&a), "key_hex": "fe", "value": "v"});
    assert!(h.call("fenced-put", put.to_string(), 0).is_done());
    assert_eq!(h.get_str([0xfe]), Some("v".into()));
    let both = json!({"name": "L", "name_hex": "4c"}).to_string();
    assert!(h.call("acquire", both, l[0]).error().is_some());
}

const DELAY_MS: u64 = 5_000;

fn acquire_delayed(h: &mut Harness, lease: i64) -> Call {
    let input = json!({"name": "L", "lock_delay_ms": DELAY_MS});
    h.call("acquire", input.to_string(), lease)
}

#[test]
fn lock_delay_holds_the_lock_after_a_holders_lease_ends() {
    let (mut h, l) = with_leases(2);
    let a = acquire_delayed(&mut h, l[0]);
    let b = acquire(&mut h, l[1]);
    h.advance_ms(1_000);
    h.revoke(l[0]);
    let ended_ms = h.now_ms();
    let b = h.resume(&b).expect("a's key going wakes b");
    let until = b.wait().and_then(|w| w.until_ms).expect("a timed wait");
    assert_eq!(
        until,
        ended_ms + DELAY_MS,
        "counted from the first run that saw it"
    );
    assert!(
        fenced_put(&mut h, token(&a), l[0]).error().is_some(),
        "a is fenced off"
    );
    h.advance_ms(DELAY_MS - 1);
    assert!(h.resume(&b).is_none(), "not yet");
    // A spurious early wake-up waits again for the same time.
    let early = h.rerun(&b);
    assert_eq!(early.wait().and_then(|w| w.until_ms), Some(until));
    h.advance_ms(1);
    let b = h.resume(&early).expect("the delay passed");
    assert_eq!(b.json()["key"], key(l[1]));
    assert!(h.get(b"L\0lock-delay").is_none(), "b asked for no delay");
}

#[test]
fn lock_delay_does_not_apply_after_a_release() {
    let (mut h, l) = with_leases(3);
    acquire_delayed(&mut h, l[0]);
    let b = acquire_delayed(&mut h, l[1]);
    h.call("release", L, l[0]);
    let b = h.resume(&b).expect("a's release wakes b");
    assert_eq!(b.json()["key"], key(l[1]), "granted at once");
    // A plain delete of the key (etcd's Unlock) while the lease lives is a release too.
    let c = acquire(&mut h, l[2]);
    h.delete(key(l[1]));
    assert_eq!(h.resume(&c).expect("woken").json()["key"], key(l[2]));
}

#[test]
fn lock_delay_applies_to_a_newcomer_and_to_try_acquire() {
    let (mut h, l) = with_leases(2);
    acquire_delayed(&mut h, l[0]);
    h.revoke(l[0]);
    let start = h.now_ms();
    let tried = h.call("try-acquire", L, l[1]);
    assert_eq!(
        tried.json(),
        json!({"acquired": false, "retry_at_ms": start + DELAY_MS})
    );
    h.advance_ms(DELAY_MS / 2);
    let b = acquire(&mut h, l[1]);
    assert_eq!(
        b.wait().and_then(|w| w.until_ms),
        Some(start + DELAY_MS),
        "the first run to notice fixed the time"
    );
    assert_eq!(b.wait().map(|w| w.leases.clone()), Some(vec![l[1]]));
    h.advance_ms(DELAY_MS / 2);
    assert!(h.resume(&b).expect("woken").is_done());
}

#[test]
fn abandoning_a_delayed_grant_clears_its_record() {
    let (mut h, l) = with_leases(2);
    acquire_delayed(&mut h, l[0]);
    let b = acquire(&mut h, l[1]);
    assert_eq!(h.abandon("acquire", L, l[0]), Ok(()));
    assert!(h.get(b"L\0lock-delay").is_none());
    h.revoke(l[0]);
    assert!(h.resume(&b).expect("woken").is_done(), "no delay");
}

#[test]
fn declared_functions_are_the_ones_it_runs() {
    baton_sdk::testing::Harness::check_declared::<super::Lock>(super::FUNCTIONS);
}
