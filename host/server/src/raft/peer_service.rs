//! The server half of member-to-member transport: `batonpb.RaftPeer`. Raft messages go straight
//! to openraft; forwarded writes, read-index requests and lease renewals/queries are served
//! only by the leader.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status, Streaming};

use crate::raft::batch::Proposer;
use crate::raft::propose::{leader_error_status, publish_as_leader, read_index_as_leader};
use crate::shutdown::Shutdown;
use baton_apply::entry::{Raft, TypeConfig, codec};
use baton_apply::raft::snapshot_file::{SnapshotFile, SnapshotStore};
use baton_limits::{PROPOSAL_BATCH_COMMANDS_MAX, SNAPSHOT_TRANSFER_STALL_MS};
use baton_proto::batonpb::raft_peer_server::RaftPeer;
use baton_proto::batonpb::{
    ForwardBatchReply, ForwardBatchRequest, ForwardError, ForwardOutcome, LogCommand, LogReply,
    MembershipRequest, MembershipResponse, PublishRequest, PublishResponse, RaftPayload,
    ReadIndexRequest, ReadIndexResponse, SnapshotChunk, forward_outcome,
};
use baton_proto::etcdserverpb::{
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    MemberAddRequest, MemberAddResponse, MemberPromoteRequest, MemberPromoteResponse,
    MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};

type Vote = openraft::alias::VoteOf<TypeConfig>;
type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;

/// The leader's lease deadlines, as the peer service needs them: a member that does not lead
/// answers `NOT_LEADER` (failed precondition) so the asker retries with the leader.
#[tonic::async_trait]
pub(crate) trait LeaseLeader: Send + Sync {
    /// Renews lease `id`; its TTL, or 0 if it does not exist.
    async fn keep_alive(&self, id: i64) -> Result<i64, Status>;
    /// The lease's remaining TTL (-1 if it does not exist); the header is left empty.
    async fn time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
    ) -> Result<LeaseTimeToLiveResponse, Status>;
}

/// Membership as the peer service needs it: any member describes the cluster; changes are
/// made by the leader only (others answer `NOT_LEADER`). Responses carry no header.
#[tonic::async_trait]
pub(crate) trait MembershipLeader: Send + Sync {
    fn describe(&self) -> MembershipResponse;
    async fn add(&self, req: MemberAddRequest) -> Result<MemberAddResponse, Status>;
    async fn remove(&self, req: MemberRemoveRequest) -> Result<MemberRemoveResponse, Status>;
    async fn update(&self, req: MemberUpdateRequest) -> Result<MemberUpdateResponse, Status>;
    async fn promote(&self, req: MemberPromoteRequest) -> Result<MemberPromoteResponse, Status>;
}

pub(crate) struct PeerService {
    raft: Raft,
    /// Forwarded writes join this member's proposal batches.
    proposer: Proposer,
    leases: Arc<dyn LeaseLeader>,
    members: Arc<dyn MembershipLeader>,
    /// Where snapshots sent by the leader are received.
    snapshots: SnapshotStore,
    /// Ends the leader's append streams, which would otherwise hold up this member's graceful
    /// stop until its drain runs out.
    shutdown: Shutdown,
}

impl PeerService {
    pub(crate) fn new(
        raft: Raft,
        proposer: Proposer,
        leases: Arc<dyn LeaseLeader>,
        members: Arc<dyn MembershipLeader>,
        snapshots: SnapshotStore,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            raft,
            proposer,
            leases,
            members,
            snapshots,
            shutdown,
        }
    }
}

fn decode<T: DeserializeOwned>(payload: &RaftPayload) -> Result<T, Status> {
    codec::decode(&payload.data)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    codec::encode(value)
        .map(|data| Response::new(RaftPayload { data }))
        .map_err(|e| Status::internal(format!("cannot encode raft message: {e}")))
}

/// The next piece of a snapshot stream; a sender silent for [`SNAPSHOT_TRANSFER_STALL_MS`] is
/// given up on (it starts the transfer again).
async fn next_chunk(
    stream: &mut Streaming<SnapshotChunk>,
) -> Result<Option<SnapshotChunk>, Status> {
    let wait = Duration::from_millis(SNAPSHOT_TRANSFER_STALL_MS);
    match tokio::time::timeout(wait, stream.next()).await {
        Ok(chunk) => chunk.transpose(),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no snapshot data for {SNAPSHOT_TRANSFER_STALL_MS} ms"
        ))),
    }
}

/// The leader's vote, the snapshot's meta and the length of its state stream (absent from
/// members of earlier versions, which sent only the first two).
fn decode_snapshot_header(header: &[u8]) -> Result<(Vote, SnapshotMeta, Option<u64>), Status> {
    let bad = |e: postcard::Error| Status::invalid_argument(format!("bad snapshot header: {e}"));
    match codec::decode::<(Vote, SnapshotMeta, u64)>(header) {
        Ok((vote, meta, len)) => Ok((vote, meta, Some(len))),
        Err(_) => codec::decode::<(Vote, SnapshotMeta)>(header)
            .map(|(vote, meta)| (vote, meta, None))
            .map_err(bad),
    }
}

fn snapshot_io(e: std::io::Error) -> Status {
    Status::internal(format!("cannot store the snapshot being received: {e}"))
}

