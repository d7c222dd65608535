//! Refusals of the lock and election services, worded as etcd words them (etcd returns these
//! as plain errors, which gRPC reports with code Unknown); see `api::status` for the codes.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum RecipeError {
    /// A Lock waiter's key vanished (its lease expired or was revoked) before its turn came.
    #[error("mutex: session is expired")]
    LockSessionExpired,
    /// The same for a campaign; etcd has no word for it, so this follows the mutex's.
    #[error("election: session is expired")]
    ElectionSessionExpired,
    #[error("election: not leader")]
    NotLeader,
    #[error("election: no leader")]
    NoLeader,
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
}
