//! The Raft log: an append-only record file ([`wal`]) written by one thread with group commit,
//! and an in-memory view of the live entries.
//!
//! openraft requires appended entries to be readable as soon as `append` returns, and reported
//! flushed only once durable. So every change (append, truncation, purge) is made to the
//! in-memory view at once, in call order, and queued for the writer thread. The writer takes
//! everything queued, writes it as records IN ORDER with one `pwrite` and one `fdatasync`, and
//! only then reports the appends flushed and wakes `save_vote` callers. Concurrent proposals
//! therefore share one sync, and a vote and the appends around it are never reordered on disk.
//!
//! The view keeps recent entries decoded (up to [`CACHED_ENTRY_BYTES_MAX`] of them once durable)
//! and the file location of every durable one, so older entries are read back from disk only
//! when a lagging follower needs them.
//!
//! A member upgraded from the redb-based log finds its old `raft-log.redb` imported on start.

#[cfg(test)]
mod budget_tests;
mod migrate;
#[cfg(test)]
mod tests;
use baton_wal as wal;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::fs::File;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use crate::entry::{TypeConfig, codec};
use baton_limits::REPLICATION_BATCH_BYTES_MAX;
use wal::{Batch, Loc, Record, Wal};

type Entry = openraft::alias::EntryOf<TypeConfig>;
type LogId = openraft::alias::LogIdOf<TypeConfig>;
type Vote = openraft::alias::VoteOf<TypeConfig>;

const KEY_VOTE: &str = "vote";
const KEY_PURGED: &str = "last_purged";
const KEY_COMMITTED: &str = "committed";

use baton_limits::RAFT_LOG_CACHED_ENTRY_BYTES_MAX as CACHED_ENTRY_BYTES_MAX;

/// One queued write, applied by the writer in queue order.
enum Op {
    /// (index, append sequence number, encoded entry).
    Append(Vec<(u64, u64, Vec<u8>)>),
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

/// A live entry of the view.
struct Slot {
    log_id: LogId,
    /// Which append put it here: the writer records a location only for the entry it wrote,
    /// not for one a truncation and a new append have put in its place since.
    seq: u64,
    /// Decoded; always present until the entry is durable.
    entry: Option<Entry>,
    /// Where it is on disk, once durable.
    loc: Option<Loc>,
}

impl Slot {
    /// The entry's encoded size: exact once written, else the command's encoding plus room for
    /// the log id and framing.
    fn encoded_bytes(&self) -> usize {
        match (&self.loc, &self.entry) {
            (Some(loc), _) => loc.len as usize,
            (None, Some(entry)) => entry_encoded_bytes(entry),
            (None, None) => 0,
        }
    }
}

/// Upper estimate of an entry's encoded size without encoding it.
fn entry_encoded_bytes(entry: &Entry) -> usize {
    const LOG_ID_AND_FRAMING_BYTES: usize = 64;
    let payload = match &entry.payload {
        openraft::EntryPayload::Normal(cmd) => cmd.encoded_len(),
        openraft::EntryPayload::Membership(m) => codec::encode(m).map_or(0, |b| b.len()),
        openraft::EntryPayload::Blank => 0,
    };
    payload + LOG_ID_AND_FRAMING_BYTES
}

#[derive(Default)]
struct State {
    slots: BTreeMap<u64, Slot>,
    /// Durable entries still decoded, oldest first, as (index, seq, encoded bytes).
    cached: VecDeque<(u64, u64, usize)>,
    cached_bytes: usize,
    cached_bytes_max: usize,
    next_seq: u64,
    /// Every segment's file, for reading entries back.
    files: BTreeMap<u64, Arc<File>>,
    queue: Vec<Op>,
    /// The newest committed log id not yet written. It rides along with the next batch instead
    /// of costing a sync of its own: a stale value only means re-applying a little more.
    committed: Option<Vec<u8>>,
    /// The latest value of every meta key (what `read_vote` and `read_committed` answer).
    meta: BTreeMap<String, Vec<u8>>,
    last_purged: Option<LogId>,
    /// Set once the writer failed: the log is out of service.
    failed: Option<String>,
    /// Set when the last handle is dropped: the writer finishes its queue and exits, which
    /// closes the log's files and releases its lock.
    closed: bool,
}

impl State {
    /// Drops the decoded form of the oldest durable entries until the cache fits its budget.
    fn evict(&mut self) {
        while self.cached_bytes > self.cached_bytes_max {
            let Some((index, seq, bytes)) = self.cached.pop_front() else {
                break;
            };
            self.cached_bytes -= bytes;
            if let Some(slot) = self.slots.get_mut(&index)
                && slot.seq == seq
                && slot.loc.is_some()
            {
                slot.entry = None;
            }
        }
    }
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The Raft log. Cheap to clone: clones share one view and one writer.
#[derive(Clone)]
pub struct LogStore {
    writer: Arc<WriterThread>,
}

/// The log's shared state and its writer thread, stopped and joined when the last [`LogStore`]
/// handle goes, so the log is closed (and its directory lock released) by the time the drop
/// returns.
struct WriterThread {
    shared: Arc<Shared>,
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_one();
        let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("the raft log writer panicked");
        }
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    codec::decode(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    codec::encode(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl LogStore {
    /// Opens (or creates) the log in directory `dir`, importing a redb-based log left at
    /// `dir` + `.redb` by an older version, and starts the writer thread.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Self::open_with(dir, wal::SEGMENT_BYTES, CACHED_ENTRY_BYTES_MAX)
    }

    /// [`Self::open`] with other segment and cache sizes (tests use small ones).
    fn open_with(dir: &Path, segment_bytes: u64, cached_bytes_max: usize) -> io::Result<Self> {
        migrate::import_redb_log(&dir.with_extension("redb"), dir)?;
        let (wal, state) = Self::replay(dir, segment_bytes, cached_bytes_max)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            work: Condvar::new(),
        });
        let handle = std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn({
                let shared = shared.clone();
                move || run_writer(&shared, wal)
            })?;
        let writer = Arc::new(WriterThread {
            shared,
            handle: Mutex::new(Some(handle)),
        });
        Ok(Self { writer })
    }

