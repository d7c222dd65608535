//! The composition root: open storage, build Raft, bootstrap a new cluster if this data dir is
//! fresh, serve clients and peers, and shut everything down together.
//!
//! Start and stop are objects. [`Node::start`] runs the steps in order — `open_storage`,
//! `start_raft`, `bootstrap_if_new`, `Services::start`, `Services::listen` — and
//! [`Node::run_until_stopped`] waits for a reason to stop. Every task that must end by itself
//! when the member stops holds a [`Shutdown`] made from the node's one [`Trigger`]; the node
//! owns all its tasks in one `Tasks` set (`tasks.rs`), which drains some and aborts the rest.

mod authority;
pub mod config;
pub mod join;
mod liveness;
mod reflection;
mod tasks;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redb::Database;
use tokio::sync::watch;
use tonic_health::ServingStatus;

use crate::api;
use crate::api::learner_gate::LearnerGate;
use crate::api::recipe::Recipes;
use crate::modules::park::Parking;
use crate::raft::batch::Proposer;
use crate::raft::channels::PeerChannels;
use crate::raft::network::PeerNetwork;
use crate::raft::peer_service::PeerService;
use crate::server::lease::ends::{LeaseEnds, Observers};
use crate::server::lease::{Deadlines, Lessor};
use crate::server::lease_expiry;
use crate::server::membership::LeaderMembership;
use crate::server::{self, Server};
use crate::shutdown::{Shutdown, Trigger};
use baton_apply::entry::{MemberId, Raft};
use baton_apply::raft::snapshot_file::SnapshotStore;
use baton_apply::raft::{LogStore, StateMachine};
use baton_apply::settled::Store;
use baton_limits::{
    GRPC_OVERHEAD_BYTES, PEER_MESSAGE_BYTES_MAX, PUBLISH_RETRY_MS, PUBLISH_WAIT_MS,
    REQUEST_BYTES_MAX, SHUTDOWN_DRAIN_MS, SNAPSHOT_CATCH_UP_ENTRIES, SNAPSHOT_TRANSFER_STALL_MS,
    STATE_DB_CACHE_BYTES,
};
use baton_proto::baton::v1::modules_server::ModulesServer;
use baton_proto::batonpb::raft_peer_server::RaftPeerServer;
use baton_proto::etcdserverpb::cluster_server::ClusterServer;
use baton_proto::etcdserverpb::kv_server::KvServer;
use baton_proto::etcdserverpb::lease_server::LeaseServer;
use baton_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use baton_proto::etcdserverpb::watch_server::WatchServer;
use baton_proto::v3electionpb::election_server::ElectionServer;
use baton_proto::v3lockpb::lock_server::LockServer;
use baton_store::lease::rules::min_ttl_s;
use baton_wasm::Runtime;
use baton_watch::WatchHub;
pub use config::NodeConfig;
use tasks::Tasks;

/// Runs a member until SIGINT/SIGTERM or its removal (then `Ok`), or until Raft stops on a
/// fatal error (then `Err`, so the process exits with a failure status).
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    Node::start(config).await?.run_until_stopped().await
}

/// A member that serves clients and peers, from [`Node::start`] until
/// [`Node::run_until_stopped`] returns.
pub struct Node {
    member_id: MemberId,
    /// The other members' peer URLs from `--initial-cluster`: whom a member that never
    /// received its log asks whether it is still a member.
    initial_peers: Vec<String>,
    raft: Raft,
    health: liveness::Health,
    /// Fires the [`Shutdown`] every serving loop and waiting task holds.
    trigger: Trigger,
    tasks: Tasks,
}

/// The data dir opened: the Raft log and the state machine, for Raft to take, and what the
/// services share of them.
struct Storage {
    log_store: LogStore,
    state_machine: StateMachine,
    shared: Shared,
}

/// What the services keep of the opened storage once Raft owns it.
struct Shared {
    state_path: PathBuf,
    hub: Arc<WatchHub>,
    lease_deadlines: Arc<Deadlines>,
    lease_ends: Arc<LeaseEnds>,
    applied: watch::Receiver<u64>,
    snapshots: SnapshotStore,
    store: Store,
    runtime: Runtime,
}

