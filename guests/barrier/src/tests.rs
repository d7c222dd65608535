//! The barrier's documented behaviour on the SDK's in-memory harness: waiters pass once the
//! key is gone (released, or its holder's lease ended), and a barrier never held never blocks.

use baton_sdk::KeyRange;
use baton_sdk::json::json;
use baton_sdk::testing::Harness;

use super::Barrier;

const B: &[u8] = br#"{"name":"B"}"#;

#[test]
fn waiters_pass_once_the_barrier_is_released() {
    let mut h = Harness::new::<Barrier>("barrier");
    assert_eq!(
        h.call("wait", B, 0).json(),
        json!({"open": true}),
        "never held"
    );
    assert_eq!(h.call("hold", B, 0).json(), json!({"created": true}));
    let revision = h.revision();
    assert_eq!(h.call("hold", B, 0).json(), json!({"created": false}));
    assert_eq!(h.revision(), revision, "a second hold writes nothing");

    let waiters: Vec<_> = (0..100).map(|_| h.call_read_only("wait", B, 0)).collect();
    assert!(
        waiters
            .iter()
            .all(|w| w.wait().map(|w| w.keys.clone()) == Some(vec![KeyRange::key("B")]))
    );
    // A change that keeps the barrier up wakes them, and they wait again.
    h.put("B", "still up");
    let again = h.rerun(&waiters[0]);
    assert!(again.is_waiting());

    assert_eq!(h.call("release", B, 0).json(), json!({"released": true}));
    for w in &waiters {
        assert_eq!(h.resume(w).expect("woken").json(), json!({"open": true}));
    }
    assert_eq!(h.call("release", B, 0).json(), json!({"released": false}));
}

#[test]
fn a_holders_lease_ending_releases_the_barrier() {
    let mut h = Harness::new::<Barrier>("barrier");
    let lease = h.grant_lease(5);
    h.call("hold", B, lease);
    assert_eq!(h.get("B").expect("held").lease, lease);
    let w = h.call("wait", B, 0);
    h.advance_ms(5_000);
    assert!(h.resume(&w).expect("woken").is_done());
    assert!(h.call("nope", B, 0).error().is_some());
    assert_eq!(h.abandon("wait", B, 0), Ok(()), "nothing to withdraw");
}

#[test]
fn declared_functions_are_the_ones_it_runs() {
    baton_sdk::testing::Harness::check_declared::<super::Barrier>(super::FUNCTIONS);
}
