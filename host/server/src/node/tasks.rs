//! The node's long-running tasks, and the one place they are stopped.
//!
//! Two kinds, chosen when a task is added:
//! - *drained*: tasks that end by themselves once the member's [`Shutdown`] fires — the serving
//!   loops (which let requests in flight finish) and lease expiry. A clean stop waits for them
//!   [`SHUTDOWN_DRAIN_MS`], one deadline for all of them together, so several slow tasks cost
//!   one bound, not one each. A task still running then is named in the log and aborted.
//! - *aborted*: tasks that would run forever and hold nothing a client waits on — quota watch,
//!   auto-compaction, the leader-loss monitor, watch catch-up, publishing the client URLs,
//!   deploying the built-in modules.
//!
//! A member that stops on a fatal Raft error does not call [`Tasks::stop`]: it exits at once.
//!
//! [`Shutdown`]: crate::shutdown::Shutdown
//! [`SHUTDOWN_DRAIN_MS`]: baton_limits::SHUTDOWN_DRAIN_MS

use std::future::Future;
use std::time::Duration;

use tokio::task::{AbortHandle, JoinHandle};

#[derive(Default)]
pub(super) struct Tasks {
    drained: Vec<(&'static str, JoinHandle<()>)>,
    aborted: Vec<(&'static str, AbortHandle)>,
}

impl Tasks {
    /// Spawns `task`, which must end by itself once the member's shutdown fires.
    pub(super) fn spawn_drained<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.drained.push((name, tokio::spawn(task)));
    }

    /// Adds a task spawned elsewhere, to be aborted when the member stops.
    pub(super) fn abort_at_stop(&mut self, name: &'static str, task: AbortHandle) {
        self.aborted.push((name, task));
    }

    /// Aborts the aborted kind, then waits up to `drain` for the drained kind and aborts any
    /// still running. Call it after the shutdown fired, or the drain always runs out.
    pub(super) async fn stop(mut self, drain: Duration) {
        for (_, task) in &self.aborted {
            task.abort();
        }
        let all = futures::future::join_all(self.drained.iter_mut().map(|(_, task)| task));
        if tokio::time::timeout(drain, all).await.is_ok() {
            return;
        }
        for (name, task) in &self.drained {
            if !task.is_finished() {
                tracing::warn!(
                    task = name,
                    drain_ms = drain.as_millis(),
                    "task still running after the shutdown drain; aborting it"
                );
                task.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::oneshot;
    use tokio::time::Instant;

    use super::*;
    use crate::shutdown::Trigger;

    /// Far longer than a task that ends on shutdown needs, even on a loaded machine.
    const DRAIN_GENEROUS: Duration = Duration::from_secs(60);
    /// The drain given to tasks that never end: short, so the test is quick, but long against
    /// scheduling delays.
    const DRAIN_SHORT: Duration = Duration::from_secs(2);

    /// A task that runs until it is aborted; the receiver errs once it was.
    fn forever() -> (
        impl Future<Output = ()> + Send + 'static,
        oneshot::Receiver<()>,
    ) {
        let (alive, dropped) = oneshot::channel::<()>();
        let task = async move {
            let _alive = alive;
            std::future::pending::<()>().await;
        };
        (task, dropped)
    }

    #[tokio::test]
    async fn drained_tasks_finish_and_the_rest_are_aborted() {
        let trigger = Trigger::new();
        let mut tasks = Tasks::default();
        let (finished_tx, finished_rx) = oneshot::channel();
        let mut shutdown = trigger.subscribe();
        tasks.spawn_drained("serve", async move {
            shutdown.stopped().await;
            let _ = finished_tx.send(());
        });
        let (background, background_dropped) = forever();
        tasks.abort_at_stop("background", tokio::spawn(background).abort_handle());

        let started = Instant::now();
        trigger.stop();
        tasks.stop(DRAIN_GENEROUS).await;

        assert!(
            started.elapsed() < DRAIN_GENEROUS,
            "the drain waited for no reason"
        );
        assert_eq!(finished_rx.await, Ok(()), "the drained task ran to its end");
        assert!(
            background_dropped.await.is_err(),
            "the background task was aborted"
        );
    }

    #[tokio::test]
    async fn one_deadline_bounds_every_drained_task_together() {
        let mut tasks = Tasks::default();
        let mut dropped = Vec::new();
        for _ in 0..3 {
            let (stuck, stuck_dropped) = forever();
            tasks.spawn_drained("stuck", stuck);
            dropped.push(stuck_dropped);
        }

        let started = Instant::now();
        tasks.stop(DRAIN_SHORT).await;

        // One drain each would take three times as long.
        let waited = started.elapsed();
        assert!(
            waited >= DRAIN_SHORT && waited < DRAIN_SHORT * 2,
            "waited {waited:?} for three stuck tasks, expected one drain of {DRAIN_SHORT:?}"
        );
        for stuck_dropped in dropped {
            assert!(stuck_dropped.await.is_err(), "a stuck task was aborted");
        }
    }
}
