//! Membership changes with etcd's rules and errors, made by the leader through openraft's joint
//! consensus, and routed there from any member.
//!
//! - A voter is added the way etcd adds one: straight into the voter set (joint consensus
//!   `{old} -> {old, new} -> {old + new}`), even before its process runs. Strict reconfiguration
//!   checks (etcd's default) come first, with etcd's two answers: "not enough started members"
//!   when too few voters have ever published their name (etcd's "started") to keep a quorum of
//!   the new set, and "unhealthy cluster" when the leader does not currently hear from the
//!   voters it needs (for an add: every voter; for a removal: a quorum of what is left). etcd
//!   wants each connection up for 5 s; Baton counts a voter whose heartbeat was acknowledged
//!   within an election timeout. A learner is added as an openraft learner (one uniform entry) and becomes
//!   a voter through `promote`, which etcd allows only once it is in sync with the leader.
//! - Ids of added members are derived from the cluster id, the peer URLs, the leader's clock and
//!   the leader's last log index, so no two proposals can produce the same input; a 64-bit
//!   collision with a current member is refused with etcd's "member ID already exist".
//! - Removal takes a voter out through joint consensus (a removed leader steps down once the
//!   new configuration commits) or drops a learner.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::errors::{ClientWriteError, RaftError};
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::{ChangeMembers, Instant as _};
use sha2::{Digest, Sha256};
use tonic::{Code, Status};

use crate::raft::peer_service::MembershipLeader;
use crate::raft::propose::{NOT_LEADER, leader_time_ms};
use crate::server::Server;
use baton_apply::entry::{Member, MemberId, Raft, TypeConfig};
use baton_limits::{LEARNER_READY_PERCENT, LEARNERS_MAX};
use baton_proto::batonpb::MembershipResponse;
use baton_proto::etcdserverpb as pb;

const MEMBER_EXIST: &str = "etcdserver: member ID already exist";
const PEER_URL_EXIST: &str = "etcdserver: Peer URLs already exists";
const NOT_ENOUGH_STARTED: &str =
    "etcdserver: re-configuration failed due to not enough started members";
const UNHEALTHY: &str = "etcdserver: unhealthy cluster";
const BAD_URLS: &str = "etcdserver: given member URLs are invalid";
const MEMBER_NOT_FOUND: &str = "etcdserver: member not found";
const NOT_LEARNER: &str = "etcdserver: can only promote a learner member";
const LEARNER_NOT_READY: &str =
    "etcdserver: can only promote a learner member which is in sync with leader";
const TOO_MANY_LEARNERS: &str = "etcdserver: too many learner members in cluster";

type Metrics = openraft::RaftMetrics<TypeConfig>;
type Membership = openraft::Membership<MemberId, Member>;

/// Every member of `membership` in etcd's form, ordered by id as etcd lists them.
pub(crate) fn members_of(membership: &Membership) -> Vec<pb::Member> {
    let voters: BTreeSet<MemberId> = membership.voter_ids().collect();
    let mut members: Vec<pb::Member> = membership
        .nodes()
        .map(|(id, node)| pb::Member {
            id: *id,
            name: node.name.clone(),
            peer_ur_ls: node.peer_urls.clone(),
            client_ur_ls: node.client_urls.clone(),
            is_learner: !voters.contains(id),
        })
        .collect();
    members.sort_by_key(|m| m.id);
    members
}

/// The leader side of membership changes; on any other member they answer `NOT_LEADER`.
pub(crate) struct LeaderMembership {
    raft: Raft,
    cluster_id: u64,
}

impl LeaderMembership {
    pub(crate) fn new(raft: Raft, cluster_id: u64) -> Self {
        Self { raft, cluster_id }
    }

