//! Lease service semantics, asserted exactly as etcd 3.4 behaves, including expiry and leader
//! changes in a 3-member cluster.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use baton_e2e::inspect::rev;
use baton_e2e::{Backend, Cluster, assert_grpc_error, backend_test};
use etcd_client::{
    Client, EventType, GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions,
    WatchOptions, WatchStream,
};
use tokio::time::{Instant, sleep};
use tonic::Code;

const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
const LEASE_EXISTS: &str = "etcdserver: lease already exists";
const TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";
/// etcd's `MaxLeaseTTL`, in seconds.
const TTL_S_MAX: i64 = 9_000_000_000;
/// etcd's minimum TTL with the default 1000 ms election timeout: ceil(1.5 s).
const TTL_S_MIN: i64 = 2;
/// How often the tests look whether a lease's keys are gone.
const POLL: Duration = Duration::from_millis(100);
/// Room for scheduling on a busy machine when asserting an upper bound on expiry.
const EXPIRY_SLACK: Duration = Duration::from_secs(3);
/// Longest a leader election (detection included) may take in these tests.
const ELECTION_MAX: Duration = Duration::from_secs(5);
/// How long a watch event that must come may take.
const WATCH_TIMEOUT: Duration = Duration::from_secs(20);
/// A deadline may be met this much before the client's own clock says the TTL passed: the
/// server starts the TTL when it applies the grant, before the client sees the response.
const CLOCK_SKEW: Duration = Duration::from_millis(200);

async fn single(backend: Backend) -> Result<(Cluster, Client)> {
    let cluster = Cluster::start(backend, 1).await?;
    let client = cluster.client().await?;
    Ok((cluster, client))
}

fn leased(lease: i64) -> Option<PutOptions> {
    Some(PutOptions::new().with_lease(lease))
}

fn with_keys() -> Option<LeaseTimeToLiveOptions> {
    Some(LeaseTimeToLiveOptions::new().with_keys())
}

async fn lease_ids(c: &mut Client) -> Result<Vec<i64>> {
    let mut ids: Vec<i64> = c.leases().await?.leases().iter().map(|l| l.id()).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Polls until `key` is gone; returns when that was seen, or fails after `limit`.
async fn wait_until_gone(c: &mut Client, key: &str, limit: Duration) -> Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        if c.get(key, None).await?.count() == 0 {
            return Ok(Instant::now());
        }
        if Instant::now() >= deadline {
            bail!("{key} still exists after {limit:?}");
        }
        sleep(POLL).await;
    }
}

async fn lease_grant_errors_and_minimum_ttl(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    let chosen = c.lease_grant(60, None).await?;
    assert!(chosen.id() > 0, "a chosen id is positive: {}", chosen.id());
    assert_eq!((chosen.ttl(), chosen.error()), (60, ""));
    assert_eq!(rev(chosen.header()), 1, "a grant writes no key");

    let named = c
        .lease_grant(30, Some(LeaseGrantOptions::new().with_id(0x1234)))
        .await?;
    assert_eq!((named.id(), named.ttl()), (0x1234, 30));
    assert_grpc_error(
        c.lease_grant(90, Some(LeaseGrantOptions::new().with_id(0x1234)))
            .await,
        Code::FailedPrecondition,
        LEASE_EXISTS,
    );
    assert_grpc_error(
        c.lease_grant(TTL_S_MAX + 1, None).await,
        Code::OutOfRange,
        TTL_TOO_LARGE,
    );
    let longest = c.lease_grant(TTL_S_MAX, None).await?;
    assert_eq!(longest.ttl(), TTL_S_MAX);
    for asked in [1, 0, -5] {
        let short = c.lease_grant(asked, None).await?;
        assert_eq!(short.ttl(), TTL_S_MIN, "asked for {asked} s");
        let ttl = c.lease_time_to_live(short.id(), None).await?;
        assert_eq!(ttl.granted_ttl(), TTL_S_MIN);
    }
    Ok(())
}

