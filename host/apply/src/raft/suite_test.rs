//! openraft's own storage conformance suite, run against Baton's log store (over the WAL) and state machine (over redb).

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};

use crate::entry::TypeConfig;
use crate::raft::{LogStore, StateMachine};

struct RedbStores;

fn read_err(e: &impl std::error::Error) -> StorageError<TypeConfig> {
    use openraft::type_config::TypeConfigExt;
    StorageError::read(TypeConfig::err_from_string(e.to_string()))
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RedbStores {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(|e| read_err(&e))?;
        let log = LogStore::open(&dir.path().join("raft-log")).map_err(|e| read_err(&e))?;
        let db = redb::Database::create(dir.path().join("state.redb")).map_err(|e| read_err(&e))?;
        let sm = StateMachine::open(Arc::new(db), dir.path().join("snapshot.bin"))
            .map_err(|e| read_err(&e))?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_store_and_state_machine_pass_openraft_storage_suite() {
    Suite::test_all(RedbStores)
        .await
        .expect("openraft storage suite");
}
