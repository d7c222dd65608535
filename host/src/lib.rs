//! Baton: a Raft-replicated, etcd v3 wire-compatible coordination service.
//!
//! # Layout
//! Dependencies point down the list; nothing points back up.
//!
//! - [`cli`]: the `baton` command line (`serve`, client tools).
//! - [`bench`]: `baton bench`, a load generator for any etcd-compatible endpoint.
//! - [`node`]: composition root — opens storage, builds Raft, serves, shuts down.
//! - [`maintenance`]: what the Maintenance service computes from the state database (hashes,
//!   the snapshot stream).
//! - [`api`]: tonic services for the etcd API; request-shape checks; the one table that maps
//!   errors to gRPC status. Protobuf in, protobuf out; no storage access except read views.
//! - [`recipe`]: etcd's lock and election recipes run server-side (queue keys, waits on the
//!   watch hub), for the Lock and Election services.
//! - [`server`]: what the API calls — proposals (forwarded to the leader when needed),
//!   linearizable read barriers, response headers, request deadlines.
//! - [`raft`]: openraft glue — redb log store with group commit, state machine wrapper, peer
//!   transport.
//! - [`entry`]: the replicated log's format (commands, replies, member records).
//! - [`sm`]: the only code that changes state when a committed entry is applied.
//! - [`lease`]: lease rules, the replicated lease tables, and the leader's deadline table
//!   (deterministic; the server drives it with a clock).
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
pub mod lease;
pub mod limits;
pub mod maintenance;
pub mod mvcc;
pub mod node;
pub mod proto;
pub mod raft;
pub mod recipe;
pub mod server;
pub mod sm;
pub mod storage;
pub mod wasm;
pub mod watch;