/// What the listeners serve, once Raft runs.
struct Services {
    raft: Raft,
    cluster_id: u64,
    server: Arc<Server>,
    lessor: Arc<Lessor>,
    proposer: Proposer,
    hub: Arc<WatchHub>,
    store: Store,
    snapshots: SnapshotStore,
    state_path: PathBuf,
    lease_ends: Arc<LeaseEnds>,
    runtime: Runtime,
}

impl Node {
    /// Opens storage, starts Raft (bootstrapping a new cluster if this data dir is fresh),
    /// starts the member's tasks and listeners, and reports SERVING.
    pub async fn start(config: NodeConfig) -> anyhow::Result<Self> {
        if config.initial_cluster.len().is_multiple_of(2) {
            tracing::warn!(
                members = config.initial_cluster.len(),
                "an even number of members tolerates no more failures than one fewer; use 3 or 5"
            );
        }
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
        let identity = join::resolve(&config).await?;
        let storage = open_storage(&config)?;
        let channels = PeerChannels::default();
        let raft = start_raft(
            &config,
            identity.member_id,
            storage.log_store,
            storage.state_machine,
            channels.clone(),
        )
        .await?;
        bootstrap_if_new(&raft, &config).await?;
        let trigger = Trigger::new();
        let mut tasks = Tasks::default();
        let services = Services::start(&config, &identity, raft.clone(), channels, storage.shared);
        let health = services.listen(&config, &trigger, &mut tasks).await?;
        health.set(ServingStatus::Serving).await;
        tracing::info!(
            name = %config.name, member_id = format!("{:x}", identity.member_id),
            cluster_id = format!("{:x}", identity.cluster_id), clients = ?config.listen_client_urls,
            peers = ?config.listen_peer_urls, "baton member serving"
        );
        Ok(Self {
            member_id: identity.member_id,
            initial_peers: join::other_peers(&config),
            raft,
            health,
            trigger,
            tasks,
        })
    }

    /// Serves until a signal, this member's removal or a fatal Raft error; then reports
    /// NOT_SERVING and fires the shutdown. On a fatal error it returns that error at once (a
    /// member that cannot apply must stop fast); otherwise it drains its tasks and stops Raft.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let fatal = tokio::select! {
            () = shutdown_signal() => {
                tracing::info!("shutting down");
                None
            }
            () = join::removed_from_cluster(&self.raft, self.member_id, &self.initial_peers) => {
                tracing::warn!("this member was removed from the cluster; shutting down");
                None
            }
            fatal = liveness::raft_failed(&self.raft) => Some(fatal),
        };
        self.health.set(ServingStatus::NotServing).await;
        self.trigger.stop();
        if let Some(fatal) = fatal {
            return Err(liveness::failed(fatal).await);
        }
        self.tasks
            .stop(Duration::from_millis(SHUTDOWN_DRAIN_MS))
            .await;
        let _ = self.raft.shutdown().await;
        Ok(())
    }
}

/// Opens the Raft log and the state database, and wires the state machine to the watch hub
/// and the lease observers.
fn open_storage(config: &NodeConfig) -> anyhow::Result<Storage> {
    let log_store =
        LogStore::open(&config.data_dir.join("raft-log")).context("opening the raft log")?;
    let state_path = config.data_dir.join("state.redb");
    let state_db = Arc::new(
        Database::builder()
            .set_cache_size(STATE_DB_CACHE_BYTES)
            .create(&state_path)
            .context("opening the state database")?,
    );
    let lease_deadlines = Arc::new(Deadlines::default());
    let lease_ends = Arc::new(LeaseEnds::default());
    let lease_observers = Observers(vec![lease_deadlines.clone(), lease_ends.clone()]);
    let state_machine = StateMachine::open(state_db, config.data_dir.join("snapshot.bin"))
        .context("opening the state machine")?;
    let hub = WatchHub::new(
        state_machine
            .revision()
            .context("reading the state machine's revision")?,
    );
    let state_machine = state_machine
        .with_lease_observer(Arc::new(lease_observers))
        .with_event_sink(hub.clone());
    let shared = Shared {
        state_path,
        hub,
        lease_deadlines,
        lease_ends,
        applied: state_machine.applied_index(),
        snapshots: state_machine.snapshots().clone(),
        store: state_machine.store(),
        runtime: state_machine.runtime().clone(),
    };
    Ok(Storage {
        log_store,
        state_machine,
        shared,
    })
}

