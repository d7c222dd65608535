//! The Raft log's files: a directory of preallocated segment files holding checksummed records
//! that are only ever appended.
//!
//! A batch of records costs one `pwrite` and one `fdatasync`. Segments are zero-filled when
//! created, so those writes land in blocks the file system has already allocated and the sync
//! flushes data, not file-system metadata; the next segment is zero-filled in the background
//! while the active one fills up.
//!
//! Where the file system allows it the active segment is written with direct I/O (`O_DIRECT`):
//! the bytes go from one aligned buffer to the device, skipping the page cache and its
//! writeback, which takes a third less CPU per synced write and shortens the sync. Direct
//! writes cover whole blocks, so each rewrites the partly written last block (kept in memory)
//! and pads the new last block with zeros, which is what the zero-filled segment already holds
//! there: the file's bytes are exactly those of buffered writes.
//!
//! Record: `len u32 | crc32 u32 | epoch u64 | payload (len bytes)`, little-endian, the CRC over
//! epoch and payload. Every process start takes a new, durably recorded epoch, and epochs never
//! go back along the log: after a crash tore a write, what follows the tear may still hold intact
//! records of the lost write, and new records written over the tear would otherwise let replay
//! run on into them. Every write opens with a mark record (a meta record under `WRITE_KEY`)
//! giving the write's own offset and length.
//!
//! Replay tells a torn write from damage. Writes are sequential and each is synced before the
//! next starts, so a crash can only tear the last write of a run. Where replay meets a damaged,
//! zeroed or stale record it scans the rest of the segment: an intact mark of this or a later
//! epoch there, or an intact record past the end of the torn write, means writes that were
//! acknowledged follow the damage, and opening the log fails rather than dropping them. A
//! segment whose last write was cut short must also be followed by one started by a later run.
//! Logs written before marks existed still open; in them any intact record of this or a later
//! epoch behind the damage counts as an acknowledged one.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Size a new segment is zero-filled to (see the limit's doc).
pub const SEGMENT_BYTES: u64 = baton_limits::RAFT_LOG_SEGMENT_BYTES;
const HEADER_BYTES: usize = 16;
/// Alignment of direct writes: offset, length and buffer address. 4 KiB satisfies every
/// device's logical block size.
const DIRECT_BLOCK: usize = 4096;
const EPOCH_FILE: &str = "epoch";
/// The next segment, zero-filled in the background while the active one fills up; not a
/// segment until renamed (replay reads `*.wal` only).
const SPARE_FILE: &str = "spare.tmp";

const KIND_APPEND: u8 = 1;
const KIND_TRUNCATE_FROM: u8 = 2;
const KIND_PURGE_TO: u8 = 3;
const KIND_META: u8 = 4;

/// Meta key of the record that opens every write; its value is the write's offset in the segment
/// and its length in bytes (this record included), both u64. A meta record keeps the log readable
/// by a version that predates marks: it only stores one more meta value.
const WRITE_KEY: &str = "w";
/// Encoded size of a write's opening mark: header, kind, key length, key, offset and length.
pub const WRITE_MARK_BYTES: usize = HEADER_BYTES + 2 + WRITE_KEY.len() + 16;

/// What to do about a log that cannot be trusted, for every corruption error.
pub const RESTORE_ADVICE: &str = "restore this member from a peer: `etcdctl member remove` it, \
    delete its data dir, `etcdctl member add` it again and start it with \
    --initial-cluster-state existing";

/// One logged change, in the order it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// Entry `index`, encoded.
    Append { index: u64, entry: &'a [u8] },
    /// Entries at or above the index are gone.
    TruncateFrom(u64),
    /// Entries at or below the index are gone.
    PurgeTo(u64),
    /// A named value (vote, committed id, purge point); the last one written wins.
    Meta { key: &'a str, value: &'a [u8] },
}

/// Where an appended entry's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

/// Name of the file whose exclusive lock marks the log as in use by a process.
const LOCK_FILE: &str = "LOCK";