    /// This member's metrics, if it leads.
    fn leader_metrics(&self) -> Result<Metrics, Status> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        if metrics.current_leader != Some(metrics.id) {
            return Err(Status::failed_precondition(NOT_LEADER));
        }
        Ok(metrics)
    }

    /// Voters that acknowledged the leader within an election timeout, the leader included
    /// (etcd's "connected" members for its strict reconfiguration checks).
    fn connected_voters(&self, metrics: &Metrics) -> BTreeSet<MemberId> {
        let timeout = Duration::from_millis(self.raft.config().election_timeout_max);
        let heartbeats = metrics.heartbeat.clone().unwrap_or_default();
        metrics
            .membership_config
            .membership()
            .voter_ids()
            .filter(|id| {
                *id == metrics.id
                    || heartbeats
                        .get(id)
                        .and_then(|t| t.as_ref())
                        .is_some_and(|t| t.elapsed() < timeout)
            })
            .collect()
    }

    /// etcd's checks before removing voter `id`: the started voters left must make a quorum of
    /// what is left; a voter the leader does not hear from may always go (it is not part of
    /// the active quorum); otherwise the connected voters minus the removed one must still make
    /// a quorum of what is left.
    fn check_voter_removal(&self, metrics: &Metrics, id: MemberId) -> Result<(), Status> {
        let membership = metrics.membership_config.membership();
        let voters = membership.voter_ids().count();
        let mut started = started_voters(membership);
        started.remove(&id);
        if started.len() < quorum(voters - 1) {
            return Err(Status::failed_precondition(NOT_ENOUGH_STARTED));
        }
        let connected = self.connected_voters(metrics);
        if id != metrics.id && !connected.contains(&id) {
            return Ok(());
        }
        if connected.len() - 1 < quorum(voters - 1) {
            return Err(Status::unavailable(UNHEALTHY));
        }
        Ok(())
    }

    async fn change(
        &self,
        change: ChangeMembers<MemberId, Member>,
    ) -> Result<Vec<pb::Member>, Status> {
        match self.raft.change_membership(change, false).await {
            Ok(response) => Ok(match response.membership {
                Some(m) => members_of(&m),
                None => members_of(
                    self.raft
                        .metrics()
                        .borrow_watched()
                        .membership_config
                        .membership(),
                ),
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(Status::failed_precondition(NOT_LEADER))
            }
            Err(e) => Err(Status::unavailable(format!(
                "baton: membership change failed: {e}"
            ))),
        }
    }
}

/// etcd accepts `scheme://host:port` URLs without a path.
fn check_urls(urls: &[String]) -> Result<(), Status> {
    let valid = |url: &String| {
        let Some((scheme, rest)) = url.split_once("://") else {
            return false;
        };
        let hostport = rest.trim_end_matches('/');
        matches!(scheme, "http" | "https")
            && !hostport.contains('/')
            && hostport
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    };
    if urls.is_empty() || !urls.iter().all(valid) {
        return Err(Status::invalid_argument(BAD_URLS));
    }
    Ok(())
}

/// Refuses `urls` if a member other than `except` already uses one of them.
fn check_urls_unused(
    membership: &Membership,
    urls: &[String],
    except: Option<MemberId>,
) -> Result<(), Status> {
    let taken = membership
        .nodes()
        .any(|(id, node)| Some(*id) != except && node.peer_urls.iter().any(|u| urls.contains(u)));
    if taken {
        return Err(Status::failed_precondition(PEER_URL_EXIST));
    }
    Ok(())
}

fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// Voters that have published their name: etcd's "started" members.
fn started_voters(membership: &Membership) -> BTreeSet<MemberId> {
    membership
        .voter_ids()
        .filter(|id| membership.get_node(id).is_some_and(|m| !m.name.is_empty()))
        .collect()
}

/// etcd's rule for adding a voter: the started voters must make a quorum of the larger set,
/// except that a lone started member may always take a second one.
fn ready_to_add_voter(voters: usize, started: usize) -> bool {
    let members = voters + 1;
    (started == 1 && members == 2) || started >= quorum(members)
}

