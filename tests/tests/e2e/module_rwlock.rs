//! The built-in rwlock module on a 3-member cluster, called through every member (Baton only:
//! the module is Baton's): readers share, a writer waits for them and later readers wait for
//! it, a lease that ends releases its holder, and a waiter whose client gives up is withdrawn.
//! Then interop: etcd's own `recipe.RWMutex` algorithm (written out over `etcd_client`) and the
//! module exclude each other on the same lock, in both directions.

use anyhow::ensure;
use baton_e2e::{Backend, Cluster, run_test};
use tokio::time::sleep;

use crate::modules::PARKED_PROOF;
use crate::recipe_clients::{
    EtcdRwMutex, LONG_TTL_S, Recipe, WAKE_BOUND, keys, returned, until_keys,
};

fn named(name: &str) -> String {
    format!(r#"{{"name":"{name}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_share_writers_exclude_across_members() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let rw = Recipe::ready(&cluster, "rwlock", ("runlock", &named("probe"))).await?;
        let mut kv = cluster.client().await?;
        let l = named("e2e-rw");
        let mut leases = Vec::new();
        for _ in 0..5 {
            leases.push(kv.lease_grant(LONG_TTL_S, None).await?.id());
        }
        let (r1, r2_dying, w, r3, quitter) =
            (leases[0], leases[1], leases[2], leases[3], leases[4]);

        rw.call(0, "rlock", &l, r1).await?;
        rw.call(1, "rlock", &l, r2_dying).await?;
        let writer = rw.park(2, rw.request("lock", &l, w));
        sleep(PARKED_PROOF).await;
        let late_reader = rw.park(0, rw.request("rlock", &l, r3));
        sleep(PARKED_PROOF).await;
        ensure!(!writer.is_finished(), "the writer got in beside readers");
        ensure!(
            !late_reader.is_finished(),
            "a reader jumped the waiting writer"
        );

        // A writer whose client gives up is withdrawn through the log.
        rw.give_up(1, rw.request("lock", &l, quitter)).await?;
        let mut want = vec![
            format!("e2e-rw/read/{r1:x}"),
            format!("e2e-rw/read/{r2_dying:x}"),
            format!("e2e-rw/read/{r3:x}"),
            format!("e2e-rw/write/{w:x}"),
        ];
        want.sort();
        until_keys(&mut kv, "e2e-rw/", &want).await?;

        // r1 releases and r2's lease ends: the writer is granted once both are gone.
        rw.call(1, "runlock", &l, r1).await?;
        sleep(PARKED_PROOF).await;
        ensure!(!writer.is_finished(), "the writer got in beside a reader");
        kv.lease_revoke(r2_dying).await?;
        let granted = returned(writer).await?;
        ensure!(granted["key"] == format!("e2e-rw/write/{w:x}"), "{granted}");
        ensure!(
            !late_reader.is_finished(),
            "a reader got in beside the writer"
        );
        rw.call(0, "unlock", &l, w).await?;
        returned(late_reader).await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcds_rwmutex_and_the_module_exclude_each_other() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let rw = Recipe::ready(&cluster, "rwlock", ("runlock", &named("probe"))).await?;
        let mut kv = cluster.client().await?;
        let l = named("e2e-interop");
        let go_lease = kv.lease_grant(LONG_TTL_S, None).await?.id();
        let module_lease = kv.lease_grant(LONG_TTL_S, None).await?.id();

        // etcd's writer holds (through member 1); the module's reader (member 2) waits for it.
        let mut go_writer =
            EtcdRwMutex::new(cluster.member_client(1).await?, "e2e-interop", go_lease);
        go_writer.lock().await?;
        let reader = rw.park(2, rw.request("rlock", &l, module_lease));
        sleep(PARKED_PROOF).await;
        ensure!(
            !reader.is_finished(),
            "the module read beside etcd's writer"
        );
        go_writer.unlock().await?;
        returned(reader).await?;

        // The module's reader holds: etcd's writer waits until it releases.
        let mut go_writer =
            EtcdRwMutex::new(cluster.member_client(0).await?, "e2e-interop", go_lease);
        let go_waits = tokio::spawn(async move {
            go_writer.lock().await?;
            anyhow::Ok(go_writer)
        });
        sleep(PARKED_PROOF).await;
        ensure!(
            !go_waits.is_finished(),
            "etcd's writer got in beside the module's reader"
        );
        rw.call(1, "runlock", &l, module_lease).await?;
        let mut go_writer = tokio::time::timeout(WAKE_BOUND, go_waits).await???;
        ensure!(
            go_writer
                .key()
                .is_some_and(|k| k.starts_with("e2e-interop/write/"))
        );

        // etcd's writer holds again; the module's writer queues behind it; etcd's reader queues
        // behind the module's writer, and is let in only after it.
        let writer = rw.park(0, rw.request("lock", &l, module_lease));
        sleep(PARKED_PROOF).await;
        let mut go_reader =
            EtcdRwMutex::new(cluster.member_client(2).await?, "e2e-interop", go_lease);
        let go_reads = tokio::spawn(async move {
            go_reader.rlock().await?;
            anyhow::Ok(go_reader)
        });
        sleep(PARKED_PROOF).await;
        ensure!(
            !writer.is_finished() && !go_reads.is_finished(),
            "someone got in beside etcd's writer"
        );
        go_writer.unlock().await?;
        returned(writer).await?;
        ensure!(
            !go_reads.is_finished(),
            "etcd's reader got in beside the module's writer"
        );
        rw.call(2, "unlock", &l, module_lease).await?;
        let mut go_reader = tokio::time::timeout(WAKE_BOUND, go_reads).await???;
        go_reader.unlock().await?;
        ensure!(
            keys(&mut kv, "e2e-interop/").await?.is_empty(),
            "a key was left behind"
        );
        Ok(())
    })
    .await;
}
