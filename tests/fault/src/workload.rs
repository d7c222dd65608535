//! Clients: each talks to one member, draws its operations from its own seeded RNG, and records
//! every operation with its invocation and completion instants. A write whose answer never came
//! is recorded as unknown: it may have taken effect.

use std::time::Duration;

use anyhow::Result;
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cluster::{REQUEST_TIMEOUT, connect};
use crate::history::{
    Entry, FOREIGN_VALUE, Op, Outcome, Reply, Value, decode_count, decode_value, encode_value,
    unique_value,
};

/// The workload's keys live under this prefix.
pub const KEY_PREFIX: &str = "fault/kv/";
/// Keys the clients contend on: few enough to conflict, enough to keep each key's history small
/// for the checker.
pub const KEY_COUNT: usize = 8;
/// Pause between a client's operations, drawn up to this, so members on a loaded 2-core machine
/// keep up and the history stays checkable.
pub const THINK_TIME_MS_MAX: u64 = 30;
/// hyper-util's message for a TCP connect that failed (refused, unreachable, timed out).
const CONNECT_ERROR_TEXT: &str = "tcp connect error";
/// After an operation that did not succeed, a client waits this long, so a client whose member
/// is down does not flood the history with operations of unknown outcome (each one widens the
/// checker's search).
pub const ERROR_BACKOFF: Duration = Duration::from_millis(500);
/// After a failed connect, a client waits this long before trying again.
pub const RECONNECT_BACKOFF: Duration = Duration::from_millis(300);

/// How the workload's gets read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// The default: a read the server confirms with the leader (etcd's default).
    Linearizable,
    /// From the member's local state, possibly stale: a negative control that a run with
    /// partitions or pauses should fail.
    Serializable,
}

pub fn key(index: usize) -> String {
    format!("{KEY_PREFIX}{index:02}")
}

/// Nanoseconds since the run started.
pub fn since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One client's state: which values it last saw per key, so its CASes usually name a real value.
struct Worker {
    id: u32,
    reads: ReadMode,
    endpoint: String,
    rng: StdRng,
    start: Instant,
    puts: u32,
    last_seen: Vec<Option<Value>>,
    client: Option<Client>,
}

/// Runs client `id` against `endpoint` until `stop` turns true; returns its history.
pub async fn run_client(
    id: u32,
    endpoint: String,
    seed: u64,
    reads: ReadMode,
    start: Instant,
    mut stop: watch::Receiver<bool>,
) -> Vec<Entry> {
    let mut worker = Worker {
        id,
        reads,
        endpoint,
        rng: StdRng::seed_from_u64(seed),
        start,
        puts: 0,
        last_seen: vec![None; KEY_COUNT],
        client: None,
    };
    let mut history = Vec::new();
    while !*stop.borrow() {
        let mut think = Duration::from_millis(worker.rng.random_range(0..=THINK_TIME_MS_MAX));
        if let Some(entry) = worker.step().await {
            if !matches!(entry.outcome, Outcome::Ok(_)) {
                think += ERROR_BACKOFF;
            }
            history.push(entry);
        }
        tokio::select! {
            _ = tokio::time::sleep(think) => {}
            _ = stop.changed() => {}
        }
    }
    history
}

impl Worker {
    /// Draws and performs one operation; `None` when no connection could be made (nothing was
    /// sent, so nothing is recorded).
    async fn step(&mut self) -> Option<Entry> {
        let k = self.rng.random_range(0..KEY_COUNT);
        let roll = self.rng.random_range(0..10);
        let op = match (roll, self.last_seen[k]) {
            (0..4, _) => Op::Get,
            (4..7, Some(expected)) => Op::Cas {
                expected,
                new: self.next_value(),
            },
            _ => Op::Put {
                value: self.next_value(),
            },
        };
        if self.client.is_none() {
            match connect(&self.endpoint).await {
                Ok(client) => self.client = Some(client),
                Err(_) => {
                    tokio::time::sleep(RECONNECT_BACKOFF).await;
                    return None;
                }
            }
        }
        let client = self.client.as_mut()?;
        let key = key(k);
        let call_ns = since(self.start);
        let outcome = perform(client, &key, op, self.reads).await;
        let return_ns = since(self.start);
        match outcome {
            Outcome::Ok(Reply::Read(seen)) => self.last_seen[k] = seen,
            Outcome::Ok(Reply::Done) => {
                if let Op::Put { value } = op {
                    self.last_seen[k] = Some(value);
                }
            }
            Outcome::Ok(Reply::Swapped(true)) => {
                if let Op::Cas { new, .. } = op {
                    self.last_seen[k] = Some(new);
                }
            }
            _ => {}
        }
        Some(Entry {
            client: self.id,
            key,
            op,
            call_ns,
            return_ns: (outcome != Outcome::Unknown).then_some(return_ns),
            outcome,
        })
    }

