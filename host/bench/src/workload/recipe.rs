//! `recipe`: the coordination recipes end to end, one full cycle per operation, done two ways
//! over the same connections (issue 21's benchmarks):
//!
//! - `module` (Baton): the built-in recipe modules, one call per step; a call that must wait
//!   (a held lock, no free permit, an empty queue) is parked by the member and re-run through
//!   the log when what it waits on changes.
//! - `client` (any etcd): etcd's client-side algorithm for the same recipe over KV and Watch,
//!   step by step as etcd's Go client does it.
//!
//! Recipes (operation = one cycle):
//! - `lock`: acquire then release a name (`concurrency.Mutex`: put the session's key under the
//!   name if absent, read the oldest contender, watch the key just ahead until it is deleted;
//!   release deletes the key).
//! - `semaphore`: acquire then release one of `permits` (etcd has no semaphore; the client
//!   algorithm is the module's in the same layout: a contender key per session, granted while
//!   fewer than `permits` older contenders exist, else watch the prefix for deletions).
//! - `queue`: push an item then pop one (`recipe.Queue`: a put-if-absent under a time-ordered
//!   key; dequeue reads the first key and claims it with a Txn on its mod_revision, and on an
//!   empty queue watches the prefix for the next put).
//!
//! Every requester holds its own lease (granted and kept alive outside the measurement), the
//! session the recipes attach their keys to. After the run the recipe's keys are counted: a
//! lock or semaphore left with a contender key, or a queue whose item count differs from
//! pushes minus pops, fails the run.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::ValueEnum;
use etcd_client::{Client, EventType, WatchFilterType, WatchOptions};
use serde_json::json;

use super::lock::{KeepAlives, LEASE_TTL_S, grant_kept_alive};
use super::{Workload, await_module, claim_txn, grpc, next_watch_response, prefix_end, run_id};
use crate::driver::Outcome;
use crate::lean_grpc::LeanChannel;
use crate::lean_grpc::paths::{KV_DELETE_RANGE, KV_RANGE, KV_TXN, MODULES_INVOKE};
use crate::pool::{CONNECT_TIMEOUT, Pool};
use baton_proto::baton::v1 as pb;
use baton_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use baton_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, RangeRequest, RangeResponse,
    RequestOp, TxnRequest, TxnResponse, compare, request_op, response_op,
};

/// Every run's names sit under `<this><run id>/`, apart from real data and earlier runs.
const RECIPE_PREFIX: &str = "bench/recipe/";
pub(crate) const NAMES_MAX: u64 = 10_000;
pub(crate) const PERMITS_MAX: u64 = 1_000;
/// A client-side step that loses this many races in a row gives up (an error, not a hang).
const RACES_MAX: u64 = 10_000;

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecipeKind {
    /// Acquire and release a lock.
    Lock,
    /// Acquire and release one permit of a semaphore.
    Semaphore,
    /// Push an item, then pop one.
    Queue,
}

impl RecipeKind {
    fn as_str(self) -> &'static str {
        match self {
            RecipeKind::Lock => "lock",
            RecipeKind::Semaphore => "semaphore",
            RecipeKind::Queue => "queue",
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecipeMode {
    /// Baton's built-in recipe module (Baton only).
    Module,
    /// etcd's client-side algorithm over KV and Watch (any etcd).
    Client,
}

impl RecipeMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RecipeMode::Module => "module",
            RecipeMode::Client => "client",
        }
    }
}

pub(crate) struct RecipeWorkload {
    kind: RecipeKind,
    mode: RecipeMode,
    names: u64,
    permits: u64,
    /// This run's own prefix, ending in `/`.
    prefix: String,
    leases: Mutex<Vec<i64>>,
    keep_alives: KeepAlives,
    /// One lean connection per pool connection, to the same member, opened in `prepare`.
    channels: Mutex<Vec<LeanChannel>>,
    /// Client mode: watches opened because the recipe had to wait, and races lost.
    waits: AtomicU64,
    races_lost: AtomicU64,
    /// Queue: acknowledged pushes and pops.
    pushed: AtomicU64,
    popped: AtomicU64,
}

