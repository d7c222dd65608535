//! The leader's side of leases (etcd's primary lessor): renewals and TTL queries answered from
//! its in-memory deadlines, expiry and checkpoint proposals, and taking over after an election.
//! The rules and the guarantees they give are in [`baton_store::lease`]; the task that drives expiry
//! and checkpoints is [`super::lease_expiry`].

mod deadlines;
pub(crate) mod ends;
mod ids;

use std::sync::Arc;
use std::time::Duration;

use redb::ReadableDatabase;
use tokio::sync::{Mutex, watch};
use tonic::Status;

pub(crate) use deadlines::Deadlines;
use ids::LeaseIds;

use crate::raft::peer_service::LeaseLeader;
use crate::raft::propose::leader_error_status;
use crate::raft::propose::{NOT_LEADER, leader_time_ms, propose_as_leader, read_index_as_leader};
use crate::server::TIMED_OUT;
use crate::server::read_batch::ReadBatcher;
use baton_apply::entry::{MemberId, Raft};
use baton_apply::settled::Store;
use baton_limits::{
    LEASE_CHECKPOINT_BATCH_MAX, LEASE_CHECKPOINTS_PER_TICK_MAX, LEASE_REVOKES_PER_TICK_MAX,
    REQUEST_TIMEOUT_MS,
};
use baton_proto::batonpb::{LogCommand, LogReply, log_command, log_reply};
use baton_proto::etcdserverpb::{
    LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use baton_store::lease::{Checkpoint, LeaseChange, NotLeading, Renewal, store};

/// TimeToLive's TTL for a lease that does not exist (etcd's answer, not an error).
const TTL_S_UNKNOWN_LEASE: i64 = -1;

pub(crate) struct Lessor {
    raft: Raft,
    member_id: MemberId,
    store: Store,
    applied: watch::Receiver<u64>,
    deadlines: Arc<Deadlines>,
    /// Serializes checkpoint proposals (periodic ones and clears), so a clear is always logged
    /// after any checkpoint of the same lease that was chosen before the renewal.
    checkpointing: Mutex<()>,
    /// Shares leadership confirmations between concurrent renewals.
    leadership: ReadBatcher,
    ids: LeaseIds,
    min_ttl_s: i64,
}

fn not_leader(_: NotLeading) -> Status {
    Status::failed_precondition(NOT_LEADER)
}

fn storage_status(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("cannot read the lease tables: {e}"))
}

impl Lessor {
    pub(crate) fn new(
        raft: Raft,
        member_id: MemberId,
        store: Store,
        applied: watch::Receiver<u64>,
        deadlines: Arc<Deadlines>,
        min_ttl_s: i64,
    ) -> Self {
        Self {
            raft,
            member_id,
            store,
            applied,
            deadlines,
            checkpointing: Mutex::new(()),
            leadership: ReadBatcher::default(),
            ids: LeaseIds::new(member_id, leader_time_ms()),
            min_ttl_s,
        }
    }

    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    pub(crate) fn member_id(&self) -> MemberId {
        self.member_id
    }

    /// What a grant proposes: an id chosen here if the client left it 0, and the TTL raised to
    /// this member's minimum (as etcd's lessor does).
    pub(crate) fn prepare_grant(&self, mut req: LeaseGrantRequest) -> LeaseGrantRequest {
        if req.id == 0 {
            req.id = self.ids.next();
        }
        req.ttl = req.ttl.max(self.min_ttl_s);
        req
    }

    /// Renews lease `id` on this member, which must lead: its TTL, or 0 if it does not exist or
    /// has expired. Acknowledged only once leadership is confirmed with a quorum (so no later
    /// leader can have started before the renewal) and any recorded remaining TTL is cleared.
    pub(crate) async fn keep_alive(&self, id: i64) -> Result<i64, Status> {
        let now_ms = self.deadlines.now_ms();
        let renewal = self
            .deadlines
            .lock()
            .renew(now_ms, id)
            .map_err(not_leader)?;
        let ttl_s = match renewal {
            Renewal::Renewed { ttl_s, must_clear } => {
                if must_clear {
                    self.commit_clears(id).await?;
                }
                ttl_s
            }
            Renewal::Expired | Renewal::NotFound => 0,
        };
        self.confirm_leadership().await?;
        Ok(ttl_s)
    }

    /// etcd's TimeToLive on the leader: remaining whole seconds (-1 if the lease does not
    /// exist), granted TTL, and the attached keys if asked for. Like a renewal, answered only
    /// once leadership is confirmed, so a deposed leader never reports its stale view.
    pub(crate) async fn time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, Status> {
        let now_ms = self.deadlines.now_ms();
        let found = self
            .deadlines
            .lock()
            .time_to_live(now_ms, req.id)
            .map_err(not_leader)?;
        self.confirm_leadership().await?;
        let Some((ttl_s, granted_ttl_s)) = found else {
            return Ok(LeaseTimeToLiveResponse {
                id: req.id,
                ttl: TTL_S_UNKNOWN_LEASE,
                ..Default::default()
            });
        };
        let keys = if req.keys {
            let view = self.store.read_settled().await.map_err(storage_status)?;
            store::attached_keys(&view, req.id).map_err(storage_status)?
        } else {
            Vec::new()
        };
        Ok(LeaseTimeToLiveResponse {
            header: None,
            id: req.id,
            ttl: ttl_s,
            granted_ttl: granted_ttl_s,
            keys,
        })
    }

    async fn confirm_leadership(&self) -> Result<(), Status> {
        self.leadership
            .read_index(|| async {
                read_index_as_leader(&self.raft)
                    .await
                    .map_err(leader_error_status)
            })
            .await
            .map(|_| ())
    }

