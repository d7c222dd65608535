//! Wire-compatibility checks: the expected bytes are written out by hand from
//! etcd's field numbers and protobuf wire types (tag = number << 3 | type), so
//! a renumbered or retyped field fails here.

use prost::Message;

use super::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest, WatchResponse, compare, range_request, request_op,
    watch_create_request, watch_request,
};
use super::mvccpb::event::EventType;

#[test]
fn put_request_matches_etcd_wire_format() {
    let put = PutRequest {
        key: b"foo".to_vec(),
        value: b"bar".to_vec(),
        lease: 300,
        prev_kv: true,
        ignore_value: true,
        ignore_lease: true,
    };
    let expected = [
        0x0a, 3, b'f', b'o', b'o', // 1 key: bytes
        0x12, 3, b'b', b'a', b'r', // 2 value: bytes
        0x18, 0xac, 0x02, // 3 lease: varint 300
        0x20, 1, // 4 prev_kv
        0x28, 1, // 5 ignore_value
        0x30, 1, // 6 ignore_lease
    ];
    assert_eq!(put.encode_to_vec(), expected);
    assert_eq!(PutRequest::decode(&expected[..]).unwrap(), put);
}

#[test]
fn range_request_with_every_field_matches_etcd_wire_format() {
    let range = RangeRequest {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        limit: 1,
        revision: 2,
        sort_order: range_request::SortOrder::Descend as i32,
        sort_target: range_request::SortTarget::Value as i32,
        serializable: true,
        keys_only: true,
        count_only: true,
        min_mod_revision: 3,
        max_mod_revision: 4,
        min_create_revision: 5,
        max_create_revision: 6,
    };
    let expected = [
        0x0a, 1, b'a', // 1 key
        0x12, 1, b'b', // 2 range_end
        0x18, 1, // 3 limit
        0x20, 2, // 4 revision
        0x28, 2, // 5 sort_order = DESCEND
        0x30, 4, // 6 sort_target = VALUE
        0x38, 1, // 7 serializable
        0x40, 1, // 8 keys_only
        0x48, 1, // 9 count_only
        0x50, 3, // 10 min_mod_revision
        0x58, 4, // 11 max_mod_revision
        0x60, 5, // 12 min_create_revision
        0x68, 6, // 13 max_create_revision
    ];
    assert_eq!(range.encode_to_vec(), expected);
}

#[test]
fn txn_request_with_compare_and_nested_ops_matches_etcd_wire_format() {
    let txn = TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Greater as i32,
            target: compare::CompareTarget::Mod as i32,
            key: b"k".to_vec(),
            range_end: b"z".to_vec(),
            target_union: Some(compare::TargetUnion::ModRevision(5)),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![
            RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: b"k".to_vec(),
                    ..Default::default()
                })),
            },
            RequestOp {
                request: Some(request_op::Request::RequestTxn(TxnRequest::default())),
            },
            RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(
                    DeleteRangeRequest {
                        key: b"d".to_vec(),
                        prev_kv: true,
                        ..Default::default()
                    },
                )),
            },
        ],
    };
    let expected = [
        // 1 compare, 13 bytes
        0x0a, 13, //
        0x08, 1, // result = GREATER
        0x10, 2, // target = MOD
        0x1a, 1, b'k', // key
        0x30, 5, // oneof mod_revision (field 6)
        0x82, 0x04, 1, b'z', // range_end: field 64 → tag 514, two-byte varint
        // 2 success: RequestOp{request_put (2)}
        0x12, 8, 0x12, 6, 0x0a, 1, b'k', 0x12, 1, b'v', //
        // 3 failure: RequestOp{request_range (1)}
        0x1a, 5, 0x0a, 3, 0x0a, 1, b'k', //
        // 3 failure: RequestOp{request_txn (4)} with an empty TxnRequest
        0x1a, 2, 0x22, 0, //
        // 3 failure: RequestOp{request_delete_range (3){key, prev_kv (3)}}
        0x1a, 7, 0x1a, 5, 0x0a, 1, b'd', 0x18, 1,
    ];
    assert_eq!(txn.encode_to_vec(), expected);
    assert_eq!(TxnRequest::decode(&expected[..]).unwrap(), txn);
}