async fn lease_keepalive_timetolive_revoke_and_list(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    let id = c.lease_grant(60, None).await?.id();
    let other = c.lease_grant(60, None).await?.id();
    c.put("b", "1", leased(id)).await?;
    c.put("a", "2", leased(id)).await?;
    c.put("plain", "3", None).await?;
    c.put("c", "4", leased(other)).await?;

    let ttl = c.lease_time_to_live(id, with_keys()).await?;
    assert_eq!((ttl.id(), ttl.granted_ttl()), (id, 60));
    assert!((55..=60).contains(&ttl.ttl()), "remaining {}", ttl.ttl());
    let mut keys = ttl.keys().to_vec();
    keys.sort();
    assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()]);
    let without = c.lease_time_to_live(id, None).await?;
    assert!(without.keys().is_empty(), "keys only when asked");

    let (mut keeper, mut responses) = c.lease_keep_alive(id).await?;
    keeper.keep_alive().await?;
    let renewed = responses
        .message()
        .await?
        .context("keepalive stream ended")?;
    assert_eq!((renewed.id(), renewed.ttl()), (id, 60));
    assert!(rev(renewed.header()) >= 5);

    let mut all = vec![id, other];
    all.sort_unstable();
    assert_eq!(lease_ids(&mut c).await?, all);

    let before = rev(c.get("plain", None).await?.header());
    let revoked = c.lease_revoke(id).await?;
    assert_eq!(
        rev(revoked.header()),
        before + 1,
        "both keys in one revision"
    );
    let range = GetOptions::new().with_all_keys();
    let left = c.get("", Some(range.clone())).await?;
    let left_keys: Vec<_> = left.kvs().iter().map(|kv| kv.key().to_vec()).collect();
    assert_eq!(left_keys, [b"c".to_vec(), b"plain".to_vec()]);
    let at_before = c.get("", Some(range.with_revision(before))).await?;
    assert_eq!(at_before.count(), 4, "history still holds the revoked keys");

    assert_grpc_error(c.lease_revoke(id).await, Code::NotFound, LEASE_NOT_FOUND);
    assert_grpc_error(
        c.put("a", "again", leased(id)).await,
        Code::NotFound,
        LEASE_NOT_FOUND,
    );
    let gone = c.lease_time_to_live(id, with_keys()).await?;
    assert_eq!((gone.id(), gone.ttl(), gone.granted_ttl()), (id, -1, 0));
    assert!(gone.keys().is_empty());
    keeper.keep_alive().await?;
    let unknown = responses
        .message()
        .await?
        .context("keepalive stream ended")?;
    assert_eq!(
        (unknown.id(), unknown.ttl()),
        (id, 0),
        "unknown lease: TTL 0"
    );
    assert_eq!(lease_ids(&mut c).await?, [other]);

    // Revoking a lease without keys writes nothing.
    let empty = c.lease_grant(60, None).await?.id();
    let rev_now = rev(c.get("plain", None).await?.header());
    assert_eq!(rev(c.lease_revoke(empty).await?.header()), rev_now);
    Ok(())
}

async fn puts_attach_and_detach_leased_keys(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    let first = c.lease_grant(60, None).await?.id();
    let second = c.lease_grant(60, None).await?.id();
    c.put("kept", "v1", leased(first)).await?;
    c.put("kept", "v2", Some(PutOptions::new().with_ignore_lease()))
        .await?;
    assert_eq!(c.get("kept", None).await?.kvs()[0].lease(), first);
    c.put("moved", "v", leased(first)).await?;
    c.put("moved", "v", leased(second)).await?;
    c.put("dropped", "v", leased(first)).await?;
    c.put("dropped", "v", None).await?;
    c.put("deleted", "v", leased(first)).await?;
    c.delete("deleted", None).await?;
    c.put("deleted", "back", None).await?;

    let ttl = c.lease_time_to_live(first, with_keys()).await?;
    assert_eq!(ttl.keys(), [b"kept".to_vec()]);
    c.lease_revoke(first).await?;
    assert_eq!(
        c.get("kept", None).await?.count(),
        0,
        "ignore_lease kept it"
    );
    for survivor in ["moved", "dropped", "deleted"] {
        assert_eq!(c.get(survivor, None).await?.count(), 1, "{survivor}");
    }
    c.lease_revoke(second).await?;
    assert_eq!(c.get("moved", None).await?.count(), 0);
    Ok(())
}