    /// Commits every pending clear, unless another renewal already committed the one of `id`.
    async fn commit_clears(&self, id: i64) -> Result<(), Status> {
        let _serial = self.checkpointing.lock().await;
        if !self.deadlines.lock().clear_pending(id) {
            return Ok(());
        }
        let ids = self.deadlines.lock().pending_clears();
        for chunk in ids.chunks(LEASE_CHECKPOINT_BATCH_MAX) {
            let clears = chunk.iter().map(|&id| Checkpoint { id, remaining_s: 0 });
            self.propose_checkpoints(clears).await?;
            self.deadlines.lock().clears_committed(chunk);
        }
        Ok(())
    }

    async fn propose_checkpoints(
        &self,
        checkpoints: impl Iterator<Item = Checkpoint>,
    ) -> Result<(), Status> {
        let request = LeaseCheckpointRequest {
            checkpoints: checkpoints
                .map(|c| LeaseCheckpoint {
                    id: c.id,
                    remaining_ttl: c.remaining_s,
                })
                .collect(),
        };
        let reply = self
            .propose_local(log_command::Op::LeaseCheckpoint(request))
            .await?;
        match reply.result {
            Some(log_reply::Result::LeaseCheckpoint(_)) => Ok(()),
            other => Err(Status::internal(format!(
                "unexpected reply to a lease checkpoint: {other:?}"
            ))),
        }
    }

    /// Proposes through this member only: leader-only work must never be forwarded to a newer
    /// leader, whose deadlines this member does not know.
    async fn propose_local(&self, op: log_command::Op) -> Result<LogReply, Status> {
        let cmd = LogCommand {
            leader_time_ms: 0,
            op: Some(op),
        };
        // Bounded so a leader cut off from its quorum still notices it stopped leading.
        let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
        match tokio::time::timeout(timeout, propose_as_leader(&self.raft, cmd)).await {
            Ok(outcome) => outcome.map_err(leader_error_status),
            Err(_) => Err(Status::unavailable(TIMED_OUT)),
        }
    }

    /// Records the remaining TTL of every lease that has gone stale (see [`baton_store::lease`]).
    pub(crate) async fn checkpoint_pass(&self) {
        let _serial = self.checkpointing.lock().await;
        let now_ms = self.deadlines.now_ms();
        let due = self
            .deadlines
            .lock()
            .take_due_checkpoints(now_ms, LEASE_CHECKPOINTS_PER_TICK_MAX);
        for chunk in due.chunks(LEASE_CHECKPOINT_BATCH_MAX) {
            // A failed checkpoint stays marked as recorded: renewals then clear it, which is
            // merely redundant if it never committed.
            if let Err(e) = self.propose_checkpoints(chunk.iter().copied()).await {
                tracing::debug!(error = %e, leases = chunk.len(), "lease checkpoint failed");
                return;
            }
        }
        if !due.is_empty() {
            tracing::debug!(leases = due.len(), "recorded remaining lease TTLs");
        }
    }

    /// Proposes a revoke for every lease past its deadline (a bounded number per pass).
    pub(crate) async fn expiry_pass(&self) {
        let now_ms = self.deadlines.now_ms();
        let expired = self
            .deadlines
            .lock()
            .take_expired(now_ms, LEASE_REVOKES_PER_TICK_MAX);
        let revokes = expired.iter().map(|&id| async move {
            let op = log_command::Op::LeaseRevoke(LeaseRevokeRequest { id });
            (id, self.propose_local(op).await)
        });
        for (id, outcome) in futures::future::join_all(revokes).await {
            match outcome {
                Ok(LogReply {
                    result: Some(log_reply::Result::LeaseRevoke(_)),
                    ..
                }) => tracing::debug!(lease = id, "revoked expired lease"),
                // Revoked meanwhile by a client: nothing left to track.
                Ok(_) => self
                    .deadlines
                    .lock()
                    .apply(now_ms, LeaseChange::Revoked { id }),
                Err(e) => {
                    tracing::debug!(lease = id, error = %e, "revoking an expired lease failed");
                    self.deadlines.lock().revoke_failed(id);
                }
            }
        }
    }

    /// Takes over as leader: waits until every entry of earlier terms is applied, then starts
    /// every lease's deadline from now (see [`baton_store::lease`]). Returns how many leases it tracks.
    pub(crate) async fn take_over(&self) -> Result<usize, Status> {
        let index = read_index_as_leader(&self.raft)
            .await
            .map_err(leader_error_status)?;
        let mut applied = self.applied.clone();
        let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
        match tokio::time::timeout(timeout, applied.wait_for(|i| *i >= index)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Err(Status::unavailable("state machine stopped")),
            Err(_) => return Err(Status::unavailable("state machine is not catching up")),
        }
        // Read under the table's lock: a change committed after this read is reported to the
        // (by then active) table; one committed before it is in the read.
        let mut table = self.deadlines.lock();
        let view = self.store.db.begin_read().map_err(storage_status)?;
        let leases = store::all(&view).map_err(storage_status)?;
        table.activate(self.deadlines.now_ms(), leases);
        Ok(table.len())
    }

    /// Leadership lost: forget every deadline.
    pub(crate) fn step_down(&self) {
        self.deadlines.lock().deactivate();
    }
}

#[tonic::async_trait]
impl LeaseLeader for Lessor {
    async fn keep_alive(&self, id: i64) -> Result<i64, Status> {
        Lessor::keep_alive(self, id).await
    }

    async fn time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, Status> {
        Lessor::time_to_live(self, req).await
    }
}
