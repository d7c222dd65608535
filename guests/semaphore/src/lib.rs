//! Semaphore: `permits` holders at once, granted first come first served, each grant with its
//! own fencing token; a holder or waiter whose lease ends loses its place (Curator's
//! InterProcessSemaphoreV2, `consul lock -n`). etcd has no semaphore recipe, so the layout is
//! Baton's own, in plain keys any etcd client can read:
//!
//! - `<name>/contenders/<lease hex>`: one per caller lease, attached to it. The `permits`
//!   oldest (lowest create revision) hold a permit; the rest wait in creation order. A key's
//!   create revision is its grant's fencing token, so tokens only grow.
//! - `<name>/limit`: the permit count, in decimal. As Consul does with its lock key, callers
//!   must agree on it: an `acquire` naming another count while contenders exist is refused. A
//!   call that finds no contenders sets it, so a semaphore left empty can be re-sized.
//!
//! A waiter waits on the contender just ahead of it; the first waiter waits on the holders
//! (or, past `GUEST_WAIT_CONDITIONS_MAX` permits, on every contender). A grant re-puts the
//! grantee's key (value `held`, same create revision) so the waiter behind it re-runs and takes
//! the first waiter's watch. Positions come from sorted ranges and counts, so the semaphore is
//! right at any contender count. An `acquire` whose client left is abandoned: its key goes at
//! once, grant or not.
//!
//! All but `holders` take the caller's lease (`baton call --lease`):
//! - `acquire {"name":"S","permits":3}` → `{"key":"S/contenders/694d7a...","token":42}` (waits);
//! - `try-acquire {"name":"S","permits":3}` → the same with `"acquired":true`, or
//!   `{"acquired":false}` without queueing;
//! - `release {"name":"S"}` → `{"released":true}`;
//! - `fenced-put {"name":"S","token":42,"key":"k","value":"v"}` → `{"revision":43}`, refused
//!   unless `token` is a current holder's;
//! - `holders {"name":"S"}` (read-only is fine) → `{"permits":3,"holders":[{"key":...,
//!   "lease":...,"token":42}],"waiting":5}`.

use baton_limits::{GUEST_WAIT_CONDITIONS_MAX, SEMAPHORE_PERMITS_MAX};
use baton_sdk::json::json;
use baton_sdk::store::{self, Kv, Range, SortBy};
use baton_sdk::{Module, Reply, context, from_json};

/// A contender's value once its acquire was granted.
const HELD: &str = "held";

#[derive(serde::Deserialize)]
struct Named {
    name: String,
}

#[derive(serde::Deserialize)]
struct Acquire {
    name: String,
    permits: u32,
}

#[derive(serde::Deserialize)]
struct FencedPut {
    name: String,
    token: i64,
    key: String,
    value: String,
}

struct Semaphore;

baton_sdk::functions! {
    "acquire" writes waits {
        summary: "Takes one of `permits` permits on the caller's lease, waiting its turn; answers the key and fencing token.",
        input: "name, permits: the count every caller must agree on",
        example: r#"{"name":"S","permits":3}"# => r#"{"key":"S/contenders/694d7a...","token":42}"#,
    }
    "try-acquire" writes {
        summary: "Takes a permit if one is free, else answers at once without queueing.",
        input: "name, permits",
        example: r#"{"name":"S","permits":3}"# => r#"{"acquired":true,"key":"S/contenders/694d7a...","token":42}"#,
    }
    "release" writes {
        summary: "Releases the caller's permit (or withdraws its wait).",
        input: "name",
        example: r#"{"name":"S"}"# => r#"{"released":true}"#,
    }
    "fenced-put" writes {
        summary: "Puts a key only while `token` is a current holder's.",
        input: "name, token, key, value",
        example: r#"{"name":"S","token":42,"key":"k","value":"v"}"# => r#"{"revision":43}"#,
    }
    "holders" reads {
        summary: "Lists the holders and counts the waiters.",
        input: "name",
        example: r#"{"name":"S"}"# => r#"{"permits":3,"holders":[{"key":"S/contenders/694d7a...","lease":...,"token":42}],"waiting":5}"#,
    }
}

