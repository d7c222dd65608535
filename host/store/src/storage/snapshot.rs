//! State-machine snapshots: every table of [`crate::storage::schema`] (but the legacy key index,
//! which is rebuilt from history) in one self-describing, versioned stream with a SHA-256
//! trailer.
//!
//! Layout (integers little-endian):
//! ```text
//! magic "BATNSNAP" | format version u32 | table count u32
//! per table: name (u16 len + utf8) | layout (u16 len + utf8) | entry count u64
//!            | entries: key (u32 len + bytes), value (u32 len + bytes)   (redb's own encodings)
//! SHA-256 of everything above (32 bytes)
//! ```

use std::fs::File;
use std::io::{BufReader, Read, Write};

use redb::{
    Database, Key, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableHandle, Value, WriteTransaction,
};
use sha2::{Digest, Sha256};

use crate::storage::schema::{
    ALARMS, KV_HISTORY, KV_LATEST, LEASE_KEYS, LEASES, LEGACY_KV_KEY_REVS, META, MODULE_CODE,
    MODULES,
};

const MAGIC: &[u8; 8] = b"BATNSNAP";
const FORMAT_VERSION: u32 = 1;
const CHECKSUM_LEN: usize = 32;

/// Each table with a description of its key and value types, checked on restore.
const LAYOUT_META: &str = "str -> bytes";
const LAYOUT_KV_LATEST: &str = "bytes -> bytes";
const LAYOUT_KV_HISTORY: &str = "(i64, i64) -> bytes";
const LAYOUT_LEASES: &str = "i64 -> (i64, i64)";
const LAYOUT_LEASE_KEYS: &str = "(i64, bytes) -> ()";
const LAYOUT_ALARMS: &str = "(u64, i32) -> ()";
const LAYOUT_MODULES: &str = "str -> bytes";
const LAYOUT_MODULE_CODE: &str = "bytes -> bytes";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("redb: {0}")]
    Redb(#[from] redb::Error),
    #[error("snapshot checksum mismatch")]
    Checksum,
    #[error("snapshot format: {0}")]
    Format(String),
}

macro_rules! snapshot_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for SnapshotError {
            fn from(e: $t) -> Self {
                SnapshotError::Redb(e.into())
            }
        }
    )*};
}
snapshot_from_redb!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);

/// Writes every table of the state-machine database as seen by `txn`.
pub fn write_snapshot(txn: &ReadTransaction, out: &mut impl Write) -> Result<(), SnapshotError> {
    let mut w = HashingWriter {
        out,
        hasher: Sha256::new(),
    };
    w.write_all(MAGIC)?;
    w.write_all(&FORMAT_VERSION.to_le_bytes())?;
    let tables: u32 = 8;
    w.write_all(&tables.to_le_bytes())?;
    dump_table(txn, META, LAYOUT_META, &mut w)?;
    dump_table(txn, KV_LATEST, LAYOUT_KV_LATEST, &mut w)?;
    dump_table(txn, KV_HISTORY, LAYOUT_KV_HISTORY, &mut w)?;
    dump_table(txn, LEASES, LAYOUT_LEASES, &mut w)?;
    dump_table(txn, LEASE_KEYS, LAYOUT_LEASE_KEYS, &mut w)?;
    dump_table(txn, ALARMS, LAYOUT_ALARMS, &mut w)?;
    dump_table(txn, MODULES, LAYOUT_MODULES, &mut w)?;
    dump_table(txn, MODULE_CODE, LAYOUT_MODULE_CODE, &mut w)?;
    let digest = w.hasher.finalize();
    w.out.write_all(&digest)?;
    Ok(())
}

/// Replaces the contents of every table with the snapshot's, in one write transaction, after
/// verifying the checksum. Tables absent from the snapshot end up empty. Reads everything into
/// memory first: for small inputs (tests only); members restore from a file with
/// [`restore_snapshot_file`].
#[cfg(test)]
fn restore_snapshot(db: &Database, input: &mut impl Read) -> Result<(), SnapshotError> {
    let mut data = Vec::new();
    input.read_to_end(&mut data)?;
    restore_from(db, || data.as_slice(), data.len() as u64)
}

