//! A learner serves what etcd 3.4's learner serves: Status and serializable Range. Every other
//! call (writes, linearizable reads, leases, membership, maintenance, streams) is refused with
//! UNAVAILABLE "etcdserver: rpc not supported for learner"; once promoted, it serves them all.
//! Baton's Modules service is refused the same way.

use std::fmt::Debug;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use baton_e2e::{Backend, Cluster, assert_grpc_error, backend_test, grpc_status};
use baton_proto::baton::v1::ListRequest;
use etcd_client::{AlarmAction, AlarmType, Client, GetOptions, Txn, WatchOptions};
use tokio::time::{Instant, sleep};
use tonic::Code;

use crate::membership::{add_learner, wait_readable, when_ready};
use crate::modules::modules_client;

const NOT_FOR_LEARNER: &str = "etcdserver: rpc not supported for learner";
/// How long a promoted learner may take to see its own promotion.
const PROMOTED_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);

#[track_caller]
fn refused<T: Debug>(result: Result<T, etcd_client::Error>) {
    assert_grpc_error(result, Code::Unavailable, NOT_FOR_LEARNER);
}

/// A stream call may fail when it opens or with its first message; either way with the
/// learner refusal.
fn refused_stream<T: Debug>(what: &str, result: Result<T, etcd_client::Error>) -> Result<()> {
    let error = match result {
        Ok(value) => anyhow::bail!("{what} on a learner succeeded: {value:?}"),
        Err(error) => error,
    };
    let status = grpc_status(&error).with_context(|| format!("{what}: {error:?}"))?;
    ensure!(
        (status.code(), status.message()) == (Code::Unavailable, NOT_FOR_LEARNER),
        "{what}: {status:?}"
    );
    Ok(())
}

/// Every call a learner must refuse, through a client of the learner alone.
async fn assert_learner_refuses(on: &mut Client) -> Result<()> {
    refused(on.get("k", None).await);
    refused(on.put("k", "other", None).await);
    refused(on.delete("k", None).await);
    refused(on.txn(Txn::new()).await);
    refused(on.compact(1, None).await);
    refused(on.lease_grant(10, None).await);
    refused(on.lease_revoke(1).await);
    refused(on.lease_time_to_live(1, None).await);
    refused(on.leases().await);
    refused(on.member_list().await);
    refused(on.alarm(AlarmAction::Get, AlarmType::None, None).await);
    refused(on.hash_kv(0).await);
    refused(on.lock("name", None).await);
    refused_stream("watch", on.watch("k", Some(WatchOptions::new())).await)?;
    refused_stream("keepalive", on.lease_keep_alive(1).await)?;
    refused_stream("snapshot", on.snapshot().await)?;
    Ok(())
}

async fn a_learner_serves_only_status_and_serializable_reads(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 1).await?;
    // A client of the founder alone: the learner must not take its requests.
    let mut client = cluster.client().await?;
    client.put("k", "v", None).await?;
    let addrs = cluster.next_member_addrs()?;
    let added = add_learner(&client, addrs.peer_url()).await?;
    let id = added.member().context("the added member")?.id();
    let learner = cluster.start_added(addrs, &[])?;
    cluster.wait_ready().await?;
    wait_readable(&cluster, learner, "k", "v").await?;

    let mut on = cluster.member_client(learner).await?;
    let status = on.status().await?;
    ensure!(status.is_learner(), "{status:?}");
    let read = on
        .get("k", Some(GetOptions::new().with_serializable()))
        .await?;
    ensure!(read.kvs().first().map(|kv| kv.value()) == Some(b"v".as_slice()));
    assert_learner_refuses(&mut on).await?;
    if backend == Backend::Baton {
        // Baton's own Modules service sits behind the same gate.
        let mut modules = modules_client(cluster.endpoint(learner)).await?;
        let listed = modules.list(ListRequest::default()).await;
        match listed {
            Err(s) if (s.code(), s.message()) == (Code::Unavailable, NOT_FOR_LEARNER) => {}
            other => anyhow::bail!("a module call on a learner: {other:?}"),
        }
    }

    when_ready("promoting the learner", || {
        let mut client = client.clone();
        async move { client.member_promote(id).await }
    })
    .await?;
    let deadline = Instant::now() + PROMOTED_TIMEOUT;
    while on.status().await?.is_learner() {
        ensure!(Instant::now() < deadline, "never saw its promotion");
        sleep(POLL).await;
    }
    // A voter now: writes, linearizable reads and membership through it.
    on.put("k", "promoted", None).await?;
    let read = on.get("k", None).await?;
    ensure!(read.kvs().first().map(|kv| kv.value()) == Some(b"promoted".as_slice()));
    ensure!(on.member_list().await?.members().len() == 2);
    Ok(())
}

backend_test!(a_learner_serves_only_status_and_serializable_reads);
