//! The state-machine snapshot a member keeps on disk, and the handle openraft passes around
//! for it: snapshots are built into a file, sent from that file chunk by chunk, received into a
//! file chunk by chunk and installed from it, so no member ever holds a whole snapshot in
//! memory, whatever the size of the state.
//!
//! File layout (integers little-endian):
//! ```text
//! magic "BATNSNPF" | meta length u32 | meta (postcard SnapshotMeta) | data
//! ```
//! where data is the state stream of [`baton_store::storage::snapshot`], which ends with its own
//! SHA-256. The kept snapshot is `snapshot.bin`; it is written under a temporary name, fsynced,
//! renamed into place and the directory fsynced, so a crash leaves the old file or the new one.
//! Snapshots being received are `snapshot.bin.incoming-<n>` beside it until installed; leftovers
//! of a crash are removed when the member starts.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::entry::{TypeConfig, codec};
use baton_store::storage::snapshot::StreamVerifier;

type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
type LogId = openraft::alias::LogIdOf<TypeConfig>;

const MAGIC: &[u8; 8] = b"BATNSNPF";
use baton_limits::SNAPSHOT_META_BYTES_MAX as META_BYTES_MAX;
const INCOMING_INFIX: &str = ".incoming-";
use baton_limits::SNAPSHOT_WRITE_BUFFER_BYTES as WRITE_BUFFER_BYTES;

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Where this member keeps its snapshot. Clones share the bookkeeping.
#[derive(Clone)]
pub struct SnapshotStore {
    path: PathBuf,
    /// Serializes replacing the kept file, and remembers what it holds, so a snapshot built
    /// before an install finished cannot replace the installed, newer one.
    kept: Arc<Mutex<Option<LogId>>>,
    next_incoming: Arc<AtomicU64>,
}

impl SnapshotStore {
    /// Opens the store at `path`, converting a snapshot kept in the format of earlier versions
    /// (one postcard `(meta, bytes)` value) and removing snapshots half-received before a crash.
    pub(crate) fn open(path: PathBuf) -> io::Result<Self> {
        remove_incoming_leftovers(&path)?;
        let store = Self {
            path,
            kept: Arc::default(),
            next_incoming: Arc::default(),
        };
        store.convert_legacy()?;
        let kept = store.current()?.map(|(meta, _)| meta.last_log_id);
        *store.lock_kept() = kept.flatten();
        Ok(store)
    }

