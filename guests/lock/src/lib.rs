//! Lock: a fenced mutex in etcd's own layout — each contender holds `<name>/<lease hex>`
//! attached to its lease, and the key with the lowest create revision owns the lock — so it
//! interoperates with `etcdctl lock` and etcd's Lock service. `acquire` waits server-side for
//! its turn and returns a fencing token (the owner key's create revision, which only grows);
//! `fenced-put` writes a key only if the token is still the holder's, so a paused ex-holder's
//! late writes are refused by Baton itself. A holder or waiter whose lease ends loses its key,
//! and a waiter whose lease ended fails instead of being granted. An `acquire` whose client
//! left (deadline, cancel, disconnect) is abandoned: its key goes at once, without waiting for
//! its lease. The holder and the key ahead are found with sorted ranges of one key each, so the
//! lock is right at any contender count.
//!
//! All take the caller's lease (`baton call --lease`): `acquire {"name":"L"}` →
//! `{"key":"L/694d7a...","token":42}`; `release {"name":"L"}` → `{"released":true}`;
//! `fenced-put {"name":"L","token":42,"key":"k","value":"v"}` → `{"revision":43}`.

use baton_sdk::json::json;
use baton_sdk::store::{self, Range, SortBy};
use baton_sdk::{Module, Reply, context, from_json};

#[derive(serde::Deserialize)]
struct Named {
    name: String,
}

#[derive(serde::Deserialize)]
struct FencedPut {
    name: String,
    token: i64,
    key: String,
    value: String,
}

struct Lock;

impl Module for Lock {
    fn invoke(function: &str, input: &[u8]) -> Result<Reply, String> {
        match function {
            "acquire" => acquire(&from_json::<Named>(input)?.name),
            "release" => {
                let released = store::delete(my_key(&from_json::<Named>(input)?.name)?);
                Reply::json(&json!({ "released": released }))
            }
            "fenced-put" => fenced_put(from_json(input)?),
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
        let Ok(named) = from_json::<Named>(input) else {
            return Ok(());
        };
        store::delete(my_key(&named.name)?);
        Ok(())
    }
}

fn my_key(name: &str) -> Result<String, String> {
    match context::caller_lease() {
        0 => Err("lock: call with a lease (it is what releases the lock if you die)".into()),
        lease => Ok(format!("{name}/{lease:x}")),
    }
}

/// Every contender of `name`.
fn contenders(name: &str) -> Range {
    Range::prefix(format!("{name}/")).keys_only()
}

/// The contender holding `name`: the oldest, however many there are.
fn holder(name: &str) -> Option<store::Kv> {
    contenders(name).sort_by(SortBy::CreateRevision).first()
}

fn acquire(name: &str) -> Result<Reply, String> {
    let lease = context::caller_lease();
    let mine = my_key(name)?;
    // On a re-run the key is already there, unless its lease ended: then this put fails the
    // call ("lease not found") rather than queueing a waiter nobody keeps alive.
    let mine_kv = match store::get(&mine) {
        Some(kv) => kv,
        None => {
            store::put_with_lease(&mine, "", lease);
            store::get(&mine).ok_or("lock: own key vanished")?
        }
    };
    let holder = holder(name).ok_or("lock: own key vanished")?;
    if holder.key == mine.as_bytes() {
        return Reply::json(&json!({ "key": mine, "token": holder.create_revision }));
    }
    // Wait for the contender just ahead to go, or for our own lease to end. Every key created
    // before ours is at revision >= 2 (the store starts at 1), so the bound is never 0 (none).
    let ahead = contenders(name)
        .sort_by(SortBy::CreateRevision)
        .descending()
        .max_create_revision(mine_kv.create_revision - 1)
        .first()
        // The holder is older than us, so this finds at least the holder.
        .unwrap_or(holder);
    Ok(Reply::wait_for().key(&ahead.key).lease(lease).into())
}

fn fenced_put(put: FencedPut) -> Result<Reply, String> {
    let holder = holder(&put.name).map_or(0, |kv| kv.create_revision);
    if holder != put.token {
        return Err(format!(
            "lock {}: stale fencing token {} (the holder's is {holder})",
            put.name, put.token
        ));
    }
    store::put(&put.key, &put.value);
    Reply::json(&json!({ "revision": context::revision() }))
}

baton_sdk::module!(Lock);

#[cfg(test)]
mod tests;
