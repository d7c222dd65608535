//! etcd's `KV` service. Each method does the same four things: check the request's shape,
//! hand it to the server (a proposal for writes, a read view for reads), turn a refusal into a
//! gRPC status, and fill in the response header. Reads that may be heavy are evaluated on the
//! blocking pool (see [`range_may_be_heavy`]), so they cannot hold up heartbeats.

use std::sync::Arc;

use prost::Message;
use tonic::{Request, Response, Status};

use crate::api::learner_gate::not_supported_for_learner;
use crate::api::status::kv_status;
use crate::server::Server;
use baton_limits::{GRPC_OVERHEAD_BYTES, REQUEST_BYTES_MAX, TXN_OPS_MAX};
use baton_proto::batonpb::log_command;
use baton_proto::etcdserverpb::kv_server::Kv;
use baton_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use baton_store::mvcc;
use baton_store::mvcc::ReadView;
use baton_store::mvcc::checks::{check_delete_range, check_put, check_range, check_txn};
use baton_store::mvcc::error::KvError;
use baton_store::ops::txn::{is_txn_read_only, txn_read_only};

pub(crate) struct KvService {
    server: Arc<Server>,
}

impl KvService {
    pub(crate) fn new(server: Arc<Server>) -> Self {
        Self { server }
    }
}

/// Largest message gRPC accepts, as etcd configures it: the request limit plus framing room.
const GRPC_RECV_BYTES_MAX: usize = REQUEST_BYTES_MAX + GRPC_OVERHEAD_BYTES;

/// etcd's two size limits: gRPC refuses messages past its receive limit (with grpc-go's own
/// message, which clients see verbatim), and etcd refuses writes past the request limit. The
/// transport's own limit is set higher so that both answers are decided here, identically.
fn check_size(encoded_len: usize, is_write: bool) -> Result<(), Status> {
    if encoded_len > GRPC_RECV_BYTES_MAX {
        return Err(Status::resource_exhausted(format!(
            "grpc: received message larger than max ({encoded_len} vs. {GRPC_RECV_BYTES_MAX})"
        )));
    }
    if is_write && encoded_len > REQUEST_BYTES_MAX {
        return Err(kv_status(KvError::RequestTooLarge));
    }
    Ok(())
}

/// Every Range in the txn, nested ones included, from either branch.
fn txn_ranges(txn: &TxnRequest) -> Vec<&RangeRequest> {
    use baton_proto::etcdserverpb::request_op::Request as Op;
    let mut ranges = Vec::new();
    for op in txn.success.iter().chain(&txn.failure) {
        match &op.request {
            Some(Op::RequestRange(r)) => ranges.push(r),
            Some(Op::RequestTxn(t)) => ranges.extend(txn_ranges(t)),
            _ => {}
        }
    }
    ranges
}

/// Whether a Range may take long enough to hold up the async worker it runs on (and with it
/// every connection and heartbeat that worker serves). Decided by the request's shape alone:
/// a Range over a span reads every key in it, whatever its limit, because the reply's `count`
/// covers the whole span (sorts and filters only add to that); a single key is one lookup.
fn range_may_be_heavy(req: &RangeRequest) -> bool {
    !req.range_end.is_empty()
}

/// Evaluates a read on the blocking pool if `heavy`, else right here: a single-key read is
/// cheaper than the hop to another thread.
async fn evaluate<T, F>(heavy: bool, view: ReadView, read: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce(&ReadView) -> Result<T, KvError> + Send + 'static,
{
    if !heavy {
        return read(&view).map_err(kv_status);
    }
    tokio::task::spawn_blocking(move || read(&view))
        .await
        .map_err(|e| Status::internal(format!("a read stopped: {e}")))?
        .map_err(kv_status)
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let req = request.into_inner();
        check_size(req.encoded_len(), false)?;
        if !req.serializable && self.server.is_learner() {
            return Err(not_supported_for_learner());
        }
        check_range(&req).map_err(kv_status)?;
        let view = if req.serializable {
            self.server.read_view_at(req.revision).await?
        } else {
            self.server.linearize().await?;
            self.server.read_view().await?
        };
        let heavy = range_may_be_heavy(&req);
        let mut resp = evaluate(heavy, view, move |view| mvcc::range(view, &req)).await?;
        resp.header = self.server.finish_header(resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = request.into_inner();
        check_size(req.encoded_len(), true)?;
        check_put(&req).map_err(kv_status)?;
        let resp = self
            .server
            .write::<PutResponse>(log_command::Op::Put(req))
            .await?;
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = request.into_inner();
        check_size(req.encoded_len(), true)?;
        check_delete_range(&req).map_err(kv_status)?;
        let resp = self
            .server
            .write::<DeleteRangeResponse>(log_command::Op::DeleteRange(req))
            .await?;
        Ok(Response::new(resp))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = request.into_inner();
        check_size(req.encoded_len(), true)?;
        check_txn(&req, TXN_OPS_MAX).map_err(kv_status)?;
        // Like etcd, a txn that only reads needs no log entry: it runs on a read view, after a
        // read barrier unless every range in it is serializable.
        if is_txn_read_only(&req) {
            let ranges = txn_ranges(&req);
            let view = if ranges.iter().all(|r| r.serializable) {
                let newest = ranges.iter().map(|r| r.revision).max().unwrap_or(0);
                self.server.read_view_at(newest).await?
            } else {
                self.server.linearize().await?;
                self.server.read_view().await?
            };
            let heavy = ranges.iter().any(|r| range_may_be_heavy(r));
            let mut resp = evaluate(heavy, view, move |view| txn_read_only(view, &req)).await?;
            resp.header = self.server.finish_header(resp.header);
            return Ok(Response::new(resp));
        }
        let resp = self
            .server
            .write::<TxnResponse>(log_command::Op::Txn(req))
            .await?;
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let op = log_command::Op::Compaction(request.into_inner());
        let resp = self.server.write::<CompactionResponse>(op).await?;
        Ok(Response::new(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_proto::etcdserverpb::{RequestOp, request_op};

    fn range(key: &[u8], range_end: &[u8]) -> RangeRequest {
        RangeRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn only_reads_over_a_span_leave_the_async_workers() {
        assert!(!range_may_be_heavy(&range(b"k", b"")), "a single key");
        let sorted_single = RangeRequest {
            sort_order: 1,
            limit: 0,
            ..range(b"k", b"")
        };
        assert!(
            !range_may_be_heavy(&sorted_single),
            "sorting one key is free"
        );
        assert!(range_may_be_heavy(&range(b"k/", b"k0")), "a prefix");
        assert!(range_may_be_heavy(&range(b"", b"\0")), "every key");
        let limited = RangeRequest {
            limit: 1,
            ..range(b"k/", b"k0")
        };
        assert!(
            range_may_be_heavy(&limited),
            "count still reads the whole span"
        );
    }

    #[test]
    fn a_txn_lists_its_nested_ranges() {
        let op = |r: RangeRequest| RequestOp {
            request: Some(request_op::Request::RequestRange(r)),
        };
        let inner = TxnRequest {
            failure: vec![op(range(b"b", b"c"))],
            ..Default::default()
        };
        let txn = TxnRequest {
            success: vec![
                op(range(b"a", b"")),
                RequestOp {
                    request: Some(request_op::Request::RequestTxn(inner)),
                },
            ],
            ..Default::default()
        };
        let ranges = txn_ranges(&txn);
        assert_eq!(ranges.len(), 2);
        assert!(ranges.iter().any(|r| range_may_be_heavy(r)));
    }
}
