//! The built-in double-barrier module on a 3-member cluster (Baton only: the module is
//! Baton's): `enter` waits until `count` have entered and `leave` until all have left, through
//! every member; a caller whose client gives up while entering is withdrawn. Then interop: one
//! caller runs etcd's own `recipe.DoubleBarrier` algorithm (written out over `etcd_client`)
//! beside two module callers on the same barrier, through a whole round.

use anyhow::ensure;
use baton_e2e::{Backend, Cluster, run_test};
use tokio::time::sleep;

use crate::modules::PARKED_PROOF;
use crate::recipe_clients::{
    EtcdDoubleBarrier, LONG_TTL_S, Recipe, WAKE_BOUND, keys, returned, until_keys,
};

const COUNT: usize = 3;

fn enter_input(name: &str) -> String {
    format!(r#"{{"name":"{name}","count":{COUNT}}}"#)
}

fn named(name: &str) -> String {
    format!(r#"{{"name":"{name}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enter_waits_for_all_and_leave_for_everyone_across_members() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let db = Recipe::ready(&cluster, "double-barrier", ("leave", &named("probe"))).await?;
        let mut kv = cluster.client().await?;
        let mut leases = Vec::new();
        for _ in 0..=COUNT {
            leases.push(kv.lease_grant(LONG_TTL_S, None).await?.id());
        }
        let name = "e2e-db";

        // A caller who gives up while entering is withdrawn and does not count.
        db.give_up(0, db.request("enter", &enter_input(name), leases[COUNT]))
            .await?;
        until_keys(&mut kv, &format!("{name}/"), &[]).await?;

        let first: Vec<_> = (0..COUNT - 1)
            .map(|i| db.park(i, db.request("enter", &enter_input(name), leases[i])))
            .collect();
        sleep(PARKED_PROOF).await;
        ensure!(
            first.iter().all(|e| !e.is_finished()),
            "entered before {COUNT} came"
        );
        db.call(COUNT - 1, "enter", &enter_input(name), leases[COUNT - 1])
            .await?;
        for entered in first {
            returned(entered).await?;
        }
        let refused = db.call(0, "enter", &enter_input(name), leases[COUNT]).await;
        ensure!(refused.is_err_and(|e| format!("{e:#}").contains("too many clients")));

        // All leave, through different members: nobody returns before the last has left.
        let leaving: Vec<_> = (0..COUNT - 1)
            .map(|i| db.park(i + 1, db.request("leave", &named(name), leases[i])))
            .collect();
        sleep(PARKED_PROOF).await;
        ensure!(
            leaving.iter().all(|l| !l.is_finished()),
            "left before everyone did"
        );
        let last = db.call(0, "leave", &named(name), leases[COUNT - 1]).await?;
        ensure!(last == serde_json::json!({"left": true}), "{last}");
        for left in leaving {
            returned(left).await?;
        }
        ensure!(
            keys(&mut kv, &format!("{name}/")).await?.is_empty(),
            "a round left keys"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcds_double_barrier_and_the_module_complete_a_round_together() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let db = Recipe::ready(&cluster, "double-barrier", ("leave", &named("probe"))).await?;
        let mut kv = cluster.client().await?;
        let name = "e2e-db-interop";
        let go_lease = kv.lease_grant(LONG_TTL_S, None).await?.id();
        let a = kv.lease_grant(LONG_TTL_S, None).await?.id();
        let b = kv.lease_grant(LONG_TTL_S, None).await?.id();

        // The etcd-algorithm caller enters first and waits for the two module callers.
        let mut go = EtcdDoubleBarrier::new(cluster.member_client(2).await?, name, COUNT, go_lease);
        let go_enters = tokio::spawn(async move {
            go.enter().await?;
            anyhow::Ok(go)
        });
        sleep(PARKED_PROOF).await;
        let a_enters = db.park(0, db.request("enter", &enter_input(name), a));
        sleep(PARKED_PROOF).await;
        ensure!(
            !go_enters.is_finished() && !a_enters.is_finished(),
            "entered early"
        );
        db.call(1, "enter", &enter_input(name), b).await?;
        returned(a_enters).await?;
        let mut go = tokio::time::timeout(WAKE_BOUND, go_enters).await???;

        // Leave: the module callers first (they wait), then etcd's (the lowest: it waits
        // for the others' keys to go, then finishes the round).
        let a_leaves = db.park(1, db.request("leave", &named(name), a));
        let b_leaves = db.park(2, db.request("leave", &named(name), b));
        sleep(PARKED_PROOF).await;
        ensure!(
            !a_leaves.is_finished() && !b_leaves.is_finished(),
            "left before etcd's caller"
        );
        tokio::time::timeout(WAKE_BOUND, go.leave()).await??;
        returned(a_leaves).await?;
        returned(b_leaves).await?;
        ensure!(
            keys(&mut kv, &format!("{name}/")).await?.is_empty(),
            "a round left keys"
        );
        Ok(())
    })
    .await;
}
