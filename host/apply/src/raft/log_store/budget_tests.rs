//! Replication reads stay within the byte budget a follower accepts, whether the entries are
//! still being written, cached, or read back from disk.

use openraft::storage::{RaftLogReader, RaftLogStorageExt};
use openraft::testing::log_id;

use super::{Entry, LogStore};
use crate::entry::{Command, TypeConfig};
use baton_limits::REPLICATION_BATCH_BYTES_MAX;
use baton_proto::batonpb::LogCommand;
use baton_proto::batonpb::log_command::Op;
use baton_proto::etcdserverpb::PutRequest;

fn put_entry(index: u64, value_bytes: usize) -> Entry {
    let command = LogCommand {
        leader_time_ms: 1,
        op: Some(Op::Put(PutRequest {
            key: format!("k{index}").into_bytes(),
            value: vec![7; value_bytes],
            ..Default::default()
        })),
    };
    Entry {
        log_id: log_id::<TypeConfig>(1, 1, index),
        payload: openraft::EntryPayload::Normal(Command::new(command)),
    }
}

/// Reads `[start, end)` the way replication does, message by message, checking each message.
async fn read_in_messages(store: &mut LogStore, start: u64, end: u64) -> Vec<usize> {
    let mut next = start;
    let mut sizes = Vec::new();
    while next < end {
        let got = store
            .limited_get_log_entries(next, end)
            .await
            .expect("read");
        assert!(!got.is_empty(), "an empty read of a non-empty range");
        let indexes: Vec<u64> = got.iter().map(|e| e.log_id.index).collect();
        let want: Vec<u64> = (next..next + got.len() as u64).collect();
        assert_eq!(indexes, want, "entries out of order or with a gap");
        let bytes: usize = got
            .iter()
            .map(|e| crate::entry::codec::encode(e).expect("encode").len())
            .sum();
        assert!(
            got.len() == 1 || bytes <= REPLICATION_BATCH_BYTES_MAX,
            "{} entries of {bytes} bytes in one message",
            got.len()
        );
        sizes.push(got.len());
        next += got.len() as u64;
    }
    sizes
}

#[tokio::test]
async fn large_entries_are_sent_a_budget_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft-log");
    let big = 1024 * 1024;
    let mut store = LogStore::open(&path).expect("open");
    // 40 MiB of 1 MiB puts, then small ones: openraft would ask for up to 300 at once.
    // openraft's log starts at index 0.
    let entries: Vec<Entry> = (0..40)
        .map(|i| put_entry(i, big))
        .chain((40..340).map(|i| put_entry(i, 10)))
        .collect();
    store.blocking_append(entries).await.expect("append");
    let sizes = read_in_messages(&mut store, 0, 340).await;
    assert!(
        sizes[0] < 40,
        "the first message took {} large entries",
        sizes[0]
    );
    assert!(sizes.len() >= 3, "40 MiB in {} messages", sizes.len());
    // Read back from disk after a restart (nothing cached), the same bound holds.
    drop(store);
    let mut reopened = LogStore::open_with(&path, super::wal::SEGMENT_BYTES, 0).expect("reopen");
    let again = read_in_messages(&mut reopened, 0, 340).await;
    assert_eq!(again, sizes);
}

#[tokio::test]
async fn an_entry_larger_than_the_budget_goes_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = LogStore::open(&dir.path().join("raft-log")).expect("open");
    let entries = vec![
        put_entry(0, 10),
        put_entry(1, REPLICATION_BATCH_BYTES_MAX + 1),
        put_entry(2, 10),
    ];
    store.blocking_append(entries).await.expect("append");
    assert_eq!(read_in_messages(&mut store, 0, 3).await, vec![1, 1, 1]);
}
