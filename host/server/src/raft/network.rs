//! The client half of member-to-member transport: openraft's `RaftNetworkV2` over the
//! `batonpb.RaftPeer` gRPC service. openraft's messages travel as postcard bytes; snapshots are
//! streamed in chunks so no single message exceeds the gRPC size limit.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use openraft::OptionalSend;
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::Channel;

use crate::raft::channels::PeerChannels;
use baton_apply::entry::{Member, MemberId, TypeConfig, codec};
use baton_apply::raft::snapshot_file::SnapshotFile;
use baton_limits::{SNAPSHOT_CHUNK_BYTES, SNAPSHOT_TRANSFER_STALL_MS};
use baton_proto::batonpb::raft_peer_client::RaftPeerClient;
use baton_proto::batonpb::{RaftPayload, SnapshotChunk};

type Vote = openraft::alias::VoteOf<TypeConfig>;
type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>;

/// Builds one [`PeerLink`] per target member, sharing cached channels.
#[derive(Clone)]
pub(crate) struct PeerNetwork {
    channels: PeerChannels,
}

impl PeerNetwork {
    pub(crate) fn new(channels: PeerChannels) -> Self {
        Self { channels }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerLink;

    async fn new_client(&mut self, target: MemberId, node: &Member) -> PeerLink {
        let url = node.peer_urls.first().cloned().unwrap_or_default();
        let client = self
            .channels
            .get(&url)
            .map(crate::raft::channels::peer_client)
            .map_err(|e| format!("bad peer URL {url:?} for member {target:x}: {e}"));
        PeerLink { client }
    }
}

/// The connection to one peer.
pub(crate) struct PeerLink {
    client: Result<RaftPeerClient<Channel>, String>,
}

fn rpc_error(status: &tonic::Status) -> RPCError<TypeConfig> {
    // Unavailable means we never reached the peer's Raft (down, or not listening yet).
    if status.code() == tonic::Code::Unavailable {
        RPCError::Unreachable(Unreachable::new(status))
    } else {
        RPCError::Network(NetworkError::new(status))
    }
}

impl PeerLink {
    fn client(&self) -> Result<RaftPeerClient<Channel>, RPCError<TypeConfig>> {
        self.client
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)))
    }

    fn payload<T: Serialize>(
        value: &T,
        option: &RPCOption,
    ) -> Result<tonic::Request<RaftPayload>, RPCError<TypeConfig>> {
        let data = codec::encode(value).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(option.soft_ttl());
        Ok(request)
    }

    fn decode<T: DeserializeOwned>(
        reply: tonic::Response<RaftPayload>,
    ) -> Result<T, RPCError<TypeConfig>> {
        codec::decode(&reply.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerLink {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let request = Self::payload(&rpc, &option)?;
        let reply = self
            .client()?
            .append_entries(request)
            .await
            .map_err(|s| rpc_error(&s))?;
        Self::decode(reply)
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<
            BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>>
            + OptionalSend
            + Unpin
            + 'static,
    {
        Box::pin(async move {
            let mut client = self.client()?;
            // postcard cannot fail to encode these types; were it to, the empty payload is
            // refused by the follower and replication restarts.
            let outbound = input.map(|req| RaftPayload {
                data: codec::encode(&req).unwrap_or_default(),
            });
            let mut request = tonic::Request::new(outbound);
            request.set_timeout(option.hard_ttl());
            let replies = client
                .stream_append(request)
                .await
                .map_err(|s| rpc_error(&s))?
                .into_inner();
            let results = replies.map(|reply| match reply {
                Ok(payload) => codec::decode::<StreamAppendResult<TypeConfig>>(&payload.data)
                    .map_err(|e| RPCError::Network(NetworkError::new(&e))),
                Err(status) => Err(rpc_error(&status)),
            });
            let boxed: BoxStream<'s, _> = Box::pin(results);
            Ok(boxed)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let request = Self::payload(&rpc, &option)?;
        let reply = self
            .client()?
            .vote(request)
            .await
            .map_err(|s| rpc_error(&s))?;
        Self::decode(reply)
    }

    /// Streams the snapshot file in chunks. No deadline covers the whole transfer (its length
    /// grows with the state): a transfer that stops moving for [`SNAPSHOT_TRANSFER_STALL_MS`]
    /// is abandoned and retried, and once every chunk is out, the peer's reply may take as long
    /// as its install does (a dead peer ends the connection through HTTP/2 keep-alives).
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let file = Arc::new(snapshot.snapshot);
        let header = codec::encode(&(vote, &snapshot.meta, file.data_len()))
            .map_err(|e| StreamingError::from(RPCError::Network(NetworkError::new(&e))))?;
        let sent = Arc::new(AtomicU64::new(0));
        let chunks = snapshot_chunks(file.clone(), header, sent.clone());
        let mut client = self.client()?;
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            () = stalled(&sent, file.data_len()) => {
                let e = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("snapshot transfer made no progress for {SNAPSHOT_TRANSFER_STALL_MS} ms"),
                );
                Err(RPCError::Network(NetworkError::new(&e)).into())
            }
            reply = client.install_snapshot(tonic::Request::new(chunks)) => {
                let reply = reply.map_err(|s| rpc_error(&s))?;
                Ok(Self::decode(reply)?)
            }
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let request = Self::payload(&req, &option)?;
        let reply = self
            .client()?
            .transfer_leader(request)
            .await
            .map_err(|s| rpc_error(&s))?;
        Self::decode(reply)
    }
}

/// The header chunk, then the snapshot's state stream read from its file a chunk at a time (off
/// the async workers); `sent` counts the bytes handed to gRPC. A read error ends the stream
/// short, which the receiver refuses by its length.
fn snapshot_chunks(
    file: Arc<SnapshotFile>,
    header: Vec<u8>,
    sent: Arc<AtomicU64>,
) -> impl futures::Stream<Item = SnapshotChunk> + Send + 'static {
    let first = SnapshotChunk {
        header,
        data: Vec::new(),
    };
    let rest = futures::stream::unfold(0u64, move |pos| {
        let (file, sent) = (file.clone(), sent.clone());
        async move {
            let len = file
                .data_len()
                .saturating_sub(pos)
                .min(SNAPSHOT_CHUNK_BYTES as u64);
            if len == 0 {
                return None;
            }
            let read = tokio::task::spawn_blocking(move || {
                let mut data = vec![0; len as usize];
                file.read_data_at(pos, &mut data).map(|_| data)
            })
            .await;
            match read {
                Ok(Ok(data)) => {
                    sent.store(pos + len, Ordering::Relaxed);
                    Some((
                        SnapshotChunk {
                            header: Vec::new(),
                            data,
                        },
                        pos + len,
                    ))
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot read the snapshot file to send it");
                    None
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading the snapshot file panicked");
                    None
                }
            }
        }
    });
    futures::stream::once(async move { first }).chain(rest)
}

/// Resolves when `sent` has stayed put for [`SNAPSHOT_TRANSFER_STALL_MS`] before reaching
/// `total`; once everything is sent, never.
async fn stalled(sent: &AtomicU64, total: u64) {
    let stall = Duration::from_millis(SNAPSHOT_TRANSFER_STALL_MS);
    let mut last = (sent.load(Ordering::Relaxed), tokio::time::Instant::now());
    loop {
        tokio::time::sleep(stall / 4).await;
        let now = sent.load(Ordering::Relaxed);
        if now >= total {
            return std::future::pending().await;
        }
        if now != last.0 {
            last = (now, tokio::time::Instant::now());
        } else if last.1.elapsed() >= stall {
            return;
        }
    }
}
