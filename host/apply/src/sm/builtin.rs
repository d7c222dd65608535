//! Whether a deploy of a built-in module replaces what a name holds. A built-in deploy (one
//! with `builtin_set > 0`, proposed by a leader for the modules its release ships) stores a new
//! version only when the name holds nothing a user chose: a user's module of that name, a
//! built-in the user deleted, and a built-in of a newer set are all kept. A user's deploy
//! always stores (unless the bytes are the latest version's already).
//!
//! The decision reads only replicated state (the name's record and the [`META`] marks of
//! deleted built-ins), so every member decides the same whatever release it runs; the leader's
//! deployer asks the same question of a read view first, so nothing differing costs no entry.

use prost::Message;
use redb::{ReadableTable, Table};

use crate::sm::command::ApplyFatal;
use baton_limits::LEGACY_BUILTIN_DEPLOY_INDEX_MAX;
use baton_proto::batonpb::{DeployEffect, ModuleOrigin, ModuleRecord, ModuleVersion};
use baton_store::storage::schema::{META, MODULES};

/// The set of built-ins that Batons recording no origins shipped (counter, compare-and-move,
/// lock, queue), as their versions count in comparisons; the first set that records origins
/// is the next one.
pub const LEGACY_BUILTIN_SET: u32 = 1;

/// [`META`] key prefix marking a name whose built-in a user deleted (value empty). Kept in
/// META because snapshots carry that table whole, so the mark outlives log compaction.
const DELETED_BUILTIN_PREFIX: &str = "modules.deleted_builtin/";

/// What a deploy does to a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployPlan {
    /// Store the component as the name's next version.
    Store,
    /// Leave the name as it is, for this reason (never [`DeployEffect::DeployStored`]).
    Keep(DeployEffect),
}

/// The set a version was deployed by, if it is a built-in; None for a user's module.
pub fn builtin_set_of(record: &ModuleRecord, v: &ModuleVersion) -> Option<u32> {
    match v.origin() {
        ModuleOrigin::Builtin => Some(v.builtin_set),
        ModuleOrigin::User => None,
        // Those Batons deployed built-ins once, right after founding, and never again: a later
        // or second version can only be a user's.
        ModuleOrigin::Unrecorded => (record.versions.len() == 1
            && v.version == 1
            && v.deployed_index <= LEGACY_BUILTIN_DEPLOY_INDEX_MAX)
            .then_some(LEGACY_BUILTIN_SET),
    }
}

/// Decides a deploy of bytes hashing to `hash` to a name holding `record` (empty when the
/// name is free), `deleted_builtin` telling whether a user deleted its built-in before.
pub fn plan(
    record: &ModuleRecord,
    deleted_builtin: bool,
    hash: &[u8],
    builtin_set: u32,
) -> DeployPlan {
    let latest = record.versions.last();
    if latest.is_some_and(|v| v.hash == hash) {
        return DeployPlan::Keep(DeployEffect::DeploySameBytes);
    }
    if builtin_set == 0 {
        return DeployPlan::Store;
    }
    let Some(latest) = latest else {
        return if deleted_builtin {
            DeployPlan::Keep(DeployEffect::DeployKeptDeleted)
        } else {
            DeployPlan::Store
        };
    };
    match builtin_set_of(record, latest) {
        None => DeployPlan::Keep(DeployEffect::DeployKeptUserModule),
        // An equal set with other bytes is the same release built differently; storing it
        // keeps "the leader's release wins" simple, and only newer sets are protected.
        Some(stored) if stored > builtin_set => DeployPlan::Keep(DeployEffect::DeployKeptNewerSet),
        Some(_) => DeployPlan::Store,
    }
}

fn fatal(e: impl std::fmt::Display) -> ApplyFatal {
    ApplyFatal(e.to_string())
}

fn deleted_key(name: &str) -> String {
    format!("{DELETED_BUILTIN_PREFIX}{name}")
}

/// Whether a user deleted the built-in that `name` held.
pub fn deleted_builtin(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<bool, ApplyFatal> {
    Ok(meta
        .get(deleted_key(name).as_str())
        .map_err(fatal)?
        .is_some())
}

/// Records that `record`, just deleted from `name`, held a built-in (if it did), so no later
/// built-in deploy brings the name back.
pub(crate) fn mark_if_deleted_builtin(
    meta: &mut Table<'_, &'static str, &'static [u8]>,
    name: &str,
    record: &ModuleRecord,
) -> Result<(), ApplyFatal> {
    if record
        .versions
        .iter()
        .any(|v| builtin_set_of(record, v).is_some())
    {
        meta.insert(deleted_key(name).as_str(), [].as_slice())
            .map_err(fatal)?;
    }
    Ok(())
}

/// [`plan`] for `name` as of a read transaction: what the leader's deployer asks before it
/// proposes, so a name that would be kept costs no log entry.
pub fn plan_at(
    txn: &redb::ReadTransaction,
    name: &str,
    hash: &[u8],
    builtin_set: u32,
) -> Result<DeployPlan, ApplyFatal> {
    let names = txn.open_table(MODULES).map_err(fatal)?;
    let record = match names.get(name).map_err(fatal)? {
        Some(v) => ModuleRecord::decode(v.value()).map_err(fatal)?,
        None => ModuleRecord::default(),
    };
    let meta = txn.open_table(META).map_err(fatal)?;
    let deleted = deleted_builtin(&meta, name)?;
    Ok(plan(&record, deleted, hash, builtin_set))
}

/// `component` with a custom section `name` (holding `payload`) appended: the same module to
/// the runtime, other bytes and so another hash. For tests and the test-only older built-in
/// set (`BATON_TEST_BUILTIN_SET`), which need a second version of a real module.
pub fn with_custom_section(component: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let mut contents = Vec::new();
    leb128_u32(&mut contents, name.len());
    contents.extend_from_slice(name.as_bytes());
    contents.extend_from_slice(payload);
    let mut out = component.to_vec();
    // Section id 0 is a custom section in core modules and components alike.
    out.push(0);
    leb128_u32(&mut out, contents.len());
    out.extend_from_slice(&contents);
    out
}

/// Appends `n` as an unsigned LEB128 number (the Wasm binary format's lengths).
fn leb128_u32(out: &mut Vec<u8>, n: usize) {
    let mut n = n as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
