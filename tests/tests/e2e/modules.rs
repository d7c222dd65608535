//! Baton modules end to end (Baton only: etcd has no such service): the built-in counter runs
//! on a fresh 3-member cluster and its writes are plain keys any etcd client reads; a hostile
//! module is contained — its infinite loop runs out of fuel, a trap halfway through its writes
//! leaves nothing behind — and the member keeps serving.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use baton_e2e::{Backend, Cluster, baton_bin, run_test};
use baton_proto::baton::v1::modules_client::ModulesClient;
use baton_proto::baton::v1::{DeployRequest, DescribeRequest, InvokeRequest, InvokeResponse};
use baton_wasm::builtin::HOSTILE_MODULE;
use tokio::time::{Instant, sleep};
use tonic::transport::Channel;

/// How long a new cluster may take to deploy its built-in modules through the log.
const BUILTINS_TIMEOUT: Duration = Duration::from_secs(20);
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long a call is left alone to show the server really parked it, not returning.
pub(crate) const PARKED_PROOF: Duration = Duration::from_millis(500);
/// Generous bound on a parked call's wake-up: far above the expected few milliseconds, far
/// below "never".
pub(crate) const WAKE_BOUND: Duration = Duration::from_secs(15);
/// A budget the hostile loop exhausts quickly.
const SPIN_FUEL: u64 = 100_000;

pub(crate) async fn modules_client(endpoint: String) -> Result<ModulesClient<Channel>> {
    let channel = Channel::from_shared(endpoint)?.connect().await?;
    Ok(ModulesClient::new(channel))
}

/// A module's output parsed as JSON (the built-ins answer in JSON).
pub(crate) fn output_json(output: &[u8]) -> Result<serde_json::Value> {
    serde_json::from_slice(output).context("module output is not JSON")
}

pub(crate) fn invoke(name: &str, function: &str, input: &str, fuel: u64) -> InvokeRequest {
    InvokeRequest {
        name: name.to_string(),
        function: function.to_string(),
        input: input.as_bytes().to_vec(),
        fuel,
        ..Default::default()
    }
}

/// A call running in the background, e.g. one the server holds until its module stops waiting.
pub(crate) type Parked =
    tokio::task::JoinHandle<Result<tonic::Response<InvokeResponse>, tonic::Status>>;

pub(crate) fn park(client: &ModulesClient<Channel>, request: InvokeRequest) -> Parked {
    let mut client = client.clone();
    tokio::spawn(async move { client.invoke(request).await })
}

/// Invokes until the module exists (built-ins arrive through the log just after bootstrap).
pub(crate) async fn invoke_when_deployed(
    client: &mut ModulesClient<Channel>,
    request: InvokeRequest,
) -> Result<InvokeResponse> {
    let deadline = Instant::now() + BUILTINS_TIMEOUT;
    loop {
        match client.invoke(request.clone()).await {
            Ok(reply) => return Ok(reply.into_inner()),
            Err(s) if s.code() == tonic::Code::NotFound && Instant::now() < deadline => {
                sleep(RETRY_PAUSE).await;
            }
            Err(s) => return Err(s).context("invoke"),
        }
    }
}