/// What `restore_snapshot` does, from the `len` bytes at `offset` in `file`, read twice (once
/// to verify the checksum, once to load) so memory stays bounded by one entry whatever the size.
pub fn restore_snapshot_file(
    db: &Database,
    file: &File,
    offset: u64,
    len: u64,
) -> Result<(), SnapshotError> {
    let open = || BufReader::with_capacity(RESTORE_READ_BYTES, FileRegion::new(file, offset, len));
    restore_from(db, open, len)
}

use baton_limits::SNAPSHOT_RESTORE_READ_BYTES as RESTORE_READ_BYTES;

/// Verifies, then loads, a snapshot of `len` bytes that `open` reads from the start.
fn restore_from<R: Read>(
    db: &Database,
    open: impl Fn() -> R,
    len: u64,
) -> Result<(), SnapshotError> {
    let body_len = len
        .checked_sub(CHECKSUM_LEN as u64)
        .ok_or_else(|| SnapshotError::Format("shorter than its checksum".into()))?;
    verify_checksum(open(), body_len)?;
    let mut body = open().take(body_len);
    let txn = db.begin_write()?;
    // Only tables named in the snapshot are filled; every other one must end up empty.
    empty_table(&txn, META)?;
    empty_table(&txn, KV_LATEST)?;
    empty_table(&txn, KV_HISTORY)?;
    empty_table(&txn, LEASES)?;
    empty_table(&txn, LEASE_KEYS)?;
    empty_table(&txn, ALARMS)?;
    empty_table(&txn, MODULES)?;
    empty_table(&txn, MODULE_CODE)?;
    load_tables(&txn, &mut body)?;
    if body.limit() != 0 {
        return Err(SnapshotError::Format("trailing bytes".into()));
    }
    // An error above drops `txn` uncommitted: the database is as it was.
    txn.commit()?;
    Ok(())
}

fn empty_table<K: Key + 'static, V: Value + 'static>(
    txn: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<(), SnapshotError> {
    txn.delete_table(def)?;
    txn.open_table(def)?;
    Ok(())
}

/// The names of the tables in a snapshot's body, in order.
#[cfg(test)]
fn table_names(mut body: &[u8]) -> Result<Vec<String>, SnapshotError> {
    let r = &mut body;
    read_array::<8>(r)?;
    read_array::<4>(r)?;
    let count = u32::from_le_bytes(read_array(r)?);
    let mut names = Vec::new();
    for _ in 0..count {
        let name = read_short_str(r)?;
        let layout = read_short_str(r)?;
        let count = u64::from_le_bytes(read_array(r)?);
        skip_entries(
            &Incoming {
                name: &name,
                layout: &layout,
                count,
            },
            r,
        )?;
        names.push(name);
    }
    Ok(names)
}

/// Hashes the first `body_len` bytes of `input` and compares the digest that follows them.
fn verify_checksum(mut input: impl Read, body_len: u64) -> Result<(), SnapshotError> {
    let mut hasher = Sha256::new();
    let copied = std::io::copy(&mut (&mut input).take(body_len), &mut HashSink(&mut hasher))?;
    let mut digest = [0u8; CHECKSUM_LEN];
    if copied != body_len || input.read_exact(&mut digest).is_err() {
        return Err(SnapshotError::Checksum);
    }
    if hasher.finalize().as_slice() != digest {
        return Err(SnapshotError::Checksum);
    }
    Ok(())
}

/// Checks a snapshot's checksum as its bytes arrive in pieces, holding back the last
/// [`CHECKSUM_LEN`] bytes seen (the digest, once the stream ends).
#[derive(Default)]
pub struct StreamVerifier {
    hasher: Sha256,
    tail: Vec<u8>,
}

impl StreamVerifier {
    pub fn update(&mut self, piece: &[u8]) {
        if piece.len() >= CHECKSUM_LEN {
            self.hasher.update(&self.tail);
            let (body, tail) = piece.split_at(piece.len() - CHECKSUM_LEN);
            self.hasher.update(body);
            self.tail.clear();
            self.tail.extend_from_slice(tail);
        } else {
            self.tail.extend_from_slice(piece);
            let excess = self.tail.len().saturating_sub(CHECKSUM_LEN);
            self.hasher.update(&self.tail[..excess]);
            self.tail.drain(..excess);
        }
    }

    /// Whether everything given so far is a body followed by its digest.
    pub fn finish(self) -> Result<(), SnapshotError> {
        if self.tail.len() != CHECKSUM_LEN {
            return Err(SnapshotError::Format("shorter than its checksum".into()));
        }
        if self.hasher.finalize().as_slice() != self.tail.as_slice() {
            return Err(SnapshotError::Checksum);
        }
        Ok(())
    }
}

struct HashSink<'a>(&'a mut Sha256);

