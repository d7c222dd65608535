//! Module commands applied the way the state machine applies them: in a shared write
//! transaction, committed afterwards. Checks atomicity (all of a call's writes or none) and that
//! two replicas applying the same commands end byte-identical.

use std::sync::{Arc, OnceLock};

use rand::{Rng, SeedableRng};
use redb::{Durability, ReadableDatabase};

use crate::sm::command::{CommandOutcome, apply_command};
use baton_proto::batonpb::{
    LogCommand, LogReply, ModuleDelete, ModuleDeploy, ModuleInvoke, log_command::Op, log_reply,
};
use baton_proto::mvccpb::event::EventType;
use baton_store::storage::snapshot::write_snapshot;
use baton_store::testing::{TestStore, put_req, range_req};
use baton_wasm::Runtime;
use baton_wasm::builtin::{BUILTIN_MODULES, HOSTILE_MODULE};

/// One runtime for every test: compiled modules are cached by hash across tests.
pub(crate) fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new().unwrap())
}

pub(super) fn builtin(name: &str) -> &'static [u8] {
    BUILTIN_MODULES.iter().find(|(n, _)| *n == name).unwrap().1
}

/// Applies `ops` in one write transaction (one batch), then commits.
pub(super) fn apply_batch(
    store: &TestStore,
    first_index: u64,
    ops: Vec<Op>,
) -> Vec<CommandOutcome> {
    let mut txn = store.db.begin_write().unwrap();
    txn.set_durability(Durability::None).unwrap();
    let txn = Arc::new(txn);
    let mut outcomes = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        let cmd = LogCommand {
            leader_time_ms: 1_700_000_000_000,
            op: Some(op),
        };
        let index = first_index + i as u64;
        outcomes.push(apply_command(&txn, &store.index, &cmd, runtime(), index, None).unwrap());
    }
    Arc::into_inner(txn).unwrap().commit().unwrap();
    outcomes
}

pub(super) fn deploy(name: &str, component: &[u8]) -> Op {
    Op::ModuleDeploy(ModuleDeploy {
        name: name.to_string(),
        component: component.to_vec(),
        builtin_set: 0,
    })
}

pub(super) fn invoke(name: &str, function: &str, input: &str, fuel: u64) -> Op {
    Op::ModuleInvoke(ModuleInvoke {
        name: name.to_string(),
        function: function.to_string(),
        input: input.as_bytes().to_vec(),
        fuel,
        ..Default::default()
    })
}

pub(super) fn refused(outcome: &CommandOutcome) -> Option<(i32, String)> {
    refusal_of(&outcome.reply)
}

/// The code and message of a refusal reply; None for any other reply.
pub(super) fn refusal_of(reply: &LogReply) -> Option<(i32, String)> {
    match &reply.result {
        Some(log_reply::Result::Refused(r)) => Some((r.code, r.message.clone())),
        _ => None,
    }
}

/// The store's whole state as its snapshot bytes, for comparing replicas.
pub(super) fn snapshot(store: &TestStore) -> Vec<u8> {
    let mut bytes = Vec::new();
    write_snapshot(&store.db.begin_read().unwrap(), &mut bytes).unwrap();
    bytes
}

fn value(store: &TestStore, key: &str) -> Option<Vec<u8>> {
    let found = store.range(&range_req(key, "")).unwrap();
    found.kvs.first().map(|kv| kv.value.clone())
}

pub(super) const FUEL: u64 = baton_limits::GUEST_FUEL_DEFAULT;