#[test]
fn watch_create_request_matches_etcd_wire_format() {
    let watch = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
                start_revision: 10,
                progress_notify: true,
                filters: vec![watch_create_request::FilterType::Nodelete as i32],
                prev_kv: true,
                watch_id: 7,
                fragment: true,
            },
        )),
    };
    let expected = [
        0x0a, 19, // 1 create_request
        0x0a, 1, b'a', // 1 key
        0x12, 1, b'b', // 2 range_end
        0x18, 10, // 3 start_revision
        0x20, 1, // 4 progress_notify
        0x2a, 1, 1, // 5 filters, packed: [NODELETE]
        0x30, 1, // 6 prev_kv
        0x38, 7, // 7 watch_id
        0x40, 1, // 8 fragment
    ];
    assert_eq!(watch.encode_to_vec(), expected);

    // etcd's Go client may send the filters unpacked; both forms must decode.
    let unpacked = [0x0a, 7, 0x0a, 1, b'a', 0x28, 1, 0x28, 0];
    let decoded = WatchRequest::decode(&unpacked[..]).unwrap();
    let Some(watch_request::RequestUnion::CreateRequest(create)) = decoded.request_union else {
        panic!("expected a create request, got {decoded:?}");
    };
    assert_eq!(create.key, b"a");
    assert_eq!(create.filters, [1, 0]);
}

#[test]
fn watch_response_decodes_from_hand_written_bytes() {
    let bytes = [
        0x0a, 2, 0x18, 5, // 1 header{revision (3) = 5}
        0x10, 3, // 2 watch_id = 3
        0x18, 1, // 3 created
        0x5a, 9, // 11 events: one Event, 9 bytes
        0x08, 1, // type = DELETE
        0x12, 5, 0x0a, 1, b'a', 0x18, 5, // kv{key "a", mod_revision (3) = 5}
    ];
    let response = WatchResponse::decode(&bytes[..]).unwrap();
    assert_eq!(response.header.map(|h| h.revision), Some(5));
    assert_eq!(response.watch_id, 3);
    assert!(response.created);
    let [event] = response.events.as_slice() else {
        panic!("expected one event, got {:?}", response.events);
    };
    assert_eq!(event.r#type(), EventType::Delete);
    let kv = event.kv.as_ref().expect("event carries a kv");
    assert_eq!((kv.key.as_slice(), kv.mod_revision), (&b"a"[..], 5));
}

/// Just enough of descriptor.proto to read file, package, service and method names.
#[derive(Clone, PartialEq, prost::Message)]
struct FileDescriptorSet {
    #[prost(message, repeated, tag = "1")]
    file: Vec<FileDescriptor>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FileDescriptor {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    package: String,
    #[prost(message, repeated, tag = "6")]
    service: Vec<ServiceDescriptor>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ServiceDescriptor {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "2")]
    method: Vec<MethodDescriptor>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MethodDescriptor {
    #[prost(string, tag = "1")]
    name: String,
}

/// gRPC paths (`/package.Service/Method`) named in the embedded descriptor set.
fn grpc_paths() -> Vec<String> {
    let fds = FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
    let mut paths = Vec::new();
    for file in &fds.file {
        for service in &file.service {
            for method in &service.method {
                paths.push(format!(
                    "/{}.{}/{}",
                    file.package, service.name, method.name
                ));
            }
        }
    }
    paths
}

#[test]
fn descriptor_set_carries_etcd_grpc_paths() {
    let paths = grpc_paths();
    for expected in [
        "/etcdserverpb.KV/Range",
        "/etcdserverpb.KV/Txn",
        "/etcdserverpb.Watch/Watch",
        "/etcdserverpb.Lease/LeaseKeepAlive",
        "/etcdserverpb.Lease/LeaseLeases",
        "/etcdserverpb.Cluster/MemberPromote",
        "/etcdserverpb.Maintenance/HashKV",
        "/etcdserverpb.Maintenance/Downgrade",
        "/etcdserverpb.Auth/RoleRevokePermission",
        "/v3lockpb.Lock/Unlock",
        "/v3electionpb.Election/Observe",
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "{expected} missing from {paths:?}"
        );
    }
    // KV 5 + Watch 1 + Lease 5 + Cluster 5 + Maintenance 8 + Auth 17 + Lock 2 + Election 5.
    let baton_prefixes = ["/batonpb.", "/baton.v1."];
    let etcd_paths = paths
        .iter()
        .filter(|p| !baton_prefixes.iter().any(|b| p.starts_with(b)))
        .count();
    assert_eq!(etcd_paths, 48, "{paths:?}");
}
