//! Per-invocation cost of a Baton module: fresh store + instantiate from the cached
//! `InstancePre` + call + drop, for the hostile module's trivial `ok` function and for the
//! counter's `add` of one key (JSON in and out, one get and one put). Run with
//! `cargo bench -p baton --bench wasm_invoke`; the target in issue 4 is <= 25 us per call.

use std::collections::BTreeMap;
use std::time::Instant;

use baton_limits::GUEST_FUEL_DEFAULT;
use baton_wasm::builtin::{BUILTIN_MODULES, HOSTILE_MODULE};
use baton_wasm::{
    CallContext, CallRequest, Entry, GuestStore, LeaseFacts, Outcome, Runtime, StoreFailure,
    StoredKv, Visit, module_hash,
};

/// Calls per measurement, after as many warm-up calls.
const CALLS: u32 = 20_000;

/// Keeps nothing: every call starts from an empty store.
struct EmptyStore(BTreeMap<Vec<u8>, Vec<u8>>);

impl GuestStore for EmptyStore {
    fn get(&mut self, _key: &[u8]) -> Result<Option<StoredKv>, StoreFailure> {
        Ok(None)
    }
    fn put(&mut self, key: &[u8], value: &[u8], _lease: i64) -> Result<(), StoreFailure> {
        self.0.insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    fn delete_range(&mut self, _start: &[u8], _end: &[u8]) -> Result<u64, StoreFailure> {
        Ok(0)
    }
    fn scan(
        &mut self,
        _start: &[u8],
        _end: &[u8],
        _reverse: bool,
        _visit: &mut Visit<'_>,
    ) -> Result<(), StoreFailure> {
        Ok(())
    }

    fn lease(&mut self, _id: i64) -> Result<Option<LeaseFacts>, StoreFailure> {
        Ok(None)
    }
}

fn measure(runtime: &Runtime, name: &str, bytes: &[u8], function: &str, input: &[u8]) {
    let request = CallRequest {
        entry: Entry::Invoke,
        function: function.to_string(),
        input: input.to_vec(),
        fuel: GUEST_FUEL_DEFAULT,
        context: CallContext {
            module_hash: module_hash(bytes),
            ..Default::default()
        },
    };
    let call = || {
        let store = Box::new(EmptyStore(BTreeMap::new()));
        let outcome = runtime.invoke(|| Ok(bytes.to_vec()), request.clone(), store);
        assert!(matches!(outcome, Ok(Outcome::Done { .. })), "{outcome:?}");
    };
    for _ in 0..CALLS {
        call();
    }
    let start = Instant::now();
    for _ in 0..CALLS {
        call();
    }
    let per_call_us = start.elapsed().as_secs_f64() * 1e6 / f64::from(CALLS);
    println!("{name}: {per_call_us:.1} us per instantiate + call + drop");
}

fn main() {
    let runtime = Runtime::new().expect("engine");
    measure(&runtime, "hostile ok", HOSTILE_MODULE, "ok", b"");
    let counter = BUILTIN_MODULES[0].1;
    measure(
        &runtime,
        "counter add 1 key",
        counter,
        "add",
        br#"{"keys":["c"],"by":1}"#,
    );
}
