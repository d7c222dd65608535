//! Watch service semantics, asserted exactly as etcd 3.4 behaves.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use baton_e2e::inspect::rev;
use baton_e2e::{Backend, Cluster, backend_test, connect};
use etcd_client::{
    Client, CompactionOptions, DeleteOptions, EventType, WatchFilterType, WatchOptions,
    WatchResponse, WatchStream,
};

/// How long a response that must come may take (catch-up, elections on slow machines).
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to listen to be sure nothing more arrives.
const SILENCE: Duration = Duration::from_millis(500);

/// (P or D, key, value, mod_revision, prev value) of one event.
type Ev = (char, String, String, i64, Option<String>);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ev(e: &etcd_client::Event) -> Ev {
    let kv = e.kv().expect("every event carries a kv");
    let kind = match e.event_type() {
        EventType::Put => 'P',
        EventType::Delete => 'D',
    };
    (
        kind,
        text(kv.key()),
        text(kv.value()),
        kv.mod_revision(),
        e.prev_kv().map(|p| text(p.value())),
    )
}

fn put(key: &str, value: &str, mod_rev: i64) -> Ev {
    ('P', key.into(), value.into(), mod_rev, None)
}

fn del(key: &str, mod_rev: i64) -> Ev {
    ('D', key.into(), String::new(), mod_rev, None)
}

fn prev(mut e: Ev, value: &str) -> Ev {
    e.4 = Some(value.into());
    e
}

async fn next(stream: &mut WatchStream) -> Result<WatchResponse> {
    match tokio::time::timeout(ARRIVAL_TIMEOUT, stream.message()).await {
        Ok(Ok(Some(response))) => Ok(response),
        Ok(Ok(None)) => bail!("the watch stream ended"),
        Ok(Err(e)) => Err(e).context("the watch stream failed"),
        Err(_) => bail!("no watch response within {ARRIVAL_TIMEOUT:?}"),
    }
}

async fn assert_silent(stream: &mut WatchStream) -> Result<()> {
    match tokio::time::timeout(SILENCE, stream.message()).await {
        Err(_) => Ok(()),
        Ok(got) => bail!("expected nothing more, got {got:?}"),
    }
}

/// The created response of a create just sent; checks its shape.
async fn created(stream: &mut WatchStream) -> Result<WatchResponse> {
    let response = next(stream).await?;
    ensure!(
        response.created() && !response.canceled() && response.events().is_empty(),
        "expected a created response, got {response:?}"
    );
    Ok(response)
}

/// Events of the next `n` events' responses, all for `watch_id`, in arrival order.
async fn events(stream: &mut WatchStream, watch_id: i64, n: usize) -> Result<Vec<Ev>> {
    let mut got = Vec::new();
    while got.len() < n {
        let response = next(stream).await?;
        ensure!(
            response.watch_id() == watch_id && !response.canceled() && !response.created(),
            "expected events for watch {watch_id}, got {response:?}"
        );
        got.extend(response.events().iter().map(ev));
    }
    ensure!(got.len() == n, "expected {n} events, got {got:?}");
    Ok(got)
}

async fn single(backend: Backend) -> Result<(Cluster, Client)> {
    let cluster = Cluster::start(backend, 1).await?;
    let client = cluster.client().await?;
    Ok((cluster, client))
}

async fn watch_a_key_and_a_prefix(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    c.put("before", "x", None).await?;
    let mut w = c.watch_client();
    let mut key = w.watch("k", None).await?;
    let mut prefix = w
        .watch("p/", Some(WatchOptions::new().with_prefix()))
        .await?;
    let first = created(&mut key).await?;
    assert_eq!((first.watch_id(), rev(first.header())), (0, 2));
    created(&mut prefix).await?;

    c.put("k", "1", None).await?;
    c.put("p/a", "2", None).await?;
    c.put("kk", "not watched", None).await?;
    c.put("p", "not in the prefix", None).await?;
    c.delete("p/", Some(DeleteOptions::new().with_prefix()))
        .await?;
    c.put("k", "3", None).await?;

    let response = next(&mut key).await?;
    // A live event's response is headed by the event's own revision.
    assert_eq!(rev(response.header()), 3);
    assert_eq!(
        response.events().iter().map(ev).collect::<Vec<_>>(),
        [put("k", "1", 3)]
    );
    assert_eq!(events(&mut key, 0, 1).await?, [put("k", "3", 8)]);
    assert_eq!(
        events(&mut prefix, 0, 2).await?,
        [put("p/a", "2", 4), del("p/a", 7)]
    );
    let kv = c.get("k", None).await?.kvs()[0].clone();
    assert_eq!((kv.create_revision(), kv.version()), (3, 2));
    assert_silent(&mut key).await?;
    Ok(())
}

