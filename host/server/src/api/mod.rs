//! tonic services for the etcd API, request-shape checks, and the error-to-status table.

pub mod cluster;
pub mod election;
pub mod kv;

pub mod learner_gate;
pub mod lease;
pub mod lock;
pub mod maintenance;
mod require_leader;
pub mod status;
pub mod watch;