/// Takes the log directory for this process: one writer per log, whatever the process.
fn lock_dir(dir: &Path) -> io::Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!(
                "the raft log in {} is in use by another process (is another baton serving \
                 this data dir?)",
                dir.display()
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Records encoded for one write. Append offsets are relative to the start of the buffer.
#[derive(Default)]
pub struct Batch {
    bytes: Vec<u8>,
    /// (index, offset of the entry bytes in `bytes`, length) of every append.
    appends: Vec<(u64, u64, u32)>,
    /// The epoch of every record pushed, or None if they differ: [`Wal::write`] refuses a batch
    /// not of its own epoch, since replay relies on epochs never going back.
    epoch: Option<u64>,
}

impl Batch {
    pub fn push(&mut self, epoch: u64, record: &Record<'_>) {
        self.epoch = match (self.bytes.is_empty(), self.epoch) {
            (true, _) => Some(epoch),
            (false, same) => same.filter(|e| *e == epoch),
        };
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&[0; HEADER_BYTES]);
        match record {
            Record::Append { index, entry } => {
                self.bytes.push(KIND_APPEND);
                self.bytes.extend_from_slice(&index.to_le_bytes());
                let at = self.bytes.len() as u64;
                self.bytes.extend_from_slice(entry);
                self.appends.push((*index, at, entry.len() as u32));
            }
            Record::TruncateFrom(i) => {
                self.bytes.push(KIND_TRUNCATE_FROM);
                self.bytes.extend_from_slice(&i.to_le_bytes());
            }
            Record::PurgeTo(i) => {
                self.bytes.push(KIND_PURGE_TO);
                self.bytes.extend_from_slice(&i.to_le_bytes());
            }
            Record::Meta { key, value } => {
                self.bytes.push(KIND_META);
                self.bytes.push(key.len() as u8);
                self.bytes.extend_from_slice(key.as_bytes());
                self.bytes.extend_from_slice(value);
            }
        }
        let payload_len = (self.bytes.len() - start - HEADER_BYTES) as u32;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&epoch.to_le_bytes());
        crc.update(&self.bytes[start + HEADER_BYTES..]);
        let header = &mut self.bytes[start..start + HEADER_BYTES];
        header[0..4].copy_from_slice(&payload_len.to_le_bytes());
        header[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        header[8..16].copy_from_slice(&epoch.to_le_bytes());
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Encoded bytes so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The encoded records (tests lay out logs of older versions with them).
    #[cfg(any(test, feature = "testing"))]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// One segment file: its sequence number (its name) and the highest entry index it holds.
struct Segment {
    file: Arc<File>,
    path: PathBuf,
    max_index: Option<u64>,
}

/// The segment directory, as the writer sees it.
pub struct Wal {
    /// Held open with an exclusive lock for as long as this writer lives (see [`lock_dir`]).
    _lock: File,
    dir: PathBuf,
    epoch: u64,
    /// Size new segments are zero-filled to.
    segment_bytes: u64,
    segments: BTreeMap<u64, Segment>,
    /// Sequence number of the segment being written, its size, and where its written part ends.
    active: u64,
    active_len: u64,
    offset: u64,
    /// The latest value of every meta key written so far: each new segment starts with them, so
    /// a segment can be deleted without losing any.
    meta: BTreeMap<String, Vec<u8>>,
    /// Set when a segment was created or deleted since [`Self::files_if_changed`] last ran.
    files_changed: bool,
    /// Zero-filling the next segment ([`SPARE_FILE`], `segment_bytes` long) off the writer
    /// thread: a rotation then only renames it, instead of holding every write up for the ~12 ms
    /// it takes to write and sync 16 MiB.
    spare: Option<std::thread::JoinHandle<io::Result<()>>>,
    /// The active segment opened for direct writes, if the file system allows them.
    direct: Option<File>,
    /// The active segment's bytes from the last `DIRECT_BLOCK` boundary up to `offset`, which
    /// the next direct write starts with.
    tail: Vec<u8>,
    /// Reused for direct writes; over-allocated so an aligned window fits.
    scratch: Vec<u8>,
}

/// What replaying the directory found, in log order.
pub struct Replayed {
    pub entries: BTreeMap<u64, (Loc, Vec<u8>)>,
    pub meta: BTreeMap<String, Vec<u8>>,
}

fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.wal")
}

fn corrupt(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Wal {
    /// Opens (or creates) the log in `dir` and replays it. A write torn by a crash ends its
    /// segment; damage with acknowledged records behind it is an error naming the segment, the
    /// offset and [`RESTORE_ADVICE`].
    pub fn open(dir: &Path) -> io::Result<(Wal, Replayed)> {
        Self::open_with(dir, SEGMENT_BYTES)
    }

    /// [`Self::open`] with new segments of `segment_bytes` (tests use small ones).
    pub fn open_with(dir: &Path, segment_bytes: u64) -> io::Result<(Wal, Replayed)> {
        std::fs::create_dir_all(dir)?;
        // Before anything is read or written: a second process on a live member's log would
        // otherwise take a new epoch and rewrite the spare segment under it.
        let lock = lock_dir(dir)?;
        let epoch = next_epoch(dir)?;
        let mut seqs = Vec::new();
        for item in std::fs::read_dir(dir)? {
            let name = item?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(hex) = name.strip_suffix(".wal")
                && let Ok(seq) = u64::from_str_radix(hex, 16)
            {
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();
        let mut wal = Wal {
            _lock: lock,
            dir: dir.to_path_buf(),
            epoch,
            segment_bytes,
            segments: BTreeMap::new(),
            active: 0,
            active_len: 0,
            offset: 0,
            meta: BTreeMap::new(),
            files_changed: false,
            spare: None,
            direct: None,
            tail: Vec::new(),
            scratch: Vec::new(),
        };
        let mut replayed = Replayed {
            entries: BTreeMap::new(),
            meta: BTreeMap::new(),
        };
        let mut last_epoch = 0;
        // The previous segment's path and how it ended, for the check across segments.
        let mut previous: Option<(PathBuf, Replay)> = None;
        for (i, seq) in seqs.iter().enumerate() {
            let path = dir.join(segment_name(*seq));
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let bytes = std::fs::read(&path)?;
            let len = bytes.len() as u64;
            let replay = replay_segment(*seq, &bytes, epoch, &mut last_epoch, &mut replayed)
                .map_err(|d| d.into_error(&path))?;
            if let Some((previous_path, ended)) = &previous {
                check_followed_by_later_run(previous_path, ended, replay.first_epoch)?;
            }
            if let Stop::Torn { .. } = replay.stop {
                tracing::warn!(
                    segment = %path.display(),
                    at = replay.end,
                    last = i + 1 == seqs.len(),
                    "a raft log segment ends at a write torn by a crash; the log continues \
                     from there"
                );
            }
            wal.segments.insert(
                *seq,
                Segment {
                    file: Arc::new(file),
                    path: path.clone(),
                    max_index: replay.max_index,
                },
            );
            wal.active = *seq;
            wal.active_len = len;
            wal.offset = replay.end;
            let block_start = replay.end as usize / DIRECT_BLOCK * DIRECT_BLOCK;
            wal.tail = bytes[block_start..replay.end as usize].to_vec();
            previous = Some((path, replay));
        }
        // Replay drops records of a lower epoch than the one before them, so records of this
        // run must sort after all of them: an epoch file that went back would lose them.
        if last_epoch >= epoch {
            return Err(corrupt(format!(
                "the raft log in {} holds records of epoch {last_epoch}, but its epoch file is \
                 behind ({}); {RESTORE_ADVICE}",
                dir.display(),
                epoch - 1
            )));
        }
        wal.meta = replayed.meta.clone();
        if wal.segments.is_empty() {
            wal.create_segment(1, segment_bytes)?;
        } else {
            let active = &wal.segments[&wal.active].path;
            wal.direct = open_direct(active);
            wal.prepare_spare();
        }
        Ok((wal, replayed))
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The open file of every segment, for readers.
    pub fn files(&self) -> BTreeMap<u64, Arc<File>> {
        self.segments
            .iter()
            .map(|(seq, s)| (*seq, s.file.clone()))
            .collect()
    }

    /// [`Self::files`] if a segment was created or deleted since the last call, else None: the
    /// set changes once per rotation or purge, not with every write.
    pub fn files_if_changed(&mut self) -> Option<BTreeMap<u64, Arc<File>>> {
        std::mem::take(&mut self.files_changed).then(|| self.files())
    }

    /// Writes `batch` durably; returns the location of each appended entry, in order.
    pub fn write(&mut self, batch: &Batch) -> io::Result<Vec<(u64, Loc)>> {
        if !batch.is_empty() && batch.epoch != Some(self.epoch) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a raft log batch of epoch {:?} offered to the writer of epoch {}",
                    batch.epoch, self.epoch
                ),
            ));
        }
        // Room for the mark, the records, and a zero header after them.
        let needed = (WRITE_MARK_BYTES + batch.bytes.len() + HEADER_BYTES) as u64;
        let mut metas = Batch::default();
        if self.offset + needed > self.active_len {
            let meta = std::mem::take(&mut self.meta);
            for (key, value) in &meta {
                metas.push(self.epoch, &Record::Meta { key, value });
            }
            self.meta = meta;
            let size = self.segment_bytes.max(metas.bytes.len() as u64 + needed);
            self.create_segment(self.active + 1, size)?;
        }
        let total = (WRITE_MARK_BYTES + metas.bytes.len() + batch.bytes.len()) as u64;
        let mut start = Batch::default();
        let mark = write_mark(self.offset, total);
        start.push(
            self.epoch,
            &Record::Meta {
                key: WRITE_KEY,
                value: &mark,
            },
        );
        debug_assert_eq!(start.bytes.len(), WRITE_MARK_BYTES);
        start.bytes.extend_from_slice(&metas.bytes);
        let base = self.offset + start.bytes.len() as u64;
        self.append_durably(&start.bytes, &batch.bytes)?;
        let active = self.active;
        let mut locs = Vec::with_capacity(batch.appends.len());
        for (index, at, len) in &batch.appends {
            let loc = Loc {
                segment: active,
                offset: base + at,
                len: *len,
            };
            locs.push((*index, loc));
        }
        if let Some(segment) = self.segments.get_mut(&active) {
            let top = batch.appends.iter().map(|(i, _, _)| *i).max();
            segment.max_index = segment.max_index.max(top);
        }
        Ok(locs)
    }

    /// Remembers a meta value just written (it goes at the start of every later segment).
    pub fn note_meta(&mut self, key: &str, value: &[u8]) {
        self.meta.insert(key.to_string(), value.to_vec());
    }

    /// Deletes the oldest segments while every entry they hold is at or below `index` (never the
    /// active one). Only a prefix goes: a truncation recorded in a segment can concern entries
    /// of any older segment, so a segment outlives none that came before it.
    pub fn delete_purged(&mut self, index: u64) -> io::Result<()> {
        let doomed: Vec<u64> = self
            .segments
            .iter()
            .take_while(|(seq, s)| **seq != self.active && s.max_index.is_none_or(|m| m <= index))
            .map(|(seq, _)| *seq)
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        for seq in doomed {
            if let Some(segment) = self.segments.remove(&seq) {
                self.files_changed = true;
                std::fs::remove_file(&segment.path)?;
            }
        }
        sync_dir(&self.dir)
    }

    fn active_file(&self) -> &File {
        // The active segment is always in the map: it is only replaced by create_segment.
        &self.segments[&self.active].file
    }

    /// Appends `first` then `second` at the end of the active segment and makes them durable.
    fn append_durably(&mut self, first: &[u8], second: &[u8]) -> io::Result<()> {
        // A direct write starts at the last block boundary, with the kept tail, and is padded to
        // the next one.
        let at = self.offset - self.tail.len() as u64;
        let total = (self.tail.len() + first.len() + second.len()).next_multiple_of(DIRECT_BLOCK);
        // The padded write must stay inside the segment: past its end it would grow the file
        // (a metadata change to sync). A segment sized for one large batch can end mid-block.
        if self.direct.is_some() && at + total as u64 <= self.active_len {
            match self.write_direct(at, total, first, second) {
                Ok(()) => return Ok(()),
                // Refused before anything was written (an alignment the file system does not
                // accept): write through the page cache from now on.
                Err(error) if error.kind() == io::ErrorKind::InvalidInput => {
                    tracing::warn!(%error, "direct writes to the raft log refused; using buffered writes");
                    self.direct = None;
                }
                Err(error) => return Err(error),
            }
        }
        let file = self.active_file();
        file.write_all_at(first, self.offset)?;
        file.write_all_at(second, self.offset + first.len() as u64)?;
        file.sync_data()?;
        self.advance(first, second);
        Ok(())
    }

    /// Makes every later write go through the page cache (tests compare the two ways).
    #[cfg(any(test, feature = "testing"))]
    pub fn without_direct_writes(&mut self) {
        self.direct = None;
    }

    /// Whether the active segment is written directly.
    #[cfg(any(test, feature = "testing"))]
    pub fn writes_directly(&self) -> bool {
        self.direct.is_some()
    }

    /// One aligned direct write of `total` bytes at `at`, the last block boundary: the kept
    /// tail, the new bytes, zeros to the next boundary.
    fn write_direct(
        &mut self,
        at: u64,
        total: usize,
        first: &[u8],
        second: &[u8],
    ) -> io::Result<()> {
        let Some(file) = &self.direct else {
            return Err(io::Error::other("no direct file"));
        };
        if self.scratch.len() < total + DIRECT_BLOCK {
            self.scratch = vec![0; total + DIRECT_BLOCK];
        }
        let skew = self.scratch.as_ptr().align_offset(DIRECT_BLOCK);
        let buf = &mut self.scratch[skew..skew + total];
        let (head, rest) = buf.split_at_mut(self.tail.len());
        head.copy_from_slice(&self.tail);
        let (a, rest) = rest.split_at_mut(first.len());
        a.copy_from_slice(first);
        let (b, pad) = rest.split_at_mut(second.len());
        b.copy_from_slice(second);
        pad.fill(0);
        file.write_all_at(buf, at)?;
        file.sync_data()?;
        self.advance(first, second);
        Ok(())
    }

    /// Moves the end of the active segment past `first` and `second`, just written, and keeps
    /// the bytes of its last partial block (the end of `tail`, `first`, `second` together).
    fn advance(&mut self, first: &[u8], second: &[u8]) {
        self.offset += (first.len() + second.len()) as u64;
        let mut need = self.offset as usize % DIRECT_BLOCK;
        let mut pieces = Vec::with_capacity(3);
        for part in [second, first, self.tail.as_slice()] {
            let take = need.min(part.len());
            pieces.push(&part[part.len() - take..]);
            need -= take;
        }
        pieces.reverse();
        self.tail = pieces.concat();
    }

    /// Creates segment `seq` zero-filled to `size` bytes and makes it the active one: the spare
    /// file when it is ready and large enough, else one zero-filled here.
    fn create_segment(&mut self, seq: u64, size: u64) -> io::Result<()> {
        let path = self.dir.join(segment_name(seq));
        let spare = self.dir.join(SPARE_FILE);
        let spare_ready = match self.spare.take().map(|h| h.join()) {
            Some(Ok(Ok(()))) => size <= self.segment_bytes,
            Some(Ok(Err(error))) => {
                tracing::warn!(%error, "preparing the next raft log segment failed; creating it now");
                false
            }
            Some(Err(_)) => {
                tracing::warn!("the thread preparing the next raft log segment panicked");
                false
            }
            None => false,
        };
        if spare_ready {
            std::fs::rename(&spare, &path)?;
        } else {
            let tmp = path.with_extension("tmp");
            zero_filled(&tmp, size)?;
            std::fs::rename(&tmp, &path)?;
        }
        sync_dir(&self.dir)?;
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        self.segments.insert(
            seq,
            Segment {
                file: Arc::new(file),
                path,
                max_index: None,
            },
        );
        self.files_changed = true;
        self.active = seq;
        self.active_len = size;
        self.offset = 0;
        self.tail.clear();
        self.direct = self.segments.get(&seq).and_then(|s| open_direct(&s.path));
        self.prepare_spare();
        Ok(())
    }

    /// Starts zero-filling the spare segment in the background. If the thread cannot start, the
    /// next rotation creates its segment itself.
    fn prepare_spare(&mut self) {
        let (path, size) = (self.dir.join(SPARE_FILE), self.segment_bytes);
        let started = std::thread::Builder::new()
            .name("raft-log-spare".into())
            .spawn(move || zero_filled(&path, size));
        match started {
            Ok(handle) => self.spare = Some(handle),
            Err(error) => {
                tracing::warn!(%error, "could not start preparing the next raft log segment")
            }
        }
    }
}

impl Drop for Wal {
    /// Lets a spare being written finish, so the directory is quiet once the log is closed.
    fn drop(&mut self) {
        if let Some(handle) = self.spare.take() {
            let _ = handle.join();
        }
    }
}

/// `path` opened for direct writes, or None where the file system does not support them.
fn open_direct(path: &Path) -> Option<File> {
    let flags = rustix::fs::OFlags::DIRECT.bits();
    match OpenOptions::new()
        .write(true)
        .custom_flags(flags as i32)
        .open(path)
    {
        Ok(file) => Some(file),
        Err(error) => {
            tracing::debug!(%error, path = %path.display(), "no direct writes to the raft log");
            None
        }
    }
}

/// Writes `path` as `size` zero bytes and syncs it.
fn zero_filled(path: &Path, size: u64) -> io::Result<()> {
    let mut f = File::create(path)?;
    let zeros = vec![0u8; 1024 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

/// The value of a write's opening mark.
fn write_mark(offset: u64, len: u64) -> [u8; 16] {
    let mut mark = [0; 16];
    mark[..8].copy_from_slice(&offset.to_le_bytes());
    mark[8..].copy_from_slice(&len.to_le_bytes());
    mark
}

/// A write, as its opening mark describes it.
#[derive(Debug, Clone, Copy)]
struct Span {
    end: u64,
    epoch: u64,
}

/// The write `record`, found at `at`, opens; None if it is no mark. A mark must name its own
/// offset: a copy of one elsewhere (a version without marks copies meta values into each new
/// segment) is not one.
fn as_mark(record: &Record<'_>, at: usize, epoch: u64) -> Option<Span> {
    let Record::Meta { key, value } = record else {
        return None;
    };
    if *key != WRITE_KEY || value.len() != 16 || le_u64(value, 0) != Some(at as u64) {
        return None;
    }
    let len = le_u64(value, 8)?;
    let end = (at as u64).checked_add(len)?;
    Some(Span { end, epoch })
}

/// How the written part of a segment ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// After a complete write, with only zeros behind it.
    Clean,
    /// At a damaged, zeroed or stale record that no acknowledged record follows: a crash tore the
    /// segment's last write (or an earlier run's, since written over). `epoch` is the torn
    /// write's when known.
    Torn { epoch: Option<u64> },
}

/// What replaying one segment found.
struct Replay {
    /// Where the written part ends: the next write goes there.
    end: u64,
    stop: Stop,
    first_epoch: Option<u64>,
    max_index: Option<u64>,
}

/// Damage with acknowledged records behind it: what replay must not drop silently.
struct Damage {
    offset: u64,
    what: String,
}

impl Damage {
    fn into_error(self, path: &Path) -> io::Error {
        corrupt(format!(
            "raft log segment {} is corrupt at byte {}: {}; records written after the damage \
             were acknowledged, so this member's log cannot be trusted; {RESTORE_ADVICE}",
            path.display(),
            self.offset,
            self.what
        ))
    }
}

/// A segment whose last write was torn must be followed by one that a later run started: had
/// the same run gone on writing, the write was synced before, and the tear is damage.
fn check_followed_by_later_run(path: &Path, ended: &Replay, next: Option<u64>) -> io::Result<()> {
    if let (Stop::Torn { epoch: Some(torn) }, Some(next)) = (ended.stop, next)
        && next <= torn
    {
        let what = format!(
            "its last write (epoch {torn}) is cut short, yet the next segment goes on in epoch \
             {next}, so that write had completed"
        );
        let damage = Damage {
            offset: ended.end,
            what,
        };
        return Err(damage.into_error(path));
    }
    Ok(())
}

/// One record as found in a segment.
enum Read<'a> {
    /// No record: a zero header with only zeros behind it, or the end of the file.
    End,
    Good {
        epoch: u64,
        record: Record<'a>,
        payload_at: usize,
        next: usize,
    },
    /// Not a record, and why.
    Bad(&'static str),
}

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let raw: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(raw))
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw))
}

