//! Crash tolerance: kill -9 the leader under write load, crash and restart the whole cluster,
//! and refuse writes without a quorum. No acknowledged write may ever be lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use baton_e2e::{Backend, Cluster, backend_test, connect_with_timeout, grpc_status};
use etcd_client::{Client, GetOptions};
use tokio::sync::Mutex;
use tokio::time::{Instant, sleep};

/// Concurrent writers during the leader kill.
const WRITERS: usize = 4;
/// A writer gives up on one request after this long and moves to the next member.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed write, so a leaderless cluster is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Acknowledged writes wanted before the kill and again after it.
const ACKS_PER_PHASE: usize = 100;
/// Upper bound on each load phase.
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a member may take to catch up after a restart.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// The client-side bound on a write to a member that has lost its quorum.
const MINORITY_WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// Slack on top of that bound for scheduling on a slow machine.
const MINORITY_WRITE_SLACK: Duration = Duration::from_secs(2);
const KEY_PREFIX: &str = "load/";

#[derive(Clone, Debug)]
struct Ack {
    key: String,
    value: String,
    sent_at: Instant,
}

type Acks = Arc<Mutex<Vec<Ack>>>;

/// One client per member, so a writer can move away from a dead member by itself.
async fn member_clients(cluster: &Cluster, timeout: Duration) -> Result<Vec<Client>> {
    let mut clients = Vec::new();
    for endpoint in cluster.endpoints() {
        clients.push(connect_with_timeout(&[endpoint], timeout).await?);
    }
    Ok(clients)
}

/// Puts unique keys until stopped; every put that returned Ok is recorded. A failed put is
/// never retried under the same key, so an unacknowledged write cannot be mistaken for one.
async fn writer(id: usize, mut clients: Vec<Client>, acks: Acks, stop: Arc<AtomicBool>) {
    let mut member = id % clients.len();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("{KEY_PREFIX}{id}/{seq:08}");
        let value = format!("w{id}-{seq}");
        seq += 1;
        let sent_at = Instant::now();
        match clients[member].put(key.clone(), value.clone(), None).await {
            Ok(_) => acks.lock().await.push(Ack {
                key,
                value,
                sent_at,
            }),
            Err(_) => {
                member = (member + 1) % clients.len();
                sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Waits until `count` writes sent at or after `since` were acknowledged.
async fn wait_for_acks(acks: &Acks, since: Instant, count: usize) -> Result<()> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        let done = acks
            .lock()
            .await
            .iter()
            .filter(|a| a.sent_at >= since)
            .count();
        if done >= count {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "only {done} of {count} writes acknowledged in {PHASE_TIMEOUT:?}"
        );
        sleep(Duration::from_millis(20)).await;
    }
}

/// Every key under the load prefix, read from one member. A serializable read answers from
/// the member's own state, so it first waits until that state reaches `min_revision`.
async fn read_member(
    cluster: &Cluster,
    member: usize,
    serializable: bool,
    min_revision: i64,
) -> Result<BTreeMap<String, String>> {
    let mut client = cluster.member_client(member).await?;
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        let mut options = GetOptions::new().with_prefix();
        if serializable {
            options = options.with_serializable();
        }
        match client.get(KEY_PREFIX, Some(options)).await {
            Ok(response) if response.header().map_or(0, |h| h.revision()) >= min_revision => {
                return response
                    .kvs()
                    .iter()
                    .map(|kv| Ok((kv.key_str()?.to_owned(), kv.value_str()?.to_owned())))
                    .collect();
            }
            Ok(_) | Err(_) if Instant::now() < deadline => sleep(Duration::from_millis(100)).await,
            Ok(response) => bail!(
                "member {member} stuck behind revision {min_revision}: {:?}",
                response.header()
            ),
            Err(e) => return Err(e).context(format!("reading from member {member}")),
        }
    }
}

fn assert_all_present(acks: &[Ack], state: &BTreeMap<String, String>, label: &str) {
    let missing: Vec<&Ack> = acks
        .iter()
        .filter(|a| state.get(&a.key) != Some(&a.value))
        .collect();
    assert!(
        missing.is_empty(),
        "{label}: {} of {} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        acks.len(),
        &missing[..missing.len().min(5)]
    );
}