pub(crate) struct RecipeRequester {
    channel: Option<LeanChannel>,
    /// For watches (the lean caller is unary only).
    conn: Client,
    lease: i64,
    /// Unique per requester, for the client queue's item keys.
    index: usize,
}

impl RecipeWorkload {
    pub(crate) fn new(kind: RecipeKind, mode: RecipeMode, names: u64, permits: u64) -> Self {
        Self {
            kind,
            mode,
            names,
            permits,
            prefix: format!("{RECIPE_PREFIX}{}/", run_id()),
            leases: Mutex::new(Vec::new()),
            keep_alives: KeepAlives::default(),
            channels: Mutex::new(Vec::new()),
            waits: AtomicU64::new(0),
            races_lost: AtomicU64::new(0),
            pushed: AtomicU64::new(0),
            popped: AtomicU64::new(0),
        }
    }

    /// The name operation `seq` works on: `<prefix><n>`.
    fn name(&self, seq: u64) -> String {
        format!("{}{}", self.prefix, seq % self.names)
    }

    async fn cycle(&self, r: &mut RecipeRequester, seq: u64) -> anyhow::Result<()> {
        let channel = r
            .channel
            .clone()
            .context("no connection for this requester")?;
        let name = self.name(seq);
        match (self.kind, self.mode) {
            (RecipeKind::Lock, RecipeMode::Module) => {
                let input = json!({ "name": name });
                invoke(&channel, "lock", "acquire", &input, r.lease).await?;
                invoke(&channel, "lock", "release", &input, r.lease).await?;
            }
            (RecipeKind::Semaphore, RecipeMode::Module) => {
                let input = json!({ "name": name, "permits": self.permits });
                invoke(&channel, "semaphore", "acquire", &input, r.lease).await?;
                invoke(&channel, "semaphore", "release", &input, r.lease).await?;
            }
            (RecipeKind::Queue, RecipeMode::Module) => {
                let push = json!({ "queue": name, "value": seq.to_string() });
                invoke(&channel, "queue", "push", &push, r.lease).await?;
                self.pushed.fetch_add(1, Ordering::Relaxed);
                invoke(&channel, "queue", "pop", &json!({ "queue": name }), r.lease).await?;
                self.popped.fetch_add(1, Ordering::Relaxed);
            }
            (RecipeKind::Lock, RecipeMode::Client) => {
                let key = contender_key(&format!("{name}/"), r.lease);
                self.mutex_lock(&channel, &mut r.conn, &name, &key, r.lease)
                    .await?;
                delete(&channel, &key).await?;
            }
            (RecipeKind::Semaphore, RecipeMode::Client) => {
                let contenders = format!("{name}/contenders/");
                let key = contender_key(&contenders, r.lease);
                self.semaphore_acquire(&channel, &mut r.conn, &contenders, &key, r.lease)
                    .await?;
                delete(&channel, &key).await?;
            }
            (RecipeKind::Queue, RecipeMode::Client) => {
                let queue = format!("{name}/");
                self.enqueue(&channel, &queue, r.index, seq).await?;
                self.pushed.fetch_add(1, Ordering::Relaxed);
                self.dequeue(&channel, &mut r.conn, &queue).await?;
                self.popped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// etcd's `concurrency.Mutex.Lock`: create the session's key if absent (reading the oldest
    /// contender in the same Txn); unless it is the oldest, wait for every older contender to
    /// go, one watch on the newest older key at a time.
    async fn mutex_lock(
        &self,
        channel: &LeanChannel,
        conn: &mut Client,
        name: &str,
        key: &str,
        lease: i64,
    ) -> anyhow::Result<()> {
        let prefix = format!("{name}/");
        let oldest = RangeRequest {
            key: prefix.clone().into_bytes(),
            range_end: prefix_end(prefix.as_bytes()),
            limit: 1,
            sort_order: SortOrder::Ascend as i32,
            sort_target: SortTarget::Create as i32,
            ..Default::default()
        };
        let txn = create_if_absent(key, lease, oldest);
        let reply: TxnResponse = channel.unary(KV_TXN, &txn).await.map_err(grpc("txn"))?;
        let mut responses = reply.responses.into_iter();
        let my_revision = if reply.succeeded {
            responses.next(); // the put
            reply.header.map(|h| h.revision).unwrap_or(0)
        } else {
            first_kv(responses.next())?
                .map(|kv| kv.create_revision)
                .context("the session's key vanished")?
        };
        let owner = first_kv(responses.next())?.map(|kv| kv.create_revision);
        if owner.is_none_or(|owner| owner == my_revision) {
            return Ok(());
        }
        // waitDeletes: the newest contender older than this one, until none is left.
        for _ in 0..RACES_MAX {
            let ahead = RangeRequest {
                key: prefix.clone().into_bytes(),
                range_end: prefix_end(prefix.as_bytes()),
                limit: 1,
                sort_order: SortOrder::Descend as i32,
                sort_target: SortTarget::Create as i32,
                max_create_revision: my_revision - 1,
                ..Default::default()
            };
            let read: RangeResponse = channel.unary(KV_RANGE, &ahead).await.map_err(grpc("get"))?;
            let Some(kv) = read.kvs.first() else {
                return Ok(());
            };
            let revision = read.header.map(|h| h.revision).unwrap_or(0);
            self.waits.fetch_add(1, Ordering::Relaxed);
            wait_delete(conn, &kv.key, revision).await?;
        }
        bail!("{name}: still waiting after {RACES_MAX} holders")
    }

    /// The semaphore's client algorithm: create the session's contender key if absent; it
    /// holds a permit while it is among the `permits` oldest contenders; otherwise watch the
    /// contenders for deletions and look again after each. (The oldest are read, not counted:
    /// etcd's count ignores a Range's revision filters.)
    async fn semaphore_acquire(
        &self,
        channel: &LeanChannel,
        conn: &mut Client,
        contenders: &str,
        key: &str,
        lease: i64,
    ) -> anyhow::Result<()> {
        let oldest = RangeRequest {
            key: contenders.as_bytes().to_vec(),
            range_end: prefix_end(contenders.as_bytes()),
            limit: self.permits as i64,
            sort_order: SortOrder::Ascend as i32,
            sort_target: SortTarget::Create as i32,
            keys_only: true,
            ..Default::default()
        };
        let holds =
            |read: &[baton_proto::mvccpb::KeyValue]| read.iter().any(|kv| kv.key == key.as_bytes());
        let txn = create_if_absent(key, lease, oldest.clone());
        let reply: TxnResponse = channel.unary(KV_TXN, &txn).await.map_err(grpc("txn"))?;
        let revision = reply.header.map(|h| h.revision).unwrap_or(0);
        let read = reply.responses.into_iter().nth(1).and_then(|r| r.response);
        let Some(response_op::Response::ResponseRange(read)) = read else {
            bail!("txn answered {read:?} where a range was sent");
        };
        if holds(&read.kvs) {
            return Ok(());
        }
        self.waits.fetch_add(1, Ordering::Relaxed);
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1)
            .with_filters([WatchFilterType::NoPut]);
        let mut stream = conn
            .watch(contenders, Some(options))
            .await
            .context("opening watch")?;
        for _ in 0..RACES_MAX {
            let response = next_watch_response(&mut stream).await?;
            if response.events().is_empty() {
                continue;
            }
            let read: RangeResponse = channel
                .unary(KV_RANGE, &oldest)
                .await
                .map_err(grpc("get"))?;
            if holds(&read.kvs) {
                return Ok(());
            }
            self.races_lost.fetch_add(1, Ordering::Relaxed);
        }
        bail!("{contenders}: still waiting after {RACES_MAX} releases")
    }

    /// `recipe.Queue.Enqueue`: a put under a new time-ordered key, only if that key is absent.
    async fn enqueue(
        &self,
        channel: &LeanChannel,
        queue: &str,
        index: usize,
        seq: u64,
    ) -> anyhow::Result<()> {
        for _ in 0..RACES_MAX {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            // etcd's key is the nanoseconds alone; the requester keeps ours unique when two
            // requesters read the same clock.
            let key = format!("{queue}{nanos:020}-{index}");
            let txn = put_if_absent(&key, seq.to_string().into_bytes());
            let reply: TxnResponse = channel.unary(KV_TXN, &txn).await.map_err(grpc("put"))?;
            if reply.succeeded {
                return Ok(());
            }
            self.races_lost.fetch_add(1, Ordering::Relaxed);
        }
        bail!("{queue}: no free key after {RACES_MAX} tries")
    }

    /// `recipe.Queue.Dequeue`: claim the first key (a delete conditioned on its mod_revision);
    /// on an empty queue, watch the prefix for the next put and claim that; a lost claim starts
    /// over.
    async fn dequeue(
        &self,
        channel: &LeanChannel,
        conn: &mut Client,
        queue: &str,
    ) -> anyhow::Result<()> {
        let first = RangeRequest {
            key: queue.as_bytes().to_vec(),
            range_end: prefix_end(queue.as_bytes()),
            limit: 1,
            sort_order: SortOrder::Ascend as i32,
            sort_target: SortTarget::Key as i32,
            ..Default::default()
        };
        for _ in 0..RACES_MAX {
            let read: RangeResponse = channel.unary(KV_RANGE, &first).await.map_err(grpc("get"))?;
            if let Some(kv) = read.kvs.first() {
                if claim(channel, &kv.key, kv.mod_revision).await? {
                    return Ok(());
                }
                self.races_lost.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.waits.fetch_add(1, Ordering::Relaxed);
            let from = read.header.map(|h| h.revision).unwrap_or(0) + 1;
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(from)
                .with_filters([WatchFilterType::NoDelete]);
            let mut stream = conn
                .watch(queue, Some(options))
                .await
                .context("opening watch")?;
            let put = loop {
                let response = next_watch_response(&mut stream).await?;
                if let Some(kv) = response.events().iter().find_map(|e| e.kv()) {
                    break (kv.key().to_vec(), kv.mod_revision());
                }
            };
            if claim(channel, &put.0, put.1).await? {
                return Ok(());
            }
            self.races_lost.fetch_add(1, Ordering::Relaxed);
        }
        bail!("{queue}: lost {RACES_MAX} claims in a row")
    }

    /// Opens a lean connection per pool connection, each to the member that connection uses;
    /// for module mode, waits for the recipe's module, so a run against etcd fails at once.
    async fn connect_channels(&self, pool: &Pool) -> anyhow::Result<()> {
        let mut channels = Vec::with_capacity(pool.conns.len());
        for j in 0..pool.conns.len() {
            let endpoint = &pool.endpoints[j % pool.endpoints.len()];
            let channel =
                LeanChannel::connect(endpoint, CONNECT_TIMEOUT, pool.request_timeout).await?;
            if self.mode == RecipeMode::Module {
                await_module(
                    &channel,
                    self.kind.as_str(),
                    "--mode module",
                    "--mode client",
                )
                .await?;
            }
            channels.push(channel);
        }
        *self.channels.lock().unwrap_or_else(|e| e.into_inner()) = channels;
        Ok(())
    }

    /// Keys left under the run's prefix: contender keys, or queue items. The semaphore
    /// module's agreed permit count (`<name>/limit`) stays by design and is not counted; the
    /// queue module keeps its bookkeeping outside the prefix (`__<queue>/`).
    async fn keys_left(&self, channel: &LeanChannel) -> anyhow::Result<u64> {
        let all = RangeRequest {
            key: self.prefix.as_bytes().to_vec(),
            range_end: prefix_end(self.prefix.as_bytes()),
            keys_only: true,
            ..Default::default()
        };
        let read: RangeResponse = channel.unary(KV_RANGE, &all).await.map_err(grpc("range"))?;
        let kept = |key: &[u8]| {
            self.kind == RecipeKind::Semaphore
                && self.mode == RecipeMode::Module
                && key.ends_with(b"/limit")
        };
        Ok(read.kvs.iter().filter(|kv| !kept(&kv.key)).count() as u64)
    }
}

/// A session's key under `prefix`: the lease id in lowercase hex, as etcd's recipes name it.
fn contender_key(prefix: &str, lease: i64) -> String {
    format!("{prefix}{lease:x}")
}

/// The Txn etcd's recipes open with: put `key` on `lease` if it was never created, else read
/// it; then `and_then` either way.
fn create_if_absent(key: &str, lease: i64, and_then: RangeRequest) -> TxnRequest {
    let read = |r: RangeRequest| RequestOp {
        request: Some(request_op::Request::RequestRange(r)),
    };
    TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
            range_end: Vec::new(),
        }],
        success: vec![put_op(key, Vec::new(), lease), read(and_then.clone())],
        failure: vec![
            read(RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            }),
            read(and_then),
        ],
    }
}

