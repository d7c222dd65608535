//! Lock: a fenced mutex in etcd's own layout — each contender holds `<name>/<lease hex>`
//! attached to its lease, and the key with the lowest create revision owns the lock — so it
//! interoperates with `etcdctl lock` and etcd's Lock service. `acquire` waits server-side for
//! its turn and returns a fencing token (the owner key's create revision, which only grows);
//! `fenced-put` writes a key only if the token is still the holder's, so a paused ex-holder's
//! late writes are refused by Baton itself. A holder or waiter whose lease ends loses its key,
//! and a waiter whose lease ended fails instead of being granted.
//!
//! All take the caller's lease (`baton call --lease`): `acquire {"name":"L"}` →
//! `{"key":"L/694d7a...","token":42}`; `release {"name":"L"}` → `{"released":true}`;
//! `fenced-put {"name":"L","token":42,"key":"k","value":"v"}` → `{"revision":43}`.

use baton_sdk::json::json;
use baton_sdk::{KeyRange, Module, Reply, context, from_json, store};

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
}

fn my_key(name: &str) -> Result<String, String> {
    match context::caller_lease() {
        0 => Err("lock: call with a lease (it is what releases the lock if you die)".into()),
        lease => Ok(format!("{name}/{lease:x}")),
    }
}

/// Every contender of `name`, oldest first.
fn contenders(name: &str) -> Vec<store::Kv> {
    let mut all = store::prefix(format!("{name}/"), 0, false);
    all.sort_by_key(|kv| kv.create_revision);
    all
}

fn acquire(name: &str) -> Result<Reply, String> {
    let mine = my_key(name)?;
    // On a re-run the key is already there, unless its lease ended: then this put fails the
    // call ("lease not found") rather than queueing a waiter nobody keeps alive.
    if store::get(&mine).is_none() {
        store::put_with_lease(&mine, "", context::caller_lease());
    }
    let all = contenders(name);
    let me = all.iter().position(|kv| kv.key == mine.as_bytes());
    let me = me.ok_or("lock: own key vanished")?;
    if me == 0 {
        return Reply::json(&json!({ "key": mine, "token": all[0].create_revision }));
    }
    // Wait for the contender just ahead to go, or for our own lease to end.
    let ahead = KeyRange::key(&all[me - 1].key);
    Ok(Reply::Wait {
        keys: vec![ahead],
        leases: vec![context::caller_lease()],
        until_ms: None,
    })
}

fn fenced_put(put: FencedPut) -> Result<Reply, String> {
    let holder = contenders(&put.name)
        .first()
        .map_or(0, |kv| kv.create_revision);
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
