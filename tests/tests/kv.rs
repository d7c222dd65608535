//! KV service semantics, asserted exactly as etcd 3.4 behaves.

use anyhow::Result;
use baton_e2e::inspect::{keys, kv_tuple, kv_tuples, rev};
use baton_e2e::{Backend, Cluster, assert_grpc_error, backend_test};
use etcd_client::{
    Client, CompactionOptions, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp,
};
use tonic::Code;

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";

/// A freshly bootstrapped cluster is at revision 1: the first write creates revision 2.
const FIRST_WRITE_REV: i64 = 2;

async fn single(backend: Backend) -> Result<(Cluster, Client)> {
    let cluster = Cluster::start(backend, 1).await?;
    let client = cluster.client().await?;
    Ok((cluster, client))
}

fn s(text: &str) -> String {
    text.to_owned()
}

async fn put_get_delete_revisions(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    let empty = c.get("k", None).await?;
    assert_eq!(rev(empty.header()), FIRST_WRITE_REV - 1);
    assert!(empty.kvs().is_empty());
    assert_eq!((empty.count(), empty.more()), (0, false));

    let put = c.put("k", "v1", None).await?;
    assert_eq!(rev(put.header()), 2);
    assert!(put.prev_key().is_none());
    let get = c.get("k", None).await?;
    assert_eq!(rev(get.header()), 2);
    assert_eq!(kv_tuples(get.kvs()), [(s("k"), s("v1"), 2, 2, 1, 0)]);
    assert_eq!((get.count(), get.more()), (1, false));

    assert_eq!(rev(c.put("k", "v2", None).await?.header()), 3);
    let get = c.get("k", None).await?;
    assert_eq!(kv_tuples(get.kvs()), [(s("k"), s("v2"), 2, 3, 2, 0)]);

    let del = c.delete("k", None).await?;
    assert_eq!((rev(del.header()), del.deleted()), (4, 1));
    assert!(del.prev_kvs().is_empty(), "prev_kvs only when asked");
    let get = c.get("k", None).await?;
    assert_eq!((rev(get.header()), get.count(), get.kvs().len()), (4, 0, 0));

    // Deleting nothing is not a write: the revision stays.
    let del = c.delete("k", None).await?;
    assert_eq!((rev(del.header()), del.deleted()), (4, 0));

    // A re-created key starts a new generation: version 1, new create_revision.
    assert_eq!(rev(c.put("k", "v3", None).await?.header()), 5);
    let get = c.get("k", None).await?;
    assert_eq!(kv_tuples(get.kvs()), [(s("k"), s("v3"), 5, 5, 1, 0)]);

    // Empty values are ordinary values.
    c.put("empty", "", None).await?;
    let get = c.get("empty", None).await?;
    assert_eq!(kv_tuples(get.kvs()), [(s("empty"), s(""), 6, 6, 1, 0)]);
    Ok(())
}

