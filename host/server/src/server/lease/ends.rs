//! Announces the end of leases (revoked or expired) on this member, after the commit, to
//! whoever waits for one: module calls parked on a lease.

use std::sync::Arc;

use tokio::sync::broadcast;

use baton_limits::LEASE_ENDS_BUFFERED;
use baton_store::lease::{LeaseChange, LeaseObserver};

pub(crate) struct LeaseEnds {
    ended: broadcast::Sender<i64>,
}

impl Default for LeaseEnds {
    fn default() -> Self {
        Self {
            ended: broadcast::Sender::new(LEASE_ENDS_BUFFERED),
        }
    }
}

impl LeaseEnds {
    /// Ids of leases that end from now on. A receiver that falls behind gets `Lagged`: it
    /// must assume any lease it cares about may have ended.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<i64> {
        self.ended.subscribe()
    }
}

impl LeaseObserver for LeaseEnds {
    fn applied(&self, changes: &[LeaseChange]) {
        for change in changes {
            if let LeaseChange::Revoked { id } = change {
                // No receivers is fine: nobody waits.
                let _ = self.ended.send(*id);
            }
        }
    }
}

/// Several observers, told in order.
pub(crate) struct Observers(pub Vec<Arc<dyn LeaseObserver>>);

impl LeaseObserver for Observers {
    fn applied(&self, changes: &[LeaseChange]) {
        for observer in &self.0 {
            observer.applied(changes);
        }
    }
}
