//! `watch`: put-to-event latency. Watchers hold prefix watches; each operation registers its
//! key, puts it, and completes when every watcher has delivered the event for it.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use etcd_client::{Client, EventType, KvClient, WatchOptions, WatchStream};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use super::Workload;
use crate::pool::{Pool, connect_streaming};

/// Watched keys are `bench/watch/<run>/<seq>`, so concurrent runs do not see each other's puts.
const WATCH_PREFIX: &str = "bench/watch/";
/// Each watcher is a connection of its own: 10 000 fit a default `ulimit -n` of 20 000.
pub(crate) const WATCHERS_MAX: usize = 10_000;
/// Printable filler: the payload is not what this workload measures.
const VALUE: &[u8] = b"w";

/// Operations waiting for their event: key -> (watchers still to deliver it, completion).
type Pending = Arc<Mutex<HashMap<Vec<u8>, Waiter>>>;

struct Waiter {
    remaining: usize,
    done: oneshot::Sender<()>,
}

pub(crate) struct WatchWorkload {
    watchers: usize,
    prefix: String,
    pending: Pending,
    readers: Mutex<Vec<AbortHandle>>,
}

pub(crate) struct WatchRequester {
    kv: KvClient,
}

/// Forgets an operation's key when the operation ends, timed out or not.
struct Registration {
    pending: Pending,
    key: Vec<u8>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.pending).remove(&self.key);
    }
}

fn lock(pending: &Pending) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Waiter>> {
    pending.lock().unwrap_or_else(|e| e.into_inner())
}

impl WatchWorkload {
    pub(crate) fn new(watchers: usize) -> Self {
        let run = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Self {
            watchers,
            prefix: format!("{WATCH_PREFIX}{}-{run}/", std::process::id()),
            pending: Arc::new(Mutex::new(HashMap::new())),
            readers: Mutex::new(Vec::new()),
        }
    }

    fn key(&self, seq: u64) -> Vec<u8> {
        format!("{}{seq}", self.prefix).into_bytes()
    }

    fn register(&self, key: Vec<u8>) -> (Registration, oneshot::Receiver<()>) {
        let (done, arrived) = oneshot::channel();
        let waiter = Waiter {
            remaining: self.watchers,
            done,
        };
        lock(&self.pending).insert(key.clone(), waiter);
        let registration = Registration {
            pending: self.pending.clone(),
            key,
        };
        (registration, arrived)
    }
}

impl Drop for WatchWorkload {
    fn drop(&mut self) {
        let readers = self.readers.get_mut().unwrap_or_else(|e| e.into_inner());
        for reader in readers.drain(..) {
            reader.abort();
        }
    }
}

/// Counts one delivery of `key`; the last watcher to deliver it completes the operation.
fn deliver(pending: &Pending, key: &[u8]) {
    let mut map = lock(pending);
    let Some(waiter) = map.get_mut(key) else {
        return;
    };
    waiter.remaining = waiter.remaining.saturating_sub(1);
    if waiter.remaining == 0
        && let Some(waiter) = map.remove(key)
    {
        // The operation may have timed out and stopped listening; nothing to tell then.
        let _ = waiter.done.send(());
    }
}

/// Reads one watch stream until it ends; operations it stops serving time out.
async fn read_events(mut stream: WatchStream, pending: Pending) {
    loop {
        match stream.message().await {
            Ok(Some(response)) => {
                if response.canceled() {
                    tracing::warn!(reason = response.cancel_reason(), "watch canceled");
                    return;
                }
                for event in response.events() {
                    if event.event_type() == EventType::Put
                        && let Some(kv) = event.kv()
                    {
                        deliver(&pending, kv.key());
                    }
                }
            }
            Ok(None) => {
                tracing::warn!("watch stream closed");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "watch stream failed");
                return;
            }
        }
    }
}

/// Opens a prefix watch and waits for the member to confirm it, so no put is missed.
async fn open_watch(conn: &Client, prefix: &str) -> anyhow::Result<WatchStream> {
    let options = WatchOptions::new().with_prefix();
    let mut stream = conn
        .watch_client()
        .watch(prefix, Some(options))
        .await
        .context("opening watch")?;
    match stream.message().await.context("awaiting watch creation")? {
        Some(response) if response.created() => Ok(stream),
        Some(_) => bail!("watch: first response did not confirm creation"),
        None => bail!("watch stream closed before creation"),
    }
}

impl Workload for WatchWorkload {
    type Requester = WatchRequester;

    fn name(&self) -> &'static str {
        "watch"
    }

    fn params(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("watchers".to_string(), self.watchers.to_string())])
    }

    /// Opens the watch streams, spread over the endpoints, on connections without a deadline.
    async fn prepare(&self, pool: &Pool) -> anyhow::Result<()> {
        let mut handles = Vec::with_capacity(self.watchers);
        for index in 0..self.watchers {
            let endpoint = pool
                .endpoints
                .get(index % pool.endpoints.len().max(1))
                .context("no endpoint to watch on")?;
            let conn = connect_streaming(endpoint).await?;
            let stream = open_watch(&conn, &self.prefix).await?;
            handles.push(tokio::spawn(read_events(stream, self.pending.clone())).abort_handle());
        }
        *self.readers.lock().unwrap_or_else(|e| e.into_inner()) = handles;
        Ok(())
    }

    fn requester(&self, conn: Client, _index: usize) -> WatchRequester {
        WatchRequester {
            kv: conn.kv_client(),
        }
    }

    fn op(
        &self,
        r: &mut WatchRequester,
        seq: u64,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        let key = self.key(seq);
        // Registered before the put, so an event cannot arrive unclaimed.
        let (registration, arrived) = self.register(key.clone());
        async move {
            r.kv.put(key, VALUE, None).await.context("put")?;
            arrived.await.context("watch stream ended")?;
            drop(registration);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_completes_after_every_watcher_delivers() {
        let w = WatchWorkload::new(2);
        let key = w.key(7);
        assert!(key.starts_with(WATCH_PREFIX.as_bytes()) && key.ends_with(b"/7"));
        let (registration, mut arrived) = w.register(key.clone());
        deliver(&w.pending, &key);
        assert!(arrived.try_recv().is_err(), "one of two watchers delivered");
        deliver(&w.pending, &key);
        assert!(arrived.try_recv().is_ok());
        drop(registration);
        assert!(lock(&w.pending).is_empty());
    }

    #[test]
    fn abandoned_operation_is_forgotten() {
        let w = WatchWorkload::new(1);
        let (registration, _arrived) = w.register(w.key(1));
        drop(registration);
        assert!(lock(&w.pending).is_empty());
        // A late event for it is ignored.
        deliver(&w.pending, &w.key(1));
    }
}
