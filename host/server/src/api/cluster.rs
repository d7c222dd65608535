//! etcd's `Cluster` service: the replicated membership and changes to it, made by the leader
//! (see [`crate::server::membership`]) and answered with this member's header.

use openraft::type_config::async_runtime::WatchReceiver;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::server::Server;
use crate::server::membership::members_of;
use baton_proto::etcdserverpb::cluster_server::Cluster;
use baton_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};

pub(crate) struct ClusterService {
    server: Arc<Server>,
}

impl ClusterService {
    pub(crate) fn new(server: Arc<Server>) -> Self {
        Self { server }
    }

    /// Every member in the current membership, ordered by id.
    fn members(&self) -> Vec<Member> {
        let metrics = self.server.raft().metrics().borrow_watched().clone();
        members_of(metrics.membership_config.membership())
    }

    /// A header stamped after the change, so its raft term is current.
    fn header(&self) -> Option<baton_proto::etcdserverpb::ResponseHeader> {
        Some(self.server.header(0))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let mut response = self.server.member_add(request.into_inner()).await?;
        response.header = self.header();
        Ok(Response::new(response))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let mut response = self.server.member_remove(request.into_inner()).await?;
        response.header = self.header();
        Ok(Response::new(response))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let mut response = self.server.member_update(request.into_inner()).await?;
        response.header = self.header();
        Ok(Response::new(response))
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if request.get_ref().linearizable {
            self.server.linearize().await?;
        }
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let mut response = self.server.member_promote(request.into_inner()).await?;
        response.header = self.header();
        Ok(Response::new(response))
    }
}
