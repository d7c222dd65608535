//! A member that was down while the others wrote more than a snapshot's worth of entries (and
//! purged their logs behind it) must catch up from a snapshot streamed by the leader, and then
//! hold exactly the data the others hold.

use std::time::Duration;

use anyhow::{Result, ensure};
use baton_e2e::{Backend, Cluster, backend_test};
use etcd_client::GetOptions;

const SNAPSHOT_COUNT: &str = "50";
const KEYS: usize = 300;

async fn lagging_member_catches_up_from_a_snapshot(backend: Backend) -> Result<()> {
    let mut cluster =
        Cluster::start_with_flags(backend, 3, &["--snapshot-count", SNAPSHOT_COUNT]).await?;
    let leader = cluster.leader().await?;
    let lagging = (leader + 1) % 3;
    cluster.kill(lagging)?;
    let survivor = (lagging + 1) % 3;
    let mut client = cluster.member_client(survivor).await?;
    for i in 0..KEYS {
        client
            .put(format!("snap/{i:04}"), format!("v{i}"), None)
            .await?;
    }
    client.delete("snap/0000", None).await?;
    let expected = client
        .get("snap/", Some(GetOptions::new().with_prefix()))
        .await?;
    let expected_revision = expected.header().map(|h| h.revision()).unwrap_or_default();

    cluster.restart(lagging)?;
    cluster.wait_ready().await?;
    let mut caught_up = cluster.member_client(lagging).await?;
    // Serializable reads show the member's own state; poll until it has applied everything.
    let mut last = None;
    for _ in 0..100 {
        let got = caught_up
            .get(
                "snap/",
                Some(GetOptions::new().with_prefix().with_serializable()),
            )
            .await?;
        let revision = got.header().map(|h| h.revision()).unwrap_or_default();
        if revision >= expected_revision {
            let pairs = |r: &etcd_client::GetResponse| -> Vec<(Vec<u8>, Vec<u8>, i64)> {
                r.kvs()
                    .iter()
                    .map(|kv| (kv.key().to_vec(), kv.value().to_vec(), kv.mod_revision()))
                    .collect()
            };
            ensure!(
                got.count() == (KEYS - 1) as i64,
                "count {} after catch-up",
                got.count()
            );
            ensure!(
                pairs(&got) == pairs(&expected),
                "caught-up member's data differs from the survivors'"
            );
            return Ok(());
        }
        last = Some(revision);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("member stayed at revision {last:?}, expected {expected_revision}")
}

backend_test!(lagging_member_catches_up_from_a_snapshot);
