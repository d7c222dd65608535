//! The one place Baton's refusals become gRPC statuses. Which code each refusal gets is
//! `baton_apply::refusal`'s table (it travels in the log); codes and messages are etcd 3.4's
//! (`api/v3rpc/rpctypes/error.go`), because etcd clients branch on them.

use baton_apply::refusal::Refusal;
use baton_proto::batonpb::ApplyRefusal;
use tonic::{Code, Status};

use crate::api::recipe::RecipeError;
use baton_store::mvcc::error::KvError;

/// A deterministic refusal (decided at apply, or by the same checks before proposing), as
/// clients see it. The codes and messages themselves are `baton_apply::refusal`'s.
pub(crate) fn refusal_status(refusal: Refusal) -> Status {
    Status::new(Code::from(refusal.code as i32), refusal.message)
}

/// A refusal carried in a log reply: the code number and message the applying member wrote.
pub(crate) fn applied_refusal(refusal: ApplyRefusal) -> Status {
    Status::new(Code::from(refusal.code), refusal.message)
}

pub(crate) fn kv_status(e: KvError) -> Status {
    refusal_status(e.into())
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
pub(crate) fn recipe_status(status: Status) -> Status {
    Status::new(Code::Unknown, status.message())
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_store::lease::LeaseError;

    fn lease_status(e: LeaseError) -> Status {
        refusal_status(e.into())
    }

    #[test]
    fn refusals_keep_their_code_and_message() {
        let s = kv_status(KvError::Compacted);
        assert_eq!(
            (s.code(), s.message()),
            (
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted"
            )
        );
        let s = lease_status(LeaseError::Exists);
        assert_eq!(
            (s.code(), s.message()),
            (Code::FailedPrecondition, "etcdserver: lease already exists")
        );
        let s = applied_refusal(ApplyRefusal {
            code: Code::NotFound as i32,
            message: "module not found: m".into(),
        });
        assert_eq!(
            (s.code(), s.message()),
            (Code::NotFound, "module not found: m")
        );
    }

    #[test]
    fn recipe_errors_are_unknown_with_etcds_words() {
        let cases = [
            (RecipeError::LockSessionExpired, "mutex: session is expired"),
            (RecipeError::NotLeader, "election: not leader"),
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
