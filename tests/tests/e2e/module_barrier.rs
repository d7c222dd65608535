//! The built-in barrier module on a 3-member cluster (Baton only: the module is Baton's): 100
//! waiters spread over every member, half of them read-only calls, all return once the barrier
//! is released; a holder's lease ending releases it. Then interop with etcd's own
//! `recipe.Barrier` algorithm (written out over `etcd_client`) on the same key, both ways.

use anyhow::ensure;
use baton_e2e::{Backend, Cluster, run_test};
use baton_proto::baton::v1::InvokeRequest;
use tokio::time::sleep;

use crate::modules::PARKED_PROOF;
use crate::recipe_clients::{EtcdBarrier, Recipe, SHORT_TTL_S, WAKE_BOUND, returned};

const WAITERS: usize = 100;

fn named(name: &str) -> String {
    format!(r#"{{"name":"{name}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_waiters_on_every_member_pass_once_released() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let barrier = Recipe::ready(&cluster, "barrier", ("wait", &named("probe"))).await?;
        let b = named("e2e-barrier");
        let held = barrier.call(0, "hold", &b, 0).await?;
        ensure!(held == serde_json::json!({"created": true}), "{held}");
        let again = barrier.call(1, "hold", &b, 0).await?;
        ensure!(again == serde_json::json!({"created": false}), "{again}");

        let waiters: Vec<_> = (0..WAITERS)
            .map(|i| {
                let request = InvokeRequest {
                    read_only: i % 2 == 0,
                    ..barrier.request("wait", &b, 0)
                };
                barrier.park(i, request)
            })
            .collect();
        sleep(PARKED_PROOF).await;
        ensure!(
            waiters.iter().all(|w| !w.is_finished()),
            "a waiter passed a held barrier"
        );
        let released = barrier.call(2, "release", &b, 0).await?;
        ensure!(
            released == serde_json::json!({"released": true}),
            "{released}"
        );
        for waiter in waiters {
            let passed = returned(waiter).await?;
            ensure!(passed == serde_json::json!({"open": true}), "{passed}");
        }

        // A barrier held with a lease falls when the lease ends.
        let mut kv = cluster.client().await?;
        let lease = kv.lease_grant(SHORT_TTL_S, None).await?.id();
        barrier.call(1, "hold", &b, lease).await?;
        let waiter = barrier.park(2, barrier.request("wait", &b, 0));
        returned(waiter).await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcds_barrier_and_the_module_share_the_key() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let barrier = Recipe::ready(&cluster, "barrier", ("wait", &named("probe"))).await?;
        let b = named("e2e-shared");

        // etcd's client holds; the module and another etcd client wait; the module releases.
        let mut go_holder = EtcdBarrier::new(cluster.member_client(0).await?, "e2e-shared");
        go_holder.hold().await?;
        let module_waits = barrier.park(1, barrier.request("wait", &b, 0));
        let mut go_waiter = EtcdBarrier::new(cluster.member_client(2).await?, "e2e-shared");
        let go_waits = tokio::spawn(async move { go_waiter.wait().await });
        sleep(PARKED_PROOF).await;
        ensure!(
            !module_waits.is_finished() && !go_waits.is_finished(),
            "passed a held barrier"
        );
        barrier.call(2, "release", &b, 0).await?;
        returned(module_waits).await?;
        tokio::time::timeout(WAKE_BOUND, go_waits).await???;

        // The module holds: etcd's Hold refuses, etcd's Wait waits until etcd's Release.
        barrier.call(0, "hold", &b, 0).await?;
        ensure!(
            go_holder.hold().await.is_err(),
            "etcd's Hold took a held barrier"
        );
        let mut go_waiter = EtcdBarrier::new(cluster.member_client(1).await?, "e2e-shared");
        let go_waits = tokio::spawn(async move { go_waiter.wait().await });
        let module_waits = barrier.park(2, barrier.request("wait", &b, 0));
        sleep(PARKED_PROOF).await;
        ensure!(
            !go_waits.is_finished() && !module_waits.is_finished(),
            "passed a held barrier"
        );
        go_holder.release().await?;
        tokio::time::timeout(WAKE_BOUND, go_waits).await???;
        returned(module_waits).await?;
        Ok(())
    })
    .await;
}
