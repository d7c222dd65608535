use super::*;
use baton_limits::TXN_OPS_MAX;
use baton_proto::etcdserverpb::Compare;

fn put(k: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: k.into(),
            ..Default::default()
        })),
    }
}

fn del(k: &str, end: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                prev_kv: false,
            },
        )),
    }
}

fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestTxn(TxnRequest {
            compare: vec![],
            success,
            failure,
        })),
    }
}

fn check(success: Vec<RequestOp>) -> Result<(), KvError> {
    check_txn(
        &TxnRequest {
            compare: vec![],
            success,
            failure: vec![],
        },
        TXN_OPS_MAX,
    )
}

#[test]
fn single_request_checks() {
    assert_eq!(
        check_range(&RangeRequest::default()),
        Err(KvError::EmptyKey)
    );
    let mut p = PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        ignore_value: true,
        ..Default::default()
    };
    assert_eq!(check_put(&p), Err(KvError::ValueProvided));
    p.value.clear();
    p.ignore_lease = true;
    p.lease = 5;
    assert_eq!(check_put(&p), Err(KvError::LeaseProvided));
    p.key.clear();
    assert_eq!(
        check_put(&p),
        Err(KvError::EmptyKey),
        "the empty key is reported first"
    );
    assert_eq!(
        check_delete_range(&DeleteRangeRequest::default()),
        Err(KvError::EmptyKey)
    );
}

#[test]
fn op_counts_and_empty_ops() {
    let many: Vec<_> = (0..=TXN_OPS_MAX).map(|i| put(&format!("k{i}"))).collect();
    assert_eq!(check(many), Err(KvError::TooManyOps));
    let compares = vec![
        Compare {
            key: b"k".to_vec(),
            ..Default::default()
        };
        TXN_OPS_MAX + 1
    ];
    let t = TxnRequest {
        compare: compares,
        ..Default::default()
    };
    assert_eq!(check_txn(&t, TXN_OPS_MAX), Err(KvError::TooManyOps));
    let t = TxnRequest {
        compare: vec![Compare::default()],
        ..Default::default()
    };
    assert_eq!(check_txn(&t, TXN_OPS_MAX), Err(KvError::EmptyKey));
    assert_eq!(
        check(vec![RequestOp { request: None }]),
        Err(KvError::KeyNotFound)
    );
    // A nested txn gets the budget its parent's widest list leaves: 3 - 2 = 1 here.
    let t = TxnRequest {
        success: vec![put("a"), nested(vec![put("b"), put("c")], vec![])],
        ..Default::default()
    };
    assert_eq!(check_txn(&t, 3), Err(KvError::TooManyOps));
    let t = TxnRequest {
        success: vec![put("a"), nested(vec![put("b")], vec![])],
        ..Default::default()
    };
    assert_eq!(check_txn(&t, 3), Ok(()));
}

#[test]
fn duplicate_puts_and_deletes_overlapping_puts() {
    assert_eq!(check(vec![put("a"), put("a")]), Err(KvError::DuplicateKey));
    assert_eq!(check(vec![put("a"), put("b")]), Ok(()));
    assert_eq!(
        check(vec![del("a", ""), put("a")]),
        Err(KvError::DuplicateKey)
    );
    assert_eq!(
        check(vec![put("b"), del("a", "c")]),
        Err(KvError::DuplicateKey),
        "order does not matter"
    );
    assert_eq!(
        check(vec![del("a", "b"), put("b")]),
        Ok(()),
        "range ends are exclusive"
    );
    assert_eq!(
        check(vec![del("a", ""), del("a", "")]),
        Ok(()),
        "deletes may overlap"
    );
}

#[test]
fn nested_txns_share_the_duplicate_rules() {
    // The branches of one nested txn exclude each other.
    assert_eq!(check(vec![nested(vec![put("a")], vec![put("a")])]), Ok(()));
    assert_eq!(
        check(vec![put("a"), nested(vec![put("a")], vec![])]),
        Err(KvError::DuplicateKey)
    );
    assert_eq!(
        check(vec![put("a"), nested(vec![], vec![put("a")])]),
        Err(KvError::DuplicateKey)
    );
    assert_eq!(
        check(vec![del("a", "z"), nested(vec![put("b")], vec![])]),
        Err(KvError::DuplicateKey)
    );
    assert_eq!(
        check(vec![nested(vec![del("a", "z")], vec![]), put("b")]),
        Err(KvError::DuplicateKey)
    );
    assert_eq!(
        check(vec![
            nested(vec![put("a")], vec![]),
            nested(vec![put("a")], vec![])
        ]),
        Err(KvError::DuplicateKey)
    );
    assert_eq!(
        check(vec![
            nested(vec![del("a", "z")], vec![]),
            nested(vec![], vec![put("q")])
        ]),
        Err(KvError::DuplicateKey)
    );
}

#[test]
fn from_key_deletes_slip_through_as_in_etcd() {
    // etcd's interval check takes range_end "\0" literally, as an interval ending below its
    // start, so it does not see the overlap; the apply path guards against the consequence.
    assert_eq!(check(vec![del("a", "\0"), put("b")]), Ok(()));
    assert_eq!(
        check(vec![nested(vec![del("a", "\0")], vec![]), put("b")]),
        Ok(())
    );
}

#[test]
fn interval_tree_matches_a_plain_overlap_test_for_ordinary_intervals() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(7);
    let key = |rng: &mut StdRng| -> Vec<u8> {
        (0..rng.random_range(1..3))
            .map(|_| rng.random_range(b'a'..b'f'))
            .collect()
    };
    for _ in 0..300 {
        let mut tree = interval_tree::IntervalTree::default();
        let mut plain = Vec::new();
        for _ in 0..rng.random_range(0..12) {
            let (a, b) = (key(&mut rng), key(&mut rng));
            if a == b {
                continue;
            }
            let (begin, end) = if a < b { (a, b) } else { (b, a) };
            plain.push((begin.clone(), end.clone()));
            tree.insert(Interval { begin, end });
        }
        for _ in 0..20 {
            let p = key(&mut rng);
            let expected = plain.iter().any(|(b, e)| *b <= p && p < *e);
            assert_eq!(
                tree.intersects(&Interval::point(&p)),
                expected,
                "point {p:?} in {plain:?}"
            );
        }
    }
}
