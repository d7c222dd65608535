//! The hub's state under its lock: every watcher, the key index, the synced/unsynced split,
//! and the two ways events reach a watcher (from a published batch, or from a catch-up read).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::mpsc::{self, error::TrySendError};

use crate::key_index::KeyIndex;
use crate::{Delivery, EventBatch, WatchSpec, WatcherId};
use baton_proto::mvccpb::Event;

struct Watcher {
    spec: Arc<WatchSpec>,
    tx: mpsc::Sender<Delivery>,
    /// The first revision not yet delivered. Kept exact while unsynced; while synced it only
    /// matters for a start in the future (later events pass it anyway).
    min_rev: i64,
    synced: bool,
    /// Indices picked for the revision being published.
    picks: Vec<usize>,
}

/// An unsynced watcher as the catch-up task saw it when planning a round.
#[derive(Clone, Debug)]
pub(crate) struct Planned {
    id: WatcherId,
    pub(crate) min_rev: i64,
    pub(crate) spec: Arc<WatchSpec>,
}

/// What a catch-up round found for one planned watcher.
#[derive(Debug)]
pub(crate) enum Found {
    Compacted {
        compact_revision: i64,
    },
    /// Events picked from the round's batch (possibly none) and the next revision to read.
    Events {
        picks: Vec<usize>,
        next_rev: i64,
    },
}

/// A catch-up round's read: the revision it read up to (its responses' header revision), the
/// events read, and each watcher's share.
pub(crate) struct CatchUpRead {
    pub(crate) revision: i64,
    pub(crate) source: Arc<Vec<Event>>,
    pub(crate) found: Vec<(Planned, Found)>,
}

