//! The queue's documented behaviour on the SDK's in-memory harness: FIFO pop, delayed delivery
//! (timed waits), reservations ending by timeout, nack or lease end (redelivery, stale tokens
//! refused), peek and length without writes, and abandoned waiters taking nothing.

use baton_sdk::KeyRange;
use baton_sdk::json::{Value, json};
use baton_sdk::testing::{Call, Harness};

use super::Queue;

const JOBS: &str = r#"{"queue":"jobs"}"#;
const TTL_S: i64 = 60;

fn harness() -> Harness {
    Harness::new::<Queue>("queue")
}

fn push(h: &mut Harness, value: &str) -> Value {
    h.call(
        "push",
        json!({"queue": "jobs", "value": value}).to_string(),
        0,
    )
    .json()
}

fn push_with(h: &mut Harness, value: &str, extra: Value) -> Call {
    let mut input = json!({"queue": "jobs", "value": value});
    for (k, v) in extra.as_object().expect("an object") {
        input[k] = v.clone();
    }
    h.call("push", input.to_string(), 0)
}

fn reserve(h: &mut Harness, visibility_ms: u64) -> Call {
    let input = json!({"queue": "jobs", "visibility_ms": visibility_ms});
    h.call("reserve", input.to_string(), 0)
}

fn reserve_with_lease(h: &mut Harness, lease: i64) -> Call {
    h.call(
        "reserve",
        r#"{"queue":"jobs","until_lease_ends":true}"#,
        lease,
    )
}

fn settle(h: &mut Harness, function: &str, token: i64) -> Call {
    let input = json!({"queue": "jobs", "token": token});
    h.call(function, input.to_string(), 0)
}

fn token(call: &Call) -> i64 {
    call.json()["token"].as_i64().expect("a token")
}

fn length(h: &mut Harness) -> Value {
    h.call_read_only("length", JOBS, 0).json()
}

#[test]
fn push_keys_items_by_revision_and_pop_takes_them_in_order() {
    let mut h = harness();
    let a = push(&mut h, "a");
    assert_eq!(a, json!({"key": "jobs/00000000000000000002", "value": "a"}));
    push(&mut h, "b");
    // Any client enqueues with a plain put; its key sorts after the numbered ones.
    h.put("jobs/x", "c");
    h.put("jobs2/00000000000000000001", "other queue");
    for (key, value) in [
        ("jobs/00000000000000000002", "a"),
        ("jobs/00000000000000000003", "b"),
        ("jobs/x", "c"),
    ] {
        let popped = h.call("pop", JOBS, 0);
        assert_eq!(popped.json(), json!({"key": key, "value": value}));
        assert!(h.get(key).is_none(), "popped items are gone");
    }
    assert_eq!(h.keys("jobs2/").len(), 1, "another queue's items stay");
}

#[test]
fn pop_on_an_empty_queue_waits_for_a_push() {
    let mut h = harness();
    let pop = h.call("pop", JOBS, 0);
    let wait = pop.wait().expect("waits");
    assert_eq!(
        wait.keys,
        [KeyRange::prefix("jobs/"), KeyRange::prefix("__jobs/")]
    );
    assert_eq!(wait.until_ms, None, "nothing is due later either");
    h.put("jobsx", "not in the queue");
    assert!(!h.woken(&pop));
    push(&mut h, "late");
    let popped = h.resume(&pop).expect("the push wakes it");
    assert_eq!(popped.json()["value"], "late");
    assert!(h.keys("jobs/").is_empty());
}

#[test]
fn a_delayed_item_is_not_delivered_before_its_time_and_a_waiting_pop_wakes_then() {
    let mut h = harness();
    let start = h.now_ms();
    let pushed = push_with(&mut h, "later", json!({"delay_ms": 5_000}));
    assert_eq!(pushed.json()["deliver_at_ms"], start + 5_000);
    assert!(h.keys("jobs/").is_empty(), "not ready yet");

    let pop = h.call("pop", JOBS, 0);
    assert_eq!(pop.wait().expect("waits").until_ms, Some(start + 5_000));
    h.advance_ms(4_999);
    assert!(!h.woken(&pop));
    // Woken early (the host may), it finds the item still not due and waits again.
    let early = h.rerun(&pop);
    assert_eq!(
        early.wait().expect("still waits").until_ms,
        Some(start + 5_000)
    );
    h.advance_ms(1);
    let popped = h
        .resume(&early)
        .expect("the leader's clock passing T wakes it");
    assert_eq!(
        popped.json(),
        json!({"key": pushed.json()["key"], "value": "later"})
    );
    assert!(h.keys("__jobs/").is_empty(), "no bookkeeping left");
}

