//! Applying one replicated [`LogCommand`]: the single place where a committed log entry turns
//! into state changes. Deterministic: the result depends only on the state and the command.

use std::sync::Arc;

use redb::WriteTransaction;

use crate::entry::EarlyReplies;
use crate::refusal::{Code, Refusal};
use crate::sm::module::{self, ModuleApplied, ModuleEnv, ResolvedModules};
use baton_limits::TXN_OPS_MAX;
use baton_proto::batonpb::{
    ApplyRefusal, LogBatch, LogCommand, LogReplies, LogReply, log_command, log_reply,
};
use baton_proto::mvccpb;
use baton_store::lease::LeaseChange;
use baton_store::lease::error::LeaseApplyError;
use baton_store::mvcc::checks::{check_delete_range, check_put, check_txn};
use baton_store::mvcc::key_index::KeyIndex;
use baton_store::ops::alarm::{self, NO_SPACE};
use baton_store::ops::kv::{self, ApplyError, KvOp, KvResponse};
use baton_store::ops::lease::{self, LeaseOp};
use baton_store::ops::shared_write::SharedWriteCtx;
use baton_wasm::Entry;
use baton_wasm::Runtime;

/// The outcome of applying one command: the proposer's reply, the events watchers will see, and
/// the lease changes the leader's deadline tracker must follow.
pub(crate) struct CommandOutcome {
    pub(crate) reply: LogReply,
    pub(crate) events: Vec<mvccpb::Event>,
    pub(crate) lease_changes: Vec<LeaseChange>,
}

/// A failure that is not a property of the command: the node must stop and replay after restart
/// rather than answer differently from its peers.
#[derive(Debug, thiserror::Error)]
#[error("state machine storage failed while applying: {0}")]
pub struct ApplyFatal(pub String);

/// Applies `cmd`, the entry at `log_index`, inside `txn`. A deterministic refusal (a compare on
/// a compacted revision, an unknown lease, a guest trap, ...) is a normal outcome carried in the
/// reply; only storage (or host) failures are errors. `txn` is shared because a guest call's
/// store view outlives any borrow the engine could hold. `index` is the key index of `txn`'s
/// database; it takes the command's changes at once, before `txn` commits. A batch's commands
/// that only change keys are also answered through `early` as soon as each is applied.
pub(crate) fn apply_command(
    txn: &Arc<WriteTransaction>,
    index: &Arc<KeyIndex>,
    cmd: &LogCommand,
    runtime: &Runtime,
    log_index: u64,
    early: Option<&dyn EarlyReplies>,
) -> Result<CommandOutcome, ApplyFatal> {
    if let Some(log_command::Op::Batch(batch)) = &cmd.op {
        return apply_batch(txn, index, batch, runtime, log_index, early);
    }
    let mut memo = EntryMemo::default();
    apply_one(txn, index, cmd, runtime, log_index, &mut memo)
}

/// State the commands of one log entry read again and again but only a few kinds of command
/// change: read once per batch, forgotten by the commands that change it.
#[derive(Default)]
struct EntryMemo {
    /// Whether the NOSPACE alarm is raised; only alarm commands change it.
    no_space: Option<bool>,
    /// Module names and hashes resolved so far; only deploys and deletes change them.
    modules: ResolvedModules,
    /// The KV tables open for consecutive KV requests and module calls; closed before any
    /// other command.
    kv: Option<SharedWriteCtx>,
}

impl EntryMemo {
    fn no_space(&mut self, txn: &WriteTransaction) -> Result<bool, ApplyFatal> {
        if let Some(raised) = self.no_space {
            return Ok(raised);
        }
        let raised = alarm::no_space(txn).map_err(|e| ApplyFatal(e.to_string()))?;
        self.no_space = Some(raised);
        Ok(raised)
    }

    fn kv(
        &mut self,
        txn: &Arc<WriteTransaction>,
        index: &Arc<KeyIndex>,
    ) -> Result<SharedWriteCtx, ApplyFatal> {
        if let Some(kv) = &self.kv {
            return Ok(kv.clone());
        }
        let kv = SharedWriteCtx::open(txn, index).map_err(|e| ApplyFatal(e.to_string()))?;
        Ok(self.kv.insert(kv).clone())
    }
}

