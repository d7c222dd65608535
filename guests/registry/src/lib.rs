//! Registry: service registration and discovery. An instance is a key attached to its
//! process's lease, so it goes when the process dies; `changes` is the building block of
//! discovery: it returns what came or went after a revision, or waits server-side for the next
//! change, so a client keeps an up-to-date view with one outstanding call.
//!
//! Layout: etcd's gRPC naming (`client/v3/naming/endpoints`): the instance key is
//! `<service>/<instance>` and its value `{"Op":0,"Addr":"<instance>","Metadata":<meta>}`, so
//! etcd's endpoints manager (`endpoints.NewManager(client, service).List`) and its gRPC resolver
//! (`etcd:///<service>`) see what the module registers, and instances they add are listed here
//! (registering through the module is what gets a departure reported, see below). Bookkeeping
//! lives under `__<service>/`:
//! - `__<service>/roster/<instance>`: every instance the registry knows of, without a lease, so
//!   an instance whose lease ended is noticed (the key the lease took is simply gone);
//! - `__<service>/gone/<instance>`: a departure, its mod revision the one that recorded it;
//! - `__<service>/horizon`: the newest revision whose departures were forgotten (at most 1024
//!   departures are kept per service, oldest forgotten first).
//!
//! Functions (JSON in and out):
//! - `register {"service":"web","instance":"10.0.0.1:80","meta":{"zone":"a"}}` with the
//!   caller's lease → `{"key":"web/10.0.0.1:80","revision":42}`; registering again updates.
//! - `deregister {"service":"web","instance":"10.0.0.1:80"}` → `{"deregistered":true}`.
//! - `list {"service":"web"}` → `{"revision":41,"instances":[{"instance":…,"addr":…,"meta":…,
//!   "lease":…,"mod_revision":…}]}`; writes nothing, so it may be called read-only.
//! - `changes {"service":"web","since_revision":41}` → `{"revision":57,"came":[instances, as
//!   list],"went":["10.0.0.2:80"]}`: instances added or updated, and instances gone, after
//!   `since_revision`; when there are none it waits for the next change. A writing call: it
//!   records the departures it notices.
//!
//! How a client discovers: `list`, then loop `changes` with `since_revision` set to the last
//! reply's `revision`, applying `came` as upserts and `went` as removals. A change may be
//! reported twice (a `revision` is conservative) and a departure may be reported for an instance
//! the client never saw; both are harmless when applied that way. A departure is reported from
//! the revision the registry noticed it, which follows the lease's end at once for a waiting
//! `changes` (the key going wakes it).
//!
//! On a compacted revision: `since_revision` older than the horizon fails with "revision N is
//! compacted" (departures since then may be forgotten). The client then does what etcd watchers
//! do after `ErrCompacted`: `list` again, replace its whole view, and resume `changes` from that
//! list's `revision`. Etcd's own compaction never matters here: the module reads no history.

use baton_sdk::json::{self as serde_json, Value, json};
use baton_sdk::store::{self, Kv, Range, SortBy};
use baton_sdk::{Module, Reply, context, from_json};
use std::cmp::Ordering;

/// Departures remembered per service; beyond it the oldest are forgotten and the horizon rises.
const DEPARTURES_MAX: u64 = 1024;
/// Keys read per range while walking instances and the roster.
const PAGE_KEYS: u32 = 1024;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    service: String,
    instance: String,
    #[serde(default)]
    meta: Value,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Instance {
    service: String,
    instance: String,
}

#[derive(serde::Deserialize)]
struct Service {
    service: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Changes {
    service: String,
    since_revision: i64,
}

/// The keys of one service.
struct Layout {
    service: String,
}

impl Layout {
    fn new(service: String) -> Result<Self, String> {
        match service.is_empty() {
            true => Err("registry: name the service (\"service\":\"web\")".into()),
            false => Ok(Layout { service }),
        }
    }

    fn instances(&self) -> String {
        format!("{}/", self.service)
    }

    fn roster(&self) -> String {
        format!("__{}/roster/", self.service)
    }

    fn gone(&self) -> String {
        format!("__{}/gone/", self.service)
    }

    fn horizon(&self) -> String {
        format!("__{}/horizon", self.service)
    }