/// Starts this member's Raft over the opened storage, with the configured timing.
async fn start_raft(
    config: &NodeConfig,
    member_id: MemberId,
    log_store: LogStore,
    state_machine: StateMachine,
    channels: PeerChannels,
) -> anyhow::Result<Raft> {
    let raft_config = openraft::Config {
        cluster_name: "baton".into(),
        heartbeat_interval: config.heartbeat_interval_ms,
        election_timeout_min: config.election_timeout_ms,
        election_timeout_max: config.election_timeout_ms * 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_count),
        // Unused by Baton's transport (see `PeerLink::full_snapshot`), which has no deadline on a
        // whole transfer; set to the stall bound so any reader of it sees a sane value.
        install_snapshot_timeout: SNAPSHOT_TRANSFER_STALL_MS,
        // A briefly lagging member then catches up from the log; only a long-gone one needs the
        // whole snapshot.
        max_in_snapshot_log_to_keep: config.snapshot_count.min(SNAPSHOT_CATCH_UP_ENTRIES),
        ..Default::default()
    }
    .validate()
    .context("invalid raft timing")?;
    Raft::new(
        member_id,
        Arc::new(raft_config),
        PeerNetwork::new(channels),
        log_store,
        state_machine,
    )
    .await
    .context("starting raft")
}

impl Services {
    /// The lessor, the proposal batcher and the server the API calls.
    fn start(
        config: &NodeConfig,
        identity: &join::Identity,
        raft: Raft,
        channels: PeerChannels,
        shared: Shared,
    ) -> Self {
        let lessor = Arc::new(Lessor::new(
            raft.clone(),
            identity.member_id,
            shared.store.clone(),
            shared.applied.clone(),
            shared.lease_deadlines,
            min_ttl_s(config.election_timeout_ms),
        ));
        let proposer = Proposer::start(raft.clone());
        let server = Arc::new(Server::new(
            raft.clone(),
            proposer.clone(),
            identity.member_id,
            identity.cluster_id,
            shared.store.clone(),
            shared.applied,
            channels,
        ));
        Self {
            raft,
            cluster_id: identity.cluster_id,
            server,
            lessor,
            proposer,
            hub: shared.hub,
            store: shared.store,
            snapshots: shared.snapshots,
            state_path: shared.state_path,
            lease_ends: shared.lease_ends,
            runtime: shared.runtime,
        }
    }

    /// Spawns the member's tasks, serves peers, waits (boundedly) for the client URLs to be
    /// published, then serves clients. Returns the health reporter, still NOT_SERVING.
    async fn listen(
        self,
        config: &NodeConfig,
        trigger: &Trigger,
        tasks: &mut Tasks,
    ) -> anyhow::Result<liveness::Health> {
        self.spawn_background(config, trigger, tasks);
        self.serve_peers(config, trigger, tasks).await?;
        self.publish(config, tasks).await;
        self.serve_clients(config, trigger, tasks).await
    }

    async fn serve_peers(
        &self,
        config: &NodeConfig,
        trigger: &Trigger,
        tasks: &mut Tasks,
    ) -> anyhow::Result<()> {
        for url in &config.listen_peer_urls {
            let addr = config::listen_addr(url)?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for peers on {addr}"))?;
            let router = self.peer_router(trigger);
            // Peers are Baton members, whose authority is always well-formed.
            tasks.spawn_drained(
                "serve peers",
                serve(
                    router,
                    listener,
                    std::convert::identity,
                    trigger.subscribe(),
                ),
            );
        }
        Ok(())
    }

    /// Serves the client services; returns the health reporter, still NOT_SERVING.
    async fn serve_clients(
        &self,
        config: &NodeConfig,
        trigger: &Trigger,
        tasks: &mut Tasks,
    ) -> anyhow::Result<liveness::Health> {
        let calls = crate::modules::calls::Calls::new(
            self.server.clone(),
            self.runtime.clone(),
            Parking::new(
                self.hub.clone(),
                self.lease_ends.clone(),
                trigger.subscribe(),
            ),
        );
        let modules = crate::modules::service::ModulesService::new(
            self.server.clone(),
            self.runtime.clone(),
            calls,
        );
        let (health, health_service) = liveness::Health::start().await;
        let (leader_monitor, leader_loss) = server::leader_loss::spawn_monitor(
            self.server.clone(),
            Duration::from_millis(config.election_timeout_ms),
        );
        tasks.abort_at_stop("leader-loss monitor", leader_monitor.abort_handle());
        let signals = liveness::Signals {
            stop: trigger.subscribe(),
            health: health_service,
            leader_loss,
        };
        for url in &config.listen_client_urls {
            let addr = config::listen_addr(url)?;
            let router = client_router(
                &self.server,
                &self.lessor,
                &modules,
                &self.state_path,
                &self.hub,
                config,
                &signals,
            )?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for clients on {addr}"))?;
            tasks.spawn_drained(
                "serve clients",
                serve(
                    router,
                    listener,
                    authority::AuthorityRepair::new,
                    trigger.subscribe(),
                ),
            );
        }
        Ok(health)
    }

