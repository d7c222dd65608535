//! `park`: how consumers waiting on one queue cost as their number grows (issue 19, "how cost
//! grows"). `waiters` consumers wait on one empty queue; then `items` items are pushed one at a
//! time (a plain Put of `<queue>/<seq>`), each once the previous push's herd has settled: the
//! log index has not moved for `settle` (and, for the recipe, every waiter has handled every
//! event). Measured per push: the time from the Put to the moment a waiter holds the item, the
//! log entries appended (the Status raft index) and, given the member's pid, its CPU; once,
//! with every waiter waiting: the member's RSS and idle CPU. Every pushed item must reach
//! exactly one waiter and the queue must end empty, or the run fails.
//!
//! Two ways to wait:
//! - `invoke` (Baton): each waiter is one call of the built-in `queue` module's `pop`, parked
//!   by the member; a push wakes every parked call, each runs again as a log command, one wins
//!   and the rest park again. A winner pops again at once, so `waiters` calls stay parked.
//! - `recipe` (any etcd): the client-side queue etcd ships (clientv3 `recipes`, `Dequeue`):
//!   each waiter watches the prefix; on every put it races a Txn that deletes the key if its
//!   mod_revision is unchanged, then (won or lost) reads the oldest key and claims it if one is
//!   left. Unlike the recipe, a waiter keeps its one watch open instead of opening a new one
//!   after each lost race: less work for etcd, never more.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::ValueEnum;
use etcd_client::{Client, EventType, WatchFilterType, WatchOptions};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};

use super::{await_module, claim_txn, next_watch_response, prefix_end, run_id};
use crate::driver::{LATENCY_US_MAX, Outcome};
use crate::lean_grpc::LeanChannel;
use crate::pool::{CONNECT_TIMEOUT, connect_streaming};
use baton_proto::baton::v1 as pb;
use baton_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use baton_proto::etcdserverpb::{
    PutRequest, PutResponse, RangeRequest, RangeResponse, StatusRequest, StatusResponse,
    TxnResponse,
};

/// Every run's queue is `<this><run id>`, apart from real data and earlier runs.
const PARK_PREFIX: &str = "bench/park/";
pub(crate) const WAITERS_MAX: usize = 100_000;
pub(crate) const ITEMS_MAX: u64 = 100_000;
/// Waiters per HTTP/2 connection unless `--conns` says otherwise. Neither server caps streams
/// per connection (tonic sets no limit, etcd 3.4 allows 2^32-1); spreading them keeps one
/// connection's task from carrying a whole herd.
const WAITERS_PER_CONN: usize = 100;
/// How often the log index is read while waiting for it to settle.
const SETTLE_POLL: Duration = Duration::from_millis(25);
/// How long the member's CPU is sampled while every waiter waits and nothing else happens.
const IDLE_SAMPLE: Duration = Duration::from_secs(2);
/// A parked call's gRPC deadline: longer than any run, which ends by dropping its calls.
const WAITER_DEADLINE: Duration = Duration::from_secs(24 * 60 * 60);
/// Linux reports a process's CPU time in USER_HZ ticks, 100 per second on every architecture.
const PROC_TICKS_PER_S: u64 = 100;
/// etcd sheds proposals once its apply falls 5000 entries behind ("too many requests"); a
/// recipe waiter then pauses this long and tries again, as an application would.
const REFUSED_PAUSE: Duration = Duration::from_millis(25);
/// A request refused this many times in a row fails its waiter.
const REFUSED_ATTEMPTS_MAX: u32 = 1_000;
const QUEUE_MODULE: &str = "queue";
use crate::lean_grpc::paths::{KV_PUT, KV_RANGE, KV_TXN, MAINTENANCE_STATUS, MODULES_INVOKE};

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParkMode {
    /// Each waiter is a `queue pop` call the member parks (Baton only).
    Invoke,
    /// Each waiter runs etcd's client-side queue recipe: watch, then race a Txn (any etcd).
    Recipe,
}

impl ParkMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ParkMode::Invoke => "invoke",
            ParkMode::Recipe => "recipe",
        }
    }
}

