//! Leader-side entry points shared by local clients and forwarded requests: proposing a command
//! and obtaining a read index.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::ReadPolicy;
use openraft::errors::{ClientWriteError, LinearizableReadError, RaftError};
use tokio::time::Instant;

use baton_apply::entry::{Command, Member, MemberId, Raft};
use baton_limits::{LEADER_POLL_MS, REQUEST_TIMEOUT_MS};
use baton_proto::batonpb::{LogCommand, LogReply};

/// What a member answers when asked to act as leader while it is not; the asker retries with the
/// member it now believes leads.
pub(crate) const NOT_LEADER: &str = "baton: not the leader";
/// etcd's message for a proposal lost to a leader change (outcome unknown).
const LEADER_CHANGED: &str = "etcdserver: leader changed";

/// Why the leader path could not be taken.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum LeaderError {
    /// This member is not the leader; `leader` is who it believes leads, if anyone.
    #[error("not the leader")]
    NotLeader { leader: Option<(MemberId, Member)> },
    /// The proposal's entry was discarded by a leader change: it may or may not have committed.
    #[error("leader changed; the request's outcome is unknown")]
    Discarded,
    /// Raft lost its quorum or stopped; the request cannot complete now.
    #[error("{0}")]
    Unavailable(String),
}

/// Tells whoever asked (a local client or a forwarding member) why the leader path failed, in a
/// form it can act on: `NOT_LEADER` means "ask the leader you now know of".
pub(crate) fn leader_error_status(e: LeaderError) -> tonic::Status {
    match e {
        LeaderError::NotLeader { .. } => tonic::Status::failed_precondition(NOT_LEADER),
        LeaderError::Discarded => tonic::Status::unavailable(LEADER_CHANGED),
        LeaderError::Unavailable(m) => tonic::Status::unavailable(m),
    }
}

/// The leader's clock in Unix milliseconds: stamped into commands so that time reaches the state
/// machine only through the log.
pub(crate) fn leader_time_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Proposes `cmd` through this member, which must be the leader, and waits until it is applied.
pub(crate) async fn propose_as_leader(
    raft: &Raft,
    mut cmd: LogCommand,
) -> Result<LogReply, LeaderError> {
    cmd.leader_time_ms = leader_time_ms();
    propose_command(raft, Command::new(cmd)).await
}

/// Proposes `cmd`, already stamped with the leader's time, and waits until it is applied.
pub(crate) async fn propose_command(raft: &Raft, cmd: Command) -> Result<LogReply, LeaderError> {
    match raft.client_write(cmd).await {
        Ok(response) => Ok(LogReply {
            log_index: response.log_id.index,
            ..response.data.0
        }),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(LeaderError::NotLeader {
                leader: f.leader_id.zip(f.leader_node),
            })
        }
        Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
            Err(LeaderError::Discarded)
        }
        Err(e) => Err(LeaderError::Unavailable(e.to_string())),
    }
}

/// Confirms leadership with a quorum (ReadIndex) and returns the log index a member must have
/// applied before serving a read that reflects every write acknowledged so far.
///
/// A round that got no quorum of heartbeat answers within the leader lease is started again
/// until the request deadline, as etcd does: followers that have just started, or run on a busy
/// machine, answer late, and a read has no side effect to repeat.
pub(crate) async fn read_index_as_leader(raft: &Raft) -> Result<u64, LeaderError> {
    let deadline = Instant::now() + Duration::from_millis(REQUEST_TIMEOUT_MS);
    loop {
        match raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
            Ok(linearizer) => return Ok(linearizer.read_log_id().index()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                return Err(LeaderError::NotLeader {
                    leader: f.leader_id.zip(f.leader_node),
                });
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(q)))
                if Instant::now() + Duration::from_millis(LEADER_POLL_MS) < deadline =>
            {
                tracing::debug!(%q, "read index round found no quorum; starting another");
                tokio::time::sleep(Duration::from_millis(LEADER_POLL_MS)).await;
            }
            Err(e) => return Err(LeaderError::Unavailable(e.to_string())),
        }
    }
}

/// Records member `id`'s name and `client_urls` in the replicated membership. Leader only.
pub(crate) async fn publish_as_leader(
    raft: &Raft,
    id: MemberId,
    name: String,
    client_urls: Vec<String>,
) -> Result<(), LeaderError> {
    let current = {
        let metrics = raft.metrics();
        let m = openraft::type_config::async_runtime::WatchReceiver::borrow_watched(&metrics);
        m.membership_config.membership().get_node(&id).cloned()
    };
    let Some(mut member) = current else {
        return Err(LeaderError::Unavailable(format!(
            "member {id:x} is not in the membership"
        )));
    };
    // A member that sends no name (an older version) keeps the one it has.
    let name = if name.is_empty() {
        member.name.clone()
    } else {
        name
    };
    if member.client_urls == client_urls && member.name == name {
        return Ok(());
    }
    member.client_urls = client_urls;
    member.name = name;
    let change = openraft::ChangeMembers::SetNodes([(id, member)].into_iter().collect());
    match raft.change_membership(change, false).await {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(LeaderError::NotLeader {
                leader: f.leader_id.zip(f.leader_node),
            })
        }
        Err(e) => Err(LeaderError::Unavailable(e.to_string())),
    }
}
