//! Txn semantics (compares, branches, nesting, revisions), asserted as etcd 3.4 behaves.

use anyhow::{Result, bail};
use baton_e2e::inspect::{keys, kv_keys, kv_tuples, rev};
use baton_e2e::{Backend, assert_grpc_error, backend_test, start_single};
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};
use tonic::Code;

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";

fn s(text: &str) -> String {
    text.to_owned()
}

/// Revision in an op response's header, which etcd fills (revision only) inside a txn.
fn op_rev(response: &TxnOpResponse) -> i64 {
    match response {
        TxnOpResponse::Put(r) => rev(r.header()),
        TxnOpResponse::Get(r) => rev(r.header()),
        TxnOpResponse::Delete(r) => rev(r.header()),
        TxnOpResponse::Txn(r) => rev(r.header()),
    }
}

fn nested(response: &TxnOpResponse) -> Result<&TxnResponse> {
    match response {
        TxnOpResponse::Txn(inner) => Ok(inner),
        other => bail!("expected a nested txn response, got {other:?}"),
    }
}

/// Runs `when([compare]) then [get key] else []` and reports which branch ran.
async fn compare_holds(c: &mut Client, compare: Compare) -> Result<bool> {
    let txn = Txn::new().when([compare]).and_then([TxnOp::get("t", None)]);
    let response = c.txn(txn).await?;
    let ops = response.op_responses().len();
    assert_eq!(
        ops,
        usize::from(response.succeeded()),
        "only the chosen branch runs"
    );
    Ok(response.succeeded())
}

async fn txn_compare_every_target_and_result(backend: Backend) -> Result<()> {
    use CompareOp::{Equal, Greater, Less, NotEqual};
    let (_cluster, mut c) = start_single(backend).await?;
    let lease = c.lease_grant(600, None).await?.id();
    let r = rev(c
        .put("t", "m", Some(PutOptions::new().with_lease(lease)))
        .await?
        .header());
    let cases = [
        (Compare::value("t", Equal, "m"), true),
        (Compare::value("t", Equal, "n"), false),
        (Compare::value("t", Greater, "a"), true),
        (Compare::value("t", Greater, "m"), false),
        (Compare::value("t", Less, "z"), true),
        (Compare::value("t", Less, "m"), false),
        (Compare::value("t", NotEqual, "m"), false),
        (Compare::value("t", NotEqual, "x"), true),
        (Compare::version("t", Equal, 1), true),
        (Compare::version("t", Greater, 0), true),
        (Compare::version("t", Greater, 1), false),
        (Compare::version("t", Less, 2), true),
        (Compare::version("t", NotEqual, 1), false),
        (Compare::create_revision("t", Equal, r), true),
        (Compare::create_revision("t", Less, r), false),
        (Compare::create_revision("t", Greater, r - 1), true),
        (Compare::create_revision("t", NotEqual, r), false),
        (Compare::mod_revision("t", Equal, r), true),
        (Compare::mod_revision("t", Less, r + 1), true),
        (Compare::mod_revision("t", Greater, r), false),
        (Compare::lease("t", Equal, lease), true),
        (Compare::lease("t", NotEqual, 0), true),
        (Compare::lease("t", Greater, lease - 1), true),
        (Compare::lease("t", Less, lease), false),
        // A missing key compares as all-zero metadata, but any value compare fails.
        (Compare::value("missing", NotEqual, "x"), false),
        (Compare::value("missing", Equal, ""), false),
        (Compare::version("missing", Equal, 0), true),
        (Compare::create_revision("missing", Equal, 0), true),
        (Compare::mod_revision("missing", Equal, 0), true),
        (Compare::lease("missing", Equal, 0), true),
    ];
    for (compare, want) in cases {
        let label = format!("{compare:?}");
        assert_eq!(compare_holds(&mut c, compare).await?, want, "{label}");
    }
    Ok(())
}

