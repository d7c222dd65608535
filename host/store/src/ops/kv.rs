//! Applying committed KV requests to the store with etcd 3.4's write semantics
//! (`etcdserver/apply.go`). Deterministic: the same request on the same state writes the
//! same bytes and returns the same response on every node.

use std::sync::Arc;

use redb::WriteTransaction;

use crate::mvcc::compaction::compact;
use crate::mvcc::error::StorageError;
use crate::mvcc::key_index::KeyIndex;
use crate::mvcc::tables::KeySpan;
use crate::mvcc::write::WriteCtx;
use crate::ops::shared_write::SharedWriteCtx;
use baton_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use baton_proto::mvccpb;

pub use crate::mvcc::error::{ApplyError, KvError};

/// A KV request that changes (or may change) the store, as carried in the raft log.
#[derive(Debug, Clone, PartialEq)]
pub enum KvRequest {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compaction(CompactionRequest),
}

/// A KV request borrowed from wherever it lives (a log command, a [`KvRequest`]), so applying
/// one copies nothing.
#[derive(Debug, Clone, Copy)]
pub enum KvOp<'a> {
    Put(&'a PutRequest),
    DeleteRange(&'a DeleteRangeRequest),
    Txn(&'a TxnRequest),
    Compaction(&'a CompactionRequest),
}

impl KvRequest {
    fn as_op(&self) -> KvOp<'_> {
        match self {
            KvRequest::Put(r) => KvOp::Put(r),
            KvRequest::DeleteRange(r) => KvOp::DeleteRange(r),
            KvRequest::Txn(r) => KvOp::Txn(r),
            KvRequest::Compaction(r) => KvOp::Compaction(r),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum KvResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
}

/// The response to the client and the changes for watchers.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub response: KvResponse,
    /// One event per changed key, in revision order. `prev_kv` is the key's KeyValue before
    /// the change (None if it did not exist); the watch hub drops it for watchers that did not
    /// ask for it.
    pub events: Vec<mvccpb::Event>,
}

/// Applies one committed request inside the caller's write transaction. On
/// `ApplyError::Rejected` nothing was written; `ApplyError::Storage` means the database
/// failed and the node must stop.
///
/// This opens the META and KV tables itself, so the caller must not hold any of them open
/// across the call (redb refuses to open a table twice in one transaction).
pub fn apply_kv(
    txn: &WriteTransaction,
    index: &Arc<KeyIndex>,
    req: &KvRequest,
) -> Result<Applied, ApplyError> {
    let mut w = WriteCtx::open(txn, index)?;
    let (response, events) = apply_in(&mut w, req.as_op())?;
    attach(txn, response, events)
}

/// [`apply_kv`] for a request borrowed from a log command, with the tables already open in
/// `kv`, shared with the entry's other commands.
pub fn apply_kv_shared(
    txn: &WriteTransaction,
    kv: &SharedWriteCtx,
    op: KvOp<'_>,
) -> Result<Applied, ApplyError> {
    let (response, events) = kv.with(|w| apply_in(w, op))?;
    attach(txn, response, events)
}

/// Runs `req` in `w` and ends it as one request. Every check that can reject it runs before
/// its first write, so a rejection leaves `w` as it was.
fn apply_in(
    w: &mut WriteCtx<'_>,
    op: KvOp<'_>,
) -> Result<(KvResponse, Vec<mvccpb::Event>), ApplyError> {
    let response = match op {
        KvOp::Put(p) => KvResponse::Put(put_request(w, p)?),
        KvOp::DeleteRange(d) => KvResponse::DeleteRange(delete_range(w, d)?),
        KvOp::Txn(t) => KvResponse::Txn(crate::ops::txn::apply_txn(w, t)?),
        KvOp::Compaction(c) => {
            compact(w, c.revision)?;
            KvResponse::Compaction(CompactionResponse {
                header: header(w.begin),
            })
        }
    };
    Ok((response, w.finish_request()?))
}

/// Puts attach keys to leases and detach them from their old ones; deletes detach.
fn attach(
    txn: &WriteTransaction,
    response: KvResponse,
    events: Vec<mvccpb::Event>,
) -> Result<Applied, ApplyError> {
    crate::ops::lease::sync_attachments(txn, &events)?;
    Ok(Applied { response, events })
}

pub(crate) fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// Whether lease `id` exists in the replicated lease table.
pub(crate) fn lease_exists(w: &WriteCtx<'_>, id: i64) -> Result<bool, StorageError> {
    crate::lease::store::exists(w.txn(), id)
}

/// A top-level Put: the lease is checked before anything else, as etcd does.
fn put_request(w: &mut WriteCtx<'_>, p: &PutRequest) -> Result<PutResponse, ApplyError> {
    if p.lease != 0 && !lease_exists(w, p.lease)? {
        return Err(KvError::LeaseNotFound.into());
    }
    put(w, p)
}

/// etcd's Put given a writable view: ignore_value / ignore_lease reuse the existing KeyValue's
/// value / lease and fail with KeyNotFound when the key is absent.
pub(crate) fn put(w: &mut WriteCtx<'_>, p: &PutRequest) -> Result<PutResponse, ApplyError> {
    let ignores = p.ignore_value || p.ignore_lease;
    if !ignores && !p.prev_kv {
        w.put(&p.key, p.value.clone(), p.lease)?;
        return Ok(PutResponse {
            header: header(w.write_rev()),
            prev_kv: None,
        });
    }
    let prev = w.tables.latest_get(&p.key)?;
    let (value, lease) = match &prev {
        Some(old) => (
            if p.ignore_value {
                old.value.clone()
            } else {
                p.value.clone()
            },
            if p.ignore_lease { old.lease } else { p.lease },
        ),
        None if ignores => return Err(KvError::KeyNotFound.into()),
        None => (p.value.clone(), p.lease),
    };
    let prev_kv = if p.prev_kv { prev.clone() } else { None };
    w.put_over(&p.key, value, lease, prev)?;
    Ok(PutResponse {
        header: header(w.write_rev()),
        prev_kv,
    })
}

/// etcd's DeleteRange; the revision moves only if this request changed something.
pub(crate) fn delete_range(
    w: &mut WriteCtx<'_>,
    d: &DeleteRangeRequest,
) -> Result<DeleteRangeResponse, ApplyError> {
    let prevs = w.delete_span(KeySpan::new(&d.key, &d.range_end))?;
    let deleted =
        i64::try_from(prevs.len()).map_err(|_| StorageError::Corrupt("key count".into()))?;
    Ok(DeleteRangeResponse {
        header: header(w.view_rev()),
        deleted,
        prev_kvs: if d.prev_kv { prevs } else { Vec::new() },
    })
}
