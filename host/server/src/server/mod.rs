//! What the API layer calls: proposing writes (through this member if it leads, forwarded to the
//! leader otherwise), linearizable read barriers, leader-only work such as lease renewals
//! ([`lease`], driven by [`lease_expiry`]), and the facts every response header carries.
//!
//! Every request is bounded by `REQUEST_TIMEOUT_MS`, and one that needs the leader fails sooner
//! on a member that sees none (`Server::sees_leader`: no known leader, or a leader that has not
//! heard from a quorum for an election timeout): after it has gone leaderless for
//! `NO_LEADER_REQUEST_WAIT_ELECTIONS` election timeouts, a request not yet handed to a leader
//! fails with etcd's `etcdserver: no leader` (it was not proposed), and one in flight with
//! `etcdserver: request timed out, possibly due to connection lost` (it may still commit).
//! A write that cannot commit for another reason fails with `etcdserver: request timed out`.

use openraft::Instant as _;
use openraft::type_config::async_runtime::WatchReceiver;
pub(crate) mod alarm;
pub(crate) mod compaction;
pub(crate) mod leader_loss;
pub(crate) mod lease;
pub(crate) mod lease_expiry;
pub(crate) mod membership;
mod read_batch;
pub(crate) mod write;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redb::Database;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;

use crate::api::status::kv_status;
use crate::raft::batch::Proposer;
use crate::raft::channels::{PeerChannels, peer_client};
use crate::raft::forward::Forwarder;
use crate::raft::propose::{
    NOT_LEADER, leader_error_status, publish_as_leader, read_index_as_leader,
};
use baton_apply::entry::{Member, MemberId, Raft};
use baton_apply::settled::Settled;
use baton_apply::settled::Store;
use baton_limits::{
    LEADER_POLL_MS, NO_LEADER_REQUEST_WAIT_ELECTIONS, PUBLISH_RETRY_MS, REQUEST_TIMEOUT_MS,
};
use baton_proto::batonpb::raft_peer_client::RaftPeerClient;
use baton_proto::batonpb::{LogCommand, LogReply, PublishRequest, ReadIndexRequest, log_command};
use baton_proto::etcdserverpb::ResponseHeader;
use baton_store::mvcc::ReadView;

pub(crate) const NO_LEADER: &str = "etcdserver: no leader";
const TIMED_OUT: &str = "etcdserver: request timed out";
/// etcd's `ErrTimeoutDueToConnectionLost`: the leader was lost while the request was in flight.
const TIMED_OUT_CONNECTION_LOST: &str =
    "etcdserver: request timed out, possibly due to connection lost";

/// The member's view of the cluster, shared by every API service.
pub(crate) struct Server {
    raft: Raft,
    proposer: Proposer,
    /// Hands writes to the leader while this member follows.
    forwarder: Forwarder,
    member_id: MemberId,
    cluster_id: u64,
    store: Store,
    applied: watch::Receiver<u64>,
    channels: PeerChannels,
    reads: read_batch::ReadBatcher,
    /// Since when this member has seen no leader (`None` while it sees one); brought up to date
    /// by every `sees_leader`, which the leader-loss monitor calls once per election timeout.
    leaderless_since: std::sync::Mutex<Option<Instant>>,
}

/// Who to send leader-only work to, as of now.
enum Route {
    Local,
    Remote(RaftPeerClient<tonic::transport::Channel>),
    NoLeader,
}

