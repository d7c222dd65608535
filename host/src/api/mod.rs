//! tonic services for the etcd API, request-shape checks, and the error-to-status table.

pub mod cluster;
pub mod election;
pub mod kv;
pub mod kv_checks;
pub mod learner_gate;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod modules;
pub mod require_leader;
pub mod status;
pub mod watch;

/// What a service answers when the state machine replied with a different kind of result than
/// the request it proposed: a bug, never a client error.
fn unexpected_reply() -> tonic::Status {
    tonic::Status::internal("the state machine replied with the wrong kind of response")
}