fn apply_one(
    txn: &Arc<WriteTransaction>,
    index: &Arc<KeyIndex>,
    cmd: &LogCommand,
    runtime: &Runtime,
    log_index: u64,
    memo: &mut EntryMemo,
) -> Result<CommandOutcome, ApplyFatal> {
    use log_command::Op;
    if !shares_kv_tables(cmd) {
        // It opens the KV tables itself, and redb refuses a second open.
        memo.kv = None;
    }
    if let Some(Op::Batch(_)) = &cmd.op {
        // A batch inside a batch: the proposer never builds one.
        let message = "baton: a batch may not contain a batch";
        return Ok(CommandOutcome {
            reply: refusal(&Refusal::new(Code::InvalidArgument, message)),
            events: Vec::new(),
            lease_changes: Vec::new(),
        });
    }
    if let Some(Op::Alarm(r)) = &cmd.op {
        memo.no_space = None;
        let resp = alarm::apply_alarm(txn, r).map_err(|e| ApplyFatal(e.to_string()))?;
        return Ok(CommandOutcome {
            reply: answer(log_reply::Result::Alarm(resp)),
            events: Vec::new(),
            lease_changes: Vec::new(),
        });
    }
    if stores_value(cmd) && memo.no_space(txn)? {
        return Ok(refused(Refusal::new(Code::ResourceExhausted, NO_SPACE)));
    }
    let env = ModuleEnv {
        runtime,
        log_index,
        leader_time_ms: cmd.leader_time_ms,
    };
    let request = match &cmd.op {
        Some(Op::ModuleDeploy(d)) => {
            memo.modules.clear();
            return module_outcome(module::deploy(txn, &env, d)?);
        }
        Some(Op::ModuleDelete(d)) => {
            memo.modules.clear();
            return module_outcome(module::delete(txn, d)?);
        }
        Some(Op::ModuleInvoke(i)) => {
            let kv = memo.kv(txn, index)?;
            let entry = Entry::Invoke;
            return module_outcome(module::invoke(txn, &kv, &env, i, entry, &mut memo.modules)?);
        }
        Some(Op::ModuleAbandon(i)) => {
            let kv = memo.kv(txn, index)?;
            let entry = Entry::Abandon;
            return module_outcome(module::invoke(txn, &kv, &env, i, entry, &mut memo.modules)?);
        }
        Some(Op::Put(r)) => KvOp::Put(r),
        Some(Op::DeleteRange(r)) => KvOp::DeleteRange(r),
        Some(Op::Txn(r)) => KvOp::Txn(r),
        Some(Op::Compaction(r)) => KvOp::Compaction(r),
        Some(Op::LeaseGrant(r)) => return apply_lease_op(txn, index, LeaseOp::Grant(r)),
        Some(Op::LeaseRevoke(r)) => return apply_lease_op(txn, index, LeaseOp::Revoke(r)),
        Some(Op::LeaseCheckpoint(r)) => {
            return apply_lease_op(txn, index, LeaseOp::Checkpoint(r));
        }
        // A command from a newer version this member does not understand: refuse it the same way
        // on every member rather than guess. (Alarms and batches were handled above.)
        None | Some(Op::Alarm(_)) | Some(Op::Batch(_)) => {
            return Ok(refused(Refusal::new(
                Code::Unimplemented,
                "baton: unknown log command",
            )));
        }
    };
    // The API checked the request, but a command can reach the log by other roads (a forwarded
    // command from the peer port); applying an unchecked one — a txn putting one key twice —
    // would break the store's invariants on every member at once. The same checks, here, make
    // it a refusal instead.
    let checked = match request {
        KvOp::Put(r) => check_put(r),
        KvOp::DeleteRange(r) => check_delete_range(r),
        KvOp::Txn(r) => check_txn(r, TXN_OPS_MAX),
        KvOp::Compaction(_) => Ok(()),
    };
    if let Err(e) = checked {
        return Ok(refused(Refusal::from(e)));
    }
    let shared = memo.kv(txn, index)?;
    match kv::apply_kv_shared(txn, &shared, request) {
        Ok(applied) => Ok(CommandOutcome {
            reply: answer(match applied.response {
                KvResponse::Put(r) => log_reply::Result::Put(r),
                KvResponse::DeleteRange(r) => log_reply::Result::DeleteRange(r),
                KvResponse::Txn(r) => log_reply::Result::Txn(r),
                KvResponse::Compaction(r) => log_reply::Result::Compaction(r),
            }),
            events: applied.events,
            lease_changes: Vec::new(),
        }),
        Err(ApplyError::Rejected(e)) => Ok(refused(Refusal::from(e))),
        Err(ApplyError::Storage(e)) => Err(ApplyFatal(e.to_string())),
    }
}