/// The record at `at`, whatever its epoch.
fn read_at(bytes: &[u8], at: usize) -> Read<'_> {
    let rest = bytes.get(at..).unwrap_or_default();
    let (Some(len), Some(crc), Some(epoch)) = (le_u32(rest, 0), le_u32(rest, 4), le_u64(rest, 8))
    else {
        return match rest.iter().all(|b| *b == 0) {
            true => Read::End,
            false => Read::Bad("a record header is cut short by the end of the file"),
        };
    };
    if len == 0 {
        // Zero-filled space, unless something follows: a zeroed header (a lost write).
        return match rest.iter().all(|b| *b == 0) {
            true => Read::End,
            false => Read::Bad("a record header is zero but data follows it"),
        };
    }
    let payload_at = at + HEADER_BYTES;
    let Some(payload) = rest.get(HEADER_BYTES..HEADER_BYTES + len as usize) else {
        return Read::Bad("a record's length runs past the end of the file");
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&epoch.to_le_bytes());
    hasher.update(payload);
    if hasher.finalize() != crc {
        return Read::Bad("a record fails its checksum");
    }
    let Some(record) = parse(payload) else {
        return Read::Bad("a record's payload cannot be parsed");
    };
    Read::Good {
        epoch,
        record,
        payload_at,
        next: payload_at + len as usize,
    }
}

