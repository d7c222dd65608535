//! The runtime: one engine, one linker, compiled modules cached by content hash, and a fresh
//! instance (from a cached `InstancePre`) for every call.

use std::sync::Arc;

use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Engine, Store};

use crate::cache::HashCache;
use crate::host::{CallState, HostFuel, HostStop, MemoryCap, v01, v02};
use crate::outcome::{GuestFailure, Outcome, RuntimeFatal, WaitCondition, trap_code};
use crate::store::GuestStore;
use crate::validate::Validated;
use crate::{ModuleHash, engine};
use baton_limits::{GUEST_INPUT_BYTES_MAX, GUEST_MEMORY_BYTES_MAX, GUEST_OUTPUT_BYTES_MAX};

/// Facts about a call that the guest may read (see `wit/baton.wit`, interface `context`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallContext {
    pub log_index: u64,
    pub revision: i64,
    pub proposal_time_ms: u64,
    pub caller_lease: i64,
    /// Who made the call (contract 0.2's `caller`); empty until clients authenticate.
    pub caller: String,
    pub module_name: String,
    pub module_hash: ModuleHash,
}

/// Which export a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Entry {
    /// `invoke`: the call itself.
    #[default]
    Invoke,
    /// `abandon`: clean-up after a waiting call whose client left. A 0.1 guest has no such
    /// export and nothing to clean up: the run is `Done` with no output and touches nothing.
    Abandon,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRequest {
    pub entry: Entry,
    pub function: String,
    pub input: Vec<u8>,
    /// Fuel budget; the caller has already applied the default and the maximum.
    pub fuel: u64,
    pub context: CallContext,
}

/// Shared by the apply path and deploy-time validation; cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<CallState>>,
    /// Compiled modules (instantiation templates) by hash.
    pub(crate) compiled: HashCache<Pre>,
    /// Modules that passed deploy checks, by hash: the API's check before proposing and the
    /// apply of the same bytes on this member then compile only once (the checks' result is a
    /// function of the bytes).
    pub(crate) validated: HashCache<Validated>,
}

impl Runtime {
    pub fn new() -> anyhow::Result<Self> {
        let engine = engine::deterministic_engine()
            .map_err(|e| anyhow::anyhow!("creating the Wasm engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        v01::Module::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| state)
            .map_err(|e| anyhow::anyhow!("linking Baton's 0.1 imports: {e}"))?;
        v02::Module::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| state)
            .map_err(|e| anyhow::anyhow!("linking Baton's 0.2 imports: {e}"))?;
        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
            compiled: HashCache::default(),
            validated: HashCache::default(),
        })
    }

    /// Runs one call on a fresh instance. On a cache miss `load` returns the module's component
    /// bytes, which are compiled once per hash. The caller keeps its own handle on whatever
    /// `store` buffered, and commits it only for `Done` and `Wait`.
    pub fn invoke(
        &self,
        load: impl FnOnce() -> Result<Vec<u8>, RuntimeFatal>,
        call: CallRequest,
        store: Box<dyn GuestStore>,
    ) -> Result<Outcome, RuntimeFatal> {
        if call.input.len() > GUEST_INPUT_BYTES_MAX {
            let failure = GuestFailure::InputTooLarge {
                bytes: call.input.len(),
                bytes_max: GUEST_INPUT_BYTES_MAX,
            };
            return Ok(Outcome::Failed(failure));
        }
        let pre = self.pre(&call.context.module_hash, load)?;
        let state = CallState {
            store,
            context: call.context,
            limiter: MemoryCap {
                bytes_max: GUEST_MEMORY_BYTES_MAX,
                hit: false,
            },
            host_fuel: HostFuel {
                budget: call.fuel,
                used: 0,
            },
            stop: None,
            written_bytes: 0,
        };
        let mut wasm = Store::new(&self.engine, state);
        wasm.limiter(|state| &mut state.limiter);
        wasm.set_fuel(call.fuel)
            .map_err(|e| RuntimeFatal::Host(e.to_string()))?;
        let result = pre.run(&mut wasm, call.entry, &call.function, &call.input);
        let state_fuel = call.fuel - wasm.get_fuel().unwrap_or(0);
        let state = wasm.into_data();
        // One budget for both: a call whose instructions and host work together exceed it has
        // run out of fuel, even if neither alone did.
        let fuel_used = state_fuel.saturating_add(state.host_fuel.used);
        if fuel_used > call.fuel && state.stop.is_none() {
            let failure = GuestFailure::FuelExhausted { fuel: call.fuel };
            return Ok(Outcome::Failed(failure));
        }
        classify(result, &state, call.fuel, fuel_used)
    }

    /// The instantiation template of `hash`, compiling what `load` returns on a miss.
    fn pre(
        &self,
        hash: &ModuleHash,
        load: impl FnOnce() -> Result<Vec<u8>, RuntimeFatal>,
    ) -> Result<Pre, RuntimeFatal> {
        if let Some(pre) = self.compiled.get(hash) {
            return Ok(pre);
        }
        let bytes = load()?;
        let compile_failed = |reason: String| RuntimeFatal::Compile {
            hash: *hash,
            reason,
        };
        let component =
            Component::new(&self.engine, &bytes).map_err(|e| compile_failed(e.to_string()))?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(Pre::new)
            .map_err(|e| compile_failed(e.to_string()))?;
        self.compiled.insert(*hash, pre.clone());
        Ok(pre)
    }
}

/// A compiled module ready to instantiate, by the contract version it implements.
#[derive(Clone)]
pub(crate) enum Pre {
    V01(v01::ModulePre<CallState>),
    V02(v02::ModulePre<CallState>),
}

