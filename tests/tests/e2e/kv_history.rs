//! Reads at past revisions and compaction, as etcd 3.4 behaves.

use anyhow::Result;
use baton_e2e::inspect::{keys, kv_tuples, rev};
use baton_e2e::{Backend, assert_grpc_error, backend_test, start_single};
use etcd_client::{CompactionOptions, GetOptions, Txn, TxnOp};
use tonic::Code;

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";

fn s(text: &str) -> String {
    text.to_owned()
}

async fn historical_reads(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = start_single(backend).await?;
    let r1 = rev(c.put("h", "1", None).await?.header());
    let r2 = rev(c.put("h", "2", None).await?.header());
    let r3 = rev(c.delete("h", None).await?.header());
    let r4 = rev(c.put("h", "3", None).await?.header());
    c.put("other", "x", None).await?;
    let current = r4 + 1;
    let at = |revision| Some(GetOptions::new().with_revision(revision));

    let got = c.get("h", at(r1)).await?;
    assert_eq!(kv_tuples(got.kvs()), [(s("h"), s("1"), r1, r1, 1, 0)]);
    assert_eq!(
        rev(got.header()),
        current,
        "header carries the current revision"
    );
    let got = c.get("h", at(r2)).await?;
    assert_eq!(kv_tuples(got.kvs()), [(s("h"), s("2"), r1, r2, 2, 0)]);
    let got = c.get("h", at(r3)).await?;
    assert_eq!((got.kvs().len(), got.count()), (0, 0));
    let got = c.get("h", at(r4)).await?;
    assert_eq!(kv_tuples(got.kvs()), [(s("h"), s("3"), r4, r4, 1, 0)]);
    let got = c
        .get(
            "",
            Some(GetOptions::new().with_all_keys().with_revision(r1)),
        )
        .await?;
    assert_eq!(keys(&got), ["h"], "keys created later are invisible");
    let got = c
        .get("", Some(GetOptions::new().with_all_keys().with_revision(1)))
        .await?;
    assert_eq!(got.count(), 0, "revision 1 is the empty store");
    let got = c.get("h", at(0)).await?;
    assert_eq!(got.kvs()[0].value(), b"3", "revision 0 means current");
    let got = c.get("h", at(-5)).await?;
    assert_eq!(
        got.kvs()[0].value(),
        b"3",
        "a negative revision means current"
    );
    let got = c.get("h", at(current)).await?;
    assert_eq!(got.kvs()[0].value(), b"3");
    Ok(())
}

async fn compaction_then_reads(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = start_single(backend).await?;
    for i in 1..=5 {
        c.put("c", i.to_string(), None).await?; // revisions 2..=6
    }
    let current = 6;
    let compacted = c
        .compact(4, Some(CompactionOptions::new().with_physical()))
        .await?;
    assert_eq!(
        rev(compacted.header()),
        current,
        "compaction answers with the current revision"
    );
    let at = |revision| Some(GetOptions::new().with_revision(revision));
    assert_grpc_error(c.get("c", at(3)).await, Code::OutOfRange, COMPACTED);
    assert_grpc_error(c.get("c", at(1)).await, Code::OutOfRange, COMPACTED);
    // The compaction revision itself stays readable.
    let kept = c.get("c", at(4)).await?;
    assert_eq!(kv_tuples(kept.kvs()), [(s("c"), s("3"), 2, 4, 3, 0)]);
    let latest = c.get("c", None).await?;
    assert_eq!(
        kv_tuples(latest.kvs()),
        [(s("c"), s("5"), 2, 6, 5, 0)],
        "history metadata survives"
    );
    assert_grpc_error(c.get("c", at(current + 1)).await, Code::OutOfRange, FUTURE);

    assert_grpc_error(c.compact(4, None).await, Code::OutOfRange, COMPACTED);
    assert_grpc_error(c.compact(2, None).await, Code::OutOfRange, COMPACTED);
    assert_grpc_error(c.compact(0, None).await, Code::OutOfRange, COMPACTED);
    assert_grpc_error(c.compact(current + 1, None).await, Code::OutOfRange, FUTURE);

    // Ranges in the chosen txn branch are checked before anything is applied.
    let old_read = || TxnOp::get("c", at(3));
    let txn = Txn::new().and_then([TxnOp::put("x", "y", None), old_read()]);
    assert_grpc_error(c.txn(txn).await, Code::OutOfRange, COMPACTED);
    assert!(
        c.get("x", None).await?.kvs().is_empty(),
        "a rejected txn applies nothing"
    );
    let future = Txn::new().and_then([TxnOp::get("c", at(current + 1))]);
    assert_grpc_error(c.txn(future).await, Code::OutOfRange, FUTURE);
    let untaken = Txn::new().or_else([old_read()]);
    assert!(
        c.txn(untaken).await?.succeeded(),
        "the branch not taken is not checked"
    );

    let compacted = c.compact(current, None).await?;
    assert_eq!(
        rev(compacted.header()),
        current,
        "compacting at the current revision is allowed"
    );
    assert_eq!(c.get("c", at(current)).await?.kvs()[0].value(), b"5");
    Ok(())
}

backend_test!(historical_reads, compaction_then_reads);
