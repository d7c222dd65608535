//! `baton bench`: a load generator for any etcd v3 endpoint (Baton or etcd itself).
//!
//! Each workload is one file under `workload/`; adding one means a file, a variant of
//! [`WorkloadCmd`] and an arm in [`run`]. Nothing here asserts on timing: it only measures.

// The map above is for maintainers (`cargo doc --document-private-items`): it links the modules
// a reader opens next, most of which are private to this crate.
#![allow(
    rustdoc::private_intra_doc_links,
    reason = "the crate map links private modules on purpose"
)]

mod args;
mod driver;
#[cfg(test)]
mod etcd_tests;
mod keys;
mod lean_grpc;
mod pool;
mod summary;
mod workload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};

use args::{CommonArgs, KeyArgs, Target, check_val_size};
use keys::KeySpace;
use pool::Pool;
use summary::{RunShape, Summary};
use workload::Workload;
use workload::barrier::{self, ROUNDS_MAX, WAITERS_MAX as BARRIER_WAITERS_MAX};
use workload::incr::{COUNTERS_MAX, IncrMode, IncrWorkload};
use workload::keepalive::{self, LEASES_MAX, STREAMS_MAX};
use workload::lock::{LockWorkload, NAMES_MAX};
use workload::park::{self, ITEMS_MAX, ParkMode, WAITERS_MAX};
use workload::put::PutWorkload;
use workload::range::{Consistency, RangeWorkload};
use workload::recipe::{
    NAMES_MAX as RECIPE_NAMES_MAX, PERMITS_MAX, RecipeKind, RecipeMode, RecipeWorkload,
};
use workload::watch::{WATCHERS_MAX, WatchWorkload};

/// `baton bench <workload> [options]`
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(subcommand)]
    workload: WorkloadCmd,
}

#[derive(Subcommand, Debug, Clone)]
enum WorkloadCmd {
    /// Write values to keys from a key space.
    Put(PutArgs),
    /// Read single keys (written beforehand) from a key space.
    Range(RangeArgs),
    /// Lock and unlock names through the Lock service, each requester under its own lease.
    Lock(LockArgs),
    /// Put keys under a watched prefix and time each put until its event arrives.
    Watch(WatchArgs),
    /// Increment a few shared counters from many clients (CAS retry loop or a module call),
    /// then check no increment was lost.
    #[command(mut_arg("clients", |a| a.default_value("32")))]
    Incr(IncrArgs),
    /// Grant many leases and keep them all alive on a fixed schedule; `--clients` is the
    /// number of LeaseKeepAlive streams, spread over `--conns` connections.
    Keepalive(KeepaliveArgs),
    /// Many consumers wait on one empty queue (Baton: parked `queue pop` calls; etcd: its
    /// watch-and-Txn queue recipe); items are pushed one at a time, each timed until a
    /// consumer has it, with the log entries (and member CPU) each push costs.
    Park(ParkArgs),
    /// One coordination recipe end to end, a full cycle per operation (lock: acquire and
    /// release; semaphore: the same for one permit; queue: push then pop), as Baton's built-in
    /// module (`--mode module`) or etcd's client-side algorithm over KV and Watch
    /// (`--mode client`, any etcd), each requester under its own kept-alive lease.
    #[command(mut_arg("clients", |a| a.default_value("16")))]
    Recipe(RecipeArgs),
    /// Rounds of: hold a barrier, start waiters on it, release it; each round timed from the
    /// release to the last waiter returning (module waits, or etcd's Barrier recipe).
    Barrier(BarrierArgs),
}

#[derive(Args, Debug, Clone)]
struct RecipeArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[arg(long, value_enum, default_value_t = RecipeKind::Lock)]
    recipe: RecipeKind,
    /// module: Baton's built-in module (Baton only); client: etcd's client-side algorithm.
    #[arg(long, value_enum, default_value_t = RecipeMode::Module)]
    mode: RecipeMode,
    /// Distinct names (locks, semaphores, queues); operation n uses name n % names.
    #[arg(long, default_value_t = 1)]
    names: u64,
    /// Semaphore permits.
    #[arg(long, default_value_t = 4)]
    permits: u64,
}

