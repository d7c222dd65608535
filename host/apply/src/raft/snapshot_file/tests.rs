//! The kept snapshot file: built, received in pieces, refused when damaged or short, never
//! replaced by an older one, and converted from the format of earlier versions.

use openraft::testing::log_id;

use super::{SnapshotMeta, SnapshotStore};
use crate::entry::{TypeConfig, codec};

fn meta(index: u64) -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: Some(log_id::<TypeConfig>(1, 1, index)),
        ..Default::default()
    }
}

/// A well-formed state stream: any body followed by its SHA-256.
fn stream(body: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut bytes = body.to_vec();
    bytes.extend_from_slice(&Sha256::digest(body));
    bytes
}

fn data_of(file: &super::SnapshotFile) -> Vec<u8> {
    let mut buf = vec![0; file.data_len() as usize];
    let n = file.read_data_at(0, &mut buf).expect("read");
    assert_eq!(n, buf.len());
    buf
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_built_snapshot_is_kept_and_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path().join("snapshot.bin")).expect("open");
    assert!(store.current().expect("current").is_none());
    let data = stream(&[5; 3000]);
    let (built_meta, built) = store
        .build(&meta(7), |out| out.write_all(&data))
        .expect("build");
    assert_eq!(built_meta, meta(7));
    assert_eq!(data_of(&built), data);
    drop(built);
    let reopened = SnapshotStore::open(dir.path().join("snapshot.bin")).expect("reopen");
    let (kept_meta, kept) = reopened.current().expect("current").expect("kept");
    assert_eq!(kept_meta, meta(7));
    assert_eq!(data_of(&kept), data);
    assert_eq!(files_in(dir.path()), vec!["snapshot.bin"]);
}

#[test]
fn a_snapshot_received_in_pieces_replaces_the_kept_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path().join("snapshot.bin")).expect("open");
    store
        .build(&meta(3), |out| out.write_all(&stream(b"old")))
        .expect("build");
    let data = stream(&(0..100_000u32).map(|i| i as u8).collect::<Vec<_>>());
    let mut incoming = store.receive(&meta(9)).expect("receive");
    // Pieces of odd sizes, some shorter than the checksum.
    for piece in data.chunks(7).take(3).chain(data[21..].chunks(4099)) {
        incoming.write(piece).expect("write");
    }
    assert_eq!(incoming.data_len(), data.len() as u64);
    let received = incoming.finish().expect("finish");
    let (kept_meta, kept) = store.keep(received, &meta(9)).expect("keep");
    assert_eq!((kept_meta, data_of(&kept)), (meta(9), data.clone()));
    drop(kept);
    assert_eq!(files_in(dir.path()), vec!["snapshot.bin"]);
    let (now_meta, now) = store.current().expect("current").expect("kept");
    assert_eq!((now_meta, data_of(&now)), (meta(9), data));
}

#[test]
fn damaged_short_or_abandoned_transfers_leave_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path().join("snapshot.bin")).expect("open");
    let mut data = stream(&[1; 5000]);
    data[100] ^= 1;
    let mut damaged = store.receive(&meta(2)).expect("receive");
    damaged.write(&data).expect("write");
    assert!(damaged.finish().is_err(), "a damaged snapshot was accepted");
    let mut short = store.receive(&meta(2)).expect("receive");
    short.write(&[1; 10]).expect("write");
    assert!(
        short.finish().is_err(),
        "a snapshot shorter than its checksum was accepted"
    );
    let mut abandoned = store.receive(&meta(2)).expect("receive");
    abandoned.write(&[1; 10]).expect("write");
    drop(abandoned);
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
    // A crash mid-transfer leaves a file that the next start removes.
    std::fs::write(dir.path().join("snapshot.bin.incoming-4"), b"partial").expect("write");
    SnapshotStore::open(dir.path().join("snapshot.bin")).expect("open");
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn an_older_snapshot_never_replaces_a_newer_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SnapshotStore::open(dir.path().join("snapshot.bin")).expect("open");
    let newer = stream(b"newer");
    let mut incoming = store.receive(&meta(20)).expect("receive");
    incoming.write(&newer).expect("write");
    store
        .keep(incoming.finish().expect("finish"), &meta(20))
        .expect("keep");
    // A build that started before the install finishes after it.
    let (kept_meta, kept) = store
        .build(&meta(10), |out| out.write_all(&stream(b"older")))
        .expect("build");
    assert_eq!((kept_meta, data_of(&kept)), (meta(20), newer));
    drop(kept);
    assert_eq!(files_in(dir.path()), vec!["snapshot.bin"]);
}

#[test]
fn a_snapshot_kept_by_an_earlier_version_is_converted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot.bin");
    let data = stream(b"state of an earlier version");
    let legacy = codec::encode(&(meta(5), serde_bytes::Bytes::new(&data))).expect("encode");
    std::fs::write(&path, legacy).expect("write");
    let store = SnapshotStore::open(path).expect("open");
    let (kept_meta, kept) = store.current().expect("current").expect("kept");
    assert_eq!((kept_meta, data_of(&kept)), (meta(5), data));
}
