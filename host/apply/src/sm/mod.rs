//! Applying one committed command: dispatch (`command`), Wasm modules (`module`,
//! `guest_store`; `builtin` decides whether a built-in deploy replaces a name). The KV, Txn,
//! lease and alarm writes themselves are `baton_store::ops`.

pub mod builtin;
pub mod command;
pub mod guest_store;
pub mod module;

#[cfg(test)]
mod batch_tests;
#[cfg(test)]
mod builtin_tests;
#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod module_tests;
