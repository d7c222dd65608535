//! etcd's `Lock` service (`v3lockpb.Lock`) over the server-side recipe in [`crate::recipe`].
//!
//! Lock(name, lease) queues the lease's key `<name>/<lease hex>` and answers once it is the
//! earliest created under `<name>/`, confirmed by a linearizable read in which the key still
//! exists: a waiter whose lease ends while queued gets `mutex: session is expired` instead of
//! a lock. The key's create_revision is the grant's fencing token (see the recipe module).
//! The wait lasts as long as the client's call: when the call is cancelled or its deadline
//! passes, the waiter's key is deleted (as etcd's server does), so it leaves the queue.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::status::{kv_status, recipe_status};
use crate::recipe::error::RecipeError;
use crate::recipe::{Recipes, Turn, keys};
use baton_proto::v3lockpb::lock_server::Lock;
use baton_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use baton_store::mvcc::error::KvError;

pub(crate) struct LockService {
    recipes: Arc<Recipes>,
}

impl LockService {
    pub(crate) fn new(recipes: Arc<Recipes>) -> Self {
        Self { recipes }
    }
}

impl LockService {
    async fn lock_or_refuse(&self, req: LockRequest) -> Result<LockResponse, Status> {
        let LockRequest { name, lease } = req;
        let lease = self.recipes.session_lease(lease).await?;
        let joined = self.recipes.join(&name, lease, b"").await?;
        if joined.holds {
            return Ok(LockResponse {
                header: Some(joined.header),
                key: joined.key,
            });
        }
        let withdrawal = self
            .recipes
            .withdraw_unless_kept(&joined.key, joined.create_revision);
        // On an error the guard withdraws the waiter, as etcd's mutex does.
        let turn = self
            .recipes
            .wait_for_turn(&keys::prefix(&name), &joined.key, joined.create_revision)
            .await?;
        withdrawal.keep();
        match turn {
            Turn::Mine { revision } => Ok(LockResponse {
                header: Some(self.recipes.server().header(revision)),
                key: joined.key,
            }),
            Turn::Lost => Err(RecipeError::LockSessionExpired.into()),
        }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let resp = self.lock_or_refuse(request.into_inner()).await;
        resp.map(Response::new).map_err(recipe_status)
    }

    /// Deletes the key a Lock returned, whoever holds it (as etcd does).
    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let key = request.into_inner().key;
        // etcd's Unlock is a DeleteRange, so its empty-key check applies (and is relayed as
        // UNKNOWN like every recipe error); the recipe's internal delete does not check.
        if key.is_empty() {
            return Err(recipe_status(kv_status(KvError::EmptyKey)));
        }
        let resp = self.recipes.delete(key).await;
        let resp = resp.map_err(recipe_status)?;
        Ok(Response::new(UnlockResponse {
            header: resp.header,
        }))
    }
}
