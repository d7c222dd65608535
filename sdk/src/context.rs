//! Facts about the current call, identical on every replica (there is no clock or randomness).
//! A read-only call (served by one member without a log entry) sees the index that member had
//! applied, the store's current revision and that member's clock. On native targets these come
//! from the running [`crate::testing::Harness`] call.

#[cfg(target_arch = "wasm32")]
use crate::bindings::baton::module::context as host;
#[cfg(not(target_arch = "wasm32"))]
use crate::testing::world::context as host;

/// Raft log index of the entry carrying this call. Calls proposed at about the same time may
/// share one entry, so it is not unique per call; [`revision`] is, for a call that writes.
pub fn log_index() -> u64 {
    host::log_index()
}

/// Revision the call's writes commit at (read-only: the store's current revision).
pub fn revision() -> i64 {
    host::revision()
}

/// The leader's clock when it proposed the call, in Unix milliseconds. Timed waits
/// ([`crate::WaitFor::until_ms`]) are decided against it, never against a local clock.
pub fn proposal_time_ms() -> u64 {
    host::proposal_time_ms()
}

/// Lease the caller passed with the call; 0 for none.
pub fn caller_lease() -> i64 {
    host::caller_lease()
}

/// Who made the call: empty until Baton authenticates clients, then the user name.
pub fn caller() -> String {
    host::caller()
}

pub fn module_name() -> String {
    host::module_name()
}

/// SHA-256 of the module's bytes, lowercase hex.
pub fn module_hash() -> String {
    host::module_hash()
}
