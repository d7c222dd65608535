//! The harness against hand-computed answers: revisions and versions as etcd counts them,
//! writes that commit only with a successful call, etcd's range conventions, every sort and
//! filter, leases ending with their keys, and when a waiting call wakes.

use std::cell::RefCell;

use super::{Harness, Outcome, START_MS};
use crate::store::{self, Range, SortBy};
use crate::{Module, Reply, context};

type Body = Box<dyn Fn(&str, &[u8]) -> Result<Reply, String>>;

thread_local! {
    /// What the scripted module does; each test sets its own.
    static BODY: RefCell<Option<Body>> = const { RefCell::new(None) };
    static ABANDON: RefCell<Option<Body>> = const { RefCell::new(None) };
}

/// A module whose `invoke` (and `abandon`) run the closures a test installs.
struct Scripted;

impl Module for Scripted {
    fn invoke(function: &str, input: &[u8]) -> Result<Reply, String> {
        BODY.with(|b| match b.borrow().as_ref() {
            Some(body) => body(function, input),
            None => Err("no body".into()),
        })
    }

    fn abandon(function: &str, input: &[u8]) -> Result<(), String> {
        ABANDON.with(|b| match b.borrow().as_ref() {
            Some(body) => body(function, input).map(|_| ()),
            None => Ok(()),
        })
    }
}

fn scripted(body: impl Fn(&str, &[u8]) -> Result<Reply, String> + 'static) -> Harness {
    BODY.with(|b| *b.borrow_mut() = Some(Box::new(body)));
    Harness::new::<Scripted>("scripted")
}

fn text(input: &[u8]) -> String {
    String::from_utf8_lossy(input).into_owned()
}

fn keys(kvs: &[store::Kv]) -> Vec<String> {
    kvs.iter().map(|kv| text(&kv.key)).collect()
}

fn ok() -> Result<Reply, String> {
    Ok(Reply::done(b""))
}

#[test]
fn one_revision_per_writing_call_with_etcd_versions() {
    // "put": every comma-separated key gets the value "v"; "read": nothing.
    let mut h = scripted(|function, input| {
        if function == "put" {
            for key in text(input).split(',') {
                store::put(key, "v");
            }
        }
        Reply::json(&context::revision())
    });
    assert_eq!(
        h.revision(),
        1,
        "an empty store is at revision 1, as etcd's"
    );

    let first = h.call("put", "a,b", 0);
    assert_eq!(
        first.json(),
        2,
        "the call is told the revision its writes get"
    );
    assert_eq!(h.revision(), 2, "two keys, one revision");
    for key in ["a", "b"] {
        let kv = h.get(key).expect("written");
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 2, 1));
    }

    h.call("put", "a", 0);
    let a = h.get("a").expect("written");
    assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 3, 2));

    h.call("read", "", 0);
    assert_eq!(
        h.revision(),
        3,
        "a call that writes nothing takes no revision"
    );
    h.delete("a");
    h.put("a", "again");
    let a = h.get("a").expect("recreated");
    assert_eq!(
        (a.create_revision, a.mod_revision, a.version),
        (5, 5, 1),
        "a key created again starts over"
    );
}

#[test]
fn reads_see_the_calls_own_writes() {
    let mut h = scripted(|_, _| {
        store::put("k", "1");
        store::put("k", "2");
        let kv = store::get("k").ok_or("own put invisible")?;
        let deleted = store::delete("old");
        let gone = store::get("old").is_none();
        let listed = keys(&store::prefix("", 0, false));
        Reply::json(&(
            text(&kv.value),
            kv.mod_revision,
            kv.version,
            deleted,
            gone,
            listed,
        ))
    });
    h.put("old", "x");
    h.put("k", "0");
    let run = h.call("f", "", 0);
    assert_eq!(
        run.json(),
        serde_json::json!(["2", 4, 2, true, true, ["k"]]),
        "latest buffered value, the call's revision, one version more than stored"
    );
    let k = h.get("k").expect("committed");
    assert_eq!(
        (k.version, k.mod_revision),
        (2, 4),
        "two puts in one call are one version"
    );
    assert!(h.get("old").is_none());
}