/// Applies a batch's commands in order, each exactly as if it were an entry of its own at
/// `log_index`: its own revision, its own reply. A batch inside a batch is refused.
fn apply_batch(
    txn: &Arc<WriteTransaction>,
    index: &Arc<KeyIndex>,
    batch: &LogBatch,
    runtime: &Runtime,
    log_index: u64,
    early: Option<&dyn EarlyReplies>,
) -> Result<CommandOutcome, ApplyFatal> {
    let mut replies = Vec::with_capacity(batch.commands.len());
    let mut events = Vec::new();
    let mut lease_changes = Vec::new();
    let mut memo = EntryMemo::default();
    for (position, cmd) in batch.commands.iter().enumerate() {
        let outcome = apply_one(txn, index, cmd, runtime, log_index, &mut memo)?;
        if let Some(early) = early
            && answers_early(cmd, &outcome)
        {
            early.reply(log_index, position, &outcome.reply);
        }
        replies.push(outcome.reply);
        events.extend(outcome.events);
        lease_changes.extend(outcome.lease_changes);
    }
    Ok(CommandOutcome {
        reply: answer(log_reply::Result::Batch(LogReplies { replies })),
        events,
        lease_changes,
    })
}

/// Whether a command's reply may leave before its batch commits: one that only changes keys,
/// whose effects readers find in the state database once they wait for the commit. Lease, alarm,
/// compaction and module-table changes also reach in-memory state after the commit (the lease
/// deadline table, the module cache), so their replies wait for it.
fn answers_early(cmd: &LogCommand, outcome: &CommandOutcome) -> bool {
    use log_command::Op;
    outcome.lease_changes.is_empty()
        && matches!(
            cmd.op,
            Some(
                Op::Put(_)
                    | Op::DeleteRange(_)
                    | Op::Txn(_)
                    | Op::ModuleInvoke(_)
                    | Op::ModuleAbandon(_)
            )
        )
}

fn module_outcome(applied: ModuleApplied) -> Result<CommandOutcome, ApplyFatal> {
    Ok(match applied {
        ModuleApplied::Reply(result, events) => CommandOutcome {
            reply: answer(result),
            events,
            lease_changes: Vec::new(),
        },
        ModuleApplied::Refused(refused) => CommandOutcome {
            reply: refusal(&refused),
            events: Vec::new(),
            lease_changes: Vec::new(),
        },
    })
}

fn apply_lease_op(
    txn: &WriteTransaction,
    index: &Arc<KeyIndex>,
    op: LeaseOp<'_>,
) -> Result<CommandOutcome, ApplyFatal> {
    match lease::apply_lease(txn, index, op) {
        Ok(applied) => Ok(CommandOutcome {
            reply: answer(applied.result),
            events: applied.events,
            lease_changes: applied.change.into_iter().collect(),
        }),
        Err(LeaseApplyError::Rejected(e)) => Ok(refused(Refusal::from(e))),
        Err(LeaseApplyError::Storage(e)) => Err(ApplyFatal(e.to_string())),
    }
}

/// The commands that run in the entry's shared write context ([`EntryMemo::kv`]); any other
/// closes it first.
fn shares_kv_tables(cmd: &LogCommand) -> bool {
    use log_command::Op;
    matches!(
        cmd.op,
        Some(
            Op::ModuleInvoke(_)
                | Op::ModuleAbandon(_)
                | Op::Put(_)
                | Op::DeleteRange(_)
                | Op::Txn(_)
                | Op::Compaction(_)
        )
    )
}

/// The commands NOSPACE refuses: those that may store a value (etcd also refuses lease grants;
/// module deploys and calls may write too). An abandoned call's clean-up runs: it exists to
/// withdraw what the call left behind.
fn stores_value(cmd: &LogCommand) -> bool {
    match &cmd.op {
        Some(log_command::Op::Put(_))
        | Some(log_command::Op::LeaseGrant(_))
        | Some(log_command::Op::ModuleDeploy(_))
        | Some(log_command::Op::ModuleInvoke(_)) => true,
        Some(log_command::Op::Txn(t)) => alarm::txn_puts(t),
        _ => false,
    }
}

fn refused(refusal: Refusal) -> CommandOutcome {
    CommandOutcome {
        reply: self::refusal(&refusal),
        events: Vec::new(),
        lease_changes: Vec::new(),
    }
}

fn refusal(refusal: &Refusal) -> LogReply {
    answer(log_reply::Result::Refused(ApplyRefusal {
        code: refusal.code as i32,
        message: refusal.message.clone(),
    }))
}

/// The reply to a command as this member applied it. The entry's log index is the proposer's
/// to add (see `LogReply.log_index`): the same entry gets the same reply on every member.
fn answer(result: log_reply::Result) -> LogReply {
    LogReply {
        result: Some(result),
        log_index: 0,
    }
}
