//! clientv3's `WithRequireLeader` (gRPC metadata `hasleader: true`) on a member cut off from
//! its leader: a watch that asked for it ends with `etcdserver: no leader` within a few
//! election timeouts, new calls that ask for it are refused at once, and a watch that did not
//! ask stays open and delivers again once the cluster is back.
//!
//! Writes without the metadata on such a member fail too, but not as fast on both servers:
//! etcd 3.4 holds each for its whole request timeout (5 s plus two election timeouts), Baton
//! gives up within one election timeout of losing its leader, then refuses at once.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use baton_e2e::inspect::rev;
use baton_e2e::{
    Backend, CONNECT_TIMEOUT, Cluster, REQUEST_TIMEOUT, backend_test, grpc_status, run_test,
};
use baton_proto::baton::v1::DescribeRequest;
use etcd_client::{Client, ConnectOptions, GetOptions, Txn, TxnOp, WatchOptions, WatchStream};
use tokio::time::{Instant, timeout};
use tonic::Code;

use crate::modules::{invoke, modules_client, wait_deployed};

const NO_LEADER: &str = "etcdserver: no leader";
/// Both servers wait about 3 election timeouts (1 s each by default) after losing the leader,
/// which itself takes one or two; the rest is room for a busy machine.
const STREAM_END_MAX: Duration = Duration::from_secs(15);
/// How long a watch that did not ask for a leader must stay quiet and open.
const SILENCE: Duration = Duration::from_secs(2);
/// A refusal for want of a leader comes without waiting for one.
const REFUSAL_MAX: Duration = Duration::from_secs(2);
const KEY: &str = "require-leader";

/// How long Baton may take to fail a write on a member that has just found itself without a
/// leader: one election timeout (2 s at most by default) of waiting for one, plus room for a
/// busy machine; the request timeout it used to wait instead is 5 s.
const BATON_WRITE_REFUSAL_MAX: Duration = Duration::from_secs(4);
/// etcd 3.4's request timeout: 5 s plus two election timeouts of 1 s.
const ETCD_WRITE_TIMEOUT: Duration = Duration::from_secs(7);
/// Room around etcd's timeout for a busy machine.
const ETCD_WRITE_SLACK: Duration = Duration::from_secs(3);
/// How long a member may take to notice it has no leader once its peers are killed.
const LEADER_LOSS_MAX: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);

