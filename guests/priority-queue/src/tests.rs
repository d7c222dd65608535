//! The priority queue's behaviour on the SDK's in-memory harness: etcd's key layout and
//! bookkeeping key, lowest priority first and FIFO within one, sequence numbers continuing
//! after a Go client's enqueue, and a waiting dequeue.

use baton_sdk::json::{Value, json};
use baton_sdk::testing::Harness;

use super::PriorityQueue;

const JOBS: &str = r#"{"queue":"jobs"}"#;

fn harness() -> Harness {
    Harness::new::<PriorityQueue>("priority-queue")
}

fn enqueue(h: &mut Harness, value: &str, priority: u32) -> Value {
    let input = json!({"queue": "jobs", "value": value, "priority": priority});
    h.call("enqueue", input.to_string(), 0).json()
}

#[test]
fn lowest_priority_first_and_fifo_within_one_in_etcds_layout() {
    let mut h = harness();
    let first = enqueue(&mut h, "p5-a", 5);
    assert_eq!(
        first,
        json!({"key": "jobs/00005/0000000000000000", "value": "p5-a", "priority": 5})
    );
    assert_eq!(
        h.get_str("__jobs/00005"),
        Some(String::new()),
        "etcd's base key"
    );
    enqueue(&mut h, "p5-b", 5);
    enqueue(&mut h, "p0", 0);
    enqueue(&mut h, "p65535", 65_535);
    enqueue(&mut h, "p1", 1);
    assert_eq!(
        h.get_str("jobs/00005/0000000000000001"),
        Some("p5-b".into())
    );

    let order: Vec<Value> = (0..5)
        .map(|_| h.call("dequeue", JOBS, 0).json()["value"].clone())
        .collect();
    assert_eq!(order, ["p0", "p1", "p5-a", "p5-b", "p65535"]);
    assert!(h.keys("jobs/").is_empty());
}

#[test]
fn sequence_numbers_continue_after_a_go_clients_enqueue() {
    let mut h = harness();
    // What etcd's newSequentialKV writes for Enqueue("go", 2) after six earlier items.
    h.put("__jobs/00002", "");
    h.put("jobs/00002/0000000000000006", "go");
    let ours = enqueue(&mut h, "module", 2);
    assert_eq!(ours["key"], "jobs/00002/0000000000000007");
    let base = h.get("__jobs/00002").expect("the base key");
    assert_eq!(
        base.mod_revision,
        h.revision(),
        "bumped, so a Go enqueue that read before ours retries"
    );
    let popped = h.call("dequeue", JOBS, 0).json();
    assert_eq!(
        popped,
        json!({"key": "jobs/00002/0000000000000006", "value": "go", "priority": 2})
    );
}

#[test]
fn dequeue_waits_for_an_enqueue_from_either_side_and_abandoning_it_takes_nothing() {
    let mut h = harness();
    let waiting = h.call("dequeue", JOBS, 0);
    assert!(waiting.is_waiting());
    h.put("jobsx/00000/0000000000000000", "another queue");
    assert!(!h.woken(&waiting));
    h.put("jobs/00009/0000000000000000", "put by Go");
    let got = h.resume(&waiting).expect("the put wakes it");
    assert_eq!(got.json()["priority"], 9);

    let waiting = h.call("dequeue", JOBS, 0);
    let revision = h.revision();
    assert_eq!(h.abandon("dequeue", JOBS, 0), Ok(()));
    assert_eq!(h.revision(), revision);
    enqueue(&mut h, "kept", 0);
    assert!(
        h.woken(&waiting),
        "the host would drop it; the item stays regardless"
    );
    assert_eq!(h.keys("jobs/").len(), 1);
}

#[test]
fn bad_input_is_refused() {
    let mut h = harness();
    let input = json!({"queue": "jobs", "value": "x", "priority": 65_536});
    assert!(h.call("enqueue", input.to_string(), 0).error().is_some());
    h.put("jobs/00001/not-a-number", "x");
    let input = json!({"queue": "jobs", "value": "x", "priority": 1});
    let refused = h.call("enqueue", input.to_string(), 0);
    assert!(
        refused
            .error()
            .is_some_and(|e| e.contains("sequence number"))
    );
    assert!(h.call("dequeue", r#"{"queue":""}"#, 0).error().is_some());
    assert!(h.call("push", JOBS, 0).error().is_some());
}

#[test]
fn declared_functions_are_the_ones_it_runs() {
    baton_sdk::testing::Harness::check_declared::<super::PriorityQueue>(super::FUNCTIONS);
}