    /// Lease expiry (drained at stop), and the tasks aborted at stop: watch catch-up, quota
    /// watch, auto-compaction and the built-in modules' deployer (which acts while this member
    /// leads).
    fn spawn_background(&self, config: &NodeConfig, trigger: &Trigger, tasks: &mut Tasks) {
        let catch_up = self.hub.spawn_catch_up(self.store.clone());
        tasks.abort_at_stop("watch catch-up", catch_up.abort_handle());
        tasks.spawn_drained(
            "lease expiry",
            lease_expiry::run(self.lessor.clone(), trigger.subscribe()),
        );
        if config.quota_backend_bytes > 0 {
            let quota = server::alarm::spawn_quota_watch(
                self.server.clone(),
                self.state_path.clone(),
                config.quota_backend_bytes,
            );
            tasks.abort_at_stop("quota watch", quota.abort_handle());
        }
        if let Some(compaction) =
            server::compaction::spawn_auto_compaction(self.server.clone(), config.auto_compaction)
        {
            tasks.abort_at_stop("auto-compaction", compaction.abort_handle());
        }
        // Built-ins go through the log, so every replica stores them; on a cluster founded by
        // an older release too, once a member of this one leads.
        let builtins = tokio::spawn(crate::modules::builtin::run(self.server.clone()));
        tasks.abort_at_stop("built-in modules", builtins.abort_handle());
    }

    fn peer_router(&self, trigger: &Trigger) -> tonic::transport::server::Router {
        let members = Arc::new(LeaderMembership::new(self.raft.clone(), self.cluster_id));
        let svc = RaftPeerServer::new(PeerService::new(
            self.raft.clone(),
            self.proposer.clone(),
            self.lessor.clone(),
            members,
            self.snapshots.clone(),
            trigger.subscribe(),
        ))
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
        tonic::transport::Server::builder().add_service(svc)
    }

    /// Like etcd, serve clients only once this member's client URLs are in the replicated
    /// membership (so MemberList is complete for anyone who can reach it) — but not forever: a
    /// member restarted without a quorum still serves what it can after the wait.
    async fn publish(&self, config: &NodeConfig, tasks: &mut Tasks) {
        let publisher = {
            let server = self.server.clone();
            let urls = config.advertise_client_urls.clone();
            let name = config.name.clone();
            tokio::spawn(async move { server.publish_until_done(name, urls).await })
        };
        tasks.abort_at_stop("publish client URLs", publisher.abort_handle());
        let published = async {
            while !publisher.is_finished() {
                tokio::time::sleep(Duration::from_millis(PUBLISH_RETRY_MS / 10)).await;
            }
        };
        if tokio::time::timeout(Duration::from_millis(PUBLISH_WAIT_MS), published)
            .await
            .is_err()
        {
            tracing::warn!(
                "could not record client URLs in the membership yet (no quorum?); serving anyway"
            );
        }
    }
}

