//! Election: leader election in etcd's layout (`clientv3/concurrency/election.go`) — each
//! candidate holds `<name>/<lease hex>` attached to its lease, valued with what it proclaims,
//! and the key with the lowest create revision leads — so it interoperates with
//! `etcdctl elect`, etcd's `concurrency.Election`, and Baton's etcd Election service (an
//! adapter over this module). A leadership's fencing token is the leader key's create revision,
//! which only grows. A candidate whose lease ends loses its key; one that was waiting fails
//! ("etcdserver: requested lease not found") instead of being made leader. A `campaign` whose
//! client left (deadline, cancel, disconnect) resigns, as etcd's Campaign does on cancel.
//!
//! `campaign`, `proclaim` and `resign` take the caller's lease (`baton call --lease`). Names
//! and values are text or, for any bytes, hex (`name_hex`, `value_hex`); answers carry `key`
//! and `value` when UTF-8, else `key_hex` and `value_hex`.
//! - `campaign {"name":"E","value":"a"}` → `{"key":"E/694d...","token":42}` once leader. A
//!   candidate whose key already exists with another value updates it (etcd's Campaign does).
//! - `proclaim {"name":"E","token":42,"value":"b"}` → `{"revision":45}`, only while the caller
//!   leads with that token; else "election: not leader".
//! - `resign {"name":"E","token":42}` → `{"resigned":true}`: deletes the caller's key if it is
//!   that incarnation (any, without `token`); succeeds either way.
//! - `leader {"name":"E"}` → `{"key":...,"value":...,"token":42,"mod_revision":45,
//!   "version":2,"lease":...}`, or "election: no leader". Read-only calls welcome.
//! - `observe {"name":"E","key":...,"mod_revision":45}` → the leader as `leader` answers it,
//!   once it differs from the one described (another key, or the same key changed since
//!   `mod_revision`); with neither, the current leader, waiting for one if there is none.
//!   Read-only calls welcome; a watcher calls it again with what it got.

use baton_sdk::bytes::{self, lease_hex};
use baton_sdk::json::{Map, Value, json};
use baton_sdk::store::{self, Kv, Range, SortBy};
use baton_sdk::{Module, Reply, context, from_json};

#[derive(serde::Deserialize)]
struct Request {
    name: Option<String>,
    name_hex: Option<String>,
    value: Option<String>,
    value_hex: Option<String>,
    token: Option<i64>,
    /// For `observe`: the leader key the caller knows, and its mod revision.
    key: Option<String>,
    key_hex: Option<String>,
    mod_revision: Option<i64>,
}

impl Request {
    fn name(&self) -> Result<Vec<u8>, String> {
        bytes::pick("name", self.name.as_deref(), self.name_hex.as_deref(), None)
    }

    fn value(&self) -> Result<Vec<u8>, String> {
        let (text, hex) = (self.value.as_deref(), self.value_hex.as_deref());
        bytes::pick("value", text, hex, None)
    }
}

const NOT_LEADER: &str = "election: not leader";
const NO_LEADER: &str = "election: no leader";

struct Election;

baton_sdk::functions! {
    "campaign" writes waits {
        summary: "Becomes a candidate on the caller's lease and waits until it leads; answers its key and token.",
        input: "name (or name_hex), value (or value_hex): what the leader proclaims",
        example: r#"{"name":"E","value":"a"}"# => r#"{"key":"E/694d...","token":42}"#,
    }
    "proclaim" writes {
        summary: "Changes the leader's value, only while the caller leads with `token`.",
        input: "name, token, value (or value_hex)",
        example: r#"{"name":"E","token":42,"value":"b"}"# => r#"{"revision":45}"#,
    }
    "resign" writes {
        summary: "Gives up leadership or candidacy (that incarnation when `token` is given); succeeds either way.",
        input: "name; token (optional)",
        example: r#"{"name":"E","token":42}"# => r#"{"resigned":true}"#,
    }
    "leader" reads {
        summary: "Answers the current leader, or fails with \"election: no leader\".",
        input: "name (or name_hex)",
        example: r#"{"name":"E"}"# => r#"{"key":"E/694d...","value":"b","token":42,"mod_revision":45,"version":2,"lease":...}"#,
    }
    "observe" reads waits {
        summary: "Waits until the leader differs from the one described (or exists), then answers it as `leader` does.",
        input: "name; key, mod_revision (optional): the leader last seen",
        example: r#"{"name":"E","key":"E/694d...","mod_revision":45}"# => r#"{"key":"E/7a1c...","value":"c","token":50,...}"#,
    }
}

impl Module for Election {
    fn invoke(function: &str, input: &[u8]) -> Result<Reply, String> {
        let req: Request = from_json(input)?;
        match function {
            "campaign" => campaign(&req.name()?, &req.value()?),
            "proclaim" => proclaim(&req.name()?, req.token, &req.value()?),
            "resign" => {
                let resigned = resign(&req.name()?, req.token)?;
                Reply::json(&json!({ "resigned": resigned }))
            }
            "leader" => {
                let leader = leader(&req.name()?).ok_or(NO_LEADER)?;
                Reply::json(&describe(&leader))
            }
            "observe" => observe(&req),
            other => Err(format!(
                "election: unknown function {other:?} (try \"campaign\")"
            )),
        }
    }

