//! openraft's storage traits: the log store over the WAL, the state machine over the state
//! database, and the snapshot files they exchange.

mod log_store;
pub mod snapshot_file;
pub mod state_machine;

pub use log_store::LogStore;
pub use state_machine::StateMachine;
#[cfg(test)]
mod suite_test;
