//! Waiting for a participant's turn: no polling, only watch-hub wake-ups on deletes.

use tokio::sync::mpsc;
use tonic::Status;

use crate::api::status::kv_status;

use super::{Recipes, keys};
use baton_proto::mvccpb::KeyValue;
use baton_watch::{Delivery, EventBatch, KeyRange, WatchHub, WatchSpec, WatcherId};

/// How a wait for a turn ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// The participant holds: confirmed by a linearizable read at `revision`.
    Mine { revision: i64 },
    /// Its key is gone or was re-created (its lease ended): it will never hold.
    Lost,
}

/// A hub watcher that is unregistered when dropped.
pub(super) struct HubWatch<'a> {
    hub: &'a WatchHub,
    id: WatcherId,
    deliveries: mpsc::Receiver<Delivery>,
}

impl<'a> HubWatch<'a> {
    pub(super) fn new(hub: &'a WatchHub, spec: WatchSpec, start_revision: i64) -> Self {
        let reg = hub.register(spec, start_revision);
        Self {
            hub,
            id: reg.id,
            deliveries: reg.deliveries,
        }
    }

    /// Deletes of exactly `key` from `start_revision` on.
    pub(super) fn deletes_of(hub: &'a WatchHub, key: &[u8], start_revision: i64) -> Self {
        let spec = WatchSpec {
            range: KeyRange::Single(key.to_vec()),
            no_put: true,
            no_delete: false,
            prev_kv: false,
        };
        Self::new(hub, spec, start_revision)
    }

    /// The next non-empty batch of events; None once the watcher is gone (its history was
    /// compacted): the caller reads the current state again.
    pub(super) async fn next_batch(&mut self) -> Option<EventBatch> {
        loop {
            match self.deliveries.recv().await? {
                Delivery::Events(batch) if !batch.is_empty() => return Some(batch),
                Delivery::Events(_) | Delivery::Progress { .. } => {}
                Delivery::Compacted { .. } => return None,
            }
        }
    }
}

impl Drop for HubWatch<'_> {
    fn drop(&mut self) {
        self.hub.unregister(self.id);
    }
}

impl Recipes {
    /// Waits until the participant whose key under `prefix` is `key`, created at
    /// `create_revision`, is the earliest created under the prefix (see the module doc).
    pub(crate) async fn wait_for_turn(
        &self,
        prefix: &[u8],
        key: &[u8],
        create_revision: i64,
    ) -> Result<Turn, Status> {
        loop {
            self.server.linearize().await?;
            let (revision, mine, before) = {
                let view = self.server.read_view().await?;
                let mine = baton_store::mvcc::range(&view, &keys::get(key)).map_err(kv_status)?;
                let req = keys::created_just_before(prefix, create_revision);
                let before = baton_store::mvcc::range(&view, &req).map_err(kv_status)?;
                let revision = mine.header.map_or(0, |h| h.revision);
                (revision, mine.kvs, before.kvs)
            };
            if mine
                .first()
                .is_none_or(|kv| kv.create_revision != create_revision)
            {
                return Ok(Turn::Lost);
            }
            let Some(KeyValue { key: ahead, .. }) = before.into_iter().next() else {
                return Ok(Turn::Mine { revision });
            };
            // Either delete changes the answer; anything else cannot.
            let mut ahead_gone = HubWatch::deletes_of(&self.hub, &ahead, revision + 1);
            let mut mine_gone = HubWatch::deletes_of(&self.hub, key, revision + 1);
            tokio::select! {
                _ = ahead_gone.next_batch() => {}
                _ = mine_gone.next_batch() => {}
                () = self.stopped() => return Err(Status::unavailable(SHUTTING_DOWN)),
            }
        }
    }
}

pub(super) const SHUTTING_DOWN: &str = "server is shutting down";

#[cfg(test)]
mod tests {
    use super::*;
    use baton_proto::mvccpb::event::EventType;
    use baton_proto::mvccpb::{Event, KeyValue};

    fn event(kind: EventType, key: &str, rev: i64) -> Event {
        Event {
            r#type: kind as i32,
            kv: Some(KeyValue {
                key: key.as_bytes().to_vec(),
                mod_revision: rev,
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[tokio::test]
    async fn a_delete_watch_skips_puts_and_other_keys_and_unregisters_when_dropped() {
        let hub = WatchHub::new(1);
        let mut watch = HubWatch::deletes_of(&hub, b"q/a", 2);
        assert_eq!(hub.counts(), (1, 0));
        hub.publish(2, vec![event(EventType::Put, "q/a", 2)]);
        hub.publish(3, vec![event(EventType::Delete, "q/b", 3)]);
        hub.publish(4, vec![event(EventType::Delete, "q/a", 4)]);
        let batch = watch.next_batch().await.expect("the delete is delivered");
        let events = batch.to_events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].r#type, EventType::Delete as i32);
        assert_eq!(batch.revision, 4);
        drop(watch);
        assert_eq!(hub.counts(), (0, 0));
    }
}
