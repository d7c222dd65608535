//! An in-memory reference model of etcd 3.4's KV semantics, written independently of the
//! redb store (naive scans over a BTreeMap of per-key change lists), for the randomized
//! comparison in `model_test.rs`.

use std::collections::BTreeMap;

use crate::mvcc::error::KvError;
use crate::mvcc::go_sort::go_sort;
use crate::ops::kv::{KvRequest, KvResponse};
use baton_proto::etcdserverpb::{
    CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
    compare, range_request, request_op, response_op,
};
use baton_proto::mvccpb::{Event, KeyValue, event::EventType};

/// One change of a key: a put (Some) or a delete (None).
#[derive(Clone, Debug)]
struct Change {
    main: i64,
    kv: Option<KeyValue>,
}

#[derive(Clone, Debug)]
pub(crate) struct Model {
    changes: BTreeMap<Vec<u8>, Vec<Change>>,
    pub(crate) rev: i64,
    pub(crate) compact: i64,
}

fn in_span(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        k == key
    } else if end == [0] {
        k >= key
    } else {
        k >= key && k < end
    }
}

fn hdr(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}

/// A request being applied: a copy of the model plus its change count.
struct Pending {
    m: Model,
    begin: i64,
    writes: i64,
    events: Vec<Event>,
}

impl Pending {
    fn view(&self) -> i64 {
        self.begin + i64::from(self.writes > 0)
    }

