//! Clients connected only to a follower: what they write through it, they read back from it
//! (read-your-writes and monotonic header revisions, as etcd's follower gives by waiting for its
//! own apply), large replies to forwarded writes reach them, and a revision the cluster has not
//! reached is still refused with etcd's error.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use baton_e2e::inspect::rev;
use baton_e2e::{Backend, Cluster, assert_grpc_error, backend_test, connect, run_test};
use etcd_client::{GetOptions, PutOptions};

/// Clients writing and reading through the one follower at once.
const CLIENTS: usize = 8;
/// Put-then-get rounds per client.
const ROUNDS: usize = 200;
/// Keys and value size of the large-reply test: 8 MB of prev_kvs, twice tonic's 4 MiB default.
const BIG_KEYS: usize = 40;
const BIG_VALUE_BYTES: usize = 200 * 1024;

/// A member that is not the leader.
async fn a_follower(cluster: &Cluster) -> Result<usize> {
    let leader = cluster.leader().await?;
    Ok((leader + 1) % cluster.size())
}

/// What one client saw: reads that missed its own write, and header revisions lower than one it
/// saw before.
#[derive(Default)]
struct Seen {
    misses: Vec<String>,
    regressions: Vec<String>,
}

async fn put_then_read(endpoint: String, client_no: usize) -> Result<Seen> {
    let mut client = connect(&[endpoint]).await?;
    let key = format!("ryw/{client_no}");
    let mut seen = Seen::default();
    let mut last_rev = 0;
    let mut check_rev = |what: &str, revision: i64, seen: &mut Seen| {
        if revision < last_rev {
            seen.regressions.push(format!(
                "{what}: header revision {revision} after {last_rev}"
            ));
        }
        last_rev = last_rev.max(revision);
    };
    for n in 0..ROUNDS {
        let value = format!("v{n}");
        let put = client.put(key.as_str(), value.as_str(), None).await?;
        let put_rev = rev(put.header());
        check_rev("put", put_rev, &mut seen);
        let get = client
            .get(key.as_str(), Some(GetOptions::new().with_serializable()))
            .await?;
        check_rev("get", rev(get.header()), &mut seen);
        let got = get.kvs().first().map(|kv| kv.value().to_vec());
        if got.as_deref() != Some(value.as_bytes()) {
            seen.misses.push(format!(
                "round {n}: put {value} at revision {put_rev}, read {:?}",
                got.map(|v| String::from_utf8_lossy(&v).into_owned())
            ));
        }
    }
    Ok(seen)
}

async fn follower_reads_its_own_writes(backend: Backend) -> Result<()> {
    let cluster = Cluster::start(backend, 3).await?;
    let endpoint = cluster.endpoint(a_follower(&cluster).await?);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(put_then_read(endpoint.clone(), c)))
        .collect();
    let (mut misses, mut regressions) = (Vec::new(), Vec::new());
    for task in tasks {
        let seen = task.await??;
        misses.extend(seen.misses);
        regressions.extend(seen.regressions);
    }
    ensure!(
        misses.is_empty(),
        "{} of {} serializable reads on the follower missed the write just acknowledged: {:?}",
        misses.len(),
        CLIENTS * ROUNDS,
        &misses[..misses.len().min(5)]
    );
    ensure!(
        regressions.is_empty(),
        "header revisions went backwards {} times: {:?}",
        regressions.len(),
        &regressions[..regressions.len().min(5)]
    );
    Ok(())
}

async fn follower_returns_large_delete_replies(backend: Backend) -> Result<()> {
    let cluster = Cluster::start(backend, 3).await?;
    let follower = cluster.endpoint(a_follower(&cluster).await?);
    let mut client = connect(std::slice::from_ref(&follower)).await?;
    for i in 0..BIG_KEYS {
        let value = vec![b'a' + (i % 26) as u8; BIG_VALUE_BYTES];
        client
            .put(format!("big/{i:02}"), value, Some(PutOptions::new()))
            .await
            .with_context(|| format!("put big/{i:02}"))?;
    }
    // etcdctl, because it accepts replies of any size (the Rust client stops at 4 MiB).
    let out = cluster
        .etcdctl_at(
            std::slice::from_ref(&follower),
            &["del", "--prefix", "--prev-kv", "-w", "json", "big/"],
            None,
        )
        .await?;
    ensure!(
        out.status.success(),
        "del --prefix --prev-kv through the follower failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).context("etcdctl json")?;
    let prev_kvs = reply["prev_kvs"].as_array().context("no prev_kvs")?;
    ensure!(
        reply["deleted"].as_i64() == Some(BIG_KEYS as i64) && prev_kvs.len() == BIG_KEYS,
        "deleted {:?} with {} prev kvs, expected {BIG_KEYS}",
        reply["deleted"],
        prev_kvs.len()
    );
    let left = client
        .get(
            "big/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await?;
    ensure!(left.count() == 0, "{} big/ keys left", left.count());
    Ok(())
}

/// A serializable read at a revision nobody has written yet fails at once with etcd's error,
/// on a follower as on the leader, even if the follower first checks with the leader.
async fn follower_refuses_a_future_revision(backend: Backend) -> Result<()> {
    let cluster = Cluster::start(backend, 3).await?;
    let follower = cluster.endpoint(a_follower(&cluster).await?);
    let mut client = connect(&[follower]).await?;
    let current = rev(client.put("fr", "v", None).await?.header());
    let started = tokio::time::Instant::now();
    let far = client
        .get(
            "fr",
            Some(
                GetOptions::new()
                    .with_serializable()
                    .with_revision(current + 1_000),
            ),
        )
        .await;
    assert_grpc_error(
        far,
        tonic::Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    ensure!(
        started.elapsed() < Duration::from_secs(3),
        "refusing a future revision took {:?}",
        started.elapsed()
    );
    Ok(())
}

/// A revision the leader has just acknowledged may not be applied on a follower yet; a
/// serializable read of it there waits for it instead of calling it a future revision. Baton
/// only: etcd 3.4 refuses such reads now and then (its `ExampleSTM_apply` flakes on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_waits_for_a_revision_committed_elsewhere() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let leader = cluster.leader().await?;
        let mut writer = connect(&[cluster.endpoint(leader)]).await?;
        let follower = (leader + 1) % cluster.size();
        let mut reader = connect(&[cluster.endpoint(follower)]).await?;
        for n in 0..ROUNDS {
            let value = format!("v{n}");
            let written = rev(writer
                .put("elsewhere", value.as_str(), None)
                .await?
                .header());
            let options = GetOptions::new().with_serializable().with_revision(written);
            let read = reader
                .get("elsewhere", Some(options))
                .await
                .with_context(|| format!("round {n}: reading revision {written}"))?;
            let got = read.kvs().first().map(|kv| kv.value().to_vec());
            ensure!(
                got.as_deref() == Some(value.as_bytes()),
                "round {n}: read {got:?} at revision {written}"
            );
        }
        Ok(())
    })
    .await;
}

backend_test!(
    follower_reads_its_own_writes,
    follower_returns_large_delete_replies,
    follower_refuses_a_future_revision,
);
