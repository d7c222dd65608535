//! etcd's `Watch` service: one bidirectional stream carrying many watches.
//!
//! Each stream is served by one task that reads requests, forwards the hub's deliveries, and
//! ticks progress notifications, writing every response into a small bounded queue that gRPC
//! drains. Because one task does all of that in order, a watch's `created` response always
//! precedes its events, creates are answered in request order, and nothing follows a
//! `canceled`. The task ends when the client goes away (a send fails or the queue closes);
//! dropping it removes its watchers from the hub. Like etcd, a client that only half-closes
//! its side keeps receiving events. A stream opened with `hasleader` ends with etcd's
//! `etcdserver: no leader` when the member has gone without a leader for a while
//! (`api::require_leader`).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt, StreamMap};
use tonic::{Request, Response, Status, Streaming};

use crate::api::require_leader::{no_leader, requires_leader};
use crate::server::Server;
use crate::server::leader_loss::LeaderLoss;
use crate::shutdown::Shutdown;
use baton_apply::settled::Settled;
use baton_limits::{GRPC_OVERHEAD_BYTES, REQUEST_BYTES_MAX, WATCH_STREAM_OUT_RESPONSES};
use baton_proto::etcdserverpb::watch_create_request::FilterType;
use baton_proto::etcdserverpb::watch_request::RequestUnion;
use baton_proto::etcdserverpb::watch_server::Watch;
use baton_proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse};
use baton_watch::{Delivery, KeyRange, WatchHub, WatchSpec, WatcherId};

#[cfg(test)]
mod tests;

/// etcd's reasons for refusing a create (`mvcc/watcher.go`), sent as `cancel_reason`.
const EMPTY_RANGE: &str = "mvcc: watcher range is empty";
const DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
/// The watch id a client sends to let the server choose, and the one on responses that
/// belong to no watch (refused creates, answers to progress requests).
const AUTO_WATCH_ID: i64 = 0;
const INVALID_WATCH_ID: i64 = -1;
/// etcd fragments responses at its request limit plus gRPC overhead.
const FRAGMENT_BYTES: usize = REQUEST_BYTES_MAX + GRPC_OVERHEAD_BYTES;
/// Field number of `WatchResponse.events`, for sizing fragments without re-encoding.
const EVENTS_FIELD: u32 = 11;

/// Who fills in response headers (cluster, member, term); the server in production.
pub(crate) trait Headers: Send + Sync + 'static {
    fn header(&self, revision: i64) -> ResponseHeader;
}

impl Headers for Server {
    fn header(&self, revision: i64) -> ResponseHeader {
        Server::header(self, revision)
    }
}

pub(crate) struct WatchService {
    hub: Arc<WatchHub>,
    headers: Arc<dyn Headers>,
    /// Watches start once every write this member acknowledged is published, so "from now"
    /// never includes a change its client was already told about.
    settled: Settled,
    progress_interval: Duration,
    /// Fires when the member shuts down; streams then end instead of holding up the server's
    /// graceful shutdown.
    stop: Option<Shutdown>,
    /// Ends the streams that asked for a leader.
    leader_loss: LeaderLoss,
}

impl WatchService {
    /// `progress_interval`: how often watches that asked for progress notifications get one
    /// (etcd adds up to a tenth of random delay per stream, and so does this).
    pub(crate) fn new(
        hub: Arc<WatchHub>,
        headers: Arc<dyn Headers>,
        progress_interval: Duration,
    ) -> Self {
        Self {
            hub,
            headers,
            settled: Settled::always(),
            progress_interval,
            stop: None,
            leader_loss: LeaderLoss::never(),
        }
    }

    /// Waits for `settled` before registering each watch (see the field).
    pub(crate) fn with_settled(mut self, settled: Settled) -> Self {
        self.settled = settled;
        self
    }

    /// Ends every stream once `stop` fires.
    pub(crate) fn with_stop(mut self, stop: Shutdown) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Ends the streams that require a leader when `loss` says so.
    pub(crate) fn with_leader_loss(mut self, loss: LeaderLoss) -> Self {
        self.leader_loss = loss;
        self
    }

    /// Serves one stream of requests; its responses come out of the returned stream. It ends
    /// with `etcdserver: no leader` on `leader_loss`, if given.
    fn open_stream<S>(
        &self,
        inbound: S,
        leader_loss: Option<LeaderLoss>,
    ) -> ReceiverStream<Result<WatchResponse, Status>>
    where
        S: Stream<Item = Result<WatchRequest, Status>> + Send + Unpin + 'static,
    {
        let (out, responses) = mpsc::channel(WATCH_STREAM_OUT_RESPONSES);
        let session = Session {
            hub: self.hub.clone(),
            headers: self.headers.clone(),
            settled: self.settled.clone(),
            out,
            watches: HashMap::new(),
            deliveries: StreamMap::new(),
            next_auto_id: 0,
        };
        let ends = Ends {
            stop: self.stop.clone(),
            leader_loss,
        };
        tokio::spawn(session.run(inbound, jittered(self.progress_interval), ends));
        ReceiverStream::new(responses)
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let leader_loss =
            requires_leader(request.metadata().as_ref()).then(|| self.leader_loss.clone());
        Ok(Response::new(
            self.open_stream(request.into_inner(), leader_loss),
        ))
    }
}