impl Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `len` bytes of a file from `offset`, read with positional reads (the file's cursor is
/// untouched, so other readers of the same file are unaffected).
struct FileRegion<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl<'a> FileRegion<'a> {
    fn new(file: &'a File, offset: u64, len: u64) -> Self {
        Self {
            file,
            pos: offset,
            end: offset.saturating_add(len),
        }
    }
}

impl Read for FileRegion<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let left = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Reads the verified body's header and tables into `txn`, table by table as they come.
fn load_tables(txn: &WriteTransaction, r: &mut impl Read) -> Result<(), SnapshotError> {
    let mut magic = [0u8; MAGIC.len()];
    read_exact(r, &mut magic)?;
    if &magic != MAGIC {
        return Err(SnapshotError::Format("not a Baton snapshot".into()));
    }
    let version = u32::from_le_bytes(read_array(r)?);
    if version != FORMAT_VERSION {
        return Err(SnapshotError::Format(format!(
            "unsupported format version {version}"
        )));
    }
    let table_count = u32::from_le_bytes(read_array(r)?);
    let mut seen = Vec::new();
    for _ in 0..table_count {
        let name = read_short_str(r)?;
        let layout = read_short_str(r)?;
        let count = u64::from_le_bytes(read_array(r)?);
        if seen.contains(&name) {
            return Err(SnapshotError::Format(format!("table {name} appears twice")));
        }
        let table = Incoming {
            name: &name,
            layout: &layout,
            count,
        };
        match name.as_str() {
            n if n == META.name() => load_table(txn, META, LAYOUT_META, TEXT_KEY, &table, r)?,
            n if n == KV_LATEST.name() => {
                load_table(txn, KV_LATEST, LAYOUT_KV_LATEST, ANY, &table, r)?;
            }
            n if n == KV_HISTORY.name() => {
                load_table(txn, KV_HISTORY, LAYOUT_KV_HISTORY, ANY, &table, r)?;
            }
            n if n == LEASES.name() => load_table(txn, LEASES, LAYOUT_LEASES, ANY, &table, r)?,
            n if n == LEASE_KEYS.name() => {
                load_table(
                    txn,
                    LEASE_KEYS,
                    LAYOUT_LEASE_KEYS,
                    ID_AND_BYTES_KEY,
                    &table,
                    r,
                )?;
            }
            n if n == ALARMS.name() => load_table(txn, ALARMS, LAYOUT_ALARMS, ANY, &table, r)?,
            n if n == MODULES.name() => {
                load_table(txn, MODULES, LAYOUT_MODULES, TEXT_KEY, &table, r)?;
            }
            n if n == MODULE_CODE.name() => {
                load_table(txn, MODULE_CODE, LAYOUT_MODULE_CODE, ANY, &table, r)?;
            }
            // Sent by members that kept the key index in a table; rebuilt from history instead.
            n if n == LEGACY_KV_KEY_REVS.name() => skip_entries(&table, r)?,
            _ => return Err(SnapshotError::Format(format!("unknown table {name}"))),
        }
        seen.push(name);
    }
    Ok(())
}

/// A table's header as read from the stream; its entries follow.
struct Incoming<'a> {
    name: &'a str,
    layout: &'a str,
    count: u64,
}

/// What redb's decoding of a table's keys needs beyond a fixed width (which [`check_width`]
/// checks): it panics on anything else, and a snapshot comes from another member.
type KeyCheck = fn(&[u8]) -> bool;
const ANY: KeyCheck = |_| true;
/// `&str` keys must be UTF-8.
const TEXT_KEY: KeyCheck = |b| std::str::from_utf8(b).is_ok();
/// `(i64, &[u8])` keys are the id's 8 bytes, then the rest.
const ID_AND_BYTES_KEY: KeyCheck = |b| b.len() >= 8;

