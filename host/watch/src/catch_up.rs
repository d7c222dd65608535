//! The catch-up task: serves unsynced watchers from the MVCC history until they reach the
//! hub's revision, like etcd's `syncWatchersLoop`.
//!
//! Each round plans (under the hub's lock) which unsynced watchers to serve, reads one batch
//! of whole revisions from a read view (outside the lock, on a blocking thread), then hands
//! each watcher its share (under the lock again, so a delivery can never overtake or trail a
//! published batch). A watcher whose buffer is full is skipped and retried later.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::WatchHub;
use crate::registry::{CatchUpRead, Found, Planned};
use baton_apply::settled::Store;
use baton_limits::WATCH_CATCH_UP_RETRY_MS;
use baton_proto::mvccpb::Event;
use baton_store::mvcc::HistoryView;
use baton_store::mvcc::error::StorageError;

/// What one round achieved.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Round {
    /// No watcher is unsynced.
    Idle,
    /// Some watcher moved forward; go again at once.
    Progressed,
    /// Unsynced watchers exist but none could move (full buffers): retry after a pause.
    Stalled,
}

impl WatchHub {
    /// Starts the catch-up task over `store`, where this hub's events come from. It runs until
    /// aborted.
    pub fn spawn_catch_up(self: &Arc<Self>, store: Store) -> JoinHandle<()> {
        let hub = self.clone();
        tokio::spawn(async move {
            loop {
                match hub.catch_up_round(&store).await {
                    Ok(Round::Progressed) => tokio::task::yield_now().await,
                    Ok(Round::Idle) => hub.unsynced.notified().await,
                    Ok(Round::Stalled) => hub.pause().await,
                    Err(e) => {
                        tracing::error!(error = %e, "watch catch-up cannot read history; retrying");
                        hub.pause().await;
                    }
                }
            }
        })
    }

    async fn pause(&self) {
        let retry = Duration::from_millis(WATCH_CATCH_UP_RETRY_MS);
        let _ = tokio::time::timeout(retry, self.unsynced.notified()).await;
    }

    /// One catch-up round (the task's body; tests drive it directly).
    pub(crate) async fn catch_up_round(&self, store: &Store) -> Result<Round, StorageError> {
        let (plan, hub_revision) = {
            let mut registry = self.registry();
            if !registry.has_unsynced() {
                return Ok(Round::Idle);
            }
            (
                registry.plan(self.limits.catch_up_watchers),
                registry.revision(),
            )
        };
        if plan.is_empty() {
            return Ok(Round::Stalled);
        }
        let store = store.clone();
        let batch_events = self.limits.catch_up_batch_events;
        let read = tokio::task::spawn_blocking(move || {
            read_history(&store, plan, hub_revision, batch_events)
        })
        .await
        .map_err(|e| StorageError::Corrupt(format!("catch-up read panicked: {e}")))??;
        let progressed = self.registry().apply_catch_up(read);
        Ok(if progressed {
            Round::Progressed
        } else {
            Round::Stalled
        })
    }
}

/// Reads one batch of whole revisions starting at the lowest planned revision and works out
/// each planned watcher's share; prev_kv is looked up only for events a prev_kv watcher takes.
///
/// Nothing past `hub_revision` is read, even when the view already holds it (committed, not
/// yet published): those revisions reach watchers through `publish`, so no watcher is ever
/// ahead of the hub and no response can carry a revision the hub has not announced.
pub(crate) fn read_history(
    store: &Store,
    plan: Vec<Planned>,
    hub_revision: i64,
    batch_events: usize,
) -> Result<CatchUpRead, StorageError> {
    let txn = store.read().map_err(redb::Error::from)?;
    let view = HistoryView::open(&txn)?;
    let compact = view.compact_revision();
    let current = view.current_revision().min(hub_revision);
    // etcd cancels a watcher whose next revision is below the compacted one (not equal).
    let (compacted, live): (Vec<Planned>, Vec<Planned>) =
        plan.into_iter().partition(|p| p.min_rev < compact);
    let mut found: Vec<(Planned, Found)> = Vec::with_capacity(compacted.len() + live.len());
    for p in compacted {
        found.push((
            p,
            Found::Compacted {
                compact_revision: compact,
            },
        ));
    }
    let start = live.iter().map(|p| p.min_rev).min().unwrap_or(current + 1);
    let (mut events, next_rev) = read_up_to(&view, start, current, batch_events)?;
    let mut needs_prev = HashSet::new();
    for p in live {
        let picks: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e.kv.as_ref().is_some_and(|kv| kv.mod_revision >= p.min_rev) && p.spec.wants(e)
            })
            .map(|(i, _)| i)
            .collect();
        if p.spec.prev_kv {
            needs_prev.extend(picks.iter().copied());
        }
        found.push((p, Found::Events { picks, next_rev }));
    }
    for i in needs_prev {
        if let Some(event) = events.get(i) {
            events[i].prev_kv = view.prev_kv(event)?;
        }
    }
    Ok(CatchUpRead {
        revision: current,
        source: Arc::new(events),
        found,
    })
}

/// About `batch_events` events of whole revisions in [start, current], and the next revision
/// to read after them.
fn read_up_to(
    view: &HistoryView,
    start: i64,
    current: i64,
    batch_events: usize,
) -> Result<(Vec<Event>, i64), StorageError> {
    if start > current {
        return Ok((Vec::new(), current + 1));
    }
    let (mut events, more) = view.events(start, batch_events)?;
    let rev = |e: &Event| e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
    let within = events.partition_point(|e| rev(e) <= current);
    if more && within == events.len() {
        let next = events.last().map_or(current + 1, |e| rev(e) + 1);
        return Ok((events, next));
    }
    events.truncate(within);
    Ok((events, current + 1))
}
