//! The call's transactional view of the store: reads see the call's own earlier writes, and
//! every write commits as one revision when the call succeeds (none when it fails).

use crate::bindings::baton::module::store as wit;

pub use wit::Kv;

pub fn get(key: impl AsRef<[u8]>) -> Option<Kv> {
    wit::get(key.as_ref())
}

/// The value of `key`, if it exists.
pub fn get_value(key: impl AsRef<[u8]>) -> Option<Vec<u8>> {
    get(key).map(|kv| kv.value)
}

pub fn put(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
    wit::put(key.as_ref(), value.as_ref(), None);
}

/// Writes `key` attached to `lease`; the call fails if the lease does not exist.
pub fn put_with_lease(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, lease: i64) {
    wit::put(key.as_ref(), value.as_ref(), Some(lease));
}

/// Deletes `key`; returns whether it existed.
pub fn delete(key: impl AsRef<[u8]>) -> bool {
    wit::delete(key.as_ref())
}

/// Deletes every key in [start, end). As in etcd, an empty `end` means just `start` and
/// [`ALL_FROM`] means every key >= start.
pub fn delete_range(start: impl AsRef<[u8]>, end: impl AsRef<[u8]>) -> u64 {
    wit::delete_range(start.as_ref(), end.as_ref())
}

/// Keys in [start, end) in key order (`end` as for [`delete_range`]).
pub fn range(start: impl AsRef<[u8]>, end: impl AsRef<[u8]>) -> Vec<Kv> {
    wit::range(start.as_ref(), end.as_ref(), 0, false)
}

/// Keys starting with `prefix`, at most `limit` (0: no limit), descending when `reverse`.
pub fn prefix(prefix: impl AsRef<[u8]>, limit: u32, reverse: bool) -> Vec<Kv> {
    let start = prefix.as_ref();
    wit::range(start, &prefix_end(start), limit, reverse)
}

/// A range end meaning "every key >= start".
pub const ALL_FROM: &[u8] = &[0];

/// The smallest key greater than every key starting with `prefix` (etcd's `GetPrefixRangeEnd`);
/// [`ALL_FROM`] when `prefix` is all 0xff bytes.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    ALL_FROM.to_vec()
}
