use redb::{Durability, ReadableDatabase};

use crate::sm::command::{CommandOutcome, apply_command};
use baton_proto::batonpb::{LogCommand, log_command::Op, log_reply};
use baton_proto::etcdserverpb::{
    DeleteRangeRequest, LeaseCheckpoint, LeaseCheckpointRequest, LeaseGrantRequest,
    LeaseRevokeRequest, PutRequest, RequestOp, TxnRequest, request_op,
};
use baton_proto::mvccpb::event::EventType;
use baton_store::lease::LeaseChange;
use baton_store::lease::store::{self, LeaseRecord};
use baton_store::testing::{TestStore, put_req, range_req};

fn apply(s: &TestStore, op: Op) -> CommandOutcome {
    let mut txn = s.db.begin_write().unwrap();
    txn.set_durability(Durability::None).unwrap();
    let cmd = LogCommand {
        leader_time_ms: 0,
        op: Some(op),
    };
    let txn = std::sync::Arc::new(txn);
    let runtime = crate::sm::module_tests::runtime();
    let out = apply_command(&txn, &s.index, &cmd, runtime, 1, None).unwrap();
    std::sync::Arc::into_inner(txn).unwrap().commit().unwrap();
    out
}

fn refusal(out: &CommandOutcome) -> Option<(i32, String)> {
    match &out.reply.result {
        Some(log_reply::Result::Refused(r)) => Some((r.code, r.message.clone())),
        _ => None,
    }
}

fn grant(s: &TestStore, id: i64, ttl: i64) -> CommandOutcome {
    apply(s, Op::LeaseGrant(LeaseGrantRequest { ttl, id }))
}

fn revoke(s: &TestStore, id: i64) -> CommandOutcome {
    apply(s, Op::LeaseRevoke(LeaseRevokeRequest { id }))
}

fn put_leased(key: &str, lease: i64) -> PutRequest {
    PutRequest {
        lease,
        ..put_req(key, "v")
    }
}

fn put(s: &TestStore, p: PutRequest) -> CommandOutcome {
    apply(s, Op::Put(p))
}

fn attached(s: &TestStore, id: i64) -> Vec<String> {
    let view = s.db.begin_read().unwrap();
    store::attached_keys(&view, id)
        .unwrap()
        .into_iter()
        .map(|k| String::from_utf8(k).unwrap())
        .collect()
}

fn leases(s: &TestStore) -> Vec<(i64, LeaseRecord)> {
    store::all(&s.db.begin_read().unwrap()).unwrap()
}

fn lease_of(s: &TestStore, key: &str) -> Option<i64> {
    s.range(&range_req(key, ""))
        .unwrap()
        .kvs
        .first()
        .map(|kv| kv.lease)
}

#[test]
fn grant_records_the_lease_and_refuses_like_etcd() {
    let s = TestStore::new();
    let out = grant(&s, 5, 30);
    let Some(log_reply::Result::LeaseGrant(resp)) = &out.reply.result else {
        panic!("{:?}", out.reply);
    };
    assert_eq!((resp.id, resp.ttl), (5, 30));
    assert_eq!(
        resp.header.as_ref().unwrap().revision,
        1,
        "a grant is no KV write"
    );
    assert_eq!(
        out.lease_changes,
        vec![LeaseChange::Granted { id: 5, ttl_s: 30 }]
    );
    let exists = (
        crate::refusal::Code::FailedPrecondition as i32,
        "etcdserver: lease already exists".into(),
    );
    assert_eq!(refusal(&grant(&s, 5, 60)), Some(exists));
    let too_large = (
        crate::refusal::Code::OutOfRange as i32,
        "etcdserver: too large lease TTL".into(),
    );
    assert_eq!(refusal(&grant(&s, 6, 9_000_000_001)), Some(too_large));
    let not_found = (
        crate::refusal::Code::NotFound as i32,
        "etcdserver: requested lease not found".into(),
    );
    assert_eq!(refusal(&grant(&s, 0, 10)), Some(not_found));
    grant(&s, -3, 0);
    let floor = LeaseRecord {
        ttl_s: 1,
        remaining_s: 0,
    };
    assert_eq!(
        leases(&s),
        vec![
            (-3, floor),
            (
                5,
                LeaseRecord {
                    ttl_s: 30,
                    remaining_s: 0
                }
            )
        ]
    );
}