/// etcd's recipes' `putNewKV`: put `key` (no lease) only if it does not exist.
pub(crate) fn put_if_absent(key: &str, value: Vec<u8>) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Version as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(compare::TargetUnion::Version(0)),
            range_end: Vec::new(),
        }],
        success: vec![put_op(key, value, 0)],
        failure: Vec::new(),
    }
}

fn put_op(key: &str, value: Vec<u8>, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            lease,
            ..Default::default()
        })),
    }
}

/// The first key-value of a Txn's range response (`None` when the range was empty).
fn first_kv(
    response: Option<baton_proto::etcdserverpb::ResponseOp>,
) -> anyhow::Result<Option<baton_proto::mvccpb::KeyValue>> {
    match response.and_then(|r| r.response) {
        Some(response_op::Response::ResponseRange(range)) => Ok(range.kvs.into_iter().next()),
        None => Ok(None),
        other => bail!("txn answered {other:?} where a range was sent"),
    }
}

/// Watches `key` from `revision` until a delete of it arrives.
async fn wait_delete(conn: &mut Client, key: &[u8], revision: i64) -> anyhow::Result<()> {
    let options = WatchOptions::new()
        .with_start_revision(revision)
        .with_filters([WatchFilterType::NoPut]);
    let mut stream = conn
        .watch(key.to_vec(), Some(options))
        .await
        .context("opening watch")?;
    loop {
        let response = next_watch_response(&mut stream).await?;
        if response
            .events()
            .iter()
            .any(|e| e.event_type() == EventType::Delete)
        {
            return Ok(());
        }
    }
}

