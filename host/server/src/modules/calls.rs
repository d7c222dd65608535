//! Running module calls to completion, for every service that calls modules (the Modules
//! service, and the etcd Lock and Election services, which are adapters over the built-in
//! recipes): a writing call goes through the log run after run until the guest is done,
//! parking in between; a read-only call runs here against a linearizable view. A writing call
//! whose client leaves early gets the guest's `abandon` ([`Abandon`]).

use std::sync::Arc;

use tokio::sync::Semaphore;
use tonic::Status;

use crate::api::status::refusal_status;
use crate::modules::park::Parking;
use crate::modules::read_only;
use crate::server::Server;
use baton_limits::READ_ONLY_CALLS_RUNNING_MAX;
use baton_proto::baton::v1 as pb;
use baton_proto::batonpb::{self, log_command};
use baton_wasm::Runtime;

/// What running calls needs. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Calls {
    server: Arc<Server>,
    runtime: Runtime,
    parking: Parking,
    /// Turns for read-only calls, which share the instance pool with the apply path.
    read_only_turns: Arc<Semaphore>,
}

impl Calls {
    pub(crate) fn new(server: Arc<Server>, runtime: Runtime, parking: Parking) -> Self {
        Self {
            server,
            runtime,
            parking,
            read_only_turns: Arc::new(Semaphore::new(READ_ONLY_CALLS_RUNNING_MAX)),
        }
    }

    /// Runs the call until the guest finishes: each run that asks to wait has committed its
    /// writes, so the call parks here until what it waits for changes, then runs again (as a
    /// new log entry). Bounded only by the client: its deadline or disconnect drops this future,
    /// and then the guest's `abandon` runs through the log ([`Abandon`]).
    pub(crate) async fn run(
        &self,
        call: batonpb::ModuleInvoke,
    ) -> Result<pb::InvokeResponse, Status> {
        self.run_counted(call).await.map_err(|failed| failed.status)
    }

    /// [`Calls::run`], telling on failure how many runs had committed before it: a recipe
    /// adapter words "the call failed" differently from "a waiting call failed on a re-run".
    pub(crate) async fn run_counted(
        &self,
        call: batonpb::ModuleInvoke,
    ) -> Result<pb::InvokeResponse, Failed> {
        let mut runs = 0u32;
        let mut abandon = Abandon {
            server: self.server.clone(),
            call: Some(call.clone()),
            in_flight: None,
        };
        loop {
            let op = log_command::Op::ModuleInvoke(call.clone());
            // A task of its own, so that a clean-up after the client left is proposed only once
            // this run's outcome is known (and so ordered after it in the log).
            let server = self.server.clone();
            let run = tokio::spawn(async move { server.write::<batonpb::ModuleInvoked>(op).await });
            let run = abandon.in_flight.insert(run).await;
            abandon.in_flight = None;
            let run = run.map_err(|e| Status::internal(format!("module call task failed: {e}")));
            let reply = match run.and_then(|r| r) {
                Ok(reply) => reply,
                Err(status) => {
                    // A deterministic refusal of the first run committed nothing: nothing to
                    // clean up. Any other failure leaves the outcome unknown.
                    if runs == 0 && is_refusal(&status) {
                        abandon.call = None;
                    }
                    return Err(Failed { status, runs });
                }
            };
            runs = runs.saturating_add(1);
            let Some(wait) = reply.wait else {
                abandon.call = None;
                return Ok(pb::InvokeResponse {
                    output: reply.output,
                    revision: reply.revision,
                    fuel_used: reply.fuel_used,
                    runs,
                });
            };
            tracing::debug!(module = %call.name, function = %call.function, runs, "call parked");
            let time = reply.proposal_time_ms;
            let parked = self
                .parking
                .until(&self.server, &wait, reply.revision, time);
            parked.await.map_err(|status| Failed { status, runs })?;
        }
    }

    /// Runs a read-only call on this member until the guest finishes: each run reads a view taken
    /// after a linearizable read; a run that asks to wait parks like any call, then runs again.
    pub(crate) async fn run_read_only(
        &self,
        call: batonpb::ModuleInvoke,
    ) -> Result<pb::InvokeResponse, Status> {
        let call = Arc::new(call);
        let mut runs = 0u32;
        loop {
            self.server.linearize().await?;
            let applied_index = self.server.applied_index();
            let view = self.server.read_view().await?;
            let (runtime, job) = (self.runtime.clone(), call.clone());
            let turn = self
                .read_only_turns
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Status::unavailable("baton: read-only calls stopped"))?;
            // The guest runs to completion (bounded by its fuel) off the async workers.
            let run = tokio::task::spawn_blocking(move || {
                let run = read_only::run(&runtime, &view, &job, applied_index);
                drop(turn);
                run
            })
            .await
            .map_err(|e| Status::internal(format!("read-only call panicked: {e}")))?;
            let run = match run {
                Ok(run) => run,
                Err(read_only::ReadRunError::Refused(refused)) => {
                    return Err(refusal_status(refused));
                }
                Err(read_only::ReadRunError::Local(message)) => {
                    return Err(Status::unavailable(format!(
                        "this member cannot run the call ({message}); try another"
                    )));
                }
            };
            runs = runs.saturating_add(1);
            let Some(wait) = run.finished.wait else {
                return Ok(pb::InvokeResponse {
                    output: run.finished.output,
                    revision: run.revision,
                    fuel_used: run.finished.fuel_used,
                    runs,
                });
            };
            tracing::debug!(module = %call.name, function = %call.function, runs, "read-only call parked");
            self.parking
                .until(&self.server, &wait, run.revision, run.proposal_time_ms)
                .await?;
        }
    }
}

/// A call that failed after `runs` runs had committed.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) status: Status,
    pub(crate) runs: u32,
}

/// Cleans up after a writing call whose client left before it finished (deadline, cancel,
/// disconnect, or this member stopping): when dropped while still holding the call, proposes
/// the guest's `abandon` with the same module, function, input and lease — after the run in
/// flight, if any, has been applied, so the clean-up sees what that run left behind.
struct Abandon {
    server: Arc<Server>,
    /// The call, until it finished or failed in a way that committed nothing.
    call: Option<batonpb::ModuleInvoke>,
    in_flight: Option<tokio::task::JoinHandle<Result<batonpb::ModuleInvoked, Status>>>,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        let Some(call) = self.call.take() else {
            return;
        };
        let (server, in_flight) = (self.server.clone(), self.in_flight.take());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            if let Some(run) = in_flight {
                // Its own timeouts bound it; the result was the departed client's.
                let _ = run.await;
            }
            let (module, function) = (call.name.clone(), call.function.clone());
            let op = log_command::Op::ModuleAbandon(call);
            match server.write::<batonpb::ModuleInvoked>(op).await {
                Ok(_) => tracing::debug!(%module, %function, "abandoned call cleaned up"),
                // The guest's own leases still bound what the call left behind.
                Err(status) => tracing::warn!(
                    %module, %function, %status,
                    "could not clean up after an abandoned module call"
                ),
            }
        });
    }
}

/// Whether `status` is a refusal decided by the state machine (nothing committed), rather than
/// a failure that leaves a write's outcome unknown.
fn is_refusal(status: &Status) -> bool {
    use tonic::Code;
    !matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Internal
            | Code::Aborted
            | Code::Unknown
    )
}
