//! Targeted tests of the store's etcd semantics; the randomized comparison against an
//! independent model is in `model.rs`.

use redb::{ReadableDatabase, ReadableTableMetadata};

use crate::mvcc::{compact_revision, events_since, range};
use crate::ops::kv::{Applied, ApplyError, KvError, KvRequest, KvResponse};
use crate::storage::schema::KV_HISTORY;
pub(crate) use crate::testing::{TestStore, put_req, range_req};
use baton_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest, compare, range_request, request_op, response_op,
};
use baton_proto::mvccpb::{KeyValue, event::EventType};

impl TestStore {
    fn put(&self, key: &str, value: &str) -> i64 {
        match self
            .apply(KvRequest::Put(put_req(key, value)))
            .unwrap()
            .response
        {
            KvResponse::Put(r) => r.header.unwrap().revision,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn get(&self, key: &str) -> Option<KeyValue> {
        self.range(&range_req(key, ""))
            .unwrap()
            .kvs
            .into_iter()
            .next()
    }

    fn keys(&self, req: &RangeRequest) -> Vec<String> {
        let resp = self.range(req).unwrap();
        resp.kvs
            .iter()
            .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
            .collect()
    }
}

fn del_req(key: &str, end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: key.into(),
        range_end: end.into(),
        prev_kv: true,
    }
}

fn op(r: request_op::Request) -> RequestOp {
    RequestOp { request: Some(r) }
}

fn txn(r: TxnRequest) -> KvRequest {
    KvRequest::Txn(r)
}

fn txn_resp(a: Applied) -> baton_proto::etcdserverpb::TxnResponse {
    match a.response {
        KvResponse::Txn(t) => t,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn revisions_versions_and_create_revisions_follow_etcd() {
    let s = TestStore::new();
    assert_eq!(s.rev(), 1);
    assert_eq!(s.put("a", "1"), 2);
    assert_eq!(s.put("a", "2"), 3);
    let kv = s.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(kv.value, b"2");

    // Deleting nothing keeps the revision; deleting something moves it.
    let none = s.apply(KvRequest::DeleteRange(del_req("zz", ""))).unwrap();
    match none.response {
        KvResponse::DeleteRange(d) => assert_eq!((d.deleted, d.header.unwrap().revision), (0, 3)),
        other => panic!("unexpected {other:?}"),
    }
    assert!(none.events.is_empty());
    let del = s.apply(KvRequest::DeleteRange(del_req("a", ""))).unwrap();
    match &del.response {
        KvResponse::DeleteRange(d) => {
            assert_eq!((d.deleted, d.header.as_ref().unwrap().revision), (1, 4));
            assert_eq!(d.prev_kvs[0].value, b"2");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(del.events[0].r#type, EventType::Delete as i32);
    assert_eq!(del.events[0].kv.as_ref().unwrap().mod_revision, 4);
    assert_eq!(s.rev(), 4);

    // Re-creation starts a new generation.
    assert_eq!(s.put("a", "3"), 5);
    let kv = s.get("a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

#[test]
fn range_end_conventions() {
    let s = TestStore::new();
    for k in ["a", "ab", "abc", "b", "c"] {
        s.put(k, k);
    }
    assert_eq!(s.keys(&range_req("ab", "")), ["ab"]);
    assert_eq!(s.keys(&range_req("ab", "ac")), ["ab", "abc"]);
    assert_eq!(s.keys(&range_req("ab", "\0")), ["ab", "abc", "b", "c"]);
    assert_eq!(s.keys(&range_req("\0", "\0")), ["a", "ab", "abc", "b", "c"]);
    assert!(s.keys(&range_req("b", "a")).is_empty());
    assert!(s.keys(&range_req("b", "b")).is_empty());
    assert_eq!(s.range(&range_req("b", "a")).unwrap().count, 0);
}

#[test]
fn limit_more_count_and_flags() {
    let s = TestStore::new();
    for k in ["a", "b", "c", "d"] {
        s.put(k, "v");
    }
    let mut req = range_req("a", "\0");
    req.limit = 2;
    let resp = s.range(&req).unwrap();
    assert_eq!((resp.kvs.len(), resp.more, resp.count), (2, true, 4));
    req.limit = 4;
    let resp = s.range(&req).unwrap();
    assert_eq!((resp.kvs.len(), resp.more, resp.count), (4, false, 4));
    req.limit = 0;
    req.count_only = true;
    let resp = s.range(&req).unwrap();
    assert_eq!((resp.kvs.len(), resp.more, resp.count), (0, false, 4));
    req.count_only = false;
    req.keys_only = true;
    let resp = s.range(&req).unwrap();
    assert!(
        resp.kvs
            .iter()
            .all(|kv| kv.value.is_empty() && kv.version == 1)
    );
    // Filters shrink kvs and `more`, never `count`.
    let mut req = range_req("a", "\0");
    req.min_mod_revision = 4;
    req.limit = 1;
    let resp = s.range(&req).unwrap();
    assert_eq!(resp.kvs[0].key, b"c");
    assert_eq!((resp.more, resp.count), (true, 4));
}

#[test]
fn sort_orders_and_targets() {
    let s = TestStore::new();
    s.put("b", "2");
    s.put("a", "3");
    s.put("c", "1");
    s.put("a", "4");
    let mut req = range_req("a", "\0");
    req.sort_order = range_request::SortOrder::Descend as i32;
    assert_eq!(s.keys(&req), ["c", "b", "a"]);
    req.sort_target = range_request::SortTarget::Mod as i32;
    assert_eq!(s.keys(&req), ["a", "c", "b"]);
    req.sort_target = range_request::SortTarget::Value as i32;
    assert_eq!(s.keys(&req), ["a", "b", "c"]);
    // NONE with a non-key target sorts ascending.
    req.sort_order = range_request::SortOrder::None as i32;
    req.sort_target = range_request::SortTarget::Create as i32;
    assert_eq!(s.keys(&req), ["b", "a", "c"]);
    // ... but still fetches only limit + 1 before sorting, as etcd does.
    req.limit = 1;
    req.sort_target = range_request::SortTarget::Version as i32;
    let resp = s.range(&req).unwrap();
    assert_eq!((resp.kvs[0].key.as_slice(), resp.more), (&b"b"[..], true));
}

#[test]
fn historical_reads_and_revision_errors() {
    let s = TestStore::new();
    s.put("a", "1"); // 2
    s.put("b", "1"); // 3
    s.put("a", "2"); // 4
    s.apply(KvRequest::DeleteRange(del_req("b", ""))).unwrap(); // 5
    let at = |rev: i64| {
        let mut r = range_req("a", "\0");
        r.revision = rev;
        s.range(&r)
    };
    assert!(at(1).unwrap().kvs.is_empty());
    assert_eq!(
        at(3)
            .unwrap()
            .kvs
            .iter()
            .map(|kv| kv.mod_revision)
            .collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(
        at(4)
            .unwrap()
            .kvs
            .iter()
            .map(|kv| kv.version)
            .collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(at(5).unwrap().kvs.len(), 1);
    assert_eq!(at(3).unwrap().header.unwrap().revision, 5);
    assert_eq!(at(6), Err(KvError::FutureRevision));
    assert_eq!(
        at(-7).unwrap().kvs.len(),
        1,
        "a negative revision reads the current one"
    );
}

#[test]
fn put_flags_and_their_errors() {
    let s = TestStore::new();
    let ignore_value = PutRequest {
        key: "a".into(),
        ignore_value: true,
        ..Default::default()
    };
    assert_eq!(
        s.apply(KvRequest::Put(ignore_value.clone()))
            .unwrap_err()
            .to_string(),
        "etcdserver: key not found"
    );
    let leased = PutRequest {
        key: "a".into(),
        lease: 7,
        ..Default::default()
    };
    assert!(matches!(
        s.apply(KvRequest::Put(leased)),
        Err(ApplyError::Rejected(KvError::LeaseNotFound))
    ));
    assert_eq!(s.rev(), 1, "rejected requests write nothing");

    s.put("a", "old");
    let resp = s.apply(KvRequest::Put(ignore_value)).unwrap();
    let kv = s.get("a").unwrap();
    assert_eq!((kv.value.as_slice(), kv.version), (&b"old"[..], 2));
    assert_eq!(resp.events[0].prev_kv.as_ref().unwrap().version, 1);
    let with_prev = PutRequest {
        key: "a".into(),
        value: "new".into(),
        prev_kv: true,
        ..Default::default()
    };
    match s.apply(KvRequest::Put(with_prev)).unwrap().response {
        KvResponse::Put(p) => assert_eq!(p.prev_kv.unwrap().value, b"old"),
        other => panic!("unexpected {other:?}"),
    }
}

fn cmp(
    key: &str,
    target: compare::CompareTarget,
    result: compare::CompareResult,
    u: compare::TargetUnion,
) -> Compare {
    Compare {
        key: key.into(),
        target: target as i32,
        result: result as i32,
        target_union: Some(u),
        range_end: vec![],
    }
}

#[test]
fn txn_branches_share_one_revision_and_see_their_own_writes() {
    let s = TestStore::new();
    s.put("a", "1"); // 2
    let t = TxnRequest {
        compare: vec![cmp(
            "a",
            compare::CompareTarget::Value,
            compare::CompareResult::Equal,
            compare::TargetUnion::Value("1".into()),
        )],
        success: vec![
            op(request_op::Request::RequestPut(put_req("b", "x"))),
            op(request_op::Request::RequestRange(range_req("a", "\0"))),
            op(request_op::Request::RequestDeleteRange(del_req("a", ""))),
        ],
        failure: vec![op(request_op::Request::RequestPut(put_req("z", "no")))],
    };
    let applied = s.apply(txn(t.clone())).unwrap();
    let events: Vec<_> = applied
        .events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().mod_revision)
        .collect();
    assert_eq!(events, [3, 3]);
    let resp = txn_resp(applied);
    assert!(resp.succeeded);
    assert_eq!(resp.header.unwrap().revision, 3);
    match &resp.responses[1].response {
        Some(response_op::Response::ResponseRange(r)) => {
            assert_eq!(r.kvs.len(), 2, "the range sees the put before it");
            assert_eq!(r.header.as_ref().unwrap().revision, 3);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(s.get("a").is_none());
    assert_eq!(s.get("b").unwrap().mod_revision, 3);

    // Same txn again: compare fails, failure branch runs.
    let resp = txn_resp(s.apply(txn(t)).unwrap());
    assert!(!resp.succeeded);
    assert_eq!(s.get("z").unwrap().mod_revision, 4);

    // A read-only txn reports the current revision and moves nothing.
    let ro = TxnRequest {
        success: vec![op(request_op::Request::RequestRange(range_req("b", "")))],
        ..Default::default()
    };
    let resp = txn_resp(s.apply(txn(ro.clone())).unwrap());
    assert_eq!(resp.header.unwrap().revision, 4);
    let via_read = crate::ops::txn::txn_read_only(&s.view(), &ro).unwrap();
    assert_eq!(via_read.header.unwrap().revision, 4);
    assert_eq!(s.rev(), 4);
}

#[test]
fn nested_txn_compares_see_the_state_before_the_txn() {
    let s = TestStore::new();
    let nested = TxnRequest {
        // "a" does not exist before the outer txn, so version == 0 holds even after its put.
        compare: vec![cmp(
            "a",
            compare::CompareTarget::Version,
            compare::CompareResult::Equal,
            compare::TargetUnion::Version(0),
        )],
        success: vec![op(request_op::Request::RequestPut(put_req("yes", "1")))],
        failure: vec![op(request_op::Request::RequestPut(put_req("no", "1")))],
    };
    let outer = TxnRequest {
        success: vec![
            op(request_op::Request::RequestPut(put_req("a", "1"))),
            op(request_op::Request::RequestTxn(nested)),
        ],
        ..Default::default()
    };
    let resp = txn_resp(s.apply(txn(outer)).unwrap());
    match &resp.responses[1].response {
        Some(response_op::Response::ResponseTxn(t)) => {
            assert!(t.succeeded);
            assert_eq!(
                t.header.as_ref().unwrap().revision,
                0,
                "nested headers stay empty"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(s.get("yes").is_some() && s.get("no").is_none());
}

#[test]
fn txn_checks_run_before_any_write() {
    let s = TestStore::new();
    s.put("a", "1"); // 2
    let mut bad_range = range_req("a", "");
    bad_range.revision = 10;
    let t = TxnRequest {
        success: vec![
            op(request_op::Request::RequestPut(put_req("b", "1"))),
            op(request_op::Request::RequestRange(bad_range)),
        ],
        ..Default::default()
    };
    assert!(matches!(
        s.apply(txn(t)),
        Err(ApplyError::Rejected(KvError::FutureRevision))
    ));
    let ignore = PutRequest {
        key: "nope".into(),
        ignore_value: true,
        ..Default::default()
    };
    let t = TxnRequest {
        success: vec![
            op(request_op::Request::RequestPut(put_req("b", "1"))),
            op(request_op::Request::RequestPut(ignore)),
        ],
        ..Default::default()
    };
    assert!(matches!(
        s.apply(txn(t)),
        Err(ApplyError::Rejected(KvError::KeyNotFound))
    ));
    // A from-key delete escapes etcd's duplicate check; the ignore_value put after it is refused.
    let ignore = PutRequest {
        key: "a".into(),
        ignore_value: true,
        ..Default::default()
    };
    let t = TxnRequest {
        success: vec![
            op(request_op::Request::RequestDeleteRange(del_req("a", "\0"))),
            op(request_op::Request::RequestPut(ignore)),
        ],
        ..Default::default()
    };
    assert!(crate::mvcc::checks::check_txn(&t, baton_limits::TXN_OPS_MAX).is_ok());
    assert!(matches!(
        s.apply(txn(t)),
        Err(ApplyError::Rejected(KvError::KeyNotFound))
    ));
    assert_eq!(s.rev(), 2);
    assert!(s.get("b").is_none());
}

#[test]
fn compaction_keeps_what_later_reads_need_and_drops_the_rest() {
    let s = TestStore::new();
    s.put("a", "1"); // 2
    s.put("a", "2"); // 3
    s.put("b", "1"); // 4
    s.apply(KvRequest::DeleteRange(del_req("b", ""))).unwrap(); // 5
    s.put("c", "1"); // 6
    let compact = |rev| {
        s.apply(KvRequest::Compaction(CompactionRequest {
            revision: rev,
            physical: false,
        }))
    };
    assert!(matches!(
        compact(7),
        Err(ApplyError::Rejected(KvError::FutureRevision))
    ));
    let before: Vec<_> = (5..=6)
        .map(|rev| {
            let mut r = range_req("\0", "\0");
            r.revision = rev;
            s.range(&r).unwrap().kvs
        })
        .collect();
    match compact(5).unwrap().response {
        KvResponse::Compaction(c) => assert_eq!(c.header.unwrap().revision, 6),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        compact(5),
        Err(ApplyError::Rejected(KvError::Compacted))
    ));
    assert!(matches!(
        compact(4),
        Err(ApplyError::Rejected(KvError::Compacted))
    ));
    assert_eq!(compact_revision(&s.db.begin_read().unwrap()).unwrap(), 5);
    assert_eq!(s.rev(), 6, "compaction does not move the revision");
    for (i, rev) in (5..=6).enumerate() {
        let mut r = range_req("\0", "\0");
        r.revision = rev;
        assert_eq!(s.range(&r).unwrap().kvs, before[i]);
    }
    let mut r = range_req("a", "");
    r.revision = 4;
    assert_eq!(s.range(&r), Err(KvError::Compacted));

    // Left: a@3 (latest put at or below 5) and c@6. Gone: a@2, b@4 and b's tombstone @5.
    let read = s.db.begin_read().unwrap();
    assert_eq!(read.open_table(KV_HISTORY).unwrap().len().unwrap(), 2);
    assert_eq!(s.index.changes(), 2);
    let events = events_since(&read, 0, 10).unwrap();
    let revs: Vec<_> = events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().mod_revision)
        .collect();
    assert_eq!(revs, [3, 6]);
}

#[test]
fn compaction_of_a_fresh_store_follows_etcd() {
    let s = TestStore::new();
    // etcd starts with compacted revision -1, so 0 and 1 are both accepted once.
    s.apply(KvRequest::Compaction(CompactionRequest {
        revision: 0,
        physical: true,
    }))
    .unwrap();
    s.apply(KvRequest::Compaction(CompactionRequest {
        revision: 1,
        physical: true,
    }))
    .unwrap();
    let again = s.apply(KvRequest::Compaction(CompactionRequest {
        revision: 1,
        physical: true,
    }));
    assert!(matches!(
        again,
        Err(ApplyError::Rejected(KvError::Compacted))
    ));
}

#[test]
fn events_since_lists_changes_in_revision_order() {
    let s = TestStore::new();
    s.put("b", "1");
    s.put("a", "1");
    s.apply(KvRequest::DeleteRange(del_req("a", "\0"))).unwrap();
    let events = events_since(&s.db.begin_read().unwrap(), 3, 10).unwrap();
    let got: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.r#type,
                e.kv.as_ref().unwrap().key.clone(),
                e.kv.as_ref().unwrap().mod_revision,
            )
        })
        .collect();
    let put = EventType::Put as i32;
    let del = EventType::Delete as i32;
    assert_eq!(
        got,
        [
            (put, b"a".to_vec(), 3),
            (del, b"a".to_vec(), 4),
            (del, b"b".to_vec(), 4)
        ]
    );
    assert_eq!(
        events_since(&s.db.begin_read().unwrap(), 3, 1)
            .unwrap()
            .len(),
        1
    );
}

/// The key index is shared with readers whose snapshots predate a compaction: a read such a
/// reader makes below the new compacted revision fails as compacted instead of answering from
/// history the index no longer lists; reads at or above it are unchanged.
#[test]
fn a_read_racing_a_compaction_fails_as_compacted() {
    let s = TestStore::new();
    for i in 0..6 {
        s.put("a", &i.to_string());
    }
    let old_view = s.view();
    let at = |rev: i64| {
        let mut r = range_req("a", "");
        r.revision = rev;
        range(&old_view, &r)
    };
    let before: Vec<_> = (2..=7).map(at).collect();
    s.apply(KvRequest::Compaction(CompactionRequest {
        revision: 5,
        physical: true,
    }))
    .unwrap();
    for rev in 2..=7 {
        let expected = if rev < 5 {
            Err(KvError::Compacted)
        } else {
            before[(rev - 2) as usize].clone()
        };
        assert_eq!(at(rev), expected, "at revision {rev}");
    }
}

/// A live value newer than the write replacing it (revisions gone back) stops the apply with a
/// broken-invariant error instead of writing a key whose versions go backwards.
#[test]
fn a_put_over_a_value_from_the_future_is_a_broken_invariant() {
    let s = TestStore::new();
    s.put("k", "1");
    let forged = KeyValue {
        key: b"k".to_vec(),
        create_revision: 2,
        mod_revision: 100,
        version: 7,
        value: b"from the future".to_vec(),
        lease: 0,
    };
    let txn = s.db.begin_write().unwrap();
    {
        let mut latest = txn.open_table(crate::storage::schema::KV_LATEST).unwrap();
        let record =
            crate::mvcc::codec::encode_history(crate::storage::schema::REV_KIND_PUT, &forged);
        latest.insert(b"k".as_slice(), &record[1..]).unwrap();
    }
    txn.commit().unwrap();
    let before = s.rev();
    match s.apply(KvRequest::Put(put_req("k", "2"))) {
        Err(ApplyError::Storage(crate::mvcc::error::StorageError::Invariant(message))) => {
            assert!(message.contains("mod revision 100"), "{message}");
        }
        other => panic!("expected a broken invariant, got {other:?}"),
    }
    assert_eq!(
        s.rev(),
        before,
        "nothing may be applied past a broken invariant"
    );
}
