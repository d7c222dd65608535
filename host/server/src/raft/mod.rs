//! Raft between members: the gRPC transport (peer service and client, snapshot streaming),
//! proposals (batched on the leader, forwarded by followers) and read barriers. openraft's
//! storage and what a command means live in `baton_apply`.

pub mod batch;
pub mod channels;
pub mod forward;
pub mod network;
pub mod peer_service;
pub mod propose;