/// What to run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) mode: ParkMode,
    pub(crate) waiters: usize,
    pub(crate) items: u64,
    pub(crate) conns: usize,
    /// The log counts as settled once its index has not moved for this long.
    pub(crate) settle: Duration,
    /// Bound on each phase: all waiters waiting, one item delivered, the log settling.
    pub(crate) timeout: Duration,
    pub(crate) server_pid: Option<u32>,
}

/// Connections for `waiters` unless the caller chose: one per [`WAITERS_PER_CONN`].
pub(crate) fn default_conns(waiters: usize) -> usize {
    waiters.div_ceil(WAITERS_PER_CONN).max(1)
}

/// What the waiters report, read by the controller.
#[derive(Debug, Default)]
struct Ledger {
    /// Push number -> when a waiter held the item.
    delivered: HashMap<u64, Instant>,
    /// Items delivered twice, or never pushed, or with the wrong value.
    anomalies: Vec<String>,
    /// Waiters that stopped (a failed call or stream); the run is then not at `waiters`.
    failures: Vec<String>,
    /// Invoke mode, over the winning calls: guest runs after the first, and the pushes each
    /// call waited through.
    wakes: u64,
    pushes_waited: u64,
    runs: u64,
}

impl Ledger {
    /// Records that a waiter holds `key` = `value` of `queue`, `pushes` items having been pushed.
    fn deliver(&mut self, queue: &str, key: &[u8], value: &[u8], at: Instant, pushes: u64) {
        let key = String::from_utf8_lossy(key);
        let Some(seq) = item_seq(queue, &key) else {
            self.anomalies
                .push(format!("{key}: not an item of {queue}"));
            return;
        };
        if seq == 0 || seq > pushes {
            self.anomalies
                .push(format!("{key}: delivered but never pushed"));
        } else if value != seq.to_string().as_bytes() {
            let value = String::from_utf8_lossy(value);
            self.anomalies.push(format!("{key}: delivered {value:?}"));
        } else if self.delivered.insert(seq, at).is_some() {
            self.anomalies.push(format!("{key}: DELIVERED TWICE"));
        }
    }

    /// A winning call's `runs`, issued when `since` items had been pushed, won item `seq`. The
    /// call ran first before push `since + 1` (pushes wait for the log to settle), so each
    /// push after that could wake it.
    fn count_runs(&mut self, runs: u32, since: u64, seq: u64) {
        self.runs += u64::from(runs);
        self.wakes += u64::from(runs.saturating_sub(1));
        self.pushes_waited += seq.saturating_sub(since);
    }

    /// Fails unless items 1..=items each arrived exactly once and nothing else did.
    fn check(&self, items: u64) -> anyhow::Result<()> {
        if let Some(first) = self.anomalies.first() {
            bail!("{} bad deliveries, first: {first}", self.anomalies.len());
        }
        let missing: Vec<u64> = (1..=items)
            .filter(|s| !self.delivered.contains_key(s))
            .collect();
        if !missing.is_empty() {
            bail!("ITEMS LOST: {} never delivered: {missing:?}", missing.len());
        }
        Ok(())
    }
}

/// Item `seq`'s key: zero-padded, so key order is push order.
fn item_key(queue: &str, seq: u64) -> String {
    format!("{queue}/{seq:020}")
}

fn item_seq(queue: &str, key: &str) -> Option<u64> {
    let rest = key.strip_prefix(queue)?.strip_prefix('/')?;
    if rest.len() != 20 {
        return None;
    }
    rest.parse().ok()
}

/// State shared by the controller and the waiters.
struct Shared {
    mode: ParkMode,
    queue: String,
    waiters: usize,
    ledger: watch::Sender<Ledger>,
    /// Items pushed so far (set just before each push).
    pushes: AtomicU64,
    /// Waiters that are waiting: their first call is out (invoke) or their watch confirmed.
    ready: AtomicUsize,
    /// Recipe: put events handled, over all waiters; each waiter handles every push once.
    handled: AtomicU64,
    /// Recipe: Txns and reads sent, over all waiters, and those the server refused.
    txns: AtomicU64,
    reads: AtomicU64,
    refused: AtomicU64,
}

impl Shared {
    fn fail(&self, message: String) {
        self.ledger.send_modify(|l| l.failures.push(message));
    }

