//! KV request validation: every error etcd 3.4 returns, with its exact gRPC code and message.

use anyhow::Result;
use baton_e2e::{Backend, assert_grpc_error, backend_test, start_single};
use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp};
use tonic::Code;

const NO_KEY: &str = "etcdserver: key is not provided";
const TOO_MANY_OPS: &str = "etcdserver: too many operations in txn request";
const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
const TOO_LARGE: &str = "etcdserver: request is too large";
const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
const KEY_NOT_FOUND: &str = "etcdserver: key not found";
const VALUE_PROVIDED: &str = "etcdserver: value is provided";
const LEASE_PROVIDED: &str = "etcdserver: lease is provided";

/// etcd's default `--max-request-bytes` (1.5 MiB) bounds a whole raft request.
const MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// gRPC's receive limit: max-request-bytes plus 512 KiB of framing allowance.
const GRPC_RECV_BYTES_MAX: usize = MAX_REQUEST_BYTES + 512 * 1024;
/// Most operations one txn branch (or its compare list) may hold.
const TXN_OPS_MAX: usize = 128;

fn puts(count: usize, prefix: &str) -> Vec<TxnOp> {
    (0..count)
        .map(|i| TxnOp::put(format!("{prefix}{i}"), "v", None))
        .collect()
}

async fn empty_key_is_rejected_everywhere(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = start_single(backend).await?;
    assert_grpc_error(c.put("", "v", None).await, Code::InvalidArgument, NO_KEY);
    assert_grpc_error(c.get("", None).await, Code::InvalidArgument, NO_KEY);
    assert_grpc_error(c.delete("", None).await, Code::InvalidArgument, NO_KEY);
    let in_txn = [
        Txn::new().and_then([TxnOp::put("", "v", None)]),
        Txn::new().and_then([TxnOp::get("", None)]),
        Txn::new().and_then([TxnOp::delete("", None)]),
        Txn::new().when([Compare::version("", CompareOp::Equal, 0)]),
        // Both branches are validated, not only the one that would run.
        Txn::new().or_else([TxnOp::put("", "v", None)]),
        Txn::new().and_then([TxnOp::txn(Txn::new().and_then([TxnOp::put("", "v", None)]))]),
    ];
    for txn in in_txn {
        let label = format!("{txn:?}");
        let result = c.txn(txn).await;
        assert!(result.is_err(), "{label} was accepted");
        assert_grpc_error(result, Code::InvalidArgument, NO_KEY);
    }
    // Nothing above was applied.
    assert_eq!(
        c.get("", Some(GetOptions::new().with_all_keys()))
            .await?
            .count(),
        0
    );
    Ok(())
}

async fn txn_operation_count_limit(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = start_single(backend).await?;
    let full = c.txn(Txn::new().and_then(puts(TXN_OPS_MAX, "a"))).await?;
    assert!(full.succeeded());
    // The limit is per list: a full success branch and a full failure branch together are fine.
    let both = Txn::new()
        .and_then(puts(TXN_OPS_MAX, "b"))
        .or_else(puts(TXN_OPS_MAX, "c"));
    assert!(c.txn(both).await?.succeeded());
    let over = TXN_OPS_MAX + 1;
    let compares = (0..over)
        .map(|i| Compare::version(format!("k{i}"), CompareOp::Equal, 0))
        .collect::<Vec<_>>();
    let rejected = [
        Txn::new().and_then(puts(over, "d")),
        Txn::new().or_else(puts(over, "e")),
        Txn::new().when(compares),
        Txn::new().and_then([TxnOp::txn(Txn::new().and_then(puts(over, "f")))]),
    ];
    for txn in rejected {
        assert_grpc_error(c.txn(txn).await, Code::InvalidArgument, TOO_MANY_OPS);
    }
    let count = c
        .get(
            "",
            Some(GetOptions::new().with_all_keys().with_count_only()),
        )
        .await?;
    assert_eq!(
        count.count(),
        2 * TXN_OPS_MAX as i64,
        "rejected txns wrote nothing"
    );
    Ok(())
}

