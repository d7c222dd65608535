//! Typed writes: propose a command and get back the reply its request promises, with the
//! header completed — `server.write::<PutResponse>(Op::Put(req))`. A refusal becomes the
//! client's status; a reply of another kind is a bug, reported as INTERNAL.

use baton_proto::batonpb::{ModuleDeleted, ModuleDeployed, ModuleInvoked, log_command, log_reply};
use baton_proto::etcdserverpb::{
    AlarmResponse, CompactionResponse, DeleteRangeResponse, LeaseGrantResponse,
    LeaseRevokeResponse, PutResponse, TxnResponse,
};
use tonic::Status;

use super::Server;
use crate::api::status::applied_refusal;

/// A reply a write can produce: which variant of the log reply carries it, and what the
/// serving member completes before a client sees it.
pub(crate) trait WriteReply: Sized {
    fn take(result: log_reply::Result) -> Option<Self>;

    /// The state machine fills a header's revision only; the member and cluster ids and the
    /// term are the serving member's.
    fn complete(&mut self, server: &Server);
}

/// `WriteReply` for each reply type: etcd's responses get their header completed (`headed`);
/// Baton's own carry none (`headerless`).
macro_rules! write_replies {
    (@complete headed) => {
        fn complete(&mut self, server: &Server) {
            self.header = server.finish_header(self.header.take());
        }
    };
    (@complete headerless) => {
        fn complete(&mut self, _: &Server) {}
    };
    ($($kind:ident $variant:ident => $reply:ty),* $(,)?) => {$(
        impl WriteReply for $reply {
            fn take(result: log_reply::Result) -> Option<Self> {
                match result {
                    log_reply::Result::$variant(reply) => Some(reply),
                    _ => None,
                }
            }

            write_replies!(@complete $kind);
        }
    )*};
}

write_replies!(
    headed Put => PutResponse,
    headed DeleteRange => DeleteRangeResponse,
    headed Txn => TxnResponse,
    headed Compaction => CompactionResponse,
    headed LeaseGrant => LeaseGrantResponse,
    headed LeaseRevoke => LeaseRevokeResponse,
    headed Alarm => AlarmResponse,
    headerless ModuleDeployed => ModuleDeployed,
    headerless ModuleInvoked => ModuleInvoked,
    headerless ModuleDeleted => ModuleDeleted,
);

impl Server {
    /// Proposes a write and returns its typed, complete reply (see the module doc).
    pub(crate) async fn write<R: WriteReply>(&self, op: log_command::Op) -> Result<R, Status> {
        let mut reply = R::take(self.write_result(op).await?).ok_or_else(unexpected_reply)?;
        reply.complete(self);
        Ok(reply)
    }

    /// Proposes a write and returns its result, turning a deterministic refusal into the status
    /// the client gets.
    async fn write_result(&self, op: log_command::Op) -> Result<log_reply::Result, Status> {
        match self.propose(op).await?.result {
            Some(log_reply::Result::Refused(r)) => Err(applied_refusal(r)),
            Some(other) => Ok(other),
            None => Err(Status::internal(
                "the state machine returned an empty reply",
            )),
        }
    }
}

/// What a service answers when the state machine replied with a different kind of result than
/// the request it proposed: a bug, never a client error.
pub(crate) fn unexpected_reply() -> Status {
    Status::internal("the state machine replied with the wrong kind of response")
}
