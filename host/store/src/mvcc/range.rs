//! etcd 3.4's Range (`applierV3backend.Range` over `storeTxnRead.rangeKeys`): revision checks,
//! the fetch limit, mod/create revision filters, sorting, `limit`/`more`, `count`, keys_only.

use crate::mvcc::error::{ApplyError, KvError};
use crate::mvcc::go_sort::go_sort;
use crate::mvcc::tables::{HistoryTable, KeySpan, KvTables, LatestTable};
use baton_proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader, range_request};
use baton_proto::mvccpb::KeyValue;

use range_request::{SortOrder, SortTarget};

/// Answers `req` from a view whose newest revision is `current`, compacted at `compact`.
pub(crate) fn range_at<L: LatestTable, H: HistoryTable>(
    tables: &KvTables<L, H>,
    current: i64,
    compact: i64,
    req: &RangeRequest,
) -> Result<RangeResponse, ApplyError> {
    if req.revision > current {
        return Err(KvError::FutureRevision.into());
    }
    let rev = if req.revision <= 0 {
        current
    } else {
        req.revision
    };
    if rev < compact {
        return Err(KvError::Compacted.into());
    }

    let span = KeySpan::new(&req.key, &req.range_end);
    let fetch_max = if req.count_only {
        Some(0)
    } else {
        fetch_max(req)
    };
    let found = tables.scan(span, rev, current, fetch_max)?;
    let mut kvs = found.kvs;

    // etcd applies each filter whose bound is non-zero, in this order.
    if req.max_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision <= req.max_mod_revision);
    }
    if req.min_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision >= req.min_mod_revision);
    }
    if req.max_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision <= req.max_create_revision);
    }
    if req.min_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision >= req.min_create_revision);
    }
    sort_kvs(&mut kvs, req.sort_order, req.sort_target);

    let mut more = false;
    if let Ok(limit) = usize::try_from(req.limit)
        && limit > 0
        && kvs.len() > limit
    {
        kvs.truncate(limit);
        more = true;
    }
    if req.keys_only {
        kvs.iter_mut().for_each(|kv| kv.value.clear());
    }
    Ok(RangeResponse {
        header: Some(ResponseHeader {
            revision: current,
            ..Default::default()
        }),
        kvs,
        more,
        count: found.count,
    })
}

/// How many values etcd reads before filtering: all of them when the request sorts or
/// filters (it truncates afterwards), else `limit + 1` so it can tell whether there is more.
fn fetch_max(req: &RangeRequest) -> Option<usize> {
    let fetch_all = req.sort_order != SortOrder::None as i32
        || req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    match usize::try_from(req.limit) {
        Ok(limit) if limit > 0 && !fetch_all => Some(limit.saturating_add(1)),
        _ => None,
    }
}

/// etcd's sort: a target other than KEY with order NONE sorts ascending; unknown orders or
/// targets leave the (key-ordered) result as it is.
fn sort_kvs(kvs: &mut [KeyValue], order: i32, target: i32) {
    let mut order = SortOrder::try_from(order).ok();
    if target != SortTarget::Key as i32 && order == Some(SortOrder::None) {
        order = Some(SortOrder::Ascend);
    }
    let less: fn(&KeyValue, &KeyValue) -> bool = match SortTarget::try_from(target) {
        Ok(SortTarget::Key) => |a, b| a.key < b.key,
        // Go compares `a - b < 0` with wrapping arithmetic.
        Ok(SortTarget::Version) => |a, b| a.version.wrapping_sub(b.version) < 0,
        Ok(SortTarget::Create) => |a, b| a.create_revision.wrapping_sub(b.create_revision) < 0,
        Ok(SortTarget::Mod) => |a, b| a.mod_revision.wrapping_sub(b.mod_revision) < 0,
        Ok(SortTarget::Value) => |a, b| a.value < b.value,
        Err(_) => return,
    };
    match order {
        Some(SortOrder::Ascend) => go_sort(kvs, less),
        Some(SortOrder::Descend) => go_sort(kvs, |a, b| less(b, a)),
        _ => {}
    }
}
