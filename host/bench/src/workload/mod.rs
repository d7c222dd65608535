//! Workloads: each is one file implementing [`Workload`]; the driver supplies concurrency,
//! limits and latency recording.

pub(crate) mod barrier;
pub(crate) mod incr;
pub(crate) mod keepalive;
pub(crate) mod lock;
pub(crate) mod park;
pub(crate) mod put;
pub(crate) mod range;
pub(crate) mod recipe;
pub(crate) mod watch;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use etcd_client::{Client, WatchResponse, WatchStream};
use tokio::time::{Instant, sleep};

use super::driver::Outcome;
use super::lean_grpc::LeanChannel;
use super::lean_grpc::paths::MODULES_DESCRIBE;
use super::pool::Pool;
use baton_proto::baton::v1 as pb;
use baton_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, RequestOp, TxnRequest, compare, request_op,
};

/// How long the built-in modules may take to arrive through the log after a member starts.
const MODULE_WAIT: Duration = Duration::from_secs(30);
const MODULE_POLL: Duration = Duration::from_millis(200);

/// One kind of request stream. A requester is the per-task state (its connection, its random
/// generator, and for streaming workloads its open stream); `op` performs one measured request.
pub(crate) trait Workload: Send + Sync + 'static {
    type Requester: Send + 'static;

    /// The name at the head of the summary line, e.g. `put`.
    fn name(&self) -> &'static str;

    /// Settings worth printing next to the numbers, e.g. `consistency=s`.
    fn params(&self) -> BTreeMap<String, String>;

    /// Unmeasured set-up before the clock starts (e.g. writing the keys a read workload reads).
    fn prepare(&self, _pool: &Pool) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }

    /// The state for requester `index`, which sends over `conn`.
    fn requester(&self, conn: Client, index: usize) -> Self::Requester;

    /// Unmeasured work after the clock stops: checks the store agrees with what was
    /// acknowledged, and returns figures worth printing beside the numbers (e.g. retries).
    fn conclude(
        &self,
        _pool: &Pool,
        _outcome: &Outcome,
    ) -> impl Future<Output = anyhow::Result<BTreeMap<String, String>>> + Send {
        async { Ok(BTreeMap::new()) }
    }

    /// Performs the `seq`-th operation of the run (numbered across all requesters).
    fn op(
        &self,
        requester: &mut Self::Requester,
        seq: u64,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Waits for the built-in module `name` (built-ins arrive through the log after a start). An
/// endpoint without the Modules service is not Baton: the error names the option that needs
/// Baton (`needs`) and the one to use for etcd (`instead`).
pub(crate) async fn await_module(
    control: &LeanChannel,
    name: &str,
    needs: &str,
    instead: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + MODULE_WAIT;
    let describe = pb::DescribeRequest {
        name: name.to_string(),
    };
    loop {
        let found: Result<pb::ModuleInfo, _> = control.unary(MODULES_DESCRIBE, &describe).await;
        match found {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                bail!("no Modules service: {needs} needs Baton, use {instead} for etcd")
            }
            Err(s) if Instant::now() >= deadline => {
                bail!(
                    "no `{name}` module after {MODULE_WAIT:?} ({}: {})",
                    s.code(),
                    s.message()
                )
            }
            Err(_) => sleep(MODULE_POLL).await,
        }
    }
}

/// Distinct per run: wall-clock nanoseconds and the process id.
pub(crate) fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}-{}", std::process::id())
}

/// Turns a gRPC status into an error that says which step (`what`) failed.
pub(crate) fn grpc(what: &str) -> impl FnOnce(tonic::Status) -> anyhow::Error + '_ {
    move |s| anyhow::anyhow!("{what}: {}: {}", s.code(), s.message())
}

/// The end of the range of keys starting with `prefix` (etcd's prefix rule).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The next answer on a watch stream; an ended or canceled stream is an error.
pub(crate) async fn next_watch_response(stream: &mut WatchStream) -> anyhow::Result<WatchResponse> {
    let response = stream
        .message()
        .await
        .context("watch failed")?
        .context("watch ended")?;
    if response.canceled() {
        bail!("watch canceled: {}", response.cancel_reason());
    }
    Ok(response)
}

/// etcd's queue recipes' claim: delete `key` if it is still at `mod_revision`, so whoever
/// deletes it has the item.
pub(crate) fn claim_txn(key: &[u8], mod_revision: i64) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Mod as i32,
            key: key.to_vec(),
            target_union: Some(compare::TargetUnion::ModRevision(mod_revision)),
            range_end: Vec::new(),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                },
            )),
        }],
        failure: Vec::new(),
    }
}
