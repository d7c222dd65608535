//! Applying module commands: deploy (store a validated component as a name's next version,
//! unless [`builtin::plan`] keeps the name as it is), delete (drop a name), invoke (run a
//! guest; commit its buffered writes as one revision, or nothing). Deterministic: validation,
//! fuel and memory caps depend only on the command and the state; a failure the host cannot
//! attribute to the call is an [`ApplyFatal`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use prost::Message;
use redb::{ReadableTable, WriteTransaction};

use crate::refusal::{Code, Refusal};
use crate::sm::builtin::{self, DeployPlan};
use crate::sm::command::ApplyFatal;
use crate::sm::guest_store::{BufferedWrites, TxnGuestStore};
use baton_limits::{GUEST_FUEL_MAX, GUEST_WAIT_CONDITIONS_MAX, MODULE_NAME_BYTES_MAX};
use baton_proto::batonpb::{
    DeployEffect, ModuleDelete, ModuleDeleted, ModuleDeploy, ModuleDeployed, ModuleInvoke,
    ModuleInvoked, ModuleKeyRange, ModuleOrigin, ModuleRecord, ModuleVersion, ModuleWait,
    log_reply,
};
use baton_proto::mvccpb::Event;
use baton_store::mvcc::key_range::KeyRange;
use baton_store::ops::shared_write::SharedWriteCtx;
use baton_store::storage::schema::{META, MODULE_CODE, MODULES};
use baton_wasm::{
    CallContext, CallRequest, Entry, ModuleHash, Outcome, Runtime, RuntimeFatal, WaitCondition,
    hash_hex, module_hash,
};

/// What applying a module command needs besides the transaction.
pub(crate) struct ModuleEnv<'a> {
    pub(crate) runtime: &'a Runtime,
    pub(crate) log_index: u64,
    pub(crate) leader_time_ms: u64,
}

/// A module command's result: a reply with the events it caused, or a deterministic refusal.
pub(crate) enum ModuleApplied {
    Reply(log_reply::Result, Vec<Event>),
    Refused(Refusal),
}

fn fatal(e: impl std::fmt::Display) -> ApplyFatal {
    ApplyFatal(e.to_string())
}

fn fatal_runtime(e: impl std::fmt::Display) -> RuntimeFatal {
    RuntimeFatal::Storage(e.to_string())
}

/// Why a module name is unacceptable, if it is.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MODULE_NAME_BYTES_MAX {
        return Err(format!(
            "module name must be 1 to {MODULE_NAME_BYTES_MAX} bytes"
        ));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("module name must not contain whitespace or control characters".into());
    }
    Ok(())
}

