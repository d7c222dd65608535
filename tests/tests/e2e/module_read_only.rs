//! Read-only module calls (Baton only): served by whichever member the client reaches, after a
//! linearizable read and without a log entry. They see every write acknowledged before them
//! (on followers too), create no revision, refuse to write, and can wait like any call.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use baton_e2e::{Backend, Cluster, run_test};
use baton_proto::baton::v1::{DeployRequest, InvokeRequest};
use baton_wasm::builtin::HOSTILE_MODULE;
use tokio::time::{sleep, timeout};

use crate::modules::{
    PARKED_PROOF, WAKE_BOUND, invoke, invoke_when_deployed, modules_client, output_json, park,
};

fn read_only(function: &str, input: &str) -> InvokeRequest {
    InvokeRequest {
        read_only: true,
        ..invoke("counter", function, input, 0)
    }
}

/// The store's current revision, as the leader reports it.
async fn revision(cluster: &Cluster) -> Result<i64> {
    let mut kv = cluster.member_client(cluster.leader().await?).await?;
    let reply = kv.get("any", None).await?;
    Ok(reply.header().context("no header")?.revision())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_calls_see_acknowledged_writes_on_every_member_and_commit_nothing() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let leader = cluster.leader().await?;
        let mut writer = modules_client(cluster.endpoint(leader)).await?;
        let add = invoke("counter", "add", r#"{"keys":["ro/a"],"by":5}"#, 0);
        invoke_when_deployed(&mut writer, add).await?;

        for round in 1..=3i64 {
            let add = invoke("counter", "add", r#"{"keys":["ro/a"],"by":1}"#, 0);
            writer.invoke(add).await?;
            let before = revision(&cluster).await?;
            // Right after the acknowledgement, every member answers with the new value.
            for member in 0..cluster.size() {
                let mut reader = modules_client(cluster.endpoint(member)).await?;
                let get = read_only("get", r#"{"keys":["ro/a","ro/none"]}"#);
                let reply = reader.invoke(get).await?.into_inner();
                let values = output_json(&reply.output)?;
                ensure!(
                    values["ro/a"] == 5 + round && values["ro/none"] == 0,
                    "member {member}, round {round}: {values}"
                );
                ensure!(
                    reply.revision == before && reply.runs == 1 && reply.fuel_used > 0,
                    "member {member}: revision {} (store at {before}), runs {}, fuel {}",
                    reply.revision,
                    reply.runs,
                    reply.fuel_used
                );
            }
            ensure!(
                revision(&cluster).await? == before,
                "read-only calls created a revision"
            );
        }

        // A write from a read-only call fails, names the way out, and changes nothing.
        let mut reader = modules_client(cluster.endpoint((leader + 1) % 3)).await?;
        let before = revision(&cluster).await?;
        let err = reader
            .invoke(read_only("add", r#"{"keys":["ro/a"],"by":100}"#))
            .await
            .expect_err("a read-only add succeeded");
        ensure!(
            err.code() == tonic::Code::FailedPrecondition
                && err.message().contains("read-only call cannot write"),
            "{err:?}"
        );
        let get = read_only("get", r#"{"keys":["ro/a"]}"#);
        let values = output_json(&reader.invoke(get).await?.into_inner().output)?;
        ensure!(values["ro/a"] == 8, "{values}");
        ensure!(revision(&cluster).await? == before, "the refused add wrote");

        // The same validation as any call: an unknown module is NOT_FOUND.
        let unknown = InvokeRequest {
            name: "no-such-module".into(),
            ..read_only("get", "{}")
        };
        let err = reader.invoke(unknown).await.expect_err("unknown module");
        ensure!(err.code() == tonic::Code::NotFound, "{err:?}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_call_waits_on_a_follower_until_the_counters_reach_a_value() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let leader = cluster.leader().await?;
        let mut writer = modules_client(cluster.endpoint(leader)).await?;
        let warmup = invoke("counter", "add", r#"{"keys":["latch/warmup"],"by":1}"#, 0);
        invoke_when_deployed(&mut writer, warmup).await?;
        let reader = modules_client(cluster.endpoint((leader + 1) % 3)).await?;

        // A countdown latch: two workers must check in before the waiter goes on.
        let latch = r#"{"keys":["latch/w1","latch/w2"],"at_least":1}"#;
        let parked = park(&reader, read_only("get", latch));
        sleep(PARKED_PROOF).await;
        ensure!(
            !parked.is_finished(),
            "returned before any worker checked in"
        );
        let check_in = invoke("counter", "add", r#"{"keys":["latch/w1"],"by":1}"#, 0);
        writer.invoke(check_in).await?;
        sleep(PARKED_PROOF).await;
        ensure!(!parked.is_finished(), "returned after one of two check-ins");
        // The second check-in is a plain etcd put: any write of the keys wakes the call.
        let mut kv = cluster.member_client(leader).await?;
        kv.put("latch/w2", "1", None).await?;
        let reply = timeout(WAKE_BOUND, parked)
            .await??
            .context("latch")?
            .into_inner();
        let values = output_json(&reply.output)?;
        ensure!(
            values["latch/w1"] == 1 && values["latch/w2"] == 1,
            "{values}"
        );
        ensure!(
            reply.runs >= 2,
            "ran {} times; it should have waited",
            reply.runs
        );

        // A client deadline ends a read-only wait cleanly.
        let mut reader = reader;
        let mut request =
            tonic::Request::new(read_only("get", r#"{"keys":["latch/never"],"at_least":1}"#));
        request.set_timeout(Duration::from_millis(300));
        let err = reader.invoke(request).await.expect_err("the wait ended");
        ensure!(
            matches!(
                err.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ),
            "{err:?}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_read_only_calls_leaves_the_apply_path_its_instances() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 1).await?;
        let mut modules = modules_client(cluster.endpoint(0)).await?;
        let add = invoke("counter", "add", r#"{"keys":["flood/n"],"by":1}"#, 0);
        invoke_when_deployed(&mut modules, add).await?;
        let hostile = DeployRequest {
            name: "hostile".into(),
            component: HOSTILE_MODULE.to_vec(),
        };
        modules.deploy(hostile).await?;

        // Far more guests at once than the instance pool holds, each spinning until its fuel
        // runs out, while writes keep needing an instance on the apply path.
        let spins: Vec<_> = (0..48)
            .map(|_| {
                let spin = InvokeRequest {
                    read_only: true,
                    ..invoke("hostile", "spin-reading", "", 2_000_000)
                };
                park(&modules, spin)
            })
            .collect();
        for _ in 0..20 {
            let add = invoke("counter", "add", r#"{"keys":["flood/n"],"by":1}"#, 0);
            modules
                .invoke(add)
                .await
                .context("a write during the flood")?;
        }
        for spin in spins {
            let err = timeout(WAKE_BOUND, spin)
                .await
                .context("a read-only call never answered")??
                .expect_err("an endless loop finished");
            ensure!(
                err.code() == tonic::Code::ResourceExhausted && err.message().contains("fuel"),
                "a read-only spin failed otherwise: {err:?}"
            );
        }
        let get = read_only("get", r#"{"keys":["flood/n"]}"#);
        let values = output_json(&modules.invoke(get).await?.into_inner().output)?;
        ensure!(values["flood/n"] == 21, "{values}");
        Ok(())
    })
    .await;
}