#[test]
fn a_failed_call_commits_nothing() {
    let mut h = scripted(|function, _| {
        store::put("x", "1");
        store::delete("kept");
        match function {
            "fail" => Err("refused".into()),
            "bad-lease" => {
                store::put_with_lease("y", "1", 0x1234);
                Ok(Reply::done(
                    "unreachable: the host stops the guest at the refused put",
                ))
            }
            "empty-key" => {
                store::put("", "1");
                ok()
            }
            _ => Ok(Reply::wait_on([])),
        }
    });
    h.put("kept", "v");
    let before = h.revision();
    for (function, message) in [
        ("fail", "refused"),
        ("bad-lease", "etcdserver: requested lease not found"),
        ("empty-key", "etcdserver: key is not provided"),
        (
            "wait-on-nothing",
            "guest asked to wait but named no keys, leases or time",
        ),
    ] {
        let run = h.call(function, "", 0);
        assert_eq!(run.error(), Some(message), "{function}");
        assert_eq!(h.revision(), before, "{function} committed something");
        assert!(
            h.get("x").is_none() && h.get("kept").is_some(),
            "{function}"
        );
    }
}

#[test]
fn read_only_calls_cannot_write_and_take_no_log_entry() {
    let mut h = scripted(|function, _| {
        let facts = (context::revision(), context::log_index());
        if function == "write" {
            store::put("x", "1");
        }
        Reply::json(&facts)
    });
    h.put("a", "1");
    let run = h.call_read_only("read", "", 0);
    assert_eq!(
        run.json(),
        serde_json::json!([2, 1]),
        "current revision and applied index"
    );
    let write = h.call_read_only("write", "", 0);
    assert!(write.error().is_some_and(|e| e.contains("read-only")));
    assert!(h.get("x").is_none());
    let logged = h.call("read", "", 0);
    assert_eq!(
        logged.json(),
        serde_json::json!([3, 2]),
        "next revision and a new index"
    );
}

#[test]
fn context_reports_the_call() {
    let mut h = scripted(|_, _| {
        Reply::json(&(
            context::proposal_time_ms(),
            context::caller_lease(),
            context::caller(),
            context::module_name(),
        ))
    });
    h.set_caller("alice");
    h.advance_ms(250);
    let lease = h.grant_lease(5);
    let run = h.call("f", "", lease);
    assert_eq!(
        run.json(),
        serde_json::json!([START_MS + 250, lease, "alice", "scripted"])
    );
    assert_eq!(run.proposal_time_ms, START_MS + 250);
}

/// Keys k/a..k/d with known revisions: c@2, a@3, b@4, a again @5 (version 2), d@6.
fn sortable() -> Harness {
    let mut h = scripted(|_, input| {
        let request: (String, String, bool) = crate::from_json(input)?;
        let (prefix, by, descending) = request;
        let by = match by.as_str() {
            "version" => SortBy::Version,
            "create" => SortBy::CreateRevision,
            "mod" => SortBy::ModRevision,
            "value" => SortBy::Value,
            _ => SortBy::Key,
        };
        let range = Range::prefix(prefix).sort_by(by);
        let range = if descending {
            range.descending()
        } else {
            range
        };
        Reply::json(&keys(&range.kvs()))
    });
    for (key, value) in [
        ("k/c", "3"),
        ("k/a", "1"),
        ("k/b", "2"),
        ("k/a", "9"),
        ("k/d", "0"),
    ] {
        h.put(key, value);
    }
    assert_eq!(h.revision(), 6);
    h
}

#[test]
fn every_sort_with_ties_broken_by_key() {
    let mut h = sortable();
    let cases = [
        ("key", false, ["k/a", "k/b", "k/c", "k/d"]),
        ("key", true, ["k/d", "k/c", "k/b", "k/a"]),
        ("create", false, ["k/c", "k/a", "k/b", "k/d"]),
        ("create", true, ["k/d", "k/b", "k/a", "k/c"]),
        ("mod", false, ["k/c", "k/b", "k/a", "k/d"]),
        ("mod", true, ["k/d", "k/a", "k/b", "k/c"]),
        // a has version 2, the rest 1: ties in key order, reversed with the rest.
        ("version", false, ["k/b", "k/c", "k/d", "k/a"]),
        ("version", true, ["k/a", "k/d", "k/c", "k/b"]),
        ("value", false, ["k/d", "k/b", "k/c", "k/a"]),
    ];
    for (by, descending, want) in cases {
        let input = serde_json::to_vec(&("k/", by, descending)).expect("encodes");
        let run = h.call_read_only("sort", &input, 0);
        assert_eq!(
            run.json(),
            serde_json::json!(want),
            "{by} descending={descending}"
        );
    }
}