fn load_table<K: Key + 'static, V: Value + 'static>(
    txn: &WriteTransaction,
    def: TableDefinition<K, V>,
    layout: &str,
    key_ok: KeyCheck,
    incoming: &Incoming<'_>,
    r: &mut impl Read,
) -> Result<(), SnapshotError> {
    if incoming.layout != layout {
        return Err(SnapshotError::Format(format!(
            "table {}: layout {} is not {layout}",
            incoming.name, incoming.layout
        )));
    }
    let mut table = txn.open_table(def)?;
    let (mut k, mut v) = (Vec::new(), Vec::new());
    for _ in 0..incoming.count {
        read_blob(r, &mut k)?;
        read_blob(r, &mut v)?;
        check_width::<K>(&k, incoming.name)?;
        check_width::<V>(&v, incoming.name)?;
        if !key_ok(&k) {
            return Err(SnapshotError::Format(format!(
                "table {}: a key of the wrong form",
                incoming.name
            )));
        }
        table.insert(K::from_bytes(&k), V::from_bytes(&v))?;
    }
    Ok(())
}

fn skip_entries(incoming: &Incoming<'_>, r: &mut impl Read) -> Result<(), SnapshotError> {
    let mut buf = Vec::new();
    for _ in 0..incoming.count.saturating_mul(2) {
        read_blob(r, &mut buf)?;
    }
    Ok(())
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<(), SnapshotError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => SnapshotError::Format("truncated".into()),
        _ => SnapshotError::Io(e),
    })
}

fn read_array<const N: usize>(r: &mut impl Read) -> Result<[u8; N], SnapshotError> {
    let mut bytes = [0u8; N];
    read_exact(r, &mut bytes)?;
    Ok(bytes)
}

fn read_short_str(r: &mut impl Read) -> Result<String, SnapshotError> {
    let len = u16::from_le_bytes(read_array(r)?);
    let mut bytes = vec![0u8; usize::from(len)];
    read_exact(r, &mut bytes)?;
    String::from_utf8(bytes).map_err(|_| SnapshotError::Format("name is not utf-8".into()))
}

/// Reads one length-prefixed entry into `buf`. The length is trusted only as far as the bytes
/// are there: the read stops at the end of the input, so a corrupt length cannot allocate more
/// than the snapshot holds.
fn read_blob(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<(), SnapshotError> {
    let len = u64::from(u32::from_le_bytes(read_array(r)?));
    buf.clear();
    let got = r.take(len).read_to_end(buf)?;
    if got as u64 != len {
        return Err(SnapshotError::Format("truncated".into()));
    }
    Ok(())
}

struct HashingWriter<'a, W: Write> {
    out: &'a mut W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<'_, W> {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hasher.update(bytes);
        self.out.write_all(bytes)
    }

    fn write_short(&mut self, s: &str) -> Result<(), SnapshotError> {
        let len = u16::try_from(s.len())
            .map_err(|_| SnapshotError::Format(format!("name too long: {s}")))?;
        self.write_all(&len.to_le_bytes())?;
        Ok(self.write_all(s.as_bytes())?)
    }

    fn write_blob(&mut self, b: &[u8]) -> Result<(), SnapshotError> {
        let len =
            u32::try_from(b.len()).map_err(|_| SnapshotError::Format("entry over 4 GiB".into()))?;
        self.write_all(&len.to_le_bytes())?;
        Ok(self.write_all(b)?)
    }
}

fn dump_table<K: Key + 'static, V: Value + 'static, W: Write>(
    txn: &ReadTransaction,
    def: TableDefinition<K, V>,
    layout: &str,
    w: &mut HashingWriter<'_, W>,
) -> Result<(), SnapshotError> {
    let table = txn.open_table(def)?;
    w.write_short(def.name())?;
    w.write_short(layout)?;
    w.write_all(&table.len()?.to_le_bytes())?;
    for entry in table.iter()? {
        let (k, v) = entry?;
        w.write_blob(K::as_bytes(&k.value()).as_ref())?;
        w.write_blob(V::as_bytes(&v.value()).as_ref())?;
    }
    Ok(())
}

/// redb decodes fixed-width types without checking the length; refuse a wrong one first.
fn check_width<T: Value>(bytes: &[u8], table: &str) -> Result<(), SnapshotError> {
    match T::fixed_width() {
        Some(width) if width != bytes.len() => Err(SnapshotError::Format(format!(
            "table {table}: entry of {} bytes, expected {width}",
            bytes.len()
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
