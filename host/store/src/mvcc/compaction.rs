//! Compaction: forget history at or below a revision, keeping what reads at that revision
//! and later still need.

use crate::mvcc::error::{ApplyError, KvError};
use crate::mvcc::write::WriteCtx;

/// etcd's checks (`rev <= compacted` -> Compacted, `rev > current` -> FutureRevision), then
/// records `rev` as compacted and deletes history it made unreachable: every change at or
/// below `rev` except, per key, the latest one if that is a put. The key index names them.
pub(crate) fn compact(w: &mut WriteCtx<'_>, rev: i64) -> Result<(), ApplyError> {
    if rev <= w.compact {
        return Err(KvError::Compacted.into());
    }
    if rev > w.begin {
        return Err(KvError::FutureRevision.into());
    }
    w.set_compact(rev)?;
    let mut doomed = w.tables.index.compact(rev);
    // In revision order, the removals walk the history table's pages front to back.
    doomed.sort_unstable();
    tracing::debug!(rev, removed = doomed.len(), "compacted kv history");
    for (main, sub) in doomed {
        w.tables.history.remove((main, sub))?;
    }
    Ok(())
}
