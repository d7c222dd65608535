//! The leader-only task that expires leases and records their remaining TTLs. On every member
//! it waits for this member to lead, takes over the lease deadlines ([`Lessor::take_over`]),
//! runs expiry and checkpoint passes until leadership is lost, then forgets the deadlines.
//! Followers run nothing but the wait.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use openraft::type_config::async_runtime::WatchReceiver;
use tokio::time::{MissedTickBehavior, interval};

use crate::server::lease::Lessor;
use crate::shutdown::Shutdown;
use baton_apply::entry::TypeConfig;
use baton_limits::{LEADER_POLL_MS, LEASE_CHECKPOINT_TICK_MS, LEASE_EXPIRY_TICK_MS};

type Metrics = openraft::RaftMetrics<TypeConfig>;
type MetricsReceiver = openraft::alias::WatchReceiverOf<TypeConfig, Metrics>;

/// The term this member leads in, if it leads.
fn leading_term(m: &Metrics, member_id: u64) -> Option<u64> {
    (m.state == ServerState::Leader && m.current_leader == Some(member_id))
        .then_some(m.current_term)
}

/// Runs until the member stops.
pub(crate) async fn run(lessor: Arc<Lessor>, mut shutdown: Shutdown) {
    let metrics = lessor.raft().metrics();
    // Only role, vote and membership changes wake the wait: the full metrics change with every
    // append and apply, and waking this task for each cost a follower task switches per entry.
    let mut roles = lessor.raft().server_metrics();
    let member_id = lessor.member_id();
    loop {
        let term = loop {
            if shutdown.is_stopping() {
                return;
            }
            if let Some(term) = leading_term(&metrics.borrow_watched(), member_id) {
                break term;
            }
            tokio::select! {
                changed = roles.changed() => if changed.is_err() { return },
                () = shutdown.stopped() => return,
            }
        };
        match lessor.take_over().await {
            Ok(leases) => tracing::info!(term, leases, "leading: tracking lease deadlines"),
            Err(e) => {
                tracing::debug!(term, error = %e, "could not take over lease deadlines; retrying");
                tokio::time::sleep(Duration::from_millis(LEADER_POLL_MS)).await;
                continue;
            }
        }
        lead(&lessor, term, &metrics, &mut shutdown).await;
        lessor.step_down();
        tracing::info!(term, "no longer leading: stopped tracking lease deadlines");
    }
}

/// Expiry and checkpoint passes while this member leads in `term`.
async fn lead(lessor: &Lessor, term: u64, metrics: &MetricsReceiver, shutdown: &mut Shutdown) {
    let member_id = lessor.member_id();
    let mut expiry = interval(Duration::from_millis(LEASE_EXPIRY_TICK_MS));
    let mut checkpoint = interval(Duration::from_millis(LEASE_CHECKPOINT_TICK_MS));
    expiry.set_missed_tick_behavior(MissedTickBehavior::Delay);
    checkpoint.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while leading_term(&metrics.borrow_watched(), member_id) == Some(term)
        && !shutdown.is_stopping()
    {
        tokio::select! {
            _ = expiry.tick() => lessor.expiry_pass().await,
            _ = checkpoint.tick() => lessor.checkpoint_pass().await,
            () = shutdown.stopped() => return,
        }
    }
}
