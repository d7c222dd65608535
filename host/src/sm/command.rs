//! Applying one replicated [`LogCommand`]: the single place where a committed log entry turns
//! into state changes. Deterministic: the result depends only on the state and the command.

use std::sync::Arc;

use redb::WriteTransaction;

use crate::proto::batonpb::{ApplyRefusal, LogCommand, LogReply, log_command, log_reply};
use crate::proto::mvccpb;
use crate::sm::kv::{self, ApplyError, KvRequest, KvResponse};
use crate::sm::module::{self, ModuleApplied, ModuleEnv};
use crate::wasm::Runtime;

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

/// Applies `cmd`, the entry at `log_index`, inside `txn`. A deterministic refusal (a compare on
/// a compacted revision, an unknown lease, a guest trap, ...) is a normal outcome carried in the
/// reply; only storage (or host) failures are errors. `txn` is shared because a guest call's
/// store view outlives any borrow the engine could hold.
pub fn apply_command(
    txn: &Arc<WriteTransaction>,
    cmd: &LogCommand,
    runtime: &Runtime,
    log_index: u64,
) -> Result<CommandOutcome, ApplyFatal> {
    let env = ModuleEnv {
        runtime,
        log_index,
        leader_time_ms: cmd.leader_time_ms,
    };
    let request = match &cmd.op {
        Some(log_command::Op::ModuleDeploy(d)) => {
            return module_outcome(module::deploy(txn, &env, d)?);
        }
        Some(log_command::Op::ModuleDelete(d)) => return module_outcome(module::delete(txn, d)?),
        Some(log_command::Op::ModuleInvoke(i)) => {
            return module_outcome(module::invoke(txn, &env, i)?);
        }
        Some(log_command::Op::Put(r)) => KvRequest::Put(r.clone()),
        Some(log_command::Op::DeleteRange(r)) => KvRequest::DeleteRange(r.clone()),
        Some(log_command::Op::Txn(r)) => KvRequest::Txn(r.clone()),
        Some(log_command::Op::Compaction(r)) => KvRequest::Compaction(*r),
        // A command from a newer version this member does not understand: refuse it the same way
        // on every member rather than guess.
        None => {
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

fn module_outcome(applied: ModuleApplied) -> Result<CommandOutcome, ApplyFatal> {
    Ok(match applied {
        ModuleApplied::Reply(result, events) => CommandOutcome {
            reply: LogReply {
                result: Some(result),
            },
            events,
        },
        ModuleApplied::Refused(code, message) => CommandOutcome {
            reply: refusal(code, &message),
            events: Vec::new(),
        },
    })
}

fn refusal(code: tonic::Code, message: &str) -> LogReply {
    LogReply {
        result: Some(log_reply::Result::Refused(ApplyRefusal {
            code: code as i32,
            message: message.to_string(),
        })),
    }
}
