//! The leader's lease deadlines: deterministic bookkeeping over a caller-supplied monotonic
//! clock (`now_ms`), so every rule here is testable without time passing. The server wraps it
//! with a real clock, a lock and the proposals it asks for.

use std::collections::{BTreeMap, BTreeSet};

use crate::lease::LeaseChange;
use crate::lease::rules::{checkpoint_staleness_ms, checkpointed_ttl_s, reported_ttl_s, ttl_ms};
use crate::lease::store::LeaseRecord;

/// The table is not tracking deadlines: this member does not lead (or has not taken over yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("this member does not track lease deadlines (not the leader)")]
pub struct NotLeading;

/// The outcome of a renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// The deadline moved to now + TTL. If `must_clear`, the lease has a recorded remaining TTL
    /// that must be cleared in the log before the renewal is acknowledged (see [`crate::lease`]).
    Renewed {
        ttl_s: i64,
        must_clear: bool,
    },
    /// Past its deadline: it is being revoked, or soon will be.
    Expired,
    NotFound,
}

/// A remaining TTL to record in the log (0 clears a recorded one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub id: i64,
    pub remaining_s: i64,
}

#[derive(Debug)]
struct Tracked {
    ttl_s: i64,
    deadline_ms: u64,
    /// The replicated record holds a remaining TTL, or a checkpoint setting one was proposed.
    recorded: bool,
    /// Since when a leader change would extend the lease: the grant, last renewal, takeover,
    /// or last checkpoint.
    stale_since_ms: u64,
    /// Handed out by [`LeaderTable::take_expired`]; its revoke is under way.
    revoking: bool,
}

/// Deadlines of every lease, while this member leads.
#[derive(Debug, Default)]
pub struct LeaderTable {
    active: bool,
    leases: BTreeMap<i64, Tracked>,
    /// (deadline, id) of every lease not being revoked.
    deadlines: BTreeSet<(u64, i64)>,
    /// Renewed leases whose recorded remaining TTL is still to be cleared in the log.
    clears: BTreeSet<i64>,
}

impl LeaderTable {
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Takes over as leader at `now_ms` with every lease of the replicated table: each one's
    /// deadline starts now, at its recorded remaining TTL or else its full TTL.
    pub fn activate(&mut self, now_ms: u64, leases: impl IntoIterator<Item = (i64, LeaseRecord)>) {
        self.deactivate();
        self.active = true;
        for (id, record) in leases {
            let deadline_ms = now_ms.saturating_add(ttl_ms(record.takeover_ttl_s()));
            self.insert(
                id,
                record.ttl_s,
                deadline_ms,
                record.remaining_s > 0,
                now_ms,
            );
        }
    }

    /// Stops tracking (leadership lost) and forgets everything.
    pub fn deactivate(&mut self) {
        *self = Self::default();
    }

    fn insert(&mut self, id: i64, ttl_s: i64, deadline_ms: u64, recorded: bool, now_ms: u64) {
        self.forget(id);
        self.deadlines.insert((deadline_ms, id));
        let tracked = Tracked {
            ttl_s,
            deadline_ms,
            recorded,
            stale_since_ms: now_ms,
            revoking: false,
        };
        self.leases.insert(id, tracked);
    }

    fn forget(&mut self, id: i64) {
        if let Some(old) = self.leases.remove(&id) {
            self.deadlines.remove(&(old.deadline_ms, id));
        }
        self.clears.remove(&id);
    }

    /// Follows a committed change. Ignored while not leading.
    pub fn apply(&mut self, now_ms: u64, change: LeaseChange) {
        if !self.active {
            return;
        }
        match change {
            LeaseChange::Granted { id, ttl_s } => {
                let deadline_ms = now_ms.saturating_add(ttl_ms(ttl_s));
                self.insert(id, ttl_s, deadline_ms, false, now_ms);
            }
            LeaseChange::Revoked { id } => self.forget(id),
        }
    }

