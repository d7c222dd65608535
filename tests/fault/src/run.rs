//! One run, end to end: network, cluster, clients and nemesis under one seed; then heal, a
//! quiet period, final reads, the checker and the validators. I/O lives here; every decision
//! (schedule, client operations, verdicts) is made by the pure modules.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::checker::{self, CHECK_STEPS_PER_KEY_MAX, KeyVerdict};
use crate::cluster::{Backend, Cluster, READY_TIMEOUT};
use crate::gcpause::{self, LockKind};
use crate::history::Entry;
use crate::locks::LockClient;
use crate::nemesis::{self, Nemesis, Schedule};
use crate::netns::{self, Network};
use crate::validate::{self, Tally};
use crate::workload::ReadMode;
use crate::{counter, lease, lockmodel, locks, watch, workload};

/// After the last fault heals, the clients keep going this long against a healthy cluster.
pub const QUIET_PERIOD: Duration = Duration::from_secs(10);
/// Final reads and HashKV must complete within this once the cluster is ready again.
const FINAL_CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// A run whose clients got fewer acknowledged operations than this proves nothing.
pub const ACKED_OPS_MIN: usize = 100;
/// With lock clients on, a run whose holders got fewer fenced writes accepted than this proves
/// nothing about fencing.
pub const LOCK_WRITES_ACCEPTED_MIN: usize = 10;
/// A violation report shows this many of the key's operations either side of where the search
/// got stuck.
const VIOLATION_CONTEXT_OPS: usize = 20;

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub seed: u64,
    pub duration: Duration,
    pub backend: Backend,
    pub program: PathBuf,
    pub schedule: Schedule,
    pub clients: u32,
    /// Lock clients (etcd's Lock and, on Baton, the `lock` module, alternately).
    pub lock_clients: u32,
    /// Counter clients (the `counter` module; Baton only).
    pub counter_clients: u32,
    /// Negative control: lock holders write the protected keys with no fence.
    pub unfenced_locks: bool,
    /// Serializable (possibly stale) reads in the workload: the negative control.
    pub serializable_reads: bool,
    /// Keep the run directory (logs, data, history) even when the run passes.
    pub keep: bool,
}

/// What a run produced; `failures` empty means it passed.
#[derive(Debug)]
pub struct RunReport {
    pub dir: PathBuf,
    pub tally: Tally,
    pub undecided_keys: Vec<String>,
    pub failures: Vec<String>,
    pub hashkv: Option<(i64, u32)>,
}

/// Runs the harness. Builds its own tokio runtime after moving this thread into the client
/// namespace, so every client socket lives there; tears everything down before returning.
pub fn run(config: &RunConfig) -> Result<RunReport> {
    let stale = netns::remove_stale()?;
    if stale > 0 {
        tracing::info!("removed {stale} stale namespaces of earlier runs");
    }
    let dir = tempdir()?;
    let mut net = Network::create(3)?;
    net.enter_client_ns()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = drive(config, &mut net, &dir) => outcome,
            signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
        }
    });
    // Members are killed when the cluster drops inside `drive`; now the namespaces go.
    runtime.shutdown_timeout(Duration::from_secs(5));
    net.teardown();
    let (entries, mut report) = outcome?;
    let saved = dir.join("history.json");
    std::fs::write(&saved, serde_json::to_vec(&entries)?)
        .with_context(|| format!("writing {}", saved.display()))?;

    let verdicts = checker::check_history(&entries, CHECK_STEPS_PER_KEY_MAX);
    for (key, verdict) in verdicts.violations() {
        report
            .failures
            .push(describe_violation(&entries, key, verdict));
    }
    report.undecided_keys = verdicts.undecided().cloned().collect();
    report.tally = validate::tally(&entries);
    if report.tally.ok < ACKED_OPS_MIN {
        report.failures.push(format!(
            "only {} operations were acknowledged (at least {ACKED_OPS_MIN} expected)",
            report.tally.ok
        ));
    }
    if report.failures.is_empty() && !config.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(report)
}

type Driven = (Vec<Entry>, RunReport);

