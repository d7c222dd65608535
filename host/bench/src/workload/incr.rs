//! `incr`: many clients incrementing a few shared counters, the read-modify-write pattern that
//! contention hurts most. Two ways to increment:
//!
//! - `cas` (any etcd v3 server): read the counter, then a Txn that writes value+1 only if the
//!   key's mod_revision is still the one read; on a lost race the Txn's failure branch returns
//!   the current value and the loop tries again (one round trip per retry, as etcd's STM does).
//! - `invoke` (Baton only): one call of the built-in `counter` module's `add`, which reads and
//!   writes inside the state machine, so it never retries.
//!
//! Two more modes read the same counters instead, to measure what serving a module call
//! without a log entry saves: `get` (the counter's `get` through the log, like any call) and
//! `get-read-only` (the same call served read-only by the member contacted).
//!
//! Counters live under a fresh prefix per run, so after the run their sum must equal the
//! acknowledged increments; any shortfall is a lost update and fails the run.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use clap::ValueEnum;
use etcd_client::{Client, GetOptions};

use super::{Workload, run_id};
use crate::driver::Outcome;
use crate::lean_grpc::LeanChannel;
use crate::pool::{CONNECT_TIMEOUT, Pool};
use baton_proto::baton::v1 as pb;
use baton_proto::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse, compare,
    request_op, response_op,
};
use baton_proto::mvccpb::KeyValue;

/// Every run's counters sit under `<this><run id>/`, apart from real data and earlier runs.
const INCR_PREFIX: &str = "bench/incr/";
pub(crate) const COUNTERS_MAX: u64 = 10_000;
/// A CAS increment that loses this many races in a row gives up and counts as an error.
const CAS_ATTEMPTS_MAX: u64 = 10_000;
const COUNTER_MODULE: &str = "counter";
use crate::lean_grpc::paths::{KV_RANGE, KV_TXN, MODULES_DESCRIBE, MODULES_INVOKE};

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IncrMode {
    /// Get, then Txn compare-mod_revision-and-put, retried on a lost race (any etcd server).
    Cas,
    /// One Invoke of the built-in `counter` module per increment (Baton only).
    Invoke,
    /// No increment: one `counter get` of the key through the log (Baton only).
    Get,
    /// No increment: one read-only `counter get` of the key, no log entry (Baton only).
    GetReadOnly,
}

impl IncrMode {
    fn as_str(self) -> &'static str {
        match self {
            IncrMode::Cas => "cas",
            IncrMode::Invoke => "invoke",
            IncrMode::Get => "get",
            IncrMode::GetReadOnly => "get-read-only",
        }
    }

    /// Whether the mode calls Baton's Modules service.
    fn calls_modules(self) -> bool {
        self != IncrMode::Cas
    }

    /// Whether an acknowledged operation adds one to a counter.
    fn increments(self) -> bool {
        matches!(self, IncrMode::Cas | IncrMode::Invoke)
    }
}

pub(crate) struct IncrWorkload {
    mode: IncrMode,
    counters: u64,
    /// This run's own prefix, ending in `/`.
    prefix: String,
    /// Txns that lost their compare, over the whole run.
    retries: AtomicU64,
    /// One lean connection per pool connection, to the same member, opened in `prepare`.
    channels: Mutex<Vec<LeanChannel>>,
}

pub(crate) struct IncrRequester {
    channel: Option<LeanChannel>,
}

impl IncrWorkload {
    pub(crate) fn new(mode: IncrMode, counters: u64) -> Self {
        Self::with_prefix(mode, counters, format!("{INCR_PREFIX}{}/", run_id()))
    }

    fn with_prefix(mode: IncrMode, counters: u64, prefix: String) -> Self {
        Self {
            mode,
            counters,
            prefix,
            retries: AtomicU64::new(0),
            channels: Mutex::new(Vec::new()),
        }
    }

