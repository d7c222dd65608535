//! Follower-side batching of forwarded writes.
//!
//! A follower hands every client write to the leader. One RPC per write would cost both members
//! a full HTTP/2 request each time; instead the writes queued at about the same time travel in
//! one `ForwardBatch`, the leader proposes each as if it had been forwarded alone (so they join
//! its own proposal batches), and every write gets its own outcome back. As with proposals, a
//! lone write goes at once, in a plain `Forward`.
//!
//! All outcomes of a batch come back in one message, which must fit `PEER_MESSAGE_BYTES_MAX`.
//! So only writes whose replies carry no keys or values are batched; one whose reply may (a
//! `prev_kv`, a txn's ranges, a module's output) always travels alone.

use std::time::Duration;

use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use tonic::transport::Channel;

use crate::raft::batch::gather;
use baton_limits::{PROPOSAL_BATCH_BYTES_MAX, PROPOSALS_QUEUED_MAX, REQUEST_TIMEOUT_MS};
use baton_proto::batonpb::raft_peer_client::RaftPeerClient;
use baton_proto::batonpb::{ForwardBatchRequest, LogCommand, LogReply, forward_outcome};
use baton_proto::etcdserverpb::TxnRequest;

type Outcome = Result<LogReply, Status>;

struct Pending {
    cmd: LogCommand,
    bytes: usize,
    /// The reply may be large: never batched.
    alone: bool,
    /// The leader as the caller saw it; a batch goes to its first write's leader (a write that
    /// saw another gets NOT_LEADER back and is retried by its caller).
    leader: RaftPeerClient<Channel>,
    done: oneshot::Sender<Outcome>,
}

/// Hands writes to the leader, batching concurrent ones. Cheap to clone: clones share one
/// collector.
#[derive(Clone)]
pub(crate) struct Forwarder {
    queue: mpsc::Sender<Pending>,
}

impl Forwarder {
    /// Starts the collector task; it ends when every clone of the returned handle is dropped.
    pub(crate) fn start() -> Self {
        let (queue, pending) = mpsc::channel(PROPOSALS_QUEUED_MAX);
        tokio::spawn(collect(pending));
        Self { queue }
    }

    /// Forwards `cmd` to `leader` and returns its outcome, like the `Forward` RPC.
    pub(crate) async fn forward(
        &self,
        leader: RaftPeerClient<Channel>,
        cmd: LogCommand,
    ) -> Outcome {
        let (done, outcome) = oneshot::channel();
        let bytes = cmd.encoded_len();
        let alone = reply_may_be_large(&cmd);
        let pending = Pending {
            cmd,
            bytes,
            alone,
            leader,
            done,
        };
        if self.queue.send(pending).await.is_err() {
            return Err(Status::unavailable("baton: the forwarder has stopped"));
        }
        outcome
            .await
            .unwrap_or_else(|_| Err(Status::unavailable("baton: a forwarded write was dropped")))
    }
}

async fn collect(mut pending: mpsc::Receiver<Pending>) {
    let mut carried = None;
    // A write counted as a full batch's bytes closes any batch it would join and opens one that
    // nothing else fits in (every command encodes to at least one byte).
    let bytes = |p: &Pending| {
        if p.alone {
            PROPOSAL_BATCH_BYTES_MAX
        } else {
            p.bytes
        }
    };
    while let Some(batch) = gather(&mut pending, &mut carried, bytes).await {
        tokio::spawn(send(batch));
    }
}

/// Whether `cmd`'s reply may carry keys or values, and so outgrow its share of a batched reply
/// (`FORWARDED_REPLY_BATCHED_BYTES_MAX`).
fn reply_may_be_large(cmd: &LogCommand) -> bool {
    use baton_proto::batonpb::log_command::Op;
    match &cmd.op {
        Some(Op::Put(r)) => r.prev_kv,
        Some(Op::DeleteRange(r)) => r.prev_kv,
        Some(Op::Txn(t)) => txn_reply_may_be_large(t),
        Some(Op::ModuleInvoke(_) | Op::ModuleAbandon(_) | Op::Batch(_)) => true,
        _ => false,
    }
}

