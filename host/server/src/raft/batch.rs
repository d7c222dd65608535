//! Proposal batching: commands proposed through this member at about the same time share one
//! log entry.
//!
//! Every log entry costs Raft the same fixed work however small its command: an append to the
//! log, a place in every replication message, an apply step and a responder on each member.
//! Under load many clients' commands are waiting at once, so the collector takes every command
//! queued when it wakes and proposes them together as one `LogBatch` entry; members apply its
//! commands in order, each exactly as if it had an entry of its own (its own revision, its own
//! reply). The collector never waits for more commands to arrive: a lone command is proposed at
//! once, as a plain entry, so batching adds no latency when there is nothing to batch.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::raft::propose::{LeaderError, leader_time_ms, propose_as_leader, propose_command};
use baton_apply::entry::{Command, EarlyReplies, Raft};
use baton_limits::{PROPOSAL_BATCH_BYTES_MAX, PROPOSAL_BATCH_COMMANDS_MAX, PROPOSALS_QUEUED_MAX};
use baton_proto::batonpb::{LogBatch, LogCommand, LogReplies, LogReply, log_command, log_reply};

type Outcome = Result<LogReply, LeaderError>;

struct Pending {
    cmd: LogCommand,
    /// Encoded size of `cmd`, counted against the batch's byte budget.
    bytes: usize,
    done: oneshot::Sender<Outcome>,
}

/// Proposes commands through this member (which must lead), batching concurrent ones. Cheap to
/// clone: clones share one collector.
#[derive(Clone)]
pub(crate) struct Proposer {
    queue: mpsc::Sender<Pending>,
}

impl Proposer {
    /// Starts the collector task; it ends when every clone of the returned handle is dropped.
    pub(crate) fn start(raft: Raft) -> Self {
        let (queue, commands) = mpsc::channel(PROPOSALS_QUEUED_MAX);
        tokio::spawn(collect(raft, commands));
        Self { queue }
    }

    /// Proposes `cmd` and waits until it is applied, like [`propose_as_leader`].
    pub(crate) async fn propose(&self, cmd: LogCommand) -> Outcome {
        let (done, outcome) = oneshot::channel();
        let bytes = cmd.encoded_len();
        let pending = Pending { cmd, bytes, done };
        if self.queue.send(pending).await.is_err() {
            return Err(LeaderError::Unavailable(
                "baton: the proposer has stopped".into(),
            ));
        }
        outcome.await.unwrap_or_else(|_| {
            Err(LeaderError::Unavailable(
                "baton: a proposal was dropped".into(),
            ))
        })
    }
}

/// Takes whatever is queued, up to the batch bounds, and proposes it; repeats.
async fn collect(raft: Raft, mut commands: mpsc::Receiver<Pending>) {
    let mut carried = None;
    while let Some(batch) = gather(&mut commands, &mut carried, |p| p.bytes).await {
        // Proposing waits for the apply; the next batch must not wait for this one.
        tokio::spawn(propose_batch(raft.clone(), batch));
    }
}

/// The next batch from `queue`: the first item (`carried` over from the previous batch, or the
/// next to arrive), then whatever else is queued after one scheduler pass, within
/// [`PROPOSAL_BATCH_COMMANDS_MAX`] items and [`PROPOSAL_BATCH_BYTES_MAX`] bytes as counted by
/// `bytes`. An item that does not fit is carried over to start the next batch. `None` once the
/// queue is closed and empty.
pub(crate) async fn gather<T>(
    queue: &mut mpsc::Receiver<T>,
    carried: &mut Option<T>,
    bytes: impl Fn(&T) -> usize,
) -> Option<Vec<T>> {
    let first = match carried.take() {
        Some(item) => item,
        None => queue.recv().await?,
    };
    // Lets request tasks that are already runnable queue their items before this batch closes:
    // one scheduler pass, not a timed wait.
    tokio::task::yield_now().await;
    let mut total = bytes(&first);
    let mut batch = vec![first];
    while batch.len() < PROPOSAL_BATCH_COMMANDS_MAX {
        let Ok(next) = queue.try_recv() else {
            break;
        };
        if total + bytes(&next) > PROPOSAL_BATCH_BYTES_MAX {
            *carried = Some(next);
            break;
        }
        total += bytes(&next);
        batch.push(next);
    }
    Some(batch)
}

/// Where a batch's commands are answered: each command's sender is taken by whichever answers
/// it first, the state machine as it applies the command or [`propose_batch`] once the whole
/// entry is applied. The log keeps a copy of the entry (and so of this) for a while; the senders
/// are all gone once the entry is answered.
struct BatchReplies {
    waiting: Mutex<Vec<Option<oneshot::Sender<Outcome>>>>,
}

impl BatchReplies {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<oneshot::Sender<Outcome>>>> {
        // A panic while the list was locked cannot leave an entry half-changed.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn answer_rest(&self, mut outcome: impl FnMut(usize) -> Outcome) {
        let waiting = std::mem::take(&mut *self.lock());
        for (position, done) in waiting.into_iter().enumerate() {
            if let Some(done) = done {
                let _ = done.send(outcome(position));
            }
        }
    }
}

impl EarlyReplies for BatchReplies {
    fn reply(&self, log_index: u64, position: usize, reply: &LogReply) {
        let done = self.lock().get_mut(position).and_then(Option::take);
        if let Some(done) = done {
            let _ = done.send(Ok(LogReply {
                log_index,
                ..reply.clone()
            }));
        }
    }
}

impl fmt::Debug for BatchReplies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BatchReplies({})", self.lock().len())
    }
}

async fn propose_batch(raft: Raft, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        let Pending { cmd, done, .. } = batch.remove(0);
        let _ = done.send(propose_as_leader(&raft, cmd).await);
        return;
    }
    let now_ms = leader_time_ms();
    let mut waiting = Vec::with_capacity(batch.len());
    let mut commands = Vec::with_capacity(batch.len());
    for Pending { mut cmd, done, .. } in batch {
        cmd.leader_time_ms = now_ms;
        commands.push(cmd);
        waiting.push(Some(done));
    }
    let count = commands.len();
    let entry = LogCommand {
        leader_time_ms: now_ms,
        op: Some(log_command::Op::Batch(LogBatch { commands })),
    };
    let replies = Arc::new(BatchReplies {
        waiting: Mutex::new(waiting),
    });
    let entry = Command::with_early_replies(entry, replies.clone());
    match propose_command(&raft, entry).await {
        Ok(LogReply {
            result:
                Some(log_reply::Result::Batch(LogReplies {
                    replies: mut outcomes,
                })),
            log_index,
        }) if outcomes.len() == count => {
            replies.answer_rest(|position| {
                Ok(LogReply {
                    log_index,
                    ..std::mem::take(&mut outcomes[position])
                })
            });
        }
        // A refusal of the whole entry (a member that cannot read batches) is every command's.
        Ok(
            reply @ LogReply {
                result: Some(log_reply::Result::Refused(_)),
                ..
            },
        ) => replies.answer_rest(|_| Ok(reply.clone())),
        Ok(other) => {
            let message = format!("baton: unexpected reply to a batch of commands: {other:?}");
            replies.answer_rest(|_| Err(LeaderError::Unavailable(message.clone())));
        }
        Err(e) => replies.answer_rest(|_| Err(e.clone())),
    }
}
