//! Deterministic guest runtime: runs Baton modules (WebAssembly components implementing
//! `wit/baton.wit`) so that every replica reaches the same outcome for the same call.
//!
//! Knows nothing of mvcc or raft: a call reaches the store only through [`GuestStore`], which
//! `sm/` implements over the batch's write transaction. Determinism comes from the engine
//! settings ([`engine`]), a fuel budget per call (never a clock), a memory cap per instance, a
//! fresh instance per call, and outcomes that are plain data ([`Outcome`]); anything the host
//! cannot classify as a property of the module and its input is a [`RuntimeFatal`].

// The map above is for maintainers (`cargo doc --document-private-items`): it links the modules
// a reader opens next, most of which are private to this crate.
#![allow(
    rustdoc::private_intra_doc_links,
    reason = "the crate map links private modules on purpose"
)]

pub mod builtin;
mod cache;
mod engine;
mod functions;
mod host;
mod outcome;
mod query;
mod runtime;
mod store;
mod validate;

#[cfg(test)]
mod tests;

pub use functions::{DeclaredFunction, FUNCTIONS_SECTION, declared_functions};
pub use outcome::{GuestFailure, Outcome, RuntimeFatal, WaitCondition};
pub use runtime::{CallContext, CallRequest, Entry, Runtime};
pub use store::{
    GuestStore, LeaseFacts, RangeAnswer, RangeQuery, SortBy, StoreFailure, StoredKv, Visit,
};
pub use validate::{DeployError, Validated};

/// SHA-256 of a module's component bytes: its identity, and the compiled-code cache key.
pub type ModuleHash = [u8; 32];

pub fn module_hash(bytes: &[u8]) -> ModuleHash {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Lowercase hex, as clients and guests see hashes.
pub fn hash_hex(hash: &[u8]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes `text` spells in hex (either case), the inverse of [`hash_hex`]; None unless it is
/// an even number of hex digits.
pub fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}
