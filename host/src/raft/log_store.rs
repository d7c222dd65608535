//! The Raft log in its own redb file, with group commit.
//!
//! `append` writes entries in a non-durable redb commit, so they are readable at once (openraft
//! requires that), and hands the flush callback to a flusher thread. The flusher waits for the
//! first pending callback, takes every other one queued behind it, makes them all durable with a
//! single fsync (an empty `Durability::Immediate` commit persists every earlier non-durable
//! commit), and only then reports them flushed. Concurrent proposals therefore share one fsync,
//! and nothing is acknowledged before it is on disk.
//!
//! Votes are written with an immediate (fsynced) commit before `save_vote` returns. All writes go
//! through redb's single writer in the order openraft issues them, so a vote and the appends
//! around it can never be reordered on disk.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::entry::{TypeConfig, codec};

type Entry = openraft::alias::EntryOf<TypeConfig>;
type LogId = openraft::alias::LogIdOf<TypeConfig>;
type Vote = openraft::alias::VoteOf<TypeConfig>;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const LOG_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_log_meta");
const KEY_VOTE: &str = "vote";
const KEY_PURGED: &str = "last_purged";
const KEY_COMMITTED: &str = "committed";

/// The redb-backed Raft log. Cheap to clone: clones share one database and one flusher.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    flusher: mpsc::Sender<IOFlushed<TypeConfig>>,
}

impl LogStore {
    /// Opens (or creates) the log database and starts its flusher thread.
    pub fn open(path: &Path) -> io::Result<Self> {
        let db = Arc::new(Database::create(path).map_err(io::Error::other)?);
        let txn = db.begin_write().map_err(io::Error::other)?;
        txn.open_table(LOG).map_err(io::Error::other)?;
        txn.open_table(LOG_META).map_err(io::Error::other)?;
        txn.commit().map_err(io::Error::other)?;

        let (flusher, pending) = mpsc::channel();
        let flush_db = db.clone();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || run_flusher(&flush_db, &pending))?;
        Ok(Self { db, flusher })
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let txn = self.db.begin_read().map_err(io::Error::other)?;
        let table = txn.open_table(LOG_META).map_err(io::Error::other)?;
        let Some(raw) = table.get(key).map_err(io::Error::other)? else {
            return Ok(None);
        };
        codec::decode(raw.value())
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    fn put_meta<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        durability: Durability,
    ) -> io::Result<()> {
        let bytes =
            codec::encode(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut txn = self.db.begin_write().map_err(io::Error::other)?;
        txn.set_durability(durability).map_err(io::Error::other)?;
        {
            let mut table = txn.open_table(LOG_META).map_err(io::Error::other)?;
            table
                .insert(key, bytes.as_slice())
                .map_err(io::Error::other)?;
        }
        txn.commit().map_err(io::Error::other)
    }

    /// Deletes entries with index in `range` in one non-durable commit: truncation and purging
    /// need not be durable, openraft redoes them after a crash.
    fn delete_range(&self, range: impl RangeBounds<u64>) -> io::Result<()> {
        let mut txn = self.db.begin_write().map_err(io::Error::other)?;
        txn.set_durability(Durability::None)
            .map_err(io::Error::other)?;
        {
            let mut table = txn.open_table(LOG).map_err(io::Error::other)?;
            table
                .retain_in(range, |_, _| false)
                .map_err(io::Error::other)?;
        }
        txn.commit().map_err(io::Error::other)
    }
}

/// Makes pending appends durable, one fsync for everything queued, then reports them flushed.
fn run_flusher(db: &Database, pending: &mpsc::Receiver<IOFlushed<TypeConfig>>) {
    while let Ok(first) = pending.recv() {
        let mut batch = vec![first];
        batch.extend(pending.try_iter());
        let result = db
            .begin_write()
            .map_err(|e| e.to_string())
            .and_then(|txn| txn.commit().map_err(|e| e.to_string()));
        if let Err(e) = &result {
            tracing::error!(error = %e, "raft log fsync failed; the node stops accepting writes");
        }
        for callback in batch {
            callback.io_completed(result.clone().map_err(io::Error::other));
        }
    }
}

fn to_io(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(e)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        let txn = self.db.begin_read().map_err(to_io)?;
        let table = txn.open_table(LOG).map_err(to_io)?;
        let mut out = Vec::new();
        for item in table.range::<u64>((start, end)).map_err(to_io)? {
            let (index, raw) = item.map_err(to_io)?;
            let entry: Entry = codec::decode(raw.value())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            debug_assert_eq!(entry.log_id.index, index.value());
            out.push(entry);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_PURGED)?;
        let txn = self.db.begin_read().map_err(to_io)?;
        let table = txn.open_table(LOG).map_err(to_io)?;
        let last = match table.last().map_err(to_io)? {
            Some((_, raw)) => {
                let entry: Entry = codec::decode(raw.value())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                Some(entry.log_id)
            }
            None => None,
        };
        Ok(LogState {
            last_log_id: last.or_else(|| last_purged_log_id.clone()),
            last_purged_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.put_meta(KEY_VOTE, vote, Durability::Immediate)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Durable with the next flush; a stale value only means re-applying a little more.
        self.put_meta(KEY_COMMITTED, &committed, Durability::None)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
    {
        let mut txn = self.db.begin_write().map_err(to_io)?;
        txn.set_durability(Durability::None).map_err(to_io)?;
        {
            let mut table = txn.open_table(LOG).map_err(to_io)?;
            for entry in entries {
                let bytes = codec::encode(&entry)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                table
                    .insert(entry.log_id.index, bytes.as_slice())
                    .map_err(to_io)?;
            }
        }
        txn.commit().map_err(to_io)?;
        self.flusher
            .send(callback)
            .map_err(|_| io::Error::other("raft log flusher thread has stopped"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index + 1);
        self.delete_range(from..)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first: entries at or below it are ignored from then on.
        self.put_meta(KEY_PURGED, &log_id, Durability::None)?;
        self.delete_range(..=log_id.index)
    }
}
