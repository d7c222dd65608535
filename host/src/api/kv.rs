//! etcd's `KV` service. Each method does the same four things: check the request's shape,
//! hand it to the server (a proposal for writes, a read view for reads), turn a refusal into a
//! gRPC status, and fill in the response header.

use std::sync::Arc;

use prost::Message;
use tonic::{Request, Response, Status};

use crate::api::kv_checks::{check_delete_range, check_put, check_range, check_txn};
use crate::api::learner_gate::not_supported_for_learner;
use crate::limits::{GRPC_OVERHEAD_BYTES, REQUEST_BYTES_MAX, TXN_OPS_MAX};
use crate::mvcc;
use crate::mvcc::error::KvError;
use crate::proto::batonpb::{log_command, log_reply};
use crate::proto::etcdserverpb::kv_server::Kv;
use crate::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use crate::server::Server;
use crate::sm::txn::{is_txn_read_only, txn_read_only};

pub struct KvService {
    server: Arc<Server>,
}

impl KvService {
    pub fn new(server: Arc<Server>) -> Self {
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
        return Err(KvError::RequestTooLarge.into());
    }
    Ok(())
}

/// True when every Range in the txn (nested ones included) asks for a serializable read.
fn all_ranges_serializable(txn: &TxnRequest) -> bool {
    use crate::proto::etcdserverpb::request_op::Request as Op;
    txn.success
        .iter()
        .chain(&txn.failure)
        .all(|op| match &op.request {
            Some(Op::RequestRange(r)) => r.serializable,
            Some(Op::RequestTxn(t)) => all_ranges_serializable(t),
            _ => true,
        })
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
        check_range(&req)?;
        if !req.serializable {
            self.server.linearize().await?;
        }
        let view = self.server.read_view().await?;
        let mut resp = mvcc::range(&view, &req)?;
        resp.header = self.server.finish_header(resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = request.into_inner();
        check_size(req.encoded_len(), true)?;
        check_put(&req)?;
        match self.server.write(log_command::Op::Put(req)).await? {
            log_reply::Result::Put(mut resp) => {
                resp.header = self.server.finish_header(resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(super::unexpected_reply()),
        }
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = request.into_inner();
        check_size(req.encoded_len(), true)?;
        check_delete_range(&req)?;
        match self.server.write(log_command::Op::DeleteRange(req)).await? {
            log_reply::Result::DeleteRange(mut resp) => {
                resp.header = self.server.finish_header(resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(super::unexpected_reply()),
        }
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = request.into_inner();
        check_size(req.encoded_len(), true)?;
        check_txn(&req, TXN_OPS_MAX)?;
        // Like etcd, a txn that only reads needs no log entry: it runs on a read view, after a
        // read barrier unless every range in it is serializable.
        if is_txn_read_only(&req) {
            if !all_ranges_serializable(&req) {
                self.server.linearize().await?;
            }
            let view = self.server.read_view().await?;
            let mut resp = txn_read_only(&view, &req)?;
            resp.header = self.server.finish_header(resp.header);
            return Ok(Response::new(resp));
        }
        match self.server.write(log_command::Op::Txn(req)).await? {
            log_reply::Result::Txn(mut resp) => {
                resp.header = self.server.finish_header(resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(super::unexpected_reply()),
        }
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        match self
            .server
            .write(log_command::Op::Compaction(request.into_inner()))
            .await?
        {
            log_reply::Result::Compaction(mut resp) => {
                resp.header = self.server.finish_header(resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(super::unexpected_reply()),
        }
    }
}