impl RecipeArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=RECIPE_NAMES_MAX).contains(&self.names) {
            bail!("--names must be between 1 and {RECIPE_NAMES_MAX}");
        }
        if !(1..=PERMITS_MAX).contains(&self.permits) {
            bail!("--permits must be between 1 and {PERMITS_MAX}");
        }
        Ok(())
    }
}

#[derive(Args, Debug, Clone)]
struct BarrierArgs {
    /// Waiters on each round's barrier.
    #[arg(long, default_value_t = 100)]
    waiters: usize,
    /// Barriers held and released, one after the other.
    #[arg(long, default_value_t = 20)]
    rounds: u64,
    /// module: `barrier` module calls (Baton only); client: etcd's Barrier recipe.
    #[arg(long, value_enum, default_value_t = RecipeMode::Module)]
    mode: RecipeMode,
    /// Module mode: waiters call `wait` read-only (re-run on their member, no log entries).
    #[arg(long)]
    read_only: bool,
    /// Connections the waiters share; by default one per 100 waiters.
    #[arg(long)]
    conns: Option<usize>,
    /// Pause once every waiter has sent its wait, before the release.
    #[arg(long, value_parser = args::parse_duration, default_value = "300ms")]
    settle: Duration,
    /// Bound on each phase of a round.
    #[arg(long, value_parser = args::parse_duration, default_value = "30s")]
    timeout: Duration,
    /// Start no round after this long, e.g. 10s (whichever of --rounds/--duration ends first).
    #[arg(long, value_parser = args::parse_duration)]
    duration: Option<Duration>,
    /// Spread waiters over every endpoint given, or send everything to the leader.
    #[arg(long, value_enum, default_value_t = Target::All)]
    target: Target,
    /// Print one JSON object instead of the table and summary line.
    #[arg(long)]
    json: bool,
}

impl BarrierArgs {
    fn shape(&self) -> anyhow::Result<barrier::Shape> {
        if !(1..=BARRIER_WAITERS_MAX).contains(&self.waiters) {
            bail!("--waiters must be between 1 and {BARRIER_WAITERS_MAX}");
        }
        if !(1..=ROUNDS_MAX).contains(&self.rounds) {
            bail!("--rounds must be between 1 and {ROUNDS_MAX}");
        }
        // Spread like the park workload's waiters.
        let conns = self.conns.unwrap_or(park::default_conns(self.waiters));
        if !(1..=args::CONNS_MAX.min(self.waiters)).contains(&conns) {
            bail!(
                "--conns must be between 1 and {} (and at most --waiters)",
                args::CONNS_MAX
            );
        }
        if self.timeout.is_zero() {
            bail!("--timeout must be above zero");
        }
        if self.read_only && self.mode == RecipeMode::Client {
            bail!("--read-only is for --mode module");
        }
        Ok(barrier::Shape {
            mode: self.mode,
            waiters: self.waiters,
            rounds: self.rounds,
            conns,
            read_only: self.read_only,
            settle: self.settle,
            timeout: self.timeout,
            duration: self.duration,
        })
    }
}

#[derive(Args, Debug, Clone)]
struct PutArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    keys: KeyArgs,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    val_size: usize,
}

#[derive(Args, Debug, Clone)]
struct RangeArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    keys: KeyArgs,
    /// Bytes per value written before the reads.
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// l: linearizable reads; s: serializable (member-local) reads.
    #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
    consistency: Consistency,
}

#[derive(Args, Debug, Clone)]
struct LockArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Distinct lock names; operation n locks name n % names.
    #[arg(long, default_value_t = 8)]
    names: u64,
}

#[derive(Args, Debug, Clone)]
struct WatchArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Watch streams on the prefix (each its own connection); an operation completes when
    /// all of them have delivered its event.
    #[arg(long, default_value_t = 1)]
    watchers: usize,
}

#[derive(Args, Debug, Clone)]
struct IncrArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Shared counters; operation n increments counter n % counters.
    #[arg(long, default_value_t = 8)]
    counters: u64,
    /// cas: get + compare-mod_revision Txn, retried (any etcd); invoke: the built-in counter
    /// module (Baton only).
    #[arg(long, value_enum, default_value_t = IncrMode::Cas)]
    mode: IncrMode,
}