async fn replay_from_a_past_revision_includes_deletes(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    c.put("h", "1", None).await?;
    c.put("h", "2", None).await?;
    c.put("x", "other", None).await?;
    c.delete("h", None).await?;
    c.put("h", "3", None).await?;
    let mut w = c.watch_client();
    let mut stream = w
        .watch("h", Some(WatchOptions::new().with_start_revision(3)))
        .await?;
    let head = created(&mut stream).await?;
    assert_eq!(
        rev(head.header()),
        6,
        "created carries the current revision"
    );
    let mut replay = Vec::new();
    while replay.len() < 3 {
        let response = next(&mut stream).await?;
        // Replayed history is headed by the store's revision, at least the last event's.
        assert!(rev(response.header()) >= 6, "{response:?}");
        replay.extend(response.events().iter().map(ev));
    }
    assert_eq!(replay, [put("h", "2", 3), del("h", 5), put("h", "3", 6)]);
    c.put("h", "4", None).await?;
    assert_eq!(events(&mut stream, 0, 1).await?, [put("h", "4", 7)]);

    // From revision 1: everything, and a delete's kv holds only its key and revision.
    let mut all = w
        .watch("h", Some(WatchOptions::new().with_start_revision(1)))
        .await?;
    created(&mut all).await?;
    let mut got = Vec::new();
    let mut delete_kv = None;
    while got.len() < 5 {
        let response = next(&mut all).await?;
        for e in response.events() {
            if e.event_type() == EventType::Delete {
                delete_kv = e.kv().cloned();
            }
            got.push(ev(e));
        }
    }
    let revisions: Vec<i64> = got.iter().map(|e| e.3).collect();
    assert_eq!(revisions, [2, 3, 5, 6, 7]);
    let delete_kv = delete_kv.context("a delete event")?;
    assert_eq!(
        (
            delete_kv.create_revision(),
            delete_kv.version(),
            delete_kv.value()
        ),
        (0, 0, &b""[..])
    );
    Ok(())
}

async fn prev_kv_live_and_replayed(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    c.put("v", "1", None).await?;
    let mut w = c.watch_client();
    let mut live = w
        .watch("v", Some(WatchOptions::new().with_prev_key()))
        .await?;
    created(&mut live).await?;
    c.put("v", "2", None).await?;
    c.delete("v", None).await?;
    c.put("v", "3", None).await?;
    let want = [
        prev(put("v", "2", 3), "1"),
        prev(del("v", 4), "2"),
        put("v", "3", 5),
    ];
    assert_eq!(events(&mut live, 0, 3).await?, want);

    let mut replayed = w
        .watch(
            "v",
            Some(WatchOptions::new().with_prev_key().with_start_revision(2)),
        )
        .await?;
    created(&mut replayed).await?;
    let mut got = Vec::new();
    while got.len() < 4 {
        got.extend(next(&mut replayed).await?.events().iter().map(ev));
    }
    assert_eq!(got[0], put("v", "1", 2), "a creation has no prev_kv");
    assert_eq!(got[1..], want);

    let mut plain = w
        .watch("v", Some(WatchOptions::new().with_start_revision(3)))
        .await?;
    created(&mut plain).await?;
    let first = next(&mut plain).await?;
    assert!(
        first.events()[0].prev_kv().is_none(),
        "prev_kv only when asked"
    );
    Ok(())
}

