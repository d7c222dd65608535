//! Workloads: each is one file implementing [`Workload`]; the driver supplies concurrency,
//! limits and latency recording.

pub(crate) mod incr;
pub(crate) mod keepalive;
pub(crate) mod lock;
pub(crate) mod park;
pub(crate) mod put;
pub(crate) mod range;
pub(crate) mod watch;

use std::collections::BTreeMap;
use std::future::Future;

use etcd_client::Client;

use super::driver::Outcome;
use super::pool::Pool;

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