fn client_router(
    server: &Arc<Server>,
    lessor: &Arc<Lessor>,
    modules: &crate::modules::service::ModulesService,
    state_path: &std::path::Path,
    hub: &Arc<WatchHub>,
    config: &NodeConfig,
    signals: &liveness::Signals,
) -> anyhow::Result<tonic::transport::server::Router> {
    // The services enforce etcd's exact size limits themselves (see api::kv); the transport only
    // guards memory.
    let decode_max = PEER_MESSAGE_BYTES_MAX;
    // The etcd Lock and Election services run the built-in recipe modules like any call.
    let recipes = Arc::new(Recipes::new(
        server.clone(),
        lessor.clone(),
        modules.calls().clone(),
    ));
    // Services here are listed for reflection in `reflection::CLIENT_SERVICES`.
    let router = tonic::transport::Server::builder()
        .add_service(LearnerGate::new(
            KvServer::new(api::kv::KvService::new(server.clone()))
                .max_decoding_message_size(decode_max)
                .max_encoding_message_size(usize::MAX),
            server.clone(),
        ))
        .add_service(LearnerGate::new(
            MaintenanceServer::new(api::maintenance::MaintenanceService::new(
                server.clone(),
                state_path.to_path_buf(),
                config.quota_backend_bytes,
            )),
            server.clone(),
        ))
        .add_service(LearnerGate::new(
            ClusterServer::new(api::cluster::ClusterService::new(server.clone())),
            server.clone(),
        ))
        .add_service(LearnerGate::new(
            watch_service(server, hub, config, signals),
            server.clone(),
        ))
        .add_service(LearnerGate::new(
            LeaseServer::new(api::lease::LeaseService::new(
                server.clone(),
                lessor.clone(),
                signals.stop.clone(),
            )),
            server.clone(),
        ))
        .add_service(LearnerGate::new(
            LockServer::new(api::lock::LockService::new(recipes.clone())),
            server.clone(),
        ))
        .add_service(LearnerGate::new(
            ElectionServer::new(api::election::ElectionService::new(recipes.clone())),
            server.clone(),
        ))
        .add_service(LearnerGate::new(
            ModulesServer::new(modules.clone()).max_decoding_message_size(decode_max),
            server.clone(),
        ))
        .add_service(signals.health.clone())
        .add_service(reflection::v1_service()?)
        .add_service(reflection::v1alpha_service()?);
    Ok(router)
}

/// etcd's Watch service; like etcd, its messages may be as large as a request plus gRPC
/// overhead coming in, and of any size going out.
fn watch_service(
    server: &Arc<Server>,
    hub: &Arc<WatchHub>,
    config: &NodeConfig,
    signals: &liveness::Signals,
) -> WatchServer<api::watch::WatchService> {
    let interval = Duration::from_millis(config.watch_progress_notify_interval_ms);
    let service = api::watch::WatchService::new(hub.clone(), server.clone(), interval)
        .with_settled(server.settled().clone())
        .with_stop(signals.stop.clone())
        .with_leader_loss(signals.leader_loss.clone());
    WatchServer::new(service)
        .max_decoding_message_size(REQUEST_BYTES_MAX + GRPC_OVERHEAD_BYTES)
        .max_encoding_message_size(usize::MAX)
}

/// Serves `router` on every connection `listener` accepts, each wrapped by `wrap`.
async fn serve<IO>(
    router: tonic::transport::server::Router,
    listener: tokio::net::TcpListener,
    wrap: fn(tokio::net::TcpStream) -> IO,
    mut shutdown: Shutdown,
) where
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
{
    // Builder::tcp_nodelay only applies to sockets tonic binds itself; ours need it set here, or
    // Nagle's algorithm adds ~40 ms to every small reply.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        move |accepted| {
            accepted.map(|stream| {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::warn!(error = %e, "cannot disable Nagle on a connection");
                }
                wrap(stream)
            })
        },
    );
    if let Err(e) = router
        .serve_with_incoming_shutdown(incoming, async move { shutdown.stopped().await })
        .await
    {
        tracing::error!(error = %e, "gRPC server failed");
    }
}

/// A fresh member (no log, no vote) initializes Raft with the founding membership. Every founding
/// member does the same with identical input, so whichever runs first wins and the others find
/// the cluster already formed — which openraft reports as an error we can ignore.
async fn bootstrap_if_new(raft: &Raft, config: &NodeConfig) -> anyhow::Result<()> {
    if raft
        .is_initialized()
        .await
        .context("raft stopped during start-up")?
    {
        tracing::info!("existing data dir: rejoining the cluster without bootstrapping");
        return Ok(());
    }
    if config.join_existing {
        tracing::info!("joining: waiting for the leader to replicate the cluster to this member");
        return Ok(());
    }
    let members: BTreeMap<_, _> = config.founding_members().into_iter().collect();
    match raft.initialize(members).await {
        Ok(()) => tracing::info!("bootstrapped a new cluster"),
        Err(e) => tracing::info!(reason = %e, "cluster already initialized by a peer"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