/// Replays one segment into `out`. `epoch_now` is this run's epoch; `last_epoch` that of the
/// last record replayed so far, in this segment or an earlier one.
fn replay_segment(
    seq: u64,
    bytes: &[u8],
    epoch_now: u64,
    last_epoch: &mut u64,
    out: &mut Replayed,
) -> Result<Replay, Damage> {
    let mut at = 0usize;
    let mut span: Option<Span> = None;
    let mut first_epoch = None;
    let mut max_index = None;
    loop {
        // The write under way at `at`, if its mark said it is longer.
        let open = span.filter(|s| (at as u64) < s.end);
        let why = match read_at(bytes, at) {
            Read::End => {
                // Zeros where the rest of a write should be: its end was never written.
                let stop = match open {
                    Some(s) => Stop::Torn {
                        epoch: Some(s.epoch),
                    },
                    None => Stop::Clean,
                };
                return Ok(Replay {
                    end: at as u64,
                    stop,
                    first_epoch,
                    max_index,
                });
            }
            Read::Good { epoch, .. } if epoch < *last_epoch => "a record of an earlier run follows",
            Read::Good {
                epoch,
                record,
                payload_at,
                next,
            } => {
                match as_mark(&record, at, epoch) {
                    // Only a later run, writing over a tear, starts a write inside another.
                    Some(_) if open.is_some_and(|s| s.epoch == epoch) => {
                        return Err(Damage {
                            offset: at as u64,
                            what: format!(
                                "a write of epoch {epoch} begins inside the previous write of \
                                 the same run"
                            ),
                        });
                    }
                    Some(mark) => span = Some(mark),
                    None => apply_record(seq, &record, payload_at as u64, out, &mut max_index),
                }
                first_epoch.get_or_insert(epoch);
                *last_epoch = epoch;
                at = next;
                continue;
            }
            Read::Bad(why) => why,
        };
        let found =
            scan_after_damage(bytes, at, *last_epoch, epoch_now, span).map_err(|what| Damage {
                offset: at as u64,
                what: format!("{why}, and {what}"),
            })?;
        let epoch = open.map(|s| s.epoch).max(found);
        return Ok(Replay {
            end: at as u64,
            stop: Stop::Torn { epoch },
            first_epoch,
            max_index,
        });
    }
}