#[test]
fn puts_attach_move_and_detach_keys() {
    let s = TestStore::new();
    grant(&s, 1, 60);
    grant(&s, 2, 60);
    put(&s, put_leased("a", 1));
    put(&s, put_leased("b", 1));
    put(&s, put_leased("c", 2));
    assert_eq!(attached(&s, 1), ["a", "b"]);
    // Another lease moves the key; no lease detaches it; ignore_lease keeps it.
    put(&s, put_leased("a", 2));
    put(&s, put_req("b", "plain"));
    let keep = PutRequest {
        ignore_lease: true,
        ..put_req("c", "new value")
    };
    put(&s, keep);
    assert_eq!(attached(&s, 1), Vec::<String>::new());
    assert_eq!(attached(&s, 2), ["a", "c"]);
    assert_eq!(lease_of(&s, "c"), Some(2));
    // Deleting detaches; so does a txn's put without a lease.
    let del = DeleteRangeRequest {
        key: b"a".to_vec(),
        ..Default::default()
    };
    apply(&s, Op::DeleteRange(del));
    let txn = TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put_req("c", "x"))),
        }],
        ..Default::default()
    };
    apply(&s, Op::Txn(txn));
    assert_eq!(attached(&s, 2), Vec::<String>::new());
}

#[test]
fn put_with_an_unknown_lease_is_refused() {
    let s = TestStore::new();
    let out = put(&s, put_leased("k", 9));
    let not_found = (
        crate::refusal::Code::NotFound as i32,
        "etcdserver: requested lease not found".into(),
    );
    assert_eq!(refusal(&out), Some(not_found));
    grant(&s, 9, 60);
    assert!(refusal(&put(&s, put_leased("k", 9))).is_none());
    assert_eq!(lease_of(&s, "k"), Some(9));
}

#[test]
fn revoke_deletes_every_attached_key_in_one_revision() {
    let s = TestStore::new();
    grant(&s, 1, 60);
    grant(&s, 2, 60);
    for key in ["z", "m", "a"] {
        put(&s, put_leased(key, 1));
    }
    put(&s, put_leased("other", 2));
    let before = s.rev();
    let out = revoke(&s, 1);
    let Some(log_reply::Result::LeaseRevoke(resp)) = &out.reply.result else {
        panic!("{:?}", out.reply);
    };
    assert_eq!(resp.header.as_ref().unwrap().revision, before + 1);
    assert_eq!(s.rev(), before + 1);
    let deleted: Vec<_> = out
        .events
        .iter()
        .map(|e| {
            let kv = e.kv.as_ref().unwrap();
            assert_eq!(e.r#type, EventType::Delete as i32);
            assert_eq!(kv.mod_revision, before + 1);
            assert_eq!(e.prev_kv.as_ref().unwrap().lease, 1);
            String::from_utf8(kv.key.clone()).unwrap()
        })
        .collect();
    assert_eq!(deleted, ["a", "m", "z"], "byte order, as etcd deletes");
    assert_eq!(out.lease_changes, vec![LeaseChange::Revoked { id: 1 }]);
    assert_eq!(s.range(&range_req("a", "{")).unwrap().count, 1);
    assert_eq!(attached(&s, 1), Vec::<String>::new());
    assert_eq!(attached(&s, 2), ["other"]);
    assert_eq!(leases(&s).len(), 1);

    let not_found = (
        crate::refusal::Code::NotFound as i32,
        "etcdserver: requested lease not found".into(),
    );
    assert_eq!(refusal(&revoke(&s, 1)), Some(not_found));
    // A lease without keys goes without moving the revision.
    grant(&s, 3, 60);
    let rev = s.rev();
    let out = revoke(&s, 3);
    assert!(out.events.is_empty());
    assert_eq!(s.rev(), rev);
}

#[test]
fn checkpoints_record_and_clear_remaining_ttls_of_existing_leases() {
    let s = TestStore::new();
    grant(&s, 1, 60);
    let cp = |id, remaining_ttl| LeaseCheckpoint { id, remaining_ttl };
    let request = LeaseCheckpointRequest {
        checkpoints: vec![cp(1, 25), cp(404, 7)],
    };
    let out = apply(&s, Op::LeaseCheckpoint(request));
    assert!(matches!(
        out.reply.result,
        Some(log_reply::Result::LeaseCheckpoint(_))
    ));
    assert_eq!(
        leases(&s),
        vec![(
            1,
            LeaseRecord {
                ttl_s: 60,
                remaining_s: 25
            }
        )]
    );
    assert_eq!(leases(&s)[0].1.takeover_ttl_s(), 25);
    let clear = LeaseCheckpointRequest {
        checkpoints: vec![cp(1, 0)],
    };
    apply(&s, Op::LeaseCheckpoint(clear));
    assert_eq!(leases(&s)[0].1.takeover_ttl_s(), 60);
}
