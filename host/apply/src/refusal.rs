//! Baton's refusal vocabulary: why a command was deterministically refused, as every member
//! decides it when applying the same entry. A refusal travels in the log reply
//! (`batonpb.ApplyRefusal`) as a gRPC status code number and a message, so the numbers below are
//! part of the log format; the server turns a refusal into a `tonic::Status` in one place
//! (`api/status.rs`). Messages are etcd 3.4's where etcd has one (`rpctypes/error.go`), because
//! etcd clients branch on them.
//!
//! A refusal is an answer, not a failure of the member: what must stop a member is
//! [`crate::sm::command::ApplyFatal`].

use baton_store::lease::LeaseError;
use baton_store::mvcc::error::KvError;
use baton_wasm::GuestFailure;

/// The gRPC status codes refusals use, numbered as gRPC numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Code {
    /// etcd answers errors it has no mapping for with Unknown and the error's text.
    Unknown = 2,
    InvalidArgument = 3,
    NotFound = 5,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    OutOfRange = 11,
    Unimplemented = 12,
}

/// A deterministic refusal: the code and the message clients see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: Code,
    pub message: String,
}

impl Refusal {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl From<KvError> for Refusal {
    fn from(e: KvError) -> Self {
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
            KvError::Storage(_) => Code::Unknown,
        };
        Refusal::new(code, e.to_string())
    }
}

impl From<LeaseError> for Refusal {
    fn from(e: LeaseError) -> Self {
        let code = match e {
            LeaseError::NotFound => Code::NotFound,
            LeaseError::Exists => Code::FailedPrecondition,
            LeaseError::TtlTooLarge => Code::OutOfRange,
        };
        Refusal::new(code, e.to_string())
    }
}

impl From<GuestFailure> for Refusal {
    fn from(failure: GuestFailure) -> Self {
        let code = match failure {
            GuestFailure::FuelExhausted { .. }
            | GuestFailure::MemoryCap { .. }
            | GuestFailure::OutputTooLarge { .. }
            | GuestFailure::WriteLimit(_) => Code::ResourceExhausted,
            GuestFailure::UnknownModule(_) => Code::NotFound,
            GuestFailure::InputTooLarge { .. } => Code::InvalidArgument,
            GuestFailure::Trapped { .. }
            | GuestFailure::GuestError(_)
            | GuestFailure::Refused(_) => Code::FailedPrecondition,
        };
        Refusal::new(code, failure.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(e: impl Into<Refusal>) -> (Code, String) {
        let r = e.into();
        (r.code, r.message)
    }

    #[test]
    fn kv_refusals_match_etcd_rpctypes() {
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
            assert_eq!(refusal(err), (code, message.to_string()));
        }
        let (code, message) = refusal(KvError::Storage("disk gone".into()));
        assert_eq!(code, Code::Unknown);
        assert!(message.contains("disk gone"));
    }

    #[test]
    fn lease_refusals_match_etcd_rpctypes() {
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
            assert_eq!(refusal(err), (code, message.to_string()));
        }
    }
}
