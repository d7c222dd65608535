//! Runtime tests over an in-memory store: the example guests, hostile guests, and deploy checks.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::builtin::{BUILTIN_MODULES, HOSTILE_MODULE};
use crate::*;

type Map = Rc<RefCell<BTreeMap<Vec<u8>, Vec<u8>>>>;

/// Keys and values only; every write gets revision 2.
struct MapStore(Map);

fn kv(key: &[u8], value: &[u8]) -> StoredKv {
    StoredKv {
        key: key.to_vec(),
        value: value.to_vec(),
        create_revision: 2,
        mod_revision: 2,
        version: 1,
        lease: 0,
    }
}

impl GuestStore for MapStore {
    fn get(&mut self, key: &[u8]) -> Result<Option<StoredKv>, StoreFailure> {
        Ok(self.0.borrow().get(key).map(|v| kv(key, v)))
    }
    fn put(&mut self, key: &[u8], value: &[u8], lease: i64) -> Result<(), StoreFailure> {
        if lease != 0 {
            return Err(StoreFailure::Refused("lease not found".into()));
        }
        self.0.borrow_mut().insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    fn delete_range(&mut self, start: &[u8], end: &[u8]) -> Result<u64, StoreFailure> {
        assert!(end.is_empty(), "the test store deletes single keys only");
        Ok(u64::from(self.0.borrow_mut().remove(start).is_some()))
    }
    fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        visit: &mut Visit<'_>,
    ) -> Result<(), StoreFailure> {
        let map = self.0.borrow();
        let found = map.range(start.to_vec()..end.to_vec());
        let found: Box<dyn Iterator<Item = _>> = if reverse {
            Box::new(found.rev())
        } else {
            Box::new(found)
        };
        for (k, v) in found {
            if visit(kv(k, v)).is_break() {
                break;
            }
        }
        Ok(())
    }
    fn lease(&mut self, _id: i64) -> Result<Option<LeaseFacts>, StoreFailure> {
        Ok(None)
    }
}

fn builtin(name: &str) -> &'static [u8] {
    BUILTIN_MODULES.iter().find(|(n, _)| *n == name).unwrap().1
}

fn call(rt: &Runtime, bytes: &[u8], function: &str, input: &[u8], fuel: u64, map: &Map) -> Outcome {
    let request = CallRequest {
        entry: Entry::Invoke,
        function: function.to_string(),
        input: input.to_vec(),
        fuel,
        context: CallContext {
            module_hash: module_hash(bytes),
            ..Default::default()
        },
    };
    let load = || Ok(bytes.to_vec());
    rt.invoke(load, request, Box::new(MapStore(map.clone())))
        .unwrap()
}

fn output(outcome: Outcome) -> String {
    match outcome {
        Outcome::Done { output, .. } => String::from_utf8(output).unwrap(),
        other => panic!("expected Done, got {other:?}"),
    }
}

const FUEL: u64 = baton_limits::GUEST_FUEL_DEFAULT;

#[test]
fn counter_adds_to_every_key_and_stores_decimal_strings() {
    let rt = Runtime::new().unwrap();
    let map = Map::default();
    let counter = builtin("counter");
    let input = br#"{"keys":["c1","c2"],"by":2}"#;
    assert_eq!(
        output(call(&rt, counter, "add", input, FUEL, &map)),
        r#"{"c1":2,"c2":2}"#
    );
    let input = br#"{"keys":["c2"],"by":-5}"#;
    assert_eq!(
        output(call(&rt, counter, "add", input, FUEL, &map)),
        r#"{"c2":-3}"#
    );
    assert_eq!(map.borrow().get(&b"c1"[..]).unwrap(), b"2");
    assert_eq!(map.borrow().get(&b"c2"[..]).unwrap(), b"-3");
}

