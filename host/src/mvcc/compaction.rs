//! Compaction: forget history at or below a revision, keeping what reads at that revision
//! and later still need.

use redb::ReadableTable;

use crate::mvcc::codec::decode_history;
use crate::mvcc::error::{ApplyError, KvError, StorageError};
use crate::mvcc::write::WriteCtx;
use crate::storage::schema::REV_KIND_TOMBSTONE;

/// etcd's checks (`rev <= compacted` -> Compacted, `rev > current` -> FutureRevision), then
/// records `rev` as compacted and deletes history it made unreachable: every change at or
/// below `rev` except, per key, the latest one if that is a put.
pub fn compact(w: &mut WriteCtx<'_>, rev: i64) -> Result<(), ApplyError> {
    if rev <= w.compact {
        return Err(KvError::Compacted.into());
    }
    if rev > w.begin {
        return Err(KvError::FutureRevision.into());
    }
    w.set_compact(rev)?;
    let doomed = unreachable_changes(w, rev)?;
    tracing::debug!(rev, removed = doomed.len(), "compacted kv history");
    for (main, sub, key) in doomed {
        w.tables.history.remove((main, sub))?;
        w.tables.key_revs.remove((key.as_slice(), main, sub))?;
    }
    Ok(())
}

/// (main, sub, key) of each change at or below `rev` that no read at `rev` or later can see.
fn unreachable_changes(
    w: &WriteCtx<'_>,
    rev: i64,
) -> Result<Vec<(i64, i64, Vec<u8>)>, StorageError> {
    let t = &w.tables;
    let mut doomed = Vec::new();
    for entry in t
        .history
        .range::<(i64, i64)>(..=(rev, i64::MAX))
        .map_err(redb::Error::from)?
    {
        let (k, v) = entry.map_err(redb::Error::from)?;
        let (main, sub) = k.value();
        let (kind, kv) = decode_history(v.value())?;
        let later = (kv.key.as_slice(), main, sub)..=(kv.key.as_slice(), rev, i64::MAX);
        let mut revs = t
            .key_revs
            .range::<(&[u8], i64, i64)>(later)
            .map_err(redb::Error::from)?;
        // The range starts at this change itself; any further entry supersedes it.
        revs.next().transpose().map_err(redb::Error::from)?;
        let superseded = revs
            .next()
            .transpose()
            .map_err(redb::Error::from)?
            .is_some();
        if superseded || kind == REV_KIND_TOMBSTONE {
            doomed.push((main, sub, kv.key));
        }
    }
    Ok(doomed)
}
