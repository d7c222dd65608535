//! Test support for the layers above (feature `testing`): a state database in a temporary file
//! with the KV write path wired up, and request builders.

use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase};

use crate::mvcc::error::KvError;
use crate::mvcc::key_index::KeyIndex;
use crate::mvcc::{ReadView, current_revision, range};
use crate::ops::kv::{Applied, ApplyError, KvRequest, apply_kv};
use crate::storage::schema::init_schema;
use baton_proto::etcdserverpb::{PutRequest, RangeRequest};

pub struct TestStore {
    _file: tempfile::NamedTempFile,
    pub db: Database,
    pub index: Arc<KeyIndex>,
}

impl Default for TestStore {
    fn default() -> Self {
        Self::new()
    }
}

impl TestStore {
    pub fn new() -> Self {
        let file = tempfile::NamedTempFile::new().unwrap();
        let db = Database::create(file.path()).unwrap();
        init_schema(&db).unwrap();
        TestStore {
            _file: file,
            db,
            index: Arc::default(),
        }
    }

    /// A read of the committed state, as the member's readers get it.
    pub fn view(&self) -> ReadView {
        ReadView::new(self.db.begin_read().unwrap(), self.index.clone())
    }

    /// Applies and commits, like the state machine does (also after a rejection).
    pub fn apply(&self, req: KvRequest) -> Result<Applied, ApplyError> {
        let mut txn = self.db.begin_write().unwrap();
        // Tests need no crash safety; skipping fsync keeps thousands of commits fast.
        txn.set_durability(Durability::None).unwrap();
        let out = apply_kv(&txn, &self.index, &req);
        txn.commit().unwrap();
        out
    }

    pub fn range(
        &self,
        req: &RangeRequest,
    ) -> Result<baton_proto::etcdserverpb::RangeResponse, KvError> {
        range(&self.view(), req)
    }

    pub fn rev(&self) -> i64 {
        current_revision(&self.db.begin_read().unwrap()).unwrap()
    }
}

pub fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

pub fn range_req(key: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: key.into(),
        range_end: end.into(),
        ..Default::default()
    }
}