async fn drive(config: &RunConfig, net: &mut Network, dir: &std::path::Path) -> Result<Driven> {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let active_ms = u64::try_from(config.duration.saturating_sub(QUIET_PERIOD).as_millis())?;
    let steps = nemesis::schedule(&mut rng, config.schedule, active_ms);
    let client_seeds: Vec<u64> = (0..config.clients).map(|_| rng.random()).collect();
    // Drawn after the KV clients' seeds, so adding lock and counter clients keeps those.
    let lock_seeds: Vec<u64> = (0..config.lock_clients).map(|_| rng.random()).collect();
    let modules = config.backend == Backend::Baton;
    let counter_clients = if modules { config.counter_clients } else { 0 };
    let counter_seeds: Vec<u64> = (0..counter_clients).map(|_| rng.random()).collect();
    tracing::info!("schedule: {} faults over {active_ms} ms", steps.len());

    let mut cluster = Cluster::start(config.backend, config.program.clone(), net, dir).await?;
    let start = Instant::now();
    let (stop_watch_tx, stop_watch_rx) = workload::stop_signal();
    let mut progress = Vec::new();
    let watchers: Vec<_> = cluster
        .endpoints()
        .into_iter()
        .map(|endpoint| {
            let (tx, rx) = tokio::sync::watch::channel(0);
            progress.push(rx);
            tokio::spawn(watch::run_watcher(endpoint, tx, stop_watch_rx.clone()))
        })
        .collect();
    let reads = if config.serializable_reads {
        ReadMode::Serializable
    } else {
        ReadMode::Linearizable
    };
    let (stop_tx, stop_rx) = workload::stop_signal();
    let tasks: Vec<_> = client_seeds
        .iter()
        .enumerate()
        .map(|(i, &seed)| {
            let endpoint = cluster.endpoint(i % cluster.len()).to_owned();
            let id = u32::try_from(i).unwrap_or(u32::MAX);
            tokio::spawn(workload::run_client(
                id,
                endpoint,
                seed,
                reads,
                start,
                stop_rx.clone(),
            ))
        })
        .collect();

    let lock_tasks: Vec<_> = lock_seeds
        .iter()
        .enumerate()
        .map(|(i, &seed)| {
            let id = config.clients + u32::try_from(i).unwrap_or(u32::MAX);
            let kind = if modules && i % 2 == 1 {
                LockKind::Module
            } else {
                LockKind::Etcd
            };
            let client = LockClient {
                id,
                kind,
                seed,
                unfenced: config.unfenced_locks,
            };
            let endpoint = cluster.endpoint(id as usize % cluster.len()).to_owned();
            tokio::spawn(locks::run_lock_client(
                client,
                endpoint,
                start,
                stop_rx.clone(),
            ))
        })
        .collect();
    let first_counter_id = config.clients + config.lock_clients;
    let counter_tasks: Vec<_> = counter_seeds
        .iter()
        .enumerate()
        .map(|(i, &seed)| {
            let id = first_counter_id + u32::try_from(i).unwrap_or(u32::MAX);
            let endpoint = cluster.endpoint(id as usize % cluster.len()).to_owned();
            tokio::spawn(counter::run_counter_client(
                id,
                endpoint,
                seed,
                reads,
                start,
                stop_rx.clone(),
            ))
        })
        .collect();
    let leases = tokio::spawn(lease::run_lease_client(
        cluster.endpoint(1 % cluster.len()).to_owned(),
        start,
        stop_rx.clone(),
    ));
    let mut nemesis = Nemesis {
        cluster: &mut cluster,
        net,
        start,
        events: Vec::new(),
    };
    let faults = nemesis.run(&steps).await;
    let healed = nemesis.heal();
    let events = std::mem::take(&mut nemesis.events);
    tokio::time::sleep_until(start + config.duration).await;
    let _ = stop_tx.send(true);
    let mut entries = Vec::new();
    for task in tasks {
        entries.extend(task.await.context("a client task panicked")?);
    }
    for task in counter_tasks {
        entries.extend(task.await.context("a counter client panicked")?);
    }
    let mut lock_ops = Vec::new();
    for task in lock_tasks {
        lock_ops.extend(task.await.context("a lock client panicked")?);
    }
    let lease_events = leases.await.context("the lease client panicked")?;
    faults?;
    healed?;

    let mut failures = lease::validate(&lease_events);
    let extended = lease_events
        .iter()
        .filter(|e| matches!(e, lease::LeaseEvent::Extended { .. }))
        .count();
    tracing::info!(
        "leases: {extended} grants and keep-alives, {} keys gone",
        lease_events.len() - extended
    );
    let crashed = cluster.crashed();
    if !crashed.is_empty() {
        failures.push(format!(
            "members {crashed:?} exited on their own:\n{}",
            cluster.log_tails()
        ));
    }
    cluster.revive_all()?;
    cluster
        .await_ready(READY_TIMEOUT)
        .await
        .context("the cluster did not recover after the faults healed")?;
    let final_id = first_counter_id + counter_clients;
    let reads =
        workload::final_reads(final_id, cluster.endpoint(0), start, FINAL_CHECK_TIMEOUT).await;
    match reads {
        Ok(reads) => entries.extend(reads),
        Err(e) => failures.push(format!("final reads: {e:#}")),
    }
    if counter_clients > 0 {
        let reads =
            counter::final_reads(final_id, cluster.endpoint(0), start, FINAL_CHECK_TIMEOUT).await;
        match reads {
            Ok(reads) => entries.extend(reads),
            Err(e) => failures.push(format!("final counter reads: {e:#}")),
        }
    }
    if counter_clients > 0 {
        log_counters(&entries);
    }
    if config.lock_clients > 0 {
        failures.extend(check_locks(&lock_ops, cluster.endpoint(0), dir).await);
    }
    let hashkv = match validate::hashkv_agree(&cluster.endpoints(), FINAL_CHECK_TIMEOUT).await {
        Ok(agreed) => Some(agreed),
        Err(e) => {
            failures.push(format!("{e:#}"));
            None
        }
    };
    let watch_problems =
        check_watches(&cluster, &progress, (stop_watch_tx, watchers), &entries).await;
    match watch_problems {
        Ok(problems) => failures.extend(problems),
        Err(e) => failures.push(format!("watch validation: {e:#}")),
    }
    for kind in [LockKind::Module, LockKind::Etcd] {
        if kind == LockKind::Module && config.backend == Backend::Etcd {
            continue;
        }
        let program = std::env::current_exe()?;
        match gcpause::scenario(&program, cluster.endpoint(0), kind).await {
            Ok(summary) => tracing::info!("gc-pause: {summary}"),
            Err(e) => failures.push(format!("gc-pause with the {kind:?} lock: {e:#}")),
        }
    }
    std::fs::write(
        dir.join("nemesis.json"),
        serde_json::to_vec_pretty(&events)?,
    )?;
    if !failures.is_empty() {
        failures.push(format!("member logs:\n{}", cluster.log_tails()));
    }
    let report = RunReport {
        dir: dir.to_owned(),
        tally: Tally::default(),
        undecided_keys: Vec::new(),
        failures,
        hashkv,
    };
    Ok((entries, report))
}

