//! `Hash` and `HashKV`. etcd hashes its bbolt pages with CRC-32C; Baton's store has different
//! bytes, so its hashes are its own: the first 4 bytes of a SHA-256 over a canonical encoding.
//! Only equality between members matters (etcd's corruption check compares members' HashKV at
//! one revision), never equality with etcd.

use std::io::Write;

use redb::ReadTransaction;
use sha2::{Digest, Sha256};

use crate::mvcc::error::{KvError, StorageError};
use crate::storage::schema::KV_HISTORY;
use crate::storage::snapshot::{SnapshotError, write_snapshot};

/// What `HashKV` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvHash {
    pub hash: u32,
    /// The store's current revision (etcd puts it in the response header).
    pub current_revision: i64,
    /// The compacted revision, -1 if never compacted.
    pub compact_revision: i64,
    /// The revision hashed up to (the current one when 0 was asked for).
    pub hash_revision: i64,
}

fn truncate(digest: &[u8]) -> u32 {
    let mut first = [0u8; 4];
    first.copy_from_slice(&digest[..4]);
    u32::from_be_bytes(first)
}

/// Hash of every retained change at or below `revision` (0: the current revision), in revision
/// order: (main, sub, record) with the record as stored (kind byte + KeyValue). Compaction is
/// applied through the log, so members at the same revision retain the same changes.
/// etcd's checks: at or below the compacted revision -> Compacted, above current -> Future.
pub fn hash_kv(txn: &ReadTransaction, revision: i64) -> Result<KvHash, KvError> {
    let current_revision = crate::mvcc::current_revision(txn)?;
    let compact_revision = crate::mvcc::compact_revision(txn)?;
    if revision > 0 && revision <= compact_revision {
        return Err(KvError::Compacted);
    }
    if revision > current_revision {
        return Err(KvError::FutureRevision);
    }
    let upto = if revision == 0 {
        current_revision
    } else {
        revision
    };
    let history = txn.open_table(KV_HISTORY).map_err(StorageError::from)?;
    let mut hasher = Sha256::new();
    let changes = history
        .range::<(i64, i64)>(..=(upto, i64::MAX))
        .map_err(StorageError::from)?;
    for entry in changes {
        let (k, v) = entry.map_err(StorageError::from)?;
        let (main, sub) = k.value();
        let record = v.value();
        hasher.update(main.to_be_bytes());
        hasher.update(sub.to_be_bytes());
        hasher.update((record.len() as u64).to_be_bytes());
        hasher.update(record);
    }
    Ok(KvHash {
        hash: truncate(&hasher.finalize()),
        current_revision,
        compact_revision,
        hash_revision: upto,
    })
}

/// Hash of the whole state database's logical contents: every table, as a snapshot writes it.
pub fn hash_all(txn: &ReadTransaction) -> Result<u32, SnapshotError> {
    let mut sink = HashSink(Sha256::new());
    write_snapshot(txn, &mut sink)?;
    Ok(truncate(&sink.0.finalize()))
}

struct HashSink(Sha256);

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use redb::ReadableDatabase;

    use super::*;
    use crate::ops::kv::KvRequest;
    use crate::testing::{TestStore, put_req};
    use baton_proto::etcdserverpb::CompactionRequest;

    fn store_with(puts: &[(&str, &str)]) -> TestStore {
        let s = TestStore::new();
        for (k, v) in puts {
            s.apply(KvRequest::Put(put_req(k, v))).unwrap();
        }
        s
    }

    fn hash_at(s: &TestStore, rev: i64) -> Result<KvHash, KvError> {
        hash_kv(&s.db.begin_read().unwrap(), rev)
    }

    #[test]
    fn equal_histories_hash_equal_and_revisions_are_checked() {
        let writes = [("a", "1"), ("b", "2"), ("a", "3")];
        let one = store_with(&writes);
        let two = store_with(&writes);
        assert_eq!(hash_at(&one, 0).unwrap(), hash_at(&two, 0).unwrap());
        let at3 = hash_at(&one, 3).unwrap();
        assert_eq!(at3.current_revision, 4);
        assert_eq!(at3.compact_revision, -1);
        assert_ne!(at3.hash, hash_at(&one, 4).unwrap().hash);
        assert_eq!(hash_at(&one, 4).unwrap(), hash_at(&one, 0).unwrap());
        assert_eq!(hash_at(&one, 5), Err(KvError::FutureRevision));

        // A store that diverged at one value hashes differently at and after that revision.
        let other = store_with(&[("a", "1"), ("b", "X"), ("a", "3")]);
        assert_eq!(hash_at(&other, 2).unwrap(), hash_at(&one, 2).unwrap());
        assert_ne!(hash_at(&other, 3).unwrap().hash, at3.hash);

        one.apply(KvRequest::Compaction(CompactionRequest {
            revision: 3,
            physical: false,
        }))
        .unwrap();
        assert_eq!(hash_at(&one, 3), Err(KvError::Compacted));
        assert_eq!(hash_at(&one, 4).unwrap().compact_revision, 3);
    }

    #[test]
    fn whole_database_hash_follows_contents() {
        let one = store_with(&[("a", "1")]);
        let two = store_with(&[("a", "1")]);
        let h = |s: &TestStore| hash_all(&s.db.begin_read().unwrap()).unwrap();
        assert_eq!(h(&one), h(&two));
        two.apply(KvRequest::Put(put_req("b", "2"))).unwrap();
        assert_ne!(h(&one), h(&two));
    }
}
