//! Fan-out of committed changes to watchers, with etcd 3.4's delivery rules.
//!
//! The state machine calls [`WatchHub::publish`] once per applied batch, strictly after the redb
//! commit that made it visible, with every event of the batch in revision order. Watchers
//! never see an event that a read could not see.
//!
//! # Synced and unsynced watchers
//!
//! A watcher is *synced* when everything up to the hub's revision has been handed to it; only
//! synced watchers get events from `publish`, straight from the batch. Each watcher has a
//! bounded buffer of deliveries (read by its gRPC stream). `publish` never waits: a watcher
//! whose buffer is full becomes *unsynced* at the first revision it missed, and so does a
//! watcher created with a start revision at or below the hub's revision. The catch-up task
//! ([`catch_up`]) reads unsynced watchers' events from the MVCC history in bounded batches of
//! whole revisions, filling prev_kv from history, and moves each watcher back to synced once
//! it has reached the hub's revision. A watcher whose next revision was compacted away gets
//! one compaction notice and is dropped, as in etcd. A stalled client therefore costs one
//! full buffer and a place in the unsynced set, never a blocked write or other watchers' time.
//!
//! Every delivery goes through the watcher's own buffer, so a watcher's events, progress
//! notices and compaction notice reach its stream in order. The gRPC layer
//! (`baton::api::watch`) owns watch ids, `created`/`canceled` responses and fragmenting.

// The map above is for maintainers (`cargo doc --document-private-items`): it links the modules
// a reader opens next, most of which are private to this crate.
#![allow(
    rustdoc::private_intra_doc_links,
    reason = "the crate map links private modules on purpose"
)]

mod catch_up;
mod key_index;
mod registry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, mpsc};

use baton_limits::{
    WATCH_CATCH_UP_BATCH_EVENTS, WATCH_CATCH_UP_WATCHERS_MAX, WATCHER_BUFFER_RESPONSES,
};
use baton_proto::mvccpb::{Event, event::EventType};
use registry::Registry;

pub use baton_store::mvcc::key_range::KeyRange;

/// The hub's name for one watcher (unique for the hub's lifetime; not the client's watch id).
pub type WatcherId = u64;

/// What a watcher wants.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    pub range: KeyRange,
    /// etcd's NOPUT filter.
    pub no_put: bool,
    /// etcd's NODELETE filter.
    pub no_delete: bool,
    pub prev_kv: bool,
}

impl WatchSpec {
    /// Whether `event` is for this watcher: its key is in range and no filter drops it.
    fn wants(&self, event: &Event) -> bool {
        let Some(kv) = &event.kv else {
            return false;
        };
        let is_put = event.r#type == EventType::Put as i32;
        let filtered = if is_put { self.no_put } else { self.no_delete };
        !filtered && self.range.contains(&kv.key)
    }
}

/// Events for one watcher: some of a shared batch, picked by index, so publishing to many
/// watchers copies no key or value.
#[derive(Debug)]
pub struct EventBatch {
    /// The revision etcd puts in the response header: the events' revision when they came
    /// straight from a commit, the store's revision when read back from history.
    pub revision: i64,
    source: Arc<Vec<Event>>,
    picks: Vec<usize>,
    prev_kv: bool,
}

impl EventBatch {
    #[cfg(test)]
    fn len(&self) -> usize {
        self.picks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.picks.is_empty()
    }

    /// The picked events, with prev_kv only if the watcher asked for it.
    pub fn to_events(&self) -> Vec<Event> {
        self.picks
            .iter()
            .filter_map(|&i| self.source.get(i))
            .map(|e| Event {
                r#type: e.r#type,
                kv: e.kv.clone(),
                prev_kv: if self.prev_kv {
                    e.prev_kv.clone()
                } else {
                    None
                },
            })
            .collect()
    }
}