/// How many increments were acknowledged, and the totals the last reads saw.
fn log_counters(entries: &[Entry]) {
    use crate::history::{Op, Outcome, Reply};
    let counted = |op: Op| {
        entries
            .iter()
            .filter(|e| e.op == op && matches!(e.outcome, Outcome::Ok(_)))
            .count()
    };
    let finals: Vec<(&str, u64)> = entries
        .iter()
        .rev()
        .take(counter::COUNTER_COUNT)
        .filter_map(|e| match e.outcome {
            Outcome::Ok(Reply::Count(total)) if e.op == Op::ReadCounter => {
                Some((e.key.as_str(), total))
            }
            _ => None,
        })
        .collect();
    tracing::info!(
        "counters: {} increments and {} reads acknowledged; final totals {finals:?}",
        counted(Op::Incr),
        counted(Op::ReadCounter)
    );
}

/// Reads the protected keys' history, saves it with the lock operations, and checks both
/// against the lock model.
async fn check_locks(
    ops: &[lockmodel::LockOp],
    endpoint: &str,
    dir: &std::path::Path,
) -> Vec<String> {
    let stored = match locks::stored_history(endpoint, FINAL_CHECK_TIMEOUT).await {
        Ok(stored) => stored,
        Err(e) => return vec![format!("lock check: {e:#}")],
    };
    let saved = serde_json::to_vec(&(ops, &stored))
        .map_err(anyhow::Error::from)
        .and_then(|bytes| Ok(std::fs::write(dir.join("locks.json"), bytes)?));
    let mut problems = lockmodel::check(ops, &stored);
    if let Err(e) = saved {
        problems.push(format!("saving locks.json: {e:#}"));
    }
    let count = |f: fn(&lockmodel::Step) -> bool| ops.iter().filter(|o| f(&o.step)).count();
    let granted = count(|s| matches!(s, lockmodel::Step::Acquired { .. }));
    let written = count(|s| {
        matches!(
            s,
            lockmodel::Step::Write {
                outcome: lockmodel::WriteOutcome::Accepted { .. },
                ..
            }
        )
    });
    let refused = count(|s| {
        matches!(
            s,
            lockmodel::Step::Write {
                outcome: lockmodel::WriteOutcome::Refused,
                ..
            }
        )
    });
    let failed = count(|s| matches!(s, lockmodel::Step::AcquireFailed));
    tracing::info!(
        "locks: {granted} grants, {failed} acquires not granted, {written} fenced writes \
         accepted, {refused} refused; {} writes in the protected keys' history",
        stored.len()
    );
    if written < LOCK_WRITES_ACCEPTED_MIN {
        problems.push(format!(
            "only {written} fenced writes were accepted (at least {LOCK_WRITES_ACCEPTED_MIN} expected)"
        ));
    }
    problems
}

