//! What etcd's Maintenance service computes from the state database: consistency hashes and the
//! streamed database snapshot. Pure functions of a read view, so every member that applied the
//! same log answers the same.

pub(crate) mod snapshot_stream;
