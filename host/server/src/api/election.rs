//! etcd's `Election` service (`v3electionpb.Election`), an adapter over the built-in
//! `election` module (see [`crate::api::recipe`]): candidates queue like lock waiters under
//! `<name>/`, and the oldest key leads.
//!
//! `LeaderKey.rev` (the leader key's create revision) is the leadership's fencing token; the
//! module's proclaim acts only while the caller leads with it, and resign only on that
//! incarnation of `<name>/<lease hex>`. Leader and Observe are read-only module calls on the
//! serving member; Observe calls `observe` again with each leader it sent, so the stream gets
//! the leader now, then each change of its value, then the next leader.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::api::recipe::{
    Recipe, RecipeError, Recipes, bytes_field, field_i64, leader_kv, named, participant_key,
};
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
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

/// Observes `name` into `out` until the receiver is dropped or a call fails (that error is the
/// stream's last item).
async fn observe(
    recipes: Arc<Recipes>,
    name: Vec<u8>,
    out: mpsc::Sender<Result<LeaderResponse, Status>>,
) {
    let mut input = named(&name);
    loop {
        let answer = tokio::select! {
            // Boxed: the call's future is deep, and a select over it inline overflows rustc's
            // layout query depth.
            answer = Box::pin(recipes.call(Recipe::Election, "observe", &input, 0, true)) => answer,
            () = out.closed() => return,
        };
        let sent = match answer.and_then(|a| Ok((leader_kv(&a.output)?, a.revision))) {
            Ok((kv, revision)) => {
                bytes_field(&mut input, "key", &kv.key);
                input["mod_revision"] = Value::from(kv.mod_revision);
                let resp = LeaderResponse {
                    header: Some(recipes.header(revision)),
                    kv: Some(kv),
                };
                out.send(Ok(resp)).await
            }
            Err(status) => {
                let _ = out.send(Err(status)).await;
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    /// Like etcd: a candidate whose key already exists with another value updates it; a
    /// candidate whose call is cancelled resigns (the module's abandon).
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let CampaignRequest { name, lease, value } = request.into_inner();
        let lease = self.recipes.session_lease(lease).await?;
        let mut input = named(&name);
        bytes_field(&mut input, "value", &value);
        let won = self
            .recipes
            .call(Recipe::Election, "campaign", &input, lease, false)
            .await?;
        let leader = LeaderKey {
            key: participant_key(&name, lease),
            rev: field_i64(&won.output, "token")?,
            name,
            lease,
        };
        Ok(Response::new(CampaignResponse {
            header: Some(self.recipes.header(won.revision)),
            leader: Some(leader),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let ProclaimRequest { leader, value } = request.into_inner();
        let leader = leader.ok_or(RecipeError::MissingLeaderKey)?;
        if leader.key != participant_key(&leader.name, leader.lease) {
            return Err(RecipeError::NotLeader.into());
        }
        let mut input = named(&leader.name);
        input["token"] = Value::from(leader.rev);
        bytes_field(&mut input, "value", &value);
        let done = self
            .recipes
            .call(Recipe::Election, "proclaim", &input, leader.lease, false)
            .await?;
        Ok(Response::new(ProclaimResponse {
            header: Some(self.recipes.header(done.revision)),
        }))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let input = named(&request.into_inner().name);
        let found = self
            .recipes
            .call(Recipe::Election, "leader", &input, 0, true)
            .await?;
        Ok(Response::new(LeaderResponse {
            header: Some(self.recipes.header(found.revision)),
            kv: Some(leader_kv(&found.output)?),
        }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let name = request.into_inner().name;
        let (tx, rx) = mpsc::channel(OBSERVE_RESPONSES_QUEUED_MAX);
        tokio::spawn(observe(self.recipes.clone(), name, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    /// Deletes the leader's key if it is still that incarnation; succeeds either way.
    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let leader = request
            .into_inner()
            .leader
            .ok_or(RecipeError::MissingLeaderKey)?;
        let mut input = named(&leader.name);
        input["token"] = Value::from(leader.rev);
        let done = self
            .recipes
            .call(Recipe::Election, "resign", &input, leader.lease, false)
            .await?;
        Ok(Response::new(ResignResponse {
            header: Some(self.recipes.header(done.revision)),
        }))
    }
}
