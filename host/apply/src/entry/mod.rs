//! The replicated log's format: openraft's type configuration, the command every member applies
//! ([`Command`]), the outcome its proposer receives ([`Reply`]), and what the log records about
//! each member ([`Member`]).
//!
//! Commands and replies are protobuf messages (`batonpb.LogCommand` / `batonpb.LogReply`), so an
//! entry written by one Baton version stays readable by the next: fields can be added without
//! breaking old log entries or snapshots.

use std::fmt;
use std::sync::{Arc, OnceLock};

use prost::Message;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use baton_proto::batonpb::{LogCommand, LogReply};

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

/// A log entry's application payload. An entry is cloned for every follower's stream and for
/// the state machine, so the command is shared, not copied (a batch holds dozens of requests),
/// and encoded at most once: the log writer and each follower's stream send the same bytes, and
/// a follower keeps the bytes it received for its own log.
#[derive(Clone, Debug, Default)]
pub struct Command {
    command: Arc<LogCommand>,
    encoded: Arc<OnceLock<Vec<u8>>>,
    /// Where the proposing leader's state machine may answer a batch's commands one by one, as
    /// each is applied. Never encoded: a follower, a replay or an entry read back from disk has
    /// none, and its commands are answered with the entry's reply.
    early: Option<Arc<dyn EarlyReplies>>,
}

/// Receives the replies of a proposed batch's commands as the leader applies them, before the
/// entry's changes commit to the state database (see `StateMachine::apply` for what readers
/// then wait for).
pub trait EarlyReplies: Send + Sync + fmt::Debug {
    /// The reply of the batch's command at `position`, in the entry at `log_index`.
    fn reply(&self, log_index: u64, position: usize, reply: &LogReply);
}

impl Command {
    pub fn new(command: LogCommand) -> Self {
        Self {
            command: Arc::new(command),
            encoded: Arc::default(),
            early: None,
        }
    }

    /// A batch whose commands' replies go to `early` as they are applied on this member.
    pub fn with_early_replies(command: LogCommand, early: Arc<dyn EarlyReplies>) -> Self {
        Self {
            early: Some(early),
            ..Self::new(command)
        }
    }

    pub(crate) fn get(&self) -> &LogCommand {
        &self.command
    }

    pub(crate) fn early_replies(&self) -> Option<&dyn EarlyReplies> {
        self.early.as_deref()
    }

    /// The length of the protobuf encoding (made on first use).
    pub(crate) fn encoded_len(&self) -> usize {
        self.encoded().len()
    }

    /// The protobuf encoding, made on first use.
    fn encoded(&self) -> &[u8] {
        self.encoded.get_or_init(|| self.command.encode_to_vec())
    }
}

impl PartialEq for Command {
    fn eq(&self, other: &Self) -> bool {
        self.command == other.command
    }
}

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
        use baton_proto::batonpb::log_command::Op;
        let kind = match &self.command.op {
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
            Some(Op::ModuleAbandon(_)) => "module_abandon",
            Some(Op::Batch(b)) => {
                let time = self.command.leader_time_ms;
                return write!(f, "batch[{}]@{time}", b.commands.len());
            }
            None => "unknown",
        };
        write!(f, "{kind}@{}", self.command.leader_time_ms)
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.peer_urls.join(","))
    }
}

// Serde carries protobuf payloads as one opaque byte string inside openraft's own messages.

impl Serialize for Command {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.encoded())
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = deserializer.deserialize_byte_buf(BytesVisitor)?;
        let command = LogCommand::decode(bytes.as_slice()).map_err(serde::de::Error::custom)?;
        Ok(Self {
            command: Arc::new(command),
            encoded: Arc::new(OnceLock::from(bytes)),
            early: None,
        })
    }
}

impl Serialize for Reply {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0.encode_to_vec())
    }
}

impl<'de> Deserialize<'de> for Reply {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = deserializer.deserialize_byte_buf(BytesVisitor)?;
        LogReply::decode(bytes.as_slice())
            .map(Reply)
            .map_err(serde::de::Error::custom)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use baton_proto::batonpb::log_command::Op;
    use baton_proto::etcdserverpb::PutRequest;

    fn put(key: &str) -> LogCommand {
        LogCommand {
            leader_time_ms: 7,
            op: Some(Op::Put(PutRequest {
                key: key.as_bytes().to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn a_command_round_trips_through_the_log_codec() {
        let sent = Command::new(put("k"));
        let bytes = codec::encode(&sent).unwrap();
        let received: Command = codec::decode(&bytes).unwrap();
        assert_eq!(received, sent);
        assert_eq!(received.get(), &put("k"));
        // Clones share the command, and a clone's encoding is the original's.
        let clone = received.clone();
        assert!(Arc::ptr_eq(&clone.command, &received.command));
        assert_eq!(codec::encode(&clone).unwrap(), bytes);
    }

    #[test]
    fn a_follower_logs_the_bytes_it_received() {
        // A field this version does not know (number 99, varint 1) survives in the encoding a
        // follower writes to its own log, although decoding drops it.
        let mut protobuf = put("k").encode_to_vec();
        protobuf.extend_from_slice(&[0x98, 0x06, 0x01]);
        let framed = codec::encode(&serde_bytes::Bytes::new(&protobuf)).unwrap();
        let received: Command = codec::decode(&framed).unwrap();
        assert_eq!(received.get(), &put("k"));
        assert_eq!(codec::encode(&received).unwrap(), framed);
    }
}
