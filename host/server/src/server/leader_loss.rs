//! When streams that need a leader must end: etcd's `monitorLeader`. Once per election timeout
//! the member looks for a leader; after `NO_LEADER_STREAM_END_ELECTIONS` looks in a row find
//! none, and again at every look until one is found, the streams that asked for a leader
//! (`hasleader`, see `api::require_leader`) are told to end. Waiting several election timeouts
//! lets a short election pass without breaking streams, whose reconnection costs far more than
//! refusing a new request.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::server::Server;
use baton_limits::NO_LEADER_STREAM_END_ELECTIONS;

/// Tells streams when to end for want of a leader; cloned into each stream.
#[derive(Clone)]
pub(crate) struct LeaderLoss {
    /// Bumped at every look that ends streams.
    ends: watch::Receiver<u64>,
}

impl LeaderLoss {
    /// A loss that never comes (for tests and services built without a monitor).
    pub(crate) fn never() -> Self {
        let (tx, ends) = watch::channel(0);
        // Dropping the sender makes `ended` wait forever, not return.
        drop(tx);
        Self { ends }
    }

    /// A loss that comes whenever `ends` changes.
    #[cfg(test)]
    pub(crate) fn from_receiver(ends: watch::Receiver<u64>) -> Self {
        Self { ends }
    }

    /// Resolves at the first look that ends streams after this future is first polled.
    pub(crate) async fn ended(mut self) {
        self.ends.mark_unchanged();
        if self.ends.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Starts looking for a leader every `election_timeout`.
pub(crate) fn spawn_monitor(
    server: Arc<Server>,
    election_timeout: Duration,
) -> (JoinHandle<()>, LeaderLoss) {
    let (tx, ends) = watch::channel(0u64);
    let task = tokio::spawn(async move {
        let mut looks =
            tokio::time::interval_at(Instant::now() + election_timeout, election_timeout);
        looks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut leaderless = 0u32;
        loop {
            looks.tick().await;
            leaderless = next_count(leaderless, server.sees_leader());
            if leaderless >= NO_LEADER_STREAM_END_ELECTIONS {
                tracing::warn!(
                    looks = leaderless,
                    "no leader for several election timeouts; ending streams that require one"
                );
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    });
    (task, LeaderLoss { ends })
}

/// Looks in a row that found no leader, after one more look.
fn next_count(leaderless: u32, has_leader: bool) -> u32 {
    if has_leader {
        0
    } else {
        leaderless.saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_resets_the_count() {
        let counts: Vec<u32> = [false, false, true, false]
            .iter()
            .scan(0, |n, &has| {
                *n = next_count(*n, has);
                Some(*n)
            })
            .collect();
        assert_eq!(counts, [1, 2, 0, 1]);
    }

    #[tokio::test]
    async fn ended_waits_for_the_next_end_only() {
        let (tx, ends) = watch::channel(0u64);
        tx.send_modify(|n| *n += 1);
        let loss = LeaderLoss::from_receiver(ends);
        let waiting = tokio::spawn(loss.clone().ended());
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "an end from before the wait was counted"
        );
        tx.send_modify(|n| *n += 1);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the end was missed")
            .expect("the waiter panicked");
        let never = LeaderLoss::never().ended();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), never)
                .await
                .is_err()
        );
    }
}