/// The interval plus up to a tenth more, so streams created together do not tick together.
fn jittered(interval: Duration) -> Duration {
    let tenth_ms = u64::try_from(interval.as_millis() / 10).unwrap_or(u64::MAX);
    if tenth_ms == 0 {
        return interval;
    }
    let random = std::collections::hash_map::RandomState::new().hash_one(interval);
    interval + Duration::from_millis(random % tenth_ms)
}

/// etcd's reading of a create request's key and range_end (`v3rpc/watch.go`).
fn key_range(key: Vec<u8>, range_end: Vec<u8>) -> Result<KeyRange, &'static str> {
    KeyRange::from_etcd(key, range_end).ok_or(EMPTY_RANGE)
}

/// etcd's `sendFragments`: a response at or over `limit` bytes with several events is split
/// into parts of as many events as fit (at least one each); all parts but the last carry
/// `fragment = true`.
fn fragments(response: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    if response.encoded_len() < limit || response.events.len() < 2 {
        return vec![response];
    }
    let mut base = response;
    let events = std::mem::take(&mut base.events);
    base.fragment = true;
    let base_len = base.encoded_len();
    let mut rest = events.into_iter().peekable();
    let mut parts = Vec::new();
    loop {
        let mut part = base.clone();
        let mut size = base_len;
        while let Some(event) = rest.peek() {
            let len = prost::encoding::message::encoded_len(EVENTS_FIELD, event);
            if !part.events.is_empty() && size + len >= limit {
                break;
            }
            size += len;
            part.events.extend(rest.next());
        }
        let last = rest.peek().is_none();
        part.fragment = !last;
        parts.push(part);
        if last {
            return parts;
        }
    }
}

/// One watch of a stream.
struct StreamWatch {
    /// None once the hub has ended it (compaction); the id stays taken until canceled, as
    /// in etcd.
    hub_id: Option<WatcherId>,
    progress_notify: bool,
    /// No events were sent since the last progress tick (etcd's `progress[id]`).
    quiet: bool,
    fragment: bool,
}

struct Session {
    hub: Arc<WatchHub>,
    headers: Arc<dyn Headers>,
    settled: Settled,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    /// By client watch id.
    watches: HashMap<i64, StreamWatch>,
    deliveries: StreamMap<i64, ReceiverStream<Delivery>>,
    next_auto_id: i64,
}

/// What ends a stream besides its client.
struct Ends {
    /// The member shuts down: the stream just ends.
    stop: Option<Shutdown>,
    /// The member lost its leader: the stream ends with `etcdserver: no leader`.
    leader_loss: Option<LeaderLoss>,
}

enum Next {
    Request(WatchRequest),
    InboundDone,
    Delivery(i64, Delivery),
    Tick,
    Stop,
    NoLeader,
}

