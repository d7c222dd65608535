//! openraft's state machine over the redb state database.
//!
//! Every batch of committed entries is applied in ONE redb write transaction that also records
//! the last applied log id and membership (the `META` table), so data and bookkeeping can never
//! disagree after a crash. Those commits are non-durable for speed: the Raft log is durable, and
//! after a crash openraft replays from the last durable applied id. A durable commit is forced
//! every `SM_DURABLE_EVERY_ENTRIES` entries and before a snapshot is taken, because openraft may
//! purge the log up to a snapshot.
//!
//! On the leader, a batch's key-changing commands are answered as each is applied, before that
//! one commit; readers of this member wait for the commit first (see [`crate::settled`]).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use redb::{Database, Durability, ReadTransaction, ReadableDatabase, WriteTransaction};
use tokio::sync::watch;

use crate::entry::{Reply, TypeConfig, codec};
use crate::raft::snapshot_file::{SnapshotFile, SnapshotStore};
use crate::settled::Settling;
use crate::sm::command::apply_command;
use baton_limits::SM_DURABLE_EVERY_ENTRIES;
use baton_proto::mvccpb::Event;
use baton_store::lease::{IgnoreLeaseChanges, LeaseObserver};
use baton_store::mvcc::key_index::KeyIndex;
use baton_store::storage::schema::META;
use baton_store::storage::snapshot::{restore_snapshot_file, write_snapshot};
use baton_wasm::Runtime;

type LogId = openraft::alias::LogIdOf<TypeConfig>;
type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>;

const KEY_APPLIED: &str = "raft.applied";
const KEY_MEMBERSHIP: &str = "raft.membership";

/// Who hears about committed changes: the watch hub. Called after each commit, in log order,
/// never concurrently with itself; must not block.
pub trait EventSink: Send + Sync {
    /// `revision` is the store's revision after the commit, `events` its changes in order.
    fn publish(&self, revision: i64, events: Vec<Event>);
}

/// A sink for state machines nobody watches (tests, tools).
struct IgnoreEvents;

impl EventSink for IgnoreEvents {
    fn publish(&self, _: i64, _: Vec<Event>) {}
}

