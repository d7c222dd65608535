//! Watches and leases together across a kill -9 of the leader of a 3-member cluster, while a
//! writer keeps writing: watchers on the survivors keep their streams, a watcher on the killed
//! leader resumes elsewhere from its last revision + 1, and together they see every revision
//! exactly once, in order; a kept-alive lease outlives the failover, an idle one expires within
//! a bound (never before its TTL).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use baton_e2e::inspect::rev;
use baton_e2e::{Backend, Cluster, backend_test, connect_with_timeout};
use etcd_client::{Client, EventType, PutOptions, WatchOptions};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

use crate::lease::keep_alive_until;

/// Everything the test writes lives under this prefix, so the watched revisions are exactly
/// the cluster's revisions: no gaps allowed.
const PREFIX: &str = "fo/";
/// TTL of both leases.
const TTL_S: i64 = 5;
/// Load before the kill, so watchers are mid-stream when it happens.
const BEFORE_KILL: Duration = Duration::from_secs(2);
/// Acknowledged writes wanted after the kill.
const ACKS_AFTER_KILL: usize = 50;
/// How often the kept lease is renewed.
const RENEW_EVERY: Duration = Duration::from_millis(1000);
/// Pause between writes, so a debug build on a small CI machine is not saturated.
const WRITE_PAUSE: Duration = Duration::from_millis(10);
/// A write gives up after this long and the writer moves to the next member.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a leader election (detection included) may take.
const ELECTION_MAX: Duration = Duration::from_secs(5);
/// Room for scheduling on a busy machine when asserting an upper bound.
const SLACK: Duration = Duration::from_secs(3);
/// The server starts a TTL when it applies the grant, a little before the client sees it.
const CLOCK_SKEW: Duration = Duration::from_millis(200);
/// Upper bound on each waiting phase.
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// (revision, key, is delete) of one event.
type Seen = (i64, String, bool);

/// What one watcher saw, and how often its stream broke.
struct Watched {
    events: Vec<Seen>,
    breaks: usize,
}

/// Watches `PREFIX` from `start` on `endpoints[0]`; when the stream breaks, watches again from
/// the last seen revision + 1 on the next endpoint. Ends once `target` (the final revision,
/// 0 while unknown) has been seen.
fn watcher(
    endpoints: Vec<String>,
    start: i64,
    target: watch::Receiver<i64>,
) -> JoinHandle<Watched> {
    tokio::spawn(async move {
        let mut seen = Watched {
            events: Vec::new(),
            breaks: 0,
        };
        let mut next_rev = start;
        for endpoint in endpoints.iter().cycle() {
            let target_rev = *target.borrow();
            if target_rev > 0 && next_rev > target_rev {
                break;
            }
            match watch_until_broken(endpoint, next_rev, &target, &mut seen.events).await {
                Ok(()) => break,
                Err(e) => {
                    let last = seen.events.last().map(|e| e.0);
                    eprintln!("watch on {endpoint} from {next_rev} broke after {last:?}: {e:#}");
                    seen.breaks += 1;
                    sleep(POLL).await;
                }
            }
            next_rev = seen.events.last().map_or(start, |e| e.0 + 1);
        }
        seen
    })
}

/// One watch stream: Ok once `target` was reached, Err when the stream broke.
async fn watch_until_broken(
    endpoint: &str,
    from: i64,
    target: &watch::Receiver<i64>,
    events: &mut Vec<Seen>,
) -> Result<()> {
    let client = connect_with_timeout(&[endpoint.to_owned()], WRITE_TIMEOUT).await?;
    let options = WatchOptions::new().with_prefix().with_start_revision(from);
    let mut stream = client.watch_client().watch(PREFIX, Some(options)).await?;
    loop {
        let target_rev = *target.borrow();
        if target_rev > 0 && events.last().is_some_and(|e| e.0 >= target_rev) {
            return Ok(());
        }
        // A short wait, so a finished target is noticed even on a silent stream.
        let Ok(message) = timeout(POLL, stream.message()).await else {
            continue;
        };
        let response = message?.context("the watch stream ended")?;
        ensure!(!response.canceled(), "watch canceled: {response:?}");
        for e in response.events() {
            let kv = e.kv().context("an event without a kv")?;
            events.push((
                kv.mod_revision(),
                String::from_utf8_lossy(kv.key()).into_owned(),
                e.event_type() == EventType::Delete,
            ));
        }
    }
}

/// (key, revision) of every acknowledged put.
type Acks = Arc<Mutex<Vec<(String, i64)>>>;

/// Puts fresh keys, one member at a time, moving on when one fails; never reuses a key, so an
/// unacknowledged put cannot pass for an acknowledged one.
fn writer(mut clients: Vec<Client>, acks: Acks, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut member = 0;
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("{PREFIX}w/{seq:06}");
            seq += 1;
            match clients[member].put(key.clone(), "v", None).await {
                Ok(response) => acks.lock().await.push((key, rev(response.header()))),
                Err(_) => member = (member + 1) % clients.len(),
            }
            sleep(WRITE_PAUSE).await;
        }
    })
}

async fn acks_since(acks: &Acks, count_before: usize, wanted: usize) -> Result<()> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    while acks.lock().await.len() < count_before + wanted {
        ensure!(Instant::now() < deadline, "writes stalled after the kill");
        sleep(POLL).await;
    }
    Ok(())
}

