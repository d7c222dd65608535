//! The built-in queue's delayed delivery and safe consumption on a 3-member cluster, each step
//! through a different member (Baton only: etcd has no modules). A delayed item is delivered no
//! sooner than its time, to a pop that parked on another member and re-runs by itself then; a
//! reserved item is hidden until its visibility timeout passes or its consumer's lease ends,
//! then redelivered, and the first consumer's stale token is refused; a reserve whose client's
//! deadline passes while it waits takes nothing.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use baton_e2e::{Backend, Cluster, run_test};
use baton_proto::baton::v1::InvokeRequest;
use baton_proto::baton::v1::modules_client::ModulesClient;
use serde_json::Value;
use tokio::time::{sleep, timeout};
use tonic::transport::Channel;

use crate::modules::{
    PARKED_PROOF, WAKE_BOUND, invoke, invoke_when_deployed, modules_client, output_json, park,
};

/// How long items are delayed or hidden: long enough to see a call parked in between.
const HIDDEN_MS: u64 = 2_000;
/// Slack below `HIDDEN_MS` for rounding between the leader's wall clock and our monotonic one.
const CLOCK_SLACK: Duration = Duration::from_millis(100);
const LONG_TTL_S: i64 = 60;
/// The shortest TTL Baton grants with default timing.
const SHORT_TTL_S: i64 = 2;

fn call(function: &str, input: Value, lease: i64) -> InvokeRequest {
    InvokeRequest {
        lease,
        ..invoke("queue", function, &input.to_string(), 0)
    }
}

fn read_only(function: &str, input: Value) -> InvokeRequest {
    InvokeRequest {
        read_only: true,
        ..call(function, input, 0)
    }
}

/// A client on each member, once the queue module is deployed.
async fn clients(cluster: &Cluster) -> Result<Vec<ModulesClient<Channel>>> {
    let mut clients = Vec::new();
    for member in 0..cluster.size() {
        clients.push(modules_client(cluster.endpoint(member)).await?);
    }
    let probe = read_only("length", serde_json::json!({"queue": "probe"}));
    invoke_when_deployed(&mut clients[0], probe).await?;
    Ok(clients)
}

