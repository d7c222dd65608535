//! Many clients writing at once, through the leader and through followers: every acknowledged
//! write has a revision of its own, the store holds exactly what each was told, and a watcher
//! sees one event per write in revision order. Checked on etcd 3.4 and on Baton; on Baton the
//! cluster must also have used fewer log entries than writes, i.e. it batched proposals.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use baton_e2e::inspect::rev;
use baton_e2e::{Backend, Cluster, backend_test, connect};
use etcd_client::{Compare, CompareOp, EventType, Txn, TxnOp, WatchOptions};
use tokio::time::timeout;

const PREFIX: &str = "pb/";
/// Concurrent writers, spread over every member's client endpoint.
const WRITERS: usize = 24;
/// Writes per writer; every third is a Txn rather than a put.
const WRITES_EACH: usize = 20;
const WATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes this writer's keys; returns (revision, key, value) for each acknowledged write.
async fn writer(endpoint: String, w: usize) -> Result<Vec<(i64, String, String)>> {
    let mut client = connect(&[endpoint]).await?;
    let mut acked = Vec::with_capacity(WRITES_EACH);
    for i in 0..WRITES_EACH {
        let key = format!("{PREFIX}{w:02}/{i:02}");
        let value = format!("v{w}-{i}");
        let revision = if i % 3 == 2 {
            // Creates the key only if absent: it always is, so the success branch runs.
            let txn = Txn::new()
                .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), value.as_str(), None)]);
            let resp = client.txn(txn).await.context("txn")?;
            ensure!(
                resp.succeeded(),
                "txn on a fresh key {key} failed its compare"
            );
            rev(resp.header())
        } else {
            rev(client
                .put(key.as_str(), value.as_str(), None)
                .await?
                .header())
        };
        acked.push((revision, key, value));
    }
    Ok(acked)
}

async fn concurrent_writers_get_distinct_revisions(backend: Backend) -> Result<()> {
    let cluster = Cluster::start(backend, 3).await?;
    let mut client = cluster.client().await?;
    let leader = cluster.leader().await?;
    let start_rev = rev(client.get("none", None).await?.header());
    let start_index = cluster.status(leader).await?.raft_index();
    let mut events = client
        .watch_client()
        .watch(
            PREFIX,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(start_rev + 1),
            ),
        )
        .await?;

    let endpoints = cluster.endpoints();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(endpoints[w % endpoints.len()].clone(), w)))
        .collect();
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await??);
    }
    let writes = WRITERS * WRITES_EACH;
    acked.sort();
    let revisions: Vec<i64> = acked.iter().map(|(r, _, _)| *r).collect();
    let mut distinct = revisions.clone();
    distinct.dedup();
    ensure!(distinct.len() == writes, "two writes shared a revision");
    // Only these writes changed the store, so they took every revision after the start.
    let expected: Vec<i64> = (start_rev + 1..=start_rev + writes as i64).collect();
    ensure!(
        revisions == expected,
        "revisions are not contiguous: {revisions:?}"
    );

    let stored = client
        .get(PREFIX, Some(etcd_client::GetOptions::new().with_prefix()))
        .await?;
    let stored: BTreeMap<String, (i64, String)> = stored
        .kvs()
        .iter()
        .map(|kv| {
            let key = kv.key_str().unwrap_or_default().to_string();
            let value = kv.value_str().unwrap_or_default().to_string();
            (key, (kv.mod_revision(), value))
        })
        .collect();
    ensure!(stored.len() == writes, "{} keys stored", stored.len());
    for (revision, key, value) in &acked {
        ensure!(
            stored.get(key) == Some(&(*revision, value.clone())),
            "{key}: acknowledged at {revision} with {value}, stored {:?}",
            stored.get(key)
        );
    }

    let mut seen = Vec::with_capacity(writes);
    while seen.len() < writes {
        let resp = timeout(WATCH_TIMEOUT, events.message())
            .await
            .context("watch stalled")??
            .context("watch stream ended")?;
        for event in resp.events() {
            ensure!(event.event_type() == EventType::Put, "unexpected {event:?}");
            let kv = event.kv().context("event without kv")?;
            seen.push((
                kv.mod_revision(),
                kv.key_str()?.to_string(),
                kv.value_str()?.to_string(),
            ));
        }
    }
    ensure!(
        seen == acked,
        "the watcher saw a different history than was acknowledged"
    );

    if backend == Backend::Baton {
        let entries = cluster.status(leader).await?.raft_index() - start_index;
        ensure!(
            entries < writes as u64,
            "{writes} concurrent writes used {entries} log entries: no batching"
        );
    }
    Ok(())
}

backend_test!(concurrent_writers_get_distinct_revisions);

/// Concurrent writers on one follower: puts, and puts naming a lease that does not exist.
const FOLLOWER_WRITERS: usize = 16;
const FOLLOWER_WRITES_EACH: usize = 10;