/// Deletes `key` if it is still at `mod_revision`: whoever deletes it has the item.
async fn claim(channel: &LeanChannel, key: &[u8], mod_revision: i64) -> anyhow::Result<bool> {
    let txn = claim_txn(key, mod_revision);
    let reply: TxnResponse = channel.unary(KV_TXN, &txn).await.map_err(grpc("claim"))?;
    Ok(reply.succeeded)
}

/// Deletes `key`.
pub(crate) async fn delete(channel: &LeanChannel, key: &str) -> anyhow::Result<()> {
    let request = DeleteRangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    };
    let _: DeleteRangeResponse = channel
        .unary(KV_DELETE_RANGE, &request)
        .await
        .map_err(grpc("delete"))?;
    Ok(())
}

/// One module call; the module's own refusal comes back as an error.
async fn invoke(
    channel: &LeanChannel,
    module: &str,
    function: &str,
    input: &serde_json::Value,
    lease: i64,
) -> anyhow::Result<()> {
    let request = pb::InvokeRequest {
        name: module.to_string(),
        function: function.to_string(),
        input: serde_json::to_vec(input)?,
        lease,
        ..Default::default()
    };
    invoke_then(channel, request, || {}).await
}

/// Sends `request`, calling `sent` once it is handed to the connection (a waiting call's
/// answer may be long in coming); the module's own refusal comes back as an error.
pub(crate) async fn invoke_then(
    channel: &LeanChannel,
    request: pb::InvokeRequest,
    sent: impl FnOnce() + Send,
) -> anyhow::Result<()> {
    let function = request.function.clone();
    let _: pb::InvokeResponse = channel
        .unary_then(MODULES_INVOKE, &request, sent)
        .await
        .map_err(grpc(&function))?;
    Ok(())
}

