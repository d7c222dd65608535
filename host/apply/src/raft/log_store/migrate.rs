//! Importing the Raft log of a member last run by a version that kept it in redb.

use std::io;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::wal::{Batch, Record, Wal};

/// The redb log's tables: index -> encoded entry, and named values (vote, committed, purged).
pub(super) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
pub(super) const LOG_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_log_meta");

use baton_limits::RAFT_LOG_IMPORT_BATCH_BYTES as IMPORT_BATCH_BYTES;

fn to_io(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("importing the redb raft log: {e}"))
}

/// If `legacy` exists, rebuilds `dir` from it and then deletes it. The old file goes only once
/// the new log is durable, so a crash part-way leaves the old file and the import starts over.
pub(crate) fn import_redb_log(legacy: &Path, dir: &Path) -> io::Result<()> {
    if !legacy.exists() {
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let entries = copy_into(legacy, dir)?;
    std::fs::remove_file(legacy)?;
    if let Some(parent) = legacy.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    tracing::info!(entries, from = %legacy.display(), to = %dir.display(), "imported the raft log into its new format");
    Ok(())
}

/// Writes every meta value and entry of the redb log at `legacy` into a new log in `dir`.
fn copy_into(legacy: &Path, dir: &Path) -> io::Result<u64> {
    let db = Database::open(legacy).map_err(to_io)?;
    let txn = db.begin_read().map_err(to_io)?;
    let (mut wal, _) = Wal::open(dir)?;
    let epoch = wal.epoch();
    let mut batch = Batch::default();
    let meta = txn.open_table(LOG_META).map_err(to_io)?;
    for item in meta.iter().map_err(to_io)? {
        let (key, value) = item.map_err(to_io)?;
        let (key, value) = (key.value(), value.value());
        batch.push(epoch, &Record::Meta { key, value });
        wal.note_meta(key, value);
    }
    let log = txn.open_table(LOG).map_err(to_io)?;
    let mut entries = 0u64;
    for item in log.iter().map_err(to_io)? {
        let (index, entry) = item.map_err(to_io)?;
        let record = Record::Append {
            index: index.value(),
            entry: entry.value(),
        };
        batch.push(epoch, &record);
        entries += 1;
        if batch.len() >= IMPORT_BATCH_BYTES {
            wal.write(&std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        wal.write(&batch)?;
    }
    Ok(entries)
}
