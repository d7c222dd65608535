//! Fan-out of committed changes to watchers.
//!
//! The state machine calls [`WatchHub::publish`] once per applied batch, strictly after the redb
//! commit that made the batch durable-or-visible, with every event of the batch in revision
//! order. Watchers never see an event that a read could not see.

use std::sync::Arc;

use tokio::sync::watch;

use crate::proto::mvccpb;

/// One applied batch: the store revision after it, and its events in revision order.
#[derive(Clone, Debug, Default)]
pub struct CommittedBatch {
    pub revision: i64,
    pub events: Arc<Vec<mvccpb::Event>>,
}

/// Where committed events are announced. Cheap to share.
pub struct WatchHub {
    latest: watch::Sender<CommittedBatch>,
}

impl WatchHub {
    pub fn new(revision: i64) -> Arc<Self> {
        Arc::new(Self {
            latest: watch::Sender::new(CommittedBatch {
                revision,
                events: Arc::new(Vec::new()),
            }),
        })
    }

    /// Announces an applied batch. Called only by the state machine, after its commit.
    pub fn publish(&self, revision: i64, events: Vec<mvccpb::Event>) {
        drop(self.latest.send_replace(CommittedBatch {
            revision,
            events: Arc::new(events),
        }));
    }

    /// The store revision as of the last published batch.
    pub fn revision(&self) -> i64 {
        self.latest.borrow().revision
    }
}
