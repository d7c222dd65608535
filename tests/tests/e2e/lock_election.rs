//! Lock and Election services, asserted as etcd 3.4 behaves, plus the one place Baton is
//! deliberately stricter: a lock waiter whose lease ends while it waits is refused.

use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use baton_e2e::inspect::{kv_tuple, rev};
use baton_e2e::{
    Backend, Cluster, assert_grpc_error, backend_test, connect_with_timeout, start_single,
};
use etcd_client::{
    CampaignResponse, Client, LeaderKey, LockOptions, LockResponse, ProclaimOptions, ResignOptions,
};
use tokio::task::JoinHandle;

/// Long enough that no lease in these tests expires unless a test wants it to.
const TTL_S: i64 = 60;
/// etcd's minimum TTL with the default 1000 ms election timeout.
const TTL_S_MIN: i64 = 2;
/// How long a blocked call is given to show that it stays blocked.
const STILL_BLOCKED: Duration = Duration::from_millis(500);
/// Bound on a call that should complete now that its turn came.
const PROMPTLY: Duration = Duration::from_secs(5);
/// Bound on a TTL_S_MIN lease expiring (TTL plus the expiry tick, on a busy machine).
const EXPIRY_MAX: Duration = Duration::from_secs(8);
const POLL: Duration = Duration::from_millis(100);
/// etcd's recipe errors travel as gRPC Unknown.
const NOT_LEADER: &str = "election: not leader";
const NO_LEADER: &str = "election: no leader";
const NO_LEADER_KEY: &str = "\"leader\" field must be provided";
const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
const LOCK_SESSION_EXPIRED: &str = "mutex: session is expired";

async fn within<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(limit, f)
        .await
        .with_context(|| format!("{what}: not done after {limit:?}"))
}

type Outcome<T> = Result<T, etcd_client::Error>;

fn spawn_lock(mut c: Client, name: &str, lease: i64) -> JoinHandle<Outcome<LockResponse>> {
    let name = name.to_owned();
    tokio::spawn(async move {
        c.lock(name, Some(LockOptions::new().with_lease(lease)))
            .await
    })
}

fn spawn_campaign(
    mut c: Client,
    name: &str,
    value: &str,
    lease: i64,
) -> JoinHandle<Outcome<CampaignResponse>> {
    let (name, value) = (name.to_owned(), value.to_owned());
    tokio::spawn(async move { c.campaign(name, value, lease).await })
}

/// The outcome of a spawned call that should end promptly now.
async fn join<T>(handle: JoinHandle<Outcome<T>>, what: &str) -> Result<Outcome<T>> {
    Ok(within(PROMPTLY, what, handle).await??)
}

/// Create revision of `key`, or None if it does not exist.
async fn created_at(c: &mut Client, key: &[u8]) -> Result<Option<i64>> {
    Ok(c.get(key, None)
        .await?
        .kvs()
        .first()
        .map(|kv| kv.create_revision()))
}