async fn kill_leader_under_load_then_restart_all(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 3).await?;
    let acks: Acks = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for id in 0..WRITERS {
        let clients = member_clients(&cluster, WRITE_TIMEOUT).await?;
        writers.push(tokio::spawn(writer(
            id,
            clients,
            acks.clone(),
            stop.clone(),
        )));
    }
    let started = Instant::now();
    wait_for_acks(&acks, started, ACKS_PER_PHASE).await?;

    let old_leader = cluster.leader().await?;
    let killed_at = Instant::now();
    cluster.kill(old_leader)?;
    // The survivors elect a new leader and keep taking writes sent after the kill.
    wait_for_acks(&acks, killed_at, ACKS_PER_PHASE).await?;
    let new_leader = cluster.leader().await?;
    assert_ne!(new_leader, old_leader);
    stop.store(true, Ordering::Relaxed);
    for handle in writers {
        handle.await?;
    }
    let acks = acks.lock().await.clone();
    println!(
        "{} acknowledged writes; leader {old_leader} killed, {new_leader} took over",
        acks.len()
    );

    let survivor = cluster.running().next().context("no survivor")?;
    let state = read_member(&cluster, survivor, false, 0).await?;
    assert_all_present(
        &acks,
        &state,
        "linearizable read from a survivor after the kill",
    );

    // Crash the survivors too, then bring everyone back on the same data dirs.
    let head = {
        let mut client = cluster.member_client(new_leader).await?;
        let response = client
            .get(
                KEY_PREFIX,
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await?;
        response.header().map_or(0, |h| h.revision())
    };
    for member in cluster.running().collect::<Vec<_>>() {
        cluster.kill(member)?;
    }
    for member in 0..cluster.size() {
        cluster.restart(member)?;
    }
    cluster.wait_ready().await?;
    for member in 0..cluster.size() {
        let state = read_member(&cluster, member, true, head).await?;
        assert_all_present(
            &acks,
            &state,
            &format!("serializable read on member {member} after a full restart"),
        );
    }
    Ok(())
}

async fn lone_member_refuses_writes(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 3).await?;
    let mut client = cluster.client().await?;
    client.put("before", "1", None).await?;
    let leader = cluster.leader().await?;
    // A follower survives, so the refused write can never have entered any leader's log.
    let survivor = (0..cluster.size())
        .find(|&m| m != leader)
        .context("no follower")?;
    for member in 0..cluster.size() {
        if member != survivor {
            cluster.kill(member)?;
        }
    }
    let mut lone =
        connect_with_timeout(&[cluster.endpoint(survivor)], MINORITY_WRITE_TIMEOUT).await?;
    let sent = Instant::now();
    let result = lone.put("orphan", "1", None).await;
    let elapsed = sent.elapsed();
    println!("write to the lone member answered after {elapsed:?}: {result:?}");
    let error = match result {
        Ok(response) => bail!("a write without quorum was acknowledged: {response:?}"),
        Err(error) => error,
    };
    assert!(
        elapsed <= MINORITY_WRITE_TIMEOUT + MINORITY_WRITE_SLACK,
        "took {elapsed:?}"
    );
    // Either the client's deadline fired or the server said it cannot make progress.
    if let Some(status) = grpc_status(&error) {
        let code = status.code();
        let acceptable = [
            tonic::Code::Unavailable,
            tonic::Code::DeadlineExceeded,
            tonic::Code::Cancelled,
        ];
        assert!(acceptable.contains(&code), "unexpected status {status:?}");
    }

    for member in 0..cluster.size() {
        if member != survivor {
            cluster.restart(member)?;
        }
    }
    cluster.wait_ready().await?;
    let mut client = cluster.client().await?;
    assert_eq!(client.get("before", None).await?.count(), 1);
    assert_eq!(
        client.get("orphan", None).await?.count(),
        0,
        "an unacknowledged write appeared"
    );
    Ok(())
}

backend_test!(
    kill_leader_under_load_then_restart_all,
    lone_member_refuses_writes
);
