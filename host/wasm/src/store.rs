//! The store as a guest sees it. `sm/` implements [`GuestStore`] over a write transaction and
//! buffers the writes, so a failed call can be dropped without touching the database.

/// A live key with its revision metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

/// Why a store operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreFailure {
    /// A deterministic refusal (e.g. an unknown lease): the call fails with this message and
    /// commits nothing, identically on every replica.
    #[error("{0}")]
    Refused(String),
    /// The database failed: the node must stop rather than answer differently from its peers.
    #[error("storage failed: {0}")]
    Fatal(String),
}

/// Transactional key-value access for one call. Ranges use etcd's convention: an empty `end`
/// is just `start`; `end` = `[0]` is every key >= `start`.
pub trait GuestStore {
    fn get(&mut self, key: &[u8]) -> Result<Option<StoredKv>, StoreFailure>;
    /// Writes `key`; `lease` 0 means none.
    fn put(&mut self, key: &[u8], value: &[u8], lease: i64) -> Result<(), StoreFailure>;
    /// Deletes the live keys of [start, end); returns how many there were.
    fn delete_range(&mut self, start: &[u8], end: &[u8]) -> Result<u64, StoreFailure>;
    /// Live keys of [start, end) in key order (reversed when `reverse`), at most `limit`.
    fn range(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<StoredKv>, StoreFailure>;
}