impl IncrArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=COUNTERS_MAX).contains(&self.counters) {
            bail!("--counters must be between 1 and {COUNTERS_MAX}");
        }
        Ok(())
    }
}

#[derive(Args, Debug, Clone)]
struct KeepaliveArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Leases granted before the clock starts and kept alive during the run.
    #[arg(long, default_value_t = 10_000)]
    leases: u64,
    /// TTL of each lease, in seconds.
    #[arg(long, default_value_t = 10)]
    ttl: i64,
    /// How often each lease is renewed, e.g. 3s.
    #[arg(long, value_parser = args::parse_duration, default_value = "3s")]
    interval: Duration,
}

impl KeepaliveArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=LEASES_MAX).contains(&self.leases) {
            bail!("--leases must be between 1 and {LEASES_MAX}");
        }
        if self.clients() > STREAMS_MAX {
            bail!("--clients (streams) must be at most {STREAMS_MAX}");
        }
        if self.ttl < 1 {
            bail!("--ttl must be at least 1 s");
        }
        // A lease renewed less often than its TTL expires between renewals.
        if self.interval.is_zero() || self.interval.as_secs_f64() >= self.ttl as f64 {
            bail!("--interval must be above zero and below --ttl");
        }
        Ok(())
    }

    fn clients(&self) -> usize {
        self.common.clients
    }

    fn shape(&self) -> keepalive::Shape {
        keepalive::Shape {
            leases: self.leases,
            ttl_s: self.ttl,
            interval: self.interval,
            streams: self.common.clients,
            timeout: self.common.timeout,
        }
    }
}

#[derive(Args, Debug, Clone)]
struct ParkArgs {
    /// Consumers waiting on the one queue.
    #[arg(long, default_value_t = 100)]
    waiters: usize,
    /// Items pushed, one at a time, each once the previous push's herd has settled.
    #[arg(long, default_value_t = 20)]
    items: u64,
    /// invoke: each consumer is a `queue pop` call the member parks (Baton only); recipe:
    /// etcd's client-side queue recipe, a watch and a Txn race (any etcd).
    #[arg(long, value_enum, default_value_t = ParkMode::Invoke)]
    mode: ParkMode,
    /// Connections the consumers share; by default one per 100 consumers.
    #[arg(long)]
    conns: Option<usize>,
    /// The log counts as settled once its index has not moved for this long.
    #[arg(long, value_parser = args::parse_duration, default_value = "500ms")]
    settle: Duration,
    /// Bound on each phase: all consumers waiting, one item delivered, the log settling.
    #[arg(long, value_parser = args::parse_duration, default_value = "120s")]
    timeout: Duration,
    /// The member's process id (same machine): adds its RSS, idle CPU and CPU per push.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON object instead of the table and summary line.
    #[arg(long)]
    json: bool,
}

impl ParkArgs {
    fn shape(&self) -> anyhow::Result<park::Shape> {
        if !(1..=WAITERS_MAX).contains(&self.waiters) {
            bail!("--waiters must be between 1 and {WAITERS_MAX}");
        }
        if !(1..=ITEMS_MAX).contains(&self.items) {
            bail!("--items must be between 1 and {ITEMS_MAX}");
        }
        let conns = self.conns.unwrap_or(park::default_conns(self.waiters));
        if !(1..=args::CONNS_MAX.min(self.waiters)).contains(&conns) {
            bail!(
                "--conns must be between 1 and {} (and at most --waiters)",
                args::CONNS_MAX
            );
        }
        if self.settle.is_zero() || self.timeout <= self.settle {
            bail!("--settle must be above zero and below --timeout");
        }
        Ok(park::Shape {
            mode: self.mode,
            waiters: self.waiters,
            items: self.items,
            conns,
            settle: self.settle,
            timeout: self.timeout,
            server_pid: self.server_pid,
        })
    }
}

impl LockArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=NAMES_MAX).contains(&self.names) {
            bail!("--names must be between 1 and {NAMES_MAX}");
        }
        Ok(())
    }
}