    /// Renews lease `id` at `now_ms` (etcd's Renew on the primary lessor).
    pub fn renew(&mut self, now_ms: u64, id: i64) -> Result<Renewal, NotLeading> {
        if !self.active {
            return Err(NotLeading);
        }
        let Some(lease) = self.leases.get_mut(&id) else {
            return Ok(Renewal::NotFound);
        };
        if lease.revoking || lease.deadline_ms <= now_ms {
            return Ok(Renewal::Expired);
        }
        self.deadlines.remove(&(lease.deadline_ms, id));
        lease.deadline_ms = now_ms.saturating_add(ttl_ms(lease.ttl_s));
        lease.stale_since_ms = now_ms;
        self.deadlines.insert((lease.deadline_ms, id));
        let must_clear = lease.recorded;
        if must_clear {
            self.clears.insert(id);
        }
        Ok(Renewal::Renewed {
            ttl_s: lease.ttl_s,
            must_clear,
        })
    }

    /// (remaining whole seconds, granted TTL) of lease `id`, `None` if it does not exist.
    pub fn time_to_live(&self, now_ms: u64, id: i64) -> Result<Option<(i64, i64)>, NotLeading> {
        if !self.active {
            return Err(NotLeading);
        }
        Ok(self.leases.get(&id).map(|lease| {
            let remaining_ms = lease.deadline_ms.saturating_sub(now_ms);
            (reported_ttl_s(remaining_ms), lease.ttl_s)
        }))
    }

    /// Up to `max` leases whose deadline has passed, earliest first, marked as being revoked.
    pub fn take_expired(&mut self, now_ms: u64, max: usize) -> Vec<i64> {
        let due: Vec<(u64, i64)> = self
            .deadlines
            .iter()
            .take_while(|(deadline_ms, _)| *deadline_ms <= now_ms)
            .take(max)
            .copied()
            .collect();
        for entry in &due {
            self.deadlines.remove(entry);
            if let Some(lease) = self.leases.get_mut(&entry.1) {
                lease.revoking = true;
            }
        }
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// A revoke from [`Self::take_expired`] did not commit: hand the lease out again later.
    pub fn revoke_failed(&mut self, id: i64) {
        if let Some(lease) = self.leases.get_mut(&id)
            && lease.revoking
        {
            lease.revoking = false;
            self.deadlines.insert((lease.deadline_ms, id));
        }
    }

    /// Up to `max` leases whose replicated remaining TTL has gone stale (see
    /// [`checkpoint_staleness_ms`]), with their remaining TTL now. They count as recorded from
    /// here on; the caller proposes them before proposing any clear.
    pub fn take_due_checkpoints(&mut self, now_ms: u64, max: usize) -> Vec<Checkpoint> {
        let mut due = Vec::new();
        for (&id, lease) in &mut self.leases {
            if due.len() >= max {
                break;
            }
            let stale_ms = now_ms.saturating_sub(lease.stale_since_ms);
            if lease.revoking
                || lease.deadline_ms <= now_ms
                || stale_ms < checkpoint_staleness_ms(lease.ttl_s)
            {
                continue;
            }
            lease.recorded = true;
            lease.stale_since_ms = now_ms;
            let remaining_s = checkpointed_ttl_s(lease.deadline_ms - now_ms);
            due.push(Checkpoint { id, remaining_s });
        }
        due
    }

    /// Whether a renewal of `id` still waits for its recorded remaining TTL to be cleared.
    pub fn clear_pending(&self, id: i64) -> bool {
        self.clears.contains(&id)
    }

    /// Every clear still to be committed.
    pub fn pending_clears(&self) -> Vec<i64> {
        self.clears.iter().copied().collect()
    }

    /// Clears of `ids` committed. The caller must not have proposed a checkpoint of any of them
    /// since it took them from [`Self::pending_clears`].
    pub fn clears_committed(&mut self, ids: &[i64]) {
        for id in ids {
            self.clears.remove(id);
            if let Some(lease) = self.leases.get_mut(id) {
                lease.recorded = false;
            }
        }
    }
}

#[cfg(test)]
impl LeaderTable {
    fn deadline_ms(&self, id: i64) -> Option<u64> {
        self.leases.get(&id).map(|lease| lease.deadline_ms)
    }
}

#[cfg(test)]
mod tests;
