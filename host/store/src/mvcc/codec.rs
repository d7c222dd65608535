//! Byte layouts of the MVCC tables' values.

use prost::Message;

use crate::mvcc::error::StorageError;
use crate::storage::schema::{REV_KIND_PUT, REV_KIND_TOMBSTONE};
use baton_proto::mvccpb::{Event, KeyValue, event::EventType};

/// A [`crate::storage::schema::KV_HISTORY`] value: kind byte, then the KeyValue. The same
/// bytes minus the kind byte are the [`crate::storage::schema::KV_LATEST`] value of a put,
/// so a put encodes its KeyValue once.
pub(crate) fn encode_history(kind: u8, kv: &KeyValue) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1 + kv.encoded_len());
    buf.push(kind);
    // Encoding into a Vec only fails for lack of capacity, which Vec grows.
    kv.encode(&mut buf).ok();
    buf
}

pub(crate) fn decode_kv(bytes: &[u8]) -> Result<KeyValue, StorageError> {
    KeyValue::decode(bytes).map_err(|e| StorageError::Corrupt(format!("stored KeyValue: {e}")))
}

/// Splits a history value into its kind and KeyValue.
pub(crate) fn decode_history(bytes: &[u8]) -> Result<(u8, KeyValue), StorageError> {
    match bytes.split_first() {
        Some((&kind, rest)) if kind == REV_KIND_PUT || kind == REV_KIND_TOMBSTONE => {
            Ok((kind, decode_kv(rest)?))
        }
        _ => Err(StorageError::Corrupt("history record kind".into())),
    }
}

/// The watch event a history record stands for (no prev_kv: that is the key at mod_revision - 1).
pub(crate) fn history_event(kind: u8, kv: KeyValue) -> Event {
    let r#type = if kind == REV_KIND_TOMBSTONE {
        EventType::Delete
    } else {
        EventType::Put
    };
    Event {
        r#type: r#type as i32,
        kv: Some(kv),
        prev_kv: None,
    }
}

pub(crate) fn encode_i64(v: i64) -> [u8; 8] {
    v.to_be_bytes()
}

pub(crate) fn decode_i64(bytes: &[u8]) -> Result<i64, StorageError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StorageError::Corrupt("stored revision width".into()))?;
    Ok(i64::from_be_bytes(arr))
}