    fn failure(&self) -> Option<String> {
        self.ledger.borrow().failures.first().cloned()
    }

    fn deliver(&self, key: &[u8], value: &[u8], at: Instant) {
        let pushes = self.pushes.load(Ordering::Acquire);
        self.ledger
            .send_modify(|l| l.deliver(&self.queue, key, value, at, pushes));
    }

    /// Recipe waiters have all handled every push: none still races for an item.
    fn recipe_quiet(&self) -> bool {
        let pushes = self.pushes.load(Ordering::Acquire);
        self.handled.load(Ordering::Acquire) == pushes * self.waiters as u64
    }
}

/// One Baton waiter: pops, and pops again after every item it gets.
async fn pop_forever(channel: LeanChannel, shared: Arc<Shared>) {
    let input = serde_json::json!({ "queue": shared.queue }).to_string();
    let mut first = true;
    loop {
        let since = shared.pushes.load(Ordering::Acquire);
        let request = pb::InvokeRequest {
            name: QUEUE_MODULE.to_string(),
            function: "pop".to_string(),
            input: input.clone().into_bytes(),
            ..Default::default()
        };
        let ready = &shared.ready;
        let was_first = std::mem::replace(&mut first, false);
        let reply: Result<pb::InvokeResponse, _> = channel
            .unary_then(MODULES_INVOKE, &request, move || {
                if was_first {
                    ready.fetch_add(1, Ordering::AcqRel);
                }
            })
            .await;
        let at = Instant::now();
        let reply = match reply {
            Ok(reply) => reply,
            Err(s) => return shared.fail(format!("pop: {}: {}", s.code(), s.message())),
        };
        let item: serde_json::Value = match serde_json::from_slice(&reply.output) {
            Ok(item) => item,
            Err(e) => return shared.fail(format!("pop answered something not JSON: {e}")),
        };
        let (Some(key), Some(value)) = (item["key"].as_str(), item["value"].as_str()) else {
            return shared.fail(format!("pop answered {item}, not an item"));
        };
        shared.deliver(key.as_bytes(), value.as_bytes(), at);
        let seq = item_seq(&shared.queue, key).unwrap_or(0);
        shared
            .ledger
            .send_modify(|l| l.count_runs(reply.runs, since, seq));
    }
}

/// One etcd waiter, running the recipe until the run ends or something fails.
async fn recipe_forever(conn: Client, channel: LeanChannel, shared: Arc<Shared>) {
    if let Err(e) = recipe(conn, &channel, &shared).await {
        shared.fail(format!("{e:#}"));
    }
}

