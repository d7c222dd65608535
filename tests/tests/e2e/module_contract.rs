//! The module contract across versions and off the happy path (Baton only: etcd has no
//! modules): a component built against contract 0.1 by an earlier Baton deploys and runs
//! unchanged, and a waiting call whose client leaves — its deadline passes, or it cancels —
//! gets the guest's clean-up run through the log, so no waiter is left behind.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use baton_e2e::{Backend, Cluster, run_test};
use baton_proto::baton::v1::modules_client::ModulesClient;
use baton_proto::baton::v1::{DeployRequest, InvokeRequest};
use tokio::time::sleep;
use tonic::transport::Channel;

use crate::modules::{PARKED_PROOF, invoke, invoke_when_deployed, modules_client, park};

/// The counter as an earlier Baton built it against contract 0.1, byte for byte.
const COUNTER_V01: &[u8] = include_bytes!("../../../host/wasm/fixtures/counter-v0.1.wasm");
/// A lease that outlives the test.
const LONG_TTL_S: i64 = 60;
/// Far above the time a clean-up takes to commit, far below the leases' TTL.
const CLEANUP_BOUND: Duration = Duration::from_secs(15);
const LOCK: &str = "abandon-lock";

fn acquire(lease: i64) -> InvokeRequest {
    InvokeRequest {
        lease,
        ..invoke("lock", "acquire", &format!(r#"{{"name":"{LOCK}"}}"#), 0)
    }
}

/// The contenders' keys under the lock, as any etcd client sees them.
async fn contenders(kv: &mut etcd_client::Client) -> Result<Vec<String>> {
    let options = etcd_client::GetOptions::new().with_prefix();
    let found = kv.get(format!("{LOCK}/"), Some(options)).await?;
    Ok(found
        .kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect())
}

/// Waits until the lock has exactly `want` contenders.
async fn until_contenders(kv: &mut etcd_client::Client, want: &[String]) -> Result<()> {
    let deadline = Instant::now() + CLEANUP_BOUND;
    loop {
        let found = contenders(kv).await?;
        if found == want {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "contenders {found:?} after {CLEANUP_BOUND:?}, want {want:?}"
        );
        sleep(Duration::from_millis(100)).await;
    }
}

async fn lock_ready(cluster: &Cluster) -> Result<(ModulesClient<Channel>, etcd_client::Client)> {
    let mut modules = modules_client(cluster.endpoint(0)).await?;
    let probe = invoke("lock", "release", r#"{"name":"probe"}"#, 0);
    // Without a lease the module refuses; NOT_FOUND would mean it is not deployed yet.
    let refused = invoke_when_deployed(&mut modules, probe).await;
    ensure!(refused.is_err(), "release without a lease must be refused");
    Ok((modules, cluster.client().await?))
}

fn key_of(lease: i64) -> String {
    format!("{LOCK}/{lease:x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_built_against_contract_0_1_deploys_and_runs_unchanged() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 1).await?;
        let mut modules = modules_client(cluster.endpoint(0)).await?;
        let deployed = modules
            .deploy(DeployRequest {
                name: "counter-v01".into(),
                component: COUNTER_V01.to_vec(),
            })
            .await?
            .into_inner();
        ensure!(deployed.version == 1, "{deployed:?}");
        let input = r#"{"keys":["old/c"],"by":5}"#;
        let added = modules
            .invoke(invoke("counter-v01", "add", input, 0))
            .await?
            .into_inner();
        ensure!(added.output == br#"{"old/c":5}"#, "{:?}", added.output);
        let mut kv = cluster.client().await?;
        let stored = kv.get("old/c", None).await?;
        ensure!(stored.kvs().first().map(|kv| kv.value()) == Some(&b"5"[..]));
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_client_leaves_is_withdrawn_through_the_log() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let (modules, mut kv) = lock_ready(&cluster).await?;
        let holder = kv.lease_grant(LONG_TTL_S, None).await?.id();
        let by_deadline = kv.lease_grant(LONG_TTL_S, None).await?.id();
        let by_cancel = kv.lease_grant(LONG_TTL_S, None).await?.id();
        modules.clone().invoke(acquire(holder)).await?;

        // A waiter whose deadline passes: the client gets DEADLINE_EXCEEDED, and its key goes.
        let mut request = tonic::Request::new(acquire(by_deadline));
        request.set_timeout(Duration::from_secs(1));
        let gave_up = modules.clone().invoke(request).await;
        let status = gave_up.err().context("a waiter was granted a held lock")?;
        ensure!(
            status.code() == tonic::Code::DeadlineExceeded
                || status.code() == tonic::Code::Cancelled,
            "{status:?}"
        );
        until_contenders(&mut kv, &[key_of(holder)]).await?;

        // A waiter whose client cancels (the request is dropped mid-wait), through a follower.
        let mut follower = modules_client(cluster.endpoint(1)).await?;
        let waiting = park(&follower, acquire(by_cancel));
        sleep(PARKED_PROOF).await;
        let mut want = vec![key_of(holder), key_of(by_cancel)];
        want.sort();
        ensure!(
            contenders(&mut kv).await? == want,
            "the waiter never queued"
        );
        waiting.abort();
        until_contenders(&mut kv, &[key_of(holder)]).await?;

        // The lock still works: once the holder releases, the next acquire is granted at once.
        let release = InvokeRequest {
            lease: holder,
            ..invoke("lock", "release", &format!(r#"{{"name":"{LOCK}"}}"#), 0)
        };
        follower.invoke(release).await?;
        let granted = follower.invoke(acquire(by_cancel)).await?.into_inner();
        ensure!(granted.runs == 1, "granted after {} runs", granted.runs);
        Ok(())
    })
    .await;
}
