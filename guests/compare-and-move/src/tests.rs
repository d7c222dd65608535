//! Compare-and-move's documented behaviour on the SDK's in-memory harness.

use baton_sdk::json::json;
use baton_sdk::testing::Harness;

use super::CompareAndMove;

fn harness() -> Harness {
    let mut h = Harness::new::<CompareAndMove>("compare-and-move");
    h.put("queue/job1", "payload");
    h
}

#[test]
fn moves_in_one_revision_when_the_source_matches() {
    let mut h = harness();
    let before = h.revision();
    let moved = h.call(
        "move",
        r#"{"from":"queue/job1","to":"running/job1","expect":"payload"}"#,
        0,
    );
    assert_eq!(moved.json(), json!({"moved": true}));
    assert_eq!(h.revision(), before + 1, "delete and put in one revision");
    assert!(h.get("queue/job1").is_none());
    assert_eq!(h.get_str("running/job1").as_deref(), Some("payload"));
}

#[test]
fn without_expect_any_value_moves() {
    let mut h = harness();
    let moved = h.call("move", r#"{"from":"queue/job1","to":"b"}"#, 0);
    assert_eq!(moved.json(), json!({"moved": true}));
}

#[test]
fn refuses_and_changes_nothing_otherwise() {
    let mut h = harness();
    h.put("taken", "x");
    let before = h.revision();
    for (input, reason) in [
        (r#"{"from":"absent","to":"b"}"#, "source is absent"),
        (
            r#"{"from":"queue/job1","to":"b","expect":"other"}"#,
            "source value differs",
        ),
        (
            r#"{"from":"queue/job1","to":"taken"}"#,
            "destination exists",
        ),
    ] {
        let refused = h.call("move", input, 0);
        assert_eq!(refused.json(), json!({"moved": false, "reason": reason}));
    }
    assert_eq!(h.revision(), before);
    assert!(h.call("copy", "{}", 0).error().is_some());
    assert!(
        h.call("move", "{}", 0)
            .error()
            .is_some_and(|e| e.contains("invalid JSON"))
    );
}

#[test]
fn declared_functions_are_the_ones_it_runs() {
    baton_sdk::testing::Harness::check_declared::<super::CompareAndMove>(super::FUNCTIONS);
}
