//! A member's start-up configuration, with etcd's flag names and defaults where they apply, and
//! the identities derived from it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use crate::server::compaction::AutoCompaction;
use baton_apply::entry::{Member, MemberId};

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer_urls: Vec<String>,
    pub initial_advertise_peer_urls: Vec<String>,
    /// Every founding member: name and peer URLs.
    pub initial_cluster: Vec<(String, Vec<String>)>,
    pub initial_cluster_token: String,
    /// Join a running cluster this member was added to instead of founding one
    /// (`--initial-cluster-state existing`).
    pub join_existing: bool,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    /// Applied entries between snapshots (etcd's `--snapshot-count`).
    pub snapshot_count: u64,
    /// Period of watch progress notifications (etcd
    /// `--experimental-watch-progress-notify-interval`).
    pub watch_progress_notify_interval_ms: u64,
    /// Size of the state database at which NOSPACE is raised (etcd's
    /// `--quota-backend-bytes`); 0 disables the quota.
    pub quota_backend_bytes: u64,
    /// etcd's `--auto-compaction-mode` and `--auto-compaction-retention`.
    pub auto_compaction: AutoCompaction,
}

/// Parses etcd's `--initial-cluster` form: `n1=http://a:2380,n2=http://b:2380`. A name may
/// appear more than once to list several peer URLs.
pub fn parse_initial_cluster(spec: &str) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let mut members: Vec<(String, Vec<String>)> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, url) = part
            .split_once('=')
            .with_context(|| format!("--initial-cluster entry {part:?} is not NAME=URL"))?;
        match members.iter_mut().find(|(n, _)| n == name) {
            Some((_, urls)) => urls.push(url.to_string()),
            None => members.push((name.to_string(), vec![url.to_string()])),
        }
    }
    if members.is_empty() {
        bail!("--initial-cluster names no members");
    }
    Ok(members)
}

/// The socket address a `http://host:port` URL asks us to listen on.
pub fn listen_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url:?}: only http:// URLs are supported (no TLS yet)"))?;
    let hostport = rest.trim_end_matches('/');
    hostport
        .parse()
        .or_else(|_| {
            std::net::ToSocketAddrs::to_socket_addrs(hostport)
                .map_err(anyhow::Error::from)
                .and_then(|mut a| a.next().context("no address"))
        })
        .with_context(|| format!("{url:?} is not a valid host:port"))
}

/// A stable 64-bit id from labelled parts (never 0: etcd treats 0 as "none").
fn derive_id(label: &str, parts: &[&str]) -> u64 {
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    for p in parts {
        h.update([0u8]);
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes).max(1)
}

impl NodeConfig {
    /// Member ids depend on the cluster token and each member's name and peer URLs, so every
    /// founding member computes the same ids for everyone without talking to anyone.
    pub fn member_id_of(&self, name: &str, peer_urls: &[String]) -> MemberId {
        let mut parts = vec![self.initial_cluster_token.as_str(), name];
        parts.extend(peer_urls.iter().map(String::as_str));
        derive_id("baton-member", &parts)
    }

    pub fn founding_members(&self) -> Vec<(MemberId, Member)> {
        self.initial_cluster
            .iter()
            .map(|(name, urls)| {
                // Identical on every founding member (the bootstrap membership entry must be the
                // same everywhere), so client URLs are published later, not written here.
                let member = Member {
                    name: name.clone(),
                    peer_urls: urls.clone(),
                    client_urls: Vec::new(),
                    is_learner: false,
                };
                (self.member_id_of(name, urls), member)
            })
            .collect()
    }

    pub fn member_id(&self) -> anyhow::Result<MemberId> {
        let (_, urls) = self
            .initial_cluster
            .iter()
            .find(|(n, _)| *n == self.name)
            .with_context(|| {
                format!("--name {:?} is not listed in --initial-cluster", self.name)
            })?;
        Ok(self.member_id_of(&self.name, urls))
    }

    pub fn cluster_id(&self) -> u64 {
        let mut ids: Vec<String> = self
            .founding_members()
            .iter()
            .map(|(id, _)| format!("{id:016x}"))
            .collect();
        ids.sort();
        let mut parts = vec![self.initial_cluster_token.as_str()];
        parts.extend(ids.iter().map(String::as_str));
        derive_id("baton-cluster", &parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_cluster_groups_urls_by_name() {
        let parsed = parse_initial_cluster("a=http://1:1,b=http://2:2,a=http://3:3").unwrap();
        assert_eq!(
            parsed,
            vec![
                (
                    "a".to_string(),
                    vec!["http://1:1".to_string(), "http://3:3".to_string()]
                ),
                ("b".to_string(), vec!["http://2:2".to_string()]),
            ]
        );
        assert!(parse_initial_cluster("nonsense").is_err());
    }

    #[test]
    fn listen_addr_accepts_http_only() {
        assert_eq!(listen_addr("http://127.0.0.1:2379").unwrap().port(), 2379);
        assert!(listen_addr("https://127.0.0.1:2379").is_err());
    }
}
