//! Hub tests over a real store: each write is applied and committed like the state machine
//! does, then published; catch-up rounds are driven by hand.

use tokio::sync::mpsc;

use crate::catch_up::Round;
use crate::key_index::KeyIndex;
pub(crate) use crate::testing::{Fixture, delete, put};
use crate::{Delivery, HubLimits, KeyRange, WatchSpec};
use baton_proto::mvccpb::{Event, event::EventType};

fn limits(buffer_responses: usize, catch_up_batch_events: usize) -> HubLimits {
    HubLimits {
        buffer_responses,
        catch_up_batch_events,
        catch_up_watchers: 512,
    }
}

fn spec(range: KeyRange) -> WatchSpec {
    WatchSpec {
        range,
        no_put: false,
        no_delete: false,
        prev_kv: false,
    }
}

fn single(key: &str) -> KeyRange {
    KeyRange::Single(key.into())
}

fn prefix(p: &str) -> KeyRange {
    let mut end = p.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    KeyRange::Until(p.into(), end)
}

/// (P or D, key, mod_revision, value, prev value if any) of an event.
type Seen = (char, String, i64, String, Option<String>);

fn seen(e: &Event) -> Seen {
    let kv = e.kv.as_ref().unwrap();
    let kind = if e.r#type == EventType::Put as i32 {
        'P'
    } else {
        'D'
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        kind,
        text(&kv.key),
        kv.mod_revision,
        text(&kv.value),
        e.prev_kv.as_ref().map(|p| text(&p.value)),
    )
}

fn drain(rx: &mut mpsc::Receiver<Delivery>) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Ok(d) = rx.try_recv() {
        out.push(d);
    }
    out
}

/// Every event of every Events delivery, in order.
fn events_of(deliveries: &[Delivery]) -> Vec<Seen> {
    deliveries
        .iter()
        .filter_map(|d| match d {
            Delivery::Events(b) => Some(b.to_events()),
            _ => None,
        })
        .flatten()
        .map(|e| seen(&e))
        .collect()
}

fn p(key: &str, rev: i64, value: &str) -> Seen {
    ('P', key.into(), rev, value.into(), None)
}

fn d(key: &str, rev: i64) -> Seen {
    ('D', key.into(), rev, String::new(), None)
}

fn with_prev(mut s: Seen, prev: &str) -> Seen {
    s.4 = Some(prev.into());
    s
}

#[test]
fn key_index_agrees_with_a_linear_scan() {
    let mut index = KeyIndex::default();
    let mut model: Vec<(u64, KeyRange)> = Vec::new();
    let keys: Vec<Vec<u8>> = ["", "a", "ab", "abc", "b", "ba", "c", "zz", "\u{7f}"]
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();
    let mut state: u64 = 7;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    for id in 1..400u64 {
        if next() % 3 == 0 && !model.is_empty() {
            let (gone, range) = model.remove(next() % model.len());
            index.remove(gone, &range);
        } else {
            let a = keys[next() % keys.len()].clone();
            let b = keys[next() % keys.len()].clone();
            let range = match next() % 3 {
                0 => KeyRange::Single(a),
                1 => KeyRange::From(a),
                _ if a < b => KeyRange::Until(a, b),
                _ => KeyRange::Until(b.clone(), [b, vec![0]].concat()),
            };
            index.insert(id, &range);
            model.push((id, range));
        }
        assert_eq!(index.len(), model.len());
        for key in &keys {
            let mut got = Vec::new();
            index.matches(key, &mut got);
            got.sort_unstable();
            let mut want: Vec<u64> = model
                .iter()
                .filter(|(_, r)| r.contains(key))
                .map(|(id, _)| *id)
                .collect();
            want.sort_unstable();
            assert_eq!(got, want, "key {key:?}");
        }
    }
}

