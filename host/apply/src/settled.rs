//! Read-your-writes for replies sent before their changes commit.
//!
//! The leader answers a batch's key-changing commands one by one as it applies them, while the
//! batch's changes commit to the state database only once, at the end of the apply. A client
//! that was told "done at revision R" and then reads this member's state (a serializable read,
//! a watch from now, a lease's attached keys) must see R. Readers therefore wait, before they
//! open a view, until no reply sent so far is ahead of the committed state: at most the rest of
//! one apply, and only while one that answered early is under way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use baton_store::mvcc::ReadView;
use baton_store::mvcc::key_index::KeyIndex;
use redb::{Database, ReadableDatabase};
use tokio::sync::watch;

/// The state machine's side: marks an apply that answers early, and its commit.
#[derive(Debug)]
pub(crate) struct Settling {
    /// How many applies have started answering early.
    answering: Arc<AtomicU64>,
    /// How many of those have committed.
    committed: watch::Sender<u64>,
}

/// The readers' side (cheap to clone).
#[derive(Clone, Debug)]
pub struct Settled {
    answering: Arc<AtomicU64>,
    committed: watch::Receiver<u64>,
}

impl Default for Settling {
    fn default() -> Self {
        Self {
            answering: Arc::default(),
            committed: watch::Sender::new(0),
        }
    }
}

impl Settling {
    /// Replies are about to leave ahead of the state database. Called by the one applying task,
    /// before the first such reply of an apply.
    pub(crate) fn unsettle(&self) {
        let committed = *self.committed.borrow();
        // Once per apply: later entries of the same apply are covered by the same commit.
        if self.answering.load(Ordering::SeqCst) == committed {
            self.answering.store(committed + 1, Ordering::SeqCst);
        }
    }

    /// Everything answered so far is committed (and published to watchers).
    pub(crate) fn settle(&self) {
        let answering = self.answering.load(Ordering::SeqCst);
        self.committed.send_if_modified(|committed| {
            let behind = *committed < answering;
            *committed = answering;
            behind
        });
    }

    pub(crate) fn readers(&self) -> Settled {
        Settled {
            answering: self.answering.clone(),
            committed: self.committed.subscribe(),
        }
    }
}

impl Settled {
    /// For a store no state machine writes to early (tests, tools).
    pub fn always() -> Self {
        Settling::default().readers()
    }

    /// Returns once every reply sent before this call is visible to a view opened afterwards.
    /// Waits for the commit of applies already answering, never for ones that start later, so a
    /// stream of writes cannot hold a reader back for longer than one apply.
    pub async fn wait(&self) {
        let target = self.answering.load(Ordering::SeqCst);
        if *self.committed.borrow() >= target {
            return;
        }
        // A dropped sender means the state machine is gone and no apply is under way either.
        let _ = self
            .committed
            .clone()
            .wait_for(|committed| *committed >= target)
            .await;
    }
}

/// This member's state database and its key index, for readers.
#[derive(Clone)]
pub struct Store {
    pub db: Arc<Database>,
    pub index: Arc<KeyIndex>,
    /// Whether replies already sent are committed; see this module.
    pub settled: Settled,
}

impl Store {
    /// A consistent view of the applied state as committed now. Readers that must see every
    /// write already acknowledged use [`Self::read_settled`].
    pub fn read(&self) -> Result<ReadView, redb::TransactionError> {
        Ok(ReadView::new(self.db.begin_read()?, self.index.clone()))
    }

    /// A view that holds every write this member has acknowledged so far.
    pub async fn read_settled(&self) -> Result<ReadView, redb::TransactionError> {
        self.settled.wait().await;
        self.read()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn readers_wait_for_the_commit_of_an_apply_that_answered_early() {
        let settling = Settling::default();
        let readers = settling.readers();
        readers.wait().await;
        settling.unsettle();
        let waiting = tokio::spawn({
            let readers = readers.clone();
            async move { readers.wait().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "a reader went ahead of the commit");
        settling.settle();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the reader was not released by the commit")
            .unwrap();
        readers.wait().await;
    }

    #[tokio::test]
    async fn later_applies_do_not_hold_back_a_waiting_reader() {
        let settling = Settling::default();
        let readers = settling.readers();
        settling.unsettle();
        let waiting = tokio::spawn({
            let readers = readers.clone();
            async move { readers.wait().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The apply the reader waits for commits and the next one starts answering at once,
        // before the reader runs again.
        settling.settle();
        settling.unsettle();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("a reader waited for an apply that started after it")
            .unwrap();
        settling.settle();
    }

    #[tokio::test]
    async fn a_gone_state_machine_releases_readers() {
        let settling = Settling::default();
        let readers = settling.readers();
        settling.unsettle();
        drop(settling);
        tokio::time::timeout(Duration::from_secs(5), readers.wait())
            .await
            .expect("a reader waited for a state machine that is gone");
    }
}