fn txn_reply_may_be_large(txn: &TxnRequest) -> bool {
    use baton_proto::etcdserverpb::request_op::Request;
    txn.success
        .iter()
        .chain(&txn.failure)
        .any(|op| match &op.request {
            Some(Request::RequestRange(_)) => true,
            Some(Request::RequestPut(r)) => r.prev_kv,
            Some(Request::RequestDeleteRange(r)) => r.prev_kv,
            Some(Request::RequestTxn(t)) => txn_reply_may_be_large(t),
            None => false,
        })
}

async fn send(mut batch: Vec<Pending>) {
    let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS);
    let timed_out = || Status::deadline_exceeded("baton: the leader did not answer in time");
    if batch.len() == 1 {
        let Pending {
            cmd,
            mut leader,
            done,
            ..
        } = batch.remove(0);
        let outcome = match tokio::time::timeout(timeout, leader.forward(cmd)).await {
            Ok(reply) => reply.map(tonic::Response::into_inner),
            Err(_) => Err(timed_out()),
        };
        let _ = done.send(outcome);
        return;
    }
    let mut leader = batch[0].leader.clone();
    let mut commands = Vec::with_capacity(batch.len());
    let mut waiters = Vec::with_capacity(batch.len());
    for Pending { cmd, done, .. } in batch {
        commands.push(cmd);
        waiters.push(done);
    }
    let request = ForwardBatchRequest { commands };
    let reply = match tokio::time::timeout(timeout, leader.forward_batch(request)).await {
        Ok(reply) => reply.map(tonic::Response::into_inner),
        Err(_) => Err(timed_out()),
    };
    let outcomes = match reply {
        Ok(reply) if reply.outcomes.len() == waiters.len() => reply.outcomes,
        Ok(reply) => {
            let message = format!(
                "baton: the leader answered {} forwarded writes with {} outcomes",
                waiters.len(),
                reply.outcomes.len()
            );
            for done in waiters {
                let _ = done.send(Err(Status::unavailable(message.clone())));
            }
            return;
        }
        Err(status) => {
            for done in waiters {
                let _ = done.send(Err(status.clone()));
            }
            return;
        }
    };
    for (done, outcome) in waiters.into_iter().zip(outcomes) {
        let outcome = match outcome.outcome {
            Some(forward_outcome::Outcome::Reply(reply)) => Ok(reply),
            Some(forward_outcome::Outcome::Error(e)) => {
                Err(Status::new(tonic::Code::from(e.code), e.message))
            }
            None => Err(Status::unavailable(
                "baton: the leader sent an empty outcome for a forwarded write",
            )),
        };
        let _ = done.send(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_proto::batonpb::log_command::Op;
    use baton_proto::etcdserverpb::{
        DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp, request_op,
    };

    fn cmd(op: Op) -> LogCommand {
        LogCommand {
            leader_time_ms: 0,
            op: Some(op),
        }
    }

    fn txn(request: request_op::Request) -> Op {
        Op::Txn(TxnRequest {
            success: vec![RequestOp {
                request: Some(request),
            }],
            ..Default::default()
        })
    }

    #[test]
    fn writes_whose_replies_carry_keys_or_values_travel_alone() {
        let put = PutRequest::default();
        let put_prev = PutRequest {
            prev_kv: true,
            ..Default::default()
        };
        let del_prev = DeleteRangeRequest {
            prev_kv: true,
            ..Default::default()
        };
        assert!(!reply_may_be_large(&cmd(Op::Put(put.clone()))));
        assert!(!reply_may_be_large(&cmd(Op::LeaseGrant(
            LeaseGrantRequest::default()
        ))));
        assert!(!reply_may_be_large(&cmd(txn(
            request_op::Request::RequestPut(put)
        ))));
        assert!(reply_may_be_large(&cmd(Op::Put(put_prev.clone()))));
        assert!(reply_may_be_large(&cmd(Op::DeleteRange(del_prev))));
        assert!(reply_may_be_large(&cmd(txn(
            request_op::Request::RequestRange(RangeRequest::default())
        ))));
        let nested = TxnRequest {
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(put_prev)),
            }],
            ..Default::default()
        };
        assert!(reply_may_be_large(&cmd(txn(
            request_op::Request::RequestTxn(nested)
        ))));
    }
}