impl Server {
    pub(crate) fn new(
        raft: Raft,
        proposer: Proposer,
        member_id: MemberId,
        cluster_id: u64,
        store: Store,
        applied: watch::Receiver<u64>,
        channels: PeerChannels,
    ) -> Self {
        Self {
            raft,
            proposer,
            forwarder: Forwarder::start(),
            member_id,
            cluster_id,
            store,
            applied,
            channels,
            reads: read_batch::ReadBatcher::default(),
            leaderless_since: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn raft(&self) -> &Raft {
        &self.raft
    }

    pub(crate) fn member_id(&self) -> MemberId {
        self.member_id
    }

    /// The response header etcd puts on every reply.
    pub(crate) fn header(&self, revision: i64) -> ResponseHeader {
        let term = self.raft.metrics().borrow_watched().current_term;
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: term,
        }
    }

    /// The last log index this member has applied.
    pub(crate) fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// A consistent view of this member's applied state, holding every write it has
    /// acknowledged (which may mean waiting for the end of the apply under way).
    pub(crate) async fn read_view(&self) -> Result<ReadView, Status> {
        self.store.settled.wait().await;
        self.read_committed()
    }

    /// A view of the state as committed now, possibly behind a reply this member has just sent:
    /// for response headers and the member's own housekeeping, never for data a client reads.
    pub(crate) fn read_committed(&self) -> Result<ReadView, Status> {
        self.store
            .read()
            .map_err(|e| Status::internal(format!("cannot read the state database: {e}")))
    }

    /// Tells when every write this member has acknowledged is visible to its readers.
    pub(crate) fn settled(&self) -> &Settled {
        &self.store.settled
    }

    /// Opens a read view of the state database, for maintenance (size, snapshots).
    pub(crate) fn db(&self) -> &Arc<Database> {
        &self.store.db
    }

    /// Whether this member is in the membership as a learner (not a voter), as etcd decides
    /// which calls it may serve.
    pub(crate) fn is_learner(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        membership.get_node(&self.member_id).is_some()
            && !membership.voter_ids().any(|id| id == self.member_id)
    }

    pub(crate) fn leader(&self) -> Option<MemberId> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Whether this member has a leader a `hasleader` caller can count on: a known leader and,
    /// when that is this member, a quorum heard from within the last election timeout. etcd's
    /// leader steps down when cut off from its followers (CheckQuorum); openraft's stays leader
    /// but can commit nothing, so it must not count as one here.
    pub(crate) fn sees_leader(&self) -> bool {
        let seen = self.leader_in_metrics();
        let mut since = self
            .leaderless_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (seen, *since) {
            (true, _) => *since = None,
            (false, None) => *since = Some(Instant::now()),
            (false, Some(_)) => {}
        }
        seen
    }

    /// Whether this member has gone without a leader long enough for requests that need one to
    /// give up: an election that could succeed would have by now.
    fn leaderless_too_long(&self) -> bool {
        let _ = self.sees_leader();
        let wait = Duration::from_millis(self.raft.config().election_timeout_max)
            .saturating_mul(NO_LEADER_REQUEST_WAIT_ELECTIONS);
        let since = *self
            .leaderless_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        since.is_some_and(|since| since.elapsed() >= wait)
    }

    /// `sees_leader` as the Raft metrics tell it now.
    fn leader_in_metrics(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        match m.current_leader {
            None => false,
            Some(id) if id != self.member_id => true,
            Some(_) => {
                let voters = m.membership_config.membership().voter_ids().count();
                let within = Duration::from_millis(self.raft.config().election_timeout_max);
                voters <= 1
                    || m.last_quorum_acked
                        .as_ref()
                        .is_some_and(|acked| acked.into_inner().elapsed() <= within)
            }
        }
    }

    fn member(&self, id: MemberId) -> Option<Member> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        m.membership_config.membership().get_node(&id).cloned()
    }

    /// A leader that has lost its quorum is no route: what it proposes cannot commit.
    fn route(&self) -> Route {
        if !self.sees_leader() {
            return Route::NoLeader;
        }
        match self.leader() {
            Some(id) if id == self.member_id => Route::Local,
            Some(id) => {
                let url = self.member(id).and_then(|m| m.peer_urls.first().cloned());
                match url.map(|u| self.channels.get(&u)) {
                    Some(Ok(ch)) => Route::Remote(peer_client(ch)),
                    _ => Route::NoLeader,
                }
            }
            None => Route::NoLeader,
        }
    }

    /// Proposes a write and returns its applied outcome, forwarding to the leader if need be.
    ///
    /// A forwarded write is answered once this member has applied it too, as etcd's followers
    /// do: its client may read this member's state next (a serializable read, a watch from now,
    /// a header revision) and must find its write there.
    pub(crate) async fn propose(&self, op: log_command::Op) -> Result<LogReply, Status> {
        let deadline = Instant::now() + Duration::from_millis(REQUEST_TIMEOUT_MS);
        let cmd = LogCommand {
            leader_time_ms: 0,
            op: Some(op),
        };
        let (reply, forwarded) = self
            .at_leader(
                || async {
                    let reply = self.proposer.propose(cmd.clone()).await;
                    reply.map(|r| (r, false)).map_err(leader_error_status)
                },
                |client| {
                    let cmd = cmd.clone();
                    async move {
                        let reply = self.forwarder.forward(client, cmd).await;
                        reply.map(|r| (r, true))
                    }
                },
            )
            .await?;
        if forwarded {
            self.await_own_apply(reply.log_index, deadline).await;
        }
        Ok(reply)
    }

