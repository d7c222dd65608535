//! Auto-compaction (etcd's `--auto-compaction-mode` / `--auto-compaction-retention`): a task on
//! every member that, while the member leads, proposes `Compaction` so history does not grow
//! without bound. Compaction goes through the log like a client's, so every member forgets the
//! same history.
//!
//! - revision mode keeps the last `retention` revisions, looking every few minutes;
//! - periodic mode keeps `retention` worth of history: it samples the revision every tenth of
//!   the compaction interval (the retention, at most an hour) and compacts at the newest sample
//!   at least `retention` old.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::server::Server;
use baton_limits::{AUTO_COMPACTION_PERIOD_MAX_MS, AUTO_COMPACTION_SAMPLES_PER_INTERVAL};
use baton_proto::batonpb::{log_command, log_reply};
use baton_proto::etcdserverpb::CompactionRequest;

/// The configured auto-compaction policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoCompaction {
    Off,
    /// Keep this much history, in milliseconds.
    Periodic {
        retention_ms: u64,
    },
    /// Keep this many revisions; look every `check_ms`.
    Revision {
        retention: i64,
        check_ms: u64,
    },
}

/// Starts the task for `policy`, or nothing when it is `Off`.
pub(crate) fn spawn_auto_compaction(
    server: Arc<Server>,
    policy: AutoCompaction,
) -> Option<JoinHandle<()>> {
    match policy {
        AutoCompaction::Off => None,
        AutoCompaction::Revision {
            retention,
            check_ms,
        } => Some(tokio::spawn(by_revision(server, retention, check_ms))),
        AutoCompaction::Periodic { retention_ms } => {
            Some(tokio::spawn(periodic(server, retention_ms)))
        }
    }
}

async fn by_revision(server: Arc<Server>, retention: i64, check_ms: u64) {
    let mut tick = tokio::time::interval(Duration::from_millis(check_ms.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !leads(&server) {
            continue;
        }
        if let Ok((current, _)) = revisions(&server) {
            compact_to(&server, current - retention).await;
        }
    }
}

async fn periodic(server: Arc<Server>, retention_ms: u64) {
    let retention = Duration::from_millis(retention_ms);
    let interval = Duration::from_millis(retention_ms.min(AUTO_COMPACTION_PERIOD_MAX_MS));
    let sample_every =
        (interval / AUTO_COMPACTION_SAMPLES_PER_INTERVAL).max(Duration::from_millis(1));
    let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
    let mut last_compaction = Instant::now();
    // Like etcd, the first compaction waits a whole retention, later ones one interval.
    let mut wait = retention;
    loop {
        if let Ok((current, _)) = revisions(&server) {
            samples.push_back((Instant::now(), current));
        }
        tokio::time::sleep(sample_every).await;
        let now = Instant::now();
        // Keep only the newest sample that is old enough, and everything after it.
        while samples
            .get(1)
            .is_some_and(|(at, _)| now.duration_since(*at) >= retention)
        {
            samples.pop_front();
        }
        if now.duration_since(last_compaction) < wait || !leads(&server) {
            continue;
        }
        let Some(&(at, rev)) = samples.front() else {
            continue;
        };
        if now.duration_since(at) < retention {
            continue;
        }
        compact_to(&server, rev).await;
        last_compaction = now;
        wait = interval;
    }
}

fn leads(server: &Server) -> bool {
    server.leader() == Some(server.member_id())
}

/// (current, compacted) revisions of this member's applied state.
fn revisions(server: &Server) -> anyhow::Result<(i64, i64)> {
    let view = server.read_committed()?;
    Ok((
        baton_store::mvcc::current_revision(&view)?,
        baton_store::mvcc::compact_revision(&view)?,
    ))
}

/// Proposes compaction at `target` unless that is nothing new.
async fn compact_to(server: &Server, target: i64) {
    let Ok((_, compacted)) = revisions(server) else {
        return;
    };
    if target <= 0 || target <= compacted {
        return;
    }
    let req = CompactionRequest {
        revision: target,
        physical: false,
    };
    match server.propose(log_command::Op::Compaction(req)).await {
        Ok(reply) => match reply.result {
            Some(log_reply::Result::Compaction(_)) => {
                tracing::info!(revision = target, "auto-compacted");
            }
            // Someone compacted further meanwhile: nothing to do.
            other => tracing::debug!(?other, revision = target, "auto-compaction refused"),
        },
        Err(e) => tracing::warn!(error = %e, revision = target, "auto-compaction failed"),
    }
}
