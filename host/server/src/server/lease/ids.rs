//! Lease ids for grants that do not name one, built like etcd's request ids: the member id's
//! low 16 bits, then the start time in milliseconds (40 bits) and a counter (8 bits) that
//! together advance by one per id. Distinct members and restarts get distinct ranges.

use std::sync::atomic::{AtomicU64, Ordering};

const MEMBER_BITS_SHIFT: u32 = 48;
const MEMBER_MASK: u64 = 0xffff;
const TIME_BITS: u32 = 40;
const COUNTER_BITS: u32 = 8;
const SUFFIX_MASK: u64 = (1 << MEMBER_BITS_SHIFT) - 1;
/// Lease ids are positive int64s.
const POSITIVE_MASK: u64 = i64::MAX as u64;

pub(crate) struct LeaseIds {
    prefix: u64,
    suffix: AtomicU64,
}

impl LeaseIds {
    pub(crate) fn new(member_id: u64, unix_ms: u64) -> Self {
        let time = unix_ms & ((1 << TIME_BITS) - 1);
        Self {
            prefix: (member_id & MEMBER_MASK) << MEMBER_BITS_SHIFT,
            suffix: AtomicU64::new(time << COUNTER_BITS),
        }
    }

    /// A fresh positive, non-zero id.
    pub(crate) fn next(&self) -> i64 {
        loop {
            let suffix = self.suffix.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            let id = (self.prefix | (suffix & SUFFIX_MASK)) & POSITIVE_MASK;
            if let Ok(id) = i64::try_from(id)
                && id != 0
            {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_positive_distinct_and_carry_the_member() {
        let ids = LeaseIds::new(0xabcd_1234_5678_9abc, 1_700_000_000_000);
        let a = ids.next();
        let b = ids.next();
        assert!(a > 0 && b > 0);
        assert_eq!(b, a + 1);
        // The member's low 16 bits, less the top bit that would make the id negative.
        assert_eq!((a as u64) >> MEMBER_BITS_SHIFT, 0x1abc);
        let other = LeaseIds::new(0xabcd_1234_5678_9abd, 1_700_000_000_000);
        assert_ne!(other.next(), a);
        assert_ne!(LeaseIds::new(0, 0).next(), 0);
    }
}