async fn recipe(mut conn: Client, channel: &LeanChannel, shared: &Shared) -> anyhow::Result<()> {
    let prefix = format!("{}/", shared.queue);
    let seen = dequeue(channel, shared, prefix.as_bytes()).await?;
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(seen + 1)
        .with_filters([WatchFilterType::NoDelete]);
    let mut stream = conn
        .watch(prefix.as_str(), Some(options))
        .await
        .context("opening watch")?;
    match stream.message().await.context("awaiting watch creation")? {
        Some(response) if response.created() => {}
        _ => bail!("watch: not confirmed"),
    }
    shared.ready.fetch_add(1, Ordering::AcqRel);
    loop {
        let response = next_watch_response(&mut stream).await?;
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            if event.event_type() != EventType::Put {
                continue;
            }
            if claim(channel, shared, kv.key(), kv.mod_revision()).await? {
                shared.deliver(kv.key(), kv.value(), Instant::now());
            }
            // Won or lost, the recipe's next Dequeue starts with a read of the oldest item.
            dequeue(channel, shared, prefix.as_bytes()).await?;
            shared.handled.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Claims the oldest items until none is left; returns the revision the queue was seen empty at.
async fn dequeue(channel: &LeanChannel, shared: &Shared, prefix: &[u8]) -> anyhow::Result<i64> {
    loop {
        let oldest = RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            limit: 1,
            sort_order: SortOrder::Ascend as i32,
            sort_target: SortTarget::Mod as i32,
            ..Default::default()
        };
        let read: RangeResponse = call(channel, shared, &shared.reads, KV_RANGE, &oldest)
            .await
            .context("get oldest")?;
        let Some(kv) = read.kvs.first() else {
            return Ok(read.header.map(|h| h.revision).unwrap_or(0));
        };
        if claim(channel, shared, &kv.key, kv.mod_revision).await? {
            shared.deliver(&kv.key, &kv.value, Instant::now());
        }
    }
}

/// Deletes `key` if it is still at `mod_revision`: whoever deletes it has the item.
async fn claim(
    channel: &LeanChannel,
    shared: &Shared,
    key: &[u8],
    mod_revision: i64,
) -> anyhow::Result<bool> {
    let txn = claim_txn(key, mod_revision);
    let reply: TxnResponse = call(channel, shared, &shared.txns, KV_TXN, &txn)
        .await
        .context("claim txn")?;
    Ok(reply.succeeded)
}

/// One recipe request, counted in `sent`, tried again while the server sheds load.
async fn call<Q, R>(
    channel: &LeanChannel,
    shared: &Shared,
    sent: &AtomicU64,
    path: &str,
    request: &Q,
) -> anyhow::Result<R>
where
    Q: prost::Message,
    R: prost::Message + Default,
{
    for _ in 0..REFUSED_ATTEMPTS_MAX {
        sent.fetch_add(1, Ordering::Relaxed);
        match channel.unary(path, request).await {
            Ok(reply) => return Ok(reply),
            Err(s) if is_shedding(&s) => {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                sleep(REFUSED_PAUSE).await;
            }
            Err(s) => return Err(grpc(path, &s)),
        }
    }
    bail!("{path}: refused {REFUSED_ATTEMPTS_MAX} times in a row")
}

/// etcd 3.4 sends "too many requests" with code Unknown (its error table lacks a gRPC
/// status for it); later versions use ResourceExhausted.
fn is_shedding(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::ResourceExhausted
        || status.message().contains("too many requests")
}

/// The member's CPU time and memory, read from /proc (same machine only).
struct Member {
    pid: u32,
}

impl Member {
    /// utime + stime, in USER_HZ ticks.
    fn cpu_ticks(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/stat", self.pid);
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_cpu_ticks(&stat).with_context(|| format!("{path}: unexpected format"))
    }

    fn rss_kib(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_rss_kib(&status).with_context(|| format!("{path}: no VmRSS line"))
    }
}

/// Fields 14 and 15 of `/proc/<pid>/stat`, counted after the command name, which may itself
/// hold spaces and parentheses.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn ticks_ms(ticks: u64) -> f64 {
    ticks as f64 * 1_000.0 / PROC_TICKS_PER_S as f64
}

fn grpc(what: &str, s: &tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{what}: {}: {}", s.code(), s.message())
}

async fn raft_index(control: &LeanChannel) -> anyhow::Result<u64> {
    let status: StatusResponse = control
        .unary(MAINTENANCE_STATUS, &StatusRequest {})
        .await
        .map_err(|s| grpc("status", &s))?;
    Ok(status.raft_index)
}

/// Waits until the log index has stood still for `shape.settle` (and every recipe waiter has
/// handled every push); returns that index.
async fn settle(control: &LeanChannel, shared: &Shared, shape: &Shape) -> anyhow::Result<u64> {
    let deadline = Instant::now() + shape.timeout;
    let mut last = raft_index(control).await?;
    let mut still_since = Instant::now();
    loop {
        if let Some(failure) = shared.failure() {
            bail!("a waiter stopped: {failure}");
        }
        if Instant::now() >= deadline {
            bail!("the log did not settle within {:?}", shape.timeout);
        }
        sleep(SETTLE_POLL).await;
        let index = raft_index(control).await?;
        let quiet = shared.mode == ParkMode::Invoke || shared.recipe_quiet();
        if index != last || !quiet {
            last = index;
            still_since = Instant::now();
        } else if still_since.elapsed() >= shape.settle {
            return Ok(index);
        }
    }
}