/// A Raft error means this member's Raft has stopped: the sender should treat it as down.
fn raft_down(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft is not running on this member: {e}"))
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request.get_ref())?;
        let reply = self.raft.vote(rpc).await.map_err(raft_down)?;
        encode(&reply)
    }

    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request.get_ref())?;
        let reply = self.raft.append_entries(rpc).await.map_err(raft_down)?;
        encode(&reply)
    }

    type StreamAppendStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<RaftPayload, Status>> + Send>>;

    async fn stream_append(
        &self,
        request: Request<Streaming<RaftPayload>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        // The stream ends at the first broken or undecodable message; the leader then starts a
        // new one from where this follower's log stands.
        let requests = request.into_inner().scan((), |(), item| {
            let decoded = match item {
                Ok(payload) => codec::decode::<openraft::raft::AppendEntriesRequest<TypeConfig>>(
                    &payload.data,
                )
                .map_err(
                    |e| tracing::warn!(error = %e, "undecodable append request; ending the stream"),
                )
                .ok(),
                Err(_) => None,
            };
            futures::future::ready(decoded)
        });
        // Openraft reads the requests on a task of its own, which holds the stream (and so this
        // member's graceful stop) until the requests end; ending them ends the replies too.
        let mut shutdown = self.shutdown.clone();
        let requests = requests.take_until(async move { shutdown.stopped().await });
        let replies = self
            .raft
            .stream_append(requests)
            .map(|result| match result {
                Ok(r) => codec::encode(&r)
                    .map(|data| RaftPayload { data })
                    .map_err(|e| Status::internal(format!("cannot encode append result: {e}"))),
                Err(fatal) => Err(raft_down(fatal)),
            });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftPayload>, Status> {
        let mut stream = request.into_inner();
        let first = next_chunk(&mut stream)
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let (vote, meta, expected_len) = decode_snapshot_header(&first.header)?;
        let mut incoming = self.snapshots.receive(&meta).map_err(snapshot_io)?;
        incoming.write(&first.data).map_err(snapshot_io)?;
        while let Some(chunk) = next_chunk(&mut stream).await? {
            incoming.write(&chunk.data).map_err(snapshot_io)?;
        }
        if let Some(expected) = expected_len
            && incoming.data_len() != expected
        {
            return Err(Status::aborted(format!(
                "snapshot stream ended after {} of {expected} bytes",
                incoming.data_len()
            )));
        }
        let file = tokio::task::spawn_blocking(move || incoming.finish())
            .await
            .map_err(|e| Status::internal(format!("receiving the snapshot panicked: {e}")))?
            .map_err(|e| Status::data_loss(format!("snapshot refused: {e}")))?;
        let snapshot = openraft::alias::SnapshotOf::<TypeConfig, SnapshotFile> {
            meta,
            snapshot: file,
        };
        let reply = self
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(raft_down)?;
        encode(&reply)
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(request.get_ref())?;
        let reply = self
            .raft
            .handle_transfer_leader(rpc)
            .await
            .map_err(raft_down)?;
        encode(&reply)
    }

    async fn forward(&self, request: Request<LogCommand>) -> Result<Response<LogReply>, Status> {
        self.proposer
            .propose(request.into_inner())
            .await
            .map(Response::new)
            .map_err(leader_error_status)
    }

    async fn forward_batch(
        &self,
        request: Request<ForwardBatchRequest>,
    ) -> Result<Response<ForwardBatchReply>, Status> {
        let commands = request.into_inner().commands;
        if commands.len() > PROPOSAL_BATCH_COMMANDS_MAX {
            return Err(Status::invalid_argument(format!(
                "baton: {} forwarded writes in one batch; at most {PROPOSAL_BATCH_COMMANDS_MAX}",
                commands.len()
            )));
        }
        // Queued in order, so they land in the same proposal batch in the same order.
        let proposals = commands.into_iter().map(|cmd| self.proposer.propose(cmd));
        let outcomes = futures::future::join_all(proposals)
            .await
            .into_iter()
            .map(|outcome| {
                let outcome = match outcome {
                    Ok(reply) => forward_outcome::Outcome::Reply(reply),
                    Err(e) => {
                        let status = leader_error_status(e);
                        forward_outcome::Outcome::Error(ForwardError {
                            code: status.code() as i32,
                            message: status.message().to_string(),
                        })
                    }
                };
                ForwardOutcome {
                    outcome: Some(outcome),
                }
            })
            .collect();
        Ok(Response::new(ForwardBatchReply { outcomes }))
    }

    async fn read_index(
        &self,
        _: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        read_index_as_leader(&self.raft)
            .await
            .map(|read_index| Response::new(ReadIndexResponse { read_index }))
            .map_err(leader_error_status)
    }

    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let req = request.into_inner();
        publish_as_leader(&self.raft, req.member_id, req.name, req.client_urls)
            .await
            .map(|()| Response::new(PublishResponse {}))
            .map_err(leader_error_status)
    }

    async fn lease_keep_alive(
        &self,
        request: Request<LeaseKeepAliveRequest>,
    ) -> Result<Response<LeaseKeepAliveResponse>, Status> {
        let id = request.into_inner().id;
        let ttl = self.leases.keep_alive(id).await?;
        Ok(Response::new(LeaseKeepAliveResponse {
            header: None,
            id,
            ttl,
        }))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.leases
            .time_to_live(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn membership(
        &self,
        _: Request<MembershipRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        Ok(Response::new(self.members.describe()))
    }

    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        self.members
            .add(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.members
            .remove(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.members
            .update(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.members
            .promote(request.into_inner())
            .await
            .map(Response::new)
    }
}
