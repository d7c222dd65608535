//! A member that was down while the others wrote more than a snapshot's worth of entries (and
//! purged their logs behind it) must catch up from a snapshot streamed by the leader, and then
//! hold exactly the data the others hold, at the current revision and at older ones (which
//! Baton answers from a key index it rebuilds from the installed history, and again after a
//! restart).

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
    let mut mid_revision = 0;
    for i in 0..KEYS {
        let put = client
            .put(format!("snap/{i:04}"), format!("v{i}"), None)
            .await?;
        if i == KEYS / 2 {
            mid_revision = put.header().map(|h| h.revision()).unwrap_or_default();
        }
    }
    // Rewrite a few keys so reads at `mid_revision` differ from the current ones.
    for i in 0..10 {
        client
            .put(format!("snap/{i:04}"), format!("w{i}"), None)
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
    // Serializable reads show the member's own state.
    applied_through(&mut caught_up, expected_revision).await?;
    let got = caught_up
        .get(
            "snap/",
            Some(GetOptions::new().with_prefix().with_serializable()),
        )
        .await?;
    ensure!(
        got.count() == (KEYS - 1) as i64,
        "count {} after catch-up",
        got.count()
    );
    ensure!(
        kv_rows(&got) == kv_rows(&expected),
        "caught-up member's data differs from the survivors'"
    );
    let old = same_at_revision(&mut client, &mut caught_up, mid_revision).await?;
    ensure!(old == KEYS / 2 + 1, "{old} keys at revision {mid_revision}");
    cluster.kill(lagging)?;
    cluster.restart(lagging)?;
    cluster.wait_ready().await?;
    let mut restarted = cluster.member_client(lagging).await?;
    applied_through(&mut restarted, expected_revision).await?;
    same_at_revision(&mut client, &mut restarted, mid_revision).await?;
    Ok(())
}

/// Waits until `member` has applied up to `revision` (it catches up, or replays its log after
/// a restart).
async fn applied_through(member: &mut etcd_client::Client, revision: i64) -> Result<()> {
    let mut last = 0;
    for _ in 0..100 {
        let got = member
            .get(
                "snap/",
                Some(GetOptions::new().with_serializable().with_count_only()),
            )
            .await?;
        last = got.header().map(|h| h.revision()).unwrap_or_default();
        if last >= revision {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("member stayed at revision {last}, expected {revision}")
}

/// Reads every `snap/` key at `revision` from both members (serializable: each its own state)
/// and checks they agree; returns how many keys there were.
async fn same_at_revision(
    reference: &mut etcd_client::Client,
    member: &mut etcd_client::Client,
    revision: i64,
) -> Result<usize> {
    let options = || {
        GetOptions::new()
            .with_prefix()
            .with_serializable()
            .with_revision(revision)
    };
    let want = reference.get("snap/", Some(options())).await?;
    let got = member.get("snap/", Some(options())).await?;
    ensure!(
        kv_rows(&got) == kv_rows(&want),
        "reads at revision {revision} differ between the members"
    );
    Ok(want.kvs().len())
}

/// Key, value, mod revision and version of each KeyValue, for comparing two reads.
fn kv_rows(r: &etcd_client::GetResponse) -> Vec<(Vec<u8>, Vec<u8>, i64, i64)> {
    r.kvs()
        .iter()
        .map(|kv| {
            let (k, v) = (kv.key().to_vec(), kv.value().to_vec());
            (k, v, kv.mod_revision(), kv.version())
        })
        .collect()
}

backend_test!(lagging_member_catches_up_from_a_snapshot);