pub(crate) fn deploy(
    txn: &WriteTransaction,
    env: &ModuleEnv<'_>,
    d: &ModuleDeploy,
) -> Result<ModuleApplied, ApplyFatal> {
    if let Err(message) = check_name(&d.name) {
        return Ok(ModuleApplied::Refused(Refusal::new(
            Code::InvalidArgument,
            message,
        )));
    }
    let mut names = txn.open_table(MODULES).map_err(fatal)?;
    let mut record = match names.get(d.name.as_str()).map_err(fatal)? {
        Some(v) => ModuleRecord::decode(v.value()).map_err(fatal)?,
        None => ModuleRecord::default(),
    };
    // Decided before validating: bytes that are kept out (the same bytes passed when first
    // stored; a refused built-in does not matter) need not hold up the apply path compiling.
    let hash = module_hash(&d.component);
    let deleted_builtin = d.builtin_set > 0
        && record.versions.is_empty()
        && builtin::deleted_builtin(&txn.open_table(META).map_err(fatal)?, &d.name)?;
    if let DeployPlan::Keep(effect) = builtin::plan(&record, deleted_builtin, &hash, d.builtin_set)
    {
        let latest = record.versions.last();
        let reply = ModuleDeployed {
            hash: latest.map(|v| v.hash.clone()).unwrap_or_default(),
            version: latest.map_or(0, |v| v.version),
            effect: effect as i32,
        };
        return Ok(ModuleApplied::Reply(
            log_reply::Result::ModuleDeployed(reply),
            Vec::new(),
        ));
    }
    let validated = match env.runtime.validate_hashed(&d.component, hash) {
        Ok(v) => v,
        Err(e) => {
            return Ok(ModuleApplied::Refused(Refusal::new(
                Code::InvalidArgument,
                e.to_string(),
            )));
        }
    };
    let version = record.versions.last().map_or(0, |v| v.version) + 1;
    record.versions.push(ModuleVersion {
        version,
        hash: validated.hash.to_vec(),
        size_bytes: d.component.len() as u64,
        exports: validated.exports,
        deployed_index: env.log_index,
        origin: if d.builtin_set > 0 {
            ModuleOrigin::Builtin
        } else {
            ModuleOrigin::User
        } as i32,
        builtin_set: d.builtin_set,
    });
    names
        .insert(d.name.as_str(), record.encode_to_vec().as_slice())
        .map_err(fatal)?;
    let mut code = txn.open_table(MODULE_CODE).map_err(fatal)?;
    code.insert(validated.hash.as_slice(), d.component.as_slice())
        .map_err(fatal)?;
    let reply = ModuleDeployed {
        hash: validated.hash.to_vec(),
        version,
        effect: DeployEffect::DeployStored as i32,
    };
    Ok(ModuleApplied::Reply(
        log_reply::Result::ModuleDeployed(reply),
        Vec::new(),
    ))
}

pub(crate) fn delete(
    txn: &WriteTransaction,
    d: &ModuleDelete,
) -> Result<ModuleApplied, ApplyFatal> {
    let mut names = txn.open_table(MODULES).map_err(fatal)?;
    let Some(record) = names.remove(d.name.as_str()).map_err(fatal)? else {
        let message = format!("module not found: {}", d.name);
        return Ok(ModuleApplied::Refused(Refusal::new(
            Code::NotFound,
            message,
        )));
    };
    let record = ModuleRecord::decode(record.value()).map_err(fatal)?;
    let mut meta = txn.open_table(META).map_err(fatal)?;
    builtin::mark_if_deleted_builtin(&mut meta, &d.name, &record)?;
    let reply = ModuleDeleted {
        versions: record.versions.len() as u64,
    };
    Ok(ModuleApplied::Reply(
        log_reply::Result::ModuleDeleted(reply),
        Vec::new(),
    ))
}

/// What the module calls of one log entry resolved names and hashes to. Only deploys and
/// deletes change that, and they must [`clear`](Self::clear) it; the calls of a batch then read
/// the module tables once per module rather than once each.
#[derive(Debug, Default)]
pub(crate) struct ResolvedModules(HashMap<(String, Vec<u8>), Option<ModuleHash>>);

