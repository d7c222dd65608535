//! Counter clients: increments through Baton's built-in `counter` module (`add` by one) and
//! reads of the totals, half as read-only module calls and half as KV gets of the counter's key,
//! all recorded into the history and checked against `model::CounterModel` (every acknowledged
//! increment returns a total no other returns, reads never go back, and the final read after
//! the faults shows every acknowledged increment). Baton only: etcd has no modules.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cluster::connect;
use crate::history::{Entry, FOREIGN_VALUE, Op, Outcome, Reply};
use crate::modcall::{self, CallError, Modules};
use crate::workload::{
    ERROR_BACKOFF, RECONNECT_BACKOFF, ReadMode, THINK_TIME_MS_MAX, perform, since,
};

/// The counters live under this prefix, apart from the KV workload's keys.
pub const COUNTER_PREFIX: &str = "fault/counter/";
/// Few counters, so increments from different clients collide on each.
pub const COUNTER_COUNT: usize = 2;
const MODULE: &str = "counter";

pub fn counter_key(index: usize) -> String {
    format!("{COUNTER_PREFIX}{index}")
}

/// Runs counter client `id` against `endpoint` until `stop`; returns its history.
pub async fn run_counter_client(
    id: u32,
    endpoint: String,
    seed: u64,
    reads: ReadMode,
    start: Instant,
    mut stop: watch::Receiver<bool>,
) -> Vec<Entry> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut history = Vec::new();
    let Some(mut modules) = modcall::client(&endpoint) else {
        return history;
    };
    while !*stop.borrow() {
        let key = counter_key(rng.random_range(0..COUNTER_COUNT));
        let roll = rng.random_range(0..10);
        let entry = match roll {
            0..6 => incr(&mut modules, id, &key, start).await,
            6..8 => module_read(&mut modules, id, &key, start).await,
            _ => kv_read(&endpoint, id, &key, reads, start).await,
        };
        let mut think = Duration::from_millis(rng.random_range(0..=THINK_TIME_MS_MAX));
        if let Some(entry) = entry {
            if !matches!(entry.outcome, Outcome::Ok(_)) {
                think += ERROR_BACKOFF;
            }
            history.push(entry);
        } else {
            think += RECONNECT_BACKOFF;
        }
        tokio::select! {
            _ = tokio::time::sleep(think) => {}
            _ = stop.changed() => {}
        }
    }
    history
}

/// `add {"keys":[key],"by":1}`; its reply holds the new total.
async fn incr(modules: &mut Modules, id: u32, key: &str, start: Instant) -> Option<Entry> {
    let input = format!(r#"{{"keys":["{key}"],"by":1}}"#);
    let call_ns = since(start);
    let reply = modcall::invoke(modules, (MODULE, "add"), input, 0, false).await;
    let outcome = match reply {
        Ok(reply) => Outcome::Ok(Reply::Count(total(&reply.output, key))),
        Err(CallError::Refused(_)) => Outcome::Failed,
        Err(CallError::Unknown(_)) => Outcome::Unknown,
    };
    Some(entry(id, key, Op::Incr, call_ns, since(start), outcome))
}

/// `get {"keys":[key]}` as a read-only call: a linearizable read on the member itself.
async fn module_read(modules: &mut Modules, id: u32, key: &str, start: Instant) -> Option<Entry> {
    let input = format!(r#"{{"keys":["{key}"]}}"#);
    let call_ns = since(start);
    let reply = modcall::invoke(modules, (MODULE, "get"), input, 0, true).await;
    let outcome = match reply {
        Ok(reply) => Outcome::Ok(Reply::Count(total(&reply.output, key))),
        Err(_) => Outcome::Failed,
    };
    Some(entry(
        id,
        key,
        Op::ReadCounter,
        call_ns,
        since(start),
        outcome,
    ))
}

/// A KV get of the counter's key (its value is the total as decimal text); serializable only
/// in the negative control.
async fn kv_read(
    endpoint: &str,
    id: u32,
    key: &str,
    reads: ReadMode,
    start: Instant,
) -> Option<Entry> {
    let mut client = connect(endpoint).await.ok()?;
    let call_ns = since(start);
    let outcome = perform(&mut client, key, Op::ReadCounter, reads).await;
    Some(entry(
        id,
        key,
        Op::ReadCounter,
        call_ns,
        since(start),
        outcome,
    ))
}

/// The total for `key` in a `counter` reply (`{"<key>": N}`); a reply without it becomes a
/// value no state of the model holds, so the checker reports it.
fn total(output: &[u8], key: &str) -> u64 {
    serde_json::from_slice::<serde_json::Value>(output)
        .ok()
        .and_then(|reply| reply.get(key)?.as_u64())
        .unwrap_or(FOREIGN_VALUE)
}

fn entry(id: u32, key: &str, op: Op, call_ns: u64, return_ns: u64, outcome: Outcome) -> Entry {
    Entry {
        client: id,
        key: key.to_owned(),
        op,
        call_ns,
        return_ns: (outcome != Outcome::Unknown).then_some(return_ns),
        outcome,
    }
}

/// Reads every counter once after the faults (retried until each succeeds), so an
/// acknowledged increment that vanished fails the checker.
pub async fn final_reads(
    id: u32,
    endpoint: &str,
    start: Instant,
    limit: Duration,
) -> anyhow::Result<Vec<Entry>> {
    let deadline = Instant::now() + limit;
    let mut entries = Vec::new();
    for k in 0..COUNTER_COUNT {
        let key = counter_key(k);
        loop {
            match kv_read(endpoint, id, &key, ReadMode::Linearizable, start).await {
                Some(e) if matches!(e.outcome, Outcome::Ok(_)) => {
                    entries.push(e);
                    break;
                }
                _ => {}
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "final read of {key} kept failing"
            );
            tokio::time::sleep(RECONNECT_BACKOFF).await;
        }
    }
    Ok(entries)
}
