//! etcd's `Lock` service (`v3lockpb.Lock`), an adapter over the built-in `lock` module (see
//! [`crate::api::recipe`]).
//!
//! Lock(name, lease) is the module's `acquire` with that lease (or a session lease when it
//! names none): it queues `<name>/<lease hex>` and answers once that key is the oldest under
//! `<name>/`. A waiter whose lease ends while queued gets `mutex: session is expired` instead of
//! a lock (etcd 3.4 grants it: the stale grant Jepsen found). When the call is cancelled or its
//! deadline passes, the module's `abandon` deletes the waiter's key through the log, so it
//! leaves the queue. The key's create revision is the grant's fencing token. Unlock is a plain
//! delete of the key, whoever holds it, as in etcd.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::api::recipe::{Recipe, Recipes, named, participant_key};
use crate::api::status::{kv_status, recipe_status};
use baton_proto::batonpb::log_command;
use baton_proto::etcdserverpb::{DeleteRangeRequest, DeleteRangeResponse};
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

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let LockRequest { name, lease } = request.into_inner();
        let lease = self.recipes.session_lease(lease).await?;
        let input = named(&name);
        let granted = self
            .recipes
            .call(Recipe::Lock, "acquire", &input, lease, false)
            .await?;
        Ok(Response::new(LockResponse {
            header: Some(self.recipes.header(granted.revision)),
            key: participant_key(&name, lease),
        }))
    }

    /// Deletes the key a Lock returned, whoever holds it (as etcd does).
    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let key = request.into_inner().key;
        // etcd's Unlock is a DeleteRange, so its empty-key check applies (and is relayed as
        // UNKNOWN like every recipe error).
        if key.is_empty() {
            return Err(recipe_status(kv_status(KvError::EmptyKey)));
        }
        let op = log_command::Op::DeleteRange(DeleteRangeRequest {
            key,
            ..Default::default()
        });
        let resp: DeleteRangeResponse = self
            .recipes
            .server()
            .write(op)
            .await
            .map_err(recipe_status)?;
        Ok(Response::new(UnlockResponse {
            header: resp.header,
        }))
    }
}
