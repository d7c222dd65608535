//! Every recipe's waiting calls outlive their leader (issue 21): with a call of each built-in
//! recipe parked on the followers of a 3-member cluster, the leader is killed with `-9`. The
//! survivors keep every call waiting (none returns, none fails), and each completes with the
//! right answer once what it waits for happens, now run through the new leader's log.
//! Baton only: etcd has no modules.

use anyhow::{Context, Result, ensure};
use baton_e2e::{Backend, Cluster, run_test};
use baton_proto::baton::v1::InvokeRequest;
use baton_proto::baton::v1::modules_client::ModulesClient;
use serde_json::{Value, json};
use tokio::time::{sleep, timeout};
use tonic::transport::Channel;

use crate::modules::{
    PARKED_PROOF, Parked, WAKE_BOUND, invoke, modules_client, output_json, park, wait_deployed,
};

/// Leases that outlive the test (the leader change renews them).
const TTL_S: i64 = 60;

const RECIPES: [&str; 9] = [
    "lock",
    "semaphore",
    "election",
    "rwlock",
    "barrier",
    "double-barrier",
    "queue",
    "priority-queue",
    "registry",
];

fn call(module: &str, function: &str, input: Value, lease: i64) -> InvokeRequest {
    InvokeRequest {
        lease,
        ..invoke(module, function, &input.to_string(), 0)
    }
}

async fn run(client: &ModulesClient<Channel>, request: InvokeRequest) -> Result<Value> {
    let what = format!("{} {}", request.name, request.function);
    let reply = client
        .clone()
        .invoke(request)
        .await
        .with_context(|| what.clone())?
        .into_inner();
    output_json(&reply.output).context(what)
}