#[test]
fn a_due_delayed_item_goes_before_ready_items_and_a_sooner_one_shortens_a_wait() {
    let mut h = harness();
    let start = h.now_ms();
    push_with(&mut h, "d", json!({"deliver_at_ms": start + 1_000}));
    push(&mut h, "r1");
    assert_eq!(h.call("pop", JOBS, 0).json()["value"], "r1", "d is not due");

    let pop = h.call("pop", JOBS, 0);
    assert_eq!(pop.wait().expect("waits").until_ms, Some(start + 1_000));
    push_with(&mut h, "sooner", json!({"delay_ms": 100}));
    let pop = h.resume(&pop).expect("a new delayed item wakes it");
    assert_eq!(pop.wait().expect("waits").until_ms, Some(start + 100));

    h.advance_ms(1_000);
    push(&mut h, "r2");
    let order: Vec<Value> = (0..3)
        .map(|_| h.call("pop", JOBS, 0).json()["value"].clone())
        .collect();
    assert_eq!(order, ["sooner", "d", "r2"], "due items, earliest first");

    // A time already passed is no delay; both forms at once is refused.
    let now = push_with(&mut h, "now", json!({"deliver_at_ms": start}));
    assert!(now.json().get("deliver_at_ms").is_none());
    let both = push_with(&mut h, "x", json!({"delay_ms": 1, "deliver_at_ms": start}));
    assert!(both.error().is_some_and(|e| e.contains("not both")));
}

#[test]
fn a_reserved_item_is_hidden_until_its_visibility_timeout_then_redelivered() {
    let mut h = harness();
    push(&mut h, "job");
    let first = reserve(&mut h, 1_000);
    let held = first.json();
    assert_eq!(held["value"], "job");
    assert_eq!(held["deliveries"], 1);
    assert_eq!(held["visible_at_ms"], h.now_ms() + 1_000);
    assert!(h.keys("jobs/").is_empty(), "hidden from etcd clients too");
    assert_eq!(
        length(&mut h),
        json!({"ready": 0, "delayed": 0, "reserved": 1})
    );

    let other = reserve(&mut h, 1_000);
    assert_eq!(
        other.wait().expect("waits").until_ms,
        Some(h.now_ms() + 1_000)
    );
    h.advance_ms(999);
    assert!(!h.woken(&other));
    h.advance_ms(1);
    assert_eq!(
        length(&mut h),
        json!({"ready": 1, "delayed": 0, "reserved": 0})
    );
    // Timed out but not yet redelivered: it is no longer the first consumer's.
    let late = settle(&mut h, "ack", token(&first));
    assert!(late.error().is_some_and(|e| e.contains("timed out")));

    let again = h.resume(&other).expect("the timeout wakes the waiter");
    assert_eq!(again.json()["key"], held["key"]);
    assert_eq!(again.json()["deliveries"], 2);
    assert_ne!(token(&again), token(&first));
    let refused = settle(&mut h, "ack", token(&first));
    assert!(refused.error().is_some_and(|e| e.contains("not held")));
    assert_eq!(
        settle(&mut h, "ack", token(&again)).json(),
        json!({"acked": held["key"]})
    );
    assert!(h.keys("__jobs/").is_empty(), "an ack leaves nothing behind");
    assert!(settle(&mut h, "ack", token(&again)).error().is_some());
}