/// Waits for every watcher to reach the prefix's last revision, stops them, and compares what
/// they saw with the history a fresh watch reads.
async fn check_watches(
    cluster: &Cluster,
    progress: &[tokio::sync::watch::Receiver<i64>],
    (stop, watchers): (
        tokio::sync::watch::Sender<bool>,
        Vec<JoinHandle<watch::Watched>>,
    ),
    entries: &[Entry],
) -> Result<Vec<String>> {
    let upto = watch::last_prefix_revision(cluster.endpoint(0)).await?;
    let reference = watch::reference(cluster.endpoint(0), upto, FINAL_CHECK_TIMEOUT).await;
    let caught_up = watch::await_caught_up(progress, upto, FINAL_CHECK_TIMEOUT).await;
    let _ = stop.send(true);
    let mut watched = Vec::new();
    for task in watchers {
        watched.push(task.await.context("a watcher task panicked")?);
    }
    caught_up?;
    tracing::info!(
        "watch: {} changes up to revision {upto}; resubscriptions per member {:?}",
        reference.as_ref().map_or(0, Vec::len),
        watched.iter().map(|w| w.resubscribed).collect::<Vec<_>>()
    );
    Ok(watch::validate(&reference?, &watched, entries))
}

/// Ctrl-C or SIGTERM (what nextest sends a test that overran).
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        std::future::pending::<()>().await;
        return "nothing";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("baton-fault-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The operations on a key that failed the check, in call order, for the failure report.
pub fn describe_violation(entries: &[Entry], key: &str, verdict: &KeyVerdict) -> String {
    let ops: Vec<&Entry> = entries.iter().filter(|e| e.key == key).collect();
    let relevant = checker::relevant(&ops);
    let (first, last) = match verdict {
        KeyVerdict::Violation { stuck, .. } if !stuck.is_empty() => (
            stuck
                .iter()
                .min()
                .map_or(0, |m| m.saturating_sub(VIOLATION_CONTEXT_OPS)),
            stuck.iter().max().map_or(0, |m| m + VIOLATION_CONTEXT_OPS),
        ),
        _ => (0, 2 * VIOLATION_CONTEXT_OPS),
    };
    let mut text = format!(
        "key {key} is not linearizable ({verdict:?}); its operations #{first}..#{last} (all in \
         history.json):\n"
    );
    for (i, e) in relevant.iter().enumerate().take(last + 1).skip(first) {
        let ret = e
            .return_ns
            .map_or("?".to_owned(), |r| format!("{:.3}", r as f64 / 1e9));
        text.push_str(&format!(
            "  #{i} client {} [{:.3}s .. {ret}s] {:?} -> {:?}\n",
            e.client,
            e.call_ns as f64 / 1e9,
            e.op,
            e.outcome
        ));
    }
    text
}

/// Fails unless the report passed.
pub fn verdict(report: &RunReport) -> Result<()> {
    if report.failures.is_empty() {
        return Ok(());
    }
    bail!("{}", report.failures.join("\n"))
}