impl Session {
    async fn run<S>(mut self, mut inbound: S, progress_period: Duration, ends: Ends)
    where
        S: Stream<Item = Result<WatchRequest, Status>> + Unpin,
    {
        let mut ticker =
            tokio::time::interval_at(Instant::now() + progress_period, progress_period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut inbound_open = true;
        let stopping = async move {
            match ends.stop {
                Some(mut stop) => stop.stopped().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(stopping);
        let leader_lost = async move {
            match ends.leader_loss {
                Some(loss) => loss.ended().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(leader_lost);
        loop {
            let next = tokio::select! {
                request = inbound.next(), if inbound_open => match request {
                    Some(Ok(request)) => Next::Request(request),
                    Some(Err(_)) => Next::Stop,
                    None => Next::InboundDone,
                },
                Some((id, delivery)) = self.deliveries.next() => Next::Delivery(id, delivery),
                _ = ticker.tick() => Next::Tick,
                () = self.out.closed() => Next::Stop,
                () = &mut stopping => Next::Stop,
                () = &mut leader_lost => Next::NoLeader,
            };
            let client_still_there = match next {
                Next::Request(request) => self.handle(request).await,
                Next::InboundDone => {
                    inbound_open = false;
                    true
                }
                Next::Delivery(id, delivery) => self.deliver(id, delivery).await,
                Next::Tick => {
                    self.tick();
                    true
                }
                Next::Stop => false,
                Next::NoLeader => {
                    let _ = self.out.send(Err(no_leader())).await;
                    false
                }
            };
            if !client_still_there {
                return;
            }
        }
    }

    fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(self.headers.header(revision))
    }

    async fn send(&self, response: WatchResponse) -> bool {
        self.out.send(Ok(response)).await.is_ok()
    }

    async fn handle(&mut self, request: WatchRequest) -> bool {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id).await,
            // etcd 3.4 answers at once, for no watch in particular, at the current revision.
            Some(RequestUnion::ProgressRequest(_)) => {
                let response = WatchResponse {
                    header: self.header(self.hub.revision()),
                    watch_id: INVALID_WATCH_ID,
                    ..Default::default()
                };
                self.send(response).await
            }
            None => true,
        }
    }

    async fn create(&mut self, request: WatchCreateRequest) -> bool {
        let range = match key_range(request.key, request.range_end) {
            Ok(range) => range,
            Err(reason) => return self.refuse_create(reason).await,
        };
        let id = match request.watch_id {
            AUTO_WATCH_ID => {
                while self.watches.contains_key(&self.next_auto_id) {
                    self.next_auto_id += 1;
                }
                self.next_auto_id += 1;
                self.next_auto_id - 1
            }
            id if self.watches.contains_key(&id) => return self.refuse_create(DUPLICATE_ID).await,
            id => id,
        };
        let spec = WatchSpec {
            range,
            no_put: request.filters.contains(&(FilterType::Noput as i32)),
            no_delete: request.filters.contains(&(FilterType::Nodelete as i32)),
            prev_kv: request.prev_kv,
        };
        self.settled.wait().await;
        let registration = self.hub.register(spec, request.start_revision);
        self.watches.insert(
            id,
            StreamWatch {
                hub_id: Some(registration.id),
                progress_notify: request.progress_notify,
                quiet: true,
                fragment: request.fragment,
            },
        );
        self.deliveries
            .insert(id, ReceiverStream::new(registration.deliveries));
        let created = WatchResponse {
            header: self.header(registration.revision),
            watch_id: id,
            created: true,
            ..Default::default()
        };
        self.send(created).await
    }

    async fn refuse_create(&self, reason: &str) -> bool {
        let response = WatchResponse {
            header: self.header(self.hub.revision()),
            watch_id: INVALID_WATCH_ID,
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..Default::default()
        };
        self.send(response).await
    }

    /// Cancels a watch of this stream; like etcd, an unknown id gets no answer.
    async fn cancel(&mut self, id: i64) -> bool {
        let Some(watch) = self.watches.remove(&id) else {
            return true;
        };
        if let Some(hub_id) = watch.hub_id {
            self.hub.unregister(hub_id);
        }
        self.deliveries.remove(&id);
        let response = WatchResponse {
            header: self.header(self.hub.revision()),
            watch_id: id,
            canceled: true,
            ..Default::default()
        };
        self.send(response).await
    }

    async fn deliver(&mut self, id: i64, delivery: Delivery) -> bool {
        let Some(watch) = self.watches.get_mut(&id) else {
            return true;
        };
        let fragment = watch.fragment;
        let response = match delivery {
            Delivery::Events(batch) => {
                let events = batch.to_events();
                watch.quiet &= events.is_empty();
                WatchResponse {
                    header: Some(self.headers.header(batch.revision)),
                    watch_id: id,
                    events,
                    ..Default::default()
                }
            }
            Delivery::Progress { revision } => WatchResponse {
                header: Some(self.headers.header(revision)),
                watch_id: id,
                ..Default::default()
            },
            // etcd's compaction notice carries no revision in its header.
            Delivery::Compacted { compact_revision } => {
                watch.hub_id = None;
                WatchResponse {
                    header: Some(self.headers.header(0)),
                    watch_id: id,
                    compact_revision,
                    canceled: true,
                    ..Default::default()
                }
            }
        };
        if !fragment {
            return self.send(response).await;
        }
        for part in fragments(response, FRAGMENT_BYTES) {
            if !self.send(part).await {
                return false;
            }
        }
        true
    }

    /// etcd's progress ticker: a watch that asked for notifications gets one when nothing
    /// was sent to it since the previous tick (and the hub finds it synced).
    fn tick(&mut self) {
        for watch in self.watches.values_mut() {
            if !watch.progress_notify {
                continue;
            }
            if watch.quiet
                && let Some(hub_id) = watch.hub_id
            {
                self.hub.request_progress(hub_id);
            }
            watch.quiet = true;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for watch in self.watches.values() {
            if let Some(hub_id) = watch.hub_id {
                self.hub.unregister(hub_id);
            }
        }
    }
}
