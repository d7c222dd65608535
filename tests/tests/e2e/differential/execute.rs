//! Sends an `Op` through etcd-client and reduces the answer to what must match across servers.

use anyhow::{Result, bail};
use baton_e2e::grpc_status;
use etcd_client::{
    Client, CompactionOptions, Compare, DeleteOptions, DeleteResponse, GetOptions, GetResponse,
    KeyValue, LeaseGrantOptions, PutOptions, PutResponse, ResponseHeader, SortTarget, Txn, TxnOp,
    TxnOpResponse, TxnResponse,
};

use super::model::{
    CompareSpec, CompareTarget, DeleteSpec, KeyRange, Op, PutSpec, RangeSpec, TxnOpSpec, TxnSpec,
};

/// A key-value with every field; servers must agree on all of them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Kv {
    pub key: String,
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

/// A response with cluster_id, member_id and raft_term dropped (they legitimately differ).
/// `rev` is None when the header is absent.
#[derive(Debug, PartialEq)]
pub(super) enum Outcome {
    Error {
        code: tonic::Code,
        message: String,
    },
    Put {
        rev: Option<i64>,
        prev_kv: Option<Kv>,
    },
    Range {
        rev: Option<i64>,
        kvs: Vec<Kv>,
        boundary_ties: Vec<String>,
        count: i64,
        more: bool,
    },
    Delete {
        rev: Option<i64>,
        deleted: i64,
        prev_kvs: Vec<Kv>,
    },
    Txn {
        rev: Option<i64>,
        succeeded: bool,
        responses: Vec<Outcome>,
    },
    Compact {
        rev: Option<i64>,
    },
    LeaseGrant {
        rev: Option<i64>,
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        rev: Option<i64>,
    },
}

impl Outcome {
    pub(super) fn revision(&self) -> Option<i64> {
        match self {
            Outcome::Error { .. } => None,
            Outcome::Put { rev, .. }
            | Outcome::Range { rev, .. }
            | Outcome::Delete { rev, .. }
            | Outcome::Txn { rev, .. }
            | Outcome::Compact { rev }
            | Outcome::LeaseGrant { rev, .. }
            | Outcome::LeaseRevoke { rev } => *rev,
        }
    }
}

pub(super) async fn execute(client: &mut Client, op: &Op) -> Result<Outcome> {
    let result = match op {
        Op::Put(spec) => client
            .put(
                spec.key.clone(),
                spec.value.clone(),
                Some(put_options(spec)),
            )
            .await
            .map(put_outcome),
        Op::Range(spec) => {
            let (key, options) = get_options(spec);
            client
                .get(key, Some(options))
                .await
                .map(|r| range_outcome(spec, r))
        }
        Op::Delete(spec) => {
            let (key, options) = delete_options(spec);
            client.delete(key, Some(options)).await.map(delete_outcome)
        }
        Op::Txn(spec) => match client.txn(txn(spec)).await {
            Ok(response) => Ok(txn_outcome(spec, response)?),
            Err(e) => Err(e),
        },
        Op::Compact { revision, physical } => {
            let options = physical.then(|| CompactionOptions::new().with_physical());
            client
                .compact(*revision, options)
                .await
                .map(|r| Outcome::Compact {
                    rev: revision_of(r.header()),
                })
        }
        Op::LeaseGrant { id, ttl } => client
            .lease_grant(*ttl, Some(LeaseGrantOptions::new().with_id(*id)))
            .await
            .map(|r| Outcome::LeaseGrant {
                rev: revision_of(r.header()),
                id: r.id(),
                ttl: r.ttl(),
            }),
        Op::LeaseRevoke { id } => client
            .lease_revoke(*id)
            .await
            .map(|r| Outcome::LeaseRevoke {
                rev: revision_of(r.header()),
            }),
    };
    match result {
        Ok(outcome) => Ok(outcome),
        Err(error) => match grpc_status(&error) {
            Some(status) => Ok(Outcome::Error {
                code: status.code(),
                message: status.message().to_owned(),
            }),
            None => bail!("transport failure (not a server answer): {error:?}"),
        },
    }
}

fn revision_of(header: Option<&ResponseHeader>) -> Option<i64> {
    header.map(ResponseHeader::revision)
}

