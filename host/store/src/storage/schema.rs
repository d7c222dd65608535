//! Every redb table of the state-machine database. Adding a table here means adding it to
//! [`crate::storage::snapshot`] too (a test checks that snapshots cover every table).

use redb::{Database, TableDefinition};

/// Small named values: the raft state machine's bookkeeping (`raft.*` keys, opaque bytes) and
/// the MVCC store's revisions ([`META_REVISION`], [`META_COMPACT_REVISION`]).
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Live keys at the current revision: user key -> prost-encoded `mvccpb::KeyValue` (the same
/// bytes as the key's latest [`KV_HISTORY`] record, minus its kind byte). Deleted keys are absent.
pub const KV_LATEST: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv_latest");

/// The per-key revision index as a table, (user key, main, sub) -> kind, as stores written
/// before the index moved to memory (`mvcc::key_index`) hold it: dropped when such a store is
/// opened, skipped in such a member's snapshots.
pub(crate) const LEGACY_KV_KEY_REVS: TableDefinition<(&[u8], i64, i64), u8> =
    TableDefinition::new("kv_key_revs");

/// Change log in revision order: (main revision, sub revision) -> event kind byte followed by
/// the prost-encoded `mvccpb::KeyValue` (for a delete only key and mod_revision are set).
pub(crate) const KV_HISTORY: TableDefinition<(i64, i64), &[u8]> =
    TableDefinition::new("kv_history");

/// Every live lease: lease id -> (granted TTL in seconds, remaining TTL in seconds as last
/// checkpointed by a leader; 0 when none is recorded, meaning "the full TTL").
pub const LEASES: TableDefinition<i64, (i64, i64)> = TableDefinition::new("leases");

/// Keys attached to each lease: (lease id, user key) -> nothing. A key is here iff it is live in
/// [`KV_LATEST`] with that lease, so a revoke finds its keys without scanning the store.
pub(crate) const LEASE_KEYS: TableDefinition<(i64, &[u8]), ()> = TableDefinition::new("lease_keys");
/// Active alarms: (member id, `etcdserverpb.AlarmType` number) -> nothing. Replicated like the
/// key space, so every member refuses the same writes while NOSPACE is raised.
pub(crate) const ALARMS: TableDefinition<(u64, i32), ()> = TableDefinition::new("alarms");
/// Module names: name -> prost-encoded `batonpb::ModuleRecord` (every version's hash, size
/// and exports). Deleting a name removes its record; the code stays in [`MODULE_CODE`].
pub const MODULES: TableDefinition<&str, &[u8]> = TableDefinition::new("modules");

/// Module code by content: SHA-256 of the component -> component bytes.
pub const MODULE_CODE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("module_code");

/// [`KV_HISTORY`] kind byte of a put.
pub(crate) const REV_KIND_PUT: u8 = 0;
/// [`KV_HISTORY`] kind byte of a delete.
pub(crate) const REV_KIND_TOMBSTONE: u8 = 1;

/// [`META`] key of the store's current revision (i64 big-endian; absent means 1).
pub(crate) const META_REVISION: &str = "mvcc.revision";
/// [`META`] key of the compacted revision (i64 big-endian; absent means -1, never compacted).
pub(crate) const META_COMPACT_REVISION: &str = "mvcc.compact_revision";

/// Creates every table so that read transactions never fail on a missing table.
pub fn init_schema(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(META)?;
    txn.open_table(KV_LATEST)?;
    // Rebuilt in memory from KV_HISTORY now; the old table would only take space.
    txn.delete_table(LEGACY_KV_KEY_REVS)?;
    txn.open_table(KV_HISTORY)?;
    txn.open_table(LEASES)?;
    txn.open_table(LEASE_KEYS)?;
    txn.open_table(ALARMS)?;
    txn.open_table(MODULES)?;
    txn.open_table(MODULE_CODE)?;
    txn.commit()?;
    Ok(())
}
