//! Request shape checks done before a KV request is proposed, mirroring etcd 3.4's
//! `etcdserver/api/v3rpc/key.go`: same checks, same order, so the same request fails with
//! the same error.

mod interval_tree;

use std::collections::HashSet;

use interval_tree::{Interval, IntervalTree};

use crate::mvcc::error::KvError;
use baton_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, request_op,
};

pub fn check_range(r: &RangeRequest) -> Result<(), KvError> {
    if r.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    Ok(())
}

pub fn check_put(r: &PutRequest) -> Result<(), KvError> {
    if r.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete_range(r: &DeleteRangeRequest) -> Result<(), KvError> {
    if r.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    Ok(())
}

/// Op count and per-op checks (recursively), then the put/delete overlap check of each branch.
pub fn check_txn(r: &TxnRequest, txn_ops_max: usize) -> Result<(), KvError> {
    let ops_max = i64::try_from(txn_ops_max).unwrap_or(i64::MAX);
    check_txn_ops(r, ops_max)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

/// etcd's `checkTxnRequest`; nested txns get the budget left after this level's widest list,
/// which may go negative (then any non-empty nested txn is refused).
fn check_txn_ops(r: &TxnRequest, ops_max: i64) -> Result<(), KvError> {
    let widest = r.compare.len().max(r.success.len()).max(r.failure.len());
    let widest = i64::try_from(widest).unwrap_or(i64::MAX);
    if widest > ops_max {
        return Err(KvError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(KvError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        check_request_op(op, ops_max - widest)?;
    }
    Ok(())
}

fn check_request_op(op: &RequestOp, ops_max: i64) -> Result<(), KvError> {
    match &op.request {
        Some(request_op::Request::RequestRange(r)) => check_range(r),
        Some(request_op::Request::RequestPut(r)) => check_put(r),
        Some(request_op::Request::RequestDeleteRange(r)) => check_delete_range(r),
        Some(request_op::Request::RequestTxn(r)) => check_txn_ops(r, ops_max),
        // An empty op is reported as etcd does.
        None => Err(KvError::KeyNotFound),
    }
}

/// etcd's `checkIntervals`: within one branch list (and the txns nested in it), no key may be
/// put twice and no put may fall in a deleted range. The two branches of a nested txn may put
/// the same key, since only one of them runs. Returns the puts and deletes for the parent.
fn check_intervals(reqs: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, IntervalTree), KvError> {
    let mut dels = IntervalTree::default();
    for req in reqs {
        if let Some(request_op::Request::RequestDeleteRange(d)) = &req.request {
            let ivl = if d.range_end.is_empty() {
                Interval::point(&d.key)
            } else {
                Interval {
                    begin: d.key.clone(),
                    end: d.range_end.clone(),
                }
            };
            dels.insert(ivl);
        }
    }

    // Everything at or above "\0" (empty end = +infinity): etcd's bound for merging children.
    let everything = Interval {
        begin: vec![0],
        end: Vec::new(),
    };
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for req in reqs {
        let Some(request_op::Request::RequestTxn(t)) = &req.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || dels.intersects(&Interval::point(k)) {
                return Err(KvError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in puts_else {
            if puts.contains(&k) && !puts_then.contains(&k) {
                return Err(KvError::DuplicateKey);
            }
            if dels.intersects(&Interval::point(&k)) {
                return Err(KvError::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.union(&dels_then, &everything);
        dels.union(&dels_else, &everything);
    }

    for req in reqs {
        let Some(request_op::Request::RequestPut(p)) = &req.request else {
            continue;
        };
        if puts.contains(&p.key) || dels.intersects(&Interval::point(&p.key)) {
            return Err(KvError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests;
