//! Raft between members: the gRPC transport (peer service and client, snapshot streaming),
//! proposals (batched on the leader, forwarded by followers) and read barriers. openraft's
//! storage and what a command means live in `baton_apply`.

pub(crate) mod batch;
pub(crate) mod channels;
pub(crate) mod forward;
pub(crate) mod network;
pub(crate) mod peer_service;
pub(crate) mod propose;
