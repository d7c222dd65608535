//! The key layout etcd's lock and election recipes share, and the KV requests built on it.
//!
//! A participant in recipe `name` owns the key `<name>/<lease id in lowercase hex>`, attached to
//! its lease; the participant whose key has the lowest create_revision under `<name>/` holds
//! the lock (or leads). Client-side recipes (Go `concurrency`, `etcdctl lock`, python-etcd3)
//! use the same layout, so they and these services queue together.

use baton_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use baton_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use baton_proto::etcdserverpb::request_op::Request as Op;
use baton_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

/// `<name>/`: every participant's key starts with it.
pub(crate) fn prefix(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// `<name>/<lease hex>`, formatted as Go's `%x` formats a signed lease id.
pub(crate) fn participant_key(name: &[u8], lease: i64) -> Vec<u8> {
    let hex = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    let mut key = prefix(name);
    key.extend_from_slice(hex.as_bytes());
    key
}

/// The end of the range of keys starting with `prefix` (etcd's `WithPrefix`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the keyspace.
    vec![0]
}

/// The key under `prefix` with the lowest create_revision: the holder.
pub(crate) fn first_created(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        ..Default::default()
    }
}

/// The key under `prefix` created last before `create_revision`: the one to wait for.
pub(crate) fn created_just_before(prefix: &[u8], create_revision: i64) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: SortOrder::Descend as i32,
        sort_target: SortTarget::Create as i32,
        max_create_revision: create_revision - 1,
        ..Default::default()
    }
}

pub(crate) fn get(key: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

fn created_at(key: &[u8], create_revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        target_union: Some(TargetUnion::CreateRevision(create_revision)),
        range_end: Vec::new(),
    }
}

fn op(request: Op) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

fn put(key: &[u8], value: &[u8], lease: i64) -> Op {
    Op::RequestPut(PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        lease,
        ..Default::default()
    })
}

/// Creates the participant's key if absent (else reads it back, so a lease that already
/// queued reuses its place), and in the same revision reads the holder.
pub(crate) fn join(prefix: &[u8], key: &[u8], value: &[u8], lease: i64) -> TxnRequest {
    TxnRequest {
        compare: vec![created_at(key, 0)],
        success: vec![
            op(put(key, value, lease)),
            op(Op::RequestRange(first_created(prefix))),
        ],
        failure: vec![
            op(Op::RequestRange(get(key))),
            op(Op::RequestRange(first_created(prefix))),
        ],
    }
}

/// Replaces the value of `key` only while it is the incarnation created at `create_revision`.
pub(crate) fn put_if_created_at(
    key: &[u8],
    create_revision: i64,
    value: &[u8],
    lease: i64,
) -> TxnRequest {
    TxnRequest {
        compare: vec![created_at(key, create_revision)],
        success: vec![op(put(key, value, lease))],
        failure: Vec::new(),
    }
}

/// Deletes `key` only while it is the incarnation created at `create_revision`, so a stale
/// holder can never delete a newer participant's key.
pub(crate) fn delete_if_created_at(key: &[u8], create_revision: i64) -> TxnRequest {
    TxnRequest {
        compare: vec![created_at(key, create_revision)],
        success: vec![op(Op::RequestDeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        }))],
        failure: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_go_formatting() {
        assert_eq!(
            participant_key(b"lk", 0x694d7a5b3c1f2e0d),
            b"lk/694d7a5b3c1f2e0d"
        );
        assert_eq!(participant_key(b"lk", 10), b"lk/a");
        assert_eq!(participant_key(b"", -255), b"/-ff");
    }

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }
}