    fn put(&mut self, p: &PutRequest) -> Result<PutResponse, KvError> {
        let rev = self.begin + 1;
        let prev = self.m.live_at(&p.key, self.view()).cloned();
        if (p.ignore_value || p.ignore_lease) && prev.is_none() {
            return Err(KvError::KeyNotFound);
        }
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(rev, |o| o.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |o| o.version + 1),
            value: if p.ignore_value {
                prev.as_ref().map(|o| o.value.clone()).unwrap_or_default()
            } else {
                p.value.clone()
            },
            lease: if p.ignore_lease {
                prev.as_ref().map_or(0, |o| o.lease)
            } else {
                p.lease
            },
        };
        self.m
            .changes
            .entry(p.key.clone())
            .or_default()
            .push(Change {
                main: rev,
                kv: Some(kv.clone()),
            });
        self.writes += 1;
        self.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev.clone(),
        });
        Ok(PutResponse {
            header: hdr(rev),
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    fn delete(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
        let rev = self.begin + 1;
        let doomed = self.m.live_in(&d.key, &d.range_end, self.view());
        for prev in &doomed {
            let tomb = KeyValue {
                key: prev.key.clone(),
                mod_revision: rev,
                ..Default::default()
            };
            self.m
                .changes
                .entry(prev.key.clone())
                .or_default()
                .push(Change {
                    main: rev,
                    kv: None,
                });
            self.writes += 1;
            self.events.push(Event {
                r#type: EventType::Delete as i32,
                kv: Some(tomb),
                prev_kv: Some(prev.clone()),
            });
        }
        DeleteRangeResponse {
            header: hdr(self.view()),
            deleted: doomed.len() as i64,
            prev_kvs: if d.prev_kv { doomed } else { vec![] },
        }
    }
}

impl Model {
    pub(crate) fn new() -> Self {
        Model {
            changes: BTreeMap::new(),
            rev: 1,
            compact: -1,
        }
    }

    fn live_at(&self, key: &[u8], rev: i64) -> Option<&KeyValue> {
        let list = self.changes.get(key)?;
        list.iter()
            .rev()
            .find(|c| c.main <= rev)
            .and_then(|c| c.kv.as_ref())
    }

    fn live_in(&self, key: &[u8], end: &[u8], rev: i64) -> Vec<KeyValue> {
        self.changes
            .keys()
            .filter(|k| in_span(k, key, end))
            .filter_map(|k| self.live_at(k, rev).cloned())
            .collect()
    }

    /// Range against a view whose newest revision is `view`.
    pub(crate) fn range(&self, view: i64, r: &RangeRequest) -> Result<RangeResponse, KvError> {
        if r.revision > view {
            return Err(KvError::FutureRevision);
        }
        let rev = if r.revision > 0 { r.revision } else { view };
        if rev < self.compact {
            return Err(KvError::Compacted);
        }
        let all = self.live_in(&r.key, &r.range_end, rev);
        let count = all.len() as i64;
        let sorts_or_filters = r.sort_order != 0
            || r.min_mod_revision != 0
            || r.max_mod_revision != 0
            || r.min_create_revision != 0
            || r.max_create_revision != 0;
        let mut kvs: Vec<KeyValue> = if r.count_only {
            vec![]
        } else if r.limit > 0 && !sorts_or_filters {
            all.into_iter().take(r.limit as usize + 1).collect()
        } else {
            all
        };
        kvs.retain(|kv| {
            (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
                && (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
                && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
                && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
        });
        model_sort(&mut kvs, r.sort_order, r.sort_target);
        let more = r.limit > 0 && kvs.len() > r.limit as usize;
        if more {
            kvs.truncate(r.limit as usize);
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value = vec![];
            }
        }
        Ok(RangeResponse {
            header: hdr(view),
            kvs,
            more,
            count,
        })
    }

    pub(crate) fn apply(&mut self, req: &KvRequest) -> Result<(KvResponse, Vec<Event>), KvError> {
        let mut p = Pending {
            m: self.clone(),
            begin: self.rev,
            writes: 0,
            events: vec![],
        };
        let resp = match req {
            KvRequest::Put(put) => {
                if put.lease != 0 {
                    return Err(KvError::LeaseNotFound);
                }
                KvResponse::Put(p.put(put)?)
            }
            KvRequest::DeleteRange(d) => KvResponse::DeleteRange(p.delete(d)),
            KvRequest::Txn(t) => KvResponse::Txn(self.txn(&mut p, t)?),
            KvRequest::Compaction(c) => {
                if c.revision <= self.compact {
                    return Err(KvError::Compacted);
                }
                if c.revision > self.rev {
                    return Err(KvError::FutureRevision);
                }
                p.m.compact = c.revision;
                KvResponse::Compaction(CompactionResponse {
                    header: hdr(self.rev),
                })
            }
        };
        if p.writes > 0 {
            p.m.rev = self.rev + 1;
        }
        *self = p.m;
        Ok((resp, p.events))
    }

    fn holds(&self, c: &Compare) -> bool {
        let kvs = self.live_in(&c.key, &c.range_end, self.rev);
        if kvs.is_empty() {
            return c.target != compare::CompareTarget::Value as i32
                && cmp_kv(c, &KeyValue::default());
        }
        kvs.iter().all(|kv| cmp_kv(c, kv))
    }

    /// Pre-order outcomes of this txn and the nested txns of the branches taken.
    fn outcomes(&self, t: &TxnRequest, out: &mut Vec<bool>) {
        let ok = t.compare.iter().all(|c| self.holds(c));
        out.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let Some(request_op::Request::RequestTxn(n)) = &op.request {
                self.outcomes(n, out);
            }
        }
    }

    fn txn(&self, p: &mut Pending, t: &TxnRequest) -> Result<TxnResponse, KvError> {
        let mut outcomes = vec![];
        self.outcomes(t, &mut outcomes);
        let mut ops = vec![];
        flatten(t, &outcomes, &mut 0, &mut ops);
        let writes = t
            .success
            .iter()
            .chain(&t.failure)
            .any(|o| !matches!(o.request, Some(request_op::Request::RequestRange(_))));
        if writes {
            for op in &ops {
                if let Some(request_op::Request::RequestPut(put)) = &op.request {
                    if (put.ignore_value || put.ignore_lease)
                        && self.live_at(&put.key, self.rev).is_none()
                    {
                        return Err(KvError::KeyNotFound);
                    }
                    if put.lease != 0 {
                        return Err(KvError::LeaseNotFound);
                    }
                }
            }
        }
        for op in &ops {
            if let Some(request_op::Request::RequestRange(r)) = &op.request
                && r.revision != 0
            {
                if r.revision > self.rev {
                    return Err(KvError::FutureRevision);
                }
                if r.revision < self.compact {
                    return Err(KvError::Compacted);
                }
            }
        }
        let mut resp = run(p, t, &outcomes, &mut 0)?;
        resp.header = hdr(p.view());
        Ok(resp)
    }
}

/// The non-txn ops of the taken path, in execution order.
fn flatten<'a>(t: &'a TxnRequest, outcomes: &[bool], i: &mut usize, out: &mut Vec<&'a RequestOp>) {
    let ok = outcomes[*i];
    *i += 1;
    for op in if ok { &t.success } else { &t.failure } {
        match &op.request {
            Some(request_op::Request::RequestTxn(n)) => flatten(n, outcomes, i, out),
            _ => out.push(op),
        }
    }
}

