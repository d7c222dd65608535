//! Reading the change log in revision order, for watches catching up.

use crate::mvcc::codec::{decode_history, history_event};
use crate::mvcc::error::StorageError;
use crate::mvcc::tables::{HistoryTable, Revisions};
use crate::mvcc::{ReadTables, ReadView, open_read_tables, read_revisions};
use baton_proto::mvccpb::{Event, KeyValue, event::EventType};

/// Up to `max_events` events with revision >= `start_rev`, in revision order, without prev_kv.
/// Events at or below the compacted revision may be missing; callers check that first.
#[cfg(test)]
pub(crate) fn events_from(
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

/// Events of whole revisions from `start_rev` on: reading stops at the first revision boundary
/// once `max_events` events are in hand, so one revision is never split. The flag says whether
/// the log holds more events after the returned ones.
fn revisions_from(
    history: &impl HistoryTable,
    start_rev: i64,
    max_events: usize,
) -> Result<(Vec<Event>, bool), StorageError> {
    let mut events: Vec<Event> = Vec::new();
    let mut last_main = None;
    for entry in history
        .range::<(i64, i64)>((start_rev, i64::MIN)..)
        .map_err(redb::Error::from)?
    {
        let (k, v) = entry.map_err(redb::Error::from)?;
        let (main, _) = k.value();
        if events.len() >= max_events && last_main != Some(main) {
            return Ok((events, true));
        }
        let (kind, kv) = decode_history(v.value())?;
        events.push(history_event(kind, kv));
        last_main = Some(main);
    }
    Ok((events, false))
}

/// One consistent view of the change log and the revisions that bound it.
pub struct HistoryView {
    tables: ReadTables,
    revs: Revisions,
}

impl HistoryView {
    pub fn open(view: &ReadView) -> Result<Self, StorageError> {
        Ok(HistoryView {
            tables: open_read_tables(view)?,
            revs: read_revisions(view)?,
        })
    }

    /// The store revision this view sees.
    pub fn current_revision(&self) -> i64 {
        self.revs.current
    }

    /// Events below this revision may be gone (-1: never compacted).
    pub fn compact_revision(&self) -> i64 {
        self.revs.compact
    }

    /// Whole revisions from `start_rev` on, about `max_events` events (see [`revisions_from`]);
    /// the flag says whether more follow.
    pub fn events(
        &self,
        start_rev: i64,
        max_events: usize,
    ) -> Result<(Vec<Event>, bool), StorageError> {
        revisions_from(&self.tables.history, start_rev, max_events)
    }

    /// The event's prev_kv as etcd 3.4's watch fills it: the key as a read at
    /// `mod_revision - 1` sees it. A key's creation has none, and neither has an event whose
    /// previous revision is compacted (etcd's read fails there). One seek in the per-key
    /// index, plus one history read when the key was live.
    pub fn prev_kv(&self, event: &Event) -> Result<Option<KeyValue>, StorageError> {
        let Some(kv) = &event.kv else {
            return Ok(None);
        };
        let is_create =
            event.r#type == EventType::Put as i32 && kv.create_revision == kv.mod_revision;
        let before = kv.mod_revision - 1;
        if is_create || before < self.revs.compact {
            return Ok(None);
        }
        match self.tables.put_at(&kv.key, before) {
            Ok(Some((main, sub))) => Ok(Some(self.tables.history_kv(main, sub)?)),
            // Compacted since this view was opened: as if it had been before.
            Ok(None) | Err(StorageError::Compacted(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
