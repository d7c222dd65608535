//! Errors of the KV layer. `KvError` messages are etcd's gRPC descriptions, byte for byte,
//! because clients match on them; `baton_apply::refusal` gives each its gRPC code.

/// A deterministic refusal of a KV request (or, for `Storage`, a failed read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// The database failed under a read; not a property of the request.
    #[error("etcdserver: storage error: {0}")]
    Storage(String),
}

/// The database failed or holds bytes Baton did not write: the node must stop applying.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("redb: {0}")]
    Redb(#[from] redb::Error),
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// An invariant of the store (see `mvcc`'s module doc) does not hold: applying on would
    /// build on state that can no longer be trusted, so the member stops instead.
    #[error("store invariant broken: {0}; stopping rather than applying on")]
    Invariant(String),
    /// A read raced a compaction of the revision it asked for; not a failure of the store.
    #[error(transparent)]
    Compacted(#[from] crate::mvcc::key_index::IndexError),
}

/// Generates `From<redb::XError> for StorageError` for redb's specific error types.
macro_rules! storage_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(e: $t) -> Self {
                StorageError::Redb(e.into())
            }
        }
    )*};
}
storage_from_redb!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);

/// Outcome of a failed apply: `Rejected` wrote nothing; `Storage` is fatal for the node.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Rejected(#[from] KvError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<redb::StorageError> for ApplyError {
    fn from(e: redb::StorageError) -> Self {
        ApplyError::Storage(e.into())
    }
}

impl From<redb::TableError> for ApplyError {
    fn from(e: redb::TableError) -> Self {
        ApplyError::Storage(e.into())
    }
}

impl From<ApplyError> for KvError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Rejected(kv) => kv,
            ApplyError::Storage(s) => s.into(),
        }
    }
}
