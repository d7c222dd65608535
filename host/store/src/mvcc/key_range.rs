//! A range of keys as etcd's (key, range_end) pairs name one, for watchers and parked module
//! calls.

/// The keys a watcher covers, from etcd's (key, range_end) after the watch API's
/// normalisation: an empty range_end is one key, "\0" is every key from `key` on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    Single(Vec<u8>),
    From(Vec<u8>),
    /// [start, end) with start < end.
    Until(Vec<u8>, Vec<u8>),
}

impl KeyRange {
    /// etcd's reading of a (key, range_end) pair: an empty key is "\0", the smallest key; an
    /// empty range_end is one key; "\0" means every key from `key`. None for an empty range.
    pub fn from_etcd(key: Vec<u8>, range_end: Vec<u8>) -> Option<KeyRange> {
        let key = if key.is_empty() { vec![0] } else { key };
        match range_end.as_slice() {
            [] => Some(KeyRange::Single(key)),
            [0] => Some(KeyRange::From(key)),
            end if key.as_slice() < end => Some(KeyRange::Until(key, range_end)),
            _ => None,
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => key == k.as_slice(),
            KeyRange::From(start) => key >= start.as_slice(),
            KeyRange::Until(start, end) => key >= start.as_slice() && key < end.as_slice(),
        }
    }
}
