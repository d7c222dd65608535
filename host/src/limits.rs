//! Named bounds shared across Baton. Every limit the server enforces lives here.

/// Most operations in one branch (success or failure) of a txn, and most compares (etcd `--max-txn-ops`).
pub const TXN_OPS_MAX: usize = 128;

/// Largest client request accepted, in bytes (etcd `--max-request-bytes`, 1.5 MiB).
pub const REQUEST_BYTES_MAX: usize = 1_572_864;
