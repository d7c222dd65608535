//! Coalesces concurrent linearizable reads into shared ReadIndex rounds.
//!
//! A ReadIndex round costs the leader a heartbeat to a quorum. Readers that arrive while a round
//! is in flight cannot use its answer (it may predate their arrival, breaking linearizability),
//! but they can all share the *next* round. So at most one round runs at a time, and every reader
//! takes the result of the first round that *started* after it arrived.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Mutex, MutexGuard, watch};
use tonic::Status;

type RoundResult = Result<u64, (tonic::Code, String)>;

pub(crate) struct ReadBatcher {
    /// Id of the most recently started round; only changed while holding `running`.
    started: AtomicU64,
    running: Mutex<()>,
    /// (round id, its result) of the most recently finished round.
    finished: watch::Sender<(u64, RoundResult)>,
}

impl Default for ReadBatcher {
    fn default() -> Self {
        Self {
            started: AtomicU64::new(0),
            running: Mutex::new(()),
            finished: watch::Sender::new((0, Ok(0))),
        }
    }
}

/// The round in flight. However it ends — finished, or dropped because its reader went away —
/// it first releases the lock and only then wakes the waiters: a waiter the round cannot serve
/// must find the lock free when it wakes, or nothing would ever wake it again.
struct Running<'a> {
    lock: Option<MutexGuard<'a, ()>>,
    finished: &'a watch::Sender<(u64, RoundResult)>,
    outcome: Option<(u64, RoundResult)>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        drop(self.lock.take());
        match self.outcome.take() {
            Some(outcome) => drop(self.finished.send_replace(outcome)),
            // No result to share: wake the waiters anyway, so one of them starts a round.
            None => self.finished.send_modify(|_| {}),
        }
    }
}

impl ReadBatcher {
    /// Returns the read index of a round that began after this call did, running `round` itself
    /// if no such round is under way.
    pub(crate) async fn read_index<F, Fut>(&self, round: F) -> Result<u64, Status>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<u64, Status>>,
    {
        let arrival = self.started.load(Ordering::Acquire);
        let mut finished = self.finished.subscribe();
        loop {
            {
                let (id, result) = &*finished.borrow_and_update();
                if *id > arrival {
                    return result.clone().map_err(|(code, msg)| Status::new(code, msg));
                }
            }
            if let Ok(lock) = self.running.try_lock() {
                let id = self.started.fetch_add(1, Ordering::AcqRel) + 1;
                let mut running = Running {
                    lock: Some(lock),
                    finished: &self.finished,
                    outcome: None,
                };
                let result = round().await;
                let shared = result
                    .as_ref()
                    .map(|i| *i)
                    .map_err(|s| (s.code(), s.message().to_string()));
                running.outcome = Some((id, shared));
                drop(running);
                return result;
            }
            if finished.changed().await.is_err() {
                return Err(Status::unavailable("read batcher stopped"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// A reader waiting on a round whose own reader goes away mid-round must not wait forever.
    #[tokio::test]
    async fn a_round_abandoned_mid_way_wakes_its_waiters() {
        let batcher = Arc::new(ReadBatcher::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let round = {
            let calls = calls.clone();
            move || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        // The first round never answers; its reader is dropped below.
                        std::future::pending::<()>().await;
                    }
                    Ok(n as u64)
                }
            }
        };
        let first = {
            let (batcher, round) = (batcher.clone(), round.clone());
            tokio::spawn(async move { batcher.read_index(round).await })
        };
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let second = {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.read_index(round).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        first.abort();
        let index = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the waiter was never woken")
            .unwrap()
            .unwrap();
        assert_eq!(index, 1, "the waiter should have run the next round itself");
    }

    /// Many readers on several threads, rounds of varying length: every reader returns.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn no_reader_is_left_waiting_under_contention() {
        let batcher = Arc::new(ReadBatcher::default());
        let rounds = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for i in 0..400u64 {
            let (batcher, rounds) = (batcher.clone(), rounds.clone());
            handles.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_micros(i % 7 * 50)).await;
                batcher
                    .read_index(|| {
                        let rounds = rounds.clone();
                        async move {
                            let n = rounds.fetch_add(1, Ordering::SeqCst) as u64 + 1;
                            tokio::task::yield_now().await;
                            Ok(n)
                        }
                    })
                    .await
            }));
        }
        for h in handles {
            tokio::time::timeout(Duration::from_secs(10), h)
                .await
                .expect("a reader was left waiting")
                .unwrap()
                .unwrap();
        }
    }

    #[tokio::test]
    async fn concurrent_readers_share_rounds_and_each_waits_for_a_later_round() {
        let batcher = Arc::new(ReadBatcher::default());
        let rounds = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..50 {
            let batcher = batcher.clone();
            let rounds = rounds.clone();
            handles.push(tokio::spawn(async move {
                let before = rounds.load(Ordering::SeqCst) as u64;
                let index = batcher
                    .read_index(|| {
                        let rounds = rounds.clone();
                        async move {
                            // The index returned is the round's number: a reader must see one
                            // greater than the rounds completed when it arrived.
                            let n = rounds.fetch_add(1, Ordering::SeqCst) as u64 + 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            Ok(n)
                        }
                    })
                    .await
                    .unwrap();
                assert!(
                    index > before,
                    "reader got round {index}, arrived after {before}"
                );
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let total = rounds.load(Ordering::SeqCst);
        assert!(
            total < 50,
            "50 concurrent readers should share rounds, ran {total}"
        );
    }
}
