//! Baton's server: the `baton` binary — Raft between members, the etcd v3 API and Baton's
//! Modules service over gRPC, and node start-up and shutdown.
//!
//! # The crates, bottom up
//! Cargo's dependency graph is the layer map; each crate's `lib.rs` opens with its own map.
//!
//! - `baton_limits`: every bound, named with its unit.
//! - `baton_proto`: generated protobuf code (messages; tonic services with feature `grpc`).
//! - `baton_wal`: the append-only Raft log files (segments, records, replay, direct I/O).
//! - `baton_wasm`: the deterministic guest runtime over `wit/`, and the built-in modules.
//! - `baton_store`: the state database — MVCC, the writes of KV/Txn/lease/alarm commands
//!   (`ops`), lease rules and tables, snapshots, hashes. No tokio, no tonic.
//! - `baton_apply`: the deterministic core — the log entry format, applying a committed entry
//!   (modules included), the refusal vocabulary, openraft's log store and state machine.
//! - `baton_watch`: the watch hub — fan-out of committed events, catch-up from history.
//! - `baton_bench`: `baton bench`, the load generator.
//! - this crate, `baton`: everything that talks to the network or a clock.
//!
//! # This crate
//! Dependencies point down the list.
//!
//! - [`cli`]: the `baton` command line (`serve`, `bench`, `module`, `call`).
//! - [`node`]: the composition root — opens storage, builds Raft, serves, shuts down; member
//!   joining and liveness; the client port's gRPC reflection and its repair of the malformed
//!   `:authority` etcdctl 3.4 sends (`node::authority`).
//! - [`api`]: tonic services for the etcd API (KV, Watch, Lease, Lock, Election, Cluster,
//!   Maintenance); [`api::status`] is the one place refusals become gRPC statuses. Lock and
//!   Election are adapters over the built-in `lock` and `election` modules ([`api::recipe`]).
//! - [`modules`]: the modules wing — the Modules service, read-only calls, parked (waiting)
//!   calls and how they wake, the built-in modules' deployment.
//! - [`maintenance`]: the streamed database snapshot of the Maintenance service.
//! - [`server`]: what the services call — proposals (forwarded to the leader when needed),
//!   linearizable read barriers, response headers, request deadlines; leader-only lease
//!   deadlines and expiry ([`server::lease`]), membership, alarms, compaction.
//! - [`raft`]: the peer transport (gRPC, snapshot streaming), proposal batching and forwarding.
//! - [`shutdown`]: the signal every task receives when the member stops; used at every layer.

// The map above is for maintainers (`cargo doc --document-private-items`): it links the modules
// a reader opens next, most of which are private to this crate.
#![allow(
    rustdoc::private_intra_doc_links,
    reason = "the crate map links private modules on purpose"
)]

mod api;
pub mod cli;
mod maintenance;
mod modules;
pub mod node;
mod raft;
mod server;
mod shutdown;
