//! The one signal that a member is stopping, as every task sees it (mini-redis's `Shutdown` is
//! the model).
//!
//! The node holds the [`Trigger`]; each task that should end on its own when the member stops
//! (serving loops, lease expiry, watch streams, lock and election waits, append and keep-alive
//! streams) holds a [`Shutdown`]. Stopping is one-way: once triggered it stays triggered, and a
//! `Shutdown` cloned afterwards sees it too. A dropped trigger counts as a stop, so no task
//! outlives the node that would have stopped it.
//!
//! It lives at the crate root rather than in `node`, because the layers below `node` (the API
//! services, the recipes, the peer transport) receive it, and dependencies point down.

use tokio::sync::watch;

/// The node's side: stops every [`Shutdown`] made from it.
pub(crate) struct Trigger {
    stopping: watch::Sender<bool>,
}

impl Trigger {
    pub(crate) fn new() -> Self {
        Self {
            stopping: watch::Sender::new(false),
        }
    }

    /// A receiver for one more task.
    pub(crate) fn subscribe(&self) -> Shutdown {
        Shutdown {
            stopping: self.stopping.subscribe(),
        }
    }

    /// Tells every receiver the member is stopping; later calls change nothing.
    pub(crate) fn stop(&self) {
        self.stopping.send_replace(true);
    }
}

impl Default for Trigger {
    fn default() -> Self {
        Self::new()
    }
}

/// A task's side: cheap to clone, one per task.
#[derive(Clone)]
pub(crate) struct Shutdown {
    stopping: watch::Receiver<bool>,
}

impl Shutdown {
    /// Resolves once the member is stopping (at once if it already is).
    pub(crate) async fn stopped(&mut self) {
        // An error means the trigger is gone, which counts as a stop.
        let _ = self.stopping.wait_for(|stopping| *stopping).await;
    }

    /// Whether the member has started to stop.
    pub(crate) fn is_stopping(&self) -> bool {
        *self.stopping.borrow() || self.stopping.has_changed().is_err()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Long enough for a woken task to run on a loaded machine; only bounds a failing test.
    const WAKE_DEADLINE: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_stop_reaches_receivers_made_before_and_after_it() {
        let trigger = Trigger::new();
        let mut before = trigger.subscribe();
        let mut cloned_before = before.clone();
        assert!(!before.is_stopping());
        let waiting = tokio::spawn(async move { cloned_before.stopped().await });

        trigger.stop();

        tokio::time::timeout(WAKE_DEADLINE, waiting)
            .await
            .expect("a waiting clone wakes on stop")
            .expect("the waiting task ran to its end");
        assert!(before.is_stopping());
        tokio::time::timeout(WAKE_DEADLINE, before.stopped())
            .await
            .expect("a receiver made before the stop resolves after it");
        let mut cloned_after = before.clone();
        assert!(cloned_after.is_stopping());
        tokio::time::timeout(WAKE_DEADLINE, cloned_after.stopped())
            .await
            .expect("a clone made after the stop resolves at once");
        let mut subscribed_after = trigger.subscribe();
        assert!(subscribed_after.is_stopping());
        tokio::time::timeout(WAKE_DEADLINE, subscribed_after.stopped())
            .await
            .expect("a receiver subscribed after the stop resolves at once");
    }

    #[tokio::test]
    async fn a_dropped_trigger_counts_as_a_stop() {
        let trigger = Trigger::new();
        let mut shutdown = trigger.subscribe();
        let mut waiting_clone = shutdown.clone();
        let waiting = tokio::spawn(async move { waiting_clone.stopped().await });

        drop(trigger);

        assert!(shutdown.is_stopping());
        tokio::time::timeout(WAKE_DEADLINE, shutdown.stopped())
            .await
            .expect("stopped resolves once the trigger is gone");
        tokio::time::timeout(WAKE_DEADLINE, waiting)
            .await
            .expect("a waiting clone wakes when the trigger is dropped")
            .expect("the waiting task ran to its end");
    }

    #[tokio::test]
    async fn nothing_stops_before_the_trigger_fires() {
        let trigger = Trigger::new();
        let mut shutdown = trigger.subscribe();
        let early = tokio::time::timeout(Duration::from_millis(50), shutdown.stopped()).await;
        assert!(early.is_err(), "stopped resolved without a stop");
        assert!(!shutdown.is_stopping());
        trigger.stop();
        assert!(shutdown.is_stopping());
    }
}