/// The answer of a parked call, once it returns.
async fn answer(what: &str, parked: Parked) -> Result<Value> {
    let reply = timeout(WAKE_BOUND, parked)
        .await
        .with_context(|| format!("{what}: still waiting {WAKE_BOUND:?} after its wake"))?
        .with_context(|| format!("{what}: the caller panicked"))?
        .with_context(|| format!("{what}: failed after the leader change"))?
        .into_inner();
    output_json(&reply.output).with_context(|| what.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recipes_waiters_outlive_a_leader_killed_with_sigkill() {
    run_test(Backend::Baton, async {
        let mut cluster = Cluster::start(Backend::Baton, 3).await?;
        let leader = cluster.leader().await?;
        let mut followers = (0..3).filter(|&m| m != leader);
        let (a, b) = (
            followers.next().context("no follower")?,
            followers.next().context("one follower only")?,
        );
        let mut on_a = modules_client(cluster.endpoint(a)).await?;
        let on_b = modules_client(cluster.endpoint(b)).await?;
        for recipe in RECIPES {
            wait_deployed(&mut on_a, recipe).await?;
        }
        let mut kv = cluster.member_client(a).await?;
        let holder = kv.lease_grant(TTL_S, None).await?.id();
        let mut leases = Vec::new();
        for _ in 0..6 {
            leases.push(kv.lease_grant(TTL_S, None).await?.id());
        }

        // What the waiters wait on, taken through a follower.
        let held = run(
            &on_a,
            call("lock", "acquire", json!({"name": "fo-lock"}), holder),
        )
        .await?;
        let permit = json!({"name": "fo-sem", "permits": 1});
        run(&on_a, call("semaphore", "acquire", permit.clone(), holder)).await?;
        let campaign = json!({"name": "fo-el", "value": "old"});
        let elected = run(&on_a, call("election", "campaign", campaign, holder)).await?;
        run(
            &on_a,
            call("rwlock", "rlock", json!({"name": "fo-rw"}), holder),
        )
        .await?;
        run(&on_a, call("barrier", "hold", json!({"name": "fo-bar"}), 0)).await?;
        let since = kv.get("fo-now", None).await?;
        let since = since.header().context("no header")?.revision();

        // One waiter per recipe, parked on either follower, each under its own lease.
        let waiters: Vec<(&str, Parked)> = vec![
            (
                "lock acquire",
                park(
                    &on_b,
                    call("lock", "acquire", json!({"name": "fo-lock"}), leases[0]),
                ),
            ),
            (
                "semaphore acquire",
                park(
                    &on_a,
                    call("semaphore", "acquire", permit.clone(), leases[1]),
                ),
            ),
            (
                "election campaign",
                park(
                    &on_b,
                    call(
                        "election",
                        "campaign",
                        json!({"name": "fo-el", "value": "new"}),
                        leases[2],
                    ),
                ),
            ),
            (
                "rwlock lock",
                park(
                    &on_a,
                    call("rwlock", "lock", json!({"name": "fo-rw"}), leases[3]),
                ),
            ),
            (
                "barrier wait",
                park(&on_b, call("barrier", "wait", json!({"name": "fo-bar"}), 0)),
            ),
            (
                "double-barrier enter",
                park(
                    &on_a,
                    call(
                        "double-barrier",
                        "enter",
                        json!({"name": "fo-db", "count": 2}),
                        leases[4],
                    ),
                ),
            ),
            (
                "queue pop",
                park(&on_b, call("queue", "pop", json!({"queue": "fo-q"}), 0)),
            ),
            (
                "priority-queue dequeue",
                park(
                    &on_a,
                    call("priority-queue", "dequeue", json!({"queue": "fo-pq"}), 0),
                ),
            ),
            (
                "registry changes",
                park(
                    &on_b,
                    call(
                        "registry",
                        "changes",
                        json!({"service": "fo-svc", "since_revision": since}),
                        0,
                    ),
                ),
            ),
        ];
        sleep(PARKED_PROOF).await;
        for (what, parked) in &waiters {
            ensure!(
                !parked.is_finished(),
                "{what} returned before the leader died"
            );
        }

        cluster.kill(leader)?;
        let new_leader = cluster.leader().await?;
        ensure!(new_leader != leader, "the killed member still leads");
        sleep(PARKED_PROOF).await;
        for (what, parked) in &waiters {
            ensure!(
                !parked.is_finished(),
                "{what} returned across the leader change with nothing to wake it"
            );
        }

        // Now what each waits for, through the surviving follower `a`.
        run(
            &on_a,
            call("lock", "release", json!({"name": "fo-lock"}), holder),
        )
        .await?;
        run(&on_a, call("semaphore", "release", permit, holder)).await?;
        let token = elected["token"].clone();
        let resign = json!({"name": "fo-el", "token": token});
        run(&on_a, call("election", "resign", resign, holder)).await?;
        run(
            &on_a,
            call("rwlock", "runlock", json!({"name": "fo-rw"}), holder),
        )
        .await?;
        run(
            &on_a,
            call("barrier", "release", json!({"name": "fo-bar"}), 0),
        )
        .await?;
        let second = json!({"name": "fo-db", "count": 2});
        run(&on_a, call("double-barrier", "enter", second, leases[5])).await?;
        run(
            &on_a,
            call("queue", "push", json!({"queue": "fo-q", "value": "q1"}), 0),
        )
        .await?;
        let item = json!({"queue": "fo-pq", "value": "p1", "priority": 1});
        run(&on_a, call("priority-queue", "enqueue", item, 0)).await?;
        let instance = json!({"service": "fo-svc", "instance": "10.0.0.9:80", "meta": {}});
        run(&on_a, call("registry", "register", instance, holder)).await?;

        let mut answers = Vec::new();
        for (what, parked) in waiters {
            answers.push((what, answer(what, parked).await?));
        }
        let by = |name: &str| {
            answers
                .iter()
                .find(|(what, _)| *what == name)
                .map(|(_, answer)| answer.clone())
                .unwrap_or(Value::Null)
        };
        let lock = by("lock acquire");
        ensure!(
            lock["token"].as_i64() > held["token"].as_i64(),
            "the lock passed with token {} after {}",
            lock["token"],
            held["token"]
        );
        ensure!(
            by("semaphore acquire")["token"].is_i64(),
            "no semaphore grant"
        );
        let campaign = by("election campaign");
        ensure!(
            campaign["token"].as_i64() > elected["token"].as_i64(),
            "the election passed with token {} after {}",
            campaign["token"],
            elected["token"]
        );
        let writer = by("rwlock lock");
        ensure!(
            writer["key"]
                .as_str()
                .is_some_and(|k| k.starts_with("fo-rw/write/")),
            "rwlock lock answered {writer}"
        );
        ensure!(
            by("barrier wait")["open"] == true,
            "barrier wait did not open"
        );
        let entered = by("double-barrier enter");
        ensure!(
            entered["key"]
                .as_str()
                .is_some_and(|k| k.starts_with("fo-db/waiters/")),
            "double-barrier enter answered {entered}"
        );
        ensure!(
            by("queue pop")["value"] == "q1",
            "queue pop answered {}",
            by("queue pop")
        );
        let dequeued = by("priority-queue dequeue");
        ensure!(
            dequeued["value"] == "p1",
            "priority-queue dequeue answered {dequeued}"
        );
        let changes = by("registry changes");
        ensure!(
            changes.to_string().contains("10.0.0.9:80"),
            "registry changes answered {changes}"
        );
        Ok(())
    })
    .await;
}