    #[cfg(test)]
    fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, seq: u64) -> String {
        format!("{}{}", self.prefix, seq % self.counters)
    }

    async fn cas(&self, channel: &LeanChannel, key: String) -> anyhow::Result<()> {
        let read = RangeRequest {
            key: key.clone().into_bytes(),
            ..Default::default()
        };
        let read: RangeResponse = channel
            .unary(KV_RANGE, &read)
            .await
            .map_err(|s| failed("get", &s))?;
        let mut current = read.kvs.into_iter().next();
        for _ in 0..CAS_ATTEMPTS_MAX {
            let (value, mod_revision) = counter_state(&key, current.as_ref())?;
            let next = value.checked_add(1).context("counter overflow")?;
            let reply: TxnResponse = channel
                .unary(KV_TXN, &cas_txn(&key, mod_revision, next))
                .await
                .map_err(|s| failed("txn", &s))?;
            if reply.succeeded {
                return Ok(());
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            current = match reply.responses.into_iter().next().and_then(|r| r.response) {
                Some(response_op::Response::ResponseRange(range)) => range.kvs.into_iter().next(),
                other => bail!("txn failure branch answered {other:?}, not the get it sent"),
            };
        }
        bail!("{key}: gave up after losing {CAS_ATTEMPTS_MAX} races in a row")
    }

    async fn invoke(&self, channel: &LeanChannel, key: String) -> anyhow::Result<()> {
        let (function, input) = match self.mode {
            IncrMode::Get | IncrMode::GetReadOnly => ("get", serde_json::json!({ "keys": [key] })),
            _ => ("add", serde_json::json!({ "keys": [key], "by": 1 })),
        };
        let request = pb::InvokeRequest {
            name: COUNTER_MODULE.to_string(),
            function: function.to_string(),
            input: serde_json::to_vec(&input)?,
            read_only: self.mode == IncrMode::GetReadOnly,
            ..Default::default()
        };
        let _: pb::InvokeResponse = channel
            .unary(MODULES_INVOKE, &request)
            .await
            .map_err(|s| failed("invoke", &s))?;
        Ok(())
    }

    /// Opens a lean connection per pool connection, each to the member that connection uses;
    /// for the module modes, checks the counter module is there, so a run against etcd fails
    /// before it starts.
    async fn connect_channels(&self, pool: &Pool) -> anyhow::Result<()> {
        let mut channels = Vec::with_capacity(pool.conns.len());
        for j in 0..pool.conns.len() {
            let endpoint = &pool.endpoints[j % pool.endpoints.len()];
            let channel =
                LeanChannel::connect(endpoint, CONNECT_TIMEOUT, pool.request_timeout).await?;
            if self.mode.calls_modules() {
                let describe = pb::DescribeRequest {
                    name: COUNTER_MODULE.to_string(),
                };
                let found: Result<pb::ModuleInfo, _> =
                    channel.unary(MODULES_DESCRIBE, &describe).await;
                if let Err(s) = found {
                    bail!(
                        "{endpoint}: no `{COUNTER_MODULE}` module ({}: {}); --mode {} needs \
                         Baton, use --mode cas for etcd",
                        s.code(),
                        s.message(),
                        self.mode.as_str()
                    );
                }
            }
            channels.push(channel);
        }
        *self.channels.lock().unwrap_or_else(|e| e.into_inner()) = channels;
        Ok(())
    }
}

fn failed(what: &str, status: &tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{what}: {}: {}", status.code(), status.message())
}

/// Writes `next` to `key` only if the key's mod_revision is still `mod_revision`; otherwise
/// reads the key, so a retry needs no separate get.
fn cas_txn(key: &str, mod_revision: i64, next: u64) -> TxnRequest {
    let key = key.as_bytes().to_vec();
    TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Mod as i32,
            key: key.clone(),
            target_union: Some(compare::TargetUnion::ModRevision(mod_revision)),
            range_end: Vec::new(),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.clone(),
                value: next.to_string().into_bytes(),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key,
                ..Default::default()
            })),
        }],
    }
}

/// A counter's value and mod_revision; a missing key is 0 at mod_revision 0, which is also what
/// a Txn compare sees for a missing key.
fn counter_state(key: &str, kv: Option<&KeyValue>) -> anyhow::Result<(u64, i64)> {
    let Some(kv) = kv else {
        return Ok((0, 0));
    };
    let value = parse_counter(&kv.value).with_context(|| format!("{key} is not a counter"))?;
    Ok((value, kv.mod_revision))
}

fn parse_counter(value: &[u8]) -> anyhow::Result<u64> {
    let text = std::str::from_utf8(value).context("not UTF-8")?;
    text.trim()
        .parse()
        .with_context(|| format!("{text:?} is not a decimal count"))
}

impl Workload for IncrWorkload {
    type Requester = IncrRequester;

