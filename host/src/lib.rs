//! Baton: a Raft-replicated, etcd v3 wire-compatible coordination service.
//!
//! # Layout
//! Dependencies point down the list; nothing points back up.
//!
//! - [`cli`]: the `baton` command line (`serve`, client tools).
//! - [`bench`]: `baton bench`, a load generator for any etcd-compatible endpoint.
//! - [`node`]: composition root — opens storage, builds Raft, serves, shuts down.
//! - [`api`]: tonic services for the etcd API; request-shape checks; the one table that maps
//!   errors to gRPC status. Protobuf in, protobuf out; no storage access except read views.
//! - [`server`]: what the API calls — proposals (forwarded to the leader when needed),
//!   linearizable read barriers, response headers, request deadlines.
//! - [`raft`]: openraft glue — redb log store with group commit, state machine wrapper, peer
//!   transport.
//! - [`entry`]: the replicated log's format (commands, replies, member records).
//! - [`sm`]: the only code that changes state when a committed entry is applied.
//! - [`wasm`]: deterministic guest runtime (fuel, memory caps, no WASI) for Baton modules;
//!   reaches the store only through a trait `sm` implements.
//! - [`watch`]: fan-out of committed events to watchers.
//! - [`mvcc`]: revisioned key-value store over redb (revisions, history, range, compaction).
//! - [`storage`]: redb table definitions and snapshot dump/restore.
//! - [`limits`]: every bound, with units.
//! - [`proto`]: generated protobuf code.

pub mod api;
pub mod bench;
pub mod cli;
pub mod entry;
pub mod limits;
pub mod mvcc;
pub mod node;
pub mod proto;
pub mod raft;
pub mod server;
pub mod sm;
pub mod storage;
pub mod wasm;
pub mod watch;
