//! Runs a workload: `clients` requesters, each with one request in flight, sharing the pool's
//! connections, until the operation budget or the deadline runs out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use super::args::Limits;
use super::pool::Pool;
use super::workload::Workload;

/// Latencies above this are recorded as this (the request timeout is far below it).
pub(crate) const LATENCY_US_MAX: u64 = 60_000_000;
/// Three significant digits: 0.1% resolution at any latency.
const LATENCY_SIGFIGS: u8 = 3;
/// Distinct error messages kept for the report; the count covers the rest.
const ERROR_SAMPLES_MAX: usize = 5;
/// A requester pauses this long after a failed request, so an unreachable member is not
/// hammered in a tight loop while the run's budget drains.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// What a run measured.
pub(crate) struct Outcome {
    /// Latency of every successful operation, in microseconds.
    pub(crate) latency_us: Histogram<u64>,
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    pub(crate) error_samples: Vec<String>,
}

impl Outcome {
    pub(crate) fn empty() -> anyhow::Result<Self> {
        Ok(Self {
            latency_us: new_histogram()?,
            ok: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            error_samples: Vec::new(),
        })
    }

    pub(crate) fn merge(&mut self, other: Outcome) -> anyhow::Result<()> {
        self.latency_us
            .add(&other.latency_us)
            .context("merging latency histograms")?;
        self.ok += other.ok;
        self.errors += other.errors;
        for sample in other.error_samples {
            note_error(&mut self.error_samples, sample);
        }
        Ok(())
    }

    /// Keeps `message` as a sample if it is new and there is room.
    pub(crate) fn note_error(&mut self, message: String) {
        note_error(&mut self.error_samples, message);
    }
}

pub(crate) fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, LATENCY_SIGFIGS)
        .context("creating latency histogram")
}

fn note_error(samples: &mut Vec<String>, message: String) {
    if samples.len() < ERROR_SAMPLES_MAX && !samples.contains(&message) {
        samples.push(message);
    }
}

/// The budget every requester draws from.
struct Budget {
    issued: AtomicU64,
    total: u64,
    deadline: Option<Instant>,
}

impl Budget {
    /// The next operation number, or None once the run is over.
    fn claim(&self) -> Option<u64> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let seq = self.issued.fetch_add(1, Ordering::Relaxed);
        (seq < self.total).then_some(seq)
    }
}

pub(crate) async fn drive<W: Workload>(
    workload: Arc<W>,
    pool: &Pool,
    limits: Limits,
) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let budget = Arc::new(Budget {
        issued: AtomicU64::new(0),
        total: limits.total,
        deadline: limits.duration.map(|d| start + d),
    });
    let mut tasks = JoinSet::new();
    for index in 0..pool.clients {
        let requester = workload.requester(pool.conn_for(index), index);
        let histogram = new_histogram()?;
        tasks.spawn(requester_loop(
            workload.clone(),
            requester,
            budget.clone(),
            pool.request_timeout,
            histogram,
        ));
    }
    let mut outcome = Outcome::empty()?;
    while let Some(joined) = tasks.join_next().await {
        outcome.merge(joined.context("requester task failed")?)?;
    }
    outcome.elapsed = start.elapsed();
    Ok(outcome)
}

async fn requester_loop<W: Workload>(
    workload: Arc<W>,
    mut requester: W::Requester,
    budget: Arc<Budget>,
    request_timeout: Duration,
    latency_us: Histogram<u64>,
) -> Outcome {
    let mut tally = Outcome {
        latency_us,
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        error_samples: Vec::new(),
    };
    while let Some(seq) = budget.claim() {
        let sent = Instant::now();
        match tokio::time::timeout(request_timeout, workload.op(&mut requester, seq)).await {
            Ok(Ok(())) => {
                let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(LATENCY_US_MAX);
                tally.latency_us.saturating_record(us.max(1));
                tally.ok += 1;
            }
            Ok(Err(e)) => {
                tally.errors += 1;
                note_error(&mut tally.error_samples, format!("{e:#}"));
                tokio::time::sleep(ERROR_PAUSE).await;
            }
            Err(_) => {
                tally.errors += 1;
                note_error(
                    &mut tally.error_samples,
                    format!("timed out after {request_timeout:?}"),
                );
            }
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_stops_at_total() {
        let budget = Budget {
            issued: AtomicU64::new(0),
            total: 3,
            deadline: None,
        };
        let claimed: Vec<u64> = std::iter::from_fn(|| budget.claim()).collect();
        assert_eq!(claimed, vec![0, 1, 2]);
        assert_eq!(budget.claim(), None);
    }

    #[test]
    fn budget_stops_at_deadline() {
        let past = Instant::now()
            .checked_sub(Duration::from_millis(1))
            .unwrap();
        let budget = Budget {
            issued: AtomicU64::new(0),
            total: u64::MAX,
            deadline: Some(past),
        };
        assert_eq!(budget.claim(), None);
    }

    #[test]
    fn error_samples_are_distinct_and_bounded() {
        let mut samples = Vec::new();
        for i in 0..20 {
            note_error(&mut samples, format!("error {}", i % 7));
        }
        assert_eq!(samples.len(), ERROR_SAMPLES_MAX);
        assert_eq!(samples[0], "error 0");
        assert_eq!(samples[4], "error 4");
    }
}