async fn run(client: &mut ModulesClient<Channel>, request: InvokeRequest) -> Result<Value> {
    let reply = client.invoke(request).await?.into_inner();
    output_json(&reply.output)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_item_reaches_a_pop_parked_on_another_member_at_its_time() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let mut c = clients(&cluster).await?;
        let q = serde_json::json!({"queue": "delayed"});

        let pushed_at = Instant::now();
        let push = serde_json::json!({"queue": "delayed", "value": "later", "delay_ms": HIDDEN_MS});
        let pushed = run(&mut c[0], call("push", push, 0)).await?;
        ensure!(pushed["deliver_at_ms"].is_u64(), "{pushed}");
        let parked = park(&c[1], call("pop", q.clone(), 0));
        let length = run(&mut c[2], read_only("length", q.clone())).await?;
        let peeked = run(&mut c[2], read_only("peek", q)).await?;
        // Only meaningful if this machine, however loaded, got here before the item was due.
        if pushed_at.elapsed() + CLOCK_SLACK < Duration::from_millis(HIDDEN_MS) {
            ensure!(
                length == serde_json::json!({"ready": 0, "delayed": 1, "reserved": 0}),
                "{length}"
            );
            ensure!(peeked.is_null(), "{peeked}");
        }

        let reply = timeout(WAKE_BOUND, parked)
            .await??
            .context("pop")?
            .into_inner();
        let waited = pushed_at.elapsed();
        let item = output_json(&reply.output)?;
        ensure!(
            item["value"] == "later" && item["key"] == pushed["key"],
            "{item}"
        );
        ensure!(
            waited + CLOCK_SLACK >= Duration::from_millis(HIDDEN_MS),
            "delivered after {waited:?}, before its time"
        );
        ensure!(
            reply.runs >= 2,
            "parked, then re-run by time: {} runs",
            reply.runs
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_hides_an_item_until_its_timeout_then_it_is_redelivered() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let mut c = clients(&cluster).await?;
        let q = serde_json::json!({"queue": "jobs"});
        run(
            &mut c[0],
            call(
                "push",
                serde_json::json!({"queue": "jobs", "value": "job"}),
                0,
            ),
        )
        .await?;

        let reserved_at = Instant::now();
        let reserve = serde_json::json!({"queue": "jobs", "visibility_ms": HIDDEN_MS});
        let first = run(&mut c[0], call("reserve", reserve, 0)).await?;
        let token = first["token"].as_i64().context("a token")?;
        let mut kv = cluster.member_client(2).await?;
        let listed = kv
            .get("jobs/", Some(etcd_client::GetOptions::new().with_prefix()))
            .await?;
        ensure!(
            listed.kvs().is_empty(),
            "a reserved item is hidden from etcd clients too"
        );

        // Another consumer, on another member, waits for the timeout.
        let parked = park(&c[1], call("reserve", q.clone(), 0));
        sleep(PARKED_PROOF).await;
        ensure!(
            !parked.is_finished()
                || reserved_at.elapsed() + CLOCK_SLACK >= Duration::from_millis(HIDDEN_MS),
            "a reserved item was delivered twice"
        );
        let reply = timeout(WAKE_BOUND, parked)
            .await??
            .context("reserve")?
            .into_inner();
        let waited = reserved_at.elapsed();
        let second = output_json(&reply.output)?;
        ensure!(
            second["key"] == first["key"] && second["deliveries"] == 2,
            "{second}"
        );
        ensure!(
            waited + CLOCK_SLACK >= Duration::from_millis(HIDDEN_MS),
            "redelivered after {waited:?}, before the timeout"
        );

        // The first consumer, late, cannot ack what the second now holds; the second can.
        let stale = call(
            "ack",
            serde_json::json!({"queue": "jobs", "token": token}),
            0,
        );
        let status = c[2]
            .invoke(stale)
            .await
            .err()
            .context("a stale ack must be refused")?;
        ensure!(
            status.code() == tonic::Code::FailedPrecondition,
            "{status:?}"
        );
        ensure!(status.message().contains("not held"), "{status:?}");
        let token = second["token"].as_i64().context("a token")?;
        let acked = run(
            &mut c[2],
            call(
                "ack",
                serde_json::json!({"queue": "jobs", "token": token}),
                0,
            ),
        )
        .await?;
        ensure!(acked["acked"] == first["key"], "{acked}");
        let left = run(&mut c[1], read_only("length", q)).await?;
        ensure!(
            left == serde_json::json!({"ready": 0, "delayed": 0, "reserved": 0}),
            "{left}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_bound_reservation_is_redelivered_when_its_consumer_dies() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let mut c = clients(&cluster).await?;
        let mut kv = cluster.client().await?;
        let granted_at = Instant::now();
        let dying = kv.lease_grant(SHORT_TTL_S, None).await?.id();
        let living = kv.lease_grant(LONG_TTL_S, None).await?.id();
        let held = serde_json::json!({"queue": "leased", "until_lease_ends": true});
        run(
            &mut c[0],
            call(
                "push",
                serde_json::json!({"queue": "leased", "value": "job"}),
                0,
            ),
        )
        .await?;
        let first = run(&mut c[0], call("reserve", held.clone(), dying)).await?;

        // The dying consumer never renews its lease: the item comes back to the one waiting.
        let parked = park(&c[1], call("reserve", held, living));
        sleep(PARKED_PROOF).await;
        let lease_lived = granted_at.elapsed() < Duration::from_secs(SHORT_TTL_S as u64);
        ensure!(
            !parked.is_finished() || !lease_lived,
            "delivered while its consumer's lease lives"
        );
        let reply = timeout(WAKE_BOUND, parked)
            .await??
            .context("reserve")?
            .into_inner();
        let second = output_json(&reply.output)?;
        ensure!(
            second["key"] == first["key"] && second["deliveries"] == 2,
            "{second}"
        );
        let token = first["token"].as_i64().context("a token")?;
        let stale = call(
            "nack",
            serde_json::json!({"queue": "leased", "token": token}),
            0,
        );
        ensure!(
            c[2].invoke(stale).await.is_err(),
            "the dead consumer's token is stale"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserve_whose_deadline_passes_while_it_waits_takes_nothing() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let mut c = clients(&cluster).await?;
        let q = serde_json::json!({"queue": "abandoned"});
        let mut request = tonic::Request::new(call("reserve", q.clone(), 0));
        request.set_timeout(Duration::from_millis(300));
        let status = c[1]
            .invoke(request)
            .await
            .err()
            .context("reserve on an empty queue must not return before its deadline")?;
        ensure!(
            matches!(
                status.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ),
            "{status:?}"
        );
        run(
            &mut c[2],
            call(
                "push",
                serde_json::json!({"queue": "abandoned", "value": "kept"}),
                0,
            ),
        )
        .await?;
        sleep(PARKED_PROOF).await;
        let length = run(&mut c[0], read_only("length", q.clone())).await?;
        ensure!(
            length == serde_json::json!({"ready": 1, "delayed": 0, "reserved": 0}),
            "an abandoned reserve took the item: {length}"
        );
        let item = run(&mut c[0], call("pop", q, 0)).await?;
        ensure!(item["value"] == "kept", "{item}");
        Ok(())
    })
    .await;
}