fn run(
    p: &mut Pending,
    t: &TxnRequest,
    outcomes: &[bool],
    i: &mut usize,
) -> Result<TxnResponse, KvError> {
    let ok = outcomes[*i];
    *i += 1;
    let mut responses = vec![];
    for op in if ok { &t.success } else { &t.failure } {
        let response = match &op.request {
            Some(request_op::Request::RequestRange(r)) => Some(
                response_op::Response::ResponseRange(p.m.range(p.view(), r)?),
            ),
            Some(request_op::Request::RequestPut(put)) => {
                Some(response_op::Response::ResponsePut(p.put(put)?))
            }
            Some(request_op::Request::RequestDeleteRange(d)) => {
                Some(response_op::Response::ResponseDeleteRange(p.delete(d)))
            }
            Some(request_op::Request::RequestTxn(n)) => {
                let mut r = run(p, n, outcomes, i)?;
                r.header = Some(ResponseHeader::default());
                Some(response_op::Response::ResponseTxn(r))
            }
            None => None,
        };
        responses.push(ResponseOp { response });
    }
    Ok(TxnResponse {
        header: None,
        succeeded: ok,
        responses,
    })
}

fn cmp_kv(c: &Compare, kv: &KeyValue) -> bool {
    use compare::TargetUnion as U;
    let num = |want: fn(&U) -> Option<i64>| c.target_union.as_ref().and_then(want).unwrap_or(0);
    let ord = match c.target {
        0 => kv.version.cmp(&num(|u| {
            if let U::Version(v) = u {
                Some(*v)
            } else {
                None
            }
        })),
        1 => kv.create_revision.cmp(&num(|u| {
            if let U::CreateRevision(v) = u {
                Some(*v)
            } else {
                None
            }
        })),
        2 => kv.mod_revision.cmp(&num(|u| {
            if let U::ModRevision(v) = u {
                Some(*v)
            } else {
                None
            }
        })),
        3 => {
            let v = match &c.target_union {
                Some(U::Value(v)) => v.clone(),
                _ => vec![],
            };
            kv.value.cmp(&v)
        }
        4 => kv
            .lease
            .cmp(&num(|u| if let U::Lease(v) = u { Some(*v) } else { None })),
        _ => std::cmp::Ordering::Equal,
    };
    match c.result {
        0 => ord.is_eq(),
        1 => ord.is_gt(),
        2 => ord.is_lt(),
        3 => ord.is_ne(),
        _ => true,
    }
}

/// etcd's sort rules; the tie order comes from Go's unstable sort, which `go_sort` reproduces.
fn model_sort(kvs: &mut [KeyValue], order: i32, target: i32) {
    use range_request::{SortOrder, SortTarget};
    let order = if order == SortOrder::None as i32 && target != SortTarget::Key as i32 {
        SortOrder::Ascend as i32
    } else {
        order
    };
    let key: fn(&KeyValue, &KeyValue) -> std::cmp::Ordering = match target {
        0 => |a, b| a.key.cmp(&b.key),
        1 => |a, b| a.version.cmp(&b.version),
        2 => |a, b| a.create_revision.cmp(&b.create_revision),
        3 => |a, b| a.mod_revision.cmp(&b.mod_revision),
        4 => |a, b| a.value.cmp(&b.value),
        _ => return,
    };
    match order {
        1 => go_sort(kvs, |a, b| key(a, b).is_lt()),
        2 => go_sort(kvs, |a, b| key(a, b).is_gt()),
        _ => {}
    }
}