async fn txn_compares_are_conjunctive_and_ranged(backend: Backend) -> Result<()> {
    use CompareOp::{Equal, Greater};
    let (_cluster, mut c) = start_single(backend).await?;
    c.put("t", "m", None).await?;
    c.put("r/1", "same", None).await?;
    c.put("r/2", "same", None).await?;
    let both = [
        Compare::value("t", Equal, "m"),
        Compare::version("t", Equal, 1),
    ];
    let txn = Txn::new().when(both.to_vec());
    assert!(c.txn(txn).await?.succeeded());
    let one_false = vec![
        Compare::value("t", Equal, "m"),
        Compare::version("t", Equal, 2),
    ];
    assert!(!c.txn(Txn::new().when(one_false)).await?.succeeded());

    // A ranged compare must hold for every key in the range.
    assert!(compare_holds(&mut c, Compare::value("r/", Equal, "same").with_prefix()).await?);
    c.put("r/3", "different", None).await?;
    assert!(!compare_holds(&mut c, Compare::value("r/", Equal, "same").with_prefix()).await?);
    assert!(compare_holds(&mut c, Compare::version("r/", Greater, 0).with_prefix()).await?);
    let range = Compare::version("r/1", Equal, 1).with_range("r/3");
    assert!(
        compare_holds(&mut c, range).await?,
        "range_end is exclusive"
    );
    // An empty range compares like one missing key.
    assert!(!compare_holds(&mut c, Compare::version("none/", Equal, 5).with_prefix()).await?);
    assert!(compare_holds(&mut c, Compare::version("none/", Equal, 0).with_prefix()).await?);
    assert!(!compare_holds(&mut c, Compare::value("none/", Equal, "x").with_prefix()).await?);
    Ok(())
}

async fn txn_branches_and_op_responses(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = start_single(backend).await?;
    c.put("a", "old", None).await?; // rev 2
    c.put("gone", "x", None).await?; // rev 3
    let ops = vec![
        TxnOp::get("a", None),
        TxnOp::put("a", "new", Some(PutOptions::new().with_prev_key())),
        TxnOp::get("a", None),
        TxnOp::delete("gone", Some(DeleteOptions::new().with_prev_key())),
        TxnOp::put("b", "b", None),
    ];
    let txn = Txn::new()
        .when([Compare::value("a", CompareOp::Equal, "old")])
        .and_then(ops);
    let response = c.txn(txn).await?;
    assert!(response.succeeded());
    assert_eq!(
        rev(response.header()),
        4,
        "all writes of one txn share one revision"
    );
    let ops = response.op_responses();
    let [
        TxnOpResponse::Get(before),
        TxnOpResponse::Put(put),
        TxnOpResponse::Get(after),
        TxnOpResponse::Delete(del),
        TxnOpResponse::Put(put_b),
    ] = ops.as_slice()
    else {
        bail!("unexpected op responses {ops:?}");
    };
    // Reads before the first write see the old revision; later ops see their own writes.
    assert_eq!(rev(before.header()), 3);
    assert_eq!(kv_tuples(before.kvs()), [(s("a"), s("old"), 2, 2, 1, 0)]);
    assert_eq!(rev(put.header()), 4);
    assert_eq!(
        put.prev_key().map(|kv| kv.value().to_vec()),
        Some(b"old".to_vec())
    );
    assert_eq!(rev(after.header()), 4);
    assert_eq!(kv_tuples(after.kvs()), [(s("a"), s("new"), 2, 4, 2, 0)]);
    assert_eq!(
        (rev(del.header()), del.deleted(), kv_keys(del.prev_kvs())),
        (4, 1, vec![s("gone")])
    );
    assert_eq!(rev(put_b.header()), 4);
    // Inside a txn, op headers carry only the revision.
    let header = put
        .header()
        .map(|h| (h.cluster_id(), h.member_id(), h.raft_term()));
    assert_eq!(header, Some((0, 0, 0)));

    let all = c.get("", Some(GetOptions::new().with_all_keys())).await?;
    assert_eq!(
        kv_tuples(all.kvs()),
        [(s("a"), s("new"), 2, 4, 2, 0), (s("b"), s("b"), 4, 4, 1, 0)]
    );

    // A failing compare runs the else branch.
    let txn = Txn::new()
        .when([Compare::value("a", CompareOp::Equal, "old")])
        .and_then([TxnOp::put("never", "x", None)])
        .or_else([TxnOp::put("else", "x", None), TxnOp::get("a", None)]);
    let response = c.txn(txn).await?;
    assert!(!response.succeeded());
    assert_eq!(rev(response.header()), 5);
    assert_eq!(
        response
            .op_responses()
            .iter()
            .map(op_rev)
            .collect::<Vec<_>>(),
        [5, 5]
    );
    assert!(c.get("never", None).await?.kvs().is_empty());
    assert_eq!(c.get("else", None).await?.count(), 1);
    Ok(())
}