fn kv(kv: &KeyValue) -> Kv {
    Kv {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: String::from_utf8_lossy(kv.value()).into_owned(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

fn put_options(spec: &PutSpec) -> PutOptions {
    let mut options = PutOptions::new().with_lease(spec.lease);
    if spec.prev_kv {
        options = options.with_prev_key();
    }
    if spec.ignore_value {
        options = options.with_ignore_value();
    }
    if spec.ignore_lease {
        options = options.with_ignore_lease();
    }
    options
}

/// The key to send and the options carrying its range end.
fn get_options(spec: &RangeSpec) -> (String, GetOptions) {
    let mut o = GetOptions::new()
        .with_limit(spec.limit)
        .with_revision(spec.revision)
        .with_min_mod_revision(spec.min_mod_revision)
        .with_max_mod_revision(spec.max_mod_revision)
        .with_min_create_revision(spec.min_create_revision)
        .with_max_create_revision(spec.max_create_revision);
    o = match &spec.range {
        KeyRange::Single => o,
        KeyRange::Prefix => o.with_prefix(),
        KeyRange::FromKey => o.with_from_key(),
        KeyRange::UpTo(end) => o.with_range(end.clone()),
        KeyRange::All => o.with_all_keys(),
    };
    if let Some((target, order)) = spec.sort {
        o = o.with_sort(target, order);
    }
    if spec.keys_only {
        o = o.with_keys_only();
    }
    if spec.count_only {
        o = o.with_count_only();
    }
    if spec.serializable {
        o = o.with_serializable();
    }
    (spec.key.clone(), o)
}

fn delete_options(spec: &DeleteSpec) -> (String, DeleteOptions) {
    let mut o = DeleteOptions::new();
    o = match &spec.range {
        KeyRange::Single => o,
        KeyRange::Prefix => o.with_prefix(),
        KeyRange::FromKey => o.with_from_key(),
        KeyRange::UpTo(end) => o.with_range(end.clone()),
        KeyRange::All => o.with_all_keys(),
    };
    if spec.prev_kv {
        o = o.with_prev_key();
    }
    (spec.key.clone(), o)
}

fn compare(spec: &CompareSpec) -> Compare {
    let key = spec.key.clone();
    let compare = match &spec.target {
        CompareTarget::Value(v) => Compare::value(key, spec.result, v.clone()),
        CompareTarget::Version(v) => Compare::version(key, spec.result, *v),
        CompareTarget::Create(r) => Compare::create_revision(key, spec.result, *r),
        CompareTarget::Mod(r) => Compare::mod_revision(key, spec.result, *r),
        CompareTarget::Lease(l) => Compare::lease(key, spec.result, *l),
    };
    if spec.prefix {
        compare.with_prefix()
    } else {
        compare
    }
}

fn txn_op(spec: &TxnOpSpec) -> TxnOp {
    match spec {
        TxnOpSpec::Put(p) => TxnOp::put(p.key.clone(), p.value.clone(), Some(put_options(p))),
        TxnOpSpec::Range(r) => {
            let (key, options) = get_options(r);
            TxnOp::get(key, Some(options))
        }
        TxnOpSpec::Delete(d) => {
            let (key, options) = delete_options(d);
            TxnOp::delete(key, Some(options))
        }
        TxnOpSpec::Txn(t) => TxnOp::txn(txn(t)),
    }
}

fn txn(spec: &TxnSpec) -> Txn {
    Txn::new()
        .when(spec.compares.iter().map(compare).collect::<Vec<_>>())
        .and_then(spec.success.iter().map(txn_op).collect::<Vec<_>>())
        .or_else(spec.failure.iter().map(txn_op).collect::<Vec<_>>())
}

fn put_outcome(r: PutResponse) -> Outcome {
    Outcome::Put {
        rev: revision_of(r.header()),
        prev_kv: r.prev_key().map(kv),
    }
}

fn delete_outcome(r: DeleteResponse) -> Outcome {
    Outcome::Delete {
        rev: revision_of(r.header()),
        deleted: r.deleted(),
        prev_kvs: r.prev_kvs().iter().map(kv).collect(),
    }
}

/// The sort key as text, for grouping ties.
fn target_value(kv: &Kv, target: SortTarget) -> String {
    match target {
        SortTarget::Key => kv.key.clone(),
        SortTarget::Version => kv.version.to_string(),
        SortTarget::Create => kv.create_revision.to_string(),
        SortTarget::Mod => kv.mod_revision.to_string(),
        SortTarget::Value => kv.value.clone(),
    }
}

/// Range result with equal-sort-key runs put in key order, since etcd's sort is not stable
/// in general. A run cut by the limit is kept only as its sort keys: which of the tied keys
/// made it into the page is unspecified.
fn range_outcome(spec: &RangeSpec, r: GetResponse) -> Outcome {
    let mut kvs: Vec<Kv> = r.kvs().iter().map(kv).collect();
    let mut boundary_ties = Vec::new();
    if let Some(target) = spec.tie_target() {
        let mut runs: Vec<Vec<Kv>> = Vec::new();
        for item in kvs {
            match runs.last_mut() {
                Some(run) if target_value(&run[0], target) == target_value(&item, target) => {
                    run.push(item)
                }
                _ => runs.push(vec![item]),
            }
        }
        if r.more()
            && let Some(last) = runs.pop()
        {
            boundary_ties = last.iter().map(|kv| target_value(kv, target)).collect();
        }
        for run in &mut runs {
            run.sort();
        }
        kvs = runs.into_iter().flatten().collect();
    }
    Outcome::Range {
        rev: revision_of(r.header()),
        kvs,
        boundary_ties,
        count: r.count(),
        more: r.more(),
    }
}

fn txn_outcome(spec: &TxnSpec, r: TxnResponse) -> Result<Outcome> {
    let branch = if r.succeeded() {
        &spec.success
    } else {
        &spec.failure
    };
    let responses = r.op_responses();
    if responses.len() != branch.len() {
        bail!(
            "txn answered {} responses for a {}-op branch: {r:?}",
            responses.len(),
            branch.len()
        );
    }
    let mut outcomes = Vec::with_capacity(responses.len());
    for (op, response) in branch.iter().zip(responses) {
        outcomes.push(match (op, response) {
            (TxnOpSpec::Put(_), TxnOpResponse::Put(p)) => put_outcome(p),
            (TxnOpSpec::Range(spec), TxnOpResponse::Get(g)) => range_outcome(spec, g),
            (TxnOpSpec::Delete(_), TxnOpResponse::Delete(d)) => delete_outcome(d),
            (TxnOpSpec::Txn(spec), TxnOpResponse::Txn(t)) => txn_outcome(spec, t)?,
            (op, response) => bail!("response {response:?} does not answer {op:?}"),
        });
    }
    Ok(Outcome::Txn {
        rev: revision_of(r.header()),
        succeeded: r.succeeded(),
        responses: outcomes,
    })
}
