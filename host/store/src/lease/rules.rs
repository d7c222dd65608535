//! etcd's lease rules that do not depend on state: TTL bounds, and when a lease's recorded
//! remaining TTL is stale enough to record again.

use crate::lease::LeaseError;
use baton_limits::{LEASE_CHECKPOINT_STALENESS_MS_MAX, LEASE_TTL_S_MAX};

const MS_PER_S: u64 = 1_000;

/// Shortest TTL the apply path stores, in seconds, whatever a proposer sent; proposers raise
/// TTLs to the (longer) [`min_ttl_s`] first.
pub(crate) const TTL_S_FLOOR: i64 = 1;

/// etcd's minimum TTL: one and a half election timeouts, rounded up to whole seconds (2 s with
/// the default 1000 ms election timeout). Shorter requested TTLs are raised to it.
pub fn min_ttl_s(election_timeout_ms: u64) -> i64 {
    let ms = election_timeout_ms.saturating_mul(3) / 2;
    i64::try_from(ms.div_ceil(MS_PER_S)).unwrap_or(i64::MAX)
}

/// etcd's grant checks in etcd's order (no id, then too large) and the TTL actually granted.
/// The existence check needs the table and is the caller's.
pub(crate) fn granted_ttl_s(
    id: i64,
    requested_ttl_s: i64,
    min_ttl_s: i64,
) -> Result<i64, LeaseError> {
    if id == 0 {
        return Err(LeaseError::NotFound);
    }
    if requested_ttl_s > LEASE_TTL_S_MAX {
        return Err(LeaseError::TtlTooLarge);
    }
    Ok(requested_ttl_s.max(min_ttl_s))
}

/// A TTL in seconds as milliseconds; non-positive TTLs (never granted) count as zero.
pub(crate) fn ttl_ms(ttl_s: i64) -> u64 {
    u64::try_from(ttl_s).unwrap_or(0).saturating_mul(MS_PER_S)
}

/// Whole seconds left, rounded down, as etcd reports TimeToLive.
pub(crate) fn reported_ttl_s(remaining_ms: u64) -> i64 {
    i64::try_from(remaining_ms / MS_PER_S).unwrap_or(i64::MAX)
}

/// Whole seconds left, rounded up (at least 1), as recorded by a checkpoint: a recorded
/// remaining TTL may only err towards keeping the lease longer.
pub(crate) fn checkpointed_ttl_s(remaining_ms: u64) -> i64 {
    i64::try_from(remaining_ms.div_ceil(MS_PER_S).max(1)).unwrap_or(i64::MAX)
}

/// How long a lease may go unrenewed after its remaining TTL was last recorded before it is
/// recorded again: half its TTL, at most [`LEASE_CHECKPOINT_STALENESS_MS_MAX`]. Clients that
/// renew every TTL / 3 (etcd's clients) therefore never cause a checkpoint.
pub(crate) fn checkpoint_staleness_ms(ttl_s: i64) -> u64 {
    (ttl_ms(ttl_s) / 2).min(LEASE_CHECKPOINT_STALENESS_MS_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_ttl_is_one_and_a_half_election_timeouts_rounded_up() {
        assert_eq!(min_ttl_s(1_000), 2);
        assert_eq!(min_ttl_s(2_000), 3);
        assert_eq!(min_ttl_s(100), 1);
        assert_eq!(min_ttl_s(5_000), 8);
    }

    #[test]
    fn grant_checks_follow_etcd() {
        assert_eq!(granted_ttl_s(0, 10, 2), Err(LeaseError::NotFound));
        assert_eq!(
            granted_ttl_s(1, LEASE_TTL_S_MAX + 1, 2),
            Err(LeaseError::TtlTooLarge)
        );
        assert_eq!(granted_ttl_s(1, LEASE_TTL_S_MAX, 2), Ok(LEASE_TTL_S_MAX));
        assert_eq!(granted_ttl_s(1, 1, 2), Ok(2));
        assert_eq!(granted_ttl_s(1, -5, 2), Ok(2));
        assert_eq!(granted_ttl_s(-7, 30, 2), Ok(30), "negative ids are ids");
    }

    #[test]
    fn conversions_round_towards_safety() {
        assert_eq!(reported_ttl_s(2_999), 2);
        assert_eq!(checkpointed_ttl_s(2_001), 3);
        assert_eq!(checkpointed_ttl_s(0), 1);
        assert_eq!(ttl_ms(-3), 0);
        assert_eq!(ttl_ms(LEASE_TTL_S_MAX), 9_000_000_000_000);
    }

    #[test]
    fn staleness_is_half_the_ttl_capped() {
        assert_eq!(checkpoint_staleness_ms(6), 3_000);
        assert_eq!(
            checkpoint_staleness_ms(3_600),
            LEASE_CHECKPOINT_STALENESS_MS_MAX
        );
    }
}