/// Waits until `name` is deployed, by reading (never invoking), so it can retry on any error
/// a cluster that is still settling gives.
pub(crate) async fn wait_deployed(client: &mut ModulesClient<Channel>, name: &str) -> Result<()> {
    let deadline = Instant::now() + BUILTINS_TIMEOUT;
    loop {
        let describe = DescribeRequest {
            name: name.to_string(),
        };
        match client.describe(describe).await {
            Ok(_) => return Ok(()),
            Err(_) if Instant::now() < deadline => sleep(RETRY_PAUSE).await,
            Err(s) => return Err(s).with_context(|| format!("waiting for module {name}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_add_is_one_revision_that_etcd_clients_read() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        // Through a member that may be a follower: it forwards to the leader like any write.
        let mut modules = modules_client(cluster.endpoint(1)).await?;
        wait_deployed(&mut modules, "counter").await?;
        let add = invoke("counter", "add", r#"{"keys":["c1","c2"],"by":2}"#, 0);
        let reply = invoke_when_deployed(&mut modules, add).await?;
        ensure!(
            reply.output == br#"{"c1":2,"c2":2}"#,
            "output {:?}",
            reply.output
        );

        let mut kv = cluster.member_client(2).await?;
        let c1 = kv.get("c1", None).await?;
        let c2 = kv.get("c2", None).await?;
        let (c1, c2) = (&c1.kvs()[0], &c2.kvs()[0]);
        ensure!(
            c1.value() == b"2" && c2.value() == b"2",
            "values {c1:?} {c2:?}"
        );
        ensure!(c1.mod_revision() == reply.revision && c2.mod_revision() == reply.revision);

        // The CLI, as a user would type it.
        let out = tokio::process::Command::new(baton_bin()?)
            .args([
                "--endpoints",
                &cluster.endpoints().join(","),
                "call",
                "counter",
                "add",
            ])
            .arg(r#"{"keys":["c1"],"by":3}"#)
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "baton call failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            stdout.trim() == r#"{"c1":5}"#,
            "baton call printed {stdout:?}"
        );

        // A read-only call from the CLI, served by a follower without a log entry.
        let follower = (cluster.leader().await? + 1) % cluster.size();
        let out = tokio::process::Command::new(baton_bin()?)
            .args(["--endpoints", &cluster.endpoint(follower)])
            .args(["call", "--read-only", "counter", "get"])
            .arg(r#"{"keys":["c1","c2"]}"#)
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success() && stdout.trim() == r#"{"c1":5,"c2":2}"#,
            "baton call --read-only printed {stdout:?}, {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_module_is_contained_without_partial_writes() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 1).await?;
        let mut modules = modules_client(cluster.endpoint(0)).await?;
        let deploy = DeployRequest {
            name: "hostile".to_string(),
            component: HOSTILE_MODULE.to_vec(),
        };
        modules.deploy(deploy).await.context("deploy")?;
        let mut kv = cluster.client().await?;
        let before = kv.get("hostile/touched", None).await?;
        let revision_before = before.header().context("header")?.revision();

        let spin = modules
            .invoke(invoke("hostile", "spin", "x", SPIN_FUEL))
            .await;
        let status = spin.err().context("an infinite loop must fail")?;
        ensure!(
            status.code() == tonic::Code::ResourceExhausted,
            "{status:?}"
        );
        ensure!(
            status.message() == format!("fuel exhausted after {SPIN_FUEL} units"),
            "{status:?}"
        );

        // The module writes hostile/touched, then traps.
        let trap = modules.invoke(invoke("hostile", "trap", "x", 0)).await;
        let status = trap.err().context("a trap must fail")?;
        ensure!(
            status.code() == tonic::Code::FailedPrecondition,
            "{status:?}"
        );
        ensure!(
            status.message() == "guest trapped: unreachable",
            "{status:?}"
        );

        let after = kv.get("hostile/touched", None).await?;
        ensure!(
            after.kvs().is_empty(),
            "a failed call left a write: {:?}",
            after.kvs()
        );
        let revision_after = after.header().context("header")?.revision();
        ensure!(
            revision_after == revision_before,
            "failed calls moved the revision"
        );

        // Still serving, and a well-behaved call of the same module commits its write.
        let ok = modules
            .invoke(invoke("hostile", "ok", "kept", 0))
            .await?
            .into_inner();
        ensure!(ok.output == b"ok");
        let kept = kv.get("hostile/touched", None).await?;
        ensure!(kept.kvs().first().map(|kv| kv.value()) == Some(&b"kept"[..]));
        Ok(())
    })
    .await;
}
