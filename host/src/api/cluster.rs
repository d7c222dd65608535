//! etcd's `Cluster` service. `MemberList` reports the replicated membership; membership changes
//! answer UNIMPLEMENTED until they are built.

use openraft::type_config::async_runtime::WatchReceiver;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::proto::etcdserverpb::cluster_server::Cluster;
use crate::proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use crate::server::Server;

pub struct ClusterService {
    server: Arc<Server>,
}

impl ClusterService {
    pub fn new(server: Arc<Server>) -> Self {
        Self { server }
    }

    /// Every member in the current membership, voters first then learners, each by id.
    pub fn members(&self) -> Vec<Member> {
        let metrics = self.server.raft().metrics().borrow_watched().clone();
        let membership = metrics.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let mut members: Vec<Member> = membership
            .nodes()
            .map(|(id, node)| Member {
                id: *id,
                name: node.name.clone(),
                peer_ur_ls: node.peer_urls.clone(),
                client_ur_ls: node.client_urls.clone(),
                is_learner: !voters.contains(id),
            })
            .collect();
        members.sort_by_key(|m| (m.is_learner, m.id));
        members
    }
}

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!(
        "baton: {what} is not supported by this version of Baton yet; the membership is fixed at bootstrap"
    ))
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(not_yet("member add"))
    }

    async fn member_remove(
        &self,
        _: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(not_yet("member remove"))
    }

    async fn member_update(
        &self,
        _: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(not_yet("member update"))
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        if request.get_ref().linearizable {
            self.server.linearize().await?;
        }
        Ok(Response::new(MemberListResponse {
            header: Some(self.server.header(0)),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        _: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(not_yet("member promote"))
    }
}
