//! The state database: everything a committed command can change, and every read of it, over
//! redb. Deterministic and synchronous: no tokio, no tonic; callers hand in the redb
//! transaction, so the layer above decides when anything is committed or made durable.
//!
//! # Map
//! - [`mvcc`]: revisioned key-value store with etcd 3.4's semantics (revisions, history, key
//!   index, range, compaction). Its module doc is the storage contract.
//! - [`ops`]: the writes a committed KV, Txn, lease or alarm command makes, each a function of
//!   a write transaction and the request: [`ops::kv::apply_kv`] (Put/DeleteRange/Txn/Compact),
//!   [`ops::lease`] (grant, revoke, checkpoint; a put's lease attachment), [`ops::alarm`].
//! - [`lease`]: lease rules (TTL bounds, the checkpoint rules that keep expiry never early),
//!   the replicated lease tables, and the leader's deadline table (deterministic bookkeeping
//!   over a clock the server supplies).
//! - [`storage`]: redb table definitions and the state snapshot (dump, verify, restore).
//! - [`hash`]: the consistency hashes of etcd's Maintenance service (Hash, HashKV).
//!
//! Errors clients see are [`mvcc::error::KvError`] and [`lease::LeaseError`], each carrying
//! etcd's exact message; `baton_apply::refusal` gives them their gRPC codes.

// The map above is for maintainers (`cargo doc --document-private-items`): it links the modules
// a reader opens next, most of which are private to this crate.
#![allow(
    rustdoc::private_intra_doc_links,
    reason = "the crate map links private modules on purpose"
)]

pub mod hash;
pub mod lease;
pub mod mvcc;
pub mod ops;
pub mod storage;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