/// Looks behind the damaged record at `damaged` for intact records that a torn last write cannot
/// explain. Stale records (of an epoch below `last_epoch`) are left over from a lost write an
/// earlier run wrote over; records of the torn write itself may follow the tear up to its end;
/// anything else was written after, so the damaged write had been acknowledged. `span` is the
/// last write whose mark was replayed. Returns the highest epoch of the torn write's records
/// found, or what was found that makes the damage corruption.
fn scan_after_damage(
    bytes: &[u8],
    damaged: usize,
    last_epoch: u64,
    epoch_now: u64,
    span: Option<Span>,
) -> Result<Option<u64>, String> {
    let torn = span.filter(|s| (damaged as u64) < s.end);
    // Right after a complete write, or at the start of a segment, the damaged record is the
    // mark of the write it opens, so records behind it can be that write's. In a part of the
    // log that predates marks the writes cannot be told apart.
    let opens_write = torn.is_none() && (span.is_some() || damaged == 0);
    let floor = last_epoch.max(1);
    let mut found = None;
    let mut p = damaged + 1;
    while p + HEADER_BYTES <= bytes.len() {
        // Cheap tests first: this runs at every byte offset of up to a whole segment.
        let epoch = le_u64(bytes, p + 8).unwrap_or(0);
        if epoch < floor || epoch >= epoch_now || le_u32(bytes, p) == Some(0) {
            p += 1;
            continue;
        }
        let Read::Good { record, next, .. } = read_at(bytes, p) else {
            p += 1;
            continue;
        };
        if as_mark(&record, p, epoch).is_some() {
            return Err(format!(
                "an intact write of epoch {epoch} begins at byte {p}"
            ));
        }
        match torn {
            Some(s) if p as u64 >= s.end => {
                return Err(format!(
                    "an intact record of epoch {epoch} lies at byte {p}, past the end of the \
                     damaged write (byte {})",
                    s.end
                ));
            }
            Some(_) => {}
            None if opens_write => {}
            None => {
                return Err(format!(
                    "an intact record of epoch {epoch} follows at byte {p} (this part of the log \
                     predates the write marks that tell a torn write from damage)"
                ));
            }
        }
        found = found.max(Some(epoch));
        p = next;
    }
    Ok(found)
}