async fn noput_and_nodelete_filters(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    let mut w = c.watch_client();
    let filter = |f: WatchFilterType| Some(WatchOptions::new().with_filters([f]));
    let mut no_put = w.watch("f", filter(WatchFilterType::NoPut)).await?;
    let mut no_delete = w.watch("f", filter(WatchFilterType::NoDelete)).await?;
    created(&mut no_put).await?;
    created(&mut no_delete).await?;
    c.put("f", "1", None).await?;
    c.delete("f", None).await?;
    c.put("f", "2", None).await?;
    c.delete("f", None).await?;
    assert_eq!(events(&mut no_put, 0, 2).await?, [del("f", 3), del("f", 5)]);
    assert_eq!(
        events(&mut no_delete, 0, 2).await?,
        [put("f", "1", 2), put("f", "2", 4)]
    );
    // Filtered-out revisions produce no response at all.
    assert_silent(&mut no_put).await?;
    assert_silent(&mut no_delete).await?;
    Ok(())
}

async fn several_watches_share_a_stream_in_order(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    let mut w = c.watch_client();
    let mut stream = w.watch("a", None).await?;
    stream.watch("b", None).await?;
    stream
        .watch("c", Some(WatchOptions::new().with_watch_id(10)))
        .await?;
    stream.watch("d", None).await?;
    stream
        .watch("e", Some(WatchOptions::new().with_watch_id(10)))
        .await?;
    stream
        .watch("z", Some(WatchOptions::new().with_range("a")))
        .await?;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(created(&mut stream).await?.watch_id());
    }
    assert_eq!(ids, [0, 1, 10, 2], "created answers follow request order");
    for reason in [
        "mvcc: duplicate watch ID provided on the WatchStream",
        "mvcc: watcher range is empty",
    ] {
        let refused = next(&mut stream).await?;
        assert_eq!(
            (
                refused.watch_id(),
                refused.created(),
                refused.canceled(),
                refused.cancel_reason()
            ),
            (-1, true, true, reason)
        );
    }

    c.put("c", "1", None).await?;
    c.put("a", "2", None).await?;
    let first = next(&mut stream).await?;
    let second = next(&mut stream).await?;
    assert_eq!(
        (first.watch_id(), second.watch_id()),
        (10, 0),
        "events follow the revision order across watches"
    );
    Ok(())
}

async fn cancel_stops_events(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    let mut w = c.watch_client();
    let mut stream = w.watch("x", None).await?;
    created(&mut stream).await?;
    c.put("x", "1", None).await?;
    assert_eq!(events(&mut stream, 0, 1).await?, [put("x", "1", 2)]);
    stream.cancel(0).await?;
    let canceled = next(&mut stream).await?;
    assert_eq!(
        (
            canceled.watch_id(),
            canceled.canceled(),
            canceled.created(),
            rev(canceled.header())
        ),
        (0, true, false, 2)
    );
    c.put("x", "2", None).await?;
    // A cancel of an unknown id is ignored; a new watch proves the stream still works and
    // that the canceled watch got nothing in between.
    stream.cancel(42).await?;
    stream.watch("y", None).await?;
    assert_eq!(created(&mut stream).await?.watch_id(), 1);
    c.put("y", "3", None).await?;
    assert_eq!(events(&mut stream, 1, 1).await?, [put("y", "3", 4)]);
    Ok(())
}

