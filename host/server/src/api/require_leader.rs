//! etcd's `WithRequireLeader`: a client that sends the gRPC metadata `hasleader: true` wants no
//! answer from a member cut off from its leader. Such a call (unary or stream) on a member that
//! has no leader (or leads without hearing from a quorum: `Server::sees_leader`) fails at once
//! with UNAVAILABLE `etcdserver: no leader` (see `learner_gate`,
//! etcd's interceptors); such a Watch stream already open ends with the same status once the
//! member has gone without a leader for a few election timeouts (`server::leader_loss`).
//! Calls without the metadata are served as before: a watch then stays open, as in etcd.

use tonic::Status;
use tonic::codegen::http::HeaderMap;

use crate::server::NO_LEADER;

/// The metadata key and value clientv3's `WithRequireLeader` sends.
const REQUIRE_LEADER_KEY: &str = "hasleader";
const REQUIRE_LEADER_VALUE: &[u8] = b"true";

/// Whether the call asked to be refused when this member has no leader. Like etcd, only the
/// first value of the key counts.
pub(crate) fn requires_leader(headers: &HeaderMap) -> bool {
    headers
        .get(REQUIRE_LEADER_KEY)
        .is_some_and(|value| value.as_bytes() == REQUIRE_LEADER_VALUE)
}

/// etcd's `rpctypes.ErrGRPCNoLeader`.
pub(crate) fn no_leader() -> Status {
    Status::unavailable(NO_LEADER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hasleader_true_requires_a_leader() {
        let mut headers = HeaderMap::new();
        assert!(!requires_leader(&headers));
        headers.insert(REQUIRE_LEADER_KEY, "false".parse().unwrap());
        assert!(!requires_leader(&headers));
        headers.insert(REQUIRE_LEADER_KEY, "true".parse().unwrap());
        assert!(requires_leader(&headers));
    }
}