async fn leased_keys_expire_together(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    let ttl = Duration::from_secs(3);
    let grant = c.lease_grant(3, None).await?;
    let granted_at = Instant::now();
    let id = grant.id();
    for key in ["e/1", "e/2", "e/3"] {
        c.put(key, "v", leased(id)).await?;
    }
    c.put("e/plain", "v", None).await?;
    let before = rev(c.get("e/", None).await?.header());

    let gone_at = wait_until_gone(&mut c, "e/1", ttl + EXPIRY_SLACK).await?;
    let lived = gone_at - granted_at;
    ensure!(lived + CLOCK_SKEW >= ttl, "expired early, after {lived:?}");
    let after = c.get("e/", Some(GetOptions::new().with_prefix())).await?;
    assert_eq!(after.count(), 1, "only the unleased key is left");
    assert_eq!(rev(after.header()), before + 1, "every key at one revision");
    let just_before = GetOptions::new().with_prefix().with_revision(before);
    assert_eq!(c.get("e/", Some(just_before)).await?.count(), 4);
    assert_eq!(c.lease_time_to_live(id, None).await?.ttl(), -1);
    assert!(lease_ids(&mut c).await?.is_empty());
    Ok(())
}

async fn leases_and_attachments_survive_a_restart(backend: Backend) -> Result<()> {
    let (mut cluster, mut c) = single(backend).await?;
    let id = c.lease_grant(60, None).await?.id();
    c.put("durable", "v", leased(id)).await?;
    cluster.kill(0)?;
    cluster.restart(0)?;
    cluster.wait_ready().await?;
    let mut c = cluster.client().await?;
    let ttl = c.lease_time_to_live(id, with_keys()).await?;
    assert_eq!(
        (ttl.granted_ttl(), ttl.keys()),
        (60, [b"durable".to_vec()].as_slice())
    );
    assert!(ttl.ttl() > 0, "{ttl:?}");
    let revoked = c.lease_revoke(id).await?;
    assert_eq!(rev(revoked.header()), 3, "the key went with its lease");
    assert_eq!(c.get("durable", None).await?.count(), 0);
    Ok(())
}

/// (deleted?, key, mod_revision, lease of the previous value) of the next `n` events.
async fn watched(stream: &mut WatchStream, n: usize) -> Result<Vec<(bool, String, i64, i64)>> {
    let mut got = Vec::new();
    while got.len() < n {
        let response = tokio::time::timeout(WATCH_TIMEOUT, stream.message())
            .await
            .context("no watch event in time")??
            .context("the watch stream ended")?;
        for e in response.events() {
            let kv = e.kv().context("an event without a kv")?;
            got.push((
                e.event_type() == EventType::Delete,
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.mod_revision(),
                e.prev_kv().map_or(0, |p| p.lease()),
            ));
        }
    }
    Ok(got)
}