async fn a_compacted_start_revision_cancels_the_watch(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    for i in 0..5 {
        c.put("old", i.to_string(), None).await?;
    }
    c.compact(5, Some(CompactionOptions::new().with_physical()))
        .await?;
    let mut w = c.watch_client();
    let mut stream = w
        .watch("old", Some(WatchOptions::new().with_start_revision(3)))
        .await?;
    let head = created(&mut stream).await?;
    assert_eq!((head.watch_id(), rev(head.header())), (0, 6));
    let notice = next(&mut stream).await?;
    assert_eq!(
        (
            notice.watch_id(),
            notice.canceled(),
            notice.created(),
            notice.compact_revision(),
            notice.events().len(),
            notice.cancel_reason(),
            rev(notice.header()),
        ),
        (0, true, false, 5, 0, "", 0)
    );
    assert_silent(&mut stream).await?;

    // Starting at the compacted revision itself is allowed and replays what is left of it.
    let mut at = w
        .watch("old", Some(WatchOptions::new().with_start_revision(5)))
        .await?;
    created(&mut at).await?;
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(next(&mut at).await?.events().iter().map(ev));
    }
    assert_eq!(got, [put("old", "3", 5), put("old", "4", 6)]);
    Ok(())
}

fn is_progress_notice(response: &WatchResponse) -> bool {
    response.events().is_empty()
        && !response.created()
        && !response.canceled()
        && response.compact_revision() == 0
        && response.cancel_reason().is_empty()
}

async fn progress_request_answers_with_the_current_revision(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    let mut w = c.watch_client();
    let mut stream = w.watch("pr", None).await?;
    created(&mut stream).await?;
    c.put("elsewhere", "1", None).await?;
    c.put("elsewhere", "2", None).await?;
    stream.request_progress().await?;
    let notice = next(&mut stream).await?;
    assert!(is_progress_notice(&notice), "{notice:?}");
    assert_eq!((notice.watch_id(), rev(notice.header())), (-1, 3));
    let header = notice.header().context("a header")?;
    assert!(header.cluster_id() != 0 && header.member_id() != 0 && header.raft_term() != 0);
    Ok(())
}

async fn progress_notify_arrives_periodically(backend: Backend) -> Result<()> {
    let cluster = Cluster::start_with_flags(
        backend,
        1,
        &["--experimental-watch-progress-notify-interval=1s"],
    )
    .await?;
    let mut c = cluster.client().await?;
    c.put("pn", "1", None).await?;
    let mut w = c.watch_client();
    let mut stream = w
        .watch("pn", Some(WatchOptions::new().with_progress_notify()))
        .await?;
    created(&mut stream).await?;
    c.put("other", "2", None).await?;
    for _ in 0..2 {
        let notice = next(&mut stream).await?;
        assert!(is_progress_notice(&notice), "{notice:?}");
        assert_eq!((notice.watch_id(), rev(notice.header())), (0, 3));
    }
    Ok(())
}

