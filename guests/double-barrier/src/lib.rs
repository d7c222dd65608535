//! Double barrier: `enter` waits until `count` callers have entered, `leave` waits until all
//! have left, in the layout of etcd's `recipe.DoubleBarrier` (`contrib/recipes/
//! double_barrier.go`), so Go clients using it and callers of this module share barriers:
//!
//! - `<name>/waiters/<id>`: one per entered caller, attached to its lease (etcd's clients use
//!   `time.Now().UnixNano()` as the id; this module the caller's lease in hex);
//! - `<name>/ready`: put (without a lease) by the `count`-th to enter, which wakes the others;
//!   deleted by the last to leave.
//!
//! `enter` refuses (`too many clients`, etcd's error) a caller who finds `count` already
//! entered. Each caller checks against its own `count`, as in etcd: callers must agree on it.
//! An entered caller is released by a `ready` put at or after its own entry, so a `ready` left
//! behind by an earlier round releases nobody. `leave` follows etcd's algorithm: the entered
//! key with the lowest mod revision waits for the highest to go, every other deletes its key
//! and waits for the lowest to go; the lowest, alone at last, deletes `ready` and itself. A
//! caller whose lease ends leaves with its key, so a dead caller never blocks a `leave`; an
//! `enter` waiter whose lease ended fails. A call whose client left is abandoned: an `enter`
//! withdraws its key; a `leave` deletes it too (and `ready` if nobody is left).
//!
//! Both take the caller's lease (`baton call --lease`): `enter {"name":"B","count":3}` →
//! `{"key":"B/waiters/694d7a..."}`; `leave {"name":"B"}` → `{"left":true}`.

use baton_sdk::json::json;
use baton_sdk::store::{self, Range, SortBy};
use baton_sdk::{Module, Reply, context, from_json};

/// etcd's `ErrTooManyClients`, word for word.
const TOO_MANY_CLIENTS: &str = "too many clients";

#[derive(serde::Deserialize)]
struct Named {
    name: String,
}

#[derive(serde::Deserialize)]
struct Enter {
    name: String,
    count: u64,
}

struct DoubleBarrier;

baton_sdk::functions! {
    "enter" writes waits {
        summary: "Enters on the caller's lease and waits until `count` callers have entered.",
        input: "name, count: the number every caller must agree on",
        example: r#"{"name":"B","count":3}"# => r#"{"key":"B/waiters/694d7a..."}"#,
    }
    "leave" writes waits {
        summary: "Leaves and waits until every entered caller has left.",
        input: "name",
        example: r#"{"name":"B"}"# => r#"{"left":true}"#,
    }
}

impl Module for DoubleBarrier {
    fn invoke(function: &str, input: &[u8]) -> Result<Reply, String> {
        match function {
            "enter" => enter(&from_json(input)?),
            "leave" => leave(&from_json::<Named>(input)?.name),
            other => Err(format!(
                "double-barrier: unknown function {other:?} (try \"enter\" or \"leave\")"
            )),
        }
    }

    /// The caller is gone either way: its key goes, so nobody waits for it to leave.
    fn abandon(function: &str, input: &[u8]) -> Result<(), String> {
        if !matches!(function, "enter" | "leave") || context::caller_lease() == 0 {
            return Ok(());
        }
        let Ok(named) = from_json::<Named>(input) else {
            return Ok(());
        };
        store::delete(my_key(&named.name)?);
        if function == "leave" && waiters(&named.name).count() == 0 {
            store::delete(ready_key(&named.name));
        }
        Ok(())
    }
}

fn waiters_prefix(name: &str) -> String {
    format!("{name}/waiters/")
}

fn ready_key(name: &str) -> String {
    format!("{name}/ready")
}

fn waiters(name: &str) -> Range {
    Range::prefix(waiters_prefix(name)).keys_only()
}

fn my_key(name: &str) -> Result<String, String> {
    match context::caller_lease() {
        0 => Err("double-barrier: call with a lease (it is what removes you if you die)".into()),
        lease => Ok(format!("{}{lease:x}", waiters_prefix(name))),
    }
}

fn enter(call: &Enter) -> Result<Reply, String> {
    if call.count == 0 {
        return Err("double-barrier: count must be at least 1".into());
    }
    let lease = context::caller_lease();
    let mine = my_key(&call.name)?;
    let ready = ready_key(&call.name);
    let entered_at = match store::get(&mine) {
        Some(kv) => kv.create_revision,
        None => {
            if waiters(&call.name).count() >= call.count {
                return Err(TOO_MANY_CLIENTS.into());
            }
            // Fails the call ("lease not found") if the lease ended, e.g. on a re-run.
            store::put_with_lease(&mine, "", lease);
            if waiters(&call.name).count() == call.count {
                store::put(&ready, "");
                return Reply::json(&json!({ "key": mine }));
            }
            context::revision()
        }
    };
    match store::get(&ready) {
        Some(kv) if kv.mod_revision >= entered_at => Reply::json(&json!({ "key": mine })),
        _ => Ok(Reply::wait_for().key(&ready).lease(lease).into()),
    }
}

fn leave(name: &str) -> Result<Reply, String> {
    let mine = my_key(name)?;
    let by_mod = || waiters(name).sort_by(SortBy::ModRevision);
    let Some(lowest) = by_mod().first() else {
        return Reply::json(&json!({ "left": true }));
    };
    let is_lowest = lowest.key == mine.as_bytes();
    if is_lowest {
        match by_mod().descending().first() {
            // Alone: the last to leave finishes the round.
            Some(highest) if highest.key == lowest.key => {
                store::delete(ready_key(name));
                store::delete(&mine);
                Reply::json(&json!({ "left": true }))
            }
            Some(highest) => Ok(Reply::wait_for().key(highest.key).into()),
            None => Err("double-barrier: own key vanished".into()),
        }
    } else {
        store::delete(&mine);
        Ok(Reply::wait_for().key(lowest.key).into())
    }
}

baton_sdk::module!(DoubleBarrier);

#[cfg(test)]
mod tests;
