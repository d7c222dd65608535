//! The leader's [`LeaderTable`] behind a lock, on this process's monotonic clock. Shared by the
//! state machine (which reports applied lease changes into it) and the [`super::Lessor`].

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

use baton_store::lease::{LeaderTable, LeaseChange, LeaseObserver};

pub(crate) struct Deadlines {
    epoch: Instant,
    table: Mutex<LeaderTable>,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            table: Mutex::new(LeaderTable::default()),
        }
    }
}

impl Deadlines {
    /// Milliseconds on this process's monotonic clock; only ever compared with itself.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The table, locked. Hold it briefly and never across an await.
    pub(crate) fn lock(&self) -> MutexGuard<'_, LeaderTable> {
        // The table stays consistent between calls, so a panic elsewhere does not spoil it.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LeaseObserver for Deadlines {
    fn applied(&self, changes: &[LeaseChange]) {
        let now_ms = self.now_ms();
        let mut table = self.lock();
        for change in changes {
            table.apply(now_ms, *change);
        }
    }
}
