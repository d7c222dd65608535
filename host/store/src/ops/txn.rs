//! etcd 3.4's Txn (`applierV3backend.Txn`): every compare along the chosen path, nested txns
//! included, is evaluated on the state before the txn; then put and range checks run along
//! that path; only then is anything written, so a refused txn writes nothing.

use std::cmp::Ordering;

use crate::mvcc::error::{ApplyError, KvError, StorageError};
use crate::mvcc::range::range_at;
use crate::mvcc::tables::{HistoryTable, KeySpan, KvTables, LatestTable};
use crate::mvcc::write::WriteCtx;
use crate::mvcc::{ReadView, open_read_tables, read_revisions};
use crate::ops::kv::{delete_range, header, lease_exists, put};
use baton_proto::etcdserverpb::{
    Compare, RequestOp, ResponseOp, TxnRequest, TxnResponse, compare, request_op, response_op,
};
use baton_proto::mvccpb::KeyValue;

/// etcd's `isTxnReadonly`: every op of both branches is a Range (nested txns count as writes).
pub fn is_txn_read_only(rt: &TxnRequest) -> bool {
    rt.success
        .iter()
        .chain(&rt.failure)
        .all(|op| matches!(op.request, Some(request_op::Request::RequestRange(_))))
}

/// Serves a read-only txn (see [`is_txn_read_only`]) from a read transaction, as etcd does
/// outside raft. Other txns must go through [`crate::ops::kv::apply_kv`].
pub fn txn_read_only(txn: &ReadView, rt: &TxnRequest) -> Result<TxnResponse, KvError> {
    if !is_txn_read_only(rt) {
        return Err(KvError::Storage(
            "txn_read_only given a txn that writes".into(),
        ));
    }
    let tables = open_read_tables(txn)?;
    let revs = read_revisions(txn)?;
    let mut path = Vec::new();
    compare_path(&tables, revs.current, rt, &mut path)?;
    walk_path(rt, &path, &mut 0, &mut |op| {
        check_range_op(revs.current, revs.compact, op)
    })?;
    let succeeded = path.first().copied().unwrap_or(false);
    let mut responses = Vec::new();
    for op in branch(rt, succeeded) {
        if let Some(request_op::Request::RequestRange(r)) = &op.request {
            let resp = range_at(&tables, revs.current, revs.compact, r)?;
            responses.push(ResponseOp {
                response: Some(response_op::Response::ResponseRange(resp)),
            });
        }
    }
    Ok(TxnResponse {
        header: header(revs.current),
        succeeded,
        responses,
    })
}

/// Applies a txn inside a write transaction.
pub(crate) fn apply_txn(w: &mut WriteCtx<'_>, rt: &TxnRequest) -> Result<TxnResponse, ApplyError> {
    let mut path = Vec::new();
    compare_path(&w.tables, w.begin, rt, &mut path)?;
    if !is_txn_read_only(rt) {
        walk_path(rt, &path, &mut 0, &mut |op| check_put_op(w, op))?;
        check_no_ignore_put_after_delete(rt, &path)?;
    }
    let (begin, compact) = (w.begin, w.compact);
    walk_path(rt, &path, &mut 0, &mut |op| {
        check_range_op(begin, compact, op)
    })?;
    let mut resp = apply_ops(w, rt, &path, &mut 0)?;
    resp.header = header(w.view_rev());
    Ok(resp)
}

fn branch(rt: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded { &rt.success } else { &rt.failure }
}

/// etcd's `compareToPath`: this txn's outcome, then (pre-order) those of the nested txns of
/// the branch it takes, all against the same view.
fn compare_path<L: LatestTable, H: HistoryTable>(
    t: &KvTables<L, H>,
    current: i64,
    rt: &TxnRequest,
    path: &mut Vec<bool>,
) -> Result<(), StorageError> {
    let mut succeeded = true;
    for c in &rt.compare {
        if !compare_holds(t, current, c)? {
            succeeded = false;
            break;
        }
    }
    path.push(succeeded);
    for op in branch(rt, succeeded) {
        if let Some(request_op::Request::RequestTxn(nested)) = &op.request {
            compare_path(t, current, nested, path)?;
        }
    }
    Ok(())
}

/// etcd's `applyCompare`: every key in the range must satisfy the compare; with no key, a
/// VALUE compare fails and others compare against an all-zero KeyValue.
fn compare_holds<L: LatestTable, H: HistoryTable>(
    t: &KvTables<L, H>,
    current: i64,
    c: &Compare,
) -> Result<bool, StorageError> {
    let found = t.scan(KeySpan::new(&c.key, &c.range_end), current, current, None)?;
    if found.kvs.is_empty() {
        if c.target == compare::CompareTarget::Value as i32 {
            return Ok(false);
        }
        return Ok(compare_kv(c, &KeyValue::default()));
    }
    Ok(found.kvs.iter().all(|kv| compare_kv(c, kv)))
}

