//! Election `Observe`: the current leader's key-value now, and again each time it changes.

use tokio::sync::mpsc;
use tonic::Status;

use super::Recipes;
use super::turn::{HubWatch, SHUTTING_DOWN};
use baton_proto::mvccpb::event::EventType;
use baton_proto::mvccpb::{Event, KeyValue};
use baton_proto::v3electionpb::LeaderResponse;
use baton_watch::{KeyRange, WatchSpec};

type Out = mpsc::Sender<Result<LeaderResponse, Status>>;

/// Whether to keep observing after following one leader.
enum Flow {
    Again,
    End,
}

impl Recipes {
    /// Streams leadership of `prefix` to `out` until the receiver is dropped, the server stops
    /// or a read fails (that error is the stream's last item). Like etcd: the leader's kv
    /// first, then every put to that key, and after its delete the next leader's kv. Values
    /// overwritten between two reads may be skipped; the latest is always delivered.
    pub(crate) async fn observe(&self, prefix: Vec<u8>, out: Out) {
        let ended = tokio::select! {
            result = self.observe_until_gone(&prefix, &out) => result,
            () = out.closed() => Ok(()),
            () = self.stopped() => Err(Status::unavailable(SHUTTING_DOWN)),
        };
        if let Err(status) = ended {
            let _ = out.send(Err(status)).await;
        }
    }

    async fn observe_until_gone(&self, prefix: &[u8], out: &Out) -> Result<(), Status> {
        loop {
            let (revision, leader) = self.first_created(prefix).await?;
            let (revision, kv) = match leader {
                Some(kv) => (revision, kv),
                None => match self.first_put(prefix, revision + 1).await {
                    Some(kv) => (kv.mod_revision, kv),
                    None => continue,
                },
            };
            let key = kv.key.clone();
            if !self.send(out, revision, kv).await {
                return Ok(());
            }
            if let Flow::End = self.follow(&key, revision + 1, out).await {
                return Ok(());
            }
        }
    }

    /// The first key put under `prefix` from `start_revision` on: with no key there, it is the
    /// new leader. None if the watch's history was compacted (read again).
    async fn first_put(&self, prefix: &[u8], start_revision: i64) -> Option<KeyValue> {
        let spec = WatchSpec {
            range: KeyRange::Until(prefix.to_vec(), super::keys::prefix_end(prefix)),
            no_put: false,
            no_delete: true,
            prev_kv: false,
        };
        let mut watch = HubWatch::new(&self.hub, spec, start_revision);
        loop {
            let batch = watch.next_batch().await?;
            if let Some(kv) = batch.to_events().into_iter().find_map(|e| e.kv) {
                return Some(kv);
            }
        }
    }

    /// Sends every put to the leader's `key` until it is deleted (Again) or the client is gone
    /// (End).
    async fn follow(&self, key: &[u8], start_revision: i64, out: &Out) -> Flow {
        let spec = WatchSpec {
            range: KeyRange::Single(key.to_vec()),
            no_put: false,
            no_delete: false,
            prev_kv: false,
        };
        let mut watch = HubWatch::new(&self.hub, spec, start_revision);
        while let Some(batch) = watch.next_batch().await {
            for Event { r#type, kv, .. } in batch.to_events() {
                let Some(kv) = kv else { continue };
                if r#type == EventType::Delete as i32 {
                    return Flow::Again;
                }
                if !self.send(out, batch.revision, kv).await {
                    return Flow::End;
                }
            }
        }
        Flow::Again
    }

    async fn send(&self, out: &Out, revision: i64, kv: KeyValue) -> bool {
        let resp = LeaderResponse {
            header: Some(self.server.header(revision)),
            kv: Some(kv),
        };
        out.send(Ok(resp)).await.is_ok()
    }
}