    fn lock_kept(&self) -> std::sync::MutexGuard<'_, Option<LogId>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kept snapshot, if any.
    pub(crate) fn current(&self) -> io::Result<Option<(SnapshotMeta, SnapshotFile)>> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let (meta, data_offset) = read_header(&file).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("snapshot file {}: {e}", self.path.display()),
            )
        })?;
        let data_len = file
            .metadata()?
            .len()
            .checked_sub(data_offset)
            .ok_or_else(|| {
                io_err(format!(
                    "snapshot file {} is cut short",
                    self.path.display()
                ))
            })?;
        let snapshot = SnapshotFile {
            file,
            path: self.path.clone(),
            data_offset,
            data_len,
            temporary: false,
        };
        Ok(Some((meta, snapshot)))
    }

    /// Builds the kept snapshot: `write_data` writes the state stream after the header. Blocks
    /// on file I/O and fsyncs; call it off the async workers.
    pub(crate) fn build(
        &self,
        meta: &SnapshotMeta,
        write_data: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<(SnapshotMeta, SnapshotFile)> {
        let tmp = self.path.with_extension("tmp");
        let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, File::create(&tmp)?);
        out.write_all(&encode_header(meta)?)?;
        write_data(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        let building = SnapshotFile::open_temporary(tmp)?;
        self.keep(building, meta)
    }

    /// Starts receiving a snapshot described by `meta` from the leader.
    pub fn receive(&self, meta: &SnapshotMeta) -> io::Result<Incoming> {
        let n = self.next_incoming.fetch_add(1, Ordering::Relaxed);
        let mut name = self.path.clone().into_os_string();
        name.push(format!("{INCOMING_INFIX}{n}"));
        let path = PathBuf::from(name);
        let file = File::create(&path)?;
        // From here on, dropping `incoming` (on an error too) removes the file.
        let mut incoming = Incoming {
            out: Some(BufWriter::with_capacity(WRITE_BUFFER_BYTES, file)),
            path,
            data_len: 0,
            verifier: StreamVerifier::default(),
        };
        if let Some(out) = incoming.out.as_mut() {
            out.write_all(&encode_header(meta)?)?;
        }
        Ok(incoming)
    }

    /// Makes `snapshot` (built or received, described by `meta`) the kept one, unless the kept
    /// one is already newer; returns what is kept afterwards.
    pub(crate) fn keep(
        &self,
        mut snapshot: SnapshotFile,
        meta: &SnapshotMeta,
    ) -> io::Result<(SnapshotMeta, SnapshotFile)> {
        let mut kept = self.lock_kept();
        if *kept > meta.last_log_id {
            tracing::info!(
                kept = ?*kept, offered = ?meta.last_log_id,
                "keeping the newer snapshot already on disk"
            );
            drop(kept);
            return self
                .current()?
                .ok_or_else(|| io_err("the kept snapshot vanished"));
        }
        if snapshot.path != self.path {
            std::fs::rename(&snapshot.path, &self.path)?;
            sync_dir(&self.path)?;
            snapshot.path = self.path.clone();
        }
        snapshot.temporary = false;
        *kept = meta.last_log_id;
        Ok((meta.clone(), snapshot))
    }

    /// Rewrites a snapshot kept by an earlier version in this module's format.
    fn convert_legacy(&self) -> io::Result<()> {
        let mut head = [0u8; MAGIC.len()];
        match File::open(&self.path) {
            Ok(mut f) => {
                if f.read_exact(&mut head).is_ok() && &head == MAGIC {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        let bytes = std::fs::read(&self.path)?;
        let (meta, data): (SnapshotMeta, serde_bytes::ByteBuf) = codec::decode(&bytes)
            .map_err(|e| io_err(format!("snapshot file {}: {e}", self.path.display())))?;
        tracing::info!(path = %self.path.display(), "converting the kept snapshot to the streamed format");
        self.build(&meta, |out| out.write_all(&data))?;
        Ok(())
    }
}

/// A snapshot file: the kept one, or one built or received that is not kept yet (removed when
/// dropped unless it became the kept one).
#[derive(Debug)]
pub struct SnapshotFile {
    file: File,
    path: PathBuf,
    data_offset: u64,
    data_len: u64,
    temporary: bool,
}

impl SnapshotFile {
    fn open_temporary(path: PathBuf) -> io::Result<Self> {
        let file = File::open(&path)?;
        let (_, data_offset) = read_header(&file)?;
        let data_len = file.metadata()?.len().saturating_sub(data_offset);
        Ok(Self {
            file,
            path,
            data_offset,
            data_len,
            temporary: true,
        })
    }

    /// The file, and where its state stream starts and how long it is.
    pub(crate) fn data(&self) -> (&File, u64, u64) {
        (&self.file, self.data_offset, self.data_len)
    }

    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Reads the state stream's bytes from `pos` into `buf`; fewer only at the end.
    pub fn read_data_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.data_len.saturating_sub(pos);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let mut done = 0;
        while done < want {
            let n = self
                .file
                .read_at(&mut buf[done..want], self.data_offset + pos + done as u64)?;
            if n == 0 {
                return Err(io_err("snapshot file shorter than its recorded length"));
            }
            done += n;
        }
        Ok(done)
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if self.temporary
            && let Err(e) = std::fs::remove_file(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a snapshot file");
        }
    }
}

/// A snapshot being received: its chunks go straight to a file. Dropped unfinished, the file
/// is removed.
pub struct Incoming {
    out: Option<BufWriter<File>>,
    path: PathBuf,
    data_len: u64,
    /// Checks the state stream's own checksum as it arrives, so a damaged transfer is refused
    /// here, before openraft is asked to install it (a failed install stops a member's Raft).
    verifier: StreamVerifier,
}

impl Incoming {
    /// Appends the next piece of the state stream.
    pub fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io_err("snapshot already finished"))?;
        out.write_all(chunk)?;
        self.verifier.update(chunk);
        self.data_len += chunk.len() as u64;
        Ok(())
    }

    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Checks what was received, makes it durable and hands it over for install. Blocks on
    /// fsync.
    pub fn finish(mut self) -> io::Result<SnapshotFile> {
        std::mem::take(&mut self.verifier)
            .finish()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let out = self
            .out
            .take()
            .ok_or_else(|| io_err("snapshot already finished"))?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        let path = std::mem::take(&mut self.path);
        let snapshot = SnapshotFile::open_temporary(path.clone());
        if snapshot.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        snapshot
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if self.out.is_some() {
            self.out = None;
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a partly received snapshot");
            }
        }
    }
}

fn encode_header(meta: &SnapshotMeta) -> io::Result<Vec<u8>> {
    let meta = codec::encode(meta).map_err(io_err)?;
    let len = u32::try_from(meta.len())
        .ok()
        .filter(|&n| n <= META_BYTES_MAX)
        .ok_or_else(|| io_err("snapshot meta too large"))?;
    let mut header = Vec::with_capacity(MAGIC.len() + 4 + meta.len());
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&len.to_le_bytes());
    header.extend_from_slice(&meta);
    Ok(header)
}

/// The meta and the offset where the state stream starts.
fn read_header(file: &File) -> io::Result<(SnapshotMeta, u64)> {
    let mut fixed = [0u8; MAGIC.len() + 4];
    file.read_exact_at(&mut fixed, 0)?;
    if &fixed[..MAGIC.len()] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a Baton snapshot file",
        ));
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&fixed[MAGIC.len()..]);
    let len = u32::from_le_bytes(len);
    if len > META_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("snapshot meta of {len} bytes"),
        ));
    }
    let mut meta = vec![0u8; len as usize];
    file.read_exact_at(&mut meta, fixed.len() as u64)?;
    let meta = codec::decode(&meta).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((meta, (fixed.len() + len as usize) as u64))
}

fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

fn remove_incoming_leftovers(path: &Path) -> io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let prefix = format!("{}{INCOMING_INFIX}", name.to_string_lossy());
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            tracing::info!(path = %entry.path().display(), "removing a snapshot received only in part");
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
