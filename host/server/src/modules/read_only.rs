//! Read-only calls: the guest runs on the member serving the request, against a read view taken
//! after a linearizable read, and no log entry is written. Every member can serve them, and the
//! result reflects every write acknowledged before the request, as for a linearizable Range.

use redb::ReadTransaction;

use crate::raft::propose::leader_time_ms;
use baton_apply::sm::guest_store::ReadOnlyGuestStore;
use baton_apply::sm::module::{
    CallRefused, Finished, check_fuel, finished, load_code, not_found, resolve,
};
use baton_proto::batonpb::ModuleInvoke;
use baton_store::storage::schema::{MODULE_CODE, MODULES};
use baton_wasm::{CallContext, CallRequest, Entry, Runtime};

/// A read-only run's result: what the guest returned and the revision it read at.
pub(crate) struct ReadRun {
    pub(crate) finished: Finished,
    pub(crate) revision: i64,
    /// The clock the guest saw (this member's).
    pub(crate) proposal_time_ms: u64,
}

/// Why a read-only run produced no result.
#[derive(Debug)]
pub(crate) enum ReadRunError {
    /// The call itself failed (unknown module, trap, fuel, a write attempt...).
    Refused(CallRefused),
    /// This member could not run it (storage, compilation); another member may.
    Local(String),
}

fn local(e: impl std::fmt::Display) -> ReadRunError {
    ReadRunError::Local(e.to_string())
}

/// Runs `call` against `view`, whose state is at least `applied_index`. Blocking: runs the
/// guest to completion on this thread.
pub(crate) fn run(
    runtime: &Runtime,
    view: &ReadTransaction,
    call: &ModuleInvoke,
    applied_index: u64,
) -> Result<ReadRun, ReadRunError> {
    check_fuel(call).map_err(ReadRunError::Refused)?;
    let names = view.open_table(MODULES).map_err(local)?;
    let code = view.open_table(MODULE_CODE).map_err(local)?;
    let hash = resolve(&names, &code, call).map_err(local)?;
    let hash = hash.ok_or_else(|| ReadRunError::Refused(not_found(call)))?;
    let revision = baton_store::mvcc::current_revision(view).map_err(local)?;
    let proposal_time_ms = leader_time_ms();
    let request = CallRequest {
        entry: Entry::Invoke,
        function: call.function.clone(),
        input: call.input.clone(),
        fuel: call.fuel,
        context: CallContext {
            log_index: applied_index,
            revision,
            // Nothing this call does is replicated, so the member's own clock is the honest one.
            proposal_time_ms,
            caller_lease: call.lease,
            caller: String::new(),
            module_name: call.name.clone(),
            module_hash: hash,
        },
    };
    let load = || load_code(&code, &hash);
    let store = Box::new(ReadOnlyGuestStore::new(view).map_err(local)?);
    let outcome = runtime.invoke(load, request, store).map_err(local)?;
    let finished = finished(outcome).map_err(ReadRunError::Refused)?;
    Ok(ReadRun {
        finished,
        revision,
        proposal_time_ms,
    })
}