async fn wait_until_exists(c: &mut Client, key: &[u8]) -> Result<i64> {
    within(PROMPTLY, "waiter key", async {
        loop {
            if let Some(created) = created_at(c, key).await? {
                return Ok::<_, anyhow::Error>(created);
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await?
}

fn lock_key(name: &str, lease: i64) -> Vec<u8> {
    format!("{name}/{lease:x}").into_bytes()
}

async fn lock_serializes_holders_with_increasing_fencing_tokens(backend: Backend) -> Result<()> {
    let (_cluster, mut c1) = start_single(backend).await?;
    let mut c2 = c1.clone();
    let l1 = c1.lease_grant(TTL_S, None).await?.id();
    let l2 = c2.lease_grant(TTL_S, None).await?.id();

    let first = c1
        .lock("mtx", Some(LockOptions::new().with_lease(l1)))
        .await?;
    assert_eq!(first.key(), lock_key("mtx", l1), "etcd's key layout");
    let token1 = created_at(&mut c1, first.key())
        .await?
        .context("holder key")?;
    assert_eq!(
        rev(first.header()),
        token1,
        "an uncontended grant is its create"
    );

    let waiter = spawn_lock(c2.clone(), "mtx", l2);
    let token2 = wait_until_exists(&mut c2, &lock_key("mtx", l2)).await?;
    tokio::time::sleep(STILL_BLOCKED).await;
    ensure!(
        !waiter.is_finished(),
        "second locker must wait for the first"
    );

    let unlocked = c1.unlock(first.key()).await?;
    let second = join(waiter, "second lock").await??;
    assert_eq!(second.key(), lock_key("mtx", l2));
    assert!(
        token2 > token1,
        "fencing tokens increase: {token1} then {token2}"
    );
    assert!(rev(second.header()) >= rev(unlocked.header()));
    assert!(rev(second.header()) > rev(first.header()));

    // Locking again with the lease that holds reuses its key (etcd's reentrancy).
    let again = c2
        .lock("mtx", Some(LockOptions::new().with_lease(l2)))
        .await?;
    assert_eq!(created_at(&mut c2, again.key()).await?, Some(token2));

    c2.unlock(second.key()).await?;
    let third = c1
        .lock("mtx", Some(LockOptions::new().with_lease(l1)))
        .await?;
    let token3 = created_at(&mut c1, third.key())
        .await?
        .context("third key")?;
    assert!(
        token3 > token2,
        "fencing tokens increase: {token2} then {token3}"
    );
    Ok(())
}

/// etcd 3.4's server-side Lock keeps waiting after the waiter's lease is revoked and then
/// grants a lock whose key no longer exists (Jepsen's finding); Baton refuses the waiter at
/// once. The etcd run asserts the bug, which shows this test detects it.
async fn lock_waiter_whose_lease_is_revoked_is_refused(backend: Backend) -> Result<()> {
    let (_cluster, mut c1) = start_single(backend).await?;
    let mut c2 = c1.clone();
    let l1 = c1.lease_grant(TTL_S, None).await?.id();
    let l2 = c2.lease_grant(TTL_S, None).await?.id();
    let held = c1
        .lock("rv", Some(LockOptions::new().with_lease(l1)))
        .await?;
    let waiter = spawn_lock(c2.clone(), "rv", l2);
    wait_until_exists(&mut c2, &lock_key("rv", l2)).await?;

    c2.lease_revoke(l2).await?;
    match backend {
        Backend::Baton => {
            let refused = join(waiter, "refused waiter").await?;
            assert_grpc_error(refused, tonic::Code::Unknown, LOCK_SESSION_EXPIRED);
        }
        Backend::Etcd => {
            tokio::time::sleep(STILL_BLOCKED).await;
            ensure!(!waiter.is_finished(), "etcd 3.4 keeps waiting");
            c1.unlock(held.key()).await?;
            let stale = join(waiter, "etcd's stale grant").await??;
            assert_eq!(
                created_at(&mut c2, stale.key()).await?,
                None,
                "granted a lost key"
            );
            return Ok(());
        }
    }
    assert!(
        created_at(&mut c1, held.key()).await?.is_some(),
        "the holder is unaffected"
    );
    Ok(())
}

/// A waiter that leaves the middle of the queue: the one behind it now waits for the holder,
/// and gets the lock once the holder unlocks. On etcd 3.4 the departed waiter is granted the
/// lock as well: two grants at once, the stale one on a key that no longer exists.
async fn lock_queue_closes_up_behind_a_departed_waiter(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = start_single(backend).await?;
    let mut leases = Vec::new();
    for _ in 0..3 {
        leases.push(c.lease_grant(TTL_S, None).await?.id());
    }
    let held = c
        .lock("q", Some(LockOptions::new().with_lease(leases[0])))
        .await?;
    let middle = spawn_lock(c.clone(), "q", leases[1]);
    wait_until_exists(&mut c, &lock_key("q", leases[1])).await?;
    let last = spawn_lock(c.clone(), "q", leases[2]);
    wait_until_exists(&mut c, &lock_key("q", leases[2])).await?;

    c.lease_revoke(leases[1]).await?;
    let middle = match backend {
        Backend::Baton => {
            let refused = join(middle, "departed waiter").await?;
            assert_grpc_error(refused, tonic::Code::Unknown, LOCK_SESSION_EXPIRED);
            None
        }
        Backend::Etcd => Some(middle),
    };
    tokio::time::sleep(STILL_BLOCKED).await;
    ensure!(!last.is_finished(), "the holder still holds");
    c.unlock(held.key()).await?;
    let granted = join(last, "last waiter").await??;
    assert_eq!(granted.key(), lock_key("q", leases[2]));
    if let Some(middle) = middle {
        let stale = join(middle, "etcd's stale grant").await??;
        assert_eq!(
            created_at(&mut c, stale.key()).await?,
            None,
            "granted a lost key"
        );
    }
    Ok(())
}

async fn lock_passes_on_when_the_holders_lease_expires(backend: Backend) -> Result<()> {
    let (_cluster, mut c1) = start_single(backend).await?;
    let mut c2 = c1.clone();
    let short = c1.lease_grant(TTL_S_MIN, None).await?.id();
    let long = c2.lease_grant(TTL_S, None).await?.id();
    let held = c1
        .lock("ex", Some(LockOptions::new().with_lease(short)))
        .await?;
    let waiter = spawn_lock(c2.clone(), "ex", long);
    let granted = within(EXPIRY_MAX, "grant after expiry", waiter).await???;
    assert_eq!(granted.key(), lock_key("ex", long));
    assert_eq!(
        created_at(&mut c1, held.key()).await?,
        None,
        "expired holder's key"
    );
    assert!(created_at(&mut c2, granted.key()).await?.is_some());
    Ok(())
}

/// A waiter that gives up (its deadline passes) leaves the queue: etcd's lock server deletes
/// its key, so nobody later waits behind it.
async fn lock_waiter_that_gives_up_leaves_the_queue(backend: Backend) -> Result<()> {
    let (cluster, mut c1) = start_single(backend).await?;
    let l1 = c1.lease_grant(TTL_S, None).await?.id();
    let l2 = c1.lease_grant(TTL_S, None).await?.id();
    let held = c1
        .lock("gu", Some(LockOptions::new().with_lease(l1)))
        .await?;
    let mut impatient = connect_with_timeout(&cluster.endpoints(), Duration::from_secs(1)).await?;
    let gave_up = impatient
        .lock("gu", Some(LockOptions::new().with_lease(l2)))
        .await;
    ensure!(gave_up.is_err(), "the lock is held: {gave_up:?}");
    within(PROMPTLY, "withdrawn waiter", async {
        while created_at(&mut c1, &lock_key("gu", l2)).await?.is_some() {
            tokio::time::sleep(POLL).await;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await??;
    assert!(created_at(&mut c1, held.key()).await?.is_some());
    Ok(())
}

/// Without a lease, etcd's lock server grants one of 60 s that nobody renews.
async fn lock_without_a_lease_gets_a_session_lease(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = start_single(backend).await?;
    let locked = c.lock("nl", None).await?;
    let kv = c.get(locked.key(), None).await?.kvs().first().cloned();
    let lease = kv.context("lock key")?.lease();
    ensure!(lease != 0, "the key is leased");
    assert_eq!(locked.key(), lock_key("nl", lease));
    let ttl = c.lease_time_to_live(lease, None).await?;
    assert_eq!(ttl.granted_ttl(), 60);
    Ok(())
}

fn leader_key(resp: &etcd_client::CampaignResponse) -> Result<LeaderKey> {
    resp.leader()
        .cloned()
        .context("campaign response without leader")
}

fn proclaim_as(leader: &LeaderKey) -> Option<ProclaimOptions> {
    Some(ProclaimOptions::new().with_leader(leader.clone()))
}

fn resign_as(leader: &LeaderKey) -> Option<ResignOptions> {
    Some(ResignOptions::new().with_leader(leader.clone()))
}

async fn leader_value(c: &mut Client, name: &str) -> Result<String> {
    let resp = c.leader(name).await?;
    let kv = resp.kv().context("leader without kv")?;
    Ok(String::from_utf8_lossy(kv.value()).into_owned())
}

async fn election_campaign_proclaim_resign(backend: Backend) -> Result<()> {
    let (_cluster, mut c1) = start_single(backend).await?;
    let mut c2 = c1.clone();
    assert_grpc_error(c1.leader("el").await, tonic::Code::Unknown, NO_LEADER);
    assert_grpc_error(
        c1.proclaim("v", None).await,
        tonic::Code::Unknown,
        NO_LEADER_KEY,
    );
    assert_grpc_error(c1.resign(None).await, tonic::Code::Unknown, NO_LEADER_KEY);
    let l1 = c1.lease_grant(TTL_S, None).await?.id();
    let l2 = c2.lease_grant(TTL_S, None).await?.id();

    let won = c1.campaign("el", "a", l1).await?;
    let first = leader_key(&won)?;
    assert_eq!(first.key(), lock_key("el", l1));
    assert_eq!((first.name(), first.lease()), (b"el".as_slice(), l1));
    assert_eq!(created_at(&mut c1, first.key()).await?, Some(first.rev()));
    assert_eq!(rev(won.header()), first.rev());
    let current = c1.leader("el").await?;
    let kv = current.kv().context("leader kv")?;
    assert_eq!(
        kv_tuple(kv),
        (
            format!("el/{l1:x}"),
            "a".into(),
            first.rev(),
            first.rev(),
            1,
            l1
        )
    );

    let challenger = spawn_campaign(c2.clone(), "el", "b", l2);
    wait_until_exists(&mut c2, &lock_key("el", l2)).await?;
    tokio::time::sleep(STILL_BLOCKED).await;
    ensure!(!challenger.is_finished(), "one leader at a time");

    c1.proclaim("a2", proclaim_as(&first)).await?;
    assert_eq!(leader_value(&mut c1, "el").await?, "a2");
    let impostor = LeaderKey::new()
        .with_name("el")
        .with_key(lock_key("el", l2))
        .with_rev(first.rev())
        .with_lease(l2);
    assert_grpc_error(
        c2.proclaim("x", proclaim_as(&impostor)).await,
        tonic::Code::Unknown,
        NOT_LEADER,
    );
    assert_eq!(
        leader_value(&mut c1, "el").await?,
        "a2",
        "refused proclaim changed nothing"
    );

    c1.resign(resign_as(&first)).await?;
    let second = leader_key(&join(challenger, "challenger").await??)?;
    assert!(second.rev() > first.rev(), "leadership tokens increase");
    assert_eq!(leader_value(&mut c1, "el").await?, "b");
    // A former leader can neither proclaim nor unseat the new one.
    assert_grpc_error(
        c1.proclaim("late", proclaim_as(&first)).await,
        tonic::Code::Unknown,
        NOT_LEADER,
    );
    c1.resign(resign_as(&first)).await?;
    assert_eq!(leader_value(&mut c1, "el").await?, "b");
    Ok(())
}

/// Reads the next observed leader: (key, value, header revision).
async fn next_observed(observer: &mut etcd_client::ObserveStream) -> Result<(String, String, i64)> {
    let msg = within(PROMPTLY, "observed leader", observer.message()).await??;
    let msg = msg.context("observe stream ended")?;
    let kv = msg.kv().context("observed kv")?;
    Ok((
        String::from_utf8_lossy(kv.key()).into_owned(),
        String::from_utf8_lossy(kv.value()).into_owned(),
        rev(msg.header()),
    ))
}

async fn observe_sees_leadership_changes_in_order(backend: Backend) -> Result<()> {
    let (_cluster, mut c1) = start_single(backend).await?;
    let mut c2 = c1.clone();
    let l1 = c1.lease_grant(TTL_S, None).await?.id();
    let l2 = c2.lease_grant(TTL_S, None).await?.id();
    let (k1, k2) = (format!("ob/{l1:x}"), format!("ob/{l2:x}"));
    // etcd sends the stream's headers only with its first message: start it aside.
    let observing = {
        let mut c = c1.clone();
        tokio::spawn(async move { c.observe("ob").await })
    };
    tokio::time::sleep(STILL_BLOCKED).await;
    let won = c1.campaign("ob", "a", l1).await?;
    let first = leader_key(&won)?;
    let mut observer = join(observing, "observe call").await??;
    let (key, value, rev_a) = next_observed(&mut observer).await?;
    assert_eq!((key, value), (k1.clone(), "a".to_owned()));
    assert_eq!(rev_a, rev(won.header()), "seen at the put's revision");

    let proclaimed = c1.proclaim("a2", proclaim_as(&first)).await?;
    let (key, value, rev_a2) = next_observed(&mut observer).await?;
    assert_eq!((key, value), (k1, "a2".to_owned()));
    assert_eq!(rev_a2, rev(proclaimed.header()));

    let challenger = spawn_campaign(c2.clone(), "ob", "b", l2);
    wait_until_exists(&mut c2, &lock_key("ob", l2)).await?;
    let resigned = c1.resign(resign_as(&first)).await?;
    let second = leader_key(&join(challenger, "challenger").await??)?;
    assert!(second.rev() > first.rev());
    let (key, value, rev_b) = next_observed(&mut observer).await?;
    assert_eq!((key, value), (k2, "b".to_owned()));
    assert!(
        rev_b >= rev(resigned.header()),
        "the new leader is read after the resign"
    );

    let extra = tokio::time::timeout(STILL_BLOCKED, observer.message()).await;
    ensure!(extra.is_err(), "unexpected observe message: {extra:?}");
    Ok(())
}

/// A lock or campaign on a lease that does not exist fails like the put it makes, but with
/// code Unknown: etcd's recipe servers pass KV errors on as plain errors.
async fn campaign_and_lock_on_a_missing_lease_fail(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = start_single(backend).await?;
    let missing = 0x7eed;
    let lock = c
        .lock("ml", Some(LockOptions::new().with_lease(missing)))
        .await;
    assert_grpc_error(lock, tonic::Code::Unknown, LEASE_NOT_FOUND);
    let campaign = c.campaign("ml", "v", missing).await;
    assert_grpc_error(campaign, tonic::Code::Unknown, LEASE_NOT_FOUND);
    Ok(())
}

/// Lockers contending for one name: no update made under the lock is lost, and the fencing
/// tokens (create revisions), taken in grant order, strictly increase.
async fn contended_lock_is_mutually_exclusive(backend: Backend) -> Result<()> {
    const LOCKERS: usize = 4;
    const ROUNDS: usize = 3;
    let (_cluster, c) = start_single(backend).await?;
    let grants = std::sync::Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..LOCKERS {
        let (mut c, grants) = (c.clone(), grants.clone());
        tasks.push(tokio::spawn(async move {
            let lease = c.lease_grant(TTL_S, None).await?.id();
            for _ in 0..ROUNDS {
                let held = c
                    .lock("cn", Some(LockOptions::new().with_lease(lease)))
                    .await?;
                let token = created_at(&mut c, held.key()).await?.context("held key")?;
                // A read-modify-write that only mutual exclusion keeps from losing updates.
                let count = c
                    .get("counter", None)
                    .await?
                    .kvs()
                    .first()
                    .map_or(Ok(0), |kv| {
                        String::from_utf8_lossy(kv.value()).parse::<usize>()
                    })?;
                grants.lock().await.push(token);
                tokio::time::sleep(Duration::from_millis(10)).await;
                c.put("counter", (count + 1).to_string(), None).await?;
                c.unlock(held.key()).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        within(Duration::from_secs(60), "contending lockers", task).await???;
    }
    let mut c = c;
    let counter = c.get("counter", None).await?;
    let value = counter.kvs().first().map(|kv| kv.value().to_vec());
    assert_eq!(value, Some((LOCKERS * ROUNDS).to_string().into_bytes()));
    let tokens = grants.lock().await.clone();
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens in grant order: {tokens:?}"
    );
    Ok(())
}

/// Holder, waiter and unlocker on three different members: the waiter's member learns of the
/// unlock through its own applied log.
async fn lock_across_members(backend: Backend) -> Result<()> {
    let cluster = Cluster::start(backend, 3).await?;
    let mut holder = cluster.member_client(0).await?;
    let mut waiter_client = cluster.member_client(1).await?;
    let mut other = cluster.member_client(2).await?;
    let l1 = holder.lease_grant(TTL_S, None).await?.id();
    let l2 = waiter_client.lease_grant(TTL_S, None).await?.id();
    let held = holder
        .lock("xm", Some(LockOptions::new().with_lease(l1)))
        .await?;
    let waiter = spawn_lock(waiter_client.clone(), "xm", l2);
    wait_until_exists(&mut other, &lock_key("xm", l2)).await?;
    tokio::time::sleep(STILL_BLOCKED).await;
    ensure!(!waiter.is_finished(), "the lock is held on another member");
    let unlocked = other.unlock(held.key()).await?;
    let granted = join(waiter, "waiter on another member").await??;
    assert_eq!(granted.key(), lock_key("xm", l2));
    assert!(rev(granted.header()) >= rev(unlocked.header()));
    Ok(())
}

/// A waiter outlives a Raft leader change: its member keeps waiting, and the unlock committed
/// under the new leader wakes it.
async fn lock_waiter_survives_a_leader_change(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 3).await?;
    let leader = cluster.leader().await?;
    let mut others = (0..3).filter(|&m| m != leader);
    let (waiting_on, holding_on) = (
        others.next().context("member")?,
        others.next().context("member")?,
    );
    let mut holder = cluster.member_client(holding_on).await?;
    let waiter_client = cluster.member_client(waiting_on).await?;
    let l1 = holder.lease_grant(TTL_S, None).await?.id();
    let l2 = holder.lease_grant(TTL_S, None).await?.id();
    let held = holder
        .lock("lc", Some(LockOptions::new().with_lease(l1)))
        .await?;
    let waiter = spawn_lock(waiter_client, "lc", l2);
    wait_until_exists(&mut holder, &lock_key("lc", l2)).await?;
    // The waiter's key is committed, but the reply to its member's forwarded write may still
    // be on its way back from the leader; killing the leader then loses that reply and the
    // call ends with "outcome unknown" before it ever waits. Let it reach the waiting phase.
    tokio::time::sleep(STILL_BLOCKED).await;
    ensure!(!waiter.is_finished(), "the lock is held: {waiter:?}");

    cluster.kill(leader)?;
    cluster.leader().await?;
    ensure!(!waiter.is_finished(), "the lock is still held: {waiter:?}");
    within(PROMPTLY, "unlock under the new leader", async {
        // An unlock sent mid-election may fail; deleting again is harmless.
        while holder.unlock(held.key()).await.is_err() {
            tokio::time::sleep(POLL).await;
        }
    })
    .await?;
    let granted = join(waiter, "waiter after the leader change").await??;
    assert_eq!(granted.key(), lock_key("lc", l2));
    Ok(())
}

/// A candidate whose call is cancelled while it waits resigns (etcd deletes its key).
async fn campaign_that_gives_up_resigns(backend: Backend) -> Result<()> {
    let (cluster, mut c) = start_single(backend).await?;
    let l1 = c.lease_grant(TTL_S, None).await?.id();
    let l2 = c.lease_grant(TTL_S, None).await?.id();
    c.campaign("cg", "a", l1).await?;
    let mut impatient = connect_with_timeout(&cluster.endpoints(), Duration::from_secs(1)).await?;
    let gave_up = impatient.campaign("cg", "b", l2).await;
    ensure!(gave_up.is_err(), "the election is led: {gave_up:?}");
    within(PROMPTLY, "resigned candidate", async {
        while created_at(&mut c, &lock_key("cg", l2)).await?.is_some() {
            tokio::time::sleep(POLL).await;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await??;
    assert_eq!(leader_value(&mut c, "cg").await?, "a");
    Ok(())
}

backend_test!(
    lock_serializes_holders_with_increasing_fencing_tokens,
    lock_waiter_whose_lease_is_revoked_is_refused,
    lock_passes_on_when_the_holders_lease_expires,
    lock_queue_closes_up_behind_a_departed_waiter,
    lock_waiter_that_gives_up_leaves_the_queue,
    lock_without_a_lease_gets_a_session_lease,
    election_campaign_proclaim_resign,
    observe_sees_leadership_changes_in_order,
    campaign_and_lock_on_a_missing_lease_fail,
    lock_across_members,
    contended_lock_is_mutually_exclusive,
    lock_waiter_survives_a_leader_change,
    campaign_that_gives_up_resigns,
);