backend_test!(
    watch_requiring_a_leader_ends_when_the_member_has_none,
    watch_requiring_a_leader_ends_on_a_leader_cut_off_from_its_followers,
    writes_fail_on_a_leader_cut_off_from_its_followers,
    writes_fail_on_a_follower_left_alone,
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

/// The leader, once both followers are gone: etcd's steps down, Baton's stops counting as one.
async fn writes_fail_on_a_leader_cut_off_from_its_followers(backend: Backend) -> Result<()> {
    writes_left_alone(backend, true).await
}

/// A follower whose leader and other follower are gone.
async fn writes_fail_on_a_follower_left_alone(backend: Backend) -> Result<()> {
    writes_left_alone(backend, false).await
}

/// Kills every member but one, waits until that member says it has no leader (a `hasleader`
/// read is refused), then times a Put, a Txn and a LeaseGrant sent without the metadata, at
/// once and then again.
async fn writes_left_alone(backend: Backend, keep_leader: bool) -> Result<()> {
    let mut cluster = Cluster::start(backend, 3).await?;
    let leader = cluster.leader().await?;
    let member = if keep_leader {
        leader
    } else {
        (0..cluster.size())
            .find(|&m| m != leader)
            .context("no follower")?
    };
    let mut requiring = connect_requiring_leader(&cluster.endpoint(member)).await?;
    let plain = cluster.member_client(member).await?;
    plain.clone().put(KEY, "v1", None).await?;
    for other in (0..cluster.size()).filter(|&m| m != member) {
        cluster.kill(other)?;
    }
    let killed_at = Instant::now();
    let serializable = GetOptions::new().with_serializable();
    while requiring.get(KEY, Some(serializable.clone())).await.is_ok() {
        ensure!(
            killed_at.elapsed() < LEADER_LOSS_MAX,
            "still has a leader {LEADER_LOSS_MAX:?} after its peers were killed"
        );
        tokio::time::sleep(POLL).await;
    }
    eprintln!("no leader {:?} after the kill", killed_at.elapsed());

    let first = timed_writes(&plain).await;
    let again = timed_writes(&plain).await;
    for (round, outcomes) in [("first", first), ("again", again)] {
        for (what, took, outcome) in outcomes {
            eprintln!("{round}: {what} failed after {took:?}: {outcome:?}");
            let status = match &outcome {
                Ok(()) => bail!("{round}: {what} succeeded without a leader"),
                Err(e) => grpc_status(e).with_context(|| format!("{round}: {what}: {e:?}"))?,
            };
            let got = (status.code(), status.message());
            match backend {
                Backend::Baton => {
                    ensure!(
                        got == (Code::Unavailable, NO_LEADER),
                        "{round}: {what} failed with {got:?}"
                    );
                    // The second round comes after the member has gone leaderless long enough.
                    let bound = if round == "first" {
                        BATON_WRITE_REFUSAL_MAX
                    } else {
                        REFUSAL_MAX
                    };
                    ensure!(
                        took <= bound,
                        "{round}: {what} took {took:?}, over {bound:?}"
                    );
                }
                Backend::Etcd => {
                    // A proposal the raft node has taken times out as such; one it holds for
                    // want of a leader ends with the request context, unmapped.
                    ensure!(
                        got == (Code::Unavailable, "etcdserver: request timed out")
                            || got == (Code::Unknown, "context deadline exceeded"),
                        "{round}: {what} failed with {got:?}"
                    );
                    let early = ETCD_WRITE_TIMEOUT - ETCD_WRITE_SLACK;
                    let late = ETCD_WRITE_TIMEOUT + ETCD_WRITE_SLACK;
                    ensure!(
                        (early..=late).contains(&took),
                        "{round}: {what} took {took:?}, not about etcd's {ETCD_WRITE_TIMEOUT:?}"
                    );
                }
            }
        }
    }
    Ok(())
}

type Timed = (&'static str, Duration, Result<(), etcd_client::Error>);

/// A Put, a Txn and a LeaseGrant sent together, each with how long it took to fail.
async fn timed_writes(client: &Client) -> Vec<Timed> {
    let (mut a, mut b, mut c) = (client.clone(), client.clone(), client.clone());
    let txn = Txn::new().and_then([TxnOp::put(KEY, "v3", None)]);
    let (put, txn, grant) = tokio::join!(
        timed("put", a.put(KEY, "v2", None)),
        timed("txn", b.txn(txn)),
        timed("lease grant", c.lease_grant(60, None)),
    );
    vec![put, txn, grant]
}

async fn timed<T>(
    what: &'static str,
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Timed {
    let started = Instant::now();
    let outcome = call.await.map(|_| ());
    (what, started.elapsed(), outcome)
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

/// Baton's Modules service behind the same gate as the etcd services (Baton only): a module
/// call with `hasleader` is served while there is a leader and refused at once on a member left
/// without one, a read (Describe) as much as a write (Invoke).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_calls_requiring_a_leader_are_refused_without_one() {
    run_test(Backend::Baton, async {
        let mut cluster = Cluster::start(Backend::Baton, 3).await?;
        let member = cluster.leader().await?;
        let mut modules = modules_client(cluster.endpoint(member)).await?;
        wait_deployed(&mut modules, "counter").await?;
        let add = || requiring_leader(invoke("counter", "add", r#"{"keys":["m"],"by":1}"#, 0));
        modules
            .invoke(add())
            .await
            .context("a module call requiring a leader, with one")?;

        for other in (0..cluster.size()).filter(|&m| m != member) {
            cluster.kill(other)?;
        }
        let mut requiring = connect_requiring_leader(&cluster.endpoint(member)).await?;
        let killed_at = Instant::now();
        let serializable = GetOptions::new().with_serializable();
        while requiring.get(KEY, Some(serializable.clone())).await.is_ok() {
            ensure!(
                killed_at.elapsed() < LEADER_LOSS_MAX,
                "the leader never lost its quorum"
            );
            tokio::time::sleep(POLL).await;
        }
        let asked_at = Instant::now();
        let invoked = modules.invoke(add()).await;
        let describe = DescribeRequest {
            name: "counter".to_string(),
        };
        let described = modules.describe(requiring_leader(describe)).await;
        for (what, outcome) in [
            ("invoke", invoked.map(|_| ())),
            ("describe", described.map(|_| ())),
        ] {
            match outcome {
                Err(s) if (s.code(), s.message()) == (Code::Unavailable, NO_LEADER) => {}
                other => bail!("{what} requiring a leader, without one: {other:?}"),
            }
        }
        ensure!(
            asked_at.elapsed() <= REFUSAL_MAX,
            "refusing took {:?}",
            asked_at.elapsed()
        );
        Ok(())
    })
    .await;
}

/// A request carrying clientv3's `WithRequireLeader` metadata.
fn requiring_leader<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "hasleader",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    request
}