impl WatchArgs {
    fn validate(&self) -> anyhow::Result<()> {
        if !(1..=WATCHERS_MAX).contains(&self.watchers) {
            bail!("--watchers must be between 1 and {WATCHERS_MAX}");
        }
        Ok(())
    }
}

impl BenchArgs {
    /// Whether to print JSON instead of the table and summary line.
    fn json(&self) -> bool {
        match &self.workload {
            WorkloadCmd::Put(a) => a.common.json,
            WorkloadCmd::Range(a) => a.common.json,
            WorkloadCmd::Lock(a) => a.common.json,
            WorkloadCmd::Watch(a) => a.common.json,
            WorkloadCmd::Incr(a) => a.common.json,
            WorkloadCmd::Keepalive(a) => a.common.json,
            WorkloadCmd::Park(a) => a.json,
            WorkloadCmd::Recipe(a) => a.common.json,
            WorkloadCmd::Barrier(a) => a.json,
        }
    }
}

/// Runs one workload against `endpoints` and prints its report to stdout.
pub async fn run(endpoints: Vec<String>, args: BenchArgs) -> anyhow::Result<()> {
    let json = args.json();
    let summary = measure(endpoints, args).await?;
    if json {
        println!("{}", summary.json()?);
    } else {
        print!("{}", summary.table());
        println!("{}", summary.line());
    }
    if summary.ops == 0 {
        bail!("no operation succeeded ({} errors)", summary.errors);
    }
    Ok(())
}

/// Runs one workload against `endpoints` and returns what it measured.
async fn measure(endpoints: Vec<String>, args: BenchArgs) -> anyhow::Result<Summary> {
    match args.workload {
        WorkloadCmd::Put(a) => {
            check_val_size(a.val_size)?;
            let keys = KeySpace::new(&a.keys)?;
            let w = PutWorkload::new(keys, a.val_size, a.keys.seed);
            execute(w, endpoints, &a.common).await
        }
        WorkloadCmd::Range(a) => {
            check_val_size(a.val_size)?;
            let keys = KeySpace::new(&a.keys)?;
            let w = RangeWorkload::new(keys, a.val_size, a.consistency, a.keys.seed);
            execute(w, endpoints, &a.common).await
        }
        WorkloadCmd::Lock(a) => {
            a.validate()?;
            execute(LockWorkload::new(a.names), endpoints, &a.common).await
        }
        WorkloadCmd::Watch(a) => {
            a.validate()?;
            execute(WatchWorkload::new(a.watchers), endpoints, &a.common).await
        }
        WorkloadCmd::Incr(a) => {
            a.validate()?;
            execute(IncrWorkload::new(a.mode, a.counters), endpoints, &a.common).await
        }
        WorkloadCmd::Keepalive(a) => {
            a.validate()?;
            keep_alive(endpoints, &a).await
        }
        WorkloadCmd::Park(a) => parked(endpoints, &a).await,
        WorkloadCmd::Recipe(a) => {
            a.validate()?;
            let w = RecipeWorkload::new(a.recipe, a.mode, a.names, a.permits);
            execute(w, endpoints, &a.common).await
        }
        WorkloadCmd::Barrier(a) => barriers(endpoints, &a).await,
    }
}

/// The park workload pushes on its own schedule, one item per settled herd.
async fn parked(endpoints: Vec<String>, a: &ParkArgs) -> anyhow::Result<Summary> {
    let shape = a.shape()?;
    let (outcome, extra) = park::run(&endpoints, shape).await?;
    let params = BTreeMap::from([
        ("mode".to_string(), a.mode.as_str().to_string()),
        ("waiters".to_string(), a.waiters.to_string()),
        ("items".to_string(), a.items.to_string()),
    ]);
    let used = endpoints.len().min(shape.conns);
    let shape = RunShape {
        workload: "park",
        params,
        clients: shape.waiters,
        conns: shape.conns,
        target: Target::All.as_str(),
        endpoints: endpoints[..used].to_vec(),
    };
    let mut summary = Summary::new(shape, &outcome);
    summary.extra = extra;
    Ok(summary)
}