#[test]
fn compare_and_move_moves_only_when_the_condition_holds() {
    let rt = Runtime::new().unwrap();
    let map = Map::default();
    let cam = builtin("compare-and-move");
    map.borrow_mut()
        .insert(b"queue/j1".to_vec(), b"job".to_vec());
    let wrong = br#"{"from":"queue/j1","to":"running/j1","expect":"other"}"#;
    let refused = output(call(&rt, cam, "move", wrong, FUEL, &map));
    assert!(refused.contains(r#""moved":false"#), "{refused}");
    assert!(map.borrow().contains_key(&b"queue/j1"[..]));
    let right = br#"{"from":"queue/j1","to":"running/j1","expect":"job"}"#;
    assert_eq!(
        output(call(&rt, cam, "move", right, FUEL, &map)),
        r#"{"moved":true}"#
    );
    assert!(!map.borrow().contains_key(&b"queue/j1"[..]));
    assert_eq!(map.borrow().get(&b"running/j1"[..]).unwrap(), b"job");
}

#[test]
fn identical_calls_use_identical_fuel() {
    let rt = Runtime::new().unwrap();
    let input = br#"{"keys":["a","b","c"],"by":7}"#;
    let first = call(&rt, builtin("counter"), "add", input, FUEL, &Map::default());
    // A second runtime compiles the module afresh: the outcome must not depend on the cache.
    let other = Runtime::new().unwrap();
    let second = call(
        &other,
        builtin("counter"),
        "add",
        input,
        FUEL,
        &Map::default(),
    );
    assert_eq!(first, second);
    assert!(matches!(first, Outcome::Done { fuel_used, .. } if fuel_used > 0));
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    let rt = Runtime::new().unwrap();
    let outcome = call(&rt, HOSTILE_MODULE, "spin", b"x", 100_000, &Map::default());
    assert_eq!(
        outcome,
        Outcome::Failed(GuestFailure::FuelExhausted { fuel: 100_000 })
    );
    assert_eq!(
        GuestFailure::FuelExhausted { fuel: 100_000 }.to_string(),
        "fuel exhausted after 100000 units"
    );
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    let rt = Runtime::new().unwrap();
    let outcome = call(
        &rt,
        HOSTILE_MODULE,
        "hoard",
        b"x",
        FUEL * 10,
        &Map::default(),
    );
    let bytes_max = baton_limits::GUEST_MEMORY_BYTES_MAX;
    assert_eq!(
        outcome,
        Outcome::Failed(GuestFailure::MemoryCap { bytes_max })
    );
}

fn flood(count: u64, size: usize) -> Vec<u8> {
    let mut input = count.to_le_bytes().to_vec();
    input.extend_from_slice(&(size as u64).to_le_bytes());
    input
}

/// R05: fuel alone let one run write ~1 GB; a put past an etcd request, or a run's puts past
/// their sum bound, now fail the call (RESOURCE_EXHAUSTED at the API) and commit nothing.
#[test]
fn writes_past_the_put_and_run_bounds_fail_the_call() {
    use baton_limits::{GUEST_FUEL_MAX, GUEST_PUT_BYTES_MAX, GUEST_RUN_WRITE_BYTES_MAX};
    let rt = Runtime::new().unwrap();
    let map = Map::default();
    let value = GUEST_PUT_BYTES_MAX - 64;
    let within = (GUEST_RUN_WRITE_BYTES_MAX / GUEST_PUT_BYTES_MAX) as u64 - 1;
    let ok = call(
        &rt,
        HOSTILE_MODULE,
        "flood",
        &flood(within, value),
        GUEST_FUEL_MAX,
        &map,
    );
    assert_eq!(output(ok), "flooded");

    let big = call(
        &rt,
        HOSTILE_MODULE,
        "flood",
        &flood(1, GUEST_PUT_BYTES_MAX + 1),
        GUEST_FUEL_MAX,
        &map,
    );
    let Outcome::Failed(GuestFailure::WriteLimit(message)) = big else {
        panic!("an oversized put answered {big:?}");
    };
    assert!(message.contains("exceeds the limit"), "{message}");

    let many = within + 2;
    let flooded = call(
        &rt,
        HOSTILE_MODULE,
        "flood",
        &flood(many, value),
        GUEST_FUEL_MAX,
        &map,
    );
    let Outcome::Failed(GuestFailure::WriteLimit(message)) = flooded else {
        panic!("a run writing past its bound answered {flooded:?}");
    };
    assert!(message.contains("in one run"), "{message}");
}

#[test]
fn traps_and_guest_errors_are_reported_as_data() {
    let rt = Runtime::new().unwrap();
    let map = Map::default();
    let trapped = call(&rt, HOSTILE_MODULE, "trap", b"x", FUEL, &map);
    let code = "unreachable".to_string();
    assert_eq!(trapped, Outcome::Failed(GuestFailure::Trapped { code }));
    let recursed = call(&rt, HOSTILE_MODULE, "recurse", b"x", FUEL * 10, &map);
    let code = "stack overflow".to_string();
    assert_eq!(recursed, Outcome::Failed(GuestFailure::Trapped { code }));
    let failed = call(&rt, HOSTILE_MODULE, "fail", b"x", FUEL, &map);
    let message = "hostile: refused on purpose".to_string();
    assert_eq!(failed, Outcome::Failed(GuestFailure::GuestError(message)));
    // The engine is still usable after all of that.
    assert_eq!(
        output(call(&rt, HOSTILE_MODULE, "ok", b"x", FUEL, &map)),
        "ok"
    );
}

#[test]
fn builtins_validate_and_export_the_handler() {
    let rt = Runtime::new().unwrap();
    for (name, bytes) in BUILTIN_MODULES {
        let validated = rt.validate(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(validated.hash, module_hash(bytes));
        assert_eq!(validated.exports, ["baton:module/handler@0.2.0"]);
    }
}

#[test]
fn wasi_and_unknown_imports_are_rejected_by_name() {
    let rt = Runtime::new().unwrap();
    for import in ["wasi:random/random@0.2.3", "evil:net/socket"] {
        let text = format!(r#"(component (import "{import}" (instance)))"#);
        let bytes = wat::parse_str(&text).unwrap();
        let err = rt.validate(&bytes).unwrap_err();
        assert_eq!(err, DeployError::ForbiddenImport(import.to_string()));
        assert!(err.to_string().contains(import), "{err}");
    }
}

#[test]
fn oversized_garbage_and_exportless_modules_are_rejected() {
    let rt = Runtime::new().unwrap();
    let huge = vec![0u8; baton_limits::MODULE_BYTES_MAX + 1];
    assert!(matches!(
        rt.validate(&huge),
        Err(DeployError::TooLarge { .. })
    ));
    assert!(matches!(
        rt.validate(b"not wasm"),
        Err(DeployError::Invalid(_))
    ));
    let empty = wat::parse_str("(component)").unwrap();
    assert!(matches!(
        rt.validate(&empty),
        Err(DeployError::WrongExports(_))
    ));
}

fn fuel_used(outcome: &Outcome) -> u64 {
    match outcome {
        Outcome::Done { fuel_used, .. } | Outcome::Wait { fuel_used, .. } => *fuel_used,
        other => panic!("expected a finished call, got {other:?}"),
    }
}

#[test]
fn host_calls_are_charged_to_the_calls_fuel() {
    use baton_limits::GUEST_HOST_CALL_FUEL;
    let rt = Runtime::new().unwrap();
    let counter = builtin("counter");
    let one = call(
        &rt,
        counter,
        "add",
        br#"{"keys":["a"],"by":1}"#,
        FUEL,
        &Map::default(),
    );
    let keys: Vec<String> = (0..11).map(|i| format!("\"k{i}\"")).collect();
    let input = format!(r#"{{"keys":[{}],"by":1}}"#, keys.join(","));
    let eleven = call(&rt, counter, "add", input.as_bytes(), FUEL, &Map::default());
    // Ten more keys: ten more gets and ten more puts, each at least the base charge.
    assert!(fuel_used(&eleven) - fuel_used(&one) >= 20 * GUEST_HOST_CALL_FUEL);
    // A budget the guest's instructions fit in but its host calls do not runs out of fuel.
    let tight = fuel_used(&one) - GUEST_HOST_CALL_FUEL;
    let starved = call(
        &rt,
        counter,
        "add",
        br#"{"keys":["a"],"by":1}"#,
        tight,
        &Map::default(),
    );
    assert_eq!(
        starved,
        Outcome::Failed(GuestFailure::FuelExhausted { fuel: tight })
    );
}

#[test]
fn queue_pop_waits_on_its_prefix_when_empty() {
    let rt = Runtime::new().unwrap();
    let map = Map::default();
    let queue = builtin("queue");
    let pop = br#"{"queue":"jobs"}"#;
    match call(&rt, queue, "pop", pop, FUEL, &map) {
        Outcome::Wait { condition, .. } => {
            // Its items, and its bookkeeping (delayed items, reservations).
            let keys = [("jobs/", "jobs0"), ("__jobs/", "__jobs0")];
            let keys: Vec<_> = keys
                .iter()
                .map(|(start, end)| (start.as_bytes().to_vec(), end.as_bytes().to_vec()))
                .collect();
            assert_eq!(condition.keys, keys);
            assert!(condition.leases.is_empty());
        }
        other => panic!("expected Wait, got {other:?}"),
    }
    let push = br#"{"queue":"jobs","value":"a"}"#;
    let pushed = output(call(&rt, queue, "push", push, FUEL, &map));
    assert!(pushed.contains(r#""value":"a""#), "{pushed}");
    let popped = output(call(&rt, queue, "pop", pop, FUEL, &map));
    assert_eq!(popped, pushed);
    assert!(map.borrow().is_empty());
}

/// The counter as built against contract 0.1 by an earlier Baton (`fixtures/`).
const COUNTER_V01: &[u8] = include_bytes!("../fixtures/counter-v0.1.wasm");

#[test]
fn a_guest_built_against_contract_0_1_validates_and_runs_unchanged() {
    let rt = Runtime::new().unwrap();
    let validated = rt.validate(COUNTER_V01).unwrap();
    assert!(
        validated
            .exports
            .iter()
            .any(|e| e == "baton:module/handler@0.1.0"),
        "{:?}",
        validated.exports
    );
    let map = Map::default();
    let input = br#"{"keys":["c"],"by":3}"#;
    assert_eq!(
        output(call(&rt, COUNTER_V01, "add", input, FUEL, &map)),
        r#"{"c":3}"#
    );
    // A 0.1 guest has no `abandon`: the host answers for it, touching nothing.
    let request = CallRequest {
        entry: Entry::Abandon,
        function: "add".into(),
        input: input.to_vec(),
        fuel: FUEL,
        context: CallContext {
            module_hash: module_hash(COUNTER_V01),
            ..Default::default()
        },
    };
    let load = || Ok(COUNTER_V01.to_vec());
    let abandoned = rt.invoke(load, request, Box::new(MapStore(map.clone())));
    assert_eq!(output(abandoned.unwrap()), "");
    assert_eq!(map.borrow().get(&b"c"[..]).unwrap(), b"3");
}