#[test]
fn a_lease_bound_reservation_ends_with_the_consumers_lease() {
    let mut h = harness();
    let (a, b) = (h.grant_lease(TTL_S), h.grant_lease(TTL_S));
    push(&mut h, "job");
    let held = reserve_with_lease(&mut h, a);
    assert!(held.json().get("visible_at_ms").is_none());
    let waiting = reserve_with_lease(&mut h, b);
    let wait = waiting.wait().expect("nothing else to take");
    assert!(
        wait.leases.contains(&b),
        "and wakes to fail if its own lease ends"
    );
    assert_eq!(wait.until_ms, None, "a lease-bound reservation has no time");

    // a's consumer dies: its lease expires (b keeps its own alive).
    h.advance_ms(TTL_S as u64 * 500);
    h.keep_alive(b);
    h.advance_ms(TTL_S as u64 * 500);
    assert!(!h.lease_exists(a));
    let got = h.resume(&waiting).expect("a's marker going wakes b");
    assert_eq!(got.json()["value"], "job");
    assert_eq!(got.json()["deliveries"], 2);
    let refused = settle(&mut h, "nack", token(&held));
    assert!(refused.error().is_some_and(|e| e.contains("not held")));
    assert!(settle(&mut h, "ack", token(&got)).is_done());
}

#[test]
fn a_waiting_lease_bound_reserve_fails_when_its_lease_ends() {
    let mut h = harness();
    let lease = h.grant_lease(TTL_S);
    let waiting = reserve_with_lease(&mut h, lease);
    h.revoke(lease);
    let ended = h.resume(&waiting).expect("its lease ending wakes it");
    assert_eq!(ended.error(), Some("etcdserver: requested lease not found"));
    let no_lease = reserve_with_lease(&mut h, 0);
    assert!(no_lease.error().is_some_and(|e| e.contains("lease")));
}

#[test]
fn nack_redelivers_at_once_or_after_a_delay_keeping_the_count() {
    let mut h = harness();
    let lease = h.grant_lease(TTL_S);
    push(&mut h, "job");
    push(&mut h, "next");
    let first = reserve_with_lease(&mut h, lease);
    let nacked = settle(&mut h, "nack", token(&first));
    assert_eq!(nacked.json()["nacked"], first.json()["key"]);
    assert_eq!(h.keys("__jobs/alive/"), Vec::<String>::new());
    let second = reserve(&mut h, 1_000);
    assert_eq!(second.json()["value"], "job", "redelivered before `next`");
    assert_eq!(second.json()["deliveries"], 2);
    assert!(settle(&mut h, "ack", token(&first)).error().is_some());

    let input = json!({"queue": "jobs", "token": token(&second), "delay_ms": 500});
    assert!(h.call("nack", input.to_string(), 0).is_done());
    assert_eq!(h.call("pop", JOBS, 0).json()["value"], "next");
    let pop = h.call("pop", JOBS, 0);
    assert_eq!(pop.wait().expect("waits").until_ms, Some(h.now_ms() + 500));
    h.advance_ms(500);
    let popped = h.resume(&pop).expect("its delay passed");
    assert_eq!(popped.json()["deliveries"], 2);
    assert!(h.keys("__jobs/").is_empty());
}

#[test]
fn a_nack_wakes_a_waiting_consumer() {
    let mut h = harness();
    push(&mut h, "job");
    let held = reserve(&mut h, 60_000);
    let waiting = h.call("pop", JOBS, 0);
    assert_eq!(
        waiting.wait().expect("waits").until_ms,
        Some(h.now_ms() + 60_000)
    );
    settle(&mut h, "nack", token(&held));
    let popped = h.resume(&waiting).expect("the nack wakes it at once");
    assert_eq!(popped.json()["value"], "job");
}

