//! The Raft log in its own redb file, written by one thread with group commit.
//!
//! openraft requires appended entries to be readable as soon as `append` returns, and reported
//! flushed only once durable. So `append` puts the entries in an in-memory overlay (readable at
//! once) and queues them for the writer thread. The writer takes everything queued — appends,
//! truncations, purges, votes, the committed id — applies it IN ORDER in one redb transaction,
//! commits it durably (one fsync for the whole batch), and only then reports the appends flushed
//! and wakes `save_vote` callers. Concurrent proposals therefore share one fsync, and since every
//! write goes through the same ordered queue, a vote and the appends around it can never be
//! reordered on disk.
//!
//! Reads merge the overlay over the database. A truncation hides database entries at or above
//! its index until the writer has applied it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::entry::{TypeConfig, codec};

type Entry = openraft::alias::EntryOf<TypeConfig>;
type LogId = openraft::alias::LogIdOf<TypeConfig>;
type Vote = openraft::alias::VoteOf<TypeConfig>;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const LOG_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_log_meta");
const KEY_VOTE: &str = "vote";
const KEY_PURGED: &str = "last_purged";
const KEY_COMMITTED: &str = "committed";

/// One queued write, applied by the writer in queue order.
enum Op {
    Append(Vec<(u64, Vec<u8>)>),
    /// Delete entries with index >= this.
    TruncateFrom(u64),
    /// Delete entries with index <= this.
    PurgeTo(u64),
    Meta(&'static str, Vec<u8>),
    /// Report the appends queued before this as flushed.
    Flushed(IOFlushed<TypeConfig>),
    /// Wake a caller waiting for everything queued before this to be durable.
    Durable(oneshot::Sender<Result<(), String>>),
}

#[derive(Default)]
struct State {
    /// Appended entries the writer has not yet made durable, by index.
    overlay: BTreeMap<u64, Entry>,
    /// Set while a truncation is queued but not yet applied: database entries at or above it
    /// are stale.
    truncated_from: Option<u64>,
    /// Bumped by every truncation, so the writer knows whether one arrived during its commit.
    truncations: u64,
    queue: Vec<Op>,
    last_purged: Option<LogId>,
    /// Set once the writer failed: the log is out of service.
    failed: Option<String>,
}

struct Shared {
    db: Database,
    state: Mutex<State>,
    work: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The redb-backed Raft log. Cheap to clone: clones share one database and one writer.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

fn to_io(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    codec::decode(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    codec::encode(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl LogStore {
    /// Opens (or creates) the log database and starts its writer thread.
    pub fn open(path: &Path) -> io::Result<Self> {
        let db = Database::create(path).map_err(to_io)?;
        let txn = db.begin_write().map_err(to_io)?;
        txn.open_table(LOG).map_err(to_io)?;
        txn.open_table(LOG_META).map_err(to_io)?;
        txn.commit().map_err(to_io)?;
        let shared = Arc::new(Shared {
            db,
            state: Mutex::new(State::default()),
            work: Condvar::new(),
        });
        let last_purged = read_meta(&shared.db, KEY_PURGED)?;
        shared.lock().last_purged = last_purged;
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || run_writer(&writer))?;
        Ok(Self { shared })
    }

    fn enqueue(&self, ops: impl IntoIterator<Item = Op>) -> io::Result<()> {
        let mut state = self.shared.lock();
        if let Some(e) = &state.failed {
            return Err(io::Error::other(format!("raft log writer failed: {e}")));
        }
        state.queue.extend(ops);
        drop(state);
        self.shared.work.notify_one();
        Ok(())
    }

    /// Queues `key = value` and waits until it (and everything queued before) is durable.
    async fn put_meta_durably<T: Serialize>(&self, key: &'static str, value: &T) -> io::Result<()> {
        let (done, durable) = oneshot::channel();
        self.enqueue([Op::Meta(key, encode(value)?), Op::Durable(done)])?;
        match durable.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io::Error::other(e)),
            Err(_) => Err(io::Error::other("raft log writer stopped")),
        }
    }
}

fn read_meta<T: DeserializeOwned>(db: &Database, key: &str) -> io::Result<Option<T>> {
    let txn = db.begin_read().map_err(to_io)?;
    let table = txn.open_table(LOG_META).map_err(to_io)?;
    let Some(raw) = table.get(key).map_err(to_io)? else {
        return Ok(None);
    };
    decode(raw.value()).map(Some)
}

/// The writer thread: one durable redb commit per batch of queued operations.
fn run_writer(shared: &Shared) {
    loop {
        let (ops, truncations) = {
            let mut state = shared.lock();
            while state.queue.is_empty() {
                state = shared.work.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            (std::mem::take(&mut state.queue), state.truncations)
        };
        let result = write_batch(&shared.db, &ops).map_err(|e| e.to_string());
        let mut written = Vec::new();
        let mut waiters = Vec::new();
        for op in ops {
            match op {
                Op::Append(entries) => written.extend(entries.into_iter().map(|(i, _)| i)),
                Op::Flushed(cb) => waiters.push(Waiter::Flushed(cb)),
                Op::Durable(tx) => waiters.push(Waiter::Durable(tx)),
                Op::TruncateFrom(_) | Op::PurgeTo(_) | Op::Meta(..) => {}
            }
        }
        {
            let mut state = shared.lock();
            match &result {
                Ok(()) => {
                    // Entries now durable leave the overlay. A truncation queued during this
                    // commit may have replaced some of them (at or above its index): those stay,
                    // as does the truncation's mark, until the writer applies it.
                    let replaced_from = if state.truncations == truncations {
                        state.truncated_from = None;
                        u64::MAX
                    } else {
                        state.truncated_from.unwrap_or(u64::MAX)
                    };
                    for index in written.into_iter().filter(|i| *i < replaced_from) {
                        state.overlay.remove(&index);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "raft log write failed; this member stops accepting writes");
                    state.failed = Some(e.clone());
                }
            }
        }
        for waiter in waiters {
            match waiter {
                Waiter::Flushed(cb) => cb.io_completed(result.clone().map_err(io::Error::other)),
                Waiter::Durable(tx) => drop(tx.send(result.clone())),
            }
        }
        if result.is_err() {
            return;
        }
    }
}

enum Waiter {
    Flushed(IOFlushed<TypeConfig>),
    Durable(oneshot::Sender<Result<(), String>>),
}

fn write_batch(db: &Database, ops: &[Op]) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut log = txn.open_table(LOG)?;
        let mut meta = txn.open_table(LOG_META)?;
        for op in ops {
            match op {
                Op::Append(entries) => {
                    for (index, bytes) in entries {
                        log.insert(*index, bytes.as_slice())?;
                    }
                }
                Op::TruncateFrom(index) => log.retain_in(*index.., |_, _| false)?,
                Op::PurgeTo(index) => log.retain_in(..=*index, |_, _| false)?,
                Op::Meta(key, value) => {
                    meta.insert(*key, value.as_slice())?;
                }
                Op::Flushed(_) | Op::Durable(_) => {}
            }
        }
    }
    txn.commit()?;
    Ok(())
}

fn owned_bound(b: Bound<&u64>) -> Bound<u64> {
    match b {
        Bound::Included(i) => Bound::Included(*i),
        Bound::Excluded(i) => Bound::Excluded(*i),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let bounds = (
            owned_bound(range.start_bound()),
            owned_bound(range.end_bound()),
        );
        // Snapshot the overlay first: whatever the writer commits afterwards is either in this
        // copy or already in the database we read next.
        let (mut merged, hidden_from) = {
            let state = self.shared.lock();
            let overlay: BTreeMap<u64, Entry> = state
                .overlay
                .range(bounds)
                .map(|(i, e)| (*i, e.clone()))
                .collect();
            (overlay, state.truncated_from)
        };
        let txn = self.shared.db.begin_read().map_err(to_io)?;
        let table = txn.open_table(LOG).map_err(to_io)?;
        for item in table.range::<u64>(bounds).map_err(to_io)? {
            let (index, raw) = item.map_err(to_io)?;
            let index = index.value();
            if hidden_from.is_some_and(|t| index >= t) {
                break;
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = merged.entry(index) {
                let entry: Entry = decode(raw.value())?;
                debug_assert_eq!(entry.log_id.index, index);
                slot.insert(entry);
            }
        }
        Ok(merged.into_values().collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        read_meta(&self.shared.db, KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let (overlay_last, hidden_from, last_purged_log_id) = {
            let state = self.shared.lock();
            let last = state
                .overlay
                .last_key_value()
                .map(|(_, e)| e.log_id.clone());
            (last, state.truncated_from, state.last_purged.clone())
        };
        // Appends only ever extend the log's end, so a non-empty overlay holds the last entry.
        let last_log_id = match overlay_last {
            Some(id) => Some(id),
            None => {
                let txn = self.shared.db.begin_read().map_err(to_io)?;
                let table = txn.open_table(LOG).map_err(to_io)?;
                let end = hidden_from.map_or(Bound::Unbounded, Bound::Excluded);
                match table
                    .range::<u64>((Bound::Unbounded, end))
                    .map_err(to_io)?
                    .next_back()
                {
                    Some(item) => {
                        let (_, raw) = item.map_err(to_io)?;
                        Some(decode::<Entry>(raw.value())?.log_id)
                    }
                    None => None,
                }
            }
        };
        Ok(LogState {
            last_log_id: last_log_id.or_else(|| last_purged_log_id.clone()),
            last_purged_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.put_meta_durably(KEY_VOTE, vote).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Durable with the next batch; a stale value only means re-applying a little more.
        self.enqueue([Op::Meta(KEY_COMMITTED, encode(&committed)?)])
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(read_meta::<Option<LogId>>(&self.shared.db, KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
    {
        let mut encoded = Vec::new();
        let mut state = self.shared.lock();
        if let Some(e) = &state.failed {
            return Err(io::Error::other(format!("raft log writer failed: {e}")));
        }
        for entry in entries {
            let index = entry.log_id.index;
            encoded.push((index, encode(&entry)?));
            state.overlay.insert(index, entry);
        }
        state.queue.push(Op::Append(encoded));
        state.queue.push(Op::Flushed(callback));
        drop(state);
        self.shared.work.notify_one();
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index + 1);
        let mut state = self.shared.lock();
        state.overlay.retain(|index, _| *index < from);
        state.truncated_from = Some(state.truncated_from.map_or(from, |t| t.min(from)));
        state.truncations += 1;
        state.queue.push(Op::TruncateFrom(from));
        drop(state);
        self.shared.work.notify_one();
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let index = log_id.index;
        let bytes = encode(&log_id)?;
        let mut state = self.shared.lock();
        state.overlay.retain(|i, _| *i > index);
        state.last_purged = Some(log_id);
        // Record the purge point first: entries at or below it are ignored from then on.
        state.queue.push(Op::Meta(KEY_PURGED, bytes));
        state.queue.push(Op::PurgeTo(index));
        drop(state);
        self.shared.work.notify_one();
        Ok(())
    }
}
