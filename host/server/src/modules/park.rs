//! Parking a module call that asked to wait: the member serving the client watches the keys and
//! leases the guest named and returns once one of them may have changed, so the call can be run
//! again. Nothing is replicated while a call is parked; a parked call lives exactly as long as
//! its client's request (a client that goes away, or whose deadline passes, drops it).
//!
//! Wake-ups may be spurious (a compaction, a lagging lease feed): the guest re-checks its
//! condition on every run and simply waits again.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::SelectAll;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::server::Server;
use crate::server::lease::ends::LeaseEnds;
use crate::shutdown::Shutdown;
use baton_limits::GUEST_WAIT_TIMER_FLOOR_MS;
use baton_proto::batonpb::ModuleWait;
use baton_store::storage::schema::LEASES;
use baton_watch::{Delivery, KeyRange, WatchHub, WatchSpec, WatcherId};

/// What parked calls listen to on this member.
#[derive(Clone)]
pub(crate) struct Parking {
    hub: Arc<WatchHub>,
    lease_ends: Arc<LeaseEnds>,
    /// Ends every parked call when the member stops, so a client with no deadline does not
    /// hold the shutdown; it gets UNAVAILABLE and calls again elsewhere.
    shutdown: Shutdown,
}

/// Unregisters a parked call's watchers however the wait ends (including the client going away).
struct Watchers<'a> {
    hub: &'a WatchHub,
    ids: Vec<WatcherId>,
}

impl Drop for Watchers<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            self.hub.unregister(*id);
        }
    }
}

fn internal(message: &str) -> Status {
    Status::internal(format!("baton: {message}"))
}

impl Parking {
    pub(crate) fn new(hub: Arc<WatchHub>, lease_ends: Arc<LeaseEnds>, shutdown: Shutdown) -> Self {
        Self {
            hub,
            lease_ends,
            shutdown,
        }
    }

    /// Returns once a key in `wait.keys` changed after `revision` (the revision the call's run
    /// left the store at), a lease in `wait.leases` ended, or the leader time `wait.until_ms`
    /// has come, reckoned from `proposal_time_ms` (the run's leader time) on this member's
    /// monotonic clock — so a member whose wall clock differs from the leader's still waits the
    /// right length.
    pub(crate) async fn until(
        &self,
        server: &Server,
        wait: &ModuleWait,
        revision: i64,
        proposal_time_ms: u64,
    ) -> Result<(), Status> {
        let deadline = (wait.until_ms > 0).then(|| {
            // A deadline already past still waits a little: a guest that keeps asking for one
            // must not turn this member into a busy loop of proposals.
            let delay_ms = wait
                .until_ms
                .saturating_sub(proposal_time_ms)
                .max(GUEST_WAIT_TIMER_FLOOR_MS);
            tokio::time::Instant::now() + Duration::from_millis(delay_ms)
        });
        let timer = async move {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(timer);
        // Subscribe before looking, so a lease that ends in between is not missed.
        let mut ended = self.lease_ends.subscribe();
        let mut watchers = Watchers {
            hub: &self.hub,
            ids: Vec::with_capacity(wait.keys.len()),
        };
        let mut changes = SelectAll::new();
        for range in &wait.keys {
            let range = KeyRange::from_etcd(range.start.clone(), range.end.clone())
                .ok_or_else(|| internal("a committed wait names an empty key range"))?;
            let spec = WatchSpec {
                range,
                no_put: false,
                no_delete: false,
                prev_kv: false,
            };
            // From the next revision: the run saw everything up to `revision`. A member that has
            // not applied that far yet holds the watcher until it has.
            let registration = self.hub.register(spec, revision + 1);
            watchers.ids.push(registration.id);
            changes.push(ReceiverStream::new(registration.deliveries));
        }
        if !wait.leases.is_empty() && self.any_lease_gone(server, &wait.leases).await? {
            return Ok(());
        }
        let mut shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                () = &mut timer => return Ok(()),
                () = shutdown.stopped() => {
                    return Err(Status::unavailable(
                        "baton: this member is shutting down; call again on another member",
                    ));
                }
                delivery = changes.next(), if !changes.is_empty() => match delivery {
                    // A compaction past the watcher's start also wakes the call: it re-reads.
                    Some(Delivery::Events(_) | Delivery::Compacted { .. }) => return Ok(()),
                    Some(Delivery::Progress { .. }) => {}
                    None => return Err(internal("the watch hub stopped")),
                },
                lease = ended.recv(), if !wait.leases.is_empty() => match lease {
                    Ok(id) if wait.leases.contains(&id) => return Ok(()),
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => return Ok(()),
                    Err(RecvError::Closed) => return Err(internal("the lease feed stopped")),
                },
            }
        }
    }

    /// Whether a lease already ended as of everything committed before now (this member
    /// catches up first, so a lease granted just before the call is seen).
    async fn any_lease_gone(&self, server: &Server, leases: &[i64]) -> Result<bool, Status> {
        server.linearize().await?;
        let view = server.read_view().await?;
        let table = view
            .open_table(LEASES)
            .map_err(|e| internal(&e.to_string()))?;
        for id in leases {
            let found = baton_store::lease::store::get(&table, *id)
                .map_err(|e| internal(&e.to_string()))?;
            if found.is_none() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
