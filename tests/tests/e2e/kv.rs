//! Put, get and delete semantics, asserted exactly as etcd 3.4 behaves.

use anyhow::Result;
use baton_e2e::inspect::{keys, kv_tuple, kv_tuples, rev};
use baton_e2e::{Backend, Cluster, backend_test, start_single};
use etcd_client::{DeleteOptions, GetOptions, PutOptions};

/// A freshly bootstrapped cluster is at revision 1: the first write creates revision 2.
const FIRST_WRITE_REV: i64 = 2;

fn s(text: &str) -> String {
    text.to_owned()
}

async fn put_get_delete_revisions(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = start_single(backend).await?;
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
    let (_cluster, mut c) = start_single(backend).await?;
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
    let (_cluster, mut c) = start_single(backend).await?;
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
    three_members_share_one_keyspace,
);
