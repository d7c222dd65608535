//! Range semantics (key ranges, limits, sorting, projections, filters) as etcd 3.4 behaves.

use anyhow::Result;
use baton_e2e::inspect::{keys, kv_tuples};
use baton_e2e::{Backend, backend_test, start_single};
use etcd_client::{Client, DeleteOptions, GetOptions, SortOrder, SortTarget};

fn s(text: &str) -> String {
    text.to_owned()
}

async fn range_prefix_from_key_and_explicit_end(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = start_single(backend).await?;
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
    let (_cluster, mut c) = start_single(backend).await?;
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
    let (_cluster, mut c) = start_single(backend).await?;
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
    let (_cluster, mut c) = start_single(backend).await?;
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
    let (_cluster, mut c) = start_single(backend).await?;
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

backend_test!(
    range_prefix_from_key_and_explicit_end,
    range_limit_more_count,
    range_sort_targets_and_orders,
    range_keys_only_and_count_only,
    range_revision_filters,
);