async fn lease_revokes_and_expiries_reach_watchers_as_deletes(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    let mut stream = c
        .watch_client()
        .watch(
            "w/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await?;
    let created = stream.message().await?.context("no created response")?;
    ensure!(
        created.created(),
        "expected the created response: {created:?}"
    );
    let revoked = c.lease_grant(60, None).await?.id();
    let expiring = c.lease_grant(TTL_S_MIN, None).await?.id();
    for (key, lease) in [
        ("w/b", revoked),
        ("w/a", revoked),
        ("w/d", expiring),
        ("w/c", expiring),
    ] {
        c.put(key, "v", leased(lease)).await?;
    }
    assert_eq!(watched(&mut stream, 4).await?.len(), 4, "the puts");
    let revoke_rev = rev(c.lease_revoke(revoked).await?.header());
    assert_eq!(revoke_rev, 6);
    let deletes = watched(&mut stream, 4).await?;
    let d = |key: &str, rev, lease| (true, key.to_owned(), rev, lease);
    assert_eq!(
        deletes,
        [
            d("w/a", 6, revoked),
            d("w/b", 6, revoked),
            d("w/c", 7, expiring),
            d("w/d", 7, expiring),
        ]
    );
    Ok(())
}

/// Renews `id` through `client` every `every` until `until`, reconnecting a broken stream. Fails
/// if the server ever says the lease is gone.
pub(crate) async fn keep_alive_until(
    client: &mut Client,
    id: i64,
    every: Duration,
    until: Instant,
) -> Result<u32> {
    let mut renewals = 0;
    while Instant::now() < until {
        let (mut keeper, mut responses) = match client.lease_keep_alive(id).await {
            Ok(stream) => stream,
            // The client's word for a first response with TTL 0.
            Err(etcd_client::Error::LeaseKeepAliveError(e)) => bail!("lease {id:x} lost: {e}"),
            Err(e) => {
                eprintln!("keepalive stream for {id:x} failed to open: {e}; retrying");
                sleep(POLL).await;
                continue;
            }
        };
        renewals += 1;
        while Instant::now() < until {
            sleep(every).await;
            if keeper.keep_alive().await.is_err() {
                break;
            }
            match responses.message().await {
                Ok(Some(resp)) => {
                    ensure!(resp.ttl() > 0, "lease {id:x} lost: {resp:?}");
                    renewals += 1;
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
    Ok(renewals)
}

async fn kept_alive_lease_survives_leader_kill(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 3).await?;
    let leader = cluster.leader().await?;
    let survivor = (leader + 1) % cluster.size();
    let mut c = cluster.member_client(survivor).await?;
    let ttl_s = 4;
    let id = c.lease_grant(ttl_s, None).await?.id();
    c.put("held", "v", leased(id)).await?;

    let keeper = {
        let mut c = cluster.member_client(survivor).await?;
        let until = Instant::now() + Duration::from_secs(3 * ttl_s as u64);
        tokio::spawn(async move {
            keep_alive_until(&mut c, id, Duration::from_millis(500), until).await
        })
    };
    sleep(Duration::from_secs(1)).await;
    cluster.kill(leader)?;
    let renewals = keeper.await??;
    assert!(renewals >= 6, "only {renewals} renewals");
    let new_leader = cluster.leader().await?;
    assert_ne!(new_leader, leader);
    assert_eq!(c.get("held", None).await?.count(), 1, "the lease survived");
    let remaining = c.lease_time_to_live(id, None).await?;
    assert!(remaining.ttl() > 0, "{remaining:?}");
    Ok(())
}

async fn idle_lease_expires_after_leader_kill(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 3).await?;
    let leader = cluster.leader().await?;
    let survivor = (leader + 1) % cluster.size();
    let mut c = cluster.member_client(survivor).await?;
    let ttl_s = 8;
    let ttl = Duration::from_secs(ttl_s as u64);
    let id = c.lease_grant(ttl_s, None).await?.id();
    let granted_at = Instant::now();
    c.put("idle", "v", leased(id)).await?;

    // Well past half the TTL, so Baton's leader has recorded the remaining TTL.
    sleep(Duration::from_secs(6)).await;
    cluster.kill(leader)?;
    let killed_at = Instant::now();
    cluster.leader().await?;
    if backend == Backend::Baton {
        // The new leader starts from the recorded remaining TTL, not the full TTL.
        let remaining = c.lease_time_to_live(id, None).await?.ttl();
        // On a slow machine the election alone can outlast the recorded remaining TTL; the
        // lease may then already be gone, but never before its TTL.
        let expired_in_time = remaining == -1 && granted_at.elapsed() + CLOCK_SKEW >= ttl;
        assert!(
            expired_in_time || (0..=ttl_s / 2).contains(&remaining),
            "remaining {remaining} s after a leader change, {:?} after the grant",
            granted_at.elapsed()
        );
    }
    let gone_at = wait_until_gone(&mut c, "idle", ttl + ELECTION_MAX + EXPIRY_SLACK).await?;
    let lived = gone_at - granted_at;
    ensure!(lived + CLOCK_SKEW >= ttl, "expired early, after {lived:?}");
    let after_kill = gone_at - killed_at;
    ensure!(
        after_kill <= ttl + ELECTION_MAX + EXPIRY_SLACK,
        "expired {after_kill:?} after the leader was killed"
    );
    assert_eq!(c.lease_time_to_live(id, None).await?.ttl(), -1);
    Ok(())
}

backend_test!(
    lease_grant_errors_and_minimum_ttl,
    lease_keepalive_timetolive_revoke_and_list,
    puts_attach_and_detach_leased_keys,
    leased_keys_expire_together,
    leases_and_attachments_survive_a_restart,
    lease_revokes_and_expiries_reach_watchers_as_deletes,
    kept_alive_lease_survives_leader_kill,
    idle_lease_expires_after_leader_kill,
);