/// etcd's `compareKV`. An operand of the wrong kind counts as 0 (or empty); an unknown
/// target compares equal; an unknown result holds.
fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let operand =
        |pick: fn(&TargetUnion) -> Option<i64>| c.target_union.as_ref().and_then(pick).unwrap_or(0);
    let ord = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let v: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(v)
        }
        Ok(CompareTarget::Create) => kv.create_revision.cmp(&operand(|u| match u {
            TargetUnion::CreateRevision(r) => Some(*r),
            _ => None,
        })),
        Ok(CompareTarget::Mod) => kv.mod_revision.cmp(&operand(|u| match u {
            TargetUnion::ModRevision(r) => Some(*r),
            _ => None,
        })),
        Ok(CompareTarget::Version) => kv.version.cmp(&operand(|u| match u {
            TargetUnion::Version(r) => Some(*r),
            _ => None,
        })),
        Ok(CompareTarget::Lease) => kv.lease.cmp(&operand(|u| match u {
            TargetUnion::Lease(r) => Some(*r),
            _ => None,
        })),
        Err(_) => Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ord != Ordering::Equal,
        Ok(CompareResult::Greater) => ord == Ordering::Greater,
        Ok(CompareResult::Less) => ord == Ordering::Less,
        Err(_) => true,
    }
}

/// Calls `f` on each non-txn op of the path in execution order (etcd's `checkRequests`).
fn walk_path<'r, E>(
    rt: &'r TxnRequest,
    path: &[bool],
    idx: &mut usize,
    f: &mut impl FnMut(&'r RequestOp) -> Result<(), E>,
) -> Result<(), E> {
    let succeeded = path.get(*idx).copied().unwrap_or(false);
    *idx += 1;
    for op in branch(rt, succeeded) {
        match &op.request {
            Some(request_op::Request::RequestTxn(nested)) => walk_path(nested, path, idx, f)?,
            _ => f(op)?,
        }
    }
    Ok(())
}

/// etcd's `checkRequestPut`, on the state before the txn.
fn check_put_op(w: &WriteCtx<'_>, op: &RequestOp) -> Result<(), ApplyError> {
    let Some(request_op::Request::RequestPut(p)) = &op.request else {
        return Ok(());
    };
    if (p.ignore_value || p.ignore_lease) && w.tables.latest_get(&p.key)?.is_none() {
        return Err(KvError::KeyNotFound.into());
    }
    if p.lease != 0 && !lease_exists(w, p.lease)? {
        return Err(KvError::LeaseNotFound.into());
    }
    Ok(())
}

/// etcd's `checkRequestRange`, against the revisions before the txn.
fn check_range_op(current: i64, compact: i64, op: &RequestOp) -> Result<(), ApplyError> {
    let Some(request_op::Request::RequestRange(r)) = &op.request else {
        return Ok(());
    };
    match r.revision {
        0 => Ok(()),
        rev if rev > current => Err(KvError::FutureRevision.into()),
        rev if rev < compact => Err(KvError::Compacted.into()),
        _ => Ok(()),
    }
}

/// Refuses a put with ignore_value/ignore_lease whose key an earlier delete of the same txn
/// removes. etcd's pre-checks miss this case (its duplicate-key check does not treat a
/// range_end of "\0" as "to the end") and it then crashes mid-txn; Baton refuses it up front
/// with etcd's KeyNotFound so that nothing is written.
fn check_no_ignore_put_after_delete(rt: &TxnRequest, path: &[bool]) -> Result<(), ApplyError> {
    enum Change<'a> {
        Put(&'a [u8]),
        Delete(KeySpan<'a>),
    }
    let mut changes: Vec<Change<'_>> = Vec::new();
    walk_path(rt, path, &mut 0, &mut |op| {
        match &op.request {
            Some(request_op::Request::RequestPut(p)) => {
                let last = changes.iter().rev().find(|c| match c {
                    Change::Put(k) => *k == p.key.as_slice(),
                    Change::Delete(span) => span.contains(&p.key),
                });
                if (p.ignore_value || p.ignore_lease) && matches!(last, Some(Change::Delete(_))) {
                    return Err(ApplyError::Rejected(KvError::KeyNotFound));
                }
                changes.push(Change::Put(&p.key));
            }
            Some(request_op::Request::RequestDeleteRange(d)) => {
                changes.push(Change::Delete(KeySpan::new(&d.key, &d.range_end)));
            }
            _ => {}
        }
        Ok(())
    })
}

/// etcd's `applyTxn`: runs the ops of the branch the path chose. Nested responses carry an
/// empty header, as in etcd.
fn apply_ops(
    w: &mut WriteCtx<'_>,
    rt: &TxnRequest,
    path: &[bool],
    idx: &mut usize,
) -> Result<TxnResponse, ApplyError> {
    use response_op::Response;
    let succeeded = path.get(*idx).copied().unwrap_or(false);
    *idx += 1;
    let ops = branch(rt, succeeded);
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let response =
            match &op.request {
                Some(request_op::Request::RequestRange(r)) => Some(Response::ResponseRange(
                    range_at(&w.tables, w.view_rev(), w.compact, r)?,
                )),
                Some(request_op::Request::RequestPut(p)) => Some(Response::ResponsePut(put(w, p)?)),
                Some(request_op::Request::RequestDeleteRange(d)) => {
                    Some(Response::ResponseDeleteRange(delete_range(w, d)?))
                }
                Some(request_op::Request::RequestTxn(nested)) => {
                    let mut resp = apply_ops(w, nested, path, idx)?;
                    resp.header = Some(Default::default());
                    Some(Response::ResponseTxn(resp))
                }
                None => None,
            };
        responses.push(ResponseOp { response });
    }
    Ok(TxnResponse {
        header: None,
        succeeded,
        responses,
    })
}
