//! Follower-side batching of forwarded writes.
//!
//! A follower hands every client write to the leader. One RPC per write would cost both members
//! a full HTTP/2 request each time; instead the writes queued at about the same time travel in
//! one `ForwardBatch`, the leader proposes each as if it had been forwarded alone (so they join
//! its own proposal batches), and every write gets its own outcome back. As with proposals, a
//! lone write goes at once, in a plain `Forward`.

use std::time::Duration;

use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;
use tonic::transport::Channel;

use crate::limits::{PROPOSALS_QUEUED_MAX, REQUEST_TIMEOUT_MS};
use crate::proto::batonpb::raft_peer_client::RaftPeerClient;
use crate::proto::batonpb::{ForwardBatchRequest, LogCommand, LogReply, forward_outcome};
use crate::raft::batch::gather;

type Outcome = Result<LogReply, Status>;

struct Pending {
    cmd: LogCommand,
    bytes: usize,
    /// The leader as the caller saw it; a batch goes to its first write's leader (a write that
    /// saw another gets NOT_LEADER back and is retried by its caller).
    leader: RaftPeerClient<Channel>,
    done: oneshot::Sender<Outcome>,
}

/// Hands writes to the leader, batching concurrent ones. Cheap to clone: clones share one
/// collector.
#[derive(Clone)]
pub struct Forwarder {
    queue: mpsc::Sender<Pending>,
}

impl Forwarder {
    /// Starts the collector task; it ends when every clone of the returned handle is dropped.
    pub fn start() -> Self {
        let (queue, pending) = mpsc::channel(PROPOSALS_QUEUED_MAX);
        tokio::spawn(collect(pending));
        Self { queue }
    }

    /// Forwards `cmd` to `leader` and returns its outcome, like the `Forward` RPC.
    pub async fn forward(&self, leader: RaftPeerClient<Channel>, cmd: LogCommand) -> Outcome {
        let (done, outcome) = oneshot::channel();
        let bytes = cmd.encoded_len();
        let pending = Pending {
            cmd,
            bytes,
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
    while let Some(batch) = gather(&mut pending, &mut carried, |p| p.bytes).await {
        tokio::spawn(send(batch));
    }
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
