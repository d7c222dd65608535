//! etcd's `Snapshot` RPC: the state database's snapshot (Baton's own format, see
//! [`baton_store::storage::snapshot`]) in chunks, each with the bytes still to come, then one final
//! message whose blob is the SHA-256 of everything sent before it — what `etcdctl snapshot`
//! appends to the file and checks on restore.
//!
//! etcdctl 3.4 recognises that trailing checksum by the file's size: 512·n + 32 bytes (bbolt
//! files are whole pages). So the content is zero-padded to a multiple of
//! [`SNAPSHOT_STREAM_ALIGN_BYTES`]; Baton's snapshot format knows its own length, and a reader
//! drops the padding.
//!
//! The snapshot is written twice from one read transaction: once only to count its bytes
//! (`remaining_bytes` needs the total up front), once to send it. Memory stays at a few chunks
//! whatever the database size.

use std::io::Write;

use futures::Stream;
use redb::ReadTransaction;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use baton_limits::{SNAPSHOT_STREAM_CHUNK_BYTES, SNAPSHOT_STREAM_QUEUE_CHUNKS};

/// The content's length is a multiple of this (etcdctl's "sector size" for its checksum test).
const SNAPSHOT_STREAM_ALIGN_BYTES: u64 = 512;
use baton_proto::etcdserverpb::SnapshotResponse;
use baton_store::storage::snapshot::write_snapshot;

type Item = Result<SnapshotResponse, Status>;

/// Streams the snapshot of `txn`'s view. The work runs on a blocking thread and stops when the
/// receiver goes away.
pub(crate) fn snapshot_stream(txn: ReadTransaction) -> impl Stream<Item = Item> + Send + 'static {
    let (tx, rx) = mpsc::channel(SNAPSHOT_STREAM_QUEUE_CHUNKS);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = send_snapshot(&txn, &tx) {
            tracing::warn!(error = %e, "snapshot stream ended early");
            let _ = tx.blocking_send(Err(Status::internal(format!("snapshot failed: {e}"))));
        }
    });
    ReceiverStream::new(rx)
}

fn send_snapshot(txn: &ReadTransaction, tx: &mpsc::Sender<Item>) -> anyhow::Result<()> {
    let mut counter = CountingSink(0);
    write_snapshot(txn, &mut counter)?;
    let padding = (SNAPSHOT_STREAM_ALIGN_BYTES - counter.0 % SNAPSHOT_STREAM_ALIGN_BYTES)
        % SNAPSHOT_STREAM_ALIGN_BYTES;
    let mut chunks = ChunkSender {
        tx,
        buf: Vec::with_capacity(SNAPSHOT_STREAM_CHUNK_BYTES),
        remaining: counter.0 + padding,
        hasher: Sha256::new(),
    };
    write_snapshot(txn, &mut chunks)?;
    let zeros = vec![0u8; usize::try_from(padding)?];
    chunks.write_all(&zeros)?;
    chunks.send_buffered()?;
    anyhow::ensure!(
        chunks.remaining == 0,
        "snapshot changed size between passes"
    );
    let digest = chunks.hasher.finalize().to_vec();
    send(
        tx,
        SnapshotResponse {
            header: None,
            remaining_bytes: 0,
            blob: digest,
            version: String::new(),
        },
    )?;
    Ok(())
}

fn send(tx: &mpsc::Sender<Item>, resp: SnapshotResponse) -> std::io::Result<()> {
    tx.blocking_send(Ok(resp))
        .map_err(|_| std::io::Error::other("the client went away"))
}

struct CountingSink(u64);

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Cuts what it is given into chunks, hashing and sending each.
struct ChunkSender<'a> {
    tx: &'a mpsc::Sender<Item>,
    buf: Vec<u8>,
    /// Bytes not yet sent, this chunk's included until it goes.
    remaining: u64,
    hasher: Sha256,
}

impl ChunkSender<'_> {
    fn send_buffered(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let blob = std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(SNAPSHOT_STREAM_CHUNK_BYTES),
        );
        self.hasher.update(&blob);
        self.remaining = self
            .remaining
            .checked_sub(blob.len() as u64)
            .ok_or_else(|| std::io::Error::other("snapshot grew between passes"))?;
        send(
            self.tx,
            SnapshotResponse {
                header: None,
                remaining_bytes: self.remaining,
                blob,
                version: String::new(),
            },
        )
    }
}

impl Write for ChunkSender<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = SNAPSHOT_STREAM_CHUNK_BYTES - self.buf.len();
        let n = room.min(buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() == SNAPSHOT_STREAM_CHUNK_BYTES {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use redb::ReadableDatabase;

    use super::*;
    use baton_store::ops::kv::KvRequest;
    use baton_store::testing::{TestStore, put_req};

    #[tokio::test]
    async fn chunks_count_down_and_end_with_the_sha256_of_the_content() {
        let s = TestStore::new();
        let value = "v".repeat(1000);
        for i in 0..200 {
            s.apply(KvRequest::Put(put_req(&format!("k{i}"), &value)))
                .unwrap();
        }
        let mut expected = Vec::new();
        write_snapshot(&s.db.begin_read().unwrap(), &mut expected).unwrap();
        assert!(expected.len() > 2 * SNAPSHOT_STREAM_CHUNK_BYTES);

        let replies: Vec<SnapshotResponse> = snapshot_stream(s.db.begin_read().unwrap())
            .map(|r| r.unwrap())
            .collect()
            .await;
        let (last, chunks) = replies.split_last().unwrap();
        let mut content = Vec::new();
        let mut remainders = Vec::new();
        for chunk in chunks {
            assert!(chunk.blob.len() <= SNAPSHOT_STREAM_CHUNK_BYTES);
            content.extend_from_slice(&chunk.blob);
            remainders.push(chunk.remaining_bytes);
        }
        assert_eq!(content.len() as u64 % SNAPSHOT_STREAM_ALIGN_BYTES, 0);
        let (snapshot, padding) = content.split_at(expected.len());
        assert_eq!(snapshot, expected.as_slice());
        assert!(padding.iter().all(|&b| b == 0));
        assert!(padding.len() < SNAPSHOT_STREAM_ALIGN_BYTES as usize);
        let mut sent = 0;
        for (chunk, remaining) in chunks.iter().zip(&remainders) {
            sent += chunk.blob.len();
            assert_eq!(*remaining, (content.len() - sent) as u64);
        }
        let expected = content;
        assert_eq!(last.remaining_bytes, 0);
        assert_eq!(last.blob, Sha256::digest(&expected).to_vec());
    }
}