async fn txn_duplicate_keys(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = start_single(backend).await?;
    let put = |key: &str| TxnOp::put(key, "v", None);
    let del = |key: &str| TxnOp::delete(key, None);
    let nest = |ops: Vec<TxnOp>| TxnOp::txn(Txn::new().and_then(ops));
    let span = TxnOp::delete("a", Some(DeleteOptions::new().with_range("z")));
    let rejected = vec![
        vec![put("d"), put("d")],
        vec![put("d"), del("d")],
        vec![del("d"), put("d")],
        vec![span.clone(), put("d")],
        vec![put("d"), nest(vec![put("d")])],
        vec![nest(vec![put("d")]), nest(vec![put("d")])],
        // A nested txn's else branch conflicts with the outer branch even if it would not run.
        vec![
            put("d"),
            TxnOp::txn(Txn::new().and_then([put("e")]).or_else([put("d")])),
        ],
    ];
    for ops in rejected {
        let label = format!("{ops:?}");
        let result = c.txn(Txn::new().and_then(ops)).await;
        assert!(result.is_err(), "{label} was accepted");
        assert_grpc_error(result, Code::InvalidArgument, DUPLICATE_KEY);
    }
    let accepted = [
        Txn::new().and_then([del("d"), del("d")]),
        Txn::new().and_then([span.clone(), del("d")]),
        Txn::new().and_then([TxnOp::get("d", None), put("d")]),
        // The two top-level branches never run together.
        Txn::new().and_then([put("d")]).or_else([put("d")]),
    ];
    for txn in accepted {
        let label = format!("{txn:?}");
        assert!(c.txn(txn).await.is_ok(), "{label} was rejected");
    }
    Ok(())
}

async fn request_size_limits(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = start_single(backend).await?;
    c.put("big", vec![b'x'; 1024 * 1024], None).await?;
    let over_raft_limit = MAX_REQUEST_BYTES + 64 * 1024;
    let result = c.put("big", vec![b'x'; over_raft_limit], None).await;
    assert_grpc_error(result, Code::InvalidArgument, TOO_LARGE);
    // Past the gRPC receive limit the transport refuses the message before etcd sees it.
    // The encoded PutRequest: key field (1+1+3) + value field (1 + 4-byte varint + 2 MiB).
    let value_bytes = 2 * 1024 * 1024;
    let encoded = 1 + 1 + 3 + 1 + 4 + value_bytes;
    let message =
        format!("grpc: received message larger than max ({encoded} vs. {GRPC_RECV_BYTES_MAX})");
    assert_grpc_error(
        c.put("big", vec![b'x'; value_bytes], None).await,
        Code::ResourceExhausted,
        &message,
    );
    let stored = c.get("big", None).await?;
    assert_eq!(
        (stored.kvs()[0].value().len(), stored.kvs()[0].version()),
        (1024 * 1024, 1)
    );
    Ok(())
}

async fn unknown_lease_is_not_found(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = start_single(backend).await?;
    let unknown = || Some(PutOptions::new().with_lease(0x1234_5678));
    assert_grpc_error(
        c.put("l", "v", unknown()).await,
        Code::NotFound,
        LEASE_NOT_FOUND,
    );
    let txn = Txn::new().and_then([TxnOp::put("l", "v", unknown())]);
    assert_grpc_error(c.txn(txn).await, Code::NotFound, LEASE_NOT_FOUND);
    let nested = Txn::new().and_then([TxnOp::txn(Txn::new().and_then([TxnOp::put(
        "l",
        "v",
        unknown(),
    )]))]);
    assert_grpc_error(c.txn(nested).await, Code::NotFound, LEASE_NOT_FOUND);
    // Leases are checked only in the branch that runs.
    let untaken = Txn::new().or_else([TxnOp::put("l", "v", unknown())]);
    assert!(c.txn(untaken).await?.succeeded());
    assert_eq!(c.get("l", None).await?.count(), 0);
    Ok(())
}

async fn ignore_value_and_ignore_lease_errors(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = start_single(backend).await?;
    let ignore_value = || Some(PutOptions::new().with_ignore_value());
    let ignore_lease = || PutOptions::new().with_ignore_lease();
    assert_grpc_error(
        c.put("missing", "", ignore_value()).await,
        Code::InvalidArgument,
        KEY_NOT_FOUND,
    );
    assert_grpc_error(
        c.put("missing", "v", Some(ignore_lease())).await,
        Code::InvalidArgument,
        KEY_NOT_FOUND,
    );
    c.put("k", "v", None).await?;
    assert_grpc_error(
        c.put("k", "new", ignore_value()).await,
        Code::InvalidArgument,
        VALUE_PROVIDED,
    );
    let lease = c.lease_grant(600, None).await?.id();
    let with_lease = Some(ignore_lease().with_lease(lease));
    assert_grpc_error(
        c.put("k", "v", with_lease).await,
        Code::InvalidArgument,
        LEASE_PROVIDED,
    );
    Ok(())
}

backend_test!(
    empty_key_is_rejected_everywhere,
    txn_operation_count_limit,
    txn_duplicate_keys,
    request_size_limits,
    unknown_lease_is_not_found,
    ignore_value_and_ignore_lease_errors,
);