    fn next_value(&mut self) -> Value {
        self.puts += 1;
        unique_value(self.id, self.puts)
    }
}

/// Sends one operation and classifies the answer. Any error on a write is `Unknown`: a timeout
/// or a lost connection says nothing about whether the write committed. A failed read had no
/// effect, so it is `Failed`.
pub async fn perform(client: &mut Client, key: &str, op: Op, reads: ReadMode) -> Outcome {
    let read_options = match reads {
        ReadMode::Linearizable => None,
        ReadMode::Serializable => Some(GetOptions::new().with_serializable()),
    };
    let sent = async {
        match op {
            // Not a KV operation: only the counter module increments (`counter.rs`), so nothing
            // is sent and the caller gets `Failed`.
            Op::Incr => Ok(None),
            Op::ReadCounter => {
                let reply = client.get(key, read_options).await?;
                Ok(Some(Reply::Count(
                    reply
                        .kvs()
                        .first()
                        .map_or(Some(0), |kv| decode_count(kv.value()))
                        .unwrap_or(FOREIGN_VALUE),
                )))
            }
            Op::Put { value } => {
                client.put(key, encode_value(value), None).await?;
                Ok::<_, etcd_client::Error>(Some(Reply::Done))
            }
            Op::Get => {
                let reply = client.get(key, read_options).await?;
                Ok(Some(Reply::Read(
                    reply.kvs().first().map(|kv| decode_value(kv.value())),
                )))
            }
            Op::Cas { expected, new } => {
                let txn = Txn::new()
                    .when([Compare::value(
                        key,
                        CompareOp::Equal,
                        encode_value(expected),
                    )])
                    .and_then([TxnOp::put(key, encode_value(new), None)]);
                Ok(Some(Reply::Swapped(client.txn(txn).await?.succeeded())))
            }
        }
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, sent).await {
        Ok(Ok(Some(reply))) => Outcome::Ok(reply),
        Ok(Ok(None)) => Outcome::Failed,
        _ if matches!(op, Op::Get | Op::ReadCounter) => Outcome::Failed,
        Ok(Err(e)) if never_sent(&e) => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

/// Whether the client failed to even connect, so the request never left it. Only errors raised
/// locally qualify: they carry a source chain, while a status the server sent has none (and its
/// text may quote the server's own connect failures, which say nothing about this request).
fn never_sent(error: &etcd_client::Error) -> bool {
    use std::error::Error as _;
    let mut source = match error {
        etcd_client::Error::GRpcStatus(status) => status.source(),
        etcd_client::Error::TransportError(e) => Some(e as &(dyn std::error::Error + 'static)),
        _ => None,
    };
    while let Some(e) = source {
        if e.to_string().contains(CONNECT_ERROR_TEXT) {
            return true;
        }
        source = e.source();
    }
    false
}

/// Reads every workload key once, after the faults, through `endpoint`; retried until each
/// succeeds so the checker sees the final state (an acknowledged write that vanished shows up
/// as a violation on its key).
pub async fn final_reads(
    id: u32,
    endpoint: &str,
    start: Instant,
    limit: Duration,
) -> Result<Vec<Entry>> {
    let deadline = Instant::now() + limit;
    let mut client = connect(endpoint).await?;
    let mut entries = Vec::new();
    for k in 0..KEY_COUNT {
        let key = key(k);
        loop {
            let call_ns = since(start);
            let outcome = perform(&mut client, &key, Op::Get, ReadMode::Linearizable).await;
            if let Outcome::Ok(_) = outcome {
                entries.push(Entry {
                    client: id,
                    key,
                    op: Op::Get,
                    call_ns,
                    return_ns: Some(since(start)),
                    outcome,
                });
                break;
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

/// Shared stop signal for the clients.
pub fn stop_signal() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(false)
}