/// Polls through `client` until `key` is gone.
async fn wait_until_gone(client: &mut Client, key: &str, limit: Duration) -> Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(got) = client.get(key, None).await
            && got.count() == 0
        {
            return Ok(Instant::now());
        }
        if Instant::now() >= deadline {
            bail!("{key} still exists after {limit:?}");
        }
        sleep(POLL).await;
    }
}

fn check_watched(name: &str, got: &Watched, start: i64, head: i64, acks: &[(String, i64)]) {
    let revisions: Vec<i64> = got.events.iter().map(|e| e.0).collect();
    let want: Vec<i64> = (start..=head).collect();
    assert_eq!(
        revisions, want,
        "{name}: every revision exactly once, in order"
    );
    for (key, revision) in acks {
        let event = &got.events[(revision - start) as usize];
        assert_eq!(
            (&event.1, event.2),
            (key, false),
            "{name}: acknowledged put at {revision}"
        );
    }
}

async fn watches_and_leases_across_a_leader_kill(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 3).await?;
    let leader = cluster.leader().await?;
    let survivors: Vec<usize> = (0..3).filter(|&m| m != leader).collect();
    let (a, b) = (
        cluster.endpoint(survivors[0]),
        cluster.endpoint(survivors[1]),
    );
    let mut c = cluster.member_client(survivors[0]).await?;
    let start = rev(c.get(PREFIX, None).await?.header()) + 1;

    let (set_target, target) = watch::channel(0);
    let on_a = watcher(vec![a.clone()], start, target.clone());
    let on_b = watcher(vec![b.clone()], start, target.clone());
    let on_leader = watcher(
        vec![cluster.endpoint(leader), a.clone(), b.clone()],
        start,
        target,
    );

    let kept = c.lease_grant(TTL_S, None).await?.id();
    let idle = c.lease_grant(TTL_S, None).await?.id();
    let idle_granted_at = Instant::now();
    c.put(
        format!("{PREFIX}kept"),
        "v",
        Some(PutOptions::new().with_lease(kept)),
    )
    .await?;
    c.put(
        format!("{PREFIX}idle"),
        "v",
        Some(PutOptions::new().with_lease(idle)),
    )
    .await?;
    let keep_until = Instant::now() + BEFORE_KILL + Duration::from_secs(3 * TTL_S as u64);
    let keeper = {
        let mut c = cluster.member_client(survivors[1]).await?;
        tokio::spawn(async move { keep_alive_until(&mut c, kept, RENEW_EVERY, keep_until).await })
    };

    let acks: Acks = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for member in [leader, survivors[0], survivors[1]] {
        clients.push(connect_with_timeout(&[cluster.endpoint(member)], WRITE_TIMEOUT).await?);
    }
    let writing = writer(clients, acks.clone(), stop.clone());

    sleep(BEFORE_KILL).await;
    let acked_before_kill = acks.lock().await.len();
    ensure!(acked_before_kill > 0, "no write before the kill");
    cluster.kill(leader)?;
    let killed_at = Instant::now();
    acks_since(&acks, acked_before_kill, ACKS_AFTER_KILL).await?;
    let new_leader = cluster.leader().await?;
    ensure!(new_leader != leader, "a survivor leads");

    let ttl = Duration::from_secs(TTL_S as u64);
    let gone_at = wait_until_gone(&mut c, &format!("{PREFIX}idle"), PHASE_TIMEOUT).await?;
    let lived = gone_at - idle_granted_at;
    ensure!(
        lived + CLOCK_SKEW >= ttl,
        "idle lease expired early: {lived:?}"
    );
    let after_kill = gone_at - killed_at;
    ensure!(
        after_kill <= ttl + ELECTION_MAX + SLACK,
        "idle lease expired only {after_kill:?} after the kill"
    );

    let renewals = keeper.await??;
    ensure!(renewals >= 5, "only {renewals} renewals of the kept lease");
    ensure!(
        c.get(format!("{PREFIX}kept"), None).await?.count() == 1,
        "kept lease expired"
    );
    let remaining = c.lease_time_to_live(kept, None).await?.ttl();
    ensure!(remaining > 0, "kept lease has {remaining} s left");

    stop.store(true, Ordering::Relaxed);
    writing.await?;
    let head = rev(c.get(PREFIX, None).await?.header());
    set_target.send(head)?;
    let acks = acks.lock().await.clone();
    println!(
        "{} writes acknowledged ({acked_before_kill} before the kill), revisions {start}..={head}",
        acks.len()
    );
    for (name, task, may_break) in [
        ("a", on_a, false),
        ("b", on_b, false),
        ("leader", on_leader, true),
    ] {
        let got = timeout(PHASE_TIMEOUT, task)
            .await
            .with_context(|| format!("watcher {name} never reached revision {head}"))??;
        check_watched(name, &got, start, head, &acks);
        if may_break {
            ensure!(got.breaks >= 1, "the killed leader's watch never broke");
        } else {
            ensure!(
                got.breaks == 0,
                "watcher {name} on a survivor broke {} times",
                got.breaks
            );
        }
    }
    Ok(())
}

backend_test!(watches_and_leases_across_a_leader_kill);
