//! `barrier`: how long a barrier's release takes to reach all of its waiters (issue 21). Each
//! round holds a fresh barrier, starts `waiters` waiters on it, lets them settle into waiting,
//! releases it, and records the time from the release request to the moment the last waiter
//! returned. The latency figures of the summary are these per-round times.
//!
//! Two ways to wait, over the same connections:
//! - `module` (Baton): each waiter is one `wait` call of the built-in `barrier` module, parked
//!   by the member serving it (`--read-only`: re-run on that member without log entries);
//!   hold and release are module calls too.
//! - `client` (any etcd): etcd's `recipe.Barrier`: hold puts the key if absent, release
//!   deletes it, and a waiter reads the key and, while it exists, watches it for the delete.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use etcd_client::{Client, EventType, WatchFilterType, WatchOptions};
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout_at};

use super::recipe::{RecipeMode, delete, invoke_then, put_if_absent};
use super::{await_module, grpc, next_watch_response, run_id};
use crate::driver::{LATENCY_US_MAX, Outcome};
use crate::lean_grpc::LeanChannel;
use crate::lean_grpc::paths::{KV_RANGE, KV_TXN};
use crate::pool::{CONNECT_TIMEOUT, connect_streaming};
use baton_proto::baton::v1 as pb;
use baton_proto::etcdserverpb::{RangeRequest, RangeResponse, TxnResponse};

/// Every run's barriers are `<this><run id>/<round>`, apart from real data and earlier runs.
const BARRIER_PREFIX: &str = "bench/barrier/";
pub(crate) const WAITERS_MAX: usize = 10_000;
pub(crate) const ROUNDS_MAX: u64 = 10_000;
const READY_POLL: Duration = Duration::from_millis(5);
const BARRIER_MODULE: &str = "barrier";

/// What to run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) mode: RecipeMode,
    pub(crate) waiters: usize,
    pub(crate) rounds: u64,
    pub(crate) conns: usize,
    /// Module mode: waiters call `wait` read-only.
    pub(crate) read_only: bool,
    /// Pause between the last waiter sending its wait and the release, so every wait is in
    /// place on the server (a module call is parked only once it has run).
    pub(crate) settle: Duration,
    /// Bound on each phase of a round.
    pub(crate) timeout: Duration,
    /// No round starts after this long.
    pub(crate) duration: Option<Duration>,
}

/// The connections the waiters share.
struct Conns {
    lean: Vec<LeanChannel>,
    /// Client mode: for watches.
    streaming: Vec<Client>,
}

/// Runs the rounds against `endpoints` (waiters round robin; hold and release on the first).
pub(crate) async fn run(
    endpoints: &[String],
    shape: Shape,
) -> anyhow::Result<(Outcome, BTreeMap<String, String>)> {
    let first = endpoints.first().context("no endpoints given")?;
    let control = LeanChannel::connect(first, CONNECT_TIMEOUT, shape.timeout).await?;
    if shape.mode == RecipeMode::Module {
        await_module(&control, BARRIER_MODULE, "--mode module", "--mode client").await?;
    }
    let mut conns = Conns {
        lean: Vec::with_capacity(shape.conns),
        streaming: Vec::new(),
    };
    for j in 0..shape.conns {
        let endpoint = &endpoints[j % endpoints.len()];
        conns
            .lean
            .push(LeanChannel::connect(endpoint, CONNECT_TIMEOUT, shape.timeout).await?);
        if shape.mode == RecipeMode::Client {
            conns.streaming.push(connect_streaming(endpoint).await?);
        }
    }
    let prefix = format!("{BARRIER_PREFIX}{}/", run_id());
    let mut outcome = Outcome::empty()?;
    let mut first_ms = Vec::new();
    let started = Instant::now();
    for round in 0..shape.rounds {
        if shape.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let name = format!("{prefix}{round}");
        match one_round(&control, &conns, &shape, &name).await {
            Ok(times) => {
                let last = times.last.as_micros().min(u128::from(LATENCY_US_MAX)) as u64;
                outcome
                    .latency_us
                    .record(last.max(1))
                    .context("recording a round")?;
                outcome.ok += 1;
                first_ms.push(times.first.as_secs_f64() * 1e3);
            }
            Err(e) => {
                outcome.errors += 1;
                outcome.note_error(format!("{e:#}"));
            }
        }
    }
    outcome.elapsed = started.elapsed();
    let mut extra = BTreeMap::new();
    if !first_ms.is_empty() {
        first_ms.sort_by(f64::total_cmp);
        let median = first_ms[first_ms.len() / 2];
        extra.insert("first_waiter_ms_p50".to_string(), format!("{median:.2}"));
    }
    extra.insert("settle_ms".into(), shape.settle.as_millis().to_string());
    Ok((outcome, extra))
}

/// From the release request to the first and to the last waiter returning.
struct RoundTimes {
    first: Duration,
    last: Duration,
}

