//! The composition root: open storage, build Raft, bootstrap a new cluster if this data dir is
//! fresh, serve clients and peers, and shut everything down together.

pub mod config;
pub mod join;
mod liveness;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use redb::Database;
use tokio::sync::watch;
use tonic_health::ServingStatus;

use crate::api;
use crate::api::learner_gate::LearnerGate;
use crate::modules::park::Parking;
use crate::raft::batch::Proposer;
use crate::raft::channels::PeerChannels;
use crate::raft::network::PeerNetwork;
use crate::raft::peer_service::PeerService;
use crate::recipe::Recipes;
use crate::server::lease::ends::{LeaseEnds, Observers};
use crate::server::lease::{Deadlines, Lessor};
use crate::server::lease_expiry;
use crate::server::membership::LeaderMembership;
use crate::server::{self, Server};
use baton_apply::entry::Raft;
use baton_apply::raft::{LogStore, StateMachine};
use baton_limits::{
    GRPC_OVERHEAD_BYTES, PEER_MESSAGE_BYTES_MAX, PUBLISH_RETRY_MS, PUBLISH_WAIT_MS,
    REQUEST_BYTES_MAX, SNAPSHOT_CATCH_UP_ENTRIES, SNAPSHOT_TRANSFER_STALL_MS, STATE_DB_CACHE_BYTES,
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
use baton_watch::WatchHub;
pub use config::NodeConfig;

/// Runs a member until SIGINT/SIGTERM or its removal (then `Ok`), or until Raft stops on a
/// fatal error (then `Err`, so the process exits with a failure status).
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    if config.initial_cluster.len().is_multiple_of(2) {
        tracing::warn!(
            members = config.initial_cluster.len(),
            "an even number of members tolerates no more failures than one fewer; use 3 or 5"
        );
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let identity = join::resolve(&config).await?;
    let member_id = identity.member_id;
    let cluster_id = identity.cluster_id;

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
    let state_machine = StateMachine::open(state_db.clone(), config.data_dir.join("snapshot.bin"))
        .context("opening the state machine")?;
    let hub = WatchHub::new(
        state_machine
            .revision()
            .context("reading the state machine's revision")?,
    );
    let state_machine = state_machine
        .with_lease_observer(Arc::new(lease_observers))
        .with_event_sink(hub.clone());
    let applied = state_machine.applied_index();
    let snapshots = state_machine.snapshots().clone();
    let store = state_machine.store();
    let runtime = state_machine.runtime().clone();

    let channels = PeerChannels::default();
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
    let raft = Raft::new(
        member_id,
        Arc::new(raft_config),
        PeerNetwork::new(channels.clone()),
        log_store,
        state_machine,
    )
    .await
    .context("starting raft")?;
    let fresh = bootstrap_if_new(&raft, &config).await?;

    let catch_up = hub.spawn_catch_up(store.clone());
    let lessor = Arc::new(Lessor::new(
        raft.clone(),
        member_id,
        store.clone(),
        applied.clone(),
        lease_deadlines,
        min_ttl_s(config.election_timeout_ms),
    ));
    let proposer = Proposer::start(raft.clone());
    let server = Arc::new(Server::new(
        raft.clone(),
        proposer.clone(),
        member_id,
        cluster_id,
        store,
        applied,
        channels,
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = vec![tokio::spawn(lease_expiry::run(
        lessor.clone(),
        stop_rx.clone(),
    ))];
    let mut background = Vec::new();
    if config.quota_backend_bytes > 0 {
        background.push(server::alarm::spawn_quota_watch(
            server.clone(),
            state_path.clone(),
            config.quota_backend_bytes,
        ));
    }
    background.extend(server::compaction::spawn_auto_compaction(
        server.clone(),
        config.auto_compaction,
    ));
    // A new cluster gets the built-in modules through the log, so every replica stores them.
    let builtins =
        fresh.then(|| tokio::spawn(crate::modules::builtin::deploy_builtins(server.clone())));
    for url in &config.listen_peer_urls {
        let addr = config::listen_addr(url)?;
        let members = Arc::new(LeaderMembership::new(raft.clone(), cluster_id));
        let svc = RaftPeerServer::new(PeerService::new(
            raft.clone(),
            proposer.clone(),
            lessor.clone(),
            members,
            snapshots.clone(),
        ))
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
        let router = tonic::transport::Server::builder().add_service(svc);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for peers on {addr}"))?;
        tasks.push(tokio::spawn(serve(router, listener, stop_rx.clone())));
    }
    // Like etcd, serve clients only once this member's client URLs are in the replicated
    // membership (so MemberList is complete for anyone who can reach it) — but not forever: a
    // member restarted without a quorum still serves what it can after the wait.
    let publisher = {
        let server = server.clone();
        let urls = config.advertise_client_urls.clone();
        let name = config.name.clone();
        tokio::spawn(async move { server.publish_until_done(name, urls).await })
    };
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
    let modules = crate::modules::service::ModulesService::new(
        server.clone(),
        runtime,
        Parking::new(hub.clone(), lease_ends),
    );
    let (health, health_service) = liveness::Health::start().await;
    let (leader_monitor, leader_loss) = server::leader_loss::spawn_monitor(
        server.clone(),
        Duration::from_millis(config.election_timeout_ms),
    );
    background.push(leader_monitor);
    let signals = liveness::Signals {
        stop: stop_rx.clone(),
        health: health_service,
        leader_loss,
    };
    for url in &config.listen_client_urls {
        let addr = config::listen_addr(url)?;
        let router = client_router(
            &server,
            &lessor,
            &modules,
            &state_path,
            &hub,
            &config,
            &signals,
        );
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for clients on {addr}"))?;
        tasks.push(tokio::spawn(serve(router, listener, stop_rx.clone())));
    }
    health.set(ServingStatus::Serving).await;
    tracing::info!(
        name = %config.name, member_id = format!("{member_id:x}"), cluster_id = format!("{cluster_id:x}"),
        clients = ?config.listen_client_urls, peers = ?config.listen_peer_urls, "baton member serving"
    );

    let fatal = tokio::select! {
        () = shutdown_signal() => {
            tracing::info!("shutting down");
            None
        }
        () = join::removed_from_cluster(&raft, member_id) => {
            tracing::warn!("this member was removed from the cluster; shutting down");
            None
        }
        fatal = liveness::raft_failed(&raft) => Some(fatal),
    };
    health.set(ServingStatus::NotServing).await;
    let _ = stop_tx.send(true);
    if let Some(fatal) = fatal {
        return Err(liveness::failed(fatal).await);
    }
    publisher.abort();
    catch_up.abort();
    if let Some(builtins) = builtins {
        builtins.abort();
    }
    for task in background {
        task.abort();
    }
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let _ = raft.shutdown().await;
    Ok(())
}

fn client_router(
    server: &Arc<Server>,
    lessor: &Arc<Lessor>,
    modules: &crate::modules::service::ModulesService,
    state_path: &std::path::Path,
    hub: &Arc<WatchHub>,
    config: &NodeConfig,
    signals: &liveness::Signals,
) -> tonic::transport::server::Router {
    // The services enforce etcd's exact size limits themselves (see api::kv); the transport only
    // guards memory.
    let decode_max = PEER_MESSAGE_BYTES_MAX;
    let recipes = Arc::new(Recipes::new(
        server.clone(),
        hub.clone(),
        lessor.clone(),
        signals.stop.clone(),
    ));
    tonic::transport::Server::builder()
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
            )),
            server.clone(),
        ))
        .add_service(LearnerGate::new(
            LockServer::new(api::lock::LockService::new(recipes.clone())),
            server.clone(),
        ))
        .add_service(LearnerGate::new(
            ElectionServer::new(api::election::ElectionService::new(recipes)),
            server.clone(),
        ))
        .add_service(ModulesServer::new(modules.clone()).max_decoding_message_size(decode_max))
        .add_service(signals.health.clone())
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

