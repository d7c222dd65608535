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

use std::collections::HashMap;
use std::io::{Read, Write};

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
/// verifying the checksum. Tables absent from the snapshot end up empty.
pub fn restore_snapshot(db: &Database, input: &mut impl Read) -> Result<(), SnapshotError> {
    let mut data = Vec::new();
    input.read_to_end(&mut data)?;
    let body_len = data
        .len()
        .checked_sub(CHECKSUM_LEN)
        .ok_or_else(|| SnapshotError::Format("shorter than its checksum".into()))?;
    let (body, digest) = data.split_at(body_len);
    if Sha256::digest(body).as_slice() != digest {
        return Err(SnapshotError::Checksum);
    }
    let parsed = parse(body)?;

    let txn = db.begin_write()?;
    load_table(&txn, META, LAYOUT_META, &parsed)?;
    load_table(&txn, KV_LATEST, LAYOUT_KV_LATEST, &parsed)?;
    load_table(&txn, KV_HISTORY, LAYOUT_KV_HISTORY, &parsed)?;
    load_table(&txn, LEASES, LAYOUT_LEASES, &parsed)?;
    load_table(&txn, LEASE_KEYS, LAYOUT_LEASE_KEYS, &parsed)?;
    load_table(&txn, ALARMS, LAYOUT_ALARMS, &parsed)?;
    load_table(&txn, MODULES, LAYOUT_MODULES, &parsed)?;
    load_table(&txn, MODULE_CODE, LAYOUT_MODULE_CODE, &parsed)?;
    txn.commit()?;
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

/// One table of a parsed snapshot: its layout and entries (slices into the snapshot).
struct ParsedTable<'a> {
    layout: &'a str,
    entries: Vec<(&'a [u8], &'a [u8])>,
}

fn parse(body: &[u8]) -> Result<HashMap<&str, ParsedTable<'_>>, SnapshotError> {
    let mut r = Cursor { rest: body };
    if r.take(MAGIC.len())? != MAGIC {
        return Err(SnapshotError::Format("not a Baton snapshot".into()));
    }
    let version = u32::from_le_bytes(r.array()?);
    if version != FORMAT_VERSION {
        return Err(SnapshotError::Format(format!(
            "unsupported format version {version}"
        )));
    }
    let table_count = u32::from_le_bytes(r.array()?);
    let mut tables = HashMap::new();
    for _ in 0..table_count {
        let name = r.short_str()?;
        let layout = r.short_str()?;
        let count = u64::from_le_bytes(r.array()?);
        let mut entries = Vec::new();
        for _ in 0..count {
            let k = r.blob()?;
            let v = r.blob()?;
            entries.push((k, v));
        }
        if tables
            .insert(name, ParsedTable { layout, entries })
            .is_some()
        {
            return Err(SnapshotError::Format(format!("table {name} appears twice")));
        }
    }
    if !r.rest.is_empty() {
        return Err(SnapshotError::Format("trailing bytes".into()));
    }
    let known = [
        META.name(),
        KV_LATEST.name(),
        // Sent by members that kept the key index in a table; rebuilt from history instead.
        LEGACY_KV_KEY_REVS.name(),
        KV_HISTORY.name(),
        LEASES.name(),
        LEASE_KEYS.name(),
        ALARMS.name(),
        MODULES.name(),
        MODULE_CODE.name(),
    ];
    if let Some(name) = tables.keys().find(|name| !known.contains(name)) {
        return Err(SnapshotError::Format(format!("unknown table {name}")));
    }
    Ok(tables)
}

struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.rest.len() < n {
            return Err(SnapshotError::Format("truncated".into()));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let bytes = self.take(N)?;
        bytes
            .try_into()
            .map_err(|_| SnapshotError::Format("truncated".into()))
    }

    fn short_str(&mut self) -> Result<&'a str, SnapshotError> {
        let len = u16::from_le_bytes(self.array()?);
        let bytes = self.take(usize::from(len))?;
        std::str::from_utf8(bytes).map_err(|_| SnapshotError::Format("name is not utf-8".into()))
    }

    fn blob(&mut self) -> Result<&'a [u8], SnapshotError> {
        let len = u32::from_le_bytes(self.array()?);
        let len =
            usize::try_from(len).map_err(|_| SnapshotError::Format("entry too large".into()))?;
        self.take(len)
    }
}

fn load_table<K: Key + 'static, V: Value + 'static>(
    txn: &WriteTransaction,
    def: TableDefinition<K, V>,
    layout: &str,
    parsed: &HashMap<&str, ParsedTable<'_>>,
) -> Result<(), SnapshotError> {
    txn.delete_table(def)?;
    let mut table = txn.open_table(def)?;
    let Some(snap) = parsed.get(def.name()) else {
        return Ok(());
    };
    if snap.layout != layout {
        let name = def.name();
        return Err(SnapshotError::Format(format!(
            "table {name}: layout {} is not {layout}",
            snap.layout
        )));
    }
    for (k, v) in &snap.entries {
        check_width::<K>(k, def.name())?;
        check_width::<V>(v, def.name())?;
        table.insert(K::from_bytes(k), V::from_bytes(v))?;
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
