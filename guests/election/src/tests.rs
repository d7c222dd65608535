//! The election's documented behaviour on the SDK's in-memory harness: hand-off in arrival
//! order, a leader's or candidate's lease ending, abandonment, fenced proclaim and resign, and
//! observe's waits.

use baton_sdk::KeyRange;
use baton_sdk::json::{Value, json};
use baton_sdk::testing::{Call, Harness};

use super::Election;

const TTL_S: i64 = 60;

fn key(lease: i64) -> String {
    format!("E/{lease:x}")
}

fn campaign(h: &mut Harness, lease: i64, value: &str) -> Call {
    h.call(
        "campaign",
        json!({"name": "E", "value": value}).to_string(),
        lease,
    )
}

fn token(call: &Call) -> i64 {
    call.json()["token"].as_i64().expect("a token")
}

fn with_leases(n: usize) -> (Harness, Vec<i64>) {
    let mut h = Harness::new::<Election>("election");
    let leases = (0..n).map(|_| h.grant_lease(TTL_S)).collect();
    (h, leases)
}

fn leader(h: &mut Harness) -> Call {
    h.call_read_only("leader", r#"{"name":"E"}"#, 0)
}

fn observe(h: &mut Harness, known: Value) -> Call {
    let mut input = json!({"name": "E"});
    if let (Some(obj), Some(known)) = (input.as_object_mut(), known.as_object()) {
        obj.insert("key".into(), known["key"].clone());
        obj.insert("mod_revision".into(), known["mod_revision"].clone());
    }
    h.call_read_only("observe", input.to_string(), 0)
}

#[test]
fn candidates_lead_in_arrival_order() {
    let (mut h, l) = with_leases(3);
    assert_eq!(leader(&mut h).error(), Some("election: no leader"));
    let a = campaign(&mut h, l[0], "a");
    assert_eq!(a.json()["key"], key(l[0]));
    assert_eq!(token(&a), h.revision(), "the key's create revision");
    let b = campaign(&mut h, l[1], "b");
    let c = campaign(&mut h, l[2], "c");
    assert_eq!(b.wait().expect("b waits").keys, [KeyRange::key(key(l[0]))]);
    assert_eq!(b.wait().expect("b waits").leases, [l[1]]);
    assert_eq!(c.wait().expect("c waits").keys, [KeyRange::key(key(l[1]))]);
    let now = leader(&mut h).json();
    assert_eq!(
        (now["key"].clone(), now["value"].clone()),
        (json!(key(l[0])), json!("a"))
    );
    assert_eq!(now["token"], token(&a));

    let resign = json!({"name": "E", "token": token(&a)}).to_string();
    assert_eq!(
        h.call("resign", &resign, l[0]).json(),
        json!({"resigned": true})
    );
    assert!(h.resume(&c).is_none(), "c waits on b");
    let b = h.resume(&b).expect("a's resign wakes b");
    assert!(token(&b) > token(&a));
    assert_eq!(leader(&mut h).json()["value"], "b");
    assert_eq!(
        h.call("resign", &resign, l[0]).json(),
        json!({"resigned": false})
    );
}

#[test]
fn proclaim_is_fenced_by_the_leaders_token() {
    let (mut h, l) = with_leases(2);
    let a = campaign(&mut h, l[0], "a");
    campaign(&mut h, l[1], "b");
    let proclaim = |token: i64| json!({"name": "E", "token": token, "value": "a2"}).to_string();
    let done = h.call("proclaim", proclaim(token(&a)), l[0]);
    assert_eq!(done.json(), json!({"revision": h.revision()}));
    assert_eq!(leader(&mut h).json()["value"], "a2");
    let wrong = h.call("proclaim", proclaim(token(&a) + 1), l[0]);
    assert_eq!(wrong.error(), Some("election: not leader"));
    let waiter = h.call("proclaim", proclaim(token(&a)), l[1]);
    assert_eq!(
        waiter.error(),
        Some("election: not leader"),
        "b does not lead"
    );
    h.revoke(l[0]);
    let late = h.call("proclaim", proclaim(token(&a)), l[0]);
    assert!(late.error().is_some(), "a lost its key with its lease");
}

#[test]
fn a_candidate_whose_key_exists_updates_its_value() {
    let (mut h, l) = with_leases(2);
    let a = campaign(&mut h, l[0], "a");
    let again = campaign(&mut h, l[0], "a2");
    assert_eq!(token(&again), token(&a), "the same incarnation");
    assert_eq!(h.get_str(key(l[0])), Some("a2".into()));
    let b = campaign(&mut h, l[1], "b");
    let b2 = campaign(&mut h, l[1], "b2");
    assert!(b2.is_waiting());
    assert_eq!(h.get_str(key(l[1])), Some("b2".into()));
    assert_eq!(b.wait(), b2.wait());
}

#[test]
fn the_next_candidate_leads_when_the_leaders_lease_ends() {
    let (mut h, l) = with_leases(2);
    campaign(&mut h, l[0], "a");
    let b = campaign(&mut h, l[1], "b");
    h.revoke(l[0]);
    assert_eq!(h.resume(&b).expect("woken").json()["key"], key(l[1]));
}

#[test]
fn a_waiting_candidate_whose_lease_ended_fails() {
    let (mut h, l) = with_leases(2);
    campaign(&mut h, l[0], "a");
    let b = campaign(&mut h, l[1], "b");
    h.revoke(l[1]);
    let b = h.resume(&b).expect("its own lease ending wakes b");
    assert_eq!(b.error(), Some("etcdserver: requested lease not found"));
    assert!(h.get(key(l[1])).is_none());
    // Even once the leader is gone: it is never made leader.
    h.revoke(l[0]);
    assert!(h.rerun(&b).error().is_some());
}

#[test]
fn an_abandoned_campaign_resigns() {
    let (mut h, l) = with_leases(3);
    campaign(&mut h, l[0], "a");
    campaign(&mut h, l[1], "b");
    let c = campaign(&mut h, l[2], "c");
    let input = json!({"name": "E", "value": "b"}).to_string();
    assert_eq!(h.abandon("campaign", &input, l[1]), Ok(()));
    assert!(h.get(key(l[1])).is_none());
    let c = h.resume(&c).expect("b's key going wakes c");
    assert_eq!(c.wait().expect("a leads").keys, [KeyRange::key(key(l[0]))]);
    // Abandoning a fresh leadership hands it on.
    let input = json!({"name": "E", "value": "a"}).to_string();
    assert_eq!(h.abandon("campaign", &input, l[0]), Ok(()));
    assert_eq!(h.resume(&c).expect("woken").json()["key"], key(l[2]));
    let revision = h.revision();
    assert_eq!(h.abandon("leader", r#"{"name":"E"}"#, l[2]), Ok(()));
    assert_eq!(h.revision(), revision, "only campaigns clean up");
}

#[test]
fn observe_returns_on_the_next_change_of_leader_or_value() {
    let (mut h, l) = with_leases(2);
    let none = observe(&mut h, Value::Null);
    assert_eq!(
        none.wait().expect("no leader yet").keys,
        [KeyRange::prefix("E/")]
    );
    let a = campaign(&mut h, l[0], "a");
    let first = h
        .resume(&none)
        .expect("a's campaign wakes the observer")
        .json();
    assert_eq!(
        (first["key"].clone(), first["value"].clone()),
        (json!(key(l[0])), json!("a"))
    );

    let same = observe(&mut h, first.clone());
    assert_eq!(
        same.wait().expect("nothing new").keys,
        [KeyRange::key(key(l[0]))]
    );
    campaign(&mut h, l[1], "b");
    assert!(
        h.resume(&same).is_none(),
        "a new candidate is no change of leader"
    );
    let proclaim = json!({"name": "E", "token": token(&a), "value": "a2"}).to_string();
    h.call("proclaim", proclaim, l[0]);
    let second = h.resume(&same).expect("the proclaim wakes it").json();
    assert_eq!(second["value"], "a2");
    assert!(second["mod_revision"].as_i64() > first["mod_revision"].as_i64());

    let waiting = observe(&mut h, second);
    h.revoke(l[0]);
    let third = h
        .resume(&waiting)
        .expect("the leader's end wakes it")
        .json();
    assert_eq!(
        (third["key"].clone(), third["value"].clone()),
        (json!(key(l[1])), json!("b"))
    );
}

#[test]
fn values_and_names_may_be_any_bytes() {
    let (mut h, l) = with_leases(1);
    let input = json!({"name_hex": "ff", "value_hex": "00ff"}).to_string();
    let a = h.call("campaign", &input, l[0]);
    assert!(a.json().get("key_hex").is_some());
    let now = h.call_read_only("leader", r#"{"name_hex":"ff"}"#, 0).json();
    assert_eq!(now["value_hex"], "00ff");
    assert!(now.get("value").is_none());
    assert!(
        h.call("campaign", r#"{"name":"E"}"#, l[0])
            .error()
            .is_some(),
        "value needed"
    );
    assert!(
        h.call("campaign", r#"{"name":"E","value":"v"}"#, 0)
            .error()
            .is_some()
    );
}

#[test]
fn declared_functions_are_the_ones_it_runs() {
    baton_sdk::testing::Harness::check_declared::<super::Election>(super::FUNCTIONS);
}
