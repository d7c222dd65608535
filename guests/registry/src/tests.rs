//! The registry's behaviour on the SDK's in-memory harness: etcd's naming layout, instances
//! that go with their lease, `changes` waiting for and reporting arrivals and departures
//! (including instances other clients put), and a compacted revision.

use baton_sdk::json::{self as serde_json, Value, json};
use baton_sdk::testing::{Call, Harness};

use super::{DEPARTURES_MAX, Registry};

const TTL_S: i64 = 10;
const WEB: &str = r#"{"service":"web"}"#;

fn harness() -> Harness {
    Harness::new::<Registry>("registry")
}

fn register(h: &mut Harness, instance: &str, meta: Value, lease: i64) -> Call {
    let input = json!({"service": "web", "instance": instance, "meta": meta});
    h.call("register", input.to_string(), lease)
}

fn changes(h: &mut Harness, since: i64) -> Call {
    let input = json!({"service": "web", "since_revision": since});
    h.call("changes", input.to_string(), 0)
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|i| i["instance"].as_str().expect("a name").to_string())
        .collect()
}

#[test]
fn an_instance_is_etcds_naming_key_on_the_callers_lease() {
    let mut h = harness();
    let lease = h.grant_lease(TTL_S);
    let done = register(&mut h, "10.0.0.1:80", json!({"zone": "a"}), lease);
    assert_eq!(
        done.json(),
        json!({"key": "web/10.0.0.1:80", "revision": h.revision()})
    );
    let kv = h.get("web/10.0.0.1:80").expect("the instance key");
    assert_eq!(kv.lease, lease);
    let value: Value = serde_json::from_slice(&kv.value).expect("JSON");
    assert_eq!(
        value,
        json!({"Op": 0, "Addr": "10.0.0.1:80", "Metadata": {"zone": "a"}})
    );

    let list = h.call_read_only("list", WEB, 0).json();
    assert_eq!(list["revision"], h.revision() - 1, "conservative");
    assert_eq!(
        list["instances"],
        json!([{"instance": "10.0.0.1:80", "addr": "10.0.0.1:80", "meta": {"zone": "a"},
                "lease": lease, "mod_revision": h.revision()}])
    );
    let refused = register(&mut h, "x", Value::Null, 0);
    assert!(refused.error().is_some_and(|e| e.contains("lease")));
}

#[test]
fn changes_waits_then_reports_arrivals_and_departures_once() {
    let mut h = harness();
    let (a, b) = (h.grant_lease(TTL_S), h.grant_lease(TTL_S));
    register(&mut h, "a", json!(1), a);
    let since = h.call_read_only("list", WEB, 0).json()["revision"]
        .as_i64()
        .expect("a revision");
    let first = changes(&mut h, since);
    assert_eq!(
        names(&first.json()["came"]),
        ["a"],
        "reported again: harmless"
    );
    let since = first.json()["revision"].as_i64().expect("a revision");

    let waiting = changes(&mut h, since);
    assert!(waiting.is_waiting(), "nothing new yet");
    register(&mut h, "b", json!(2), b);
    let got = h.resume(&waiting).expect("b arriving wakes it").json();
    assert_eq!(names(&got["came"]), ["b"]);
    assert_eq!(got["went"], json!([]));
    let since = got["revision"].as_i64().expect("a revision");

    let waiting = changes(&mut h, since);
    assert!(waiting.is_waiting());
    // a's process dies: its lease expires while b's is kept alive.
    h.advance_ms(TTL_S as u64 * 500);
    h.keep_alive(b);
    h.advance_ms(TTL_S as u64 * 500);
    let got = h.resume(&waiting).expect("a's key going wakes it").json();
    assert_eq!(got["came"], json!([]));
    assert_eq!(got["went"], json!(["a"]));
    let since = got["revision"].as_i64().expect("a revision");
    assert!(changes(&mut h, since).is_waiting(), "reported once");

    // Deregistering, or coming back, are changes too.
    let input = json!({"service": "web", "instance": "b"});
    let dereg = h.call("deregister", input.to_string(), 0);
    assert_eq!(dereg.json(), json!({"deregistered": true}));
    let a2 = h.grant_lease(TTL_S);
    register(&mut h, "a", json!("back"), a2);
    let got = changes(&mut h, since).json();
    assert_eq!(names(&got["came"]), ["a"]);
    assert_eq!(got["came"][0]["meta"], "back");
    assert_eq!(got["went"], json!(["b"]), "a came back: not gone");
}

#[test]
fn instances_put_by_other_clients_are_listed_and_their_departure_reported() {
    let mut h = harness();
    let lease = h.grant_lease(TTL_S);
    // What etcd's endpoints manager writes for AddEndpoint("web/go:1", {Addr: "go:1"}).
    h.put_with_lease(
        "web/go:1",
        r#"{"Op":0,"Addr":"go:1","Metadata":null}"#,
        lease,
    );
    h.put("web/plain", "some metadata");
    let list = h.call_read_only("list", WEB, 0).json();
    assert_eq!(names(&list["instances"]), ["go:1", "plain"]);
    assert_eq!(list["instances"][1]["meta"], "some metadata");

    let got = changes(&mut h, 0).json();
    assert_eq!(names(&got["came"]), ["go:1", "plain"]);
    let since = got["revision"].as_i64().expect("a revision");
    assert_eq!(since, h.revision(), "adopting them was this call's write");
    let waiting = changes(&mut h, since);
    h.revoke(lease);
    let got = h.resume(&waiting).expect("woken").json();
    assert_eq!(got["went"], json!(["go:1"]));
}

#[test]
fn a_revision_older_than_the_forgotten_departures_is_compacted() {
    let mut h = harness();
    let lease = h.grant_lease(TTL_S);
    let old = h.revision();
    for i in 0..=DEPARTURES_MAX {
        register(&mut h, &format!("i{i:05}"), Value::Null, lease);
    }
    h.revoke(lease);
    let got = changes(&mut h, old).json();
    let went = got["went"].as_array().expect("a list").len() as u64;
    assert_eq!(went, DEPARTURES_MAX + 1, "this call noticed them all");
    // The next call forgets the oldest one past the bound.
    let since = got["revision"].as_i64().expect("a revision");
    assert!(changes(&mut h, since).is_waiting());
    assert_eq!(h.keys("__web/gone/").len() as u64, DEPARTURES_MAX);
    let compacted = changes(&mut h, old);
    assert!(
        compacted.error().is_some_and(|e| e.contains("compacted")),
        "{:?}",
        compacted.outcome
    );
    // What a client does then: list again and continue from there.
    let list = h.call_read_only("list", WEB, 0).json();
    assert_eq!(list["instances"], json!([]));
    let since = list["revision"].as_i64().expect("a revision");
    assert!(changes(&mut h, since).error().is_none());
}

#[test]
fn abandoning_a_waiting_changes_writes_nothing_and_bad_input_fails() {
    let mut h = harness();
    let input = json!({"service": "web", "since_revision": 1}).to_string();
    assert!(h.call("changes", &input, 0).is_waiting());
    let revision = h.revision();
    assert_eq!(h.abandon("changes", &input, 0), Ok(()));
    assert_eq!(h.revision(), revision);
    let lease = h.grant_lease(TTL_S);
    assert!(register(&mut h, "", Value::Null, lease).error().is_some());
    assert!(h.call("list", r#"{"service":""}"#, 0).error().is_some());
    assert!(h.call("watch", WEB, 0).error().is_some());
}

#[test]
fn declared_functions_are_the_ones_it_runs() {
    baton_sdk::testing::Harness::check_declared::<super::Registry>(super::FUNCTIONS);
}
