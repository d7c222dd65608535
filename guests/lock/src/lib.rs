//! Lock: a fenced mutex in etcd's own layout — each contender holds `<name>/<lease hex>`
//! attached to its lease, and the key with the lowest create revision owns the lock — so it
//! interoperates with `etcdctl lock`, etcd's `concurrency.Mutex`, and Baton's etcd Lock service
//! (an adapter over this module). A grant's fencing token is the owner key's create revision,
//! which only grows; `fenced-put` and `fenced-txn` write only while the token is the holder's,
//! so a paused ex-holder's late writes are refused by Baton itself. A holder or waiter whose
//! lease ends loses its key, and a waiter whose lease ended fails instead of being granted. An
//! `acquire` whose client left (deadline, cancel, disconnect) is abandoned: its key goes at
//! once, without waiting for its lease. The holder and the key ahead are found with sorted
//! ranges of one key each, so the lock is right at any contender count.
//!
//! All take the caller's lease (`baton call --lease`). Names, keys and values are text or, for
//! any bytes, hex (`name_hex`, `key_hex`, `value_hex`); answers carry `key` when it is UTF-8,
//! else `key_hex`.
//! - `acquire {"name":"L"}` → `{"key":"L/694d7a...","token":42}`, waiting its turn. With
//!   `"lock_delay_ms":N`, see "Lock-delay" below.
//! - `try-acquire {"name":"L"}` → the same with `"acquired":true`, or at once
//!   `{"acquired":false,"holder_token":41}` (or `"retry_at_ms"` during a lock-delay); never waits.
//! - `release {"name":"L"}` → `{"released":true}`.
//! - `fenced-put {"name":"L","token":42,"key":"k","value":"v"}` → `{"revision":43}`.
//! - `fenced-txn {"name":"L","token":42,"ops":[{"put":"k","value":"v"},{"delete":"j"}]}` →
//!   `{"revision":43}`: every op or none (an op names its key as `put`/`put_hex` or
//!   `delete`/`delete_hex`).
//!
//! # Lock-delay
//! A holder granted with `"lock_delay_ms":N` records itself in `<name>\0lock-delay` (a key
//! outside the contenders' prefix, with no lease, so it outlives the holder): its key, lease,
//! token and N. A contender that finds itself oldest reads the record: if that holder's key is
//! gone but its lease still exists, it was released (or unlocked) and the lock passes at once;
//! if its lease ended, the first run to notice writes the proposal time into the record, and
//! the lock is granted only once the leader clock is N ms past it (a timed wait). A waiter is
//! woken by the deletion at once, so the delay counts from the end of the lease to within one
//! log round trip; with no waiter, it counts from the next acquire. `release` (and abandoning an
//! acquire) removes the record. etcd's client-side recipes do not read it.

use baton_sdk::bytes::{self, lease_hex};
use baton_sdk::json::{Map, Value, json};
use baton_sdk::store::{self, Kv, Range, SortBy};
use baton_sdk::{Module, Reply, context, from_json};

#[derive(serde::Deserialize)]
struct Name {
    name: Option<String>,
    name_hex: Option<String>,
}

impl Name {
    fn bytes(&self) -> Result<Vec<u8>, String> {
        bytes::pick("name", self.name.as_deref(), self.name_hex.as_deref(), None)
    }
}

#[derive(serde::Deserialize)]
struct Acquire {
    #[serde(flatten)]
    name: Name,
    #[serde(default)]
    lock_delay_ms: u64,
}

#[derive(serde::Deserialize)]
struct FencedPut {
    #[serde(flatten)]
    name: Name,
    token: i64,
    key: Option<String>,
    key_hex: Option<String>,
    value: Option<String>,
    value_hex: Option<String>,
}