impl Pre {
    /// The template for whichever contract the component exports; the error names what is
    /// missing when it exports neither.
    pub(crate) fn new(pre: InstancePre<CallState>) -> wasmtime::Result<Pre> {
        match v02::ModulePre::new(pre.clone()) {
            Ok(v02) => Ok(Pre::V02(v02)),
            Err(e02) => match v01::ModulePre::new(pre) {
                Ok(v01) => Ok(Pre::V01(v01)),
                Err(_) => Err(e02),
            },
        }
    }

    /// Instantiates a fresh instance and runs `entry`. `Err` when instantiation failed, `Ok(Err)`
    /// when the call did.
    fn run(
        &self,
        wasm: &mut Store<CallState>,
        entry: Entry,
        function: &str,
        input: &[u8],
    ) -> Result<wasmtime::Result<HandlerResult>, wasmtime::Error> {
        match self {
            Pre::V01(pre) => {
                if entry == Entry::Abandon {
                    return Ok(Ok(Ok(Reply::Done(Vec::new()))));
                }
                let module = pre.instantiate(&mut *wasm)?;
                let handler = module.baton_module_handler();
                Ok(handler
                    .call_invoke(&mut *wasm, function, input)
                    .map(|r| r.map(Reply::from_v01)))
            }
            Pre::V02(pre) => {
                let module = pre.instantiate(&mut *wasm)?;
                let handler = module.baton_module_handler();
                Ok(match entry {
                    Entry::Invoke => handler
                        .call_invoke(&mut *wasm, function, input)
                        .map(|r| r.map(Reply::from_v02)),
                    Entry::Abandon => handler
                        .call_abandon(&mut *wasm, function, input)
                        .map(|r| r.map(|()| Reply::Done(Vec::new()))),
                })
            }
        }
    }
}

/// A handler's reply, whichever contract version produced it.
enum Reply {
    Done(Vec<u8>),
    Wait(WaitCondition),
}

impl Reply {
    fn from_v01(reply: v01::exports::baton::module::handler::Reply) -> Reply {
        use v01::exports::baton::module::handler::Reply as R;
        match reply {
            R::Done(output) => Reply::Done(output),
            R::Wait(w) => Reply::Wait(WaitCondition {
                keys: w.keys.into_iter().map(|r| (r.start, r.end)).collect(),
                leases: w.leases,
                until_ms: None,
            }),
        }
    }

    fn from_v02(reply: v02::exports::baton::module::handler::Reply) -> Reply {
        use v02::exports::baton::module::handler::Reply as R;
        match reply {
            R::Done(output) => Reply::Done(output),
            R::Wait(w) => Reply::Wait(WaitCondition {
                keys: w.keys.into_iter().map(|r| (r.start, r.end)).collect(),
                leases: w.leases,
                until_ms: w.until_ms,
            }),
        }
    }
}

type HandlerResult = Result<Reply, String>;

/// Turns what the engine returned into deterministic data, or a fatal error when the failure
/// is the host's own. `result` is `Err` when instantiation failed, `Ok(Err)` when the call did.
fn classify(
    result: Result<wasmtime::Result<HandlerResult>, wasmtime::Error>,
    state: &CallState,
    fuel: u64,
    fuel_used: u64,
) -> Result<Outcome, RuntimeFatal> {
    match &state.stop {
        Some(HostStop::Fatal(m)) => return Err(RuntimeFatal::Storage(m.clone())),
        Some(HostStop::Refused(m)) => return Ok(Outcome::Failed(GuestFailure::Refused(m.clone()))),
        Some(HostStop::WriteLimit(m)) => {
            return Ok(Outcome::Failed(GuestFailure::WriteLimit(m.clone())));
        }
        Some(HostStop::OutOfFuel) => {
            return Ok(Outcome::Failed(GuestFailure::FuelExhausted { fuel }));
        }
        None => {}
    }
    let (error, instantiating) = match result {
        Ok(Ok(Ok(reply))) => {
            return Ok(match reply {
                Reply::Done(output) if output.len() > GUEST_OUTPUT_BYTES_MAX => {
                    Outcome::Failed(GuestFailure::OutputTooLarge {
                        bytes: output.len(),
                        bytes_max: GUEST_OUTPUT_BYTES_MAX,
                    })
                }
                Reply::Done(output) => Outcome::Done { output, fuel_used },
                Reply::Wait(condition) => Outcome::Wait {
                    condition,
                    fuel_used,
                },
            });
        }
        Ok(Ok(Err(message))) => {
            return Ok(Outcome::Failed(GuestFailure::GuestError(message)));
        }
        Ok(Err(e)) => (e, false),
        Err(e) => (e, true),
    };
    if error.is::<wasmtime::OutOfMemory>() {
        return Err(RuntimeFatal::Host(error.to_string()));
    }
    let failure = match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::OutOfFuel) => GuestFailure::FuelExhausted { fuel },
        _ if state.limiter.hit => GuestFailure::MemoryCap {
            bytes_max: state.limiter.bytes_max,
        },
        Some(trap) => GuestFailure::Trapped {
            code: trap_code(*trap),
        },
        // Instantiating a validated module fails only when the host is short of resources.
        None if instantiating => return Err(RuntimeFatal::Host(error.to_string())),
        // The canonical ABI refused what the guest passed (a bad string, an invalid variant):
        // a property of the guest, the same on every replica.
        None => GuestFailure::Trapped {
            code: "invalid value across the component boundary".to_string(),
        },
    };
    Ok(Outcome::Failed(failure))
}
