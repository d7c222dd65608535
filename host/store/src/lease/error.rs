//! Refusals of lease requests. Messages are etcd's gRPC descriptions, byte for byte;
//! `baton_apply::refusal` gives each its gRPC code.

use crate::mvcc::error::StorageError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("etcdserver: requested lease not found")]
    NotFound,
    #[error("etcdserver: lease already exists")]
    Exists,
    #[error("etcdserver: too large lease TTL")]
    TtlTooLarge,
}

/// Outcome of a failed lease apply: `Rejected` wrote nothing; `Storage` is fatal for the node.
#[derive(Debug, thiserror::Error)]
pub enum LeaseApplyError {
    #[error(transparent)]
    Rejected(#[from] LeaseError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<redb::StorageError> for LeaseApplyError {
    fn from(e: redb::StorageError) -> Self {
        LeaseApplyError::Storage(e.into())
    }
}

impl From<redb::TableError> for LeaseApplyError {
    fn from(e: redb::TableError) -> Self {
        LeaseApplyError::Storage(e.into())
    }
}