async fn one_round(
    control: &LeanChannel,
    conns: &Conns,
    shape: &Shape,
    name: &str,
) -> anyhow::Result<RoundTimes> {
    hold(control, shape.mode, name).await?;
    let ready = Arc::new(AtomicUsize::new(0));
    let mut waiters = JoinSet::new();
    for i in 0..shape.waiters {
        let lean = conns.lean[i % conns.lean.len()].clone();
        let ready = ready.clone();
        let name = name.to_string();
        match shape.mode {
            RecipeMode::Module => {
                let read_only = shape.read_only;
                waiters.spawn(async move { module_wait(&lean, &name, read_only, &ready).await })
            }
            RecipeMode::Client => {
                let conn = conns.streaming[i % conns.streaming.len()].clone();
                waiters.spawn(async move { client_wait(&lean, conn, &name, &ready).await })
            }
        };
    }
    let deadline = Instant::now() + shape.timeout;
    while ready.load(Ordering::Acquire) < shape.waiters {
        if let Some(done) = waiters.try_join_next() {
            let returned = done.context("a waiter panicked")??;
            bail!("a waiter returned at {returned:?} before the release");
        }
        if Instant::now() >= deadline {
            bail!(
                "only {} of {} waiters waiting after {:?}",
                ready.load(Ordering::Acquire),
                shape.waiters,
                shape.timeout
            );
        }
        sleep(READY_POLL).await;
    }
    sleep(shape.settle).await;
    let released = Instant::now();
    release(control, shape.mode, name).await?;
    let mut first = None;
    let mut last = released;
    let end = Instant::now() + shape.timeout;
    while let Some(done) = timeout_at(end, waiters.join_next())
        .await
        .with_context(|| {
            format!(
                "waiters still waiting {:?} after the release",
                shape.timeout
            )
        })?
    {
        let returned = done.context("a waiter panicked")??;
        first = Some(first.map_or(returned, |f: Instant| f.min(returned)));
        last = last.max(returned);
    }
    Ok(RoundTimes {
        first: first
            .unwrap_or(released)
            .saturating_duration_since(released),
        last: last.saturating_duration_since(released),
    })
}

async fn hold(control: &LeanChannel, mode: RecipeMode, name: &str) -> anyhow::Result<()> {
    match mode {
        RecipeMode::Module => invoke(control, "hold", name, false, || {}).await,
        RecipeMode::Client => {
            // recipe.Barrier.Hold: create the key, only if absent.
            let txn = put_if_absent(name, Vec::new());
            let reply: TxnResponse = control.unary(KV_TXN, &txn).await.map_err(grpc("hold"))?;
            if !reply.succeeded {
                bail!("{name}: the barrier already exists");
            }
            Ok(())
        }
    }
}

async fn release(control: &LeanChannel, mode: RecipeMode, name: &str) -> anyhow::Result<()> {
    match mode {
        RecipeMode::Module => invoke(control, "release", name, false, || {}).await,
        RecipeMode::Client => delete(control, name).await,
    }
}

/// A module waiter: one `wait` call; counts itself ready once the call is sent.
async fn module_wait(
    lean: &LeanChannel,
    name: &str,
    read_only: bool,
    ready: &AtomicUsize,
) -> anyhow::Result<Instant> {
    invoke(lean, "wait", name, read_only, || {
        ready.fetch_add(1, Ordering::AcqRel);
    })
    .await?;
    Ok(Instant::now())
}

/// recipe.Barrier.Wait: read the key; while it exists, watch it (from the revision read) for
/// its deletion. Counts itself ready once the watch is confirmed.
async fn client_wait(
    lean: &LeanChannel,
    mut conn: Client,
    name: &str,
    ready: &AtomicUsize,
) -> anyhow::Result<Instant> {
    let read = RangeRequest {
        key: name.as_bytes().to_vec(),
        ..Default::default()
    };
    let read: RangeResponse = lean.unary(KV_RANGE, &read).await.map_err(grpc("get"))?;
    if read.kvs.is_empty() {
        bail!("{name}: the barrier was already released");
    }
    let from = read.header.map(|h| h.revision).unwrap_or(0) + 1;
    let options = WatchOptions::new()
        .with_start_revision(from)
        .with_filters([WatchFilterType::NoPut]);
    let mut stream = conn
        .watch(name, Some(options))
        .await
        .context("opening watch")?;
    match stream.message().await.context("awaiting watch creation")? {
        Some(response) if response.created() => {}
        _ => bail!("watch: not confirmed"),
    }
    ready.fetch_add(1, Ordering::AcqRel);
    loop {
        let response = next_watch_response(&mut stream).await?;
        if response
            .events()
            .iter()
            .any(|e| e.event_type() == EventType::Delete)
        {
            return Ok(Instant::now());
        }
    }
}

async fn invoke(
    lean: &LeanChannel,
    function: &str,
    name: &str,
    read_only: bool,
    sent: impl FnOnce() + Send,
) -> anyhow::Result<()> {
    let request = pb::InvokeRequest {
        name: BARRIER_MODULE.to_string(),
        function: function.to_string(),
        input: serde_json::to_vec(&json!({ "name": name }))?,
        read_only,
        ..Default::default()
    };
    invoke_then(lean, request, sent).await
}
