//! Test support for the layers above (feature `testing`): a watch hub over a state database in
//! a temporary file, with writes applied and published the way the state machine does.

use std::sync::Arc;

use baton_apply::settled::Store;
use baton_proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest};
use baton_proto::mvccpb::Event;
use baton_store::ops::kv::{KvRequest, apply_kv};
use baton_store::storage::schema::init_schema;
use baton_store::testing::put_req;
use redb::{Database, Durability};

use crate::catch_up::Round;
use crate::{HubLimits, WatchHub};

pub struct Fixture {
    _file: tempfile::NamedTempFile,
    pub store: Store,
    pub hub: Arc<WatchHub>,
}

impl Fixture {
    pub fn new(limits: HubLimits) -> Self {
        let file = tempfile::NamedTempFile::new().unwrap();
        let db = Arc::new(Database::create(file.path()).unwrap());
        init_schema(&db).unwrap();
        let store = Store {
            db,
            index: Arc::default(),
            settled: baton_apply::settled::Settled::always(),
        };
        Fixture {
            _file: file,
            store,
            hub: WatchHub::with_limits(1, limits),
        }
    }

    /// Applies the requests in one transaction (one applied batch), commits, then publishes
    /// like the state machine. Returns the store revision after the batch.
    pub fn apply(&self, requests: Vec<KvRequest>) -> i64 {
        let (revision, events) = self.commit(requests);
        self.hub.publish(revision, events);
        revision
    }

    /// Commits without publishing (what a read view can see before the hub hears of it).
    pub fn commit(&self, requests: Vec<KvRequest>) -> (i64, Vec<Event>) {
        let mut txn = self.store.db.begin_write().unwrap();
        txn.set_durability(Durability::None).unwrap();
        let mut events = Vec::new();
        for request in &requests {
            if let Ok(applied) = apply_kv(&txn, &self.store.index, request) {
                events.extend(applied.events);
            }
        }
        txn.commit().unwrap();
        let read = redb::ReadableDatabase::begin_read(&*self.store.db).unwrap();
        (baton_store::mvcc::current_revision(&read).unwrap(), events)
    }

    pub fn put(&self, key: &str, value: &str) -> i64 {
        self.apply(vec![put(key, value)])
    }

    pub fn delete(&self, key: &str, end: &str) -> i64 {
        self.apply(vec![delete(key, end)])
    }

    pub fn compact(&self, revision: i64) {
        self.apply(vec![KvRequest::Compaction(CompactionRequest {
            revision,
            physical: true,
        })]);
    }

    pub async fn catch_up_until_idle(&self) {
        for _ in 0..1000 {
            if self.hub.catch_up_round(&self.store).await.unwrap() != Round::Progressed {
                return;
            }
        }
        panic!("catch-up never settled");
    }
}

pub fn put(key: &str, value: &str) -> KvRequest {
    KvRequest::Put(put_req(key, value))
}

pub fn delete(key: &str, end: &str) -> KvRequest {
    KvRequest::DeleteRange(DeleteRangeRequest {
        key: key.into(),
        range_end: end.into(),
        prev_kv: false,
    })
}