#[test]
fn filters_limits_counts_and_keys_only() {
    let h = sortable();
    let prefix = || Range::prefix("k/");
    let got = |range: Range| keys(&h.range(range).kvs);
    // The key created just before d (6): b (4).
    let ahead = prefix()
        .sort_by(SortBy::CreateRevision)
        .descending()
        .max_create_revision(5)
        .limit(1);
    assert_eq!(got(ahead), ["k/b"]);
    assert_eq!(got(prefix().max_create_revision(3)), ["k/a", "k/c"]);
    assert_eq!(got(prefix().min_create_revision(4)), ["k/b", "k/d"]);
    assert_eq!(got(prefix().min_mod_revision(4)), ["k/a", "k/b", "k/d"]);
    assert_eq!(got(prefix().max_mod_revision(4)), ["k/b", "k/c"]);
    assert_eq!(
        got(prefix().min_mod_revision(3).max_mod_revision(5)),
        ["k/a", "k/b"]
    );

    let limited = h.range(prefix().sort_by(SortBy::CreateRevision).limit(2));
    assert_eq!(keys(&limited.kvs), ["k/c", "k/a"]);
    assert!(limited.more);
    assert_eq!(
        limited.count, 2,
        "without count-only, the count is what came back"
    );
    let all = h.range(prefix().limit(4));
    assert!(!all.more, "exactly the limit is not more");

    let counted = h.range(prefix().min_create_revision(4).limit(1).keys_only());
    assert_eq!(counted.kvs[0].value, b"", "keys-only");
    assert_eq!(
        h.count(prefix().min_create_revision(4).limit(1)),
        2,
        "counts ignore the limit"
    );
    assert_eq!(h.count(prefix()), 4);
}

#[test]
fn etcd_range_conventions() {
    let mut h = Harness::new::<Scripted>("conventions");
    for key in ["a", "b", "c"] {
        h.put(key, "v");
    }
    let got = |h: &Harness, start: &str, end: &[u8]| keys(&h.range(Range::new(start, end)).kvs);
    assert_eq!(got(&h, "b", b""), ["b"], "empty end: the key alone");
    assert_eq!(
        got(&h, "b", store::ALL_FROM),
        ["b", "c"],
        "end \\0: every key from start"
    );
    assert_eq!(got(&h, "a", b"c"), ["a", "b"], "end excluded");
    assert!(got(&h, "c", b"a").is_empty(), "end before start: nothing");
    assert_eq!(store::prefix_end(b"a\xff"), b"b");
    assert_eq!(store::prefix_end(b"\xff\xff"), store::ALL_FROM);
}

#[test]
fn ranges_over_buffered_writes_merge_in_order() {
    let mut h = scripted(|_, _| {
        store::put("k/b", "new");
        store::delete("k/c");
        store::put("k/e", "new");
        let ascending = keys(&store::prefix("k/", 0, false));
        let descending = keys(&store::prefix("k/", 0, true));
        let newest = Range::prefix("k/")
            .sort_by(SortBy::CreateRevision)
            .descending()
            .first()
            .ok_or("no keys")?;
        let count = Range::prefix("k/").count();
        Reply::json(&(
            ascending,
            descending,
            text(&newest.key),
            newest.create_revision,
            count,
        ))
    });
    for key in ["k/a", "k/b", "k/c", "k/d"] {
        h.put(key, "old");
    }
    let run = h.call("f", "", 0);
    assert_eq!(
        run.json(),
        serde_json::json!([
            ["k/a", "k/b", "k/d", "k/e"],
            ["k/e", "k/d", "k/b", "k/a"],
            "k/e",
            6,
            4
        ])
    );
}