    fn name(&self) -> &'static str {
        "incr"
    }

    fn params(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("mode".to_string(), self.mode.as_str().to_string()),
            ("counters".to_string(), self.counters.to_string()),
            ("prefix".to_string(), self.prefix.clone()),
        ])
    }

    /// Refuses a prefix that already holds keys: the final check needs counters from zero.
    async fn prepare(&self, pool: &Pool) -> anyhow::Result<()> {
        let mut kv = pool.conn_for(0).kv_client();
        let options = GetOptions::new().with_prefix().with_count_only();
        let existing = kv.get(self.prefix.as_str(), Some(options)).await?.count();
        if existing != 0 {
            bail!("{} already holds {existing} key(s)", self.prefix);
        }
        self.connect_channels(pool).await
    }

    fn requester(&self, _conn: Client, index: usize) -> IncrRequester {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        IncrRequester {
            channel: (!channels.is_empty()).then(|| channels[index % channels.len()].clone()),
        }
    }

    fn op(
        &self,
        r: &mut IncrRequester,
        seq: u64,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        let key = self.key(seq);
        async move {
            let Some(channel) = r.channel.as_ref() else {
                bail!("no connection (prepare not run)");
            };
            match self.mode {
                IncrMode::Cas => self.cas(channel, key).await,
                _ => self.invoke(channel, key).await,
            }
        }
    }

    /// Reads every counter back and fails the run on a lost (or invented) increment.
    async fn conclude(
        &self,
        pool: &Pool,
        outcome: &Outcome,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let mut kv = pool.conn_for(0).kv_client();
        let stored = kv
            .get(self.prefix.as_str(), Some(GetOptions::new().with_prefix()))
            .await
            .context("reading the counters back")?;
        let mut sum: u64 = 0;
        for kv in stored.kvs() {
            let value = parse_counter(kv.value()).with_context(|| {
                format!("{} is not a counter", String::from_utf8_lossy(kv.key()))
            })?;
            sum = sum.checked_add(value).context("counter sum overflows")?;
        }
        let (acked, failed) = if self.mode.increments() {
            (outcome.ok, outcome.errors)
        } else {
            (0, 0)
        };
        check_sum(sum, acked, failed)?;
        let retries = self.retries.load(Ordering::Relaxed);
        let per_incr = if outcome.ok == 0 {
            0.0
        } else {
            retries as f64 / outcome.ok as f64
        };
        Ok(BTreeMap::from([
            ("counted".to_string(), sum.to_string()),
            ("retries".to_string(), retries.to_string()),
            ("retries_per_incr".to_string(), format!("{per_incr:.3}")),
        ]))
    }
}

/// Each acknowledged increment must be in the sum; each failed one (a timeout, a dropped
/// connection) may or may not have applied, so it may add at most one.
fn check_sum(sum: u64, acked: u64, failed: u64) -> anyhow::Result<()> {
    if sum < acked {
        bail!(
            "LOST INCREMENTS: the counters sum to {sum}, but {acked} increments were \
             acknowledged ({} missing)",
            acked - sum
        );
    }
    if sum > acked.saturating_add(failed) {
        bail!(
            "the counters sum to {sum}, more than the {acked} acknowledged increments plus \
             {failed} failed attempts that might have applied"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_cycle_under_the_run_prefix() {
        let w = IncrWorkload::with_prefix(IncrMode::Cas, 3, "p/".to_string());
        assert_eq!(
            (w.key(0), w.key(4), w.key(5)),
            ("p/0".into(), "p/1".into(), "p/2".into())
        );
        let fresh = IncrWorkload::new(IncrMode::Invoke, 8);
        assert!(fresh.prefix().starts_with(INCR_PREFIX) && fresh.prefix().ends_with('/'));
        assert_ne!(fresh.prefix(), INCR_PREFIX);
    }

    #[test]
    fn sums_below_the_acknowledged_count_are_lost_increments() {
        check_sum(10, 10, 0).unwrap();
        // Two failed attempts may each have applied, or not.
        check_sum(10, 8, 2).unwrap();
        check_sum(8, 8, 2).unwrap();
        let lost = check_sum(9, 10, 5).unwrap_err().to_string();
        assert!(
            lost.contains("LOST INCREMENTS") && lost.contains("1 missing"),
            "{lost}"
        );
        assert!(check_sum(11, 8, 2).is_err());
    }

    #[test]
    fn counter_values_are_decimal_strings() {
        assert_eq!(parse_counter(b"42").unwrap(), 42);
        assert_eq!(parse_counter(b" 7\n").unwrap(), 7);
        assert!(parse_counter(b"-1").is_err());
        assert!(parse_counter(b"x").is_err());
        assert_eq!(counter_state("k", None).unwrap(), (0, 0));
    }
}
