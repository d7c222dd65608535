//! Applying committed lease commands (etcd's `applierV3backend.LeaseGrant/LeaseRevoke/
//! LeaseCheckpoint` over its lessor), and keeping key attachments in step with KV writes.
//! Deterministic: no clock; expiry arrives as an ordinary revoke proposed by the leader.

use std::sync::Arc;

use redb::WriteTransaction;

use crate::lease::error::LeaseApplyError;
use crate::lease::rules::{TTL_S_FLOOR, granted_ttl_s};
use crate::lease::{LeaseChange, LeaseError, store};
use crate::mvcc::error::StorageError;
use crate::mvcc::key_index::KeyIndex;
use crate::mvcc::tables::{KeySpan, Revisions};
use crate::mvcc::write::WriteCtx;
use crate::ops::kv::header;
use crate::storage::schema::{LEASE_KEYS, LEASES, META};
use baton_proto::batonpb::log_reply;
use baton_proto::etcdserverpb::{
    LeaseCheckpointRequest, LeaseCheckpointResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeRequest, LeaseRevokeResponse,
};
use baton_proto::mvccpb::{self, event::EventType};

/// A lease command from the log.
#[derive(Clone, Copy, Debug)]
pub enum LeaseOp<'a> {
    Grant(&'a LeaseGrantRequest),
    Revoke(&'a LeaseRevokeRequest),
    Checkpoint(&'a LeaseCheckpointRequest),
}

/// What applying a lease command produced.
#[derive(Debug)]
pub struct LeaseApplied {
    pub result: log_reply::Result,
    /// DELETE events of the keys a revoke removed, all at one revision.
    pub events: Vec<mvccpb::Event>,
    pub change: Option<LeaseChange>,
}

/// Applies one lease command inside the caller's write transaction, which must hold no table
/// open. On `Rejected` nothing was written.
pub fn apply_lease(
    txn: &WriteTransaction,
    index: &Arc<KeyIndex>,
    op: LeaseOp<'_>,
) -> Result<LeaseApplied, LeaseApplyError> {
    match op {
        LeaseOp::Grant(r) => grant(txn, r),
        LeaseOp::Revoke(r) => revoke(txn, index, r.id),
        LeaseOp::Checkpoint(r) => checkpoint(txn, r),
    }
}

fn current_revision(txn: &WriteTransaction) -> Result<i64, StorageError> {
    Ok(Revisions::load(&txn.open_table(META)?)?.current)
}

fn grant(txn: &WriteTransaction, r: &LeaseGrantRequest) -> Result<LeaseApplied, LeaseApplyError> {
    // The proposer raised the TTL to the member's minimum; the floor only guards the table.
    let ttl_s = granted_ttl_s(r.id, r.ttl, TTL_S_FLOOR)?;
    {
        let mut leases = txn.open_table(LEASES)?;
        if store::get(&leases, r.id)?.is_some() {
            return Err(LeaseError::Exists.into());
        }
        leases.insert(r.id, (ttl_s, 0))?;
    }
    let response = LeaseGrantResponse {
        header: header(current_revision(txn)?),
        id: r.id,
        ttl: ttl_s,
        error: String::new(),
    };
    Ok(LeaseApplied {
        result: log_reply::Result::LeaseGrant(response),
        events: Vec::new(),
        change: Some(LeaseChange::Granted { id: r.id, ttl_s }),
    })
}

/// Deletes every key attached to the lease in one revision (in byte order, as etcd does), then
/// the lease. A lease without keys leaves the revision where it was.
fn revoke(
    txn: &WriteTransaction,
    index: &Arc<KeyIndex>,
    id: i64,
) -> Result<LeaseApplied, LeaseApplyError> {
    if store::get(&txn.open_table(LEASES)?, id)?.is_none() {
        return Err(LeaseError::NotFound.into());
    }
    let keys = store::keys_of(&txn.open_table(LEASE_KEYS)?, id)?;
    let mut w = WriteCtx::open(txn, index)?;
    for key in &keys {
        w.delete_span(KeySpan::Single(key))?;
    }
    let revision = w.view_rev();
    let events = w.finish()?;
    txn.open_table(LEASES)?.remove(id)?;
    let mut attached = txn.open_table(LEASE_KEYS)?;
    for key in &keys {
        attached.remove((id, key.as_slice()))?;
    }
    Ok(LeaseApplied {
        result: log_reply::Result::LeaseRevoke(LeaseRevokeResponse {
            header: header(revision),
        }),
        events,
        change: Some(LeaseChange::Revoked { id }),
    })
}

/// Records remaining TTLs (0 clears one); leases that no longer exist are skipped, as in etcd.
fn checkpoint(
    txn: &WriteTransaction,
    r: &LeaseCheckpointRequest,
) -> Result<LeaseApplied, LeaseApplyError> {
    {
        let mut leases = txn.open_table(LEASES)?;
        for cp in &r.checkpoints {
            if let Some(record) = store::get(&leases, cp.id)? {
                leases.insert(cp.id, (record.ttl_s, cp.remaining_ttl.max(0)))?;
            }
        }
    }
    Ok(LeaseApplied {
        result: log_reply::Result::LeaseCheckpoint(LeaseCheckpointResponse {
            header: header(current_revision(txn)?),
        }),
        events: Vec::new(),
        change: None,
    })
}

/// Follows KV changes in `LEASE_KEYS`: a put detaches the key from its previous lease and
/// attaches it to its new one; a delete detaches it. `events` are one request's changes in
/// order, each carrying the key's previous KeyValue.
pub fn sync_attachments(
    txn: &WriteTransaction,
    events: &[mvccpb::Event],
) -> Result<(), StorageError> {
    let mut attached = None;
    for event in events {
        let Some(kv) = &event.kv else { continue };
        let old = event.prev_kv.as_ref().map_or(0, |p| p.lease);
        let new = if event.r#type == EventType::Put as i32 {
            kv.lease
        } else {
            0
        };
        if old == new {
            continue;
        }
        let table = match &mut attached {
            Some(t) => t,
            None => attached.insert(txn.open_table(LEASE_KEYS)?),
        };
        if old != 0 {
            table.remove((old, kv.key.as_slice()))?;
        }
        if new != 0 {
            table.insert((new, kv.key.as_slice()), ())?;
        }
    }
    Ok(())
}
