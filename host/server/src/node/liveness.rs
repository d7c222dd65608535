//! What this member tells supervisors and load balancers about itself.
//!
//! gRPC health (`grpc.health.v1`, for the whole server `""` and for each client service) says
//! NOT_SERVING until the member serves clients, SERVING while it does, and NOT_SERVING again
//! from the moment it starts to stop.
//!
//! When Raft stops on its own (a storage or apply error, or a panic in openraft's core), the
//! member can no longer apply anything: serving on would answer from frozen state, keep watches
//! silent and still forward writes. Like etcd, which crashes in that case, the member then says
//! NOT_SERVING, logs why, and exits with a failure status for its supervisor to act on.

use std::time::Duration;

use openraft::error::Fatal;
use openraft::type_config::async_runtime::WatchReceiver;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::server::leader_loss::LeaderLoss;
use crate::shutdown::Shutdown;
use baton_apply::entry::{Raft, TypeConfig};
use baton_limits::FATAL_EXIT_GRACE_MS;
use baton_proto::baton::v1::modules_server;
use baton_proto::etcdserverpb::{
    cluster_server, kv_server, lease_server, maintenance_server, watch_server,
};
use baton_proto::{v3electionpb::election_server, v3lockpb::lock_server};

/// The health check names this member answers: the whole server, then each client service.
const HEALTH_SERVICES: [&str; 9] = [
    "",
    kv_server::SERVICE_NAME,
    watch_server::SERVICE_NAME,
    lease_server::SERVICE_NAME,
    cluster_server::SERVICE_NAME,
    maintenance_server::SERVICE_NAME,
    lock_server::SERVICE_NAME,
    election_server::SERVICE_NAME,
    modules_server::SERVICE_NAME,
];

/// What the client services are told about this member's life.
pub(super) struct Signals {
    /// Fires when the member starts to stop.
    pub stop: Shutdown,
    /// Answers health checks.
    pub health: HealthServer<HealthService>,
    /// Ends the streams that require a leader.
    pub leader_loss: LeaderLoss,
}

/// Sets the status of every name in [`HEALTH_SERVICES`] at once.
#[derive(Clone)]
pub(super) struct Health {
    reporter: HealthReporter,
}

impl Health {
    /// The reporter, and the gRPC service that answers from it; NOT_SERVING to begin with.
    pub(super) async fn start() -> (Self, HealthServer<HealthService>) {
        let reporter = HealthReporter::new();
        let service = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
        let health = Self { reporter };
        health.set(ServingStatus::NotServing).await;
        (health, service)
    }

    pub(super) async fn set(&self, status: ServingStatus) {
        for name in HEALTH_SERVICES {
            self.reporter.set_service_status(name, status).await;
        }
    }
}

/// Resolves once Raft has stopped by itself: on a storage error, or a panic (its core ended
/// without saying why). Await it only until this member calls [`Raft::shutdown`].
pub(super) async fn raft_failed(raft: &Raft) -> Fatal<TypeConfig> {
    let mut metrics = raft.metrics();
    loop {
        if let Err(fatal) = &metrics.borrow_watched().running_state {
            return fatal.clone();
        }
        if metrics.changed().await.is_err() {
            return Fatal::Panicked;
        }
    }
}

/// Says why the member gives up, once health says NOT_SERVING, and gives health watchers a
/// moment to hear it; the error returned ends the process with a failure status.
pub(super) async fn failed(fatal: Fatal<TypeConfig>) -> anyhow::Error {
    tracing::error!(error = %fatal, "raft stopped on a fatal error; exiting so that a supervisor restarts this member");
    tokio::time::sleep(Duration::from_millis(FATAL_EXIT_GRACE_MS)).await;
    anyhow::anyhow!("raft stopped: {fatal}")
}
