//! The one table from Baton errors to gRPC statuses. Codes and messages are etcd 3.4's
//! (`api/v3rpc/rpctypes/error.go`), because etcd clients branch on them.

use tonic::{Code, Status};

use crate::lease::LeaseError;
use crate::mvcc::error::KvError;
use crate::recipe::error::RecipeError;

/// gRPC code and message for each KV error.
fn kv_status(e: &KvError) -> (Code, String) {
    let code = match e {
        KvError::EmptyKey
        | KvError::KeyNotFound
        | KvError::ValueProvided
        | KvError::LeaseProvided
        | KvError::TooManyOps
        | KvError::DuplicateKey
        | KvError::RequestTooLarge => Code::InvalidArgument,
        KvError::Compacted | KvError::FutureRevision => Code::OutOfRange,
        KvError::LeaseNotFound => Code::NotFound,
        // etcd answers errors it has no mapping for with Unknown and the error text.
        KvError::Storage(_) => Code::Unknown,
    };
    (code, e.to_string())
}

impl From<KvError> for Status {
    fn from(e: KvError) -> Self {
        let (code, message) = kv_status(&e);
        Status::new(code, message)
    }
}

impl From<LeaseError> for Status {
    fn from(e: LeaseError) -> Self {
        let code = match e {
            LeaseError::NotFound => Code::NotFound,
            LeaseError::Exists => Code::FailedPrecondition,
            LeaseError::TtlTooLarge => Code::OutOfRange,
        };
        Status::new(code, e.to_string())
    }
}

/// etcd's recipe servers return their errors unwrapped, which gRPC sends as Unknown.
impl From<RecipeError> for Status {
    fn from(e: RecipeError) -> Self {
        Status::new(Code::Unknown, e.to_string())
    }
}

/// Any refusal of a Lock or Election call, as etcd 3.4 sends it: its recipe servers run their
/// KV operations through an embedded client, which turns every error into a plain one, so
/// clients get the message with code Unknown (`etcdserver: requested lease not found` too).
pub fn recipe_status(status: Status) -> Status {
    Status::new(Code::Unknown, status.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(e: KvError) -> (Code, String) {
        let s = Status::from(e);
        (s.code(), s.message().to_string())
    }

    #[test]
    fn statuses_match_etcd_rpctypes() {
        let cases = [
            (
                KvError::EmptyKey,
                Code::InvalidArgument,
                "etcdserver: key is not provided",
            ),
            (
                KvError::KeyNotFound,
                Code::InvalidArgument,
                "etcdserver: key not found",
            ),
            (
                KvError::ValueProvided,
                Code::InvalidArgument,
                "etcdserver: value is provided",
            ),
            (
                KvError::LeaseProvided,
                Code::InvalidArgument,
                "etcdserver: lease is provided",
            ),
            (
                KvError::TooManyOps,
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            (
                KvError::DuplicateKey,
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            (
                KvError::RequestTooLarge,
                Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            (
                KvError::Compacted,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                KvError::FutureRevision,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (
                KvError::LeaseNotFound,
                Code::NotFound,
                "etcdserver: requested lease not found",
            ),
        ];
        for (err, code, message) in cases {
            assert_eq!(status(err), (code, message.to_string()));
        }
        let (code, message) = status(KvError::Storage("disk gone".into()));
        assert_eq!(code, Code::Unknown);
        assert!(message.contains("disk gone"));
    }

    #[test]
    fn lease_statuses_match_etcd_rpctypes() {
        let cases = [
            (
                LeaseError::NotFound,
                Code::NotFound,
                "etcdserver: requested lease not found",
            ),
            (
                LeaseError::Exists,
                Code::FailedPrecondition,
                "etcdserver: lease already exists",
            ),
            (
                LeaseError::TtlTooLarge,
                Code::OutOfRange,
                "etcdserver: too large lease TTL",
            ),
        ];
        for (err, code, message) in cases {
            let s = Status::from(err);
            assert_eq!((s.code(), s.message()), (code, message));
        }
    }

    #[test]
    fn recipe_errors_are_unknown_with_etcds_words() {
        let cases = [
            (RecipeError::LockSessionExpired, "mutex: session is expired"),
            (RecipeError::NotLeader, "election: not leader"),
            (RecipeError::NoLeader, "election: no leader"),
            (
                RecipeError::MissingLeaderKey,
                "\"leader\" field must be provided",
            ),
        ];
        for (err, message) in cases {
            let s = Status::from(err);
            assert_eq!((s.code(), s.message()), (Code::Unknown, message));
        }
    }
}