#[derive(serde::Deserialize)]
struct FencedTxn {
    #[serde(flatten)]
    name: Name,
    token: i64,
    ops: Vec<Op>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Op {
    put: Option<String>,
    put_hex: Option<String>,
    value: Option<String>,
    value_hex: Option<String>,
    delete: Option<String>,
    delete_hex: Option<String>,
}

/// What `<name>\0lock-delay` holds: the last holder granted with a lock-delay.
#[derive(serde::Serialize, serde::Deserialize)]
struct DelayRecord {
    lease: i64,
    token: i64,
    delay_ms: u64,
    /// Leader time at which a run first saw the holder's lease ended.
    vanished_ms: Option<u64>,
}

struct Lock;

baton_sdk::functions! {
    "acquire" writes waits {
        summary: "Takes the lock on the caller's lease, waiting its turn; answers the owner key and fencing token.",
        input: "name (or name_hex); lock_delay_ms (optional): hold the lock back this long after a holder's lease ends",
        example: r#"{"name":"L"}"# => r#"{"key":"L/694d7a...","token":42}"#,
    }
    "try-acquire" writes {
        summary: "Takes the lock if it is free, else answers at once with the holder's token; never waits.",
        input: "name (or name_hex); lock_delay_ms (optional)",
        example: r#"{"name":"L"}"# => r#"{"acquired":false,"holder_token":41}"#,
    }
    "release" writes {
        summary: "Releases the caller's hold (or withdraws its wait) on the lock.",
        input: "name (or name_hex)",
        example: r#"{"name":"L"}"# => r#"{"released":true}"#,
    }
    "fenced-put" writes {
        summary: "Puts a key only while `token` is the current holder's fencing token.",
        input: "name, token; key (or key_hex), value (or value_hex)",
        example: r#"{"name":"L","token":42,"key":"k","value":"v"}"# => r#"{"revision":43}"#,
    }
    "fenced-txn" writes {
        summary: "Applies every put and delete in `ops`, or none, only while `token` is the holder's.",
        input: "name, token; ops: [{put|put_hex, value|value_hex} or {delete|delete_hex}]",
        example: r#"{"name":"L","token":42,"ops":[{"put":"k","value":"v"},{"delete":"j"}]}"# => r#"{"revision":43}"#,
    }
}

impl Module for Lock {
    fn invoke(function: &str, input: &[u8]) -> Result<Reply, String> {
        match function {
            "acquire" => {
                let req: Acquire = from_json(input)?;
                acquire(&req.name.bytes()?, req.lock_delay_ms)
            }
            "try-acquire" => {
                let req: Acquire = from_json(input)?;
                try_acquire(&req.name.bytes()?, req.lock_delay_ms)
            }
            "release" => {
                let released = withdraw(&from_json::<Name>(input)?.bytes()?)?;
                Reply::json(&json!({ "released": released }))
            }
            "fenced-put" => fenced_put(from_json(input)?),
            "fenced-txn" => fenced_txn(from_json(input)?),
            other => Err(format!(
                "lock: unknown function {other:?} (try \"acquire\")"
            )),
        }
    }

