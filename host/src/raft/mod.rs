//! openraft glue only: the redb log store, the redb state machine wrapper, and the gRPC transport
//! between members. What a command *means* lives in `sm/`.

pub mod batch;
pub mod channels;
pub mod forward;
pub mod log_store;
pub mod network;
pub mod peer_service;
pub mod propose;
pub mod snapshot_file;
pub mod state_machine;

pub use log_store::LogStore;
pub use state_machine::StateMachine;
#[cfg(test)]
mod suite_test;