/// Decodes one record's payload; None if it cannot be parsed.
fn parse(payload: &[u8]) -> Option<Record<'_>> {
    let index = || le_u64(payload, 1);
    let record = match *payload.first()? {
        KIND_APPEND => Record::Append {
            index: index()?,
            entry: payload.get(9..)?,
        },
        KIND_TRUNCATE_FROM => Record::TruncateFrom(index()?),
        KIND_PURGE_TO => Record::PurgeTo(index()?),
        KIND_META => {
            let key_len = *payload.get(1)? as usize;
            let key = std::str::from_utf8(payload.get(2..2 + key_len)?).ok()?;
            Record::Meta {
                key,
                value: payload.get(2 + key_len..)?,
            }
        }
        _ => return None,
    };
    Some(record)
}

/// Applies one record, whose payload starts at `payload_at`, to `out`.
fn apply_record(
    seq: u64,
    record: &Record<'_>,
    payload_at: u64,
    out: &mut Replayed,
    max_index: &mut Option<u64>,
) {
    match record {
        Record::Append { index, entry } => {
            let loc = Loc {
                segment: seq,
                offset: payload_at + 9,
                len: entry.len() as u32,
            };
            out.entries.insert(*index, (loc, entry.to_vec()));
            *max_index = (*max_index).max(Some(*index));
        }
        Record::TruncateFrom(index) => {
            out.entries.split_off(index);
        }
        Record::PurgeTo(index) => {
            out.entries = out.entries.split_off(&index.saturating_add(1));
        }
        // A copy of a write's mark is no meta value.
        Record::Meta { key, .. } if *key == WRITE_KEY => {}
        Record::Meta { key, value } => {
            out.meta.insert(key.to_string(), value.to_vec());
        }
    }
}

/// Reads, increments and durably stores the epoch counter.
fn next_epoch(dir: &Path) -> io::Result<u64> {
    let path = dir.join(EPOCH_FILE);
    let previous = match std::fs::read(&path) {
        Ok(raw) => {
            let raw: [u8; 8] = raw
                .as_slice()
                .try_into()
                .map_err(|_| corrupt(format!("{} is not 8 bytes", path.display())))?;
            u64::from_le_bytes(raw)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    let epoch = previous + 1;
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&epoch.to_le_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok(epoch)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
