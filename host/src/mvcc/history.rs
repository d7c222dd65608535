//! Reading the change log in revision order, for watches catching up.

use crate::mvcc::codec::{decode_history, history_event};
use crate::mvcc::error::StorageError;
use crate::mvcc::tables::HistoryTable;
use crate::proto::mvccpb::Event;

/// Up to `max_events` events with revision >= `start_rev`, in revision order, without prev_kv.
/// Events at or below the compacted revision may be missing; callers check that first.
pub fn events_from(
    history: &impl HistoryTable,
    start_rev: i64,
    max_events: usize,
) -> Result<Vec<Event>, StorageError> {
    let mut events = Vec::new();
    for entry in history
        .range::<(i64, i64)>((start_rev, i64::MIN)..)
        .map_err(redb::Error::from)?
    {
        if events.len() >= max_events {
            break;
        }
        let (_, v) = entry.map_err(redb::Error::from)?;
        let (kind, kv) = decode_history(v.value())?;
        events.push(history_event(kind, kv));
    }
    Ok(events)
}
