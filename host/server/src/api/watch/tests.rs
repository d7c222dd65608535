//! The Watch service's stream behaviour, driven in-process: requests go into a channel, the
//! responses come out of the service's stream; writes go through a real store and hub.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::api::watch::{DUPLICATE_ID, EMPTY_RANGE, Headers, WatchService, fragments, key_range};
use crate::server::NO_LEADER;
use crate::server::leader_loss::LeaderLoss;
use baton_proto::etcdserverpb::watch_request::RequestUnion;
use baton_proto::etcdserverpb::{
    ResponseHeader, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
    WatchResponse,
};
use baton_proto::mvccpb::{Event, KeyValue};
use baton_watch::testing::Fixture;
use baton_watch::{HubLimits, KeyRange};

/// How long a test waits for a response that must come.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a test waits to be sure a response does not come.
const SILENCE: Duration = Duration::from_millis(300);

struct FixedHeaders;

impl Headers for FixedHeaders {
    fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: 11,
            member_id: 22,
            revision,
            raft_term: 3,
        }
    }
}

struct Client {
    requests: mpsc::Sender<Result<WatchRequest, Status>>,
    responses: ReceiverStream<Result<WatchResponse, Status>>,
}

impl Client {
    fn open(f: &Fixture, progress_interval: Duration) -> Client {
        Self::open_with(f, progress_interval, None)
    }

    fn open_with(f: &Fixture, progress_interval: Duration, loss: Option<LeaderLoss>) -> Client {
        let service = WatchService::new(f.hub.clone(), Arc::new(FixedHeaders), progress_interval);
        let (requests, inbound) = mpsc::channel(16);
        let responses = service.open_stream(ReceiverStream::new(inbound), loss);
        Client {
            requests,
            responses,
        }
    }

    async fn send(&self, request: RequestUnion) {
        let request = WatchRequest {
            request_union: Some(request),
        };
        self.requests.send(Ok(request)).await.unwrap();
    }

    async fn create(&self, create: WatchCreateRequest) {
        self.send(RequestUnion::CreateRequest(create)).await;
    }

    async fn next(&mut self) -> WatchResponse {
        match tokio::time::timeout(ARRIVAL_TIMEOUT, self.responses.next()).await {
            Ok(Some(Ok(response))) => response,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    async fn assert_silent(&mut self) {
        if let Ok(got) = tokio::time::timeout(SILENCE, self.responses.next()).await {
            panic!("expected no response, got {got:?}");
        }
    }
}

fn watch(key: &str) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.into(),
        ..Default::default()
    }
}

fn rev(response: &WatchResponse) -> i64 {
    response.header.as_ref().map_or(-100, |h| h.revision)
}

/// (watch_id, created, canceled, cancel_reason, header revision) of a response.
fn shape(r: &WatchResponse) -> (i64, bool, bool, String, i64) {
    (
        r.watch_id,
        r.created,
        r.canceled,
        r.cancel_reason.clone(),
        rev(r),
    )
}

fn keys(response: &WatchResponse) -> Vec<String> {
    response
        .events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.kv.as_ref().unwrap().key).into_owned())
        .collect()
}

#[tokio::test]
async fn creates_are_answered_in_request_order_with_etcds_ids_and_refusals() {
    let f = Fixture::new(HubLimits::default());
    let mut c = Client::open(&f, Duration::from_secs(600));
    c.create(watch("a")).await;
    c.create(WatchCreateRequest {
        watch_id: 7,
        ..watch("b")
    })
    .await;
    c.create(watch("c")).await;
    c.create(WatchCreateRequest {
        watch_id: 7,
        ..watch("d")
    })
    .await;
    c.create(WatchCreateRequest {
        range_end: "a".into(),
        ..watch("b")
    })
    .await;
    let none = String::new;
    assert_eq!(shape(&c.next().await), (0, true, false, none(), 1));
    assert_eq!(shape(&c.next().await), (7, true, false, none(), 1));
    assert_eq!(shape(&c.next().await), (1, true, false, none(), 1));
    assert_eq!(
        shape(&c.next().await),
        (-1, true, true, DUPLICATE_ID.into(), 1)
    );
    assert_eq!(
        shape(&c.next().await),
        (-1, true, true, EMPTY_RANGE.into(), 1)
    );
    let header = c.next_header_after_put(&f, "c").await;
    assert_eq!(
        (header.cluster_id, header.member_id, header.raft_term),
        (11, 22, 3)
    );
}

impl Client {
    async fn next_header_after_put(&mut self, f: &Fixture, key: &str) -> ResponseHeader {
        f.put(key, "v");
        self.next().await.header.unwrap()
    }
}

#[tokio::test]
async fn events_follow_created_and_stop_after_cancel() {
    let f = Fixture::new(HubLimits::default());
    let _catch_up = f.hub.spawn_catch_up(f.store.clone());
    let mut c = Client::open(&f, Duration::from_secs(600));
    c.create(watch("k")).await;
    assert!(c.next().await.created);
    let put_rev = f.put("k", "1");
    let got = c.next().await;
    assert_eq!(
        (got.watch_id, rev(&got), keys(&got)),
        (0, put_rev, vec!["k".to_string()])
    );

    c.send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: 0,
    }))
    .await;
    assert_eq!(
        shape(&c.next().await),
        (0, false, true, String::new(), put_rev)
    );
    f.put("k", "2");
    // Unknown ids get no answer, like etcd.
    c.send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: 99,
    }))
    .await;
    c.assert_silent().await;

    c.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
        .await;
    let progress = c.next().await;
    assert_eq!(
        shape(&progress),
        (-1, false, false, String::new(), put_rev + 1)
    );
    assert!(progress.events.is_empty());
    assert_eq!(progress.compact_revision, 0);
}

