//! clientv3's `WithRequireLeader` (gRPC metadata `hasleader: true`) on a member cut off from
//! its leader: a watch that asked for it ends with `etcdserver: no leader` within a few
//! election timeouts, new calls that ask for it are refused at once, and a watch that did not
//! ask stays open and delivers again once the cluster is back.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use baton_e2e::inspect::rev;
use baton_e2e::{Backend, CONNECT_TIMEOUT, Cluster, REQUEST_TIMEOUT, backend_test, grpc_status};
use etcd_client::{Client, ConnectOptions, GetOptions, WatchOptions, WatchStream};
use tokio::time::{Instant, timeout};
use tonic::Code;

const NO_LEADER: &str = "etcdserver: no leader";
/// Both servers wait about 3 election timeouts (1 s each by default) after losing the leader,
/// which itself takes one or two; the rest is room for a busy machine.
const STREAM_END_MAX: Duration = Duration::from_secs(15);
/// How long a watch that did not ask for a leader must stay quiet and open.
const SILENCE: Duration = Duration::from_secs(2);
/// A refusal for want of a leader comes without waiting for one.
const REFUSAL_MAX: Duration = Duration::from_secs(2);
const KEY: &str = "require-leader";

backend_test!(
    watch_requiring_a_leader_ends_when_the_member_has_none,
    watch_requiring_a_leader_ends_on_a_leader_cut_off_from_its_followers,
);

/// A follower whose leader and other follower are gone.
async fn watch_requiring_a_leader_ends_when_the_member_has_none(backend: Backend) -> Result<()> {
    member_left_alone(backend, false).await
}

/// The leader itself, once both followers are gone: etcd's leader steps down (CheckQuorum);
/// openraft's stays leader without a quorum, which must not count as having one.
async fn watch_requiring_a_leader_ends_on_a_leader_cut_off_from_its_followers(
    backend: Backend,
) -> Result<()> {
    member_left_alone(backend, true).await
}

/// Kills every member but one (the leader, or a follower) and checks what `hasleader` callers
/// and plain callers get from it, then that a plain watch survives until the cluster is back.
async fn member_left_alone(backend: Backend, keep_leader: bool) -> Result<()> {
    let mut cluster = Cluster::start(backend, 3).await?;
    let leader = cluster.leader().await?;
    let member = if keep_leader {
        leader
    } else {
        (0..cluster.size())
            .find(|&m| m != leader)
            .context("no follower")?
    };
    let endpoint = cluster.endpoint(member);
    let mut requiring = connect_requiring_leader(&endpoint).await?;
    let mut plain = cluster.member_client(member).await?;
    let put = requiring
        .put(KEY, "v1", None)
        .await
        .context("a write that requires a leader, with one")?;
    // From after that write, which this follower may not have applied yet.
    let after_put = WatchOptions::new().with_start_revision(rev(put.header()) + 1);
    let mut required_events = requiring.watch(KEY, Some(after_put.clone())).await?;
    let mut plain_events = plain.watch(KEY, Some(after_put)).await?;
    expect_created(&mut required_events).await?;
    expect_created(&mut plain_events).await?;

    let others: Vec<usize> = (0..cluster.size()).filter(|&m| m != member).collect();
    for &other in &others {
        cluster.kill(other)?;
    }
    let killed_at = Instant::now();
    let ended = timeout(STREAM_END_MAX, required_events.message())
        .await
        .with_context(|| {
            format!("the watch requiring a leader still runs after {STREAM_END_MAX:?}")
        })?;
    expect_no_leader(ended, "the watch requiring a leader")?;
    eprintln!("watch ended {:?} after the kill", killed_at.elapsed());

    let asked_at = Instant::now();
    let serializable = GetOptions::new().with_serializable();
    let refused = requiring.get(KEY, Some(serializable.clone())).await;
    expect_no_leader(refused, "a read requiring a leader")?;
    let reopened = match requiring.watch(KEY, None).await {
        Ok(mut events) => events.message().await.map(|_| ()),
        Err(e) => Err(e),
    };
    expect_no_leader(reopened, "a new watch requiring a leader")?;
    ensure!(
        asked_at.elapsed() <= REFUSAL_MAX,
        "refusing took {:?}",
        asked_at.elapsed()
    );
    let read = plain.get(KEY, Some(serializable)).await?;
    ensure!(
        read.count() == 1,
        "a read without the requirement is still served"
    );
    if let Ok(got) = timeout(SILENCE, plain_events.message()).await {
        bail!("the watch without the requirement was disturbed: {got:?}");
    }

    for &other in &others {
        cluster.restart(other)?;
    }
    cluster.wait_ready().await?;
    cluster.client().await?.put(KEY, "v2", None).await?;
    let delivered = timeout(REQUEST_TIMEOUT, plain_events.message())
        .await
        .context("the kept watch delivers nothing after the cluster is back")??
        .context("the kept watch ended")?;
    let values: Vec<&[u8]> = delivered
        .events()
        .iter()
        .filter_map(|e| e.kv().map(|kv| kv.value()))
        .collect();
    ensure!(values == [b"v2"], "the kept watch delivered {values:?}");
    Ok(())
}

async fn connect_requiring_leader(endpoint: &str) -> Result<Client> {
    let options = ConnectOptions::new()
        .with_require_leader(true)
        .with_timeout(REQUEST_TIMEOUT)
        .with_connect_timeout(CONNECT_TIMEOUT);
    Client::connect([endpoint], Some(options))
        .await
        .with_context(|| format!("connecting to {endpoint}"))
}

async fn expect_created(events: &mut WatchStream) -> Result<()> {
    let first = timeout(REQUEST_TIMEOUT, events.message())
        .await
        .context("no created response")??
        .context("the watch ended at once")?;
    ensure!(
        first.created(),
        "the first response is not `created`: {first:?}"
    );
    Ok(())
}

fn expect_no_leader<T: std::fmt::Debug>(
    outcome: Result<T, etcd_client::Error>,
    what: &str,
) -> Result<()> {
    match outcome {
        Err(e) => match grpc_status(&e) {
            Some(s) if (s.code(), s.message()) == (Code::Unavailable, NO_LEADER) => Ok(()),
            _ => bail!("{what} failed otherwise than with {NO_LEADER:?}: {e:?}"),
        },
        Ok(value) => bail!("{what} was not refused for want of a leader: {value:?}"),
    }
}