#[test]
fn peek_and_length_write_nothing_and_see_what_pop_would() {
    let mut h = harness();
    assert_eq!(h.call_read_only("peek", JOBS, 0).json(), Value::Null);
    push(&mut h, "a");
    push(&mut h, "b");
    push_with(&mut h, "d", json!({"delay_ms": 1_000}));
    reserve(&mut h, 2_000);
    let revision = h.revision();
    assert_eq!(
        length(&mut h),
        json!({"ready": 1, "delayed": 1, "reserved": 1})
    );
    let peeked = h.call_read_only("peek", JOBS, 0);
    assert_eq!(peeked.json()["value"], "b");
    assert_eq!(h.revision(), revision, "nothing written");

    h.advance_ms(1_000);
    assert_eq!(
        length(&mut h),
        json!({"ready": 2, "delayed": 0, "reserved": 1})
    );
    assert_eq!(h.call_read_only("peek", JOBS, 0).json()["value"], "d");
    h.advance_ms(1_000);
    assert_eq!(
        length(&mut h),
        json!({"ready": 3, "delayed": 0, "reserved": 0})
    );
    let peeked = h.call_read_only("peek", JOBS, 0).json();
    assert_eq!(peeked["value"], "a");
    assert_eq!(
        h.call("pop", JOBS, 0).json(),
        peeked,
        "pop takes what peek showed"
    );
}

#[test]
fn an_abandoned_waiting_pop_or_reserve_takes_nothing() {
    let mut h = harness();
    let lease = h.grant_lease(TTL_S);
    for (function, input, lease) in [
        ("pop", JOBS.to_string(), 0),
        (
            "reserve",
            r#"{"queue":"jobs","until_lease_ends":true}"#.to_string(),
            lease,
        ),
    ] {
        assert!(h.call(function, &input, lease).is_waiting());
        let revision = h.revision();
        assert_eq!(h.abandon(function, &input, lease), Ok(()));
        assert_eq!(h.revision(), revision, "the clean-up writes nothing");
    }
    push(&mut h, "kept");
    assert_eq!(
        h.keys("jobs/").len(),
        1,
        "the item waits for the next consumer"
    );
    assert_eq!(h.call("pop", JOBS, 0).json()["value"], "kept");
}

#[test]
fn many_consumers_each_get_a_different_item() {
    let mut h = harness();
    let leases: Vec<i64> = (0..5).map(|_| h.grant_lease(TTL_S)).collect();
    let waiting: Vec<Call> = leases
        .iter()
        .map(|l| reserve_with_lease(&mut h, *l))
        .collect();
    for value in ["a", "b", "c"] {
        push(&mut h, value);
    }
    let mut got = Vec::new();
    let mut still = Vec::new();
    for call in &waiting {
        let run = h.resume(call).expect("the pushes wake every waiter");
        match run.is_done() {
            true => got.push(run.json()["value"].clone()),
            false => still.push(run),
        }
    }
    assert_eq!(got, ["a", "b", "c"]);
    assert_eq!(still.len(), 2, "the rest wait again");
    assert_eq!(
        length(&mut h),
        json!({"ready": 0, "delayed": 0, "reserved": 3})
    );
}

#[test]
fn a_lease_ended_reservation_is_found_behind_hundreds_of_live_ones() {
    let mut h = harness();
    let live = h.grant_lease(TTL_S);
    let dying = h.grant_lease(TTL_S);
    for i in 0..300 {
        push(&mut h, &format!("v{i}"));
        assert!(reserve_with_lease(&mut h, live).is_done());
    }
    push(&mut h, "last");
    let last = reserve_with_lease(&mut h, dying);
    h.revoke(dying);
    let popped = h.call("pop", JOBS, 0);
    assert_eq!(popped.json()["value"], "last");
    assert_eq!(popped.json()["key"], last.json()["key"]);
    assert_eq!(
        length(&mut h),
        json!({"ready": 0, "delayed": 0, "reserved": 300})
    );
}

#[test]
fn unknown_functions_and_bad_input_fail() {
    let mut h = harness();
    assert!(h.call("peek-all", "{}", 0).error().is_some());
    assert!(
        h.call("push", r#"{"queue":"jobs"}"#, 0)
            .error()
            .is_some_and(|e| e.contains("invalid JSON"))
    );
    assert!(h.call("pop", r#"{"queue":""}"#, 0).error().is_some());
    let too_long = json!({"queue": "jobs", "visibility_ms": 13 * 3_600_000});
    assert!(h.call("reserve", too_long.to_string(), 0).error().is_some());
    assert_eq!(h.revision(), 1);
}

#[test]
fn declared_functions_are_the_ones_it_runs() {
    baton_sdk::testing::Harness::check_declared::<super::Queue>(super::FUNCTIONS);
}