async fn serve(
    router: tonic::transport::server::Router,
    listener: tokio::net::TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    // Builder::tcp_nodelay only applies to sockets tonic binds itself; ours need it set here, or
    // Nagle's algorithm adds ~40 ms to every small reply.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |accepted| {
            accepted.inspect(|stream| {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::warn!(error = %e, "cannot disable Nagle on a connection");
                }
            })
        },
    );
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
    {
        tracing::error!(error = %e, "gRPC server failed");
    }
}

/// A fresh member (no log, no vote) initializes Raft with the founding membership. Every founding
/// member does the same with identical input, so whichever runs first wins and the others find
/// the cluster already formed — which openraft reports as an error we can ignore. Returns
/// whether this member was fresh.
async fn bootstrap_if_new(raft: &Raft, config: &NodeConfig) -> anyhow::Result<bool> {
    if raft
        .is_initialized()
        .await
        .context("raft stopped during start-up")?
    {
        tracing::info!("existing data dir: rejoining the cluster without bootstrapping");
        return Ok(false);
    }
    if config.join_existing {
        tracing::info!("joining: waiting for the leader to replicate the cluster to this member");
        // The cluster already has the built-in modules.
        return Ok(false);
    }
    let members: BTreeMap<_, _> = config.founding_members().into_iter().collect();
    match raft.initialize(members).await {
        Ok(()) => tracing::info!("bootstrapped a new cluster"),
        Err(e) => tracing::info!(reason = %e, "cluster already initialized by a peer"),
    }
    Ok(true)
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