/// The replicated state machine. Clones share the database (snapshot builders are clones).
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    /// The key index of `db`, shared with this member's readers.
    index: Arc<KeyIndex>,
    /// Last applied log index, published after each commit; linearizable reads wait on it.
    applied: watch::Sender<u64>,
    /// The same index as an option (None: nothing applied yet), so the apply loop can check
    /// that entries arrive in order, each once.
    applied_through: Option<u64>,
    /// The kept snapshot, sent to members that fell behind the purged log.
    snapshots: SnapshotStore,
    entries_since_durable: u64,
    /// Hears about committed changes (the watch hub).
    events: Arc<dyn EventSink>,
    /// Told about applied lease changes after each commit (the leader's deadline tracker).
    leases: Arc<dyn LeaseObserver>,
    /// Runs module calls on apply; its compiled-module cache is shared by clones.
    runtime: Runtime,
    /// Holds readers back while replies sent early are not yet committed.
    settling: Arc<Settling>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl StateMachine {
    pub fn open(db: Arc<Database>, snapshot_path: PathBuf) -> io::Result<Self> {
        baton_store::storage::init_schema(&db).map_err(io_err)?;
        let index = {
            let txn = db.begin_read().map_err(io_err)?;
            baton_store::mvcc::load_key_index(&txn).map_err(io_err)?
        };
        let mut sm = Self {
            db,
            index: Arc::new(index),
            applied: watch::Sender::new(0),
            applied_through: None,
            snapshots: SnapshotStore::open(snapshot_path)?,
            entries_since_durable: 0,
            events: Arc::new(IgnoreEvents),
            leases: Arc::new(IgnoreLeaseChanges),
            runtime: Runtime::new().map_err(io_err)?,
            settling: Arc::default(),
        };

        let (applied, _) = sm.read_applied()?;
        sm.applied_through = applied.map(|id| id.index);
        sm.applied.send_replace(applied.map_or(0, |id| id.index));
        Ok(sm)
    }

    /// The module runtime, also used to validate deploys before they are proposed.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Where this member keeps and receives snapshots.
    pub fn snapshots(&self) -> &SnapshotStore {
        &self.snapshots
    }

    /// Rebuilds the key index from the store as it is now (after a snapshot install).
    fn reindex(&self) -> io::Result<()> {
        let txn = self.db.begin_read().map_err(io_err)?;
        baton_store::mvcc::rebuild_key_index(&self.index, &txn).map_err(io_err)
    }

    /// The database and key index, for this member's readers.
    pub fn store(&self) -> crate::settled::Store {
        crate::settled::Store {
            db: self.db.clone(),
            index: self.index.clone(),
            settled: self.settling.readers(),
        }
    }

    /// Reports applied lease changes to `observer` from now on.
    pub fn with_lease_observer(mut self, observer: Arc<dyn LeaseObserver>) -> Self {
        self.leases = observer;
        self
    }

    /// Announces committed changes to `sink` from now on.
    pub fn with_event_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.events = sink;
        self
    }

    /// The store's revision now (where a watch hub created for this state machine starts).
    pub fn revision(&self) -> io::Result<i64> {
        let txn = self.db.begin_read().map_err(io_err)?;
        baton_store::mvcc::current_revision(&txn).map_err(io_err)
    }

    /// A receiver of the last applied log index.
    pub fn applied_index(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    fn read_applied(&self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let txn = self.db.begin_read().map_err(io_err)?;
        Self::read_bookkeeping(&txn)
    }

    /// The last applied log id and membership as `txn` sees them.
    fn read_bookkeeping(txn: &ReadTransaction) -> io::Result<(Option<LogId>, StoredMembership)> {
        let table = txn.open_table(META).map_err(io_err)?;
        let applied = match table.get(KEY_APPLIED).map_err(io_err)? {
            Some(raw) => Some(codec::decode(raw.value()).map_err(io_err)?),
            None => None,
        };
        let membership = match table.get(KEY_MEMBERSHIP).map_err(io_err)? {
            Some(raw) => codec::decode(raw.value()).map_err(io_err)?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }

    fn write_bookkeeping(
        txn: &WriteTransaction,
        applied: &LogId,
        membership: Option<&StoredMembership>,
    ) -> io::Result<()> {
        let mut table = txn.open_table(META).map_err(io_err)?;
        let bytes = codec::encode(applied).map_err(io_err)?;
        table
            .insert(KEY_APPLIED, bytes.as_slice())
            .map_err(io_err)?;
        if let Some(m) = membership {
            let bytes = codec::encode(m).map_err(io_err)?;
            table
                .insert(KEY_MEMBERSHIP, bytes.as_slice())
                .map_err(io_err)?;
        }
        Ok(())
    }

    /// Makes every earlier non-durable commit durable (an empty immediate commit fsyncs them).
    fn make_durable(&mut self) -> io::Result<()> {
        let txn = self.db.begin_write().map_err(io_err)?;
        txn.commit().map_err(io_err)?;
        self.entries_since_durable = 0;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        // Serializing the whole store takes a while on a large one: keep it off the async
        // workers, which also carry this member's heartbeats (there may be only one).
        let mut builder = self.clone();
        tokio::task::spawn_blocking(move || builder.snapshot_now())
            .await
            .map_err(|e| io_err(format!("building the snapshot panicked: {e}")))?
    }
}

impl StateMachine {
    /// Makes the applied state durable and writes it out as a snapshot (also kept on disk).
    fn snapshot_now(&mut self) -> Result<Snapshot, io::Error> {
        self.make_durable()?;
        let txn = self.db.begin_read().map_err(io_err)?;
        let (last_log_id, last_membership) = Self::read_bookkeeping(&txn)?;
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
        };
        let (meta, file) = self.snapshots.build(&meta, |mut out| {
            write_snapshot(&txn, &mut out).map_err(io_err)
        })?;
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = file.data_len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: file,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        self.read_applied()
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut txn = self.db.begin_write().map_err(io_err)?;
        txn.set_durability(Durability::None).map_err(io_err)?;
        // Shared with module calls' store views for the length of the batch.
        let txn_shared = Arc::new(txn);
        let mut replies = Vec::new();
        let mut events = Vec::new();
        let mut lease_changes = Vec::new();
        let mut last_applied = None;
        let mut membership = None;
        while let Some((entry, responder)) = entries.try_next().await? {
            check_in_order(
                last_applied.map_or(self.applied_through, |id: LogId| Some(id.index)),
                entry.log_id.index,
            )?;
            let reply = match &entry.payload {
                EntryPayload::Blank => Reply::default(),
                EntryPayload::Normal(cmd) => {
                    let early = cmd.early_replies();
                    if early.is_some() {
                        self.settling.unsettle();
                    }
                    // A failure here stops the node before `txn` commits; the index may then
                    // hold changes the store does not, past its revision, where no read looks.
                    // Replies already sent early stay true: the entry is committed in the log
                    // and a replay applies it the same way.
                    let outcome = apply_command(
                        &txn_shared,
                        &self.index,
                        cmd.get(),
                        &self.runtime,
                        entry.log_id.index,
                        early,
                    )
                    .map_err(io_err)?;
                    events.extend(outcome.events);
                    lease_changes.extend(outcome.lease_changes);
                    Reply(outcome.reply)
                }
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                    Reply::default()
                }
            };
            last_applied = Some(entry.log_id);
            self.entries_since_durable += 1;
            if let Some(responder) = responder {
                replies.push((responder, reply));
            }
        }
        let Some(last_applied) = last_applied else {
            return Ok(());
        };
        let mut txn = Arc::into_inner(txn_shared)
            .ok_or_else(|| io_err("a module call kept the apply transaction"))?;
        Self::write_bookkeeping(&txn, &last_applied, membership.as_ref())?;
        let revision = events
            .last()
            .and_then(|e| e.kv.as_ref())
            .map(|kv| kv.mod_revision);
        if membership.is_some() || self.entries_since_durable >= SM_DURABLE_EVERY_ENTRIES {
            txn.set_durability(Durability::Immediate).map_err(io_err)?;
            self.entries_since_durable = 0;
        }
        txn.commit().map_err(io_err)?;
        // Only now, after the commit, may anyone observe the results.
        if let Some(revision) = revision {
            self.events.publish(revision, events);
        }
        if !lease_changes.is_empty() {
            self.leases.applied(&lease_changes);
        }
        self.applied.send_replace(last_applied.index);
        self.applied_through = Some(last_applied.index);
        self.settling.settle();
        for (responder, reply) in replies {
            responder.send(reply);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        self.index.suspend();
        // Restoring and reindexing a large state takes a while: keep it off the async workers,
        // which also carry this member's heartbeats.
        let sm = self.clone();
        let restored = tokio::task::spawn_blocking(move || {
            let (file, offset, len) = snapshot.data();
            let restored = restore_snapshot_file(&sm.db, file, offset, len);
            (restored, snapshot)
        })
        .await
        .map_err(|e| io_err(format!("installing the snapshot panicked: {e}")))?;
        let snapshot = match restored {
            (Ok(()), snapshot) => snapshot,
            (Err(e), _) => {
                // A refused snapshot replaced nothing: index the store as it still is.
                self.reindex()?;
                return Err(io_err(e));
            }
        };
        // The snapshot's own META already holds these; writing them again from `meta` makes the
        // installed state agree with what openraft believes it installed.
        let txn = self.db.begin_write().map_err(io_err)?;
        if let Some(applied) = &meta.last_log_id {
            Self::write_bookkeeping(&txn, applied, Some(&meta.last_membership))?;
        }
        txn.commit().map_err(io_err)?;
        self.entries_since_durable = 0;
        let (sm, kept_meta) = (self.clone(), meta.clone());
        tokio::task::spawn_blocking(move || {
            sm.snapshots.keep(snapshot, &kept_meta)?;
            sm.reindex()
        })
        .await
        .map_err(|e| io_err(format!("reindexing after the snapshot panicked: {e}")))??;
        let revision = {
            let txn = self.db.begin_read().map_err(io_err)?;
            baton_store::mvcc::current_revision(&txn).map_err(io_err)?
        };
        self.events.publish(revision, Vec::new());
        self.applied
            .send_replace(meta.last_log_id.as_ref().map_or(0, |id| id.index));
        self.applied_through = meta.last_log_id.as_ref().map(|id| id.index);
        tracing::info!(last_log_id = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self
            .snapshots
            .current()?
            .map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}

/// Committed entries are applied once each, in log order: each one's index is above the last
/// applied (any index for the first ever). Anything else means the log and the state no longer
/// agree, and applying on would corrupt the state. (Gaps are not checked here: openraft's own
/// storage suite applies entries with gaps; the log store refuses appends that leave one.)
fn check_in_order(applied_through: Option<u64>, next: u64) -> io::Result<()> {
    match applied_through {
        Some(last) if next <= last => Err(io_err(format!(
            "invariant broken: log entry {next} applied after entry {last}; stopping rather \
             than applying an entry twice or out of order"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod order_tests {
    use super::check_in_order;

    #[test]
    fn applied_indexes_only_grow() {
        assert!(check_in_order(None, 0).is_ok());
        assert!(check_in_order(None, 17).is_ok());
        assert!(check_in_order(Some(4), 5).is_ok());
        for (last, next) in [(4, 4), (4, 3), (u64::MAX, 0)] {
            let error = check_in_order(Some(last), next).unwrap_err();
            assert!(error.to_string().contains("out of order"), "{error}");
        }
    }
}