async fn txn_without_changes_keeps_revision(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = start_single(backend).await?;
    c.put("a", "1", None).await?; // rev 2
    let empty = c.txn(Txn::new()).await?;
    assert_eq!(
        (
            empty.succeeded(),
            rev(empty.header()),
            empty.op_responses().len()
        ),
        (true, 2, 0)
    );
    let read_only = c.txn(Txn::new().and_then([TxnOp::get("a", None)])).await?;
    assert_eq!(rev(read_only.header()), 2);
    // Deleting keys that do not exist changes nothing, so no new revision.
    let noop = vec![
        TxnOp::delete("x", None),
        TxnOp::delete("y", None),
        TxnOp::get("a", None),
    ];
    let noop = c.txn(Txn::new().and_then(noop)).await?;
    assert_eq!(rev(noop.header()), 2);
    assert_eq!(
        noop.op_responses().iter().map(op_rev).collect::<Vec<_>>(),
        [2, 2, 2]
    );
    let next = c.put("b", "1", None).await?;
    assert_eq!(rev(next.header()), 3);
    Ok(())
}

async fn txn_nested(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = start_single(backend).await?;
    c.put("k1", "v", None).await?; // rev 2
    let inner = Txn::new()
        .when([Compare::value("n1", CompareOp::Equal, "a")])
        .and_then([TxnOp::put("n2", "then", None)])
        .or_else([TxnOp::get("n1", None), TxnOp::put("n3", "else", None)]);
    let outer = Txn::new()
        .when([Compare::version("k1", CompareOp::Equal, 1)])
        .and_then([
            TxnOp::put("n1", "a", None),
            TxnOp::txn(inner),
            TxnOp::get("n", Some(GetOptions::new().with_prefix())),
        ]);
    let response = c.txn(outer).await?;
    assert!(response.succeeded());
    assert_eq!(rev(response.header()), 3);
    let ops = response.op_responses();
    assert_eq!(ops.len(), 3);
    let inner = nested(&ops[1])?;
    // Every compare in the tree is evaluated against the state before the txn, so the
    // outer txn's own put of n1 does not satisfy the nested compare.
    assert!(!inner.succeeded());
    // A nested txn's header is present but entirely zero.
    let header = inner
        .header()
        .map(|h| (h.cluster_id(), h.member_id(), h.revision(), h.raft_term()));
    assert_eq!(header, Some((0, 0, 0, 0)));
    let inner_ops = inner.op_responses();
    let [TxnOpResponse::Get(seen), TxnOpResponse::Put(_)] = inner_ops.as_slice() else {
        bail!("unexpected nested responses {inner_ops:?}");
    };
    // Ranges inside the nested txn still see the earlier writes of the same txn.
    assert_eq!(kv_tuples(seen.kvs()), [(s("n1"), s("a"), 3, 3, 1, 0)]);
    let TxnOpResponse::Get(listing) = &ops[2] else {
        bail!("expected a range response, got {:?}", ops[2]);
    };
    assert_eq!(keys(listing), ["n1", "n3"]);

    let read_only =
        Txn::new().and_then([TxnOp::txn(Txn::new().and_then([TxnOp::get("n1", None)]))]);
    let response = c.txn(read_only).await?;
    assert_eq!(rev(response.header()), 3);
    assert!(nested(&response.op_responses()[0])?.succeeded());
    Ok(())
}

async fn txn_range_revision_bounds(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = start_single(backend).await?;
    c.put("a", "1", None).await?; // rev 2
    let at = |revision| Some(GetOptions::new().with_revision(revision));
    let txn_read =
        |revision| Txn::new().and_then([TxnOp::put("w", "x", None), TxnOp::get("a", at(revision))]);
    // Before any compaction the oldest readable revision counts as -1, so -1 passes.
    assert!(c.txn(txn_read(-1)).await?.succeeded());
    assert_grpc_error(c.txn(txn_read(-2)).await, Code::OutOfRange, COMPACTED);
    assert_grpc_error(c.txn(txn_read(4)).await, Code::OutOfRange, FUTURE);
    // A plain range treats every revision <= 0 as "current".
    assert_eq!(c.get("a", at(-2)).await?.count(), 1);
    c.compact(3, None).await?;
    assert_grpc_error(c.txn(txn_read(-1)).await, Code::OutOfRange, COMPACTED);
    assert_grpc_error(c.txn(txn_read(2)).await, Code::OutOfRange, COMPACTED);
    assert!(c.txn(txn_read(3)).await?.succeeded());
    assert_eq!(c.get("a", at(-1)).await?.count(), 1);
    assert_eq!(
        c.get("w", None).await?.kvs()[0].version(),
        2,
        "exactly the two accepted txns wrote"
    );
    Ok(())
}

backend_test!(
    txn_compare_every_target_and_result,
    txn_compares_are_conjunctive_and_ranged,
    txn_branches_and_op_responses,
    txn_without_changes_keeps_revision,
    txn_nested,
    txn_range_revision_bounds,
);