#[test]
fn a_call_commits_all_its_writes_as_one_revision_with_events() {
    let store = TestStore::new();
    let out = apply_batch(&store, 1, vec![deploy("counter", builtin("counter"))]);
    assert!(refused(&out[0]).is_none(), "{:?}", out[0].reply);
    let before = store.rev();
    // Same batch: the call must see the put that precedes it.
    let ops = vec![
        Op::Put(put_req("c1", "40")),
        invoke("counter", "add", r#"{"keys":["c1","c2"],"by":2}"#, FUEL),
    ];
    let out = apply_batch(&store, 2, ops);
    let Some(log_reply::Result::ModuleInvoked(reply)) = &out[1].reply.result else {
        panic!("{:?}", out[1].reply);
    };
    assert_eq!(reply.output, br#"{"c1":42,"c2":2}"#);
    assert_eq!(reply.revision, before + 2);
    assert!(reply.fuel_used > 0 && reply.fuel_used < FUEL);
    let events = &out[1].events;
    assert_eq!(events.len(), 2);
    for event in events {
        assert_eq!(event.r#type, EventType::Put as i32);
        assert_eq!(event.kv.as_ref().unwrap().mod_revision, before + 2);
    }
    assert_eq!(value(&store, "c1").unwrap(), b"42");
    assert_eq!(value(&store, "c2").unwrap(), b"2");
}

#[test]
fn failed_calls_commit_nothing() {
    let store = TestStore::new();
    apply_batch(&store, 1, vec![deploy("hostile", HOSTILE_MODULE)]);
    let before = store.rev();
    let ops = vec![
        invoke("hostile", "trap", "t", FUEL),
        invoke("hostile", "spin", "s", 50_000),
        invoke("hostile", "hoard", "h", FUEL * 10),
        invoke("hostile", "fail", "f", FUEL),
        invoke("nobody", "add", "{}", FUEL),
    ];
    let out = apply_batch(&store, 2, ops);
    let codes: Vec<_> = out.iter().map(|o| refused(o).unwrap()).collect();
    let failed_precondition = crate::refusal::Code::FailedPrecondition as i32;
    let exhausted = crate::refusal::Code::ResourceExhausted as i32;
    assert_eq!(
        codes[0],
        (failed_precondition, "guest trapped: unreachable".into())
    );
    assert_eq!(
        codes[1],
        (exhausted, "fuel exhausted after 50000 units".into())
    );
    assert_eq!(codes[2].0, exhausted);
    assert_eq!(
        codes[3],
        (failed_precondition, "hostile: refused on purpose".into())
    );
    assert_eq!(
        codes[4],
        (
            crate::refusal::Code::NotFound as i32,
            "module not found: nobody".into()
        )
    );
    assert!(out.iter().all(|o| o.events.is_empty()));
    assert_eq!(store.rev(), before);
    assert_eq!(value(&store, "hostile/touched"), None);
}

#[test]
fn compare_and_move_deletes_and_puts_in_one_revision() {
    let store = TestStore::new();
    apply_batch(&store, 1, vec![deploy("cam", builtin("compare-and-move"))]);
    store
        .apply(baton_store::ops::kv::KvRequest::Put(put_req("q/1", "job")))
        .unwrap();
    let input = r#"{"from":"q/1","to":"r/1","expect":"job"}"#;
    let out = apply_batch(&store, 3, vec![invoke("cam", "move", input, FUEL)]);
    let kinds: Vec<_> = out[0].events.iter().map(|e| e.r#type).collect();
    assert_eq!(kinds, [EventType::Delete as i32, EventType::Put as i32]);
    assert_eq!(value(&store, "q/1"), None);
    assert_eq!(value(&store, "r/1").unwrap(), b"job");
}

#[test]
fn redeploys_add_versions_and_deletes_keep_code_callable_by_hash() {
    let store = TestStore::new();
    let ops = vec![
        deploy("m", builtin("counter")),
        deploy("m", builtin("counter")),
        deploy("m", HOSTILE_MODULE),
        Op::ModuleDelete(ModuleDelete { name: "m".into() }),
        Op::ModuleDelete(ModuleDelete { name: "m".into() }),
    ];
    let out = apply_batch(&store, 1, ops);
    let version = |o: &CommandOutcome| match &o.reply.result {
        Some(log_reply::Result::ModuleDeployed(d)) => d.version,
        other => panic!("{other:?}"),
    };
    // The same bytes again are no new version.
    assert_eq!(
        [version(&out[0]), version(&out[1]), version(&out[2])],
        [1, 1, 2]
    );
    assert!(
        matches!(&out[3].reply.result, Some(log_reply::Result::ModuleDeleted(d)) if d.versions == 2)
    );
    assert_eq!(
        refused(&out[4]).unwrap().0,
        crate::refusal::Code::NotFound as i32
    );
    let by_hash = Op::ModuleInvoke(ModuleInvoke {
        hash: baton_wasm::module_hash(builtin("counter")).to_vec(),
        function: "add".into(),
        input: br#"{"keys":["k"],"by":1}"#.to_vec(),
        fuel: FUEL,
        ..Default::default()
    });
    let out = apply_batch(&store, 6, vec![by_hash]);
    assert!(refused(&out[0]).is_none(), "{:?}", out[0].reply);
    assert_eq!(value(&store, "k").unwrap(), b"1");
}

#[test]
fn invalid_deploys_are_refused_identically() {
    let store = TestStore::new();
    let out = apply_batch(
        &store,
        1,
        vec![deploy("junk", b"junk"), deploy("", HOSTILE_MODULE)],
    );
    assert!(
        out.iter()
            .all(|o| refused(o).unwrap().0 == crate::refusal::Code::InvalidArgument as i32)
    );
}

/// Two replicas apply the same random mix of calls (some trapping, some out of fuel, some over
/// the memory cap) and plain puts, in differently sized batches: their snapshots must be equal.
#[test]
fn replicas_applying_the_same_commands_end_byte_identical() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let mut ops = vec![
        deploy("counter", builtin("counter")),
        deploy("hostile", HOSTILE_MODULE),
    ];
    for i in 0..200 {
        let key = format!("k{}", rng.random_range(0..8));
        ops.push(match rng.random_range(0..6) {
            0 => Op::Put(put_req(&key, &format!("{i}"))),
            1 => invoke("hostile", "trap", &key, FUEL),
            2 => invoke("hostile", "spin", &key, rng.random_range(1_000..20_000)),
            3 => invoke("hostile", "ok", &key, FUEL),
            _ => invoke(
                "counter",
                "add",
                &format!(r#"{{"keys":["{key}","total"],"by":{i}}}"#),
                FUEL,
            ),
        });
    }
    let (a, b) = (TestStore::new(), TestStore::new());
    apply_batch(&a, 1, ops.clone());
    let mut index = 1;
    for chunk in ops.chunks(7) {
        apply_batch(&b, index, chunk.to_vec());
        index += chunk.len() as u64;
    }
    assert_eq!(snapshot(&a), snapshot(&b));
    assert!(
        a.rev() > 50,
        "most calls should have written: revision {}",
        a.rev()
    );
}
