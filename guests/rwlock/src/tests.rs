//! The rwlock's documented behaviour on the SDK's in-memory harness: readers share, a writer
//! excludes and is not starved by later readers, leases ending, abandonment, and the right
//! blocker past 10 000 contenders.

use baton_sdk::KeyRange;
use baton_sdk::json::json;
use baton_sdk::testing::{Call, Harness};

use super::RwLock;

const L: &[u8] = br#"{"name":"L"}"#;
const TTL_S: i64 = 60;

fn read_key(lease: i64) -> String {
    format!("L/read/{lease:x}")
}

fn write_key(lease: i64) -> String {
    format!("L/write/{lease:x}")
}

fn with_leases(n: usize) -> (Harness, Vec<i64>) {
    let mut h = Harness::new::<RwLock>("rwlock");
    let leases = (0..n).map(|_| h.grant_lease(TTL_S)).collect();
    (h, leases)
}

fn waits_on(call: &Call) -> Vec<KeyRange> {
    call.wait().map(|w| w.keys.clone()).unwrap_or_default()
}

#[test]
fn readers_share_and_a_writer_waits_for_all_of_them() {
    let (mut h, l) = with_leases(4);
    let r1 = h.call("rlock", L, l[0]);
    let r2 = h.call("rlock", L, l[1]);
    assert_eq!(r1.json(), json!({"key": read_key(l[0])}));
    assert!(r2.is_done(), "readers share");
    let w = h.call("lock", L, l[2]);
    assert_eq!(
        waits_on(&w),
        [KeyRange::key(read_key(l[1]))],
        "the newest key ahead"
    );
    assert_eq!(w.wait().expect("waits").leases, [l[2]]);
    // A reader arriving after the writer waits for it: writers are not starved.
    let r3 = h.call("rlock", L, l[3]);
    assert_eq!(waits_on(&r3), [KeyRange::key(write_key(l[2]))]);

    assert_eq!(h.call("runlock", L, l[1]).json(), json!({"released": true}));
    let w = h.resume(&w).expect("r2 going wakes the writer");
    assert_eq!(waits_on(&w), [KeyRange::key(read_key(l[0]))], "now r1");
    h.call("runlock", L, l[0]);
    let w = h.resume(&w).expect("r1 going wakes the writer");
    assert_eq!(w.json(), json!({"key": write_key(l[2])}));
    assert!(h.resume(&r3).is_none(), "the writer holds");
    h.call("unlock", L, l[2]);
    assert!(h.resume(&r3).expect("woken").is_done());
}

#[test]
fn a_writer_waits_for_the_writer_ahead_and_readers_after_it_wait_for_both() {
    let (mut h, l) = with_leases(3);
    assert!(h.call("lock", L, l[0]).is_done());
    let w2 = h.call("lock", L, l[1]);
    let r = h.call("rlock", L, l[2]);
    assert_eq!(waits_on(&w2), [KeyRange::key(write_key(l[0]))]);
    assert_eq!(
        waits_on(&r),
        [KeyRange::key(write_key(l[1]))],
        "the newest writer ahead"
    );
    h.call("unlock", L, l[0]);
    assert!(h.resume(&w2).expect("woken").is_done());
    assert!(h.resume(&r).is_none());
    h.call("unlock", L, l[1]);
    assert!(h.resume(&r).expect("woken").is_done());
    assert!(
        !h.call("unlock", L, l[1]).json()["released"]
            .as_bool()
            .expect("bool")
    );
}

#[test]
fn leases_that_end_release_holders_and_fail_waiters() {
    let (mut h, l) = with_leases(3);
    h.call("rlock", L, l[0]);
    let w = h.call("lock", L, l[1]);
    let r = h.call("rlock", L, l[2]);
    // The waiting writer's lease ends: it fails, and the reader behind it holds.
    h.revoke(l[1]);
    let w = h.resume(&w).expect("its own lease ending wakes it");
    assert_eq!(w.error(), Some("etcdserver: requested lease not found"));
    assert!(h.resume(&r).expect("woken").is_done());
    // A holding reader's lease ends: a writer waiting on it is granted.
    let l3 = h.grant_lease(TTL_S);
    let w = h.call("lock", L, l3);
    h.call("runlock", L, l[2]);
    let w = h.resume(&w).expect("woken");
    assert_eq!(waits_on(&w), [KeyRange::key(read_key(l[0]))]);
    h.revoke(l[0]);
    assert!(h.resume(&w).expect("woken").is_done());
}

#[test]
fn abandoning_a_waiter_withdraws_its_key() {
    let (mut h, l) = with_leases(3);
    h.call("lock", L, l[0]);
    h.call("lock", L, l[1]);
    let r = h.call("rlock", L, l[2]);
    assert_eq!(h.abandon("lock", L, l[1]), Ok(()));
    assert!(h.get(write_key(l[1])).is_none());
    let r = h.resume(&r).expect("the abandoned key going wakes r");
    assert_eq!(waits_on(&r), [KeyRange::key(write_key(l[0]))]);
    assert_eq!(h.abandon("rlock", L, l[2]), Ok(()));
    assert!(h.get(read_key(l[2])).is_none());
    // Nothing else is withdrawn.
    let revision = h.revision();
    assert_eq!(h.abandon("unlock", L, l[0]), Ok(()));
    assert_eq!(h.abandon("lock", L, 0), Ok(()));
    assert_eq!(h.abandon("lock", "{", l[0]), Ok(()));
    assert_eq!(h.revision(), revision);
    assert!(
        h.call("lock", L, 0)
            .error()
            .is_some_and(|e| e.contains("lease"))
    );
    assert!(h.call("nope", L, l[0]).error().is_some());
}

#[test]
fn the_blocking_writer_is_found_past_ten_thousand_readers() {
    // The writer's key sorts after every reader's, and 10 000 readers arrived after it.
    let mut h = Harness::new::<RwLock>("rwlock");
    let writer = 0x7fff_ffff;
    h.grant_lease_id(writer, TTL_S);
    assert!(h.call("lock", L, writer).is_done());
    let readers = h.grant_lease(TTL_S);
    for i in 0..10_001 {
        h.put_with_lease(format!("L/read/0{i:05}"), "", readers);
    }
    let late_reader = 0x1;
    h.grant_lease_id(late_reader, TTL_S);
    let r = h.call("rlock", L, late_reader);
    assert_eq!(waits_on(&r), [KeyRange::key(write_key(writer))]);
    let late_writer = 0x2;
    h.grant_lease_id(late_writer, TTL_S);
    let w = h.call("lock", L, late_writer);
    assert_eq!(waits_on(&w), [KeyRange::key(read_key(late_reader))]);
}

#[test]
fn declared_functions_are_the_ones_it_runs() {
    baton_sdk::testing::Harness::check_declared::<super::RwLock>(super::FUNCTIONS);
}
