//! The queue's documented behaviour on the SDK's in-memory harness.

use baton_sdk::KeyRange;
use baton_sdk::json::json;
use baton_sdk::testing::Harness;

use super::Queue;

fn harness() -> Harness {
    Harness::new::<Queue>("queue")
}

fn push(h: &mut Harness, value: &str) -> baton_sdk::json::Value {
    h.call(
        "push",
        json!({"queue": "jobs", "value": value}).to_string(),
        0,
    )
    .json()
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
        let popped = h.call("pop", r#"{"queue":"jobs"}"#, 0);
        assert_eq!(popped.json(), json!({"key": key, "value": value}));
        assert!(h.get(key).is_none(), "popped items are gone");
    }
    assert_eq!(h.keys("jobs2/").len(), 1, "another queue's items stay");
}

#[test]
fn pop_on_an_empty_queue_waits_for_a_push() {
    let mut h = harness();
    let pop = h.call("pop", r#"{"queue":"jobs"}"#, 0);
    assert_eq!(pop.wait().expect("waits").keys, [KeyRange::prefix("jobs/")]);
    h.put("jobsx", "not in the queue");
    assert!(!h.woken(&pop));
    push(&mut h, "late");
    let popped = h.resume(&pop).expect("the push wakes it");
    assert_eq!(popped.json()["value"], "late");
    assert!(h.keys("jobs/").is_empty());
}

#[test]
fn unknown_functions_and_bad_input_fail() {
    let mut h = harness();
    assert!(h.call("peek", "{}", 0).error().is_some());
    assert!(
        h.call("push", r#"{"queue":"jobs"}"#, 0)
            .error()
            .is_some_and(|e| e.contains("invalid JSON"))
    );
    assert_eq!(h.revision(), 1);
}