#[test]
fn publish_delivers_each_revision_once_to_matching_watchers() {
    let f = Fixture::new(HubLimits::default());
    let mut one = f.hub.register(spec(single("a")), 0);
    let mut pre = f.hub.register(spec(prefix("a")), 0);
    let mut from = f.hub.register(spec(KeyRange::From("b".into())), 0);
    assert_eq!((one.revision, pre.revision), (1, 1));

    f.put("a", "1");
    f.put("ab", "2");
    // One batch holding two revisions: two deliveries, each headed by its own revision.
    f.apply(vec![put("c", "3"), delete("a", "")]);
    f.apply(vec![put("b", "4")]);

    let one_got = drain(&mut one.deliveries);
    assert_eq!(events_of(&one_got), [p("a", 2, "1"), d("a", 5)]);
    let pre_got = drain(&mut pre.deliveries);
    assert_eq!(
        events_of(&pre_got),
        [p("a", 2, "1"), p("ab", 3, "2"), d("a", 5)]
    );
    let headers: Vec<i64> = pre_got
        .iter()
        .map(|d| match d {
            Delivery::Events(b) => b.revision,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(headers, [2, 3, 5]);
    assert_eq!(
        events_of(&drain(&mut from.deliveries)),
        [p("c", 4, "3"), p("b", 6, "4")]
    );
}

#[test]
fn one_revision_is_one_delivery_and_filters_apply() {
    let f = Fixture::new(HubLimits::default());
    f.apply(vec![put("k/1", "a"), put("k/2", "b")]);
    let mut all = f.hub.register(spec(prefix("k/")), 0);
    let mut no_put = f.hub.register(
        WatchSpec {
            no_put: true,
            ..spec(prefix("k/"))
        },
        0,
    );
    let mut no_delete = f.hub.register(
        WatchSpec {
            no_delete: true,
            prev_kv: true,
            ..spec(prefix("k/"))
        },
        0,
    );
    // A delete of two keys is one revision with two events.
    f.delete("k/", "k0");
    f.put("k/1", "c");

    let all_got = drain(&mut all.deliveries);
    assert_eq!(all_got.len(), 2);
    assert_eq!(
        events_of(&all_got),
        [d("k/1", 4), d("k/2", 4), p("k/1", 5, "c")]
    );
    // Only deletes pass NOPUT; the put's revision produces no delivery at all.
    let no_put_got = drain(&mut no_put.deliveries);
    assert_eq!(no_put_got.len(), 1);
    assert_eq!(events_of(&no_put_got), [d("k/1", 4), d("k/2", 4)]);
    // prev_kv is kept for watchers that asked (the put re-creates k/1: no previous value).
    assert_eq!(
        events_of(&drain(&mut no_delete.deliveries)),
        [p("k/1", 5, "c")]
    );
}

#[test]
fn prev_kv_is_stripped_unless_asked() {
    let f = Fixture::new(HubLimits::default());
    f.put("x", "old");
    let mut plain = f.hub.register(spec(single("x")), 0);
    let mut with = f.hub.register(
        WatchSpec {
            prev_kv: true,
            ..spec(single("x"))
        },
        0,
    );
    f.put("x", "new");
    f.delete("x", "");
    assert_eq!(
        events_of(&drain(&mut plain.deliveries)),
        [p("x", 3, "new"), d("x", 4)]
    );
    assert_eq!(
        events_of(&drain(&mut with.deliveries)),
        [
            with_prev(p("x", 3, "new"), "old"),
            with_prev(d("x", 4), "new")
        ]
    );
}

#[tokio::test]
async fn history_replay_fills_prev_kv_and_respects_filters() {
    let f = Fixture::new(HubLimits::default());
    f.put("h", "1");
    f.put("h", "2");
    f.put("other", "x");
    f.delete("h", "");
    f.put("h", "3");
    let mut replay = f.hub.register(
        WatchSpec {
            prev_kv: true,
            ..spec(single("h"))
        },
        2,
    );
    let mut deletes = f.hub.register(
        WatchSpec {
            no_put: true,
            ..spec(single("h"))
        },
        1,
    );
    assert_eq!(f.hub.counts(), (2, 2));
    f.catch_up_until_idle().await;
    assert_eq!(f.hub.counts(), (2, 0), "both caught up");
    let got = drain(&mut replay.deliveries);
    assert_eq!(
        events_of(&got),
        [
            p("h", 2, "1"),
            with_prev(p("h", 3, "2"), "1"),
            with_prev(d("h", 5), "2"),
            p("h", 6, "3"),
        ]
    );
    // Read back from history, the response is headed by the store's revision, like etcd.
    assert!(matches!(&got[0], Delivery::Events(b) if b.revision == 6));
    assert_eq!(events_of(&drain(&mut deletes.deliveries)), [d("h", 5)]);

    // Once synced, later writes come straight from publish.
    f.put("h", "4");
    assert_eq!(
        events_of(&drain(&mut replay.deliveries)),
        [with_prev(p("h", 7, "4"), "3")]
    );
}

#[tokio::test]
async fn a_stalled_watcher_never_blocks_publish_and_catches_up_exactly_once() {
    let f = Fixture::new(limits(2, 3));
    let mut slow = f.hub.register(spec(prefix("s/")), 0);
    let mut fast = f.hub.register(spec(prefix("s/")), 0);
    let mut want = Vec::new();
    let mut fast_got = Vec::new();
    for i in 0..50 {
        let key = format!("s/{}", i % 7);
        let rev = f.put(&key, &i.to_string());
        want.push(p(&key, rev, &i.to_string()));
        // The fast watcher keeps up; the slow one reads nothing.
        fast_got.extend(drain(&mut fast.deliveries));
    }
    assert_eq!(
        f.hub.counts(),
        (2, 1),
        "the slow watcher fell back to unsynced"
    );

    // Its buffer is full: a round cannot move it (and does not block either).
    assert_eq!(
        f.hub.catch_up_round(&f.store).await.unwrap(),
        Round::Stalled
    );
    let mut got = drain(&mut slow.deliveries);
    // Catch up while writes continue; the buffer holds two deliveries, so drain each round.
    let mut rounds = 0;
    while f.hub.counts().1 > 0 {
        rounds += 1;
        assert!(rounds < 1000, "catch-up never finished");
        f.hub.catch_up_round(&f.store).await.unwrap();
        got.extend(drain(&mut slow.deliveries));
        if rounds <= 5 {
            let rev = f.put("s/x", "late");
            want.push(p("s/x", rev, "late"));
        }
        fast_got.extend(drain(&mut fast.deliveries));
    }
    let rev = f.put("s/y", "synced");
    want.push(p("s/y", rev, "synced"));
    got.extend(drain(&mut slow.deliveries));
    fast_got.extend(drain(&mut fast.deliveries));
    assert_eq!(events_of(&got), want, "every event once, in order");
    assert_eq!(events_of(&fast_got), want);
    // Batches of about 3 events: catching up took several bounded reads, not one.
    assert!(rounds > 5, "rounds {rounds}");
}

#[tokio::test]
async fn catch_up_stops_at_the_hubs_revision_and_publish_does_the_rest() {
    let f = Fixture::new(HubLimits::default());
    f.put("r", "1");
    let mut w = f.hub.register(spec(single("r")), 2);
    // Committed but not yet published: catch-up must leave it to publish...
    let (rev, events) = f.commit(vec![put("r", "2")]);
    f.catch_up_until_idle().await;
    assert_eq!(f.hub.counts(), (1, 0));
    let replayed = drain(&mut w.deliveries);
    assert_eq!(events_of(&replayed), [p("r", 2, "1")]);
    assert!(matches!(&replayed[0], Delivery::Events(b) if b.revision == 2));
    // ...which delivers it exactly once, headed by its own revision.
    f.hub.publish(rev, events);
    f.put("r", "3");
    let live = drain(&mut w.deliveries);
    assert_eq!(events_of(&live), [p("r", 3, "2"), p("r", 4, "3")]);
    assert!(matches!(&live[0], Delivery::Events(b) if b.revision == 3));
}

#[tokio::test]
async fn a_start_below_the_compacted_revision_is_cancelled_with_it() {
    let f = Fixture::new(HubLimits::default());
    for i in 0..4 {
        f.put("c", &i.to_string());
    }
    f.compact(4);
    let mut old = f.hub.register(spec(single("c")), 3);
    // etcd replays from the compacted revision itself (what is left of it).
    let mut at = f.hub.register(spec(single("c")), 4);
    f.catch_up_until_idle().await;
    let got = drain(&mut old.deliveries);
    assert!(
        matches!(
            got.as_slice(),
            [Delivery::Compacted {
                compact_revision: 4
            }]
        ),
        "{got:?}"
    );
    assert_eq!(
        events_of(&drain(&mut at.deliveries)),
        [p("c", 4, "2"), p("c", 5, "3")]
    );
    assert_eq!(f.hub.counts(), (1, 0), "the compacted watcher is gone");
    assert!(old.deliveries.try_recv().is_err());
}

#[test]
fn a_future_start_waits_for_its_revision() {
    let f = Fixture::new(HubLimits::default());
    let mut w = f.hub.register(spec(single("f")), 4);
    assert_eq!(f.hub.counts(), (1, 0), "a future start is synced");
    f.put("f", "2");
    f.put("f", "3");
    f.put("f", "4");
    assert_eq!(events_of(&drain(&mut w.deliveries)), [p("f", 4, "4")]);
}

#[tokio::test]
async fn a_revision_gap_sends_synced_watchers_back_to_history() {
    let f = Fixture::new(HubLimits::default());
    let mut w = f.hub.register(spec(prefix("g")), 0);
    f.put("g1", "a");
    // As after installing a snapshot: the store moved on without a batch of events.
    let (_, _) = f.commit(vec![put("g2", "b")]);
    let (rev, _) = f.commit(vec![put("g3", "c")]);
    f.hub.publish(rev, Vec::new());
    assert_eq!(f.hub.counts(), (1, 1));
    f.catch_up_until_idle().await;
    f.put("g4", "d");
    assert_eq!(
        events_of(&drain(&mut w.deliveries)),
        [
            p("g1", 2, "a"),
            p("g2", 3, "b"),
            p("g3", 4, "c"),
            p("g4", 5, "d")
        ]
    );
}

#[tokio::test]
async fn progress_goes_only_to_synced_watchers() {
    let f = Fixture::new(HubLimits::default());
    f.put("q", "1");
    let mut synced = f.hub.register(spec(single("q")), 0);
    let mut behind = f.hub.register(spec(single("q")), 1);
    f.hub.request_progress(synced.id);
    f.hub.request_progress(behind.id);
    assert!(matches!(
        drain(&mut synced.deliveries).as_slice(),
        [Delivery::Progress { revision: 2 }]
    ));
    assert!(drain(&mut behind.deliveries).is_empty());
    f.catch_up_until_idle().await;
    f.hub.request_progress(behind.id);
    let got = drain(&mut behind.deliveries);
    assert!(
        matches!(got.last(), Some(Delivery::Progress { revision: 2 })),
        "{got:?}"
    );
}

#[test]
fn unregistered_and_abandoned_watchers_get_nothing() {
    let f = Fixture::new(HubLimits::default());
    let mut gone = f.hub.register(spec(single("u")), 0);
    let abandoned = f.hub.register(spec(single("u")), 0);
    f.hub.unregister(gone.id);
    drop(abandoned.deliveries);
    f.put("u", "1");
    assert!(gone.deliveries.try_recv().is_err());
    assert_eq!(
        f.hub.counts(),
        (0, 0),
        "a closed receiver is dropped on the next publish"
    );
}

#[tokio::test]
async fn catch_up_batches_stop_at_revision_boundaries() {
    let f = Fixture::new(limits(128, 1));
    f.apply(vec![put("b/1", "1"), put("b/2", "2"), put("b/3", "3")]);
    f.delete("b/", "b0");
    let mut w = f.hub.register(spec(prefix("b/")), 1);
    f.catch_up_until_idle().await;
    let got = drain(&mut w.deliveries);
    let sizes: Vec<usize> = got
        .iter()
        .map(|d| match d {
            Delivery::Events(b) => b.len(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    // A batch of "one event" still carries its whole revision: three puts (one revision
    // each), then one delete of three keys.
    assert_eq!(sizes, [1, 1, 1, 3]);
    assert_eq!(
        events_of(&got),
        [
            p("b/1", 2, "1"),
            p("b/2", 3, "2"),
            p("b/3", 4, "3"),
            d("b/1", 5),
            d("b/2", 5),
            d("b/3", 5)
        ]
    );
}

#[tokio::test]
async fn replayed_prev_kv_stops_at_the_compacted_revision() {
    let f = Fixture::new(HubLimits::default());
    f.put("x", "1");
    f.put("x", "2");
    f.put("x", "3");
    f.compact(3);
    let mut w = f.hub.register(
        WatchSpec {
            prev_kv: true,
            ..spec(single("x"))
        },
        3,
    );
    f.catch_up_until_idle().await;
    // etcd reads prev_kv at mod_revision - 1, which fails below the compacted revision.
    assert_eq!(
        events_of(&drain(&mut w.deliveries)),
        [p("x", 3, "2"), with_prev(p("x", 4, "3"), "2")]
    );
}

/// A tiny deterministic generator (PCG-style LCG), so failures replay from the seed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

struct Modelled {
    spec: WatchSpec,
    start: i64,
    rx: mpsc::Receiver<Delivery>,
    got: Vec<Seen>,
}

fn random_spec(rng: &mut Lcg) -> WatchSpec {
    let keys = ["a", "b", "c", "d"];
    let key = keys[rng.below(keys.len())];
    let range = match rng.below(3) {
        0 => single(key),
        1 => KeyRange::From(key.into()),
        _ => KeyRange::Until(key.into(), "c".into()),
    };
    let range = match range {
        KeyRange::Until(s, e) if s >= e => KeyRange::Single(s),
        other => other,
    };
    WatchSpec {
        range,
        no_put: rng.below(5) == 0,
        no_delete: rng.below(5) == 0,
        prev_kv: rng.below(2) == 0,
    }
}

/// Random writes, registrations, slow readers and catch-up rounds: every watcher must end up
/// with exactly the events of the log that it wants, from its start revision, in order.
#[tokio::test]
async fn random_schedules_deliver_every_wanted_event_exactly_once() {
    for seed in 1..=12u64 {
        let mut rng = Lcg(seed);
        let f = Fixture::new(limits(1 + rng.below(3), 1 + rng.below(4)));
        let mut log: Vec<Event> = Vec::new();
        let mut watchers: Vec<Modelled> = Vec::new();
        for _ in 0..300 {
            match rng.below(10) {
                0..=3 => {
                    // One applied batch of one to three requests (so several revisions).
                    let mut requests = Vec::new();
                    for _ in 0..1 + rng.below(3) {
                        let key = ["a", "b", "c", "d"][rng.below(4)];
                        requests.push(if rng.below(4) == 0 {
                            delete(key, if rng.below(2) == 0 { "" } else { "\0" })
                        } else {
                            put(key, &rng.below(100).to_string())
                        });
                    }
                    let (rev, events) = f.commit(requests);
                    log.extend(events.iter().cloned());
                    f.hub.publish(rev, events);
                }
                4 => {
                    let spec = random_spec(&mut rng);
                    let start = rng.below(f.hub.revision() as usize + 2) as i64;
                    let reg = f.hub.register(spec.clone(), start);
                    let start = if start == 0 { reg.revision + 1 } else { start };
                    watchers.push(Modelled {
                        spec,
                        start,
                        rx: reg.deliveries,
                        got: Vec::new(),
                    });
                }
                5..=7 if !watchers.is_empty() => {
                    let i = rng.below(watchers.len());
                    let w = &mut watchers[i];
                    for _ in 0..rng.below(3) {
                        if let Ok(d) = w.rx.try_recv() {
                            w.got.extend(events_of(&[d]));
                        }
                    }
                }
                _ => {
                    f.hub.catch_up_round(&f.store).await.unwrap();
                }
            }
        }
        // Let everyone finish: drain, catch up, repeat until nothing is unsynced.
        for _ in 0..10_000 {
            for w in &mut watchers {
                w.got.extend(events_of(&drain(&mut w.rx)));
            }
            if f.hub.counts().1 == 0 {
                break;
            }
            f.hub.catch_up_round(&f.store).await.unwrap();
        }
        assert_eq!(f.hub.counts().1, 0, "seed {seed}: catch-up never finished");
        for (n, w) in watchers.iter_mut().enumerate() {
            w.got.extend(events_of(&drain(&mut w.rx)));
            let want: Vec<Seen> = log
                .iter()
                .filter(|e| e.kv.as_ref().unwrap().mod_revision >= w.start && w.spec.wants(e))
                .map(|e| {
                    let mut s = seen(e);
                    if !w.spec.prev_kv {
                        s.4 = None;
                    }
                    s
                })
                .collect();
            assert_eq!(
                w.got, want,
                "seed {seed}, watcher {n} ({:?} from {})",
                w.spec, w.start
            );
        }
    }
}