impl Module for Semaphore {
    fn invoke(function: &str, input: &[u8]) -> Result<Reply, String> {
        match function {
            "acquire" => acquire(&from_json(input)?, true),
            "try-acquire" => acquire(&from_json(input)?, false),
            "release" => {
                let released = store::delete(my_key(&from_json::<Named>(input)?.name)?);
                Reply::json(&json!({ "released": released }))
            }
            "fenced-put" => fenced_put(from_json(input)?),
            "holders" => holders(&from_json::<Named>(input)?.name),
            other => Err(format!(
                "semaphore: unknown function {other:?} (try \"acquire\")"
            )),
        }
    }

    /// An `acquire` whose client left withdraws its key, waiter or fresh grant alike: nobody
    /// will use the permit, and the waiters behind must not wait for its lease to end.
    fn abandon(function: &str, input: &[u8]) -> Result<(), String> {
        if function != "acquire" || context::caller_lease() == 0 {
            return Ok(());
        }
        // An input the call refused left nothing behind.
        let Ok(named) = from_json::<Named>(input) else {
            return Ok(());
        };
        store::delete(my_key(&named.name)?);
        Ok(())
    }
}

fn contenders_prefix(name: &str) -> String {
    format!("{name}/contenders/")
}

fn limit_key(name: &str) -> String {
    format!("{name}/limit")
}

fn my_key(name: &str) -> Result<String, String> {
    match context::caller_lease() {
        0 => Err("semaphore: call with a lease (it is what frees the permit if you die)".into()),
        lease => Ok(format!("{}{lease:x}", contenders_prefix(name))),
    }
}

fn contenders(name: &str) -> Range {
    Range::prefix(contenders_prefix(name)).keys_only()
}

/// How many contenders were created before revision `create_revision`.
fn ahead_of(name: &str, create_revision: i64) -> u64 {
    // Store revisions start at 1, so a key's create revision is >= 2 and the bound is never
    // 0 (which would mean unbounded).
    contenders(name)
        .max_create_revision(create_revision - 1)
        .count()
}

/// The permit count stored for `name`, if any.
fn stored_limit(name: &str) -> Result<Option<u32>, String> {
    let Some(value) = store::get_value(limit_key(name)) else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&value);
    text.trim().parse().map(Some).map_err(|_| {
        format!(
            "semaphore {name}: {} holds {text:?}, not a count",
            limit_key(name)
        )
    })
}

/// Checks `permits` against the count the other contenders agreed on, or sets it when there
/// are none (or none recorded one).
fn agree_on_limit(name: &str, permits: u32, contenders_exist: bool) -> Result<(), String> {
    if permits == 0 || permits > SEMAPHORE_PERMITS_MAX {
        return Err(format!(
            "semaphore {name}: permits must be 1 to {SEMAPHORE_PERMITS_MAX}, not {permits}"
        ));
    }
    match stored_limit(name)? {
        Some(limit) if limit == permits => Ok(()),
        Some(limit) if contenders_exist => Err(format!(
            "semaphore {name} has {limit} permits, not {permits} (callers must agree while it is in use)"
        )),
        _ => {
            store::put(limit_key(name), permits.to_string());
            Ok(())
        }
    }
}