/// Starts the waiters, `conns` connections' worth, spread over `endpoints`.
async fn start_waiters(
    endpoints: &[String],
    shape: &Shape,
    shared: &Arc<Shared>,
) -> anyhow::Result<JoinSet<()>> {
    let mut channels = Vec::with_capacity(shape.conns);
    let mut watch_conns = Vec::new();
    for j in 0..shape.conns {
        let endpoint = &endpoints[j % endpoints.len()];
        channels.push(LeanChannel::connect(endpoint, CONNECT_TIMEOUT, WAITER_DEADLINE).await?);
        if shape.mode == ParkMode::Recipe {
            watch_conns.push(connect_streaming(endpoint).await?);
        }
    }
    let mut tasks = JoinSet::new();
    for i in 0..shape.waiters {
        let channel = channels[i % channels.len()].clone();
        let shared = shared.clone();
        match shape.mode {
            ParkMode::Invoke => tasks.spawn(pop_forever(channel, shared)),
            ParkMode::Recipe => {
                let conn = watch_conns[i % watch_conns.len()].clone();
                tasks.spawn(recipe_forever(conn, channel, shared))
            }
        };
    }
    Ok(tasks)
}

/// Waits until every waiter is waiting and the log has settled.
async fn all_waiting(control: &LeanChannel, shared: &Shared, shape: &Shape) -> anyhow::Result<()> {
    let deadline = Instant::now() + shape.timeout;
    while shared.ready.load(Ordering::Acquire) < shape.waiters {
        if let Some(failure) = shared.failure() {
            bail!("a waiter stopped: {failure}");
        }
        if Instant::now() >= deadline {
            bail!(
                "only {} of {} waiters waiting after {:?}",
                shared.ready.load(Ordering::Acquire),
                shape.waiters,
                shape.timeout
            );
        }
        sleep(SETTLE_POLL).await;
    }
    settle(control, shared, shape).await?;
    if !shared.ledger.borrow().delivered.is_empty() {
        bail!("{} holds items before the first push", shared.queue);
    }
    Ok(())
}