/// Writes through `endpoint`; every other write names a missing lease and must be refused
/// alone, with etcd's error, while the puts queued beside it succeed. Returns the revisions of
/// the acknowledged puts.
async fn mixed_writer(endpoint: String, w: usize) -> Result<Vec<i64>> {
    let mut client = connect(&[endpoint]).await?;
    let mut revisions = Vec::new();
    for i in 0..FOLLOWER_WRITES_EACH {
        let key = format!("{PREFIX}f{w:02}/{i:02}");
        if i % 2 == 1 {
            let options = etcd_client::PutOptions::new().with_lease(0x7fff_0000 + w as i64);
            let refused = client.put(key.as_str(), "x", Some(options)).await;
            let message = format!("{refused:?}");
            ensure!(
                message.contains("requested lease not found"),
                "put of {key} with a missing lease: {message}"
            );
        } else {
            revisions.push(rev(client.put(key.as_str(), "v", None).await?.header()));
        }
    }
    Ok(revisions)
}

async fn writes_through_a_follower_each_get_their_own_outcome(backend: Backend) -> Result<()> {
    let cluster = Cluster::start(backend, 3).await?;
    let leader = cluster.leader().await?;
    let follower = (leader + 1) % 3;
    let endpoint = cluster.endpoint(follower);
    let tasks: Vec<_> = (0..FOLLOWER_WRITERS)
        .map(|w| tokio::spawn(mixed_writer(endpoint.clone(), w)))
        .collect();
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.extend(task.await??);
    }
    let puts = FOLLOWER_WRITERS * FOLLOWER_WRITES_EACH / 2;
    revisions.sort_unstable();
    revisions.dedup();
    ensure!(
        revisions.len() == puts,
        "{} distinct revisions for {puts} puts",
        revisions.len()
    );
    let mut client = cluster.client().await?;
    let stored = client
        .get(
            format!("{PREFIX}f"),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await?;
    ensure!(
        stored.count() == puts as i64,
        "{} keys stored, {puts} acknowledged",
        stored.count()
    );
    Ok(())
}

backend_test!(writes_through_a_follower_each_get_their_own_outcome);

/// Writers sharing the leader, so their writes are batched (and on Baton answered one by one as
/// the batch applies, before it commits).
const READ_OWN_WRITERS: usize = 24;
const READ_OWN_WRITES_EACH: usize = 15;

/// Puts (or Txns) `READ_OWN_WRITES_EACH` values, each followed at once by a serializable read of
/// the same key on the same member and, every fifth time, a watch "from now": the read must
/// show the write acknowledged, and the watch must start after it.
async fn read_own_writer(endpoint: String, w: usize) -> Result<()> {
    let mut client = connect(&[endpoint]).await?;
    for i in 0..READ_OWN_WRITES_EACH {
        let key = format!("{PREFIX}own/{w:02}");
        let value = format!("v{i}");
        let revision = if i % 3 == 2 {
            let txn = Txn::new().and_then([TxnOp::put(key.as_str(), value.as_str(), None)]);
            rev(client.txn(txn).await.context("txn")?.header())
        } else {
            rev(client
                .put(key.as_str(), value.as_str(), None)
                .await?
                .header())
        };
        let read = client
            .get(
                key.as_str(),
                Some(etcd_client::GetOptions::new().with_serializable()),
            )
            .await?;
        let seen = read
            .kvs()
            .first()
            .map(|kv| (kv.mod_revision(), kv.value().to_vec()));
        ensure!(
            seen == Some((revision, value.clone().into_bytes())),
            "{key}: put {value} acknowledged at {revision}, a serializable read right after \
             on the same member saw {seen:?} (store revision {})",
            rev(read.header())
        );
        if i % 5 == 4 {
            let mut events = client.watch_client().watch(key.as_str(), None).await?;
            // The created response: the watch is registered from here on.
            let created = timeout(WATCH_TIMEOUT, events.message())
                .await
                .context("watch create stalled")??
                .context("watch stream ended")?;
            ensure!(
                created.created(),
                "expected a created response, got {created:?}"
            );
            let next = format!("{value}-after-watch");
            let after = rev(client
                .put(key.as_str(), next.as_str(), None)
                .await?
                .header());
            let first = loop {
                let resp = timeout(WATCH_TIMEOUT, events.message())
                    .await
                    .context("watch stalled")??
                    .context("watch stream ended")?;
                if let Some(kv) = resp.events().first().and_then(|e| e.kv()) {
                    break kv.mod_revision();
                }
            };
            ensure!(
                first == after,
                "{key}: a watch created after the write at {revision} first saw revision \
                 {first}, not the next write's {after}"
            );
        }
    }
    Ok(())
}

async fn a_member_reads_its_own_acknowledged_writes(backend: Backend) -> Result<()> {
    let cluster = Cluster::start(backend, 3).await?;
    let endpoint = cluster.endpoint(cluster.leader().await?);
    let tasks: Vec<_> = (0..READ_OWN_WRITERS)
        .map(|w| tokio::spawn(read_own_writer(endpoint.clone(), w)))
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

backend_test!(a_member_reads_its_own_acknowledged_writes);