#[test]
fn ranges_stop_at_the_host_cap() {
    let mut h = Harness::new::<Scripted>("cap");
    let cap = baton_limits::GUEST_RANGE_KEYS_MAX;
    for i in 0..=cap {
        h.put(format!("k/{i:06}"), "");
    }
    let all = h.range(Range::prefix("k/"));
    assert_eq!((all.kvs.len(), all.more), (cap, true));
    let asked = h.range(Range::prefix("k/").limit(u32::MAX));
    assert_eq!(asked.kvs.len(), cap, "a larger limit is cut to the cap");
    // The newest key is found by a sort whatever the count, though key order would cut it.
    let newest = h.range(
        Range::prefix("k/")
            .sort_by(SortBy::CreateRevision)
            .descending()
            .limit(1),
    );
    assert_eq!(keys(&newest.kvs), [format!("k/{cap:06}")]);
    assert_eq!(
        h.keys("k/").len(),
        cap + 1,
        "the harness's own listing pages past the cap"
    );
}

#[test]
fn a_lease_ending_deletes_its_keys_in_one_revision() {
    let mut h = scripted(|function, input| {
        let lease: i64 = crate::from_json(input)?;
        match function {
            "attach" => {
                store::put_with_lease("l/1", "", lease);
                store::put_with_lease("l/2", "", lease);
                ok()
            }
            _ => Reply::json(&store::lease(lease).map(|l| (l.id, l.granted_ttl_s))),
        }
    });
    let revoked = h.grant_lease(30);
    let expiring = h.grant_lease(10);
    assert_ne!(revoked, expiring);
    let run = h.call("info", revoked.to_string(), 0);
    assert_eq!(run.json(), serde_json::json!([revoked, 30]));

    h.call("attach", revoked.to_string(), 0);
    h.put("plain", "");
    let before = h.revision();
    assert!(h.revoke(revoked));
    assert_eq!(h.revision(), before + 1, "both keys in one revision");
    assert_eq!(h.keys(""), ["plain"]);
    assert!(!h.revoke(revoked), "already gone");
    assert_eq!(
        h.call("info", revoked.to_string(), 0).json(),
        serde_json::Value::Null
    );
    let late = h.call("attach", revoked.to_string(), 0);
    assert_eq!(late.error(), Some(super::world::LEASE_NOT_FOUND));

    h.call("attach", expiring.to_string(), 0);
    h.advance_ms(9_999);
    assert_eq!(h.keys("l/").len(), 2, "not yet expired");
    assert!(h.keep_alive(expiring));
    h.advance_ms(9_999);
    assert_eq!(h.keys("l/").len(), 2, "renewed");
    let before = h.revision();
    h.advance_ms(1);
    assert!(h.keys("l/").is_empty() && !h.lease_exists(expiring));
    assert_eq!(h.revision(), before + 1);
}

#[test]
fn a_waiting_call_wakes_on_its_keys_leases_or_time() {
    let mut h = scripted(|function, input| {
        let lease: i64 = crate::from_json(input)?;
        store::put("w/marker", function);
        Ok(match function {
            "key" => Reply::wait_for().key("w/x").prefix("p/").into(),
            "lease" => Reply::wait_on_leases([lease]),
            _ => Reply::wait_until(START_MS + 1_000),
        })
    });
    let lease = h.grant_lease(60);
    let on_keys = h.call("key", "0", 0);
    assert_eq!(
        on_keys.wait().map(|w| w.keys.len()),
        Some(2),
        "the condition is recorded"
    );
    assert_eq!(
        h.get_str("w/marker").as_deref(),
        Some("key"),
        "a wait commits its writes"
    );
    let on_lease = h.call("lease", lease.to_string(), 0);
    let on_time = h.call("time", "0", 0);
    assert!(!h.woken(&on_keys) && !h.woken(&on_lease) && !h.woken(&on_time));

    h.put("w/y", "");
    h.put("w/marker", "");
    assert!(!h.woken(&on_keys), "other keys do not wake it");
    h.put("p/1", "");
    assert!(h.woken(&on_keys), "a key under the prefix does");
    let again = h.resume(&on_keys).expect("woken");
    assert!(
        again.is_waiting() && !h.woken(&again),
        "the re-run waits afresh"
    );
    h.delete("p/1");
    assert!(h.woken(&again), "a delete is a change too");

    h.advance_ms(999);
    assert!(!h.woken(&on_time));
    h.advance_ms(1);
    assert!(h.woken(&on_time));

    assert!(h.resume(&on_lease).is_none());
    h.revoke(lease);
    assert!(h.woken(&on_lease));
    assert_eq!(h.calls().len(), 4);
}

