//! etcd's strict reconfiguration checks with one of three members down: adding any member and
//! removing a live one are refused as "unhealthy cluster" (that would leave no working quorum),
//! removing the dead one is allowed, and the removed member, restarted on its data dir, stops
//! by itself instead of rejoining.

use std::time::Duration;

use anyhow::{Result, ensure};
use baton_e2e::{Backend, Cluster, assert_grpc_error, backend_test};
use etcd_client::MemberAddOptions;
use tokio::time::sleep;
use tonic::Code;

use crate::membership::wait_exited;

const UNHEALTHY: &str = "etcdserver: unhealthy cluster";
/// Time for the leader to notice a killed member: etcd at once (its connection breaks), Baton
/// once heartbeats go unanswered for an election timeout.
const NOTICE_DOWN: Duration = Duration::from_secs(4);

async fn reconfiguration_with_a_member_down(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 3).await?;
    let leader = cluster.leader().await?;
    let (down, up) = ((leader + 1) % 3, (leader + 2) % 3);
    let mut client = cluster.member_client(leader).await?;
    client.put("before", "1", None).await?;
    cluster.kill(down)?;
    sleep(NOTICE_DOWN).await;

    let spare = cluster.next_member_addrs()?.peer_url();
    assert_grpc_error(
        client.member_add([spare.clone()], None).await,
        Code::Unavailable,
        UNHEALTHY,
    );
    let learner = Some(MemberAddOptions::new().with_is_learner());
    assert_grpc_error(
        client.member_add([spare], learner).await,
        Code::Unavailable,
        UNHEALTHY,
    );
    assert_grpc_error(
        client.member_remove(cluster.member_id(up)).await,
        Code::Unavailable,
        UNHEALTHY,
    );

    // The dead member is not part of the working quorum, so it may go.
    let down_id = cluster.member_id(down);
    let left = client.member_remove(down_id).await?;
    ensure!(
        left.members().len() == 2 && left.members().iter().all(|m| m.id() != down_id),
        "{:?}",
        left.members()
    );
    client.put("after", "2", None).await?;

    // Restarted on its old data dir, the removed member finds out and stops.
    cluster.restart(down)?;
    wait_exited(&mut cluster, down).await?;
    cluster.forget(down)?;
    let list = client.member_list().await?;
    ensure!(list.members().len() == 2, "{:?}", list.members());
    client.put("still", "3", None).await?;
    Ok(())
}

backend_test!(reconfiguration_with_a_member_down);