    /// The log's files and the view replayed from them, checked for holes.
    fn replay(dir: &Path, segment_bytes: u64, cached_bytes_max: usize) -> io::Result<(Wal, State)> {
        let (wal, replayed) = Wal::open_with(dir, segment_bytes)?;
        let mut state = State {
            files: wal.files(),
            meta: replayed.meta,
            cached_bytes_max,
            ..State::default()
        };
        if let Some(raw) = state.meta.get(KEY_PURGED) {
            state.last_purged = Some(decode(raw)?);
        }
        let mut entries = replayed.entries;
        if let Some(purged) = state.last_purged {
            // Purge records do this in replay; the recorded purge point is the backstop.
            entries = entries.split_off(&(purged.index + 1));
        }
        // openraft reads the log from just after the purge point (from its first entry, index 0,
        // if nothing was purged) with no gap; a hole here (lost records) would make a release
        // build apply around it, so it stops the member.
        let after_purge = state.last_purged.map_or(0, |p| p.index + 1);
        check_sequence(Some(after_purge), entries.keys().copied())?;
        // Replayed entries start decoded, newest first, as far as the cache budget goes.
        for (index, (loc, bytes)) in entries.into_iter().rev() {
            let entry: Entry = decode(&bytes)?;
            check_sequence(Some(index), [entry.log_id.index])?;
            let keep = state.cached_bytes + bytes.len() <= cached_bytes_max;
            if keep {
                state.cached.push_front((index, 0, bytes.len()));
                state.cached_bytes += bytes.len();
            }
            let slot = Slot {
                log_id: entry.log_id,
                seq: 0,
                entry: keep.then_some(entry),
                loc: Some(loc),
            };
            state.slots.insert(index, slot);
        }
        state.next_seq = 1;
        Ok((wal, state))
    }

    fn enqueue(&self, ops: impl IntoIterator<Item = Op>) -> io::Result<()> {
        let mut state = self.writer.shared.lock();
        if let Some(e) = &state.failed {
            return Err(io::Error::other(format!("raft log writer failed: {e}")));
        }
        state.queue.extend(ops);
        drop(state);
        self.writer.shared.work.notify_one();
        Ok(())
    }

    /// Queues `key = value` and waits until it (and everything queued before) is durable.
    async fn put_meta_durably<T: Serialize>(&self, key: &'static str, value: &T) -> io::Result<()> {
        let (done, durable) = oneshot::channel();
        let bytes = encode(value)?;
        self.writer
            .shared
            .lock()
            .meta
            .insert(key.to_string(), bytes.clone());
        self.enqueue([Op::Meta(key, bytes), Op::Durable(done)])?;
        match durable.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io::Error::other(e)),
            Err(_) => Err(io::Error::other("raft log writer stopped")),
        }
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        match self.writer.shared.lock().meta.get(key) {
            Some(raw) => decode(raw).map(Some),
            None => Ok(None),
        }
    }
}

