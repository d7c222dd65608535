//! Batched log entries (`LogBatch`): applying one must be indistinguishable from applying its
//! commands one after another — same replies, same events, same stored bytes — or replicas that
//! batch differently (and old logs) would disagree.

use super::module_tests::{
    FUEL, apply_batch, builtin, deploy, invoke, refusal_of, refused, runtime, snapshot,
};
use baton_proto::batonpb::{LogBatch, LogCommand, LogReplies, log_command::Op, log_reply};
use baton_store::testing::{TestStore, put_req};
use baton_wasm::builtin::HOSTILE_MODULE;

fn batch(ops: &[Op]) -> Op {
    let commands = ops
        .iter()
        .map(|op| LogCommand {
            leader_time_ms: 1_700_000_000_000,
            op: Some(op.clone()),
        })
        .collect();
    Op::Batch(LogBatch { commands })
}

/// Puts, counter calls, a trapping call and a call out of fuel. Consecutive calls share one
/// open write context, which each other command closes: runs of calls, calls after a put and a
/// put after calls must each see and leave the right revision.
fn mixed_commands() -> Vec<Op> {
    vec![
        Op::Put(put_req("c1", "40")),
        invoke("counter", "add", r#"{"keys":["c1","c2"],"by":2}"#, FUEL),
        invoke("hostile", "trap", "c1", FUEL),
        invoke("hostile", "spin", "c2", 5_000),
        invoke("counter", "add", r#"{"keys":["c2"],"by":5}"#, FUEL),
        Op::Put(put_req("c3", "x")),
        invoke("counter", "add", r#"{"keys":["c3"],"by":1}"#, FUEL),
        invoke("counter", "add", r#"{"keys":["c1"],"by":1}"#, FUEL),
        invoke("counter", "add", r#"{"keys":["c1","c4"],"by":3}"#, FUEL),
        Op::Put(put_req("c4", "7")),
        invoke("counter", "add", r#"{"keys":["c4"],"by":1}"#, FUEL),
    ]
}

#[test]
fn a_batch_applies_like_its_commands_one_by_one() {
    let setup = vec![
        deploy("counter", builtin("counter")),
        deploy("hostile", HOSTILE_MODULE),
    ];
    let (one_by_one, batched) = (TestStore::new(), TestStore::new());
    apply_batch(&one_by_one, 1, setup.clone());
    apply_batch(&batched, 1, setup);
    let commands = mixed_commands();
    // The batch's commands all run at the batch entry's log index.
    let singles: Vec<_> = commands
        .iter()
        .flat_map(|op| apply_batch(&one_by_one, 3, vec![op.clone()]))
        .collect();
    let mut out = apply_batch(&batched, 3, vec![batch(&commands)]);
    let whole = out.remove(0);
    let Some(log_reply::Result::Batch(LogReplies { replies })) = whole.reply.result else {
        panic!(
            "a batch must answer with one reply per command: {:?}",
            whole.reply
        );
    };
    assert_eq!(replies.len(), commands.len());
    for (single, reply) in singles.iter().zip(&replies) {
        assert_eq!(&single.reply, reply);
    }
    let single_events: Vec<_> = singles.iter().flat_map(|o| o.events.clone()).collect();
    assert_eq!(whole.events, single_events);
    // Each writing command got a revision of its own: 3 puts and 5 counter calls ("c3" holds
    // "x", so the call adding to it is refused).
    assert_eq!(batched.rev(), one_by_one.rev());
    assert_eq!(
        single_events
            .last()
            .unwrap()
            .kv
            .as_ref()
            .unwrap()
            .mod_revision,
        batched.rev()
    );
    assert!(refused(&singles[2]).is_some() && refused(&singles[3]).is_some());
    assert!(refused(&singles[6]).is_some(), "c3 is not a number");
    assert!(refused(&singles[7]).is_none() && refused(&singles[8]).is_none());
    assert_eq!(snapshot(&batched), snapshot(&one_by_one));
}

#[test]
fn a_batch_inside_a_batch_is_refused_without_touching_its_neighbours() {
    let store = TestStore::new();
    let before = store.rev();
    let inner = batch(&[Op::Put(put_req("inner", "1"))]);
    let ops = [
        Op::Put(put_req("a", "1")),
        inner,
        Op::Put(put_req("b", "2")),
    ];
    let mut out = apply_batch(&store, 1, vec![batch(&ops)]);
    let whole = out.remove(0);
    let Some(log_reply::Result::Batch(LogReplies { replies })) = whole.reply.result else {
        panic!("{:?}", whole.reply);
    };
    let codes: Vec<_> = replies.iter().map(refusal_of).collect();
    assert_eq!(codes[0], None);
    assert_eq!(
        codes[1],
        Some((
            crate::refusal::Code::InvalidArgument as i32,
            "baton: a batch may not contain a batch".to_string()
        ))
    );
    assert_eq!(codes[2], None);
    assert_eq!(store.rev(), before + 2, "only the two puts wrote");
    assert_eq!(whole.events.len(), 2);
}

/// Applies `ops` one by one on one store and as one batch on another (both after `setup`);
/// requires the same replies and the same stored bytes, and returns each command's refusal
/// code (None when it was not refused).
fn refusals_like_one_by_one(setup: Vec<Op>, ops: &[Op]) -> Vec<Option<i32>> {
    let (one_by_one, batched) = (TestStore::new(), TestStore::new());
    for store in [&one_by_one, &batched] {
        apply_batch(store, 1, setup.clone());
    }
    let singles: Vec<_> = ops
        .iter()
        .flat_map(|op| apply_batch(&one_by_one, 2, vec![op.clone()]))
        .collect();
    let whole = apply_batch(&batched, 2, vec![batch(ops)]).remove(0);
    let Some(log_reply::Result::Batch(LogReplies { replies })) = whole.reply.result else {
        panic!("{:?}", whole.reply);
    };
    for (single, reply) in singles.iter().zip(&replies) {
        assert_eq!(&single.reply, reply);
    }
    assert_eq!(snapshot(&batched), snapshot(&one_by_one));
    replies
        .iter()
        .map(|r| refusal_of(r).map(|(code, _)| code))
        .collect()
}

#[test]
fn an_alarm_inside_a_batch_governs_the_commands_after_it() {
    use baton_proto::etcdserverpb::{AlarmRequest, AlarmType, alarm_request::AlarmAction};
    let alarm = |action: AlarmAction| {
        Op::Alarm(AlarmRequest {
            action: action as i32,
            member_id: 1,
            alarm: AlarmType::Nospace as i32,
        })
    };
    let ops = [
        Op::Put(put_req("a", "1")),
        alarm(AlarmAction::Activate),
        Op::Put(put_req("b", "2")),
        alarm(AlarmAction::Deactivate),
        Op::Put(put_req("c", "3")),
    ];
    let refused = Some(crate::refusal::Code::ResourceExhausted as i32);
    assert_eq!(
        refusals_like_one_by_one(Vec::new(), &ops),
        [None, None, refused, None, None]
    );
}

#[test]
fn a_redeploy_or_delete_inside_a_batch_governs_the_calls_after_it() {
    use baton_proto::batonpb::ModuleDelete;
    let ops = [
        invoke("m", "add", r#"{"keys":["k"],"by":1}"#, FUEL),
        // "m" now names the hostile module, whose `ok` the counter does not have.
        deploy("m", HOSTILE_MODULE),
        invoke("m", "ok", "", FUEL),
        Op::ModuleDelete(ModuleDelete {
            name: "m".to_string(),
        }),
        invoke("m", "ok", "", FUEL),
    ];
    let setup = vec![deploy("m", builtin("counter"))];
    let not_found = Some(crate::refusal::Code::NotFound as i32);
    assert_eq!(
        refusals_like_one_by_one(setup, &ops),
        [None, None, None, None, not_found]
    );
}

/// Every kind of KV request shares the entry's open write context with module calls, and lease
/// commands close it: a rejected request, a compaction, a txn and deletes between calls must
/// leave the same replies, revisions and bytes as one by one.
#[test]
fn kv_requests_lease_commands_and_calls_mix_in_a_batch_as_one_by_one() {
    use baton_proto::etcdserverpb::{
        CompactionRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
        RequestOp, TxnRequest,
        compare::{CompareResult, CompareTarget, TargetUnion},
        request_op::Request,
    };
    let add = |key: &str| {
        invoke(
            "counter",
            "add",
            &format!(r#"{{"keys":["{key}"],"by":1}}"#),
            FUEL,
        )
    };
    let txn = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: b"n".to_vec(),
            target_union: Some(TargetUnion::Value(b"2".to_vec())),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(put_req("t", "yes"))),
        }],
        failure: vec![RequestOp {
            request: Some(Request::RequestPut(put_req("t", "no"))),
        }],
    };
    let mut leased = put_req("l", "1");
    leased.lease = 77;
    let ops = [
        add("n"),
        Op::Put(put_req("x", "1")),
        add("n"),
        Op::Txn(txn),
        // Refused (no such lease) between calls: must change nothing.
        Op::Put(leased.clone()),
        add("n"),
        Op::DeleteRange(DeleteRangeRequest {
            key: b"x".to_vec(),
            ..Default::default()
        }),
        Op::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 77 }),
        Op::Put(leased),
        add("l"),
        Op::Compaction(CompactionRequest {
            revision: 4,
            physical: false,
        }),
        add("n"),
        Op::DeleteRange(DeleteRangeRequest {
            key: b"n".to_vec(),
            ..Default::default()
        }),
        add("n"),
        // Deletes "l" through its own write context: the shared one must be closed by now.
        Op::LeaseRevoke(LeaseRevokeRequest { id: 77 }),
        add("l"),
    ];
    let setup = vec![deploy("counter", builtin("counter"))];
    let refusals = refusals_like_one_by_one(setup, &ops);
    let not_found = Some(crate::refusal::Code::NotFound as i32);
    let mut expected = vec![None; ops.len()];
    expected[4] = not_found;
    assert_eq!(refusals, expected);
}

/// Records the replies a batch's commands get early, as the leader's proposer would receive them.
#[derive(Debug, Default)]
struct EarlyRecorder(std::sync::Mutex<Vec<(usize, baton_proto::batonpb::LogReply)>>);

impl crate::entry::EarlyReplies for EarlyRecorder {
    fn reply(&self, _log_index: u64, position: usize, reply: &baton_proto::batonpb::LogReply) {
        self.0.lock().unwrap().push((position, reply.clone()));
    }
}

/// On the proposing leader, a batch's key-changing commands (puts, deletes, txns, module calls,
/// refused or not) are answered as each is applied. Those early replies must be exactly the
/// entry's own replies for them, in order; lease, compaction and module-table commands, whose
/// effects also reach in-memory state after the commit, are left to the entry's reply.
#[test]
fn early_replies_are_the_entrys_own_for_key_changing_commands() {
    use crate::sm::command::apply_command;
    use baton_proto::etcdserverpb::{
        CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, RequestOp,
        TxnRequest, request_op::Request,
    };
    use redb::Durability;
    use std::sync::Arc;

    let add = || invoke("counter", "add", r#"{"keys":["n"],"by":1}"#, FUEL);
    let mut leased = put_req("l", "1");
    leased.lease = 77;
    let txn = TxnRequest {
        success: vec![RequestOp {
            request: Some(Request::RequestPut(put_req("t", "1"))),
        }],
        ..Default::default()
    };
    let ops = [
        Op::Put(put_req("x", "1")),
        add(),
        Op::Put(leased.clone()), // refused: no such lease yet
        Op::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 77 }),
        Op::Put(leased),
        Op::Txn(txn),
        Op::Compaction(CompactionRequest {
            revision: 2,
            physical: false,
        }),
        Op::DeleteRange(DeleteRangeRequest {
            key: b"x".to_vec(),
            ..Default::default()
        }),
        deploy("again", builtin("counter")),
        add(),
        Op::LeaseRevoke(LeaseRevokeRequest { id: 77 }),
        invoke("hostile", "trap", "n", FUEL),
    ];
    let early_positions = [0, 1, 2, 4, 5, 7, 9, 11];

    let store = TestStore::new();
    let setup = vec![
        deploy("counter", builtin("counter")),
        deploy("hostile", HOSTILE_MODULE),
    ];
    apply_batch(&store, 1, setup);
    let recorder = EarlyRecorder::default();
    let mut txn = store.db.begin_write().unwrap();
    txn.set_durability(Durability::None).unwrap();
    let txn = Arc::new(txn);
    let cmd = LogCommand {
        leader_time_ms: 1_700_000_000_000,
        op: Some(batch(&ops)),
    };
    let outcome = apply_command(&txn, &store.index, &cmd, runtime(), 3, Some(&recorder)).unwrap();
    Arc::into_inner(txn).unwrap().commit().unwrap();

    let Some(log_reply::Result::Batch(LogReplies { replies })) = outcome.reply.result else {
        panic!("a batch got {:?}", outcome.reply);
    };
    let expected: Vec<_> = early_positions
        .iter()
        .map(|&p| (p, replies[p].clone()))
        .collect();
    assert_eq!(*recorder.0.lock().unwrap(), expected);
    // The refused put and the trapped call are among them, as refusals.
    assert!(refusal_of(&replies[2]).is_some() && refusal_of(&replies[11]).is_some());
}

/// A command that never passed the API's checks — here a txn putting one key twice, as a
/// forwarded command from the peer port can be — is refused at apply with etcd's error and
/// changes nothing. Applied, it broke the store's invariant on every member at once (the peer
/// fuzzer found it: "put ... at revision 6 over a live value with ... mod revision 6").
#[test]
fn an_unchecked_txn_reaching_the_log_is_refused_not_applied() {
    use baton_proto::etcdserverpb::{RequestOp, TxnRequest, request_op::Request};
    let put = |value: &str| RequestOp {
        request: Some(Request::RequestPut(put_req("twice", value))),
    };
    let txn = Op::Txn(TxnRequest {
        success: vec![put("a"), put("b")],
        ..Default::default()
    });
    let store = TestStore::new();
    apply_batch(&store, 1, vec![Op::Put(put_req("before", "x"))]);
    let before = snapshot(&store);
    let out = apply_batch(&store, 2, vec![txn.clone(), batch(&[txn])]);
    let (_, message) = refused(&out[0]).expect("the txn must be refused");
    assert_eq!(message, "etcdserver: duplicate key given in txn request");
    let Some(log_reply::Result::Batch(LogReplies { replies })) = &out[1].reply.result else {
        panic!("a batch answers with a batch: {:?}", out[1].reply);
    };
    assert!(super::module_tests::refusal_of(&replies[0]).is_some());
    assert_eq!(
        snapshot(&store),
        before,
        "a refused command changed the store"
    );
}
