//! The replicated log's format: openraft's type configuration, the command every member applies
//! ([`Command`]), the outcome its proposer receives ([`Reply`]), and what the log records about
//! each member ([`Member`]).
//!
//! Commands and replies are protobuf messages (`batonpb.LogCommand` / `batonpb.LogReply`), so an
//! entry written by one Baton version stays readable by the next: fields can be added without
//! breaking old log entries or snapshots.

use std::fmt;

use prost::Message;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::proto::batonpb::{LogCommand, LogReply};

openraft::declare_raft_types!(
    /// Baton's openraft configuration: u64 member ids, tokio, and our own payloads.
    pub TypeConfig:
        D = Command,
        R = Reply,
        Node = Member,
);

/// The openraft handle specialised to Baton's state machine.
pub type Raft = openraft::Raft<TypeConfig, crate::raft::StateMachine>;
/// A member's id: derived from its name and peer URLs at bootstrap, never reused.
pub type MemberId = u64;

/// A log entry's application payload.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Command(pub LogCommand);

/// What applying a [`Command`] produced, sent back to the member that proposed it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reply(pub LogReply);

/// What the replicated membership records about a member: enough to reach it and to answer
/// etcd's `MemberList`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    /// True for a member that replicates but does not vote (etcd's learner).
    pub is_learner: bool,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::proto::batonpb::log_command::Op;
        let kind = match &self.0.op {
            Some(Op::Put(_)) => "put",
            Some(Op::DeleteRange(_)) => "delete_range",
            Some(Op::Txn(_)) => "txn",
            Some(Op::Compaction(_)) => "compaction",
            Some(Op::LeaseGrant(_)) => "lease_grant",
            Some(Op::LeaseRevoke(_)) => "lease_revoke",
            Some(Op::LeaseCheckpoint(_)) => "lease_checkpoint",
            Some(Op::Alarm(_)) => "alarm",
            Some(Op::ModuleDeploy(_)) => "module_deploy",
            Some(Op::ModuleInvoke(_)) => "module_invoke",
            Some(Op::ModuleDelete(_)) => "module_delete",
            Some(Op::Batch(b)) => {
                return write!(f, "batch[{}]@{}", b.commands.len(), self.0.leader_time_ms);
            }
            None => "unknown",
        };
        write!(f, "{kind}@{}", self.0.leader_time_ms)
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_urls.join(","))
    }
}

/// Serde carries protobuf payloads as one opaque byte string inside openraft's own messages.
macro_rules! serde_as_protobuf {
    ($wrapper:ident) => {
        impl Serialize for $wrapper {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(&self.0.encode_to_vec())
            }
        }

        impl<'de> Deserialize<'de> for $wrapper {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let bytes = deserializer.deserialize_byte_buf(BytesVisitor)?;
                Message::decode(bytes.as_slice())
                    .map($wrapper)
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_as_protobuf!(Command);
serde_as_protobuf!(Reply);

struct BytesVisitor;

impl<'de> serde::de::Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a protobuf-encoded byte string")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        Ok(v)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(b) = seq.next_element()? {
            out.push(b);
        }
        Ok(out)
    }
}

/// Encoding of openraft's own messages and log entries on disk and between members.
pub mod codec {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(value)
    }

    pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}