async fn a_stalled_watcher_later_gets_every_event_once(backend: Backend) -> Result<()> {
    let (cluster, c) = single(backend).await?;
    let mut w = c.watch_client();
    let mut stream = w
        .watch("s/", Some(WatchOptions::new().with_prefix()))
        .await?;
    created(&mut stream).await?;
    // The watcher reads nothing while many revisions are written by concurrent writers.
    const WRITERS: usize = 4;
    const PUTS_PER_WRITER: usize = 300;
    let value = "v".repeat(4096);
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let mut client = cluster.client().await?;
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PUTS_PER_WRITER {
                client
                    .put(format!("s/{writer}/{i}"), value.as_str(), None)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let total = WRITERS * PUTS_PER_WRITER;
    let got = events(&mut stream, 0, total).await?;
    let revisions: Vec<i64> = got.iter().map(|e| e.3).collect();
    let want: Vec<i64> = (2..2 + total as i64).collect();
    assert_eq!(revisions, want, "every revision once, in order");
    assert_silent(&mut stream).await?;
    Ok(())
}

async fn a_follower_sees_what_the_leader_sees(backend: Backend) -> Result<()> {
    let cluster = Cluster::start(backend, 3).await?;
    let leader = cluster.leader().await?;
    let follower = (leader + 1) % 3;
    let mut on_leader = cluster.member_client(leader).await?.watch_client();
    let mut on_follower = cluster.member_client(follower).await?.watch_client();
    let prefix = || Some(WatchOptions::new().with_prefix().with_prev_key());
    let mut at_leader = on_leader.watch("m/", prefix()).await?;
    let mut at_follower = on_follower.watch("m/", prefix()).await?;
    created(&mut at_leader).await?;
    created(&mut at_follower).await?;
    let mut c = cluster.client().await?;
    for i in 0..20 {
        c.put(format!("m/{}", i % 3), i.to_string(), None).await?;
        if i % 5 == 4 {
            c.delete("m/1", None).await?;
        }
    }
    let from_leader = events(&mut at_leader, 0, 24).await?;
    let from_follower = events(&mut at_follower, 0, 24).await?;
    assert_eq!(from_leader, from_follower);
    assert!(from_leader.iter().any(|e| e.0 == 'D' && e.4.is_some()));
    Ok(())
}

async fn rewatch_after_the_watched_member_dies(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 3).await?;
    let watched = cluster.leader().await?;
    let mut w = cluster.member_client(watched).await?.watch_client();
    let mut stream = w
        .watch("r/", Some(WatchOptions::new().with_prefix()))
        .await?;
    created(&mut stream).await?;
    let mut c = cluster.client().await?;
    let mut written = Vec::new();
    for i in 0..10 {
        let response = c.put(format!("r/{i}"), i.to_string(), None).await?;
        written.push(put(
            &format!("r/{i}"),
            &i.to_string(),
            rev(response.header()),
        ));
    }
    let mut seen = events(&mut stream, 0, 5).await?;
    cluster.kill(watched)?;
    cluster.leader().await?;
    let survivors = cluster.running_endpoints();
    let mut c = connect(&survivors).await?;
    for i in 10..20 {
        let response = c.put(format!("r/{i}"), i.to_string(), None).await?;
        written.push(put(
            &format!("r/{i}"),
            &i.to_string(),
            rev(response.header()),
        ));
    }
    let resume = seen.last().context("some events were seen")?.3 + 1;
    let mut w = c.watch_client();
    let mut again = w
        .watch(
            "r/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(resume),
            ),
        )
        .await?;
    created(&mut again).await?;
    let rest = events(&mut again, 0, written.len() - seen.len()).await?;
    seen.extend(rest);
    assert_eq!(
        seen, written,
        "every event exactly once across the two watches"
    );
    assert_silent(&mut again).await?;
    Ok(())
}

async fn fragmented_watches_split_large_revisions(backend: Backend) -> Result<()> {
    let (_cluster, mut c) = single(backend).await?;
    let big = "b".repeat(1024 * 1024);
    for key in ["big/1", "big/2", "big/3"] {
        c.put(key, big.as_str(), None).await?;
    }
    let mut w = c.watch_client().max_decoding_message_size(16 * 1024 * 1024);
    let options = || WatchOptions::new().with_prefix().with_prev_key();
    let mut whole = w.watch("big/", Some(options())).await?;
    let mut split = w.watch("big/", Some(options().with_fragment())).await?;
    created(&mut whole).await?;
    created(&mut split).await?;
    // One revision deleting three keys whose prev_kvs make about 3 MiB: more than etcd's
    // request limit plus gRPC overhead (2 MiB), so a fragmenting watch gets it in pieces.
    c.delete("big/", Some(DeleteOptions::new().with_prefix()))
        .await?;
    let response = next(&mut whole).await?;
    assert_eq!(response.events().len(), 3);
    let mut sizes = Vec::new();
    while sizes.iter().sum::<usize>() < 3 {
        sizes.push(next(&mut split).await?.events().len());
    }
    assert_eq!(sizes, [1, 1, 1]);
    Ok(())
}

backend_test!(
    watch_a_key_and_a_prefix,
    replay_from_a_past_revision_includes_deletes,
    prev_kv_live_and_replayed,
    noput_and_nodelete_filters,
    several_watches_share_a_stream_in_order,
    cancel_stops_events,
    a_compacted_start_revision_cancels_the_watch,
    progress_request_answers_with_the_current_revision,
    progress_notify_arrives_periodically,
    a_stalled_watcher_later_gets_every_event_once,
    a_follower_sees_what_the_leader_sees,
    rewatch_after_the_watched_member_dies,
    fragmented_watches_split_large_revisions,
);
