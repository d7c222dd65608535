//! Members that were away while large values were written must rejoin, whatever the size of
//! what they missed: from the log when the leader still has it (a backlog larger than one
//! peer message), from a snapshot when it was purged (larger than a snapshot can move in one
//! short RPC), and as a brand-new member added to replace one. Each ends with the rejoined
//! member's own data hashed equal to the survivors' at the same revision.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use baton_e2e::{Backend, Cluster, backend_test};
use etcd_client::{Client, GetOptions};
use tokio::time::{Instant, sleep};

/// Writers putting large values at once (they share the leader's proposal batches).
const WRITERS: usize = 4;
/// How long a rejoining member may take to reach the survivors' revision.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(200);

/// Puts `count` values of `bytes` bytes under `prefix` through `client`, `WRITERS` at a time.
async fn put_values(client: &Client, prefix: &str, count: usize, bytes: usize) -> Result<()> {
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let mut client = client.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            for i in (writer..count).step_by(WRITERS) {
                // Distinct contents, so a value delivered to the wrong key shows in the hash.
                let value = vec![b'a' + (i % 26) as u8; bytes];
                client
                    .put(format!("{prefix}{i:05}"), value, None)
                    .await
                    .with_context(|| format!("put {prefix}{i:05}"))?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// The member's own revision (a serializable read answers from its applied state).
async fn local_revision(client: &mut Client) -> Result<i64> {
    let got = client
        .get(
            "rejoin-probe",
            Some(GetOptions::new().with_serializable().with_count_only()),
        )
        .await?;
    Ok(got.header().map(|h| h.revision()).unwrap_or_default())
}

/// Waits until `member` has applied up to `revision`, then checks its store hashes equal to
/// `reference`'s at that revision.
async fn caught_up(
    cluster: &Cluster,
    member: usize,
    reference: usize,
    revision: i64,
) -> Result<()> {
    let start = Instant::now();
    let mut last = 0;
    loop {
        // A member still installing a large snapshot may not answer yet: keep asking.
        if let Ok(mut client) = cluster.member_client(member).await
            && let Ok(rev) = local_revision(&mut client).await
        {
            last = rev;
            if rev >= revision {
                break;
            }
        }
        if start.elapsed() > CATCH_UP_TIMEOUT {
            bail!("member stayed at revision {last} of {revision} for {CATCH_UP_TIMEOUT:?}");
        }
        sleep(POLL).await;
    }
    eprintln!(
        "rejoin: member {member} reached revision {revision} in {:?}",
        start.elapsed()
    );
    let hash_at = |m: usize| async move {
        let client = cluster.member_client(m).await?;
        let hash = client.maintenance_client().hash_kv(revision).await?;
        anyhow::Ok(hash.hash())
    };
    let (want, got) = (hash_at(reference).await?, hash_at(member).await?);
    ensure!(
        want == got,
        "HashKV at {revision}: member {got:#x}, reference {want:#x}"
    );
    Ok(())
}

/// A follower down while more than one peer message's worth of large values was written
/// (openraft asks for 300 entries at a time; a follower refuses messages over 64 MiB).
async fn a_follower_catches_up_on_a_large_backlog_from_the_log(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 3).await?;
    let leader = cluster.leader().await?;
    let away = (leader + 1) % 3;
    cluster.kill(away)?;
    let client = cluster.member_client(leader).await?;
    // 56 values of 1.2 MiB: 67 MB, more than 64 MiB in 56 entries.
    put_values(&client, "backlog/", 56, 1200 * 1024).await?;
    let revision = local_revision(&mut client.clone()).await?;
    cluster.restart(away)?;
    caught_up(&cluster, away, leader, revision).await
}

/// Flags that make the leader snapshot and purge its log after a few hundred entries.
const SNAPSHOT_EVERY: &[&str] = &["--snapshot-count", "100"];

/// Writes 30 MB of 256 KiB values, then enough small puts that the log holding them is purged
/// behind a snapshot.
async fn write_past_a_purge(client: &Client) -> Result<i64> {
    put_values(client, "big/", 120, 256 * 1024).await?;
    put_values(client, "small/", 600, 16).await?;
    local_revision(&mut client.clone()).await
}

/// A follower down while 30 MB was written and purged must take the whole state as a snapshot.
async fn a_follower_catches_up_from_a_large_snapshot(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start_with_flags(backend, 3, SNAPSHOT_EVERY).await?;
    let leader = cluster.leader().await?;
    let away = (leader + 1) % 3;
    cluster.kill(away)?;
    let client = cluster.member_client(leader).await?;
    let revision = write_past_a_purge(&client).await?;
    cluster.restart(away)?;
    caught_up(&cluster, away, leader, revision).await?;
    // And the installed snapshot survives a restart of the member that installed it.
    cluster.kill(away)?;
    cluster.restart(away)?;
    caught_up(&cluster, away, leader, revision).await
}

/// Replacing a failed member: remove it, add a fresh one, which starts from nothing.
async fn a_replacement_member_catches_up_from_a_large_snapshot(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start_with_flags(backend, 3, SNAPSHOT_EVERY).await?;
    let leader = cluster.leader().await?;
    let failed = (leader + 1) % 3;
    let mut client = cluster.member_client(leader).await?;
    let revision = write_past_a_purge(&client).await?;
    cluster.kill(failed)?;
    remove_member(&mut client, cluster.member_id(failed)).await?;
    cluster.forget(failed)?;
    let addrs = cluster.next_member_addrs()?;
    add_member(&mut client, addrs.peer_url()).await?;
    let added = cluster.start_added(addrs, SNAPSHOT_EVERY)?;
    caught_up(&cluster, added, leader, revision).await
}

/// `member remove`, retried while etcd judges the cluster unhealthy ("unhealthy cluster"): it
/// refuses a removal unless the members left have been connected for a while, which a loaded
/// machine can delay.
async fn remove_member(client: &mut Client, id: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.member_remove(id).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline && e.to_string().contains("unhealthy cluster") => {
                eprintln!("rejoin: member remove not yet accepted: {e}");
                sleep(POLL).await;
            }
            Err(e) => return Err(e).context("member remove"),
        }
    }
}

/// `member add`, retried while etcd still counts the removed member's absence against the
/// cluster's health ("unhealthy cluster") just after the removal.
async fn add_member(client: &mut Client, peer_url: String) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.member_add([peer_url.clone()], None).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                eprintln!("rejoin: member add not yet accepted: {e}");
                sleep(POLL).await;
            }
            Err(e) => return Err(e).context("member add"),
        }
    }
}

backend_test!(
    a_follower_catches_up_on_a_large_backlog_from_the_log,
    a_follower_catches_up_from_a_large_snapshot,
    a_replacement_member_catches_up_from_a_large_snapshot,
);
