//! Typed access to the replicated lease tables (`LEASES`, `LEASE_KEYS`), for the apply path
//! and for read views alike.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use crate::mvcc::error::StorageError;
use crate::storage::schema::{LEASE_KEYS, LEASES};

/// One lease as every member stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The TTL granted, in seconds (already raised to the minimum).
    pub ttl_s: i64,
    /// Remaining TTL in seconds as last checkpointed by a leader; 0: none recorded.
    pub remaining_s: i64,
}

impl LeaseRecord {
    /// The remaining TTL a new leader starts the lease with.
    pub fn takeover_ttl_s(&self) -> i64 {
        if self.remaining_s > 0 {
            self.remaining_s
        } else {
            self.ttl_s
        }
    }
}

fn redb_err(e: impl Into<redb::Error>) -> StorageError {
    StorageError::Redb(e.into())
}

pub fn get(
    table: &impl ReadableTable<i64, (i64, i64)>,
    id: i64,
) -> Result<Option<LeaseRecord>, StorageError> {
    Ok(table.get(id).map_err(redb_err)?.map(|v| {
        let (ttl_s, remaining_s) = v.value();
        LeaseRecord { ttl_s, remaining_s }
    }))
}

/// Whether lease `id` exists, inside a write transaction that does not hold `LEASES` open.
pub fn exists(txn: &WriteTransaction, id: i64) -> Result<bool, StorageError> {
    let table = txn.open_table(LEASES).map_err(redb_err)?;
    Ok(get(&table, id)?.is_some())
}

/// The keys attached to lease `id`, in byte order (the order etcd deletes them in).
pub(crate) fn keys_of(
    table: &impl ReadableTable<(i64, &'static [u8]), ()>,
    id: i64,
) -> Result<Vec<Vec<u8>>, StorageError> {
    let mut keys = Vec::new();
    let start: (i64, &[u8]) = (id, &[]);
    for entry in table.range::<(i64, &[u8])>(start..).map_err(redb_err)? {
        let (k, _) = entry.map_err(redb_err)?;
        let (lease, key) = k.value();
        if lease != id {
            break;
        }
        keys.push(key.to_vec());
    }
    Ok(keys)
}

/// Every lease in a read view, by id.
pub fn all(txn: &ReadTransaction) -> Result<Vec<(i64, LeaseRecord)>, StorageError> {
    let table = txn.open_table(LEASES).map_err(redb_err)?;
    let mut leases = Vec::new();
    for entry in table.iter().map_err(redb_err)? {
        let (k, v) = entry.map_err(redb_err)?;
        let (ttl_s, remaining_s) = v.value();
        leases.push((k.value(), LeaseRecord { ttl_s, remaining_s }));
    }
    Ok(leases)
}

/// The keys attached to lease `id` in a read view.
pub fn attached_keys(txn: &ReadTransaction, id: i64) -> Result<Vec<Vec<u8>>, StorageError> {
    keys_of(&txn.open_table(LEASE_KEYS).map_err(redb_err)?, id)
}
