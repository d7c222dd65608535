//! The deterministic core: what a committed log entry means and how it is applied, plus
//! openraft's storage traits over the WAL and the state database. No tonic; no clock or
//! randomness on the apply path (`tests/determinism_tidy.rs` checks by inspection).
//!
//! # Map
//! - [`entry`]: the log's format — openraft's type configuration, [`entry::Command`] (a
//!   `batonpb.LogCommand`), [`entry::Reply`], member records.
//! - [`sm`]: applying one committed command: [`sm::command::apply_command`] dispatches KV, Txn,
//!   lease and alarm commands to `baton_store::ops` and module commands to [`sm::module`]
//!   (deploy, delete, invoke — a call runs in `baton_wasm` against [`sm::guest_store`], the
//!   batch's write transaction). A call that returns a wait condition is recorded here; the
//!   server's modules wing parks it and proposes its re-run when a watched key changes.
//! - [`refusal`]: the refusal vocabulary — what a deterministic "no" carries in the log reply.
//!   A failure that must stop the member is [`sm::command::ApplyFatal`] instead.
//! - [`raft`]: openraft's storage — [`raft::LogStore`] (the log over `baton_wal`),
//!   [`raft::StateMachine`] (applies entries in batches, publishes events to the watch hub,
//!   builds and installs snapshots through [`raft::snapshot_file`]).
//! - [`settled`]: the revision every acknowledged write has reached, for reads that must see
//!   them.

// The map above is for maintainers (`cargo doc --document-private-items`): it links the modules
// a reader opens next, most of which are private to this crate.
#![allow(
    rustdoc::private_intra_doc_links,
    reason = "the crate map links private modules on purpose"
)]

pub mod entry;
pub mod raft;
pub mod refusal;
pub mod settled;
pub mod sm;
