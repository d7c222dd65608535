//! Module calls that wait server-side (Baton only): the built-in queue's `pop` on an empty queue
//! parks on the member serving the client and returns as soon as anyone enqueues — a plain etcd
//! put included — with no client polling; a client deadline ends the wait and consumes nothing;
//! a parked call survives a leader change, or fails so the client can retry.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use baton_e2e::{Backend, Cluster, run_test};
use tokio::time::{sleep, timeout};

use crate::modules::{
    PARKED_PROOF, WAKE_BOUND, invoke, invoke_when_deployed, modules_client, output_json, park,
};

fn pop(queue: &str) -> baton_proto::baton::v1::InvokeRequest {
    invoke("queue", "pop", &format!(r#"{{"queue":"{queue}"}}"#), 0)
}

/// A follower of the cluster's current leader.
async fn a_follower(cluster: &Cluster) -> Result<usize> {
    let leader = cluster.leader().await?;
    Ok((leader + 1) % cluster.size())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop_on_an_empty_queue_returns_when_an_etcd_client_enqueues() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let follower = a_follower(&cluster).await?;
        let mut modules = modules_client(cluster.endpoint(follower)).await?;
        // The queue module arrives through the log just after bootstrap.
        let push = invoke("queue", "push", r#"{"queue":"warmup","value":"1"}"#, 0);
        invoke_when_deployed(&mut modules, push).await?;

        let parked = park(&modules, pop("jobs"));
        sleep(PARKED_PROOF).await;
        ensure!(
            !parked.is_finished(),
            "pop on an empty queue returned at once"
        );

        let mut kv = cluster.member_client(cluster.leader().await?).await?;
        kv.put("jobs/a", "first", None).await?;
        let reply = timeout(WAKE_BOUND, parked)
            .await??
            .context("pop")?
            .into_inner();
        let item = output_json(&reply.output)?;
        ensure!(
            item["key"] == "jobs/a" && item["value"] == "first",
            "{item}"
        );
        ensure!(
            reply.runs == 2,
            "ran {} times, expected 2 (park, wake)",
            reply.runs
        );
        let left = kv
            .get("jobs/", Some(etcd_client::GetOptions::new().with_prefix()))
            .await?;
        ensure!(left.kvs().is_empty(), "pop left the item: {:?}", left.kvs());

        // A push through the module wakes a parked pop just the same, and the items keep order.
        let parked = park(&modules, pop("jobs"));
        sleep(PARKED_PROOF).await;
        for value in ["second", "third"] {
            let push = format!(r#"{{"queue":"jobs","value":"{value}"}}"#);
            modules.invoke(invoke("queue", "push", &push, 0)).await?;
        }
        let reply = timeout(WAKE_BOUND, parked)
            .await??
            .context("pop")?
            .into_inner();
        ensure!(output_json(&reply.output)?["value"] == "second");
        let reply = modules.invoke(pop("jobs")).await?.into_inner();
        ensure!(output_json(&reply.output)?["value"] == "third");
        ensure!(reply.runs == 1, "an item was there: one run");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_ends_a_parked_call_and_consumes_nothing() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 1).await?;
        let mut modules = modules_client(cluster.endpoint(0)).await?;
        let push = invoke("queue", "push", r#"{"queue":"warmup","value":"1"}"#, 0);
        invoke_when_deployed(&mut modules, push).await?;

        let mut request = tonic::Request::new(pop("jobs"));
        request.set_timeout(Duration::from_millis(300));
        let status = modules
            .invoke(request)
            .await
            .err()
            .context("pop on an empty queue must not return before its deadline")?;
        ensure!(
            matches!(
                status.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ),
            "{status:?}"
        );
        // The abandoned pop is gone: an item pushed now stays for the next consumer.
        let mut kv = cluster.client().await?;
        kv.put("jobs/a", "kept", None).await?;
        sleep(PARKED_PROOF).await;
        let kept = kv.get("jobs/a", None).await?;
        ensure!(kept.kvs().len() == 1, "an abandoned pop consumed the item");
        let reply = modules.invoke(pop("jobs")).await?.into_inner();
        ensure!(output_json(&reply.output)?["value"] == "kept");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_calls_survive_a_leader_change_or_fail_for_a_retry() {
    run_test(Backend::Baton, async {
        let mut cluster = Cluster::start(Backend::Baton, 3).await?;
        let leader = cluster.leader().await?;
        let follower = a_follower(&cluster).await?;
        let mut on_follower = modules_client(cluster.endpoint(follower)).await?;
        let push = invoke("queue", "push", r#"{"queue":"warmup","value":"1"}"#, 0);
        invoke_when_deployed(&mut on_follower, push).await?;
        let on_leader = modules_client(cluster.endpoint(leader)).await?;

        let parked_on_follower = park(&on_follower, pop("jobs"));
        let parked_on_leader = park(&on_leader, pop("other"));
        sleep(PARKED_PROOF).await;
        ensure!(!parked_on_follower.is_finished() && !parked_on_leader.is_finished());

        cluster.kill(leader)?;
        // The call parked on the dead member fails (the client retries elsewhere) ...
        let lost = timeout(WAKE_BOUND, parked_on_leader).await??;
        ensure!(
            lost.is_err(),
            "a call parked on a killed member cannot succeed"
        );
        // ... while the one parked on a survivor still wakes, run by the new leader.
        let survivor = cluster.running().next().context("no survivor")?;
        let mut kv = cluster.member_client(survivor).await?;
        kv.put("jobs/after-failover", "x", None).await?;
        let reply = timeout(WAKE_BOUND, parked_on_follower)
            .await??
            .context("pop parked on a follower across a leader change")?
            .into_inner();
        ensure!(output_json(&reply.output)?["key"] == "jobs/after-failover");
        drop(on_leader);
        Ok(())
    })
    .await;
}
