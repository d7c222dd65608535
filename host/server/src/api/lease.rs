//! etcd's `Lease` service. Grants and revokes are proposals; renewals and TTL queries go to the
//! leader's deadlines (here or over the peer service); listing reads the replicated table.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::api::status::kv_status;
use crate::server::Server;
use crate::server::lease::Lessor;
use crate::shutdown::Shutdown;
use baton_limits::LEASE_KEEPALIVE_RESPONSES_QUEUED_MAX;
use baton_proto::batonpb::log_command;
use baton_proto::etcdserverpb::lease_server::Lease;
use baton_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, ResponseHeader,
};
use baton_store::lease::store;

pub(crate) struct LeaseService {
    server: Arc<Server>,
    lessor: Arc<Lessor>,
    /// Ends keep-alive streams, which would otherwise hold up the member's graceful stop; the
    /// client renews through another member.
    shutdown: Shutdown,
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

fn storage_status(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("cannot read the lease tables: {e}"))
}

/// The header etcd fills from this member's own state.
fn local_header(server: &Server) -> Result<ResponseHeader, Status> {
    let view = server.read_committed()?;
    Ok(server.header(baton_store::mvcc::current_revision(&view).map_err(kv_status)?))
}

/// Renews lease `id` at the leader: its TTL, or 0 if it does not exist.
async fn renew(server: &Server, lessor: &Lessor, id: i64) -> Result<i64, Status> {
    server
        .at_leader(
            || lessor.keep_alive(id),
            |mut leader| async move {
                let req = LeaseKeepAliveRequest { id };
                Ok(leader.lease_keep_alive(req).await?.into_inner().ttl)
            },
        )
        .await
}

impl LeaseService {
    pub(crate) fn new(server: Arc<Server>, lessor: Arc<Lessor>, shutdown: Shutdown) -> Self {
        Self {
            server,
            lessor,
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let req = self.lessor.prepare_grant(request.into_inner());
        let resp = self
            .server
            .write::<LeaseGrantResponse>(log_command::Op::LeaseGrant(req))
            .await?;
        Ok(Response::new(resp))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let op = log_command::Op::LeaseRevoke(request.into_inner());
        let resp = self.server.write::<LeaseRevokeResponse>(op).await?;
        Ok(Response::new(resp))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    /// Answers each request in order, like etcd: the header is taken before the renewal (so its
    /// revision is never past a revoke the renewal might race with), an unknown or expired
    /// lease gets TTL 0, and any other failure ends the stream with that error. The stream
    /// ends when the member stops.
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(LEASE_KEEPALIVE_RESPONSES_QUEUED_MAX);
        let server = self.server.clone();
        let lessor = self.lessor.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let req = tokio::select! {
                    next = requests.next() => match next {
                        Some(Ok(req)) => req,
                        _ => break,
                    },
                    () = shutdown.stopped() => break,
                };
                let answer =
                    match local_header(&server) {
                        Ok(header) => renew(&server, &lessor, req.id).await.map(|ttl| {
                            LeaseKeepAliveResponse {
                                header: Some(header),
                                id: req.id,
                                ttl,
                            }
                        }),
                        Err(e) => Err(e),
                    };
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = request.into_inner();
        let mut resp = self
            .server
            .at_leader(
                || self.lessor.time_to_live(req),
                |mut leader| async move { Ok(leader.lease_time_to_live(req).await?.into_inner()) },
            )
            .await?;
        resp.header = Some(local_header(&self.server)?);
        Ok(Response::new(resp))
    }

    /// Every lease in the replicated table, by id, after a read barrier.
    async fn lease_leases(
        &self,
        _: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.server.linearize().await?;
        let view = self.server.read_view().await?;
        let leases = store::all(&view)
            .map_err(storage_status)?
            .into_iter()
            .map(|(id, _)| LeaseStatus { id })
            .collect();
        let revision = baton_store::mvcc::current_revision(&view).map_err(kv_status)?;
        Ok(Response::new(LeaseLeasesResponse {
            header: Some(self.server.header(revision)),
            leases,
        }))
    }
}
