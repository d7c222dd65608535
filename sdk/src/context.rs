//! Facts about the current call, identical on every replica (there is no clock or randomness).
//! A read-only call (served by one member without a log entry) sees the index that member had
//! applied, the store's current revision and that member's clock.

use crate::bindings::baton::module::context as wit;

/// Raft log index of the entry carrying this call. Calls proposed at about the same time may
/// share one entry, so it is not unique per call; [`revision`] is, for a call that writes.
pub fn log_index() -> u64 {
    wit::log_index()
}

/// Revision the call's writes commit at.
pub fn revision() -> i64 {
    wit::revision()
}

/// The leader's clock when it proposed the call, in Unix milliseconds.
pub fn proposal_time_ms() -> u64 {
    wit::proposal_time_ms()
}

/// Lease the caller passed with the call; 0 for none.
pub fn caller_lease() -> i64 {
    wit::caller_lease()
}

pub fn module_name() -> String {
    wit::module_name()
}

/// SHA-256 of the module's bytes, lowercase hex.
pub fn module_hash() -> String {
    wit::module_hash()
}