#[tokio::test]
async fn a_compacted_start_is_created_then_canceled_with_the_compact_revision() {
    let f = Fixture::new(HubLimits::default());
    let _catch_up = f.hub.spawn_catch_up(f.store.clone());
    for i in 0..5 {
        f.put("old", &i.to_string());
    }
    f.compact(5);
    let mut c = Client::open(&f, Duration::from_secs(600));
    c.create(WatchCreateRequest {
        start_revision: 2,
        ..watch("old")
    })
    .await;
    assert_eq!(shape(&c.next().await), (0, true, false, String::new(), 6));
    let notice = c.next().await;
    assert_eq!(shape(&notice), (0, false, true, String::new(), 0));
    assert_eq!(notice.compact_revision, 5);
    assert!(notice.events.is_empty());
    // The id stays taken until the client cancels it, as in etcd.
    c.send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: 0,
    }))
    .await;
    assert_eq!(shape(&c.next().await), (0, false, true, String::new(), 6));
    assert_eq!(f.hub.counts(), (0, 0));
}

#[tokio::test]
async fn progress_notify_watches_get_periodic_notices() {
    let f = Fixture::new(HubLimits::default());
    f.put("p", "1");
    let mut c = Client::open(&f, Duration::from_millis(100));
    c.create(WatchCreateRequest {
        progress_notify: true,
        ..watch("p")
    })
    .await;
    c.create(watch("quiet")).await;
    assert!(c.next().await.created);
    assert!(c.next().await.created);
    for _ in 0..2 {
        let notice = c.next().await;
        assert_eq!(shape(&notice), (0, false, false, String::new(), 2));
        assert!(notice.events.is_empty());
    }
}

#[tokio::test]
async fn a_half_closed_stream_keeps_delivering_and_a_departed_client_frees_its_watchers() {
    let f = Fixture::new(HubLimits::default());
    let mut c = Client::open(&f, Duration::from_secs(600));
    c.create(watch("h")).await;
    c.create(watch("i")).await;
    assert!(c.next().await.created);
    assert!(c.next().await.created);
    let Client {
        requests,
        responses,
    } = c;
    drop(requests);
    f.put("h", "1");
    let mut c = Client {
        requests: mpsc::channel(1).0,
        responses,
    };
    assert_eq!(keys(&c.next().await), ["h"]);
    assert_eq!(f.hub.counts(), (2, 0));
    drop(c.responses);
    for _ in 0..100 {
        if f.hub.counts() == (0, 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "watchers of a departed client are still registered: {:?}",
        f.hub.counts()
    );
}

#[test]
fn create_keys_follow_etcds_conventions() {
    let k = |s: &str| s.as_bytes().to_vec();
    assert_eq!(key_range(k(""), k("")), Ok(KeyRange::Single(vec![0])));
    assert_eq!(key_range(k(""), vec![0]), Ok(KeyRange::From(vec![0])));
    assert_eq!(
        key_range(k("a"), k("b")),
        Ok(KeyRange::Until(k("a"), k("b")))
    );
    assert_eq!(key_range(k("b"), k("b")), Err(EMPTY_RANGE));
    assert_eq!(key_range(k("b"), k("a")), Err(EMPTY_RANGE));
}

fn event(key: &str, value_len: usize) -> Event {
    Event {
        kv: Some(KeyValue {
            key: key.into(),
            value: vec![b'x'; value_len],
            mod_revision: 9,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn fragments_split_like_etcd() {
    let response = WatchResponse {
        watch_id: 3,
        events: (0..5).map(|i| event(&format!("k{i}"), 100)).collect(),
        ..Default::default()
    };
    // Under the limit, or a single event: sent whole.
    assert_eq!(
        fragments(response.clone(), 10_000),
        std::slice::from_ref(&response)
    );
    let single = WatchResponse {
        events: vec![event("big", 1000)],
        ..Default::default()
    };
    assert_eq!(fragments(single.clone(), 10), [single]);

    let parts = fragments(response.clone(), 250);
    let flags: Vec<bool> = parts.iter().map(|p| p.fragment).collect();
    assert_eq!(flags, [true, true, false]);
    assert!(parts.iter().all(|p| p.watch_id == 3));
    let sizes: Vec<usize> = parts.iter().map(|p| p.events.len()).collect();
    assert_eq!(sizes, [2, 2, 1]);
    let rejoined: Vec<Event> = parts.into_iter().flat_map(|p| p.events).collect();
    assert_eq!(rejoined, response.events);
}

#[tokio::test]
async fn a_stream_that_requires_a_leader_ends_with_no_leader_when_it_is_lost() {
    let f = Fixture::new(HubLimits::default());
    let (lose, ends) = tokio::sync::watch::channel(0u64);
    let mut c = Client::open_with(
        &f,
        Duration::from_secs(600),
        Some(LeaderLoss::from_receiver(ends)),
    );
    c.create(watch("a")).await;
    assert!(c.next().await.created);
    lose.send_modify(|n| *n += 1);
    match tokio::time::timeout(ARRIVAL_TIMEOUT, c.responses.next()).await {
        Ok(Some(Err(status))) => assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::Unavailable, NO_LEADER)
        ),
        other => panic!("expected etcd's no-leader error, got {other:?}"),
    }
    let end = tokio::time::timeout(ARRIVAL_TIMEOUT, c.responses.next()).await;
    assert!(matches!(end, Ok(None)), "the stream went on: {end:?}");
}