fn event_rev(event: &Event) -> i64 {
    event.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

pub(crate) struct Registry {
    revision: i64,
    next_id: WatcherId,
    watchers: HashMap<WatcherId, Watcher>,
    index: KeyIndex,
    unsynced: BTreeSet<WatcherId>,
    /// Where the next catch-up plan starts, so every unsynced watcher gets its turn.
    plan_cursor: WatcherId,
    matched: Vec<WatcherId>,
    touched: Vec<WatcherId>,
}

impl Registry {
    pub(crate) fn new(revision: i64) -> Self {
        Registry {
            revision,
            next_id: 1,
            watchers: HashMap::new(),
            index: KeyIndex::default(),
            unsynced: BTreeSet::new(),
            plan_cursor: 0,
            matched: Vec::new(),
            touched: Vec::new(),
        }
    }

    pub(crate) fn revision(&self) -> i64 {
        self.revision
    }

    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.watchers.len(), self.unsynced.len())
    }

    /// Returns (id, hub revision, whether the watcher starts unsynced).
    pub(crate) fn register(
        &mut self,
        spec: WatchSpec,
        start_revision: i64,
        tx: mpsc::Sender<Delivery>,
    ) -> (WatcherId, i64, bool) {
        let id = self.next_id;
        self.next_id += 1;
        // etcd: 0 means the next revision; anything above the current revision waits in
        // the synced set; anything else (even negative) is replayed from history.
        let min_rev = if start_revision == 0 {
            self.revision + 1
        } else {
            start_revision
        };
        let synced = min_rev > self.revision;
        self.index.insert(id, &spec.range);
        self.watchers.insert(
            id,
            Watcher {
                spec: Arc::new(spec),
                tx,
                min_rev,
                synced,
                picks: Vec::new(),
            },
        );
        if !synced {
            self.unsynced.insert(id);
        }
        (id, self.revision, !synced)
    }

    pub(crate) fn unregister(&mut self, id: WatcherId) {
        if let Some(w) = self.watchers.remove(&id) {
            self.index.remove(id, &w.spec.range);
            self.unsynced.remove(&id);
        }
    }

    pub(crate) fn request_progress(&mut self, id: WatcherId) {
        let revision = self.revision;
        if let Some(w) = self.watchers.get(&id)
            && w.synced
        {
            // A full buffer means events are on their way; they show progress themselves.
            let _ = w.tx.try_send(Delivery::Progress { revision });
        }
    }

    fn desync(&mut self, id: WatcherId, from_rev: i64) {
        if let Some(w) = self.watchers.get_mut(&id) {
            w.synced = false;
            w.min_rev = w.min_rev.max(from_rev);
            self.unsynced.insert(id);
        }
    }

    /// Returns whether any watcher became unsynced (the catch-up task has work).
    pub(crate) fn publish(&mut self, revision: i64, events: Vec<Event>) -> bool {
        let continues = match events.first() {
            Some(first) => event_rev(first) == self.revision + 1,
            None => revision == self.revision,
        };
        if !continues {
            // A gap (a snapshot was installed): nobody can be served from this batch alone,
            // so every synced watcher resumes from history after the last revision it got.
            let next = self.revision + 1;
            let synced: Vec<WatcherId> = self
                .watchers
                .iter()
                .filter(|(_, w)| w.synced && w.min_rev <= revision)
                .map(|(&id, _)| id)
                .collect();
            let any = !synced.is_empty();
            for id in synced {
                self.desync(id, next);
            }
            tracing::info!(
                from = self.revision,
                to = revision,
                "watch hub: revision jumped; watchers resume from history"
            );
            self.revision = self.revision.max(revision);
            return any;
        }
        let batch = Arc::new(events);
        let mut woke = false;
        let mut start = 0;
        while start < batch.len() {
            let rev = event_rev(&batch[start]);
            let end = batch[start..]
                .iter()
                .position(|e| event_rev(e) != rev)
                .map_or(batch.len(), |n| start + n);
            woke |= self.deliver_revision(&batch, start, end, rev);
            start = end;
        }
        self.revision = revision;
        woke
    }

    /// Hands the events `batch[start..end]` (all of revision `rev`) to the synced watchers
    /// that want them, one delivery per watcher.
    fn deliver_revision(
        &mut self,
        batch: &Arc<Vec<Event>>,
        start: usize,
        end: usize,
        rev: i64,
    ) -> bool {
        let mut touched = std::mem::take(&mut self.touched);
        for (i, event) in batch.iter().enumerate().take(end).skip(start) {
            let Some(kv) = &event.kv else { continue };
            self.matched.clear();
            self.index.matches(&kv.key, &mut self.matched);
            for id in &self.matched {
                let Some(w) = self.watchers.get_mut(id) else {
                    continue;
                };
                if !w.synced || rev < w.min_rev || !w.spec.wants(event) {
                    continue;
                }
                if w.picks.is_empty() {
                    touched.push(*id);
                }
                w.picks.push(i);
            }
        }
        let mut woke = false;
        for id in touched.drain(..) {
            let Some(w) = self.watchers.get_mut(&id) else {
                continue;
            };
            let delivery = Delivery::Events(EventBatch {
                revision: rev,
                source: batch.clone(),
                picks: std::mem::take(&mut w.picks),
                prev_kv: w.spec.prev_kv,
            });
            match w.tx.try_send(delivery) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    tracing::debug!(
                        watcher = id,
                        rev,
                        "watcher fell behind; serving it from history"
                    );
                    self.desync(id, rev);
                    woke = true;
                }
                Err(TrySendError::Closed(_)) => self.unregister(id),
            }
        }
        self.touched = touched;
        woke
    }

    /// Up to `max` unsynced watchers with room in their buffers, taking turns across rounds.
    pub(crate) fn plan(&mut self, max: usize) -> Vec<Planned> {
        let after = self.unsynced.range(self.plan_cursor..);
        let before = self.unsynced.range(..self.plan_cursor);
        let mut plan = Vec::new();
        for id in after.chain(before) {
            if plan.len() >= max {
                break;
            }
            let Some(w) = self.watchers.get(id) else {
                continue;
            };
            if w.tx.capacity() == 0 {
                continue;
            }
            plan.push(Planned {
                id: *id,
                min_rev: w.min_rev,
                spec: w.spec.clone(),
            });
        }
        if let Some(last) = plan.last() {
            self.plan_cursor = last.id + 1;
        }
        plan
    }

    pub(crate) fn has_unsynced(&self) -> bool {
        !self.unsynced.is_empty()
    }

    /// Delivers a catch-up read to the watchers that are still where the plan found them.
    /// Returns whether any watcher moved forward.
    pub(crate) fn apply_catch_up(&mut self, read: CatchUpRead) -> bool {
        let mut progressed = false;
        for (planned, found) in read.found {
            let Some(w) = self.watchers.get_mut(&planned.id) else {
                continue;
            };
            if w.synced || w.min_rev != planned.min_rev {
                continue;
            }
            match catch_up_one(w, self.revision, read.revision, &read.source, found) {
                Step::Stay => {}
                Step::Advanced => progressed = true,
                Step::Synced => {
                    self.unsynced.remove(&planned.id);
                    progressed = true;
                }
                Step::Drop => {
                    self.unregister(planned.id);
                    progressed = true;
                }
            }
        }
        progressed
    }
}

enum Step {
    Stay,
    Advanced,
    Synced,
    Drop,
}

/// One watcher's share of a catch-up read; a full buffer leaves it for the next round.
fn catch_up_one(
    w: &mut Watcher,
    hub_rev: i64,
    read_rev: i64,
    source: &Arc<Vec<Event>>,
    found: Found,
) -> Step {
    let (picks, next_rev) = match found {
        Found::Compacted { compact_revision } => {
            return match w.tx.try_send(Delivery::Compacted { compact_revision }) {
                Ok(()) | Err(TrySendError::Closed(_)) => Step::Drop,
                Err(TrySendError::Full(_)) => Step::Stay,
            };
        }
        Found::Events { picks, next_rev } => (picks, next_rev),
    };
    if !picks.is_empty() {
        let delivery = Delivery::Events(EventBatch {
            revision: read_rev,
            source: source.clone(),
            picks,
            prev_kv: w.spec.prev_kv,
        });
        match w.tx.try_send(delivery) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Step::Stay,
            Err(TrySendError::Closed(_)) => return Step::Drop,
        }
    }
    let advanced = next_rev > w.min_rev;
    w.min_rev = w.min_rev.max(next_rev);
    if w.min_rev > hub_rev {
        w.synced = true;
        Step::Synced
    } else if advanced {
        Step::Advanced
    } else {
        Step::Stay
    }
}
