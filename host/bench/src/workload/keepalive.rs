//! `keepalive`: the steady cost of many leases kept alive. Grants `leases` leases, then renews
//! each one every `interval` over `streams` LeaseKeepAlive streams (lease i on stream
//! i % streams), paced evenly over the interval, until the run's limits. One operation is one
//! renewal, timed from its request to its response. The leases are left to expire.
//!
//! This is an open-loop schedule, not the closed loop of [`crate::driver`]: the point is
//! a fixed renewal rate (`leases / interval`) whose server-side CPU cost can be measured.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::args::Limits;
use crate::driver::{LATENCY_US_MAX, Outcome};
use crate::pool::CONNECT_TIMEOUT;
use baton_proto::etcdserverpb::lease_client::LeaseClient;
use baton_proto::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest};

pub(crate) const LEASES_MAX: u64 = 1_000_000;
pub(crate) const STREAMS_MAX: usize = 10_000;
/// Grants in flight at once while preparing.
const GRANTS_IN_FLIGHT: usize = 64;
/// Requests a stream may have sent and not yet had answered.
const STREAM_WINDOW: usize = 1_024;

/// What to keep alive and how often.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) leases: u64,
    pub(crate) ttl_s: i64,
    pub(crate) interval: Duration,
    pub(crate) streams: usize,
    /// Bound on waiting for an owed answer.
    pub(crate) timeout: Duration,
}

