//! The harness itself: clusters start, elect, survive a kill and a restart.

use anyhow::Result;
use baton_e2e::{Backend, Cluster, backend_test};

async fn single_member_starts(backend: Backend) -> Result<()> {
    let cluster = Cluster::start(backend, 1).await?;
    assert_eq!(cluster.leader().await?, 0);
    assert_ne!(cluster.member_id(0), 0);
    let mut client = cluster.client().await?;
    let put = client.put("harness", "ok", None).await?;
    let get = client.get("harness", None).await?;
    assert_eq!(get.kvs()[0].value(), b"ok");
    assert_eq!(
        get.header().map(|h| h.revision()),
        put.header().map(|h| h.revision())
    );
    Ok(())
}

async fn three_members_kill_and_restart(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 3).await?;
    let ids: Vec<u64> = (0..3).map(|i| cluster.member_id(i)).collect();
    assert!(ids.iter().all(|&id| id != 0), "member ids {ids:?}");
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "member ids {ids:?}"
    );
    let leader = cluster.leader().await?;
    cluster.kill(leader)?;
    assert!(!cluster.is_running(leader));
    let new_leader = cluster.leader().await?;
    assert_ne!(new_leader, leader);
    cluster.restart(leader)?;
    cluster.wait_ready().await?;
    assert_eq!(cluster.running().count(), 3);
    Ok(())
}

backend_test!(single_member_starts, three_members_kill_and_restart);