/// Runs the workload against `endpoints` (waiters round robin; pushes and Status to the
/// first) and returns what it measured and the figures for the summary's `extra`.
pub(crate) async fn run(
    endpoints: &[String],
    shape: Shape,
) -> anyhow::Result<(Outcome, BTreeMap<String, String>)> {
    let first = endpoints.first().context("no endpoints given")?;
    let control = LeanChannel::connect(first, CONNECT_TIMEOUT, shape.timeout).await?;
    if shape.mode == ParkMode::Invoke {
        await_module(&control, QUEUE_MODULE, "--mode invoke", "--mode recipe").await?;
    }
    let queue = format!("{PARK_PREFIX}{}", run_id());
    let member = shape.server_pid.map(|pid| Member { pid });
    let (ledger, _) = watch::channel(Ledger::default());
    let shared = Arc::new(Shared {
        mode: shape.mode,
        queue,
        waiters: shape.waiters,
        ledger,
        pushes: AtomicU64::new(0),
        ready: AtomicUsize::new(0),
        handled: AtomicU64::new(0),
        txns: AtomicU64::new(0),
        reads: AtomicU64::new(0),
        refused: AtomicU64::new(0),
    });
    // The baseline once start-up's work (a fresh member's module deploys) is done.
    settle(&control, &shared, &shape).await?;
    let rss_base_kib = member.as_ref().map(Member::rss_kib).transpose()?;
    let tasks = start_waiters(endpoints, &shape, &shared).await?;
    all_waiting(&control, &shared, &shape).await?;
    tracing::info!(waiters = shape.waiters, "all waiting; pushing");

    let mut extra = BTreeMap::new();
    let mut idle_ms_per_s = 0.0;
    if let Some(member) = &member {
        extra.insert("rss_mb_base".into(), mib(rss_base_kib.unwrap_or(0)));
        extra.insert("rss_mb_parked".into(), mib(member.rss_kib()?));
        let (c0, t0) = (member.cpu_ticks()?, Instant::now());
        sleep(IDLE_SAMPLE).await;
        let (c1, t1) = (member.cpu_ticks()?, Instant::now());
        idle_ms_per_s = ticks_ms(c1.saturating_sub(c0)) / (t1 - t0).as_secs_f64();
        extra.insert(
            "idle_cpu_pct".into(),
            format!("{:.1}", idle_ms_per_s / 10.0),
        );
    }

    let pushed = push_all(&control, &shared, &shape, member.as_ref()).await?;
    let left = items_left(&control, &shared.queue).await?;
    drop(tasks);
    let ledger = shared.ledger.borrow();
    ledger.check(shape.items)?;
    if let Some(failure) = ledger.failures.first() {
        bail!(
            "{} waiters stopped, first: {failure}",
            ledger.failures.len()
        );
    }
    if left != 0 {
        bail!(
            "{left} items left in {} after every push was delivered",
            shared.queue
        );
    }

    let items = shape.items as f64;
    extra.insert("settle_ms".into(), shape.settle.as_millis().to_string());
    extra.insert(
        "entries_per_push".into(),
        format!("{:.2}", pushed.entries as f64 / items),
    );
    match shape.mode {
        ParkMode::Invoke => {
            // Each winning call ran once, plus once per wake; over the pushes it waited through,
            // that is how many times a push woke each parked call.
            let per = ledger.wakes as f64 / ledger.pushes_waited.max(1) as f64;
            extra.insert("wakes_per_parked_call_per_push".into(), format!("{per:.3}"));
            extra.insert("winner_runs".into(), ledger.runs.to_string());
        }
        ParkMode::Recipe => {
            let txns = shared.txns.load(Ordering::Relaxed) - pushed.txns_before;
            let reads = shared.reads.load(Ordering::Relaxed) - pushed.reads_before;
            extra.insert(
                "txns_per_push".into(),
                format!("{:.2}", txns as f64 / items),
            );
            extra.insert(
                "reads_per_push".into(),
                format!("{:.2}", reads as f64 / items),
            );
            let refused = shared.refused.load(Ordering::Relaxed) - pushed.refused_before;
            extra.insert(
                "refused_per_push".into(),
                format!("{:.2}", refused as f64 / items),
            );
        }
    }
    if member.is_some() {
        // The settle wait is idle time; leave out what the member spends idling.
        let busy_ms = ticks_ms(pushed.cpu_ticks) - idle_ms_per_s * pushed.wall.as_secs_f64();
        extra.insert(
            "cpu_ms_per_push".into(),
            format!("{:.2}", busy_ms.max(0.0) / items),
        );
    }
    Ok((pushed.outcome, extra))
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// What the push phase measured.
struct Pushed {
    outcome: Outcome,
    /// Log entries appended from the first push until the last push's herd settled.
    entries: u64,
    /// Member CPU over the same windows, and their total length.
    cpu_ticks: u64,
    wall: Duration,
    txns_before: u64,
    reads_before: u64,
    refused_before: u64,
}

/// Pushes the items one at a time, each after the previous one's herd settled.
async fn push_all(
    control: &LeanChannel,
    shared: &Shared,
    shape: &Shape,
    member: Option<&Member>,
) -> anyhow::Result<Pushed> {
    let mut pushed = Pushed {
        outcome: Outcome::empty()?,
        entries: 0,
        cpu_ticks: 0,
        wall: Duration::ZERO,
        txns_before: shared.txns.load(Ordering::Relaxed),
        reads_before: shared.reads.load(Ordering::Relaxed),
        refused_before: shared.refused.load(Ordering::Relaxed),
    };
    let mut delivered = shared.ledger.subscribe();
    let mut index = raft_index(control).await?;
    let phase = Instant::now();
    for seq in 1..=shape.items {
        let cpu_before = member.map(Member::cpu_ticks).transpose()?;
        shared.pushes.store(seq, Ordering::Release);
        let put = PutRequest {
            key: item_key(&shared.queue, seq).into_bytes(),
            value: seq.to_string().into_bytes(),
            ..Default::default()
        };
        let sent = Instant::now();
        let _: PutResponse = control
            .unary(KV_PUT, &put)
            .await
            .map_err(|s| grpc("push", &s))?;
        let arrived = tokio::time::timeout(
            shape.timeout,
            delivered.wait_for(|l| l.delivered.contains_key(&seq) || !l.failures.is_empty()),
        )
        .await
        .with_context(|| format!("item {seq} not delivered within {:?}", shape.timeout))?
        .context("the waiters' ledger closed")?
        .delivered
        .get(&seq)
        .copied();
        let Some(arrived) = arrived else {
            bail!("a waiter stopped: {}", shared.failure().unwrap_or_default());
        };
        let us = u64::try_from(arrived.saturating_duration_since(sent).as_micros())
            .unwrap_or(LATENCY_US_MAX);
        pushed.outcome.latency_us.saturating_record(us.max(1));
        pushed.outcome.ok += 1;
        let settled = settle(control, shared, shape).await?;
        pushed.entries += settled.saturating_sub(index);
        index = settled;
        if let (Some(member), Some(before)) = (member, cpu_before) {
            pushed.cpu_ticks += member.cpu_ticks()?.saturating_sub(before);
        }
        pushed.wall += sent.elapsed();
    }
    pushed.outcome.elapsed = phase.elapsed();
    Ok(pushed)
}

/// Keys left under the queue's prefix.
async fn items_left(control: &LeanChannel, queue: &str) -> anyhow::Result<i64> {
    let prefix = format!("{queue}/").into_bytes();
    let count = RangeRequest {
        range_end: prefix_end(&prefix),
        key: prefix,
        count_only: true,
        ..Default::default()
    };
    let read: RangeResponse = control
        .unary(KV_RANGE, &count)
        .await
        .map_err(|s| grpc("count items", &s))?;
    Ok(read.count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_per_hundred_waiters() {
        assert_eq!(default_conns(1), 1);
        assert_eq!(default_conns(100), 1);
        assert_eq!(default_conns(101), 2);
    }

    #[test]
    fn item_keys_sort_in_push_order_and_parse_back() {
        let (k9, k10) = (item_key("q", 9), item_key("q", 10));
        assert!(k9 < k10, "{k9} {k10}");
        assert_eq!(item_seq("q", &k10), Some(10));
        assert_eq!(item_seq("q", "q/7"), None);
        assert_eq!(item_seq("q", &item_key("other", 1)), None);
        assert_eq!(prefix_end(b"q/"), b"q0");
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b");
    }

    #[test]
    fn every_item_once_or_the_run_fails() {
        let at = Instant::now();
        let mut ledger = Ledger::default();
        ledger.deliver("q", item_key("q", 1).as_bytes(), b"1", at, 2);
        assert!(ledger.check(2).unwrap_err().to_string().contains("LOST"));
        ledger.deliver("q", item_key("q", 2).as_bytes(), b"2", at, 2);
        ledger.check(2).unwrap();
        for (key, value) in [
            (item_key("q", 2), "2"), // again
            (item_key("q", 3), "3"), // never pushed
            (item_key("q", 1), "x"), // wrong value
            ("q/1".to_string(), "1"),
        ] {
            let mut bad = Ledger::default();
            bad.deliver("q", key.as_bytes(), value.as_bytes(), at, 2);
            bad.deliver("q", key.as_bytes(), value.as_bytes(), at, 2);
            assert!(bad.check(0).is_err(), "{key} = {value}");
        }
        ledger.deliver("q", item_key("q", 2).as_bytes(), b"2", at, 2);
        let twice = ledger.check(2).unwrap_err().to_string();
        assert!(twice.contains("DELIVERED TWICE"), "{twice}");
    }

    #[test]
    fn wakes_are_counted_over_the_pushes_each_winner_waited() {
        let mut ledger = Ledger::default();
        // Parked before push 1, won push 3: woken by pushes 1, 2 and 3.
        ledger.count_runs(4, 0, 3);
        // Issued after push 3 (its first run before push 4, as the settling makes sure), won
        // push 5: woken by pushes 4 and 5.
        ledger.count_runs(3, 3, 5);
        assert_eq!((ledger.wakes, ledger.pushes_waited, ledger.runs), (5, 5, 7));
    }

    #[test]
    fn proc_figures_parse() {
        let stat = "4242 (baton (x) y) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 9 0 100 1 1";
        assert_eq!(parse_cpu_ticks(stat), Some(175));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        let status = "Name:\tbaton\nVmPeak:\t  9 kB\nVmRSS:\t   51200 kB\n";
        assert_eq!(parse_rss_kib(status), Some(51_200));
        assert_eq!(mib(51_200), "50.0");
    }
}