    /// Waits until this member has applied the entry at `log_index` (0: unknown, from an older
    /// leader), or until `deadline`. Past the deadline the write is answered anyway: it has
    /// committed, and reporting it as failed would make the client retry it; only this
    /// member's reads may then lag it, as before this wait existed.
    async fn await_own_apply(&self, log_index: u64, deadline: Instant) {
        let mut applied = self.applied.clone();
        let reached = applied.wait_for(|index| *index >= log_index);
        match tokio::time::timeout_at(deadline, reached).await {
            // A stopped state machine has nothing left to apply.
            Ok(_) => {}
            Err(_) => tracing::warn!(
                log_index,
                applied = self.applied_index(),
                "answering a forwarded write this member has not applied yet"
            ),
        }
    }

    /// Runs leader-only work that is not a log entry (lease renewals and TTL queries): `local`
    /// when this member leads, `remote` against the leader otherwise. Retries while there is no
    /// leader or the one asked no longer leads (`NOT_LEADER`), until the request deadline.
    pub(crate) async fn at_leader<T, L, LF, R, RF>(&self, local: L, remote: R) -> Result<T, Status>
    where
        L: Fn() -> LF,
        LF: Future<Output = Result<T, Status>>,
        R: Fn(RaftPeerClient<tonic::transport::Channel>) -> RF,
        RF: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + Duration::from_millis(REQUEST_TIMEOUT_MS);
        loop {
            if self.leaderless_too_long() {
                return Err(Status::unavailable(NO_LEADER));
            }
            let attempt = async {
                let outcome = match self.route() {
                    Route::Local => local().await,
                    Route::Remote(client) => remote(client).await,
                    Route::NoLeader => return Attempt::Retry,
                };
                match outcome {
                    Ok(value) => Attempt::Done(value),
                    Err(s) if is_retryable_forward(&s) => Attempt::Retry,
                    Err(s) => Attempt::Fail(s),
                }
            };
            tokio::select! {
                outcome = attempt => match outcome {
                    Attempt::Done(value) => return Ok(value),
                    Attempt::Fail(status) => return Err(status),
                    Attempt::Retry => self.pause_or_give_up(deadline).await?,
                },
                status = self.abandon(deadline) => return Err(status),
            }
        }
    }

    /// Resolves with the status that ends an attempt in flight: at `deadline`, or sooner once
    /// this member has gone without a leader too long (the attempt may still commit, hence
    /// etcd's "timed out" rather than "no leader"). Looks only after an election timeout, which
    /// almost every attempt finishes within.
    async fn abandon(&self, deadline: Instant) -> Status {
        let first_look =
            Instant::now() + Duration::from_millis(self.raft.config().election_timeout_min);
        tokio::time::sleep_until(first_look.min(deadline)).await;
        loop {
            if Instant::now() >= deadline {
                return self.deadline_status();
            }
            if self.leaderless_too_long() {
                return Status::unavailable(TIMED_OUT_CONNECTION_LOST);
            }
            let next = Instant::now() + Duration::from_millis(LEADER_POLL_MS);
            tokio::time::sleep_until(next.min(deadline)).await;
        }
    }

    /// A view for a serializable read at `revision` (0 or less: the newest).
    ///
    /// A revision past this member's may still be one the cluster has committed: a client was
    /// told of it by another member. One ReadIndex round (bounded like every request by
    /// `REQUEST_TIMEOUT_MS`) brings this member up to everything committed before the call; a
    /// revision still ahead after it does not exist yet, and the read fails with etcd's
    /// future-revision error. So does it, with the view at hand, when the round fails (no
    /// leader): a serializable read must not need one. etcd refuses at once instead, which
    /// makes a client that hops members see errors for revisions it was just given.
    pub(crate) async fn read_view_at(&self, revision: i64) -> Result<ReadView, Status> {
        let view = self.read_view().await?;
        if revision <= baton_store::mvcc::current_revision(&view).map_err(kv_status)? {
            return Ok(view);
        }
        match self.linearize().await {
            Ok(()) => self.read_view().await,
            Err(e) => {
                tracing::debug!(revision, error = %e, "cannot learn whether a revision exists");
                Ok(view)
            }
        }
    }

    /// Waits until this member has applied everything committed before the call, so a read from
    /// its state is linearizable (etcd's default). Uses ReadIndex through the leader, shared
    /// between concurrent readers.
    pub(crate) async fn linearize(&self) -> Result<(), Status> {
        let deadline = Instant::now() + Duration::from_millis(REQUEST_TIMEOUT_MS);
        let read_index = self.reads.read_index(|| self.read_index()).await?;
        let mut applied = self.applied.clone();
        let caught_up = applied.wait_for(|index| *index >= read_index);
        match tokio::time::timeout_at(deadline, caught_up).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Status::unavailable("state machine stopped")),
            Err(_) => Err(Status::unavailable(TIMED_OUT)),
        }
    }

    /// Completes a header that the state machine filled with only the revision.
    pub(crate) fn finish_header(&self, header: Option<ResponseHeader>) -> Option<ResponseHeader> {
        Some(self.header(header.map_or(0, |h| h.revision)))
    }

    /// One ReadIndex round: from this member if it leads, otherwise from the leader.
    async fn read_index(&self) -> Result<u64, Status> {
        self.at_leader(
            || async {
                read_index_as_leader(&self.raft)
                    .await
                    .map_err(leader_error_status)
            },
            |mut client| async move {
                client
                    .read_index(ReadIndexRequest {})
                    .await
                    .map(|reply| reply.into_inner().read_index)
            },
        )
        .await
    }

    /// Makes sure the replicated membership lists this member's name and client URLs, retrying
    /// until it does (the leader may not be elected yet when a member starts, and a member added
    /// at run time is not known by name until it publishes).
    pub(crate) async fn publish_until_done(&self, name: String, client_urls: Vec<String>) {
        loop {
            let listed = self
                .member(self.member_id)
                .is_some_and(|m| m.client_urls == client_urls && m.name == name);
            if listed {
                return;
            }
            let outcome = match self.route() {
                Route::Local => publish_as_leader(
                    &self.raft,
                    self.member_id,
                    name.clone(),
                    client_urls.clone(),
                )
                .await
                .map_err(|e| e.to_string()),
                Route::Remote(mut client) => client
                    .publish(PublishRequest {
                        member_id: self.member_id,
                        client_urls: client_urls.clone(),
                        name: name.clone(),
                    })
                    .await
                    .map(|_| ())
                    .map_err(|s| s.message().to_string()),
                Route::NoLeader => Err("no leader yet".to_string()),
            };
            if let Err(e) = outcome {
                tracing::debug!(error = %e, "publishing client URLs; will retry");
            }
            tokio::time::sleep(Duration::from_millis(PUBLISH_RETRY_MS)).await;
        }
    }

    fn deadline_status(&self) -> Status {
        if self.leader().is_none() {
            Status::unavailable(NO_LEADER)
        } else {
            Status::unavailable(TIMED_OUT)
        }
    }

    /// Sleeps briefly before another attempt, or fails if the deadline has passed.
    async fn pause_or_give_up(&self, deadline: Instant) -> Result<(), Status> {
        if Instant::now() + Duration::from_millis(LEADER_POLL_MS) >= deadline {
            return Err(self.deadline_status());
        }
        tokio::time::sleep(Duration::from_millis(LEADER_POLL_MS)).await;
        Ok(())
    }
}

enum Attempt<T> {
    Done(T),
    Retry,
    Fail(Status),
}

/// A forward may be retried when the target said it is not the leader, or when the connection
/// could not be made at all (the request never reached it). Other failures may have happened
/// after the leader accepted the proposal, so retrying could apply the write twice.
fn is_retryable_forward(status: &Status) -> bool {
    (status.code() == tonic::Code::FailedPrecondition && status.message() == NOT_LEADER)
        || (status.code() == tonic::Code::Unavailable && status.message().contains("connect"))
}