/// The barrier workload runs rounds of its own, each timed from release to last waiter.
async fn barriers(endpoints: Vec<String>, a: &BarrierArgs) -> anyhow::Result<Summary> {
    let shape = a.shape()?;
    let endpoints = pool::select_endpoints(&endpoints, a.target).await?;
    let (outcome, extra) = barrier::run(&endpoints, shape).await?;
    let mut params = BTreeMap::from([
        ("mode".to_string(), a.mode.as_str().to_string()),
        ("waiters".to_string(), a.waiters.to_string()),
        ("rounds".to_string(), a.rounds.to_string()),
    ]);
    if a.read_only {
        params.insert("read_only".to_string(), "true".to_string());
    }
    let used = endpoints.len().min(shape.conns);
    let shape = RunShape {
        workload: "barrier",
        params,
        clients: shape.waiters,
        conns: shape.conns,
        target: a.target.as_str(),
        endpoints: endpoints[..used].to_vec(),
    };
    let mut summary = Summary::new(shape, &outcome);
    summary.extra = extra;
    Ok(summary)
}

/// The keepalive workload runs its own open-loop schedule instead of [`driver::drive`].
async fn keep_alive(endpoints: Vec<String>, a: &KeepaliveArgs) -> anyhow::Result<Summary> {
    let common = &a.common;
    common.validate()?;
    let endpoints = pool::select_endpoints(&endpoints, common.target).await?;
    let channels = keepalive::connect(&endpoints, common.conns).await?;
    let shape = a.shape();
    let ids = keepalive::grant(&channels, shape, common.timeout).await?;
    // bench/keepalive_cpu.sh starts measuring server CPU at this line.
    tracing::info!(leases = ids.len(), "leases granted; renewing");
    let outcome = keepalive::renew(&channels, ids, shape, common.limits()).await?;
    let params = BTreeMap::from([
        ("leases".to_string(), a.leases.to_string()),
        ("ttl_s".to_string(), a.ttl.to_string()),
        (
            "interval_s".to_string(),
            format!("{:.3}", a.interval.as_secs_f64()),
        ),
    ]);
    let used = endpoints.len().min(common.conns);
    let shape = RunShape {
        workload: "keepalive",
        params,
        clients: common.clients,
        conns: common.conns,
        target: common.target.as_str(),
        endpoints: endpoints[..used].to_vec(),
    };
    Ok(Summary::new(shape, &outcome))
}