    /// An `acquire` whose client left withdraws its key, waiter or fresh holder alike: nobody
    /// will use the grant, and the next waiter must not wait for its lease to end.
    fn abandon(function: &str, input: &[u8]) -> Result<(), String> {
        if function != "acquire" || context::caller_lease() == 0 {
            return Ok(());
        }
        // An input the call refused left nothing behind.
        let Ok(name) = from_json::<Name>(input).and_then(|n| n.bytes()) else {
            return Ok(());
        };
        withdraw(&name)?;
        Ok(())
    }
}

fn my_key(name: &[u8]) -> Result<Vec<u8>, String> {
    match context::caller_lease() {
        0 => Err("lock: call with a lease (it is what releases the lock if you die)".into()),
        lease => Ok([name, b"/", lease_hex(lease).as_bytes()].concat()),
    }
}

fn delay_key(name: &[u8]) -> Vec<u8> {
    [name, b"\0lock-delay"].concat()
}

/// Every contender of `name`.
fn contenders(name: &[u8]) -> Range {
    Range::prefix([name, b"/"].concat()).keys_only()
}

/// The contender holding `name`: the oldest, however many there are.
fn holder(name: &[u8]) -> Option<Kv> {
    contenders(name).sort_by(SortBy::CreateRevision).first()
}

/// The caller's key, created now (attached to its lease) if it is not there. A lease that
/// ended fails the call here ("lease not found"): a waiter nobody keeps alive is never queued.
fn join(name: &[u8]) -> Result<Kv, String> {
    let mine = my_key(name)?;
    if let Some(kv) = store::get(&mine) {
        return Ok(kv);
    }
    store::put_with_lease(&mine, "", context::caller_lease());
    store::get(&mine).ok_or_else(|| "lock: own key vanished".into())
}

fn acquire(name: &[u8], lock_delay_ms: u64) -> Result<Reply, String> {
    let lease = context::caller_lease();
    let mine = join(name)?;
    let holder = holder(name).ok_or("lock: own key vanished")?;
    if holder.key != mine.key {
        // Wait for the contender just ahead to go, or for our own lease to end. Every key
        // created before ours is at revision >= 2 (the store starts at 1), so the bound is
        // never 0 (none).
        let ahead = contenders(name)
            .sort_by(SortBy::CreateRevision)
            .descending()
            .max_create_revision(mine.create_revision - 1)
            .first()
            // The holder is older than us, so this finds at least the holder.
            .unwrap_or(holder);
        return Ok(Reply::wait_for().key(&ahead.key).lease(lease).into());
    }
    if let Some(until_ms) = delayed_until(name, mine.create_revision)? {
        return Ok(Reply::wait_for().lease(lease).until_ms(until_ms).into());
    }
    Reply::json(&granted(name, &mine, lock_delay_ms)?)
}

fn try_acquire(name: &[u8], lock_delay_ms: u64) -> Result<Reply, String> {
    let mine = my_key(name)?;
    let existing = store::get(&mine);
    if let Some(holder) = holder(name)
        && holder.key != mine
    {
        return Reply::json(&json!({ "acquired": false, "holder_token": holder.create_revision }));
    }
    // The oldest, or about to be: the token is our key's create revision, or this call's.
    let token = existing.map_or(context::revision(), |kv| kv.create_revision);
    if let Some(until_ms) = delayed_until(name, token)? {
        return Reply::json(&json!({ "acquired": false, "retry_at_ms": until_ms }));
    }
    let mut out = granted(name, &join(name)?, lock_delay_ms)?;
    out.insert("acquired".into(), Value::from(true));
    Reply::json(&out)
}

/// Records the grant of `mine` (for a later lock-delay); the answer: its key and token.
fn granted(name: &[u8], mine: &Kv, lock_delay_ms: u64) -> Result<Map<String, Value>, String> {
    let record = store::get_value(delay_key(name))
        .and_then(|v| baton_sdk::json::from_slice::<DelayRecord>(&v).ok());
    let current = record
        .as_ref()
        .is_some_and(|r| r.token == mine.create_revision && r.delay_ms == lock_delay_ms);
    if lock_delay_ms > 0 && !current {
        let record = DelayRecord {
            lease: context::caller_lease(),
            token: mine.create_revision,
            delay_ms: lock_delay_ms,
            vanished_ms: None,
        };
        let value = baton_sdk::json::to_vec(&record).map_err(|e| e.to_string())?;
        store::put(delay_key(name), value);
    } else if lock_delay_ms == 0 && record.is_some_and(|r| r.token != mine.create_revision) {
        store::delete(delay_key(name));
    }
    let mut out = Map::new();
    bytes::insert(&mut out, "key", &mine.key);
    out.insert("token".into(), Value::from(mine.create_revision));
    Ok(out)
}

/// When a contender with `token` that is now the oldest may be granted: None for now, or the
/// leader time to wait for while the last holder's lock-delay runs. Writes the time the
/// holder's lease was first seen ended.
fn delayed_until(name: &[u8], token: i64) -> Result<Option<u64>, String> {
    let Some(value) = store::get_value(delay_key(name)) else {
        return Ok(None);
    };
    let Ok(mut record) = baton_sdk::json::from_slice::<DelayRecord>(&value) else {
        return Ok(None);
    };
    // Our own grant, or a holder that released (its lease lives on): no delay.
    if record.token == token || store::lease(record.lease).is_some() {
        return Ok(None);
    }
    let now = context::proposal_time_ms();
    let vanished = match record.vanished_ms {
        Some(ms) => ms,
        None => {
            record.vanished_ms = Some(now);
            let value = baton_sdk::json::to_vec(&record).map_err(|e| e.to_string())?;
            store::put(delay_key(name), value);
            now
        }
    };
    let until = vanished.saturating_add(record.delay_ms);
    Ok((now < until).then_some(until))
}

/// Deletes the caller's key (and the lock-delay record of its grant); whether it existed.
fn withdraw(name: &[u8]) -> Result<bool, String> {
    let mine = my_key(name)?;
    let Some(kv) = store::get(&mine) else {
        return Ok(false);
    };
    let record = store::get_value(delay_key(name))
        .and_then(|v| baton_sdk::json::from_slice::<DelayRecord>(&v).ok());
    if record.is_some_and(|r| r.token == kv.create_revision) {
        store::delete(delay_key(name));
    }
    Ok(store::delete(&mine))
}

/// Refuses unless `token` is the holder's.
fn check_token(name: &[u8], token: i64) -> Result<(), String> {
    let holder = holder(name).map_or(0, |kv| kv.create_revision);
    if holder != token {
        return Err(format!(
            "lock {}: stale fencing token {token} (the holder's is {holder})",
            String::from_utf8_lossy(name)
        ));
    }
    Ok(())
}

fn fenced_put(put: FencedPut) -> Result<Reply, String> {
    let name = put.name.bytes()?;
    let key = bytes::pick("key", put.key.as_deref(), put.key_hex.as_deref(), None)?;
    let value = bytes::pick(
        "value",
        put.value.as_deref(),
        put.value_hex.as_deref(),
        None,
    )?;
    check_token(&name, put.token)?;
    store::put(&key, &value);
    Reply::json(&json!({ "revision": context::revision() }))
}

fn fenced_txn(txn: FencedTxn) -> Result<Reply, String> {
    let name = txn.name.bytes()?;
    check_token(&name, txn.token)?;
    for op in &txn.ops {
        let put = (op.put.as_deref(), op.put_hex.as_deref());
        let delete = (op.delete.as_deref(), op.delete_hex.as_deref());
        match (put, delete) {
            ((None, None), (None, None)) => return Err("an op needs put or delete".into()),
            (put, (None, None)) => {
                let key = bytes::pick("put", put.0, put.1, None)?;
                let value = bytes::pick(
                    "value",
                    op.value.as_deref(),
                    op.value_hex.as_deref(),
                    Some(b""),
                )?;
                store::put(&key, &value);
            }
            ((None, None), delete) => {
                store::delete(bytes::pick("delete", delete.0, delete.1, None)?);
            }
            _ => return Err("an op is a put or a delete, not both".into()),
        }
    }
    Reply::json(&json!({ "revision": context::revision() }))
}

baton_sdk::module!(Lock);

#[cfg(test)]
mod tests;
