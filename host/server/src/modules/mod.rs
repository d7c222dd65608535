//! The modules wing: everything the server does for Wasm modules beyond applying them (which is
//! `baton_apply::sm::module`, running guests in `baton_wasm`).
//!
//! - [`service`]: the `baton.v1.Modules` gRPC service — deploy (validated here first, then
//!   through the log), list, describe, delete, and calls.
//! - [`calls`]: runs a call to completion for any service: writing calls are proposed like any
//!   write, run after run, parking in between; read-only calls run here ([`read_only`]); a
//!   writing call whose client leaves early gets the guest's clean-up through the log.
//! - [`park`]: how a waiting call waits. A guest that returns a wait condition (keys, leases)
//!   has its call parked on the member serving the client, which watches those keys through the
//!   watch hub and runs the call again (through the log) when one may have changed.
//! - [`read_only`]: a read-only call runs on the serving member against a linearizable read
//!   view; no log entry.
//! - [`builtin`]: deploys the built-in modules (`guests/`, embedded by `baton_wasm::builtin`)
//!   that differ from the module table, whenever this member becomes leader.

pub(crate) mod builtin;
pub(crate) mod calls;
pub(crate) mod park;
mod read_only;
pub(crate) mod service;
