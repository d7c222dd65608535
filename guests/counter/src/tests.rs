//! The counter's documented behaviour on the SDK's in-memory harness.

use baton_sdk::KeyRange;
use baton_sdk::json::json;
use baton_sdk::testing::Harness;

use super::Counter;

fn harness() -> Harness {
    Harness::new::<Counter>("counter")
}

#[test]
fn add_changes_every_counter_in_one_revision() {
    let mut h = harness();
    let added = h.call("add", r#"{"keys":["c1","c2"],"by":2}"#, 0);
    assert_eq!(added.json(), json!({"c1": 2, "c2": 2}));
    assert_eq!(h.revision(), 2, "one revision for both");
    assert_eq!(
        h.get_str("c1").as_deref(),
        Some("2"),
        "decimal text any client reads"
    );
    let again = h.call("add", r#"{"keys":["c1"],"by":-5}"#, 0);
    assert_eq!(again.json(), json!({"c1": -3}));
}

#[test]
fn get_reads_without_writing_and_defaults_to_zero() {
    let mut h = harness();
    h.call("add", r#"{"keys":["c1","c2"],"by":2}"#, 0);
    let revision = h.revision();
    let got = h.call_read_only("get", r#"{"keys":["c1","c3"]}"#, 0);
    assert_eq!(got.json(), json!({"c1": 2, "c3": 0}));
    assert_eq!(h.revision(), revision);
    assert!(h.get("c3").is_none());
}

#[test]
fn a_bad_counter_fails_the_whole_call() {
    let mut h = harness();
    h.put("bad", "x");
    h.put("max", i64::MAX.to_string());
    let bad = h.call("add", r#"{"keys":["good","bad"],"by":1}"#, 0);
    assert_eq!(bad.error(), Some("counter: bad is not an integer"));
    assert!(
        h.get("good").is_none(),
        "the earlier key was not written either"
    );
    let overflow = h.call("add", r#"{"keys":["max"],"by":1}"#, 0);
    assert_eq!(overflow.error(), Some("counter: overflow"));
    assert!(h.call("sub", "{}", 0).error().is_some());
    assert!(
        h.call("add", "{", 0)
            .error()
            .is_some_and(|e| e.contains("invalid JSON"))
    );
}

#[test]
fn get_at_least_is_a_countdown_latch() {
    let mut h = harness();
    let latch = h.call("get", r#"{"keys":["a","b"],"at_least":2}"#, 0);
    let wait = latch.wait().expect("waits while below");
    assert_eq!(wait.keys, [KeyRange::key("a"), KeyRange::key("b")]);

    h.call("add", r#"{"keys":["a"],"by":2}"#, 0);
    let latch = h.resume(&latch).expect("a's change wakes it");
    assert!(latch.is_waiting(), "b is still below");
    h.call("add", r#"{"keys":["b"],"by":3}"#, 0);
    let latch = h.resume(&latch).expect("b's change wakes it");
    assert_eq!(latch.json(), json!({"a": 2, "b": 3}));
}

#[test]
fn declared_functions_are_the_ones_it_runs() {
    baton_sdk::testing::Harness::check_declared::<super::Counter>(super::FUNCTIONS);
}