async fn prev_kv_on_put_and_delete(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    let with_prev = || Some(PutOptions::new().with_prev_key());
    let first = c.put("p/a", "1", with_prev()).await?;
    assert!(
        first.prev_key().is_none(),
        "no previous value for a new key"
    );
    let second = c.put("p/a", "2", with_prev()).await?;
    assert_eq!(
        second.prev_key().map(kv_tuple),
        Some((s("p/a"), s("1"), 2, 2, 1, 0))
    );
    let third = c.put("p/a", "3", None).await?;
    assert!(third.prev_key().is_none(), "prev_kv only when asked");

    c.put("p/b", "b", None).await?;
    c.put("q", "outside", None).await?;
    let del = c
        .delete(
            "p/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await?;
    assert_eq!((rev(del.header()), del.deleted()), (7, 2));
    assert_eq!(
        kv_tuples(del.prev_kvs()),
        [
            (s("p/a"), s("3"), 2, 4, 3, 0),
            (s("p/b"), s("b"), 5, 5, 1, 0)
        ]
    );
    let none = c
        .delete(
            "p/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await?;
    assert_eq!(
        (rev(none.header()), none.deleted(), none.prev_kvs().len()),
        (7, 0, 0)
    );
    Ok(())
}

async fn put_ignore_value_and_ignore_lease(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    let ignore_value = || PutOptions::new().with_ignore_value();
    c.put("iv", "orig", None).await?;
    let put = c
        .put("iv", "", Some(ignore_value().with_prev_key()))
        .await?;
    assert_eq!(
        put.prev_key().map(kv_tuple),
        Some((s("iv"), s("orig"), 2, 2, 1, 0))
    );
    let get = c.get("iv", None).await?;
    assert_eq!(
        kv_tuples(get.kvs()),
        [(s("iv"), s("orig"), 2, 3, 2, 0)],
        "value kept, version bumped"
    );

    let lease = c.lease_grant(600, None).await?.id();
    c.put("il", "v1", Some(PutOptions::new().with_lease(lease)))
        .await?;
    c.put("il", "v2", Some(PutOptions::new().with_ignore_lease()))
        .await?;
    let get = c.get("il", None).await?;
    assert_eq!(
        kv_tuples(get.kvs()),
        [(s("il"), s("v2"), 4, 5, 2, lease)],
        "lease kept"
    );
    c.put(
        "il",
        "",
        Some(PutOptions::new().with_ignore_lease().with_ignore_value()),
    )
    .await?;
    let get = c.get("il", None).await?;
    assert_eq!(kv_tuples(get.kvs()), [(s("il"), s("v2"), 4, 6, 3, lease)]);

    // Without ignore_lease, a put drops the key's lease.
    c.put("il", "v3", None).await?;
    assert_eq!(c.get("il", None).await?.kvs()[0].lease(), 0);
    Ok(())
}

async fn range_prefix_from_key_and_explicit_end(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    for key in ["b", "a", "abc", "ab", "c", "a\u{7f}"] {
        c.put(key, key, None).await?;
    }
    let prefix = c.get("a", Some(GetOptions::new().with_prefix())).await?;
    assert_eq!(
        keys(&prefix),
        ["a", "ab", "abc", "a\u{7f}"],
        "plain byte order"
    );
    assert_eq!(prefix.count(), 4);
    let from = c.get("ab", Some(GetOptions::new().with_from_key())).await?;
    assert_eq!(keys(&from), ["ab", "abc", "a\u{7f}", "b", "c"]);
    let between = c.get("ab", Some(GetOptions::new().with_range("b"))).await?;
    assert_eq!(
        keys(&between),
        ["ab", "abc", "a\u{7f}"],
        "range_end is exclusive"
    );
    let all = c.get("", Some(GetOptions::new().with_all_keys())).await?;
    assert_eq!(keys(&all), ["a", "ab", "abc", "a\u{7f}", "b", "c"]);
    let single_key = c.get("ab", None).await?;
    assert_eq!(keys(&single_key), ["ab"], "no range_end: exactly one key");
    let inverted = c.get("c", Some(GetOptions::new().with_range("a"))).await?;
    assert_eq!(
        (inverted.kvs().len(), inverted.count()),
        (0, 0),
        "range_end < key is empty"
    );
    let same = c.get("b", Some(GetOptions::new().with_range("b"))).await?;
    assert_eq!(
        (same.kvs().len(), same.count()),
        (0, 0),
        "range_end == key is empty"
    );
    let deleted = c
        .delete("ab", Some(DeleteOptions::new().with_from_key()))
        .await?;
    assert_eq!(deleted.deleted(), 5);
    let rest = c.get("", Some(GetOptions::new().with_all_keys())).await?;
    assert_eq!(keys(&rest), ["a"]);
    Ok(())
}

async fn range_limit_more_count(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    for i in 0..5 {
        c.put(format!("l/{i}"), "v", None).await?;
    }
    let prefix = |limit| Some(GetOptions::new().with_prefix().with_limit(limit));
    let two = c.get("l/", prefix(2)).await?;
    assert_eq!(keys(&two), ["l/0", "l/1"]);
    assert_eq!(
        (two.count(), two.more()),
        (5, true),
        "count ignores the limit"
    );
    let exact = c.get("l/", prefix(5)).await?;
    assert_eq!(
        (exact.kvs().len(), exact.count(), exact.more()),
        (5, 5, false)
    );
    let over = c.get("l/", prefix(50)).await?;
    assert_eq!((over.kvs().len(), over.more()), (5, false));
    let unlimited = c.get("l/", prefix(0)).await?;
    assert_eq!((unlimited.kvs().len(), unlimited.more()), (5, false));
    let negative = c.get("l/", prefix(-1)).await?;
    assert_eq!(
        (negative.kvs().len(), negative.more()),
        (5, false),
        "negative limit = no limit"
    );
    Ok(())
}

/// Writes keys whose five sort targets give five different orders (no ties).
async fn write_sort_fixture(c: &mut Client) -> Result<()> {
    let writes = [
        ("k3", "x"),
        ("k1", "x"),
        ("k4", "x"),
        ("k2", "d"),
        ("k3", "a"),
        ("k4", "x"),
        ("k4", "c"),
        ("k1", "x"),
        ("k1", "x"),
        ("k1", "b"),
    ];
    for (key, value) in writes {
        c.put(key, value, None).await?;
    }
    // Final state: k1 create 3 mod 11 ver 4 "b"; k2 5/5/1 "d"; k3 2/6/2 "a"; k4 4/8/3 "c".
    Ok(())
}

async fn range_sort_targets_and_orders(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    write_sort_fixture(&mut c).await?;
    let ascending = [
        (SortTarget::Key, ["k1", "k2", "k3", "k4"]),
        (SortTarget::Version, ["k2", "k3", "k4", "k1"]),
        (SortTarget::Create, ["k3", "k1", "k4", "k2"]),
        (SortTarget::Mod, ["k2", "k3", "k4", "k1"]),
        (SortTarget::Value, ["k3", "k1", "k4", "k2"]),
    ];
    for (target, expected) in ascending {
        let mut descending = expected;
        descending.reverse();
        // SortOrder::None with a non-key target sorts ascending, like Ascend.
        for (order, want) in [
            (SortOrder::None, expected),
            (SortOrder::Ascend, expected),
            (SortOrder::Descend, descending),
        ] {
            let options = GetOptions::new().with_prefix().with_sort(target, order);
            let got = c.get("k", Some(options)).await?;
            assert_eq!(keys(&got), want, "sort {target:?} {order:?}");
            assert_eq!((got.count(), got.more()), (4, false));
        }
    }
    // The limit applies after sorting, over the whole range.
    let options = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Mod, SortOrder::Descend)
        .with_limit(2);
    let top = c.get("k", Some(options)).await?;
    assert_eq!(keys(&top), ["k1", "k4"]);
    assert_eq!((top.count(), top.more()), (4, true));
    Ok(())
}

async fn range_keys_only_and_count_only(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    write_sort_fixture(&mut c).await?;
    let keys_only = c
        .get("k", Some(GetOptions::new().with_prefix().with_keys_only()))
        .await?;
    assert_eq!(
        kv_tuples(keys_only.kvs()),
        [
            (s("k1"), s(""), 3, 11, 4, 0),
            (s("k2"), s(""), 5, 5, 1, 0),
            (s("k3"), s(""), 2, 6, 2, 0),
            (s("k4"), s(""), 4, 8, 3, 0),
        ],
        "keys_only drops values, keeps metadata"
    );
    let limited = GetOptions::new()
        .with_prefix()
        .with_keys_only()
        .with_limit(1);
    let limited = c.get("k", Some(limited)).await?;
    assert_eq!(
        (keys(&limited), limited.count(), limited.more()),
        (vec![s("k1")], 4, true)
    );

    let count_only = c
        .get("k", Some(GetOptions::new().with_prefix().with_count_only()))
        .await?;
    assert_eq!(
        (
            count_only.kvs().len(),
            count_only.count(),
            count_only.more()
        ),
        (0, 4, false)
    );
    let limited = GetOptions::new()
        .with_prefix()
        .with_count_only()
        .with_limit(1);
    let limited = c.get("k", Some(limited)).await?;
    assert_eq!(
        (limited.kvs().len(), limited.count(), limited.more()),
        (0, 4, false),
        "count_only never sets more"
    );
    Ok(())
}

async fn range_revision_filters(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    write_sort_fixture(&mut c).await?;
    let cases = [
        (
            GetOptions::new().with_min_mod_revision(6),
            vec!["k1", "k3", "k4"],
        ),
        (GetOptions::new().with_max_mod_revision(6), vec!["k2", "k3"]),
        (
            GetOptions::new().with_min_create_revision(4),
            vec!["k2", "k4"],
        ),
        (
            GetOptions::new().with_max_create_revision(3),
            vec!["k1", "k3"],
        ),
        (
            GetOptions::new()
                .with_min_mod_revision(6)
                .with_max_mod_revision(8),
            vec!["k3", "k4"],
        ),
        (GetOptions::new().with_min_create_revision(100), vec![]),
    ];
    for (options, want) in cases {
        let got = c.get("k", Some(options.clone().with_prefix())).await?;
        assert_eq!(keys(&got), want, "{options:?}");
        // The count is taken before the filters apply.
        assert_eq!((got.count(), got.more()), (4, false), "{options:?}");
    }
    let options = GetOptions::new()
        .with_prefix()
        .with_min_mod_revision(6)
        .with_limit(1);
    let limited = c.get("k", Some(options)).await?;
    assert_eq!(
        (keys(&limited), limited.count(), limited.more()),
        (vec![s("k1")], 4, true)
    );
    Ok(())
}

async fn historical_reads(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    let r1 = rev(c.put("h", "1", None).await?.header());
    let r2 = rev(c.put("h", "2", None).await?.header());
    let r3 = rev(c.delete("h", None).await?.header());
    let r4 = rev(c.put("h", "3", None).await?.header());
    c.put("other", "x", None).await?;
    let current = r4 + 1;
    let at = |revision| Some(GetOptions::new().with_revision(revision));

    let got = c.get("h", at(r1)).await?;
    assert_eq!(kv_tuples(got.kvs()), [(s("h"), s("1"), r1, r1, 1, 0)]);
    assert_eq!(
        rev(got.header()),
        current,
        "header carries the current revision"
    );
    let got = c.get("h", at(r2)).await?;
    assert_eq!(kv_tuples(got.kvs()), [(s("h"), s("2"), r1, r2, 2, 0)]);
    let got = c.get("h", at(r3)).await?;
    assert_eq!((got.kvs().len(), got.count()), (0, 0));
    let got = c.get("h", at(r4)).await?;
    assert_eq!(kv_tuples(got.kvs()), [(s("h"), s("3"), r4, r4, 1, 0)]);
    let got = c
        .get(
            "",
            Some(GetOptions::new().with_all_keys().with_revision(r1)),
        )
        .await?;
    assert_eq!(keys(&got), ["h"], "keys created later are invisible");
    let got = c
        .get("", Some(GetOptions::new().with_all_keys().with_revision(1)))
        .await?;
    assert_eq!(got.count(), 0, "revision 1 is the empty store");
    let got = c.get("h", at(0)).await?;
    assert_eq!(got.kvs()[0].value(), b"3", "revision 0 means current");
    let got = c.get("h", at(-5)).await?;
    assert_eq!(
        got.kvs()[0].value(),
        b"3",
        "a negative revision means current"
    );
    let got = c.get("h", at(current)).await?;
    assert_eq!(got.kvs()[0].value(), b"3");
    Ok(())
}

async fn compaction_then_reads(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    for i in 1..=5 {
        c.put("c", i.to_string(), None).await?; // revisions 2..=6
    }
    let current = 6;
    let compacted = c
        .compact(4, Some(CompactionOptions::new().with_physical()))
        .await?;
    assert_eq!(
        rev(compacted.header()),
        current,
        "compaction answers with the current revision"
    );
    let at = |revision| Some(GetOptions::new().with_revision(revision));
    assert_grpc_error(c.get("c", at(3)).await, Code::OutOfRange, COMPACTED);
    assert_grpc_error(c.get("c", at(1)).await, Code::OutOfRange, COMPACTED);
    // The compaction revision itself stays readable.
    let kept = c.get("c", at(4)).await?;
    assert_eq!(kv_tuples(kept.kvs()), [(s("c"), s("3"), 2, 4, 3, 0)]);
    let latest = c.get("c", None).await?;
    assert_eq!(
        kv_tuples(latest.kvs()),
        [(s("c"), s("5"), 2, 6, 5, 0)],
        "history metadata survives"
    );
    assert_grpc_error(c.get("c", at(current + 1)).await, Code::OutOfRange, FUTURE);

    assert_grpc_error(c.compact(4, None).await, Code::OutOfRange, COMPACTED);
    assert_grpc_error(c.compact(2, None).await, Code::OutOfRange, COMPACTED);
    assert_grpc_error(c.compact(0, None).await, Code::OutOfRange, COMPACTED);
    assert_grpc_error(c.compact(current + 1, None).await, Code::OutOfRange, FUTURE);

    // Ranges in the chosen txn branch are checked before anything is applied.
    let old_read = || TxnOp::get("c", at(3));
    let txn = Txn::new().and_then([TxnOp::put("x", "y", None), old_read()]);
    assert_grpc_error(c.txn(txn).await, Code::OutOfRange, COMPACTED);
    assert!(
        c.get("x", None).await?.kvs().is_empty(),
        "a rejected txn applies nothing"
    );
    let future = Txn::new().and_then([TxnOp::get("c", at(current + 1))]);
    assert_grpc_error(c.txn(future).await, Code::OutOfRange, FUTURE);
    let untaken = Txn::new().or_else([old_read()]);
    assert!(
        c.txn(untaken).await?.succeeded(),
        "the branch not taken is not checked"
    );

    let compacted = c.compact(current, None).await?;
    assert_eq!(
        rev(compacted.header()),
        current,
        "compacting at the current revision is allowed"
    );
    assert_eq!(c.get("c", at(current)).await?.kvs()[0].value(), b"5");
    Ok(())
}

async fn three_members_share_one_keyspace(backend: Backend) -> Result<()> {
    let cluster = Cluster::start(backend, 3).await?;
    let mut writers = Vec::new();
    for member in 0..cluster.size() {
        writers.push(cluster.member_client(member).await?);
    }
    for (member, client) in writers.iter_mut().enumerate() {
        let put = client
            .put(format!("m/{member}"), member.to_string(), None)
            .await?;
        let header = put.header().map(|h| (h.revision(), h.member_id()));
        assert_eq!(header, Some((member as i64 + 2, cluster.member_id(member))));
    }
    for (member, client) in writers.iter_mut().enumerate() {
        // Linearizable (default) reads on any member see every acknowledged write.
        let all = client
            .get("m/", Some(GetOptions::new().with_prefix()))
            .await?;
        assert_eq!(keys(&all), ["m/0", "m/1", "m/2"], "read on member {member}");
        assert_eq!(rev(all.header()), 4);
        let header = all.header().map(|h| (h.member_id(), h.cluster_id()));
        let first = writers_cluster_id(&cluster).await?;
        assert_eq!(
            header,
            Some((cluster.member_id(member), first)),
            "one cluster id"
        );
    }
    Ok(())
}

async fn writers_cluster_id(cluster: &Cluster) -> Result<u64> {
    let status = cluster.status(0).await?;
    Ok(status.header().map_or(0, |h| h.cluster_id()))
}

backend_test!(
    put_get_delete_revisions,
    prev_kv_on_put_and_delete,
    put_ignore_value_and_ignore_lease,
    range_prefix_from_key_and_explicit_end,
    range_limit_more_count,
    range_sort_targets_and_orders,
    range_keys_only_and_count_only,
    range_revision_filters,
    historical_reads,
    compaction_then_reads,
    three_members_share_one_keyspace,
);
