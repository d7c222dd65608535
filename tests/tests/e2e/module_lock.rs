//! The built-in fenced lock module (Baton only): `acquire` waits server-side for its turn and
//! returns a fencing token; Baton itself refuses a fenced write with a stale token; a holder
//! whose lease expires hands the lock on; a waiter whose lease expires fails instead of being
//! granted a lock nobody keeps alive.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use baton_e2e::{Backend, Cluster, run_test};
use baton_proto::baton::v1::InvokeRequest;
use baton_proto::baton::v1::modules_client::ModulesClient;
use tokio::time::{sleep, timeout};
use tonic::transport::Channel;

use crate::modules::{PARKED_PROOF, invoke, invoke_when_deployed, modules_client, park};

/// Far above the expected wake-up time (a lease expiry takes its TTL plus a tick or two).
const WAKE_BOUND: Duration = Duration::from_secs(20);
/// A lease that outlives the test.
const LONG_TTL_S: i64 = 60;
/// The shortest TTL Baton grants with default timing.
const SHORT_TTL_S: i64 = 2;

fn call(function: &str, input: &str, lease: i64) -> InvokeRequest {
    InvokeRequest {
        lease,
        ..invoke("lock", function, input, 0)
    }
}

fn acquire(lease: i64) -> InvokeRequest {
    call("acquire", r#"{"name":"jobs-lock"}"#, lease)
}

fn token(output: &[u8]) -> Result<i64> {
    let value: serde_json::Value = serde_json::from_slice(output)?;
    value["token"].as_i64().context("no token in the reply")
}

fn fenced_put(token: i64, lease: i64) -> InvokeRequest {
    let input =
        format!(r#"{{"name":"jobs-lock","token":{token},"key":"fenced","value":"{token}"}}"#);
    call("fenced-put", &input, lease)
}

async fn ready(cluster: &Cluster) -> Result<(ModulesClient<Channel>, etcd_client::Client)> {
    let mut modules = modules_client(cluster.endpoint(0)).await?;
    let probe = invoke("lock", "release", r#"{"name":"probe"}"#, 0);
    // Without a lease the module refuses; NOT_FOUND means it is not deployed yet.
    let refused = invoke_when_deployed(&mut modules, probe).await;
    ensure!(refused.is_err(), "release without a lease must be refused");
    Ok((modules, cluster.client().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_get_the_lock_in_turn_and_stale_tokens_are_refused() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 1).await?;
        let (modules, mut kv) = ready(&cluster).await?;
        let first = kv.lease_grant(LONG_TTL_S, None).await?.id();
        let second = kv.lease_grant(LONG_TTL_S, None).await?.id();

        let mut client = modules.clone();
        let held = client.invoke(acquire(first)).await?.into_inner();
        let first_token = token(&held.output)?;
        client.invoke(fenced_put(first_token, first)).await?;

        let waiting = park(&modules, acquire(second));
        sleep(PARKED_PROOF).await;
        ensure!(!waiting.is_finished(), "the lock was granted twice");
        client
            .invoke(call("release", r#"{"name":"jobs-lock"}"#, first))
            .await?;
        let granted = timeout(WAKE_BOUND, waiting).await???.into_inner();
        let second_token = token(&granted.output)?;
        ensure!(second_token > first_token, "tokens must grow");
        ensure!(
            granted.runs == 2,
            "parked once, then granted: {} runs",
            granted.runs
        );

        // The first holder, paused past its turn, writes with its old token: refused.
        let stale = client.invoke(fenced_put(first_token, first)).await;
        let status = stale.err().context("a stale token must be refused")?;
        ensure!(
            status.code() == tonic::Code::FailedPrecondition,
            "{status:?}"
        );
        ensure!(
            status.message().contains("stale fencing token"),
            "{status:?}"
        );
        client.invoke(fenced_put(second_token, second)).await?;
        let fenced = kv.get("fenced", None).await?;
        ensure!(fenced.kvs()[0].value() == second_token.to_string().as_bytes());
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_that_end_release_holders_and_fail_waiters() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 1).await?;
        let (modules, mut kv) = ready(&cluster).await?;
        // A holder that dies (its short lease is never renewed) hands the lock on.
        let dying = kv.lease_grant(SHORT_TTL_S, None).await?.id();
        let next = kv.lease_grant(LONG_TTL_S, None).await?.id();
        modules.clone().invoke(acquire(dying)).await?;
        let waiting = park(&modules, acquire(next));
        let granted = timeout(WAKE_BOUND, waiting).await???.into_inner();
        token(&granted.output)?;

        // A waiter whose own lease ends stops waiting with an error, never granted.
        let doomed = kv.lease_grant(SHORT_TTL_S, None).await?.id();
        let waiting = park(&modules, acquire(doomed));
        let outcome = timeout(WAKE_BOUND, waiting).await??;
        let status = outcome
            .err()
            .context("a waiter whose lease ended was granted")?;
        ensure!(
            status.code() == tonic::Code::FailedPrecondition,
            "{status:?}"
        );
        ensure!(status.message().contains("lease not found"), "{status:?}");
        Ok(())
    })
    .await;
}
