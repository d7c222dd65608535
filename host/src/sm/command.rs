//! Applying one replicated [`LogCommand`]: the single place where a committed log entry turns
//! into state changes. Deterministic: the result depends only on the state and the command.

use redb::WriteTransaction;

use crate::proto::batonpb::{ApplyRefusal, LogCommand, LogReply, log_command, log_reply};
use crate::proto::mvccpb;
use crate::sm::alarm::{self, NO_SPACE};
use crate::sm::kv::{self, ApplyError, KvRequest, KvResponse};

/// The outcome of applying one command: the proposer's reply and the events watchers will see.
pub struct CommandOutcome {
    pub reply: LogReply,
    pub events: Vec<mvccpb::Event>,
}

/// A failure that is not a property of the command: the node must stop and replay after restart
/// rather than answer differently from its peers.
#[derive(Debug, thiserror::Error)]
#[error("state machine storage failed while applying: {0}")]
pub struct ApplyFatal(pub String);

/// Applies `cmd` inside `txn`. A deterministic refusal (a compare on a compacted revision, an
/// unknown lease, ...) is a normal outcome carried in the reply; only storage failures are errors.
pub fn apply_command(
    txn: &WriteTransaction,
    cmd: &LogCommand,
) -> Result<CommandOutcome, ApplyFatal> {
    if let Some(log_command::Op::Alarm(r)) = &cmd.op {
        let resp = alarm::apply_alarm(txn, r).map_err(|e| ApplyFatal(e.to_string()))?;
        return Ok(CommandOutcome {
            reply: LogReply {
                result: Some(log_reply::Result::Alarm(resp)),
            },
            events: Vec::new(),
        });
    }
    if stores_value(cmd) && alarm::no_space(txn).map_err(|e| ApplyFatal(e.to_string()))? {
        return Ok(CommandOutcome {
            reply: refusal(tonic::Code::ResourceExhausted, NO_SPACE),
            events: Vec::new(),
        });
    }
    let request = match &cmd.op {
        Some(log_command::Op::Put(r)) => KvRequest::Put(r.clone()),
        Some(log_command::Op::DeleteRange(r)) => KvRequest::DeleteRange(r.clone()),
        Some(log_command::Op::Txn(r)) => KvRequest::Txn(r.clone()),
        Some(log_command::Op::Compaction(r)) => KvRequest::Compaction(*r),
        // A command from a newer version this member does not understand: refuse it the same way
        // on every member rather than guess. (Alarms were handled above.)
        None | Some(log_command::Op::Alarm(_)) => {
            return Ok(CommandOutcome {
                reply: refusal(tonic::Code::Unimplemented, "baton: unknown log command"),
                events: Vec::new(),
            });
        }
    };
    match kv::apply_kv(txn, &request) {
        Ok(applied) => Ok(CommandOutcome {
            reply: LogReply {
                result: Some(match applied.response {
                    KvResponse::Put(r) => log_reply::Result::Put(r),
                    KvResponse::DeleteRange(r) => log_reply::Result::DeleteRange(r),
                    KvResponse::Txn(r) => log_reply::Result::Txn(r),
                    KvResponse::Compaction(r) => log_reply::Result::Compaction(r),
                }),
            },
            events: applied.events,
        }),
        Err(ApplyError::Rejected(e)) => {
            let status = tonic::Status::from(e);
            Ok(CommandOutcome {
                reply: refusal(status.code(), status.message()),
                events: Vec::new(),
            })
        }
        Err(ApplyError::Storage(e)) => Err(ApplyFatal(e.to_string())),
    }
}

/// The commands NOSPACE refuses: those that may store a value.
fn stores_value(cmd: &LogCommand) -> bool {
    match &cmd.op {
        Some(log_command::Op::Put(_)) => true,
        Some(log_command::Op::Txn(t)) => alarm::txn_puts(t),
        _ => false,
    }
}

fn refusal(code: tonic::Code, message: &str) -> LogReply {
    LogReply {
        result: Some(log_reply::Result::Refused(ApplyRefusal {
            code: code as i32,
            message: message.to_string(),
        })),
    }
}
