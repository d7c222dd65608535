//! The operations the differential test sends, as plain data so they print readably.

use etcd_client::{CompareOp, SortOrder, SortTarget};

#[derive(Clone, Debug)]
pub(super) enum KeyRange {
    Single,
    Prefix,
    FromKey,
    /// An explicit, exclusive range end (may sort before the key: an empty range).
    UpTo(String),
    /// Every key (the key itself is ignored).
    All,
}

#[derive(Clone, Debug)]
pub(super) struct RangeSpec {
    pub key: String,
    pub range: KeyRange,
    pub limit: i64,
    pub revision: i64,
    pub sort: Option<(SortTarget, SortOrder)>,
    pub keys_only: bool,
    pub count_only: bool,
    pub serializable: bool,
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

impl RangeSpec {
    /// The target whose ties the server may order arbitrarily, if the result is sorted by one.
    pub(super) fn tie_target(&self) -> Option<SortTarget> {
        match self.sort {
            Some((SortTarget::Key, _)) | None => None,
            Some((target, _)) => Some(target),
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct PutSpec {
    pub key: String,
    pub value: String,
    pub lease: i64,
    pub prev_kv: bool,
    pub ignore_value: bool,
    pub ignore_lease: bool,
}

#[derive(Clone, Debug)]
pub(super) struct DeleteSpec {
    pub key: String,
    pub range: KeyRange,
    pub prev_kv: bool,
}

#[derive(Clone, Debug)]
pub(super) enum CompareTarget {
    Value(String),
    Version(i64),
    Create(i64),
    Mod(i64),
    Lease(i64),
}

#[derive(Clone, Debug)]
pub(super) struct CompareSpec {
    pub key: String,
    pub prefix: bool,
    pub target: CompareTarget,
    pub result: CompareOp,
}

#[derive(Clone, Debug)]
pub(super) enum TxnOpSpec {
    Put(PutSpec),
    Range(RangeSpec),
    Delete(DeleteSpec),
    Txn(TxnSpec),
}

#[derive(Clone, Debug)]
pub(super) struct TxnSpec {
    pub compares: Vec<CompareSpec>,
    pub success: Vec<TxnOpSpec>,
    pub failure: Vec<TxnOpSpec>,
}

#[derive(Clone, Debug)]
pub(super) enum Op {
    Put(PutSpec),
    Range(RangeSpec),
    Delete(DeleteSpec),
    Txn(TxnSpec),
    Compact {
        revision: i64,
        physical: bool,
    },
    /// Leases use client-chosen ids and TTLs far longer than a run, so no lease expires during
    /// it and both servers must answer alike.
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        id: i64,
    },
}