    fn instance_key(&self, instance: &str) -> Result<String, String> {
        match instance.is_empty() {
            true => Err("registry: name the instance (e.g. its address)".into()),
            false => Ok(format!("{}{instance}", self.instances())),
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every key starting with `prefix` (changed at or after `min_mod_revision`, 0 for any), in key
/// order, a page at a time (past the host's per-range cap).
fn all(prefix: &str, min_mod_revision: i64, keys_only: bool) -> Vec<Kv> {
    let end = store::prefix_end(prefix.as_bytes());
    let mut kvs: Vec<Kv> = Vec::new();
    let mut from = prefix.as_bytes().to_vec();
    loop {
        let mut page = Range::new(&from, &end)
            .limit(PAGE_KEYS)
            .min_mod_revision(min_mod_revision);
        if keys_only {
            page = page.keys_only();
        }
        let got = page.get();
        kvs.extend(got.kvs);
        match kvs.last() {
            Some(last) if got.more => {
                from = last.key.clone();
                from.push(0);
            }
            _ => return kvs,
        }
    }
}

/// An instance key as callers see it: etcd's naming value unpacked when it is one.
fn describe(l: &Layout, kv: &Kv) -> Value {
    let instance = text(&kv.key[l.instances().len()..]);
    let (addr, meta) = match serde_json::from_slice::<Value>(&kv.value) {
        Ok(Value::Object(mut v)) if v.contains_key("Addr") => (
            v.remove("Addr").unwrap_or(Value::Null),
            v.remove("Metadata").unwrap_or(Value::Null),
        ),
        // Put by some other client: the value is the metadata.
        _ => (
            Value::String(instance.clone()),
            Value::String(text(&kv.value)),
        ),
    };
    json!({
        "instance": instance, "addr": addr, "meta": meta, "lease": kv.lease,
        "mod_revision": kv.mod_revision,
    })
}

fn register(r: Register) -> Result<Reply, String> {
    let l = Layout::new(r.service)?;
    let key = l.instance_key(&r.instance)?;
    let lease = match context::caller_lease() {
        0 => {
            return Err(
                "registry: register with a lease (it is what removes a dead instance)".into(),
            );
        }
        lease => lease,
    };
    let value = json!({ "Op": 0, "Addr": r.instance, "Metadata": r.meta });
    store::put_with_lease(&key, value.to_string(), lease);
    let roster = format!("{}{}", l.roster(), r.instance);
    if store::get(&roster).is_none() {
        store::put(roster, "");
    }
    store::delete(format!("{}{}", l.gone(), r.instance));
    Reply::json(&json!({ "key": key, "revision": context::revision() }))
}

fn deregister(i: Instance) -> Result<Reply, String> {
    let l = Layout::new(i.service)?;
    let deregistered = store::delete(l.instance_key(&i.instance)?);
    if store::delete(format!("{}{}", l.roster(), i.instance)) {
        store::put(format!("{}{}", l.gone(), i.instance), "");
    }
    Reply::json(&json!({ "deregistered": deregistered }))
}

fn list(l: &Layout) -> Result<Reply, String> {
    let instances: Vec<Value> = all(&l.instances(), 0, false)
        .iter()
        .map(|kv| describe(l, kv))
        .collect();
    // Read-only, revision() is the store's; otherwise the next write's. One less is right or
    // conservative either way (a change reported twice, never one missed).
    let revision = context::revision() - 1;
    Reply::json(&json!({ "revision": revision, "instances": instances }))
}

/// Forgets the oldest departures past the bound (before this call records more, so a call
/// never forgets what it reports), raising the horizon. Returns whether it wrote.
fn forget_oldest(l: &Layout) -> Result<bool, String> {
    let departures = Range::prefix(l.gone()).count();
    if departures > DEPARTURES_MAX {
        let excess = u32::try_from(departures - DEPARTURES_MAX).unwrap_or(u32::MAX);
        let oldest = Range::prefix(l.gone())
            .keys_only()
            .sort_by(SortBy::ModRevision)
            .limit(excess)
            .kvs();
        let mut horizon = horizon(l)?;
        for kv in oldest {
            horizon = horizon.max(kv.mod_revision);
            store::delete(kv.key);
        }
        store::put(l.horizon(), horizon.to_string());
        return Ok(true);
    }
    Ok(false)
}

/// Records departures (roster entries whose instance key is gone) and adopts instances put by
/// other clients. Returns whether it wrote.
fn sweep(l: &Layout) -> Result<bool, String> {
    let instances = all(&l.instances(), 0, true);
    let roster = all(&l.roster(), 0, true);
    let names = |kvs: &[Kv], prefix: &str| -> Vec<Vec<u8>> {
        kvs.iter()
            .map(|kv| kv.key[prefix.len()..].to_vec())
            .collect()
    };
    let (live, known) = (
        names(&instances, &l.instances()),
        names(&roster, &l.roster()),
    );
    let mut wrote = false;
    // Both sorted by name: walk them side by side.
    let (mut live, mut known) = (live.iter().peekable(), known.iter().peekable());
    loop {
        let order = match (live.peek(), known.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => a.cmp(b),
        };
        match order {
            Ordering::Equal => {
                live.next();
                known.next();
            }
            // Put by another client (etcd's endpoints manager, etcdctl): adopt it.
            Ordering::Less => {
                let name = live.next().map(Vec::as_slice).unwrap_or_default();
                store::put([l.roster().as_bytes(), name].concat(), "");
                wrote = true;
            }
            // Known, but its key is gone (lease ended, or deleted): a departure.
            Ordering::Greater => {
                let name = known.next().map(Vec::as_slice).unwrap_or_default();
                store::delete([l.roster().as_bytes(), name].concat());
                store::put([l.gone().as_bytes(), name].concat(), "");
                wrote = true;
            }
        }
    }
    Ok(wrote)
}

fn horizon(l: &Layout) -> Result<i64, String> {
    store::get_value(l.horizon()).map_or(Ok(0), |v| {
        text(&v)
            .parse()
            .map_err(|_| format!("registry: bad horizon {:?}", text(&v)))
    })
}

fn changes(c: Changes) -> Result<Reply, String> {
    let l = Layout::new(c.service)?;
    let forgot = forget_oldest(&l)?;
    let wrote = sweep(&l)? || forgot;
    let horizon = horizon(&l)?;
    if c.since_revision < horizon {
        return Err(format!(
            "registry {}: revision {} is compacted (departures up to {horizon} were forgotten); \
             list again and ask for changes since the list's revision",
            l.service, c.since_revision
        ));
    }
    let after = c.since_revision.saturating_add(1).max(1);
    let came: Vec<Value> = all(&l.instances(), after, false)
        .iter()
        .map(|kv| describe(&l, kv))
        .collect();
    let went: Vec<String> = all(&l.gone(), after, true)
        .iter()
        .map(|kv| text(&kv.key[l.gone().len()..]))
        .collect();
    if came.is_empty() && went.is_empty() {
        // Any instance key changing (a lease ending included) may be news.
        return Ok(Reply::wait_for()
            .prefix(l.instances())
            .prefix(l.gone())
            .into());
    }
    // Everything up to this call's revision is reported (its own writes included, if any).
    let revision = context::revision() - i64::from(!wrote);
    Reply::json(&json!({ "revision": revision, "came": came, "went": went }))
}

struct Registry;

baton_sdk::functions! {
    "register" writes {
        summary: "Registers (or updates) an instance of a service on the caller's lease.",
        input: "service, instance; meta (optional): any JSON",
        example: r#"{"service":"web","instance":"10.0.0.1:80","meta":{"zone":"a"}}"# => r#"{"key":"web/10.0.0.1:80","revision":42}"#,
    }
    "deregister" writes {
        summary: "Removes an instance of a service.",
        input: "service, instance",
        example: r#"{"service":"web","instance":"10.0.0.1:80"}"# => r#"{"deregistered":true}"#,
    }
    "list" reads {
        summary: "Lists a service's instances and the revision they are as of.",
        input: "service",
        example: r#"{"service":"web"}"# => r#"{"revision":41,"instances":[{"instance":"10.0.0.1:80","addr":"10.0.0.1:80","meta":{"zone":"a"},"lease":...,"mod_revision":40}]}"#,
    }
    "changes" writes waits {
        summary: "Answers instances that came or went after `since_revision`, waiting for the next change if none.",
        input: "service, since_revision",
        example: r#"{"service":"web","since_revision":41}"# => r#"{"revision":57,"came":[],"went":["10.0.0.2:80"]}"#,
    }
}

impl Module for Registry {
    fn invoke(function: &str, input: &[u8]) -> Result<Reply, String> {
        match function {
            "register" => register(from_json(input)?),
            "deregister" => deregister(from_json(input)?),
            "list" => list(&Layout::new(from_json::<Service>(input)?.service)?),
            "changes" => changes(from_json(input)?),
            other => Err(format!(
                "registry: unknown function {other:?} (try register, deregister, list, changes)"
            )),
        }
    }
}

baton_sdk::module!(Registry);

#[cfg(test)]
mod tests;