/// Connections to the endpoints, round robin; without a request deadline, which would end a
/// long-lived stream.
pub(crate) async fn connect(endpoints: &[String], conns: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(conns);
    for j in 0..conns {
        let url = &endpoints[j % endpoints.len()];
        let channel = Endpoint::from_shared(url.clone())
            .with_context(|| format!("bad endpoint {url}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("{url}: connect failed"))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// Grants `shape.leases` leases (unmeasured), spread over the connections.
pub(crate) async fn grant(
    channels: &[Channel],
    shape: Shape,
    timeout: Duration,
) -> anyhow::Result<Vec<i64>> {
    let requests = futures::stream::iter(0..shape.leases).map(|i| {
        let mut client = LeaseClient::new(channels[i as usize % channels.len()].clone());
        async move {
            let request = LeaseGrantRequest {
                ttl: shape.ttl_s,
                id: 0,
            };
            let granted = tokio::time::timeout(timeout, client.lease_grant(request))
                .await
                .context("lease grant timed out")?
                .context("lease grant")?
                .into_inner();
            if !granted.error.is_empty() {
                bail!("lease grant: {}", granted.error);
            }
            Ok(granted.id)
        }
    });
    requests
        .buffer_unordered(GRANTS_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Renews `ids` on schedule until `limits` end the run.
pub(crate) async fn renew(
    channels: &[Channel],
    ids: Vec<i64>,
    shape: Shape,
    limits: Limits,
) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let deadline = limits.duration.map(|d| start + d);
    let per_stream_total = limits.total.div_ceil(shape.streams as u64);
    let mut tasks = JoinSet::new();
    for s in 0..shape.streams {
        let mine: Vec<i64> = ids.iter().copied().skip(s).step_by(shape.streams).collect();
        if mine.is_empty() {
            continue;
        }
        let client = LeaseClient::new(channels[s % channels.len()].clone());
        let plan = Plan {
            ids: mine,
            interval: shape.interval,
            start,
            deadline,
            total: per_stream_total,
            timeout: shape.timeout,
        };
        tasks.spawn(run_stream(client, plan));
    }
    let mut outcome = Outcome::empty()?;
    while let Some(joined) = tasks.join_next().await {
        outcome.merge(joined.context("keepalive stream task failed")??)?;
    }
    outcome.elapsed = start.elapsed();
    Ok(outcome)
}

/// One stream's share of the schedule.
struct Plan {
    ids: Vec<i64>,
    interval: Duration,
    start: Instant,
    deadline: Option<Instant>,
    total: u64,
    /// How long answers may stop coming while some are owed.
    timeout: Duration,
}

impl Plan {
    /// When renewal `n` of this stream is due: its leases in turn, spread evenly over each
    /// interval.
    fn due(&self, n: u64) -> Instant {
        let per_round = self.ids.len() as u64;
        let (round, slot) = (n / per_round, n % per_round);
        let offset = self.interval.mul_f64(slot as f64 / per_round as f64);
        self.start + self.interval * u32::try_from(round).unwrap_or(u32::MAX) + offset
    }
}

/// Sends this stream's renewals on schedule and matches each answer to its request by lease
/// id; a response with TTL 0 means the lease was lost and counts as an error.
async fn run_stream(mut client: LeaseClient<Channel>, plan: Plan) -> anyhow::Result<Outcome> {
    let (tx, rx) = mpsc::channel(STREAM_WINDOW);
    // The first renewal goes out before the stream opens: etcd sends the response headers that
    // complete the open only with its first answer.
    sleep_until(plan.due(0)).await;
    let first = plan.ids[0];
    tx.send(LeaseKeepAliveRequest { id: first })
        .await
        .context("keepalive stream closed")?;
    let mut sent: HashMap<i64, VecDeque<Instant>> = HashMap::new();
    sent.entry(first).or_default().push_back(Instant::now());
    let mut responses = client
        .lease_keep_alive(ReceiverStream::new(rx))
        .await
        .context("opening a keepalive stream")?
        .into_inner();
    let mut outcome = Outcome::empty()?;
    let mut in_flight = 1usize;
    // Since when answers are owed with none arriving: the last answer, or the send that made
    // one owed.
    let mut owed_since = Instant::now();
    let mut n = 1u64;
    loop {
        let due = plan.due(n);
        let sending =
            n < plan.total && plan.deadline.is_none_or(|d| due < d) && in_flight < STREAM_WINDOW;
        if !sending && in_flight == 0 {
            break;
        }
        tokio::select! {
            _ = sleep_until(due), if sending => {
                let id = plan.ids[(n % plan.ids.len() as u64) as usize];
                tx.send(LeaseKeepAliveRequest { id }).await.context("keepalive stream closed")?;
                let now = Instant::now();
                sent.entry(id).or_default().push_back(now);
                if in_flight == 0 {
                    owed_since = now;
                }
                in_flight += 1;
                n += 1;
            }
            message = responses.message() => {
                let response = message.context("keepalive stream failed")?
                    .context("keepalive stream ended")?;
                let Some(at) = sent.get_mut(&response.id).and_then(VecDeque::pop_front) else {
                    bail!("an answer for lease {:x} that was not asked for", response.id);
                };
                in_flight -= 1;
                owed_since = Instant::now();
                if response.ttl <= 0 {
                    outcome.errors += 1;
                    outcome.note_error(format!("lease {:x} was lost", response.id));
                } else {
                    let us = u64::try_from(at.elapsed().as_micros()).unwrap_or(LATENCY_US_MAX);
                    outcome.latency_us.saturating_record(us.max(1));
                    outcome.ok += 1;
                }
            }
            _ = sleep_until(owed_since + plan.timeout), if in_flight > 0 => {
                outcome.errors += in_flight as u64;
                outcome.note_error(format!("no answer within {:?}", plan.timeout));
                break;
            }
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_are_spread_evenly_over_each_interval() {
        let start = Instant::now();
        let plan = Plan {
            ids: vec![10, 11, 12, 13],
            interval: Duration::from_secs(4),
            start,
            deadline: None,
            total: u64::MAX,
            timeout: Duration::from_secs(1),
        };
        let offsets: Vec<Duration> = (0..6).map(|n| plan.due(n) - start).collect();
        let s = Duration::from_secs;
        assert_eq!(offsets, [s(0), s(1), s(2), s(3), s(4), s(5)]);
    }
}
