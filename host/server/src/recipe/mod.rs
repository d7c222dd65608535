//! etcd's lock and election recipes, run inside the server: the same keys and transactions as
//! the client-side recipes (see [`keys`]), with the waiting done on the in-process watch hub.
//!
//! # Queueing and waiting
//! A participant joins with one txn that creates `<name>/<lease hex>` (or finds the key its
//! lease already created) and reads the holder in the same revision. If it does not hold, it
//! waits ([`Recipes::wait_for_turn`]): after a read barrier it reads its own key and the key
//! created just before it; it waits for the DELETE of either, and repeats. Its turn comes when
//! no earlier key is left *and*, in the same linearizable read, its own key still exists with
//! the create_revision it joined with. A participant whose lease expired or was revoked
//! while queued therefore stops waiting with an error and is never told it holds a lock it
//! no longer owns (the stale grant Jepsen found in etcd 3.4's server-side Lock).
//!
//! # Fencing
//! A grant is identified by the create_revision of its key: successive holders of one name
//! have strictly increasing create_revisions, and `Compare(CREATE, key, =, rev)` in a Txn
//! fails once that grant is gone. Election returns it as `LeaderKey.rev`; Lock returns the
//! key, whose create_revision a Get reads, and a header whose revision is at or after the
//! grant's create_revision and before any later grant of the same name.

pub(crate) mod error;
pub(crate) mod keys;
mod observe;
mod turn;

use std::sync::Arc;

use tonic::Status;

use crate::server::write::unexpected_reply;

use crate::api::status::kv_status;
use crate::server::Server;
use crate::server::lease::Lessor;
use crate::shutdown::Shutdown;
use baton_proto::batonpb::log_command;
use baton_proto::etcdserverpb::response_op::Response as OpResponse;
use baton_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse, ResponseHeader,
    TxnRequest, TxnResponse,
};
use baton_proto::mvccpb::KeyValue;
use baton_watch::WatchHub;
pub(crate) use turn::Turn;

use baton_limits::RECIPE_SESSION_TTL_S as SESSION_TTL_S;

/// What the lock and election services run on. Cheap to share.
pub(crate) struct Recipes {
    server: Arc<Server>,
    hub: Arc<WatchHub>,
    lessor: Arc<Lessor>,
    shutdown: Shutdown,
}

/// A participant right after joining.
pub(crate) struct Joined {
    pub(crate) key: Vec<u8>,
    pub(crate) create_revision: i64,
    /// The key's value before the join if it already existed; None if the join created it.
    pub(crate) existing_value: Option<Vec<u8>>,
    /// Whether its key was the earliest created under the prefix at the join's revision.
    pub(crate) holds: bool,
    pub(crate) header: ResponseHeader,
}

impl Recipes {
    /// `shutdown` ends every wait.
    pub(crate) fn new(
        server: Arc<Server>,
        hub: Arc<WatchHub>,
        lessor: Arc<Lessor>,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            server,
            hub,
            lessor,
            shutdown,
        }
    }

    pub(crate) fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// Proposes a txn; the reply's header is complete.
    pub(crate) async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, Status> {
        self.server.write(log_command::Op::Txn(req)).await
    }

    pub(crate) async fn delete(&self, key: Vec<u8>) -> Result<DeleteRangeResponse, Status> {
        let req = DeleteRangeRequest {
            key,
            ..Default::default()
        };
        self.server.write(log_command::Op::DeleteRange(req)).await
    }

    /// The lease a request's keys are attached to: its own, or (when it names none) a new one
    /// that nobody renews, as etcd's server-side recipes do.
    pub(crate) async fn session_lease(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let req = self.lessor.prepare_grant(LeaseGrantRequest {
            ttl: SESSION_TTL_S,
            id: 0,
        });
        let resp: LeaseGrantResponse = self.server.write(log_command::Op::LeaseGrant(req)).await?;
        if resp.error.is_empty() {
            Ok(resp.id)
        } else {
            Err(Status::unknown(resp.error))
        }
    }

    /// Joins the queue of `name` with `lease`'s key (see [`keys::join`]).
    pub(crate) async fn join(
        &self,
        name: &[u8],
        lease: i64,
        value: &[u8],
    ) -> Result<Joined, Status> {
        let prefix = keys::prefix(name);
        let key = keys::participant_key(name, lease);
        let resp = self.txn(keys::join(&prefix, &key, value, lease)).await?;
        let header = resp.header.unwrap_or_default();
        let ranges: Vec<&Vec<KeyValue>> = resp
            .responses
            .iter()
            .filter_map(|r| match &r.response {
                Some(OpResponse::ResponseRange(range)) => Some(&range.kvs),
                _ => None,
            })
            .collect();
        let (mine, holder) = match (resp.succeeded, ranges.as_slice()) {
            (true, [holder]) => (None, holder.first()),
            (false, [mine, holder]) => (mine.first(), holder.first()),
            _ => return Err(unexpected_reply()),
        };
        let (create_revision, existing_value) = match mine {
            Some(kv) => (kv.create_revision, Some(kv.value.clone())),
            None if resp.succeeded => (header.revision, None),
            // The compare saw the key but the read did not: impossible within one txn.
            None => return Err(unexpected_reply()),
        };
        let holds = holder.is_none_or(|kv| kv.create_revision == create_revision);
        Ok(Joined {
            key,
            create_revision,
            existing_value,
            holds,
            header,
        })
    }

    /// The earliest-created key under `prefix` after a read barrier, with the read's revision.
    pub(crate) async fn first_created(
        &self,
        prefix: &[u8],
    ) -> Result<(i64, Option<KeyValue>), Status> {
        self.server.linearize().await?;
        let view = self.server.read_view().await?;
        let resp =
            baton_store::mvcc::range(&view, &keys::first_created(prefix)).map_err(kv_status)?;
        let revision = resp.header.map_or(0, |h| h.revision);
        Ok((revision, resp.kvs.into_iter().next()))
    }

    /// Deletes the participant's key (that incarnation only) if the returned guard is dropped
    /// before [`Withdrawal::keep`]: a waiter whose client went away leaves the queue.
    pub(crate) fn withdraw_unless_kept(&self, key: &[u8], create_revision: i64) -> Withdrawal {
        Withdrawal {
            armed: Some((self.server.clone(), key.to_vec(), create_revision)),
        }
    }

    /// Resolves once the server is shutting down.
    async fn stopped(&self) {
        self.shutdown.clone().stopped().await;
    }
}

/// See [`Recipes::withdraw_unless_kept`].
pub(crate) struct Withdrawal {
    armed: Option<(Arc<Server>, Vec<u8>, i64)>,
}

impl Withdrawal {
    pub(crate) fn keep(mut self) {
        self.armed = None;
    }
}

impl Drop for Withdrawal {
    fn drop(&mut self) {
        let Some((server, key, rev)) = self.armed.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let req = keys::delete_if_created_at(&key, rev);
            let withdrawn = server.write::<TxnResponse>(log_command::Op::Txn(req)).await;
            if let Err(e) = withdrawn {
                tracing::warn!(error = %e, key = %String::from_utf8_lossy(&key),
                    "could not withdraw an abandoned waiter; its lease will remove it");
            }
        });
    }
}
