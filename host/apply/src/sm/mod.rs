//! Applying one committed command: dispatch (`command`), Wasm modules (`module`,
//! `guest_store`). The KV, Txn, lease and alarm writes themselves are `baton_store::ops`.

pub mod command;
pub mod guest_store;
pub mod module;

#[cfg(test)]
mod batch_tests;
#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod module_tests;