#[test]
fn abandon_commits_only_when_ok() {
    let mut h = scripted(|_, _| {
        store::put("waiter", "");
        Ok(Reply::wait_on([crate::KeyRange::key("never")]))
    });
    ABANDON.with(|b| {
        *b.borrow_mut() = Some(Box::new(|function: &str, _: &[u8]| {
            store::delete("waiter");
            if function == "stubborn" {
                Err("cannot clean up".into())
            } else {
                ok()
            }
        }))
    });
    h.call("wait", "", 0);
    assert_eq!(
        h.abandon("stubborn", "", 0),
        Err("cannot clean up".to_string())
    );
    assert!(
        h.get("waiter").is_some(),
        "a failed abandon commits nothing"
    );
    assert_eq!(h.abandon("wait", "", 0), Ok(()));
    assert!(h.get("waiter").is_none());
}

#[test]
#[should_panic(expected = "guest bug")]
fn a_guest_panic_fails_the_test() {
    let mut h = scripted(|_, _| panic!("guest bug"));
    h.call("f", "", 0);
}

#[test]
fn outcomes_compare() {
    let mut h = scripted(|_, _| Reply::json(&1));
    assert_eq!(h.call("f", "", 0).outcome, Outcome::Done(b"1".to_vec()));
}

#[test]
fn a_timed_wait_reruns_at_the_later_leader_time() {
    // "sleep": finishes once the leader's clock reached the deadline in its input.
    let mut h = scripted(|_, input| {
        let until: u64 = crate::from_json(input)?;
        if context::proposal_time_ms() >= until {
            return Reply::json(&context::proposal_time_ms());
        }
        Ok(Reply::wait_for().until_ms(until + 5).until_ms(until).into())
    });
    let deadline = START_MS + 500;
    let sleeping = h.call("sleep", deadline.to_string(), 0);
    assert_eq!(
        sleeping.wait().and_then(|w| w.until_ms),
        Some(deadline),
        "the earliest wins"
    );
    h.advance_ms(499);
    assert!(h.resume(&sleeping).is_none());
    h.advance_ms(1);
    let done = h.resume(&sleeping).expect("the deadline passed");
    assert_eq!(done.json(), deadline);
    assert_eq!(done.proposal_time_ms, deadline);
}

mod declared {
    use super::*;

    /// Runs "get" (reading) and "put" (writing); anything else is unknown.
    struct Kv;
    impl Module for Kv {
        fn invoke(function: &str, _: &[u8]) -> Result<Reply, String> {
            match function {
                "get" => Ok(Reply::done(store::get_value("k").unwrap_or_default())),
                "put" => {
                    store::put("k", "v");
                    Ok(Reply::done(""))
                }
                other => Err(format!("kv: unknown function {other:?}")),
            }
        }
    }

    const fn declared(name: &'static str, writes: bool) -> crate::Function {
        crate::Function {
            name,
            writes,
            waits: false,
            summary: "",
            input: "",
            input_example: "",
            output_example: "",
        }
    }

    #[test]
    fn a_true_declaration_passes() {
        Harness::check_declared::<Kv>(&[declared("get", false), declared("put", true)]);
    }

    #[test]
    #[should_panic(expected = "does not run it")]
    fn a_function_the_module_does_not_run_is_caught() {
        Harness::check_declared::<Kv>(&[declared("gte", false)]);
    }

    #[test]
    #[should_panic(expected = "declared as only reading but writes")]
    fn a_writer_declared_as_reading_is_caught() {
        Harness::check_declared::<Kv>(&[declared("put", false)]);
    }
}
