//! Small accessors that keep test assertions short.

use etcd_client::{GetResponse, KeyValue, ResponseHeader};

/// The header's revision; 0 when the header is missing (which no valid server sends).
pub fn rev(header: Option<&ResponseHeader>) -> i64 {
    header.map_or(0, ResponseHeader::revision)
}

/// Keys of a range response, as UTF-8 text, in response order.
pub fn keys(response: &GetResponse) -> Vec<String> {
    kv_keys(response.kvs())
}

pub fn kv_keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

/// (key, value, create_revision, mod_revision, version, lease) of one key-value.
pub type KvTuple = (String, String, i64, i64, i64, i64);

pub fn kv_tuple(kv: &KeyValue) -> KvTuple {
    (
        String::from_utf8_lossy(kv.key()).into_owned(),
        String::from_utf8_lossy(kv.value()).into_owned(),
        kv.create_revision(),
        kv.mod_revision(),
        kv.version(),
        kv.lease(),
    )
}

pub fn kv_tuples(kvs: &[KeyValue]) -> Vec<KvTuple> {
    kvs.iter().map(kv_tuple).collect()
}
