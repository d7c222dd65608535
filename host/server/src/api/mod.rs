//! tonic services for the etcd API, request-shape checks, and the error-to-status table.

pub(crate) mod cluster;
pub(crate) mod election;
pub(crate) mod kv;

pub(crate) mod learner_gate;
pub(crate) mod lease;
pub(crate) mod lock;
pub(crate) mod maintenance;
pub(crate) mod recipe;
mod require_leader;
pub(crate) mod status;
pub(crate) mod watch;
