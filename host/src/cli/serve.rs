//! `baton serve`: etcd's flags, so scripts and habits carry over.

use std::path::PathBuf;

use clap::Args;

use crate::limits::SNAPSHOT_LOGS_SINCE_LAST;
use crate::node::{self, NodeConfig, config::parse_initial_cluster};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// This member's name; must appear in --initial-cluster.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Where this member keeps its Raft log, state and snapshots.
    #[arg(long, default_value = "./baton-data")]
    pub data_dir: PathBuf,
    /// URLs to serve clients on, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub listen_client_urls: Vec<String>,
    /// Client URLs announced to the cluster (default: --listen-client-urls).
    #[arg(long, value_delimiter = ',')]
    pub advertise_client_urls: Vec<String>,
    /// URLs to serve peers on, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2380")]
    pub listen_peer_urls: Vec<String>,
    /// Peer URLs announced to the cluster (default: --listen-peer-urls).
    #[arg(long, value_delimiter = ',')]
    pub initial_advertise_peer_urls: Vec<String>,
    /// Founding members: name=peerURL,... (default: this member alone).
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// Distinguishes clusters started from the same member list.
    #[arg(long, default_value = "baton-cluster")]
    pub initial_cluster_token: String,
    /// Accepted for etcd compatibility; a member with an existing data dir always rejoins.
    #[arg(long, default_value = "new")]
    pub initial_cluster_state: String,
    /// Leader heartbeat interval in milliseconds.
    #[arg(long = "heartbeat-interval", default_value_t = 100)]
    pub heartbeat_interval_ms: u64,
    /// Election timeout in milliseconds (followers wait between this and twice this).
    #[arg(long = "election-timeout", default_value_t = 1000)]
    pub election_timeout_ms: u64,
    /// Applied entries between snapshots; the log behind a snapshot is then purged.
    #[arg(long, default_value_t = SNAPSHOT_LOGS_SINCE_LAST)]
    pub snapshot_count: u64,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let advertise_client_urls = if args.advertise_client_urls.is_empty() {
        args.listen_client_urls.clone()
    } else {
        args.advertise_client_urls
    };
    let advertise_peer_urls = if args.initial_advertise_peer_urls.is_empty() {
        args.listen_peer_urls.clone()
    } else {
        args.initial_advertise_peer_urls
    };
    let initial_cluster = match &args.initial_cluster {
        Some(spec) => parse_initial_cluster(spec)?,
        None => vec![(args.name.clone(), advertise_peer_urls.clone())],
    };
    node::run(NodeConfig {
        name: args.name,
        data_dir: args.data_dir,
        listen_client_urls: args.listen_client_urls,
        advertise_client_urls,
        listen_peer_urls: args.listen_peer_urls,
        initial_advertise_peer_urls: advertise_peer_urls,
        initial_cluster,
        initial_cluster_token: args.initial_cluster_token,
        heartbeat_interval_ms: args.heartbeat_interval_ms,
        election_timeout_ms: args.election_timeout_ms,
        snapshot_count: args.snapshot_count.max(1),
    })
    .await
}