impl Workload for RecipeWorkload {
    type Requester = RecipeRequester;

    fn name(&self) -> &'static str {
        "recipe"
    }

    fn params(&self) -> BTreeMap<String, String> {
        let mut params = BTreeMap::from([
            ("recipe".to_string(), self.kind.as_str().to_string()),
            ("mode".to_string(), self.mode.as_str().to_string()),
            ("names".to_string(), self.names.to_string()),
        ]);
        if self.kind == RecipeKind::Semaphore {
            params.insert("permits".to_string(), self.permits.to_string());
        }
        params
    }

    async fn prepare(&self, pool: &Pool) -> anyhow::Result<()> {
        self.connect_channels(pool).await?;
        let (granted, handles) = grant_kept_alive(pool, LEASE_TTL_S).await?;
        *self.leases.lock().unwrap_or_else(|e| e.into_inner()) = granted;
        self.keep_alives.set(handles);
        Ok(())
    }

    fn requester(&self, conn: Client, index: usize) -> RecipeRequester {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        RecipeRequester {
            channel: channels.get(index % channels.len().max(1)).cloned(),
            conn,
            lease: leases.get(index).copied().unwrap_or(0),
            index,
        }
    }

    /// Counts what the run left behind: nothing for a lock or semaphore, and for a queue
    /// exactly the pushes not popped (only checked when no operation failed midway).
    async fn conclude(
        &self,
        _pool: &Pool,
        outcome: &Outcome,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let channel = self
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first()
            .cloned()
            .context("no connection")?;
        let left = self.keys_left(&channel).await?;
        let mut extra = BTreeMap::from([("keys_left".to_string(), left.to_string())]);
        if self.mode == RecipeMode::Client {
            let ops = outcome.ok.max(1) as f64;
            let waits = self.waits.load(Ordering::Relaxed) as f64;
            let lost = self.races_lost.load(Ordering::Relaxed) as f64;
            extra.insert("waits_per_op".into(), format!("{:.2}", waits / ops));
            extra.insert("races_lost_per_op".into(), format!("{:.2}", lost / ops));
        }
        let expected = match self.kind {
            RecipeKind::Lock | RecipeKind::Semaphore => 0,
            RecipeKind::Queue => {
                let pushed = self.pushed.load(Ordering::Relaxed);
                pushed.saturating_sub(self.popped.load(Ordering::Relaxed))
            }
        };
        if outcome.errors == 0 && left != expected {
            bail!(
                "{left} keys left under {} after the run, expected {expected}",
                self.prefix
            );
        }
        Ok(extra)
    }

    fn op(
        &self,
        r: &mut RecipeRequester,
        seq: u64,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.cycle(r, seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_etcds_recipe_layout() {
        assert_eq!(contender_key("jobs/", 0x694d7a), "jobs/694d7a");
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn names_cycle_under_the_runs_prefix() {
        let w = RecipeWorkload::new(RecipeKind::Lock, RecipeMode::Client, 3, 1);
        assert!(w.name(4).starts_with(RECIPE_PREFIX));
        assert!(w.name(4).ends_with("/1"));
        assert_eq!(w.name(1), w.name(4));
    }

    #[test]
    fn the_opening_txn_creates_or_reads_then_reads_again() {
        let txn = create_if_absent("l/1f", 0x1f, RangeRequest::default());
        assert_eq!(txn.compare.len(), 1);
        assert_eq!(txn.success.len(), 2);
        assert_eq!(txn.failure.len(), 2);
        let Some(request_op::Request::RequestPut(put)) = &txn.success[0].request else {
            panic!("the success branch opens with a put");
        };
        assert_eq!(put.lease, 0x1f);
    }
}
