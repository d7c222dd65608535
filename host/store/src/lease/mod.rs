//! Leases with etcd 3.4's semantics: the replicated lease table and the leader's deadlines.
//!
//! # What is replicated, what is not
//!
//! The log carries grants, revokes and checkpoints (`batonpb.LogCommand`); every member applies
//! them to the same two tables ([`store`]): `LEASES` (id -> granted TTL, last checkpointed
//! remaining TTL) and `LEASE_KEYS` (which keys are attached to which lease). Deadlines are not
//! replicated: only the leader tracks them, in memory, on its own monotonic clock
//! ([`LeaderTable`]). Renewals (KeepAlive) touch only that memory, which is what keeps many
//! leases cheap. When a deadline passes, the leader proposes an ordinary revoke (about 1000 per
//! second at most, like etcd); every member then deletes the same keys at the same revision.
//! Followers never expire anything.
//!
//! # Checkpoints and leader changes
//!
//! A new leader starts each lease's deadline at the moment it takes over (after applying every
//! entry of earlier terms), plus the lease's remaining TTL as last checkpointed, or its full
//! TTL if none is recorded. Two rules keep that start neither early nor unbounded:
//!
//! - **Never early.** A renewal of a lease that has a recorded remaining TTL first commits a
//!   checkpoint clearing it (at most once per recording), and a renewal is acknowledged only
//!   after the leader has confirmed with a quorum that it still leads. So when a new leader
//!   takes over at time `L`, every acknowledged renewal happened before `L` and any recorded
//!   remaining TTL `r` was taken at some `c <= L` with no renewal since: the new deadline
//!   `L + r` (or `L + TTL`) is at or after every deadline a client was promised.
//! - **Bounded extension.** Whenever a lease has gone `min(TTL / 2, 5 min)` without a renewal
//!   since its remaining TTL was last recorded (or since it was granted, renewed or taken over),
//!   the leader records it: checked every 500 ms, at most 5000 leases per check, batched up to
//!   1000 per log entry. If the old leader's last moment was `K` and the new leader takes over
//!   at `L`, a lease's new deadline exceeds the old one by at most `(L - K)` plus
//!   `min(TTL / 2, 5 min)` plus one checkpoint round (500 ms and the entry's commit) plus 1 s of
//!   rounding, more only when over 5000 leases went stale within one check. Each leader change
//!   thus extends an unrenewed lease by a bounded amount, where etcd 3.4 by default restarts it
//!   at its full TTL. A lease renewed at least every `min(TTL / 2, 5 min)` costs no log entries
//!   at all: that includes every lease with a TTL under 15 min kept alive by etcd's clients, which
//!   renew every TTL / 3. A lease renewed less often costs two small entries per renewal (its
//!   checkpoint, then the clear).
//!
//! Both rules compare deadlines kept on different members' monotonic clocks, so they assume
//! those clocks run at about the same rate (no synchronised wall clocks are needed).
//!
//! Remaining TTLs are recorded in whole seconds, rounded up. Time never reaches the apply path:
//! the leader's clock feeds only its own deadlines and the remaining TTLs it proposes.

pub mod error;
mod leader_table;
pub mod rules;
pub mod store;

pub use error::LeaseError;
pub use leader_table::{Checkpoint, LeaderTable, NotLeading, Renewal};

/// A lease change a committed entry made, announced after the commit so the leader can track
/// deadlines of leases it did not itself see granted (e.g. granted through another leader).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseChange {
    Granted { id: i64, ttl_s: i64 },
    Revoked { id: i64 },
}

/// Who hears about applied lease changes: the leader's deadline tracker. Called by the state
/// machine after each commit, in log order, never concurrently with itself.
pub trait LeaseObserver: Send + Sync {
    fn applied(&self, changes: &[LeaseChange]);
}

/// An observer for state machines that nobody leads from (tests, tools).
pub struct IgnoreLeaseChanges;

impl LeaseObserver for IgnoreLeaseChanges {
    fn applied(&self, _: &[LeaseChange]) {}
}
