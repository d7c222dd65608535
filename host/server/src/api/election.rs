//! etcd's `Election` service (`v3electionpb.Election`) over the server-side recipe in
//! [`crate::recipe`]: candidates queue like lock waiters; the earliest created key leads.
//!
//! `LeaderKey.rev` (the leader key's create_revision) is the leadership's fencing token:
//! Proclaim and Resign act only while the key still has that create_revision.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::api::status::recipe_status;
use crate::recipe::error::RecipeError;
use crate::recipe::{Recipes, Turn, keys};
use baton_limits::OBSERVE_RESPONSES_QUEUED_MAX;
use baton_proto::v3electionpb::election_server::Election;
use baton_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};

pub(crate) struct ElectionService {
    recipes: Arc<Recipes>,
}

impl ElectionService {
    pub(crate) fn new(recipes: Arc<Recipes>) -> Self {
        Self { recipes }
    }

    /// Sets the leader's value if `leader` still leads (its key has its create_revision).
    async fn proclaim_as(
        &self,
        leader: &LeaderKey,
        value: Vec<u8>,
    ) -> Result<ProclaimResponse, Status> {
        let req = keys::put_if_created_at(&leader.key, leader.rev, &value, leader.lease);
        let resp = self.recipes.txn(req).await?;
        if !resp.succeeded {
            return Err(RecipeError::NotLeader.into());
        }
        Ok(ProclaimResponse {
            header: resp.header,
        })
    }

    /// Deletes the leader's key if it is still that incarnation; succeeds either way.
    async fn resign_as(&self, leader: &LeaderKey) -> Result<ResignResponse, Status> {
        let resp = self
            .recipes
            .txn(keys::delete_if_created_at(&leader.key, leader.rev))
            .await?;
        Ok(ResignResponse {
            header: resp.header,
        })
    }
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

impl ElectionService {
    /// Like etcd: a candidate whose key already exists with another value proclaims the new
    /// value first; the response's header is the join's; cancelling the call resigns.
    async fn campaign_or_refuse(&self, req: CampaignRequest) -> Result<CampaignResponse, Status> {
        let CampaignRequest { name, lease, value } = req;
        let lease = self.recipes.session_lease(lease).await?;
        let joined = self.recipes.join(&name, lease, &value).await?;
        let leader = LeaderKey {
            name: name.clone(),
            key: joined.key.clone(),
            rev: joined.create_revision,
            lease,
        };
        if joined.existing_value.as_ref().is_some_and(|v| *v != value)
            && let Err(e) = self.proclaim_as(&leader, value).await
        {
            let _ = self.resign_as(&leader).await;
            return Err(e);
        }
        let turn = if joined.holds {
            Turn::Mine {
                revision: joined.header.revision,
            }
        } else {
            let withdrawal = self
                .recipes
                .withdraw_unless_kept(&joined.key, joined.create_revision);
            let turn = self
                .recipes
                .wait_for_turn(&keys::prefix(&name), &joined.key, joined.create_revision)
                .await;
            // Only a cancelled call resigns (etcd keeps the key after other failures).
            withdrawal.keep();
            turn?
        };
        match turn {
            Turn::Mine { .. } => Ok(CampaignResponse {
                header: Some(joined.header),
                leader: Some(leader),
            }),
            Turn::Lost => Err(RecipeError::ElectionSessionExpired.into()),
        }
    }

    async fn leader_or_refuse(&self, req: LeaderRequest) -> Result<LeaderResponse, Status> {
        let prefix = keys::prefix(&req.name);
        let (revision, kv) = self.recipes.first_created(&prefix).await?;
        let kv = kv.ok_or(RecipeError::NoLeader)?;
        Ok(LeaderResponse {
            header: Some(self.recipes.server().header(revision)),
            kv: Some(kv),
        })
    }
}

/// Every refusal goes out as etcd sends it (see [`recipe_status`]).
fn reply<T>(result: Result<T, Status>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(recipe_status)
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        reply(self.campaign_or_refuse(request.into_inner()).await)
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let ProclaimRequest { leader, value } = request.into_inner();
        let Some(leader) = leader else {
            return reply(Err(RecipeError::MissingLeaderKey.into()));
        };
        reply(self.proclaim_as(&leader, value).await)
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        reply(self.leader_or_refuse(request.into_inner()).await)
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let prefix = keys::prefix(&request.into_inner().name);
        let (tx, rx) = mpsc::channel(OBSERVE_RESPONSES_QUEUED_MAX);
        let recipes = self.recipes.clone();
        tokio::spawn(async move { recipes.observe(prefix, tx).await });
        let stream = ReceiverStream::new(rx).map(|item| item.map_err(recipe_status));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let Some(leader) = request.into_inner().leader else {
            return reply(Err(RecipeError::MissingLeaderKey.into()));
        };
        reply(self.resign_as(&leader).await)
    }
}