impl ResolvedModules {
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

/// The hash a call runs: `hash` when given, else the latest version of `name`; None when
/// neither exists.
pub fn resolve(
    names: &impl ReadableTable<&'static str, &'static [u8]>,
    code: &impl ReadableTable<&'static [u8], &'static [u8]>,
    call: &ModuleInvoke,
) -> Result<Option<ModuleHash>, ApplyFatal> {
    if !call.hash.is_empty() {
        let Ok(hash) = ModuleHash::try_from(call.hash.as_slice()) else {
            return Ok(None);
        };
        return Ok(code.get(hash.as_slice()).map_err(fatal)?.map(|_| hash));
    }
    let Some(record) = names.get(call.name.as_str()).map_err(fatal)? else {
        return Ok(None);
    };
    let record = ModuleRecord::decode(record.value()).map_err(fatal)?;
    Ok(record
        .versions
        .last()
        .and_then(|v| ModuleHash::try_from(v.hash.as_slice()).ok()))
}

/// The stored bytes of the module `hash`, for compiling it on first use.
pub fn load_code(
    code: &impl ReadableTable<&'static [u8], &'static [u8]>,
    hash: &ModuleHash,
) -> Result<Vec<u8>, RuntimeFatal> {
    let bytes = code.get(hash.as_slice()).map_err(fatal_runtime)?;
    let bytes = bytes.ok_or_else(|| fatal_runtime("module code vanished during a call"))?;
    Ok(bytes.value().to_vec())
}

/// A deterministic refusal of a call.
pub type CallRefused = Refusal;

/// Refuses a fuel budget outside what any member accepts.
pub fn check_fuel(call: &ModuleInvoke) -> Result<(), CallRefused> {
    if call.fuel == 0 || call.fuel > GUEST_FUEL_MAX {
        let message = format!("fuel must be between 1 and {GUEST_FUEL_MAX}");
        return Err(Refusal::new(Code::InvalidArgument, message));
    }
    Ok(())
}

/// The refusal of a call whose module (name or hash) does not exist.
pub fn not_found(call: &ModuleInvoke) -> CallRefused {
    let which = if call.hash.is_empty() {
        call.name.clone()
    } else {
        hash_hex(&call.hash)
    };
    Refusal::new(Code::NotFound, format!("module not found: {which}"))
}

/// What a finished run returned: output, fuel used, and what it waits for, if anything.
pub struct Finished {
    pub output: Vec<u8>,
    pub fuel_used: u64,
    pub wait: Option<ModuleWait>,
}

/// A run's outcome as a result, or as the refusal the caller gets (a failed run changes nothing).
pub fn finished(outcome: Outcome) -> Result<Finished, CallRefused> {
    match outcome {
        Outcome::Done { output, fuel_used } => Ok(Finished {
            output,
            fuel_used,
            wait: None,
        }),
        Outcome::Wait {
            condition,
            fuel_used,
        } => match wait_condition(condition) {
            Ok(wait) => Ok(Finished {
                output: Vec::new(),
                fuel_used,
                wait: Some(wait),
            }),
            Err(message) => Err(Refusal::new(Code::FailedPrecondition, message)),
        },
        Outcome::Failed(failure) => Err(Refusal::from(failure)),
    }
}

/// Runs `call`. `kv` holds the KV tables and META open for the entry's calls: nothing here may
/// open those through `txn`.
pub(crate) fn invoke(
    txn: &Arc<WriteTransaction>,
    kv: &SharedWriteCtx,
    env: &ModuleEnv<'_>,
    call: &ModuleInvoke,
    entry: Entry,
    resolved: &mut ResolvedModules,
) -> Result<ModuleApplied, ApplyFatal> {
    if let Err(refused) = check_fuel(call) {
        return Ok(ModuleApplied::Refused(refused));
    }
    let key = (call.name.clone(), call.hash.clone());
    let hash = match resolved.0.get(&key) {
        Some(hash) => *hash,
        None => {
            let names = txn.open_table(MODULES).map_err(fatal)?;
            let code = txn.open_table(MODULE_CODE).map_err(fatal)?;
            let hash = resolve(&names, &code, call)?;
            resolved.0.insert(key, hash);
            hash
        }
    };
    let Some(hash) = hash else {
        return Ok(ModuleApplied::Refused(not_found(call)));
    };
    let current = kv.with(|w| w.begin);
    let writes = Rc::new(RefCell::new(BufferedWrites::default()));
    let store = TxnGuestStore::new(txn.clone(), kv.clone(), writes.clone(), current + 1);
    let request = CallRequest {
        entry,
        function: call.function.clone(),
        input: call.input.clone(),
        fuel: call.fuel,
        context: CallContext {
            log_index: env.log_index,
            revision: current + 1,
            proposal_time_ms: env.leader_time_ms,
            caller_lease: call.lease,
            caller: String::new(),
            module_name: call.name.clone(),
            module_hash: hash,
        },
    };
    let load = || load_code(&txn.open_table(MODULE_CODE).map_err(fatal_runtime)?, &hash);
    let outcome = env
        .runtime
        .invoke(load, request, Box::new(store))
        .map_err(fatal)?;
    let Finished {
        output,
        fuel_used,
        wait,
    } = match finished(outcome) {
        Ok(f) => f,
        Err(refused) => return Ok(ModuleApplied::Refused(refused)),
    };
    let writes = writes.take();
    let (revision, events) = kv
        .with(|w| {
            writes.commit(w)?;
            let revision = w.view_rev();
            Ok::<_, baton_store::mvcc::error::StorageError>((revision, w.finish_request()?))
        })
        .map_err(fatal)?;
    baton_store::ops::lease::sync_attachments(txn, &events).map_err(fatal)?;
    let reply = ModuleInvoked {
        output,
        revision,
        fuel_used,
        wait,
        proposal_time_ms: env.leader_time_ms,
    };
    Ok(ModuleApplied::Reply(
        log_reply::Result::ModuleInvoked(reply),
        events,
    ))
}

/// A guest's wait condition as the log records it, or why it is unacceptable (the call then
/// commits nothing, like any failed call).
fn wait_condition(condition: WaitCondition) -> Result<ModuleWait, String> {
    if condition.keys.is_empty() && condition.leases.is_empty() && condition.until_ms.is_none() {
        return Err(
            "guest asked to wait but named no keys, no leases and no time to wait for".into(),
        );
    }
    if condition.until_ms == Some(0) {
        return Err("guest asked to wait until time 0".into());
    }
    let most = GUEST_WAIT_CONDITIONS_MAX;
    if condition.keys.len() > most || condition.leases.len() > most {
        return Err(format!(
            "guest may wait on at most {most} key ranges and {most} leases"
        ));
    }
    let mut keys = Vec::with_capacity(condition.keys.len());
    for (start, end) in condition.keys {
        if KeyRange::from_etcd(start.clone(), end.clone()).is_none() {
            return Err("guest asked to wait on an empty key range (end <= start)".into());
        }
        keys.push(ModuleKeyRange { start, end });
    }
    Ok(ModuleWait {
        keys,
        leases: condition.leases,
        until_ms: condition.until_ms.unwrap_or(0),
    })
}

/// Every module name with its versions, in name order, as of `txn`.
pub fn list(txn: &redb::ReadTransaction) -> Result<Vec<(String, ModuleRecord)>, ApplyFatal> {
    let names = txn.open_table(MODULES).map_err(fatal)?;
    let mut modules = Vec::new();
    for entry in names.iter().map_err(fatal)? {
        let (name, record) = entry.map_err(fatal)?;
        let record = ModuleRecord::decode(record.value()).map_err(fatal)?;
        modules.push((name.value().to_string(), record));
    }
    Ok(modules)
}

/// The versions of `name`, if it exists, as of `txn`.
pub fn describe(
    txn: &redb::ReadTransaction,
    name: &str,
) -> Result<Option<ModuleRecord>, ApplyFatal> {
    let names = txn.open_table(MODULES).map_err(fatal)?;
    match names.get(name).map_err(fatal)? {
        Some(record) => Ok(Some(ModuleRecord::decode(record.value()).map_err(fatal)?)),
        None => Ok(None),
    }
}

/// `f` of the stored bytes of module version `hash` as of `txn`, without copying them; None
/// when no such bytes are stored.
pub fn with_code<T>(
    txn: &redb::ReadTransaction,
    hash: &[u8],
    f: impl FnOnce(&[u8]) -> T,
) -> Result<Option<T>, ApplyFatal> {
    let code = txn.open_table(MODULE_CODE).map_err(fatal)?;
    let bytes = code.get(hash).map_err(fatal)?;
    Ok(bytes.map(|bytes| f(bytes.value())))
}