async fn execute<W: Workload>(
    workload: W,
    endpoints: Vec<String>,
    common: &CommonArgs,
) -> anyhow::Result<Summary> {
    common.validate()?;
    let endpoints = pool::select_endpoints(&endpoints, common.target).await?;
    let pool = Pool::connect(endpoints, common.conns, common.clients, common.timeout).await?;
    let workload = Arc::new(workload);
    workload.prepare(&pool).await?;
    let outcome = driver::drive(workload.clone(), &pool, common.limits()).await?;
    let extra = workload.conclude(&pool, &outcome).await?;
    let shape = RunShape {
        workload: workload.name(),
        params: workload.params(),
        clients: common.clients,
        conns: common.conns,
        target: common.target.as_str(),
        endpoints: pool.endpoints.clone(),
    };
    let mut summary = Summary::new(shape, &outcome);
    summary.extra = extra;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::args::{Limits, TOTAL_DEFAULT};
    use super::*;

    /// Stands in for the top-level CLI, which nests these arguments under `bench`.
    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    #[test]
    fn put_defaults() {
        let WorkloadCmd::Put(put) = parse(&["put"]).unwrap().workload else {
            panic!("not put")
        };
        let c = &put.common;
        assert_eq!(
            (c.clients, c.conns, c.total, c.duration),
            (1, 1, None, None)
        );
        assert_eq!(c.timeout, Duration::from_secs(5));
        assert_eq!(c.target, Target::All);
        assert!(!c.json);
        assert_eq!(
            (put.keys.key_size, put.keys.key_space_size, put.val_size),
            (8, 10_000, 256)
        );
        assert!(!put.keys.sequential_keys);
        assert_eq!(
            c.limits(),
            Limits {
                total: TOTAL_DEFAULT,
                duration: None
            }
        );
        c.validate().unwrap();
    }

    #[test]
    fn range_options() {
        let args = parse(&[
            "range",
            "--consistency",
            "s",
            "--clients",
            "64",
            "--conns",
            "8",
            "--duration",
            "10s",
            "--target",
            "leader",
            "--json",
        ])
        .unwrap();
        let WorkloadCmd::Range(range) = args.workload else {
            panic!("not range")
        };
        assert_eq!(range.consistency, Consistency::Serializable);
        assert_eq!((range.common.clients, range.common.conns), (64, 8));
        assert_eq!(range.common.target, Target::Leader);
        assert!(range.common.json);
        // A duration alone bounds the run; the op budget is then unlimited.
        assert_eq!(
            range.common.limits(),
            Limits {
                total: u64::MAX,
                duration: Some(Duration::from_secs(10))
            }
        );
        let WorkloadCmd::Range(range) = parse(&["range", "--consistency", "linearizable"])
            .unwrap()
            .workload
        else {
            panic!("not range")
        };
        assert_eq!(range.consistency, Consistency::Linearizable);
    }

    #[test]
    fn lock_and_watch_defaults() {
        let WorkloadCmd::Lock(lock) = parse(&["lock"]).unwrap().workload else {
            panic!("not lock")
        };
        assert_eq!(lock.names, 8);
        assert_eq!((lock.common.clients, lock.common.conns), (1, 1));
        lock.validate().unwrap();
        let WorkloadCmd::Lock(lock) = parse(&["lock", "--names", "2", "--clients", "16"])
            .unwrap()
            .workload
        else {
            panic!("not lock")
        };
        assert_eq!((lock.names, lock.common.clients), (2, 16));

        let WorkloadCmd::Watch(watch) = parse(&["watch"]).unwrap().workload else {
            panic!("not watch")
        };
        assert_eq!(watch.watchers, 1);
        assert_eq!(watch.common.limits().total, args::TOTAL_DEFAULT);
        watch.validate().unwrap();
        let WorkloadCmd::Watch(watch) = parse(&["watch", "--watchers", "4", "--duration", "3s"])
            .unwrap()
            .workload
        else {
            panic!("not watch")
        };
        assert_eq!(watch.watchers, 4);
        assert_eq!(watch.common.duration, Some(Duration::from_secs(3)));
    }

    #[test]
    fn incr_defaults_to_cas_with_32_clients_on_8_counters() {
        let WorkloadCmd::Incr(incr) = parse(&["incr"]).unwrap().workload else {
            panic!("not incr")
        };
        assert_eq!((incr.mode, incr.counters), (IncrMode::Cas, 8));
        assert_eq!((incr.common.clients, incr.common.conns), (32, 1));
        incr.validate().unwrap();
        // Other workloads keep one client by default.
        let WorkloadCmd::Put(put) = parse(&["put"]).unwrap().workload else {
            panic!("not put")
        };
        assert_eq!(put.common.clients, 1);
        let WorkloadCmd::Incr(incr) = parse(&["incr", "--mode", "invoke", "--counters", "2"])
            .unwrap()
            .workload
        else {
            panic!("not incr")
        };
        assert_eq!((incr.mode, incr.counters), (IncrMode::Invoke, 2));
        let WorkloadCmd::Incr(incr) = parse(&["incr", "--counters", "0"]).unwrap().workload else {
            panic!("not incr")
        };
        assert!(incr.validate().is_err());
        assert!(parse(&["incr", "--mode", "swap"]).is_err());
    }

    #[test]
    fn keepalive_defaults_and_checks() {
        let keepalive = |args: &[&str]| {
            let WorkloadCmd::Keepalive(k) = parse(args).unwrap().workload else {
                panic!("not keepalive")
            };
            k
        };
        let k = keepalive(&["keepalive"]);
        assert_eq!(
            (k.leases, k.ttl, k.interval),
            (10_000, 10, Duration::from_secs(3))
        );
        k.validate().unwrap();
        let k = keepalive(&[
            "keepalive",
            "--leases",
            "5",
            "--clients",
            "4",
            "--interval",
            "500ms",
        ]);
        assert_eq!((k.shape().leases, k.shape().streams), (5, 4));
        k.validate().unwrap();
        assert!(
            keepalive(&["keepalive", "--leases", "0"])
                .validate()
                .is_err()
        );
        assert!(
            keepalive(&["keepalive", "--ttl", "3"]).validate().is_err(),
            "interval = TTL"
        );
        assert!(
            keepalive(&["keepalive", "--interval", "0s"])
                .validate()
                .is_err()
        );
    }

    #[test]
    fn park_defaults_and_checks() {
        let park = |args: &[&str]| {
            let WorkloadCmd::Park(p) = parse(args).unwrap().workload else {
                panic!("not park")
            };
            p
        };
        let p = park(&["park"]);
        let shape = p.shape().unwrap();
        assert_eq!(
            (shape.mode, shape.waiters, shape.items, shape.conns),
            (ParkMode::Invoke, 100, 20, 1)
        );
        assert_eq!(shape.settle, Duration::from_millis(500));
        // 10 000 waiters spread at 100 per connection.
        let p = park(&["park", "--waiters", "10000", "--mode", "recipe"]);
        assert_eq!(p.shape().unwrap().conns, 100);
        assert_eq!(p.shape().unwrap().mode, ParkMode::Recipe);
        let p = park(&[
            "park",
            "--waiters",
            "10",
            "--conns",
            "3",
            "--server-pid",
            "42",
        ]);
        assert_eq!(
            (p.shape().unwrap().conns, p.shape().unwrap().server_pid),
            (3, Some(42))
        );
        for bad in [
            &["park", "--waiters", "0"][..],
            &["park", "--items", "0"],
            &["park", "--waiters", "2", "--conns", "3"],
            &["park", "--settle", "0s"],
            &["park", "--settle", "5s", "--timeout", "5s"],
        ] {
            assert!(park(bad).shape().is_err(), "{bad:?}");
        }
        let too_many = (WAITERS_MAX + 1).to_string();
        assert!(park(&["park", "--waiters", &too_many]).shape().is_err());
        assert!(parse(&["park", "--mode", "poll"]).is_err());
        assert!(park(&["park", "--json"]).json);
    }

    #[test]
    fn total_and_duration_both_bound_the_run() {
        let WorkloadCmd::Put(put) = parse(&["put", "--total", "500", "--duration", "2m"])
            .unwrap()
            .workload
        else {
            panic!("not put")
        };
        assert_eq!(
            put.common.limits(),
            Limits {
                total: 500,
                duration: Some(Duration::from_secs(120))
            }
        );
    }

    #[test]
    fn invalid_shapes_are_rejected() {
        let common = |args: &[&str]| {
            let WorkloadCmd::Put(put) = parse(args).unwrap().workload else {
                panic!("not put")
            };
            put.common.validate()
        };
        assert!(common(&["put", "--clients", "4", "--conns", "8"]).is_err());
        assert!(common(&["put", "--clients", "0"]).is_err());
        assert!(common(&["put", "--total", "0"]).is_err());
        assert!(common(&["put", "--timeout", "0s"]).is_err());
        assert!(parse(&["put", "--duration", "soon"]).is_err());
        assert!(parse(&["range", "--consistency", "x"]).is_err());
        assert!(parse(&["txn"]).is_err());
        let lock = |args: &[&str]| {
            let WorkloadCmd::Lock(lock) = parse(args).unwrap().workload else {
                panic!("not lock")
            };
            lock.validate()
        };
        assert!(lock(&["lock", "--names", "0"]).is_err());
        assert!(lock(&["lock", "--names", "1000001"]).is_err());
        let watch = |args: &[&str]| {
            let WorkloadCmd::Watch(watch) = parse(args).unwrap().workload else {
                panic!("not watch")
            };
            watch.validate()
        };
        assert!(watch(&["watch", "--watchers", "0"]).is_err());
        let too_many = (WATCHERS_MAX + 1).to_string();
        assert!(watch(&["watch", "--watchers", &too_many]).is_err());
        assert!(check_val_size(args::VAL_SIZE_MAX + 1).is_err());
    }
}