fn acquire(call: &Acquire, wait: bool) -> Result<Reply, String> {
    let name = call.name.as_str();
    let lease = context::caller_lease();
    let mine_key = my_key(name)?;
    let mine = match store::get(&mine_key) {
        Some(kv) => {
            agree_on_limit(name, call.permits, true)?;
            kv
        }
        None => {
            let queued = contenders(name).count();
            agree_on_limit(name, call.permits, queued > 0)?;
            if !wait && queued >= u64::from(call.permits) {
                return Reply::json(&json!({ "acquired": false }));
            }
            // Fails the call ("lease not found") if the lease ended, e.g. on a re-run after
            // it did: nobody would keep the key alive.
            store::put_with_lease(&mine_key, "", lease);
            store::get(&mine_key).ok_or("semaphore: own key vanished")?
        }
    };
    let ahead = ahead_of(name, mine.create_revision);
    if ahead < u64::from(call.permits) {
        return grant(&mine_key, &mine, lease, wait);
    }
    if !wait {
        // Queued by an earlier acquire of this lease, still waiting.
        return Reply::json(&json!({ "acquired": false }));
    }
    let wait_for = Reply::wait_for().lease(lease);
    let wait_for = if ahead > u64::from(call.permits) {
        // Behind another waiter: the one just ahead re-puts its key when granted, or goes.
        let just_ahead = contenders(name)
            .sort_by(SortBy::CreateRevision)
            .descending()
            .max_create_revision(mine.create_revision - 1)
            .first()
            .ok_or("semaphore: contender ahead vanished")?;
        wait_for.key(just_ahead.key)
    } else if (call.permits as usize) < GUEST_WAIT_CONDITIONS_MAX {
        // The first waiter: any holder leaving frees a permit for it.
        let holders = contenders(name)
            .sort_by(SortBy::CreateRevision)
            .limit(call.permits)
            .kvs();
        holders.into_iter().fold(wait_for, |w, kv| w.key(kv.key))
    } else {
        wait_for.prefix(contenders_prefix(name))
    };
    Ok(wait_for.into())
}

/// Marks `mine` granted (waking the waiter behind it) and answers with its token.
fn grant(key: &str, mine: &Kv, lease: i64, waited: bool) -> Result<Reply, String> {
    if mine.value != HELD.as_bytes() {
        store::put_with_lease(key, HELD, lease);
    }
    let token = mine.create_revision;
    if waited {
        Reply::json(&json!({ "key": key, "token": token }))
    } else {
        Reply::json(&json!({ "acquired": true, "key": key, "token": token }))
    }
}

/// The contender whose token (create revision) is `token`, if it holds a permit.
fn holder_with_token(name: &str, token: i64) -> Result<Option<Kv>, String> {
    if token <= 0 {
        return Ok(None);
    }
    let Some(kv) = contenders(name)
        .min_create_revision(token)
        .max_create_revision(token)
        .first()
    else {
        return Ok(None);
    };
    let limit = stored_limit(name)?.unwrap_or(0);
    Ok((ahead_of(name, token) < u64::from(limit)).then_some(kv))
}

fn fenced_put(put: FencedPut) -> Result<Reply, String> {
    if holder_with_token(&put.name, put.token)?.is_none() {
        return Err(format!(
            "semaphore {}: stale fencing token {} (no holder has it)",
            put.name, put.token
        ));
    }
    store::put(&put.key, &put.value);
    Reply::json(&json!({ "revision": context::revision() }))
}

fn holders(name: &str) -> Result<Reply, String> {
    let limit = stored_limit(name)?;
    let holders: Vec<_> = match limit {
        Some(limit) => contenders(name)
            .sort_by(SortBy::CreateRevision)
            .limit(limit)
            .kvs(),
        None => Vec::new(),
    };
    let waiting = contenders(name)
        .count()
        .saturating_sub(holders.len() as u64);
    let holders: Vec<_> = holders
        .iter()
        .map(|kv| {
            json!({
                "key": String::from_utf8_lossy(&kv.key),
                "lease": kv.lease,
                "token": kv.create_revision,
            })
        })
        .collect();
    Reply::json(&json!({ "permits": limit, "holders": holders, "waiting": waiting }))
}

baton_sdk::module!(Semaphore);

#[cfg(test)]
mod tests;
