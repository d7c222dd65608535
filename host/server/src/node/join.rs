//! Who this member is: its member id and cluster id. Founding members derive both from their
//! flags; a member added at run time (`--initial-cluster-state existing`) asks the members it
//! was told about which id the leader gave its peer URLs, and remembers the answer in its data
//! dir so restarts need nobody. Also: noticing that this member was removed.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::Instant;
use tonic::transport::Endpoint;

use openraft::type_config::async_runtime::WatchReceiver;

use crate::node::NodeConfig;
use crate::raft::channels::peer_client;
use baton_apply::entry::{MemberId, Raft};
use baton_limits::{
    JOIN_LOOKUP_RETRY_MS, JOIN_LOOKUP_WAIT_MS, PEER_CONNECT_TIMEOUT_MS, REMOVAL_POLL_MS,
    REMOVAL_PROBE_EVERY_POLLS,
};
use baton_proto::batonpb::{MembershipRequest, MembershipResponse};

/// Written once a joining member learned its ids: `<member id hex> <cluster id hex>`.
const IDENTITY_FILE: &str = "member-identity";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub member_id: MemberId,
    pub cluster_id: u64,
}

/// This member's identity: remembered, derived (founding member) or looked up (joining member).
pub async fn resolve(config: &NodeConfig) -> anyhow::Result<Identity> {
    let path = config.data_dir.join(IDENTITY_FILE);
    if let Some(identity) = read(&path)? {
        return Ok(identity);
    }
    if !config.join_existing {
        return Ok(Identity {
            member_id: config.member_id()?,
            cluster_id: config.cluster_id(),
        });
    }
    let identity = look_up(config).await?;
    write(&path, identity)?;
    tracing::info!(
        member_id = format!("{:x}", identity.member_id),
        cluster_id = format!("{:x}", identity.cluster_id),
        "joining an existing cluster"
    );
    Ok(identity)
}

fn read(path: &Path) -> anyhow::Result<Option<Identity>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut parts = text.split_whitespace();
    let mut next_hex = || {
        parts
            .next()
            .and_then(|p| u64::from_str_radix(p, 16).ok())
            .with_context(|| format!("{} is malformed", path.display()))
    };
    Ok(Some(Identity {
        member_id: next_hex()?,
        cluster_id: next_hex()?,
    }))
}

fn write(path: &Path, identity: Identity) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let text = format!("{:x} {:x}\n", identity.member_id, identity.cluster_id);
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The peer URLs of every other member in `--initial-cluster`.
pub(crate) fn other_peers(config: &NodeConfig) -> Vec<String> {
    let own = &config.initial_advertise_peer_urls;
    config
        .initial_cluster
        .iter()
        .filter(|(name, _)| *name != config.name)
        .flat_map(|(_, urls)| urls)
        .filter(|url| !own.contains(url))
        .cloned()
        .collect()
}

/// Asks every other member in `--initial-cluster`, until one lists our peer URLs.
async fn look_up(config: &NodeConfig) -> anyhow::Result<Identity> {
    let own = &config.initial_advertise_peer_urls;
    let peers = other_peers(config);
    if peers.is_empty() {
        bail!("--initial-cluster-state existing needs the cluster's members in --initial-cluster");
    }
    let deadline = Instant::now() + Duration::from_millis(JOIN_LOOKUP_WAIT_MS);
    let mut last = String::from("no member answered");
    while Instant::now() < deadline {
        for url in &peers {
            match ask(url, own).await {
                Ok(Some(identity)) => return Ok(identity),
                Ok(None) => last = format!("{url} does not list peer URLs {own:?}"),
                Err(e) => last = format!("{url}: {e:#}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(JOIN_LOOKUP_RETRY_MS)).await;
    }
    bail!("cannot join the existing cluster (add this member with `member add` first): {last}")
}

async fn membership_of(url: &str) -> anyhow::Result<MembershipResponse> {
    let channel = Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_millis(PEER_CONNECT_TIMEOUT_MS))
        .timeout(Duration::from_millis(PEER_CONNECT_TIMEOUT_MS))
        .connect()
        .await?;
    Ok(peer_client(channel)
        .membership(MembershipRequest {})
        .await?
        .into_inner())
}

async fn ask(url: &str, own: &[String]) -> anyhow::Result<Option<Identity>> {
    let reply = membership_of(url).await?;
    Ok(reply
        .members
        .iter()
        .find(|m| m.peer_ur_ls.iter().any(|u| own.contains(u)))
        .map(|m| Identity {
            member_id: m.id,
            cluster_id: reply.cluster_id,
        }))
}

/// Resolves once this member learns it was removed, like etcd's, which then stops. Either its
/// own committed membership drops it (a removed leader, or a follower that received the change),
/// or — while it sees no leader, as a member cut off by its removal does — another member
/// reports a newer committed membership without it. A member that never received a membership
/// listing itself (added, then removed before the leader reached it) asks `initial_peers`
/// instead, and takes a peer's membership, committed and pending alike, without its id as
/// final. Ids are never reused, so that is final.
pub async fn removed_from_cluster(raft: &Raft, id: MemberId, initial_peers: &[String]) {
    let mut listed_before = false;
    for poll in 1u64.. {
        let (listed, index, peers, leaderless) = {
            let metrics = raft.metrics();
            let m = metrics.borrow_watched();
            let committed = &m.committed_membership_config;
            let peers: Vec<String> = committed
                .membership()
                .nodes()
                .filter(|(node, _)| **node != id)
                .filter_map(|(_, member)| member.peer_urls.first().cloned())
                .collect();
            (
                committed.membership().get_node(&id).is_some(),
                committed.log_id().map_or(0, |l| l.index()),
                peers,
                m.current_leader.is_none(),
            )
        };
        if listed_before && !listed {
            return;
        }
        listed_before |= listed;
        if leaderless && poll.is_multiple_of(REMOVAL_PROBE_EVERY_POLLS) {
            // Listed: the members of its own membership, for a newer one without it. Never
            // listed (no log yet): the members it was told about, for any without it.
            let dropped = if listed {
                dropped_by_a_peer(&peers, id, index, false).await
            } else {
                dropped_by_a_peer(initial_peers, id, 0, true).await
            };
            if dropped {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(REMOVAL_POLL_MS)).await;
    }
}

/// Whether one of `peers` reports a membership committed after `index` that does not list
/// `id` — and, with `pending_too`, no change still pending that lists it either (asked by a
/// member that never received its own log, which got its id from such a membership).
async fn dropped_by_a_peer(peers: &[String], id: MemberId, index: u64, pending_too: bool) -> bool {
    for url in peers {
        if let Ok(reply) = membership_of(url).await
            && reply.committed_membership_index > index
            && !reply.committed_member_ids.contains(&id)
            && !(pending_too && reply.members.iter().any(|m| m.id == id))
        {
            if pending_too {
                tracing::info!(peer = %url, "a peer's membership does not list this member, which never received its log");
            } else {
                tracing::info!(peer = %url, "a peer's newer membership no longer lists this member");
            }
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(IDENTITY_FILE);
        assert_eq!(read(&path).unwrap(), None);
        let identity = Identity {
            member_id: 0xdead_beef_0000_0001,
            cluster_id: 42,
        };
        write(&path, identity).unwrap();
        assert_eq!(read(&path).unwrap(), Some(identity));
        std::fs::write(&path, "zz").unwrap();
        assert!(read(&path).is_err());
    }
}