/// A fresh member id; see the module doc for why it is never reused.
fn new_member_id(cluster_id: u64, urls: &[String], metrics: &Metrics) -> MemberId {
    let mut h = Sha256::new();
    h.update(b"baton-added-member");
    h.update(cluster_id.to_be_bytes());
    for url in urls {
        h.update([0u8]);
        h.update(url.as_bytes());
    }
    h.update(leader_time_ms().to_be_bytes());
    h.update(metrics.last_log_index.unwrap_or(0).to_be_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(bytes).max(1)
}

fn not_found() -> Status {
    Status::new(Code::NotFound, MEMBER_NOT_FOUND)
}

#[tonic::async_trait]
impl MembershipLeader for LeaderMembership {
    fn describe(&self) -> MembershipResponse {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let committed = &metrics.committed_membership_config;
        MembershipResponse {
            cluster_id: self.cluster_id,
            members: members_of(metrics.membership_config.membership()),
            committed_membership_index: committed.log_id().map_or(0, |id| id.index()),
            committed_member_ids: committed.membership().nodes().map(|(id, _)| *id).collect(),
        }
    }

    async fn add(&self, req: pb::MemberAddRequest) -> Result<pb::MemberAddResponse, Status> {
        check_urls(&req.peer_ur_ls)?;
        let metrics = self.leader_metrics()?;
        let membership = metrics.membership_config.membership();
        let voters = membership.voter_ids().count();
        if !req.is_learner && !ready_to_add_voter(voters, started_voters(membership).len()) {
            return Err(Status::failed_precondition(NOT_ENOUGH_STARTED));
        }
        if self.connected_voters(&metrics).len() < voters {
            return Err(Status::unavailable(UNHEALTHY));
        }
        // Like etcd, the health checks come before the checks of the change itself.
        check_urls_unused(membership, &req.peer_ur_ls, None)?;
        if req.is_learner && membership.learner_ids().count() >= LEARNERS_MAX {
            return Err(Status::failed_precondition(TOO_MANY_LEARNERS));
        }
        let id = new_member_id(self.cluster_id, &req.peer_ur_ls, &metrics);
        if membership.get_node(&id).is_some() {
            return Err(Status::failed_precondition(MEMBER_EXIST));
        }
        let node = Member {
            name: String::new(),
            peer_urls: req.peer_ur_ls.clone(),
            client_urls: Vec::new(),
            is_learner: req.is_learner,
        };
        let nodes = BTreeMap::from([(id, node)]);
        let change = if req.is_learner {
            ChangeMembers::AddNodes(nodes)
        } else {
            ChangeMembers::AddVoters(nodes)
        };
        let members = self.change(change).await?;
        tracing::info!(id = format!("{id:x}"), urls = ?req.peer_ur_ls, learner = req.is_learner, "member added");
        Ok(pb::MemberAddResponse {
            header: None,
            member: Some(pb::Member {
                id,
                name: String::new(),
                peer_ur_ls: req.peer_ur_ls,
                client_ur_ls: Vec::new(),
                is_learner: req.is_learner,
            }),
            members,
        })
    }

    async fn remove(
        &self,
        req: pb::MemberRemoveRequest,
    ) -> Result<pb::MemberRemoveResponse, Status> {
        let metrics = self.leader_metrics()?;
        let membership = metrics.membership_config.membership();
        if membership.get_node(&req.id).is_none() {
            return Err(not_found());
        }
        let is_voter = membership.voter_ids().any(|v| v == req.id);
        let change = if is_voter {
            self.check_voter_removal(&metrics, req.id)?;
            ChangeMembers::RemoveVoters(BTreeSet::from([req.id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([req.id]))
        };
        let members = self.change(change).await?;
        tracing::info!(id = format!("{:x}", req.id), "member removed");
        Ok(pb::MemberRemoveResponse {
            header: None,
            members,
        })
    }

    async fn update(
        &self,
        req: pb::MemberUpdateRequest,
    ) -> Result<pb::MemberUpdateResponse, Status> {
        check_urls(&req.peer_ur_ls)?;
        let metrics = self.leader_metrics()?;
        let membership = metrics.membership_config.membership();
        let Some(mut node) = membership.get_node(&req.id).cloned() else {
            return Err(not_found());
        };
        check_urls_unused(membership, &req.peer_ur_ls, Some(req.id))?;
        node.peer_urls = req.peer_ur_ls;
        let members = self
            .change(ChangeMembers::SetNodes(BTreeMap::from([(req.id, node)])))
            .await?;
        Ok(pb::MemberUpdateResponse {
            header: None,
            members,
        })
    }

    async fn promote(
        &self,
        req: pb::MemberPromoteRequest,
    ) -> Result<pb::MemberPromoteResponse, Status> {
        let metrics = self.leader_metrics()?;
        let membership = metrics.membership_config.membership();
        let Some(mut node) = membership.get_node(&req.id).cloned() else {
            return Err(not_found());
        };
        if membership.voter_ids().any(|v| v == req.id) {
            return Err(Status::failed_precondition(NOT_LEARNER));
        }
        if !learner_in_sync(&metrics, req.id) {
            return Err(Status::failed_precondition(LEARNER_NOT_READY));
        }
        let voters = membership.voter_ids().count();
        // The learner counts as started: it is in sync, so it runs.
        if started_voters(membership).len() + 1 < quorum(voters + 1) {
            return Err(Status::failed_precondition(NOT_ENOUGH_STARTED));
        }
        // The member record's learner flag changes in the same joint change as the voter set.
        node.is_learner = false;
        let members = self
            .change(ChangeMembers::Batch(vec![
                ChangeMembers::SetNodes(BTreeMap::from([(req.id, node)])),
                ChangeMembers::AddVoterIds(BTreeSet::from([req.id])),
            ]))
            .await?;
        tracing::info!(id = format!("{:x}", req.id), "learner promoted");
        Ok(pb::MemberPromoteResponse {
            header: None,
            members,
        })
    }
}

/// Like etcd: a learner is in sync once it has replicated at least 90% of the leader's log.
fn learner_in_sync(metrics: &Metrics, id: MemberId) -> bool {
    let leader_index = metrics.last_log_index.unwrap_or(0);
    let matched = metrics
        .replication
        .as_ref()
        .and_then(|r| r.get(&id).cloned().flatten())
        .map_or(0, |log_id| log_id.index());
    matched.saturating_mul(100) >= leader_index.saturating_mul(LEARNER_READY_PERCENT) && matched > 0
}

impl Server {
    fn membership_leader(&self) -> LeaderMembership {
        LeaderMembership::new(self.raft.clone(), self.cluster_id)
    }

    pub(crate) async fn member_add(
        &self,
        req: pb::MemberAddRequest,
    ) -> Result<pb::MemberAddResponse, Status> {
        let leader = self.membership_leader();
        self.at_leader(
            || leader.add(req.clone()),
            |mut c| {
                let req = req.clone();
                async move { c.member_add(req).await.map(tonic::Response::into_inner) }
            },
        )
        .await
    }

    pub(crate) async fn member_remove(
        &self,
        req: pb::MemberRemoveRequest,
    ) -> Result<pb::MemberRemoveResponse, Status> {
        let leader = self.membership_leader();
        self.at_leader(
            || leader.remove(req),
            |mut c| async move { c.member_remove(req).await.map(tonic::Response::into_inner) },
        )
        .await
    }

    pub(crate) async fn member_update(
        &self,
        req: pb::MemberUpdateRequest,
    ) -> Result<pb::MemberUpdateResponse, Status> {
        let leader = self.membership_leader();
        self.at_leader(
            || leader.update(req.clone()),
            |mut c| {
                let req = req.clone();
                async move { c.member_update(req).await.map(tonic::Response::into_inner) }
            },
        )
        .await
    }

    pub(crate) async fn member_promote(
        &self,
        req: pb::MemberPromoteRequest,
    ) -> Result<pb::MemberPromoteResponse, Status> {
        let leader = self.membership_leader();
        self.at_leader(
            || leader.promote(req),
            |mut c| async move { c.member_promote(req).await.map(tonic::Response::into_inner) },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_like_etcd() {
        let ok = vec!["http://127.0.0.1:2380".to_string()];
        assert!(check_urls(&ok).is_ok());
        for bad in [
            "127.0.0.1:2380",
            "http://127.0.0.1",
            "http://h:1/path",
            "ftp://h:1",
        ] {
            let status = check_urls(&[bad.to_string()]).unwrap_err();
            assert_eq!(
                (status.code(), status.message()),
                (Code::InvalidArgument, BAD_URLS)
            );
        }
        assert!(check_urls(&[]).is_err());
    }

    #[test]
    fn learner_is_in_sync_at_ninety_percent_of_the_leader_log() {
        let leader: MemberId = 1;
        let learner: MemberId = 2;
        let mut metrics = Metrics::new_initial(leader);
        metrics.last_log_index = Some(100);
        let at = |index: u64| Some(openraft::testing::log_id::<TypeConfig>(1, leader, index));
        for (matched, ready) in [
            (None, false),
            (at(89), false),
            (at(90), true),
            (at(100), true),
        ] {
            metrics.replication = Some(BTreeMap::from([(learner, matched)]));
            assert_eq!(learner_in_sync(&metrics, learner), ready, "{matched:?}");
        }
        metrics.replication = None;
        assert!(!learner_in_sync(&metrics, learner), "no replication state");
    }

    #[test]
    fn adding_a_voter_needs_a_started_quorum_of_the_larger_set() {
        // (voters, started) -> allowed
        for (voters, started, allowed) in [
            (1, 1, true),
            (1, 0, false),
            (2, 1, false),
            (2, 2, true),
            (3, 2, false),
            (3, 3, true),
            (4, 3, true),
        ] {
            assert_eq!(
                ready_to_add_voter(voters, started),
                allowed,
                "{started} of {voters} started"
            );
        }
    }

    #[test]
    fn quorum_is_a_strict_majority() {
        assert_eq!(
            [1, 2, 3, 4, 5].map(quorum),
            [1, 2, 2, 3, 3],
            "quorum of 1..=5 voters"
        );
    }
}
