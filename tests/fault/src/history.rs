//! The record of a run: every client operation with its invocation and completion instants
//! and what the client learned. Pure data; the checker and validators read it, the workload
//! writes it. Times are nanoseconds since the run's start on one monotonic clock, so calls and
//! returns of different clients compare directly.

use serde::{Deserialize, Serialize};

/// A value as the model sees it: every put writes a value no other put writes, so a read names
/// exactly one write (or none). Encoded on the wire as its decimal text.
pub type Value = u64;

/// What a client asked for, on one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    Put {
        value: Value,
    },
    Get,
    /// Txn: if the key's value is `expected` then put `new`.
    Cas {
        expected: Value,
        new: Value,
    },
    /// The `counter` module's `add` by one on this key.
    Incr,
    /// A read of a counter's value (a read-only `counter` call or a KV get of its key).
    ReadCounter,
}

impl Op {
    /// Whether the operation is on a counter (checked with the counter model, not the KV one).
    pub fn is_counter(&self) -> bool {
        matches!(self, Op::Incr | Op::ReadCounter)
    }
}

/// What a completed operation returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// A put was acknowledged.
    Done,
    /// A get saw this value (`None`: the key was absent). A value that no put wrote is recorded
    /// as `Some(FOREIGN_VALUE)`, which no model state ever holds.
    Read(Option<Value>),
    /// Whether the CAS's compare held (and so its put happened).
    Swapped(bool),
    /// The counter's value: after an `Incr`, the total it returned; for a `ReadCounter`, what it
    /// read (0 while the key does not exist).
    Count(u64),
}

/// A value no put ever writes: what the history records for a read of unparseable bytes.
pub const FOREIGN_VALUE: Value = Value::MAX;
/// Stands, in the checker, for every written value that no operation ever compares with or
/// reads: such values are indistinguishable, and merging them keeps the search small.
pub const UNOBSERVED_VALUE: Value = Value::MAX - 1;

/// How an operation ended, from the client's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Ok(Reply),
    /// Definitely had no effect (e.g. refused before it was sent, or a failed read).
    Failed,
    /// Sent, but no answer came (timeout, connection lost): it may or may not have taken effect,
    /// at any instant after its invocation. The checker gives it an infinite completion time.
    Unknown,
}

/// One operation of one client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub client: u32,
    pub key: String,
    pub op: Op,
    pub call_ns: u64,
    /// `None` for operations whose outcome is `Unknown`.
    pub return_ns: Option<u64>,
    pub outcome: Outcome,
}

impl Entry {
    /// The completion instant the checker uses: infinity for an operation of unknown outcome.
    pub fn return_ns_or_max(&self) -> u64 {
        match self.outcome {
            Outcome::Unknown => u64::MAX,
            _ => self.return_ns.unwrap_or(u64::MAX),
        }
    }
}

/// Encodes a value as the bytes a client puts.
pub fn encode_value(value: Value) -> String {
    value.to_string()
}

/// Decodes bytes a client read back; bytes no put wrote become `FOREIGN_VALUE`.
pub fn decode_value(bytes: &[u8]) -> Value {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .filter(|value| *value != FOREIGN_VALUE && *value != UNOBSERVED_VALUE)
        .unwrap_or(FOREIGN_VALUE)
}

/// Decodes a counter's stored value (a decimal string); `None` for anything else.
pub fn decode_count(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// The unique value of a client's `n`th put: the client id in the high bits keeps values of
/// different clients apart without coordination.
pub fn unique_value(client: u32, n: u32) -> Value {
    (u64::from(client) << 32) | u64::from(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_garbage_is_foreign() {
        let value = unique_value(3, 17);
        assert_eq!(decode_value(encode_value(value).as_bytes()), value);
        assert_eq!(decode_value(b"not a number"), FOREIGN_VALUE);
        assert_eq!(decode_value(u64::MAX.to_string().as_bytes()), FOREIGN_VALUE);
        assert_ne!(unique_value(1, 0), unique_value(0, 1));
    }
}