/// The writer thread: one write and one sync per batch of queued operations.
fn run_writer(shared: &Shared, mut wal: Wal) {
    loop {
        let ops = {
            let mut state = shared.lock();
            while state.queue.is_empty() {
                if state.closed {
                    return;
                }
                state = shared.work.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            let mut ops = std::mem::take(&mut state.queue);
            if let Some(committed) = state.committed.take() {
                ops.push(Op::Meta(KEY_COMMITTED, committed));
            }
            ops
        };
        let result = write_ops(&mut wal, &ops).map_err(|e| e.to_string());
        let mut written = Vec::new();
        let mut waiters = Vec::new();
        for op in ops {
            match op {
                Op::Append(entries) => {
                    written.extend(entries.into_iter().map(|(i, seq, b)| (i, seq, b.len())))
                }
                Op::Flushed(cb) => waiters.push(Waiter::Flushed(cb)),
                Op::Durable(tx) => waiters.push(Waiter::Durable(tx)),
                Op::TruncateFrom(_) | Op::PurgeTo(_) | Op::Meta(..) => {}
            }
        }
        {
            let mut state = shared.lock();
            match &result {
                Ok(locs) => {
                    if let Some(files) = wal.files_if_changed() {
                        state.files = files;
                    }
                    for ((index, seq, bytes), (_, loc)) in written.into_iter().zip(locs) {
                        let Some(slot) = state.slots.get_mut(&index) else {
                            continue;
                        };
                        if slot.seq != seq {
                            continue;
                        }
                        slot.loc = Some(*loc);
                        state.cached.push_back((index, seq, bytes));
                        state.cached_bytes += bytes;
                    }
                    state.evict();
                }
                Err(e) => {
                    tracing::error!(error = %e, "raft log write failed; this member stops accepting writes");
                    state.failed = Some(e.clone());
                }
            }
        }
        for waiter in waiters {
            match waiter {
                Waiter::Flushed(cb) => cb.io_completed(
                    result
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| io::Error::other(e.clone())),
                ),
                Waiter::Durable(tx) => {
                    drop(tx.send(result.as_ref().map(|_| ()).map_err(|e| e.clone())))
                }
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

/// Writes `ops` as one durable batch; returns where each appended entry went, in order.
fn write_ops(wal: &mut Wal, ops: &[Op]) -> io::Result<Vec<(u64, Loc)>> {
    let epoch = wal.epoch();
    let mut batch = Batch::default();
    let mut purged_to = None;
    for op in ops {
        match op {
            Op::Append(entries) => {
                for (index, _, entry) in entries {
                    batch.push(
                        epoch,
                        &Record::Append {
                            index: *index,
                            entry,
                        },
                    );
                }
            }
            Op::TruncateFrom(index) => batch.push(epoch, &Record::TruncateFrom(*index)),
            Op::PurgeTo(index) => {
                batch.push(epoch, &Record::PurgeTo(*index));
                purged_to = Some(*index);
            }
            Op::Meta(key, value) => batch.push(epoch, &Record::Meta { key, value }),
            Op::Flushed(_) | Op::Durable(_) => {}
        }
    }
    if batch.is_empty() {
        // Only waiters: everything queued before them is already durable.
        return Ok(Vec::new());
    }
    let locs = wal.write(&batch)?;
    for op in ops {
        if let Op::Meta(key, value) = op {
            wal.note_meta(key, value);
        }
    }
    if let Some(index) = purged_to
        && let Err(e) = wal.delete_purged(index)
    {
        // The records stay correct; only disk space is not yet reclaimed.
        tracing::warn!(error = %e, "could not delete purged raft log segments");
    }
    Ok(locs)
}

/// Checks that `indexes` run from `first` (or from the first of them) up without a hole, as
/// openraft requires of the log.
fn check_sequence(first: Option<u64>, indexes: impl IntoIterator<Item = u64>) -> io::Result<()> {
    let mut expected = first;
    for index in indexes {
        if let Some(want) = expected
            && want != index
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "raft log entry {index} found where entry {want} belongs: the log has a \
                     hole; {}",
                    wal::RESTORE_ADVICE
                ),
            ));
        }
        expected = Some(index + 1);
    }
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
        // Copy what is in memory and note what is not; read the rest after unlocking. Written
        // bytes never change, so a location stays valid whatever happens to the view meanwhile.
        let mut found: Vec<Result<Entry, Loc>> = Vec::new();
        let files = {
            let state = self.writer.shared.lock();
            // Only the ends of a range may be missing (purged, not yet appended), never a hole.
            check_sequence(None, state.slots.range(bounds).map(|(index, _)| *index))?;
            for (index, slot) in state.slots.range(bounds) {
                match (&slot.entry, slot.loc) {
                    (Some(entry), _) => found.push(Ok(entry.clone())),
                    (None, Some(loc)) => found.push(Err(loc)),
                    (None, None) => {
                        return Err(io::Error::other(format!(
                            "raft log entry {index} is neither in memory nor on disk"
                        )));
                    }
                }
            }
            if found.iter().all(Result::is_ok) {
                None
            } else {
                Some(state.files.clone())
            }
        };
        let mut entries = Vec::with_capacity(found.len());
        for item in found {
            let entry = match item {
                Ok(entry) => entry,
                Err(loc) => {
                    let file = files
                        .as_ref()
                        .and_then(|f| f.get(&loc.segment))
                        .ok_or_else(|| {
                            io::Error::other(format!("raft log segment {} is gone", loc.segment))
                        })?;
                    let mut bytes = vec![0; loc.len as usize];
                    file.read_exact_at(&mut bytes, loc.offset)?;
                    decode(&bytes)?
                }
            };
            entries.push(entry);
        }
        Ok(entries)
    }

    /// What one replication message carries: entries from `start` up to `end` (exclusive) while
    /// their encoded bytes stay within [`REPLICATION_BATCH_BYTES_MAX`], and always the first
    /// one. openraft counts entries only (300 a message), and a follower refuses a message over
    /// `PEER_MESSAGE_BYTES_MAX`: a backlog of large values would be refused forever.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        let stop = {
            let state = self.writer.shared.lock();
            replication_stop(&state.slots, start, end)
        };
        self.try_get_log_entries(start..stop).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.read_meta(KEY_VOTE)
    }
}