/// What the hub hands a watcher's stream.
#[derive(Debug)]
pub enum Delivery {
    Events(EventBatch),
    /// Everything up to `revision` has been delivered (etcd's progress notification).
    Progress {
        revision: i64,
    },
    /// The watcher's next revision was compacted; the hub has dropped the watcher.
    Compacted {
        compact_revision: i64,
    },
}

/// A new watcher: its id, the hub's revision when it was created, and its deliveries.
pub struct Registration {
    pub id: WatcherId,
    pub revision: i64,
    pub deliveries: mpsc::Receiver<Delivery>,
}

/// The hub's bounds; [`HubLimits::default`] takes them from [`baton_limits`].
#[derive(Clone, Copy, Debug)]
pub struct HubLimits {
    /// Deliveries a watcher may have waiting before it is moved to unsynced.
    buffer_responses: usize,
    /// Events read from history per catch-up round (whole revisions, so possibly a few more).
    catch_up_batch_events: usize,
    /// Unsynced watchers served per catch-up round.
    catch_up_watchers: usize,
}

impl Default for HubLimits {
    fn default() -> Self {
        HubLimits {
            buffer_responses: WATCHER_BUFFER_RESPONSES,
            catch_up_batch_events: WATCH_CATCH_UP_BATCH_EVENTS,
            catch_up_watchers: WATCH_CATCH_UP_WATCHERS_MAX,
        }
    }
}

/// Where committed events are announced and watchers registered. Cheap to share.
pub struct WatchHub {
    registry: Mutex<Registry>,
    /// Wakes the catch-up task when a watcher becomes unsynced.
    unsynced: Notify,
    limits: HubLimits,
}

impl WatchHub {
    pub fn new(revision: i64) -> Arc<Self> {
        Self::with_limits(revision, HubLimits::default())
    }

    fn with_limits(revision: i64, limits: HubLimits) -> Arc<Self> {
        Arc::new(Self {
            registry: Mutex::new(Registry::new(revision)),
            unsynced: Notify::new(),
            limits,
        })
    }

    /// A poisoned lock means a panic mid-update elsewhere; the registry's invariants hold
    /// between statements that can panic, so carrying on is safe.
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Announces an applied batch: `revision` is the store revision after it, `events` its
    /// changes in revision order. Called only by the state machine, after its commit. Never
    /// blocks on a watcher.
    pub fn publish(&self, revision: i64, events: Vec<Event>) {
        let woke = self.registry().publish(revision, events);
        if woke {
            self.unsynced.notify_one();
        }
    }

    /// The store revision as of the last published batch.
    pub fn revision(&self) -> i64 {
        self.registry().revision()
    }

    /// Adds a watcher from `start_revision` (0: from the next revision on). A start at or
    /// below the hub's revision is served from history by the catch-up task.
    pub fn register(&self, spec: WatchSpec, start_revision: i64) -> Registration {
        let (tx, rx) = mpsc::channel(self.limits.buffer_responses.max(1));
        let (id, revision, unsynced) = self.registry().register(spec, start_revision, tx);
        if unsynced {
            self.unsynced.notify_one();
        }
        Registration {
            id,
            revision,
            deliveries: rx,
        }
    }

    /// Removes a watcher; nothing more is delivered to it. Unknown ids are ignored.
    pub fn unregister(&self, id: WatcherId) {
        self.registry().unregister(id);
    }

    /// Sends the watcher a progress notice at the hub's revision if it is synced and has room
    /// (etcd skips unsynced watchers: their next events will show progress anyway).
    pub fn request_progress(&self, id: WatcherId) {
        self.registry().request_progress(id);
    }

    /// How many watchers are registered, and how many of them are unsynced.
    pub fn counts(&self) -> (usize, usize) {
        self.registry().counts()
    }
}

impl baton_apply::raft::state_machine::EventSink for WatchHub {
    fn publish(&self, revision: i64, events: Vec<Event>) {
        WatchHub::publish(self, revision, events);
    }
}