    /// A `campaign` whose client left resigns: nobody will act as the leader it may be.
    fn abandon(function: &str, input: &[u8]) -> Result<(), String> {
        if function != "campaign" || context::caller_lease() == 0 {
            return Ok(());
        }
        // An input the call refused left nothing behind.
        let Ok(name) = from_json::<Request>(input).and_then(|r| r.name()) else {
            return Ok(());
        };
        resign(&name, None)?;
        Ok(())
    }
}

fn my_key(name: &[u8]) -> Result<Vec<u8>, String> {
    match context::caller_lease() {
        0 => Err("election: call with a lease (it is what ends your candidacy if you die)".into()),
        lease => Ok([name, b"/", lease_hex(lease).as_bytes()].concat()),
    }
}

fn candidates(name: &[u8]) -> Range {
    Range::prefix([name, b"/"].concat())
}

/// The leader of `name`: the oldest candidate, however many there are.
fn leader(name: &[u8]) -> Option<Kv> {
    candidates(name).sort_by(SortBy::CreateRevision).first()
}

/// A candidate's key-value as `leader` and `observe` answer it.
fn describe(kv: &Kv) -> Value {
    let mut out = Map::new();
    bytes::insert(&mut out, "key", &kv.key);
    bytes::insert(&mut out, "value", &kv.value);
    out.insert("token".into(), Value::from(kv.create_revision));
    out.insert("mod_revision".into(), Value::from(kv.mod_revision));
    out.insert("version".into(), Value::from(kv.version));
    out.insert("lease".into(), Value::from(kv.lease));
    Value::Object(out)
}

fn campaign(name: &[u8], value: &[u8]) -> Result<Reply, String> {
    let lease = context::caller_lease();
    let key = my_key(name)?;
    // On a re-run the key is there, unless its lease ended: then this put fails the call
    // ("lease not found") rather than making a candidate nobody keeps alive the leader.
    let token = match store::get(&key) {
        Some(kv) => {
            if kv.value != value {
                store::put_with_lease(&key, value, lease);
            }
            kv.create_revision
        }
        None => {
            store::put_with_lease(&key, value, lease);
            context::revision()
        }
    };
    let leader = leader(name).ok_or("election: own key vanished")?;
    if leader.create_revision == token {
        let mut out = Map::new();
        bytes::insert(&mut out, "key", &key);
        out.insert("token".into(), Value::from(token));
        return Reply::json(&Value::Object(out));
    }
    // Wait for the candidate just ahead to go (etcd's waitDeletes), or for our lease to end.
    let ahead = candidates(name)
        .keys_only()
        .sort_by(SortBy::CreateRevision)
        .descending()
        .max_create_revision(token - 1)
        .first()
        .unwrap_or(leader);
    Ok(Reply::wait_for().key(&ahead.key).lease(lease).into())
}

/// The caller's key if it leads with `token`.
fn leading(name: &[u8], token: Option<i64>) -> Result<Kv, String> {
    let key = my_key(name)?;
    let token = token.ok_or("election: give the token campaign returned")?;
    match leader(name) {
        Some(kv) if kv.key == key && kv.create_revision == token => Ok(kv),
        _ => Err(NOT_LEADER.into()),
    }
}

fn proclaim(name: &[u8], token: Option<i64>, value: &[u8]) -> Result<Reply, String> {
    let kv = leading(name, token)?;
    store::put_with_lease(&kv.key, value, context::caller_lease());
    Reply::json(&json!({ "revision": context::revision() }))
}

/// Deletes the caller's key if it is the incarnation `token` (any without one).
fn resign(name: &[u8], token: Option<i64>) -> Result<bool, String> {
    let key = my_key(name)?;
    match store::get(&key) {
        Some(kv) if token.is_none_or(|t| t == kv.create_revision) => Ok(store::delete(&key)),
        _ => Ok(false),
    }
}

fn observe(req: &Request) -> Result<Reply, String> {
    let name = req.name()?;
    let known = match (&req.key, &req.key_hex) {
        (None, None) => None,
        (text, hex) => Some(bytes::pick("key", text.as_deref(), hex.as_deref(), None)?),
    };
    let Some(leader) = leader(&name) else {
        return Ok(Reply::wait_for()
            .prefix([name.as_slice(), b"/"].concat())
            .into());
    };
    let unchanged = known.as_ref().is_some_and(|k| *k == leader.key)
        && req.mod_revision.is_some_and(|r| r >= leader.mod_revision);
    if unchanged {
        // A put to the leader's key changes its value; its delete changes the leader.
        return Ok(Reply::wait_for().key(&leader.key).into());
    }
    Reply::json(&describe(&leader))
}

baton_sdk::module!(Election);

#[cfg(test)]
mod tests;