/// The end (exclusive) of the longest run of entries from `start` whose encoded bytes fit
/// [`REPLICATION_BATCH_BYTES_MAX`]; at least `start + 1` when `start < end`.
fn replication_stop(slots: &BTreeMap<u64, Slot>, start: u64, end: u64) -> u64 {
    let mut bytes = 0usize;
    let mut stop = start;
    for (index, slot) in slots.range(start..end) {
        let size = slot.encoded_bytes();
        if stop > start && bytes.saturating_add(size) > REPLICATION_BATCH_BYTES_MAX {
            break;
        }
        bytes = bytes.saturating_add(size);
        stop = index + 1;
    }
    // An index missing from the view is left to `try_get_log_entries` to report.
    stop.max(start.saturating_add(1)).min(end.max(start))
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let state = self.writer.shared.lock();
        let last_log_id = state.slots.last_key_value().map(|(_, s)| s.log_id);
        Ok(LogState {
            last_log_id: last_log_id.or(state.last_purged),
            last_purged_log_id: state.last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.put_meta_durably(KEY_VOTE, vote).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let bytes = encode(&committed)?;
        let mut state = self.writer.shared.lock();
        state.meta.insert(KEY_COMMITTED.to_string(), bytes.clone());
        state.committed = Some(bytes);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.read_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
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
        let mut state = self.writer.shared.lock();
        if let Some(e) = &state.failed {
            return Err(io::Error::other(format!("raft log writer failed: {e}")));
        }
        for entry in entries {
            let index = entry.log_id.index;
            // openraft truncates a conflicting suffix before appending, so an append always
            // extends the log by the next index; anything else would leave a gap or overwrite
            // an entry that may be committed.
            if let Some((&last, _)) = state.slots.last_key_value()
                && last.checked_add(1) != Some(index)
            {
                return Err(io::Error::other(format!(
                    "invariant broken: raft log entry {index} appended after entry {last}; \
                     stopping rather than writing a log with a gap or an overwrite"
                )));
            }
            let seq = state.next_seq;
            state.next_seq += 1;
            encoded.push((index, seq, encode(&entry)?));
            let slot = Slot {
                log_id: entry.log_id,
                seq,
                entry: Some(entry),
                loc: None,
            };
            state.slots.insert(index, slot);
        }
        state.queue.push(Op::Append(encoded));
        state.queue.push(Op::Flushed(callback));
        drop(state);
        self.writer.shared.work.notify_one();
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index + 1);
        let mut state = self.writer.shared.lock();
        state.slots.split_off(&from);
        state.queue.push(Op::TruncateFrom(from));
        drop(state);
        self.writer.shared.work.notify_one();
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let index = log_id.index;
        let bytes = encode(&log_id)?;
        let mut state = self.writer.shared.lock();
        let kept = state.slots.split_off(&index.saturating_add(1));
        state.slots = kept;
        state.last_purged = Some(log_id);
        state.meta.insert(KEY_PURGED.to_string(), bytes.clone());
        // Record the purge point first: entries at or below it are ignored from then on.
        state.queue.push(Op::Meta(KEY_PURGED, bytes));
        state.queue.push(Op::PurgeTo(index));
        drop(state);
        self.writer.shared.work.notify_one();
        Ok(())
    }
}
