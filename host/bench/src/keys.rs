//! Key generation: fixed-size keys drawn from a numbered key space.

use thiserror::Error;

use super::args::{KEY_SIZE_MAX, KeyArgs};

#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum KeySpaceError {
    #[error("--key-space-size must be at least 1")]
    Empty,
    #[error("--key-size must be between 1 and {KEY_SIZE_MAX}")]
    KeySize,
    #[error(
        "--key-size {key_size} leaves {digits} digit(s) after the prefix, too few for {size} keys"
    )]
    TooSmall {
        key_size: usize,
        digits: usize,
        size: u64,
    },
}

/// Keys are `prefix` followed by the key number, zero-padded so every key has the same size.
#[derive(Debug, Clone)]
pub(crate) struct KeySpace {
    prefix: String,
    digits: usize,
    size: u64,
    sequential: bool,
}

impl KeySpace {
    pub(crate) fn new(args: &KeyArgs) -> Result<Self, KeySpaceError> {
        if args.key_space_size == 0 {
            return Err(KeySpaceError::Empty);
        }
        if args.key_size == 0 || args.key_size > KEY_SIZE_MAX {
            return Err(KeySpaceError::KeySize);
        }
        let digits = args.key_size.saturating_sub(args.key_prefix.len());
        let largest = (args.key_space_size - 1).to_string();
        if digits < largest.len() {
            return Err(KeySpaceError::TooSmall {
                key_size: args.key_size,
                digits,
                size: args.key_space_size,
            });
        }
        Ok(Self {
            prefix: args.key_prefix.clone(),
            digits,
            size: args.key_space_size,
            sequential: args.sequential_keys,
        })
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn is_sequential(&self) -> bool {
        self.sequential
    }

    pub(crate) fn set_sequential(&mut self, sequential: bool) {
        self.sequential = sequential;
    }

    /// The key number for the `seq`-th operation of a run.
    pub(crate) fn pick(&self, seq: u64, rng: &mut SplitMix64) -> u64 {
        if self.sequential {
            seq % self.size
        } else {
            rng.below(self.size)
        }
    }

    pub(crate) fn key(&self, number: u64) -> Vec<u8> {
        format!("{}{:0width$}", self.prefix, number, width = self.digits).into_bytes()
    }
}

/// SplitMix64: a tiny, seedable generator; key choice needs spread, not cryptographic strength.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for one requester, so requesters do not all draw the same keys.
    pub(crate) fn for_requester(seed: u64, index: usize) -> Self {
        let mut mixer = Self::new(seed ^ (index as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        Self::new(mixer.next_u64())
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (multiply-shift; the bias is below 2^-64 per value).
    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_args(key_size: usize, size: u64, prefix: &str, sequential: bool) -> KeyArgs {
        KeyArgs {
            key_size,
            key_space_size: size,
            sequential_keys: sequential,
            key_prefix: prefix.to_string(),
            seed: 7,
        }
    }

    #[test]
    fn keys_have_the_requested_size() {
        let space = KeySpace::new(&key_args(12, 1_000, "bench/", false)).unwrap();
        assert_eq!(space.key(0), b"bench/000000".to_vec());
        assert_eq!(space.key(999), b"bench/000999".to_vec());
        let space = KeySpace::new(&key_args(8, 100_000_000, "", false)).unwrap();
        assert_eq!(space.key(99_999_999), b"99999999".to_vec());
    }

    #[test]
    fn key_space_must_fit_the_key_size() {
        let err = KeySpace::new(&key_args(8, 1_000, "bench/", false)).unwrap_err();
        assert_eq!(
            err,
            KeySpaceError::TooSmall {
                key_size: 8,
                digits: 2,
                size: 1_000
            }
        );
        assert_eq!(
            KeySpace::new(&key_args(8, 0, "", false)).unwrap_err(),
            KeySpaceError::Empty
        );
        assert_eq!(
            KeySpace::new(&key_args(0, 1, "", false)).unwrap_err(),
            KeySpaceError::KeySize
        );
        // 100 keys are numbered 0..=99: two digits suffice.
        assert!(KeySpace::new(&key_args(8, 100, "bench/", false)).is_ok());
    }

    #[test]
    fn sequential_keys_wrap_around_the_space() {
        let space = KeySpace::new(&key_args(8, 3, "", true)).unwrap();
        let mut rng = SplitMix64::new(1);
        let picked: Vec<u64> = (0..7).map(|seq| space.pick(seq, &mut rng)).collect();
        assert_eq!(picked, vec![0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn random_keys_stay_in_range_and_cover_it() {
        let space = KeySpace::new(&key_args(8, 10, "", false)).unwrap();
        let mut rng = SplitMix64::new(42);
        let mut seen = [0u32; 10];
        for seq in 0..10_000 {
            let n = space.pick(seq, &mut rng);
            assert!(n < 10);
            seen[n as usize] += 1;
        }
        // Uniform draws put about 1000 in each bucket; 800 is far outside chance for 10k draws.
        assert!(seen.iter().all(|&count| count > 800), "{seen:?}");
    }

    #[test]
    fn requesters_get_different_deterministic_streams() {
        let a1: Vec<u64> = (0..4)
            .map({
                let mut r = SplitMix64::for_requester(1, 0);
                move |_| r.next_u64()
            })
            .collect();
        let a2: Vec<u64> = (0..4)
            .map({
                let mut r = SplitMix64::for_requester(1, 0);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = SplitMix64::for_requester(1, 1);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
    }
}
