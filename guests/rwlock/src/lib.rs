//! RWLock: many readers or one writer, in the layout of etcd's `recipe.RWMutex`
//! (`contrib/recipes/rwmutex.go`), so Go clients using it and callers of this module share
//! locks. Each contender holds one key attached to its lease:
//!
//! - `<name>/read/<id>` for a reader, `<name>/write/<id>` for a writer (etcd's clients use
//!   `time.Now().UnixNano()` as the id; this module the caller's lease in hex);
//! - a reader holds once no key under `<name>/write` has a lower mod revision than its own; a
//!   writer once no key under `<name>/` does. Arrival order is mod revision order, so a writer
//!   is never starved by readers that come after it.
//!
//! A waiter waits, as etcd's does, on the newest key that blocks it (found with one sorted,
//! filtered range, whatever the contender count), and on its own lease: a waiter whose lease
//! ended fails instead of being granted. A holder or waiter whose lease ends loses its key. An
//! `rlock` or `lock` whose client left (deadline, cancel, disconnect) is abandoned: its key
//! goes at once. One lease holds at most one read and one write key per name; taking both
//! deadlocks, as one etcd session taking both does.
//!
//! All take the caller's lease (`baton call --lease`):
//! `rlock {"name":"L"}` → `{"key":"L/read/694d7a..."}`; `lock {"name":"L"}` →
//! `{"key":"L/write/694d7a..."}` (both wait); `runlock {"name":"L"}` and `unlock {"name":"L"}`
//! → `{"released":true}`.

use baton_sdk::json::json;
use baton_sdk::store::{self, Range, SortBy};
use baton_sdk::{Module, Reply, context, from_json};

#[derive(serde::Deserialize)]
struct Named {
    name: String,
}

/// The two kinds of contender.
#[derive(Clone, Copy)]
enum Side {
    Read,
    Write,
}

impl Side {
    fn of(function: &str) -> Option<Self> {
        match function {
            "rlock" | "runlock" => Some(Side::Read),
            "lock" | "unlock" => Some(Side::Write),
            _ => None,
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Side::Read => "read",
            Side::Write => "write",
        }
    }

    /// The keys that block this side, as etcd's RWMutex ranges them.
    fn blockers(self, name: &str) -> String {
        match self {
            Side::Read => format!("{name}/write"),
            Side::Write => format!("{name}/"),
        }
    }
}

struct RwLock;

baton_sdk::functions! {
    "rlock" writes waits {
        summary: "Takes a read hold on the caller's lease, waiting for earlier writers.",
        input: "name",
        example: r#"{"name":"L"}"# => r#"{"key":"L/read/694d7a..."}"#,
    }
    "lock" writes waits {
        summary: "Takes the write hold on the caller's lease, waiting for every earlier holder.",
        input: "name",
        example: r#"{"name":"L"}"# => r#"{"key":"L/write/694d7a..."}"#,
    }
    "runlock" writes {
        summary: "Releases the caller's read hold.",
        input: "name",
        example: r#"{"name":"L"}"# => r#"{"released":true}"#,
    }
    "unlock" writes {
        summary: "Releases the caller's write hold.",
        input: "name",
        example: r#"{"name":"L"}"# => r#"{"released":true}"#,
    }
}

impl Module for RwLock {
    fn invoke(function: &str, input: &[u8]) -> Result<Reply, String> {
        let side = Side::of(function).ok_or_else(|| {
            format!("rwlock: unknown function {function:?} (try \"rlock\" or \"lock\")")
        })?;
        let name = from_json::<Named>(input)?.name;
        match function {
            "rlock" | "lock" => take(&name, side),
            _ => {
                let released = store::delete(my_key(&name, side)?);
                Reply::json(&json!({ "released": released }))
            }
        }
    }

    /// An `rlock` or `lock` whose client left withdraws its key, waiter or fresh holder alike.
    fn abandon(function: &str, input: &[u8]) -> Result<(), String> {
        let side = match (function, Side::of(function)) {
            ("rlock" | "lock", Some(side)) => side,
            _ => return Ok(()),
        };
        if context::caller_lease() == 0 {
            return Ok(());
        }
        let Ok(named) = from_json::<Named>(input) else {
            return Ok(());
        };
        store::delete(my_key(&named.name, side)?);
        Ok(())
    }
}

fn my_key(name: &str, side: Side) -> Result<String, String> {
    match context::caller_lease() {
        0 => Err("rwlock: call with a lease (it is what releases the lock if you die)".into()),
        lease => Ok(format!("{name}/{}/{lease:x}", side.dir())),
    }
}

fn take(name: &str, side: Side) -> Result<Reply, String> {
    let lease = context::caller_lease();
    let mine = my_key(name, side)?;
    // On a re-run the key is already there, unless its lease ended: then this put fails the
    // call ("lease not found") rather than queueing a waiter nobody keeps alive.
    let mine_kv = match store::get(&mine) {
        Some(kv) => kv,
        None => {
            store::put_with_lease(&mine, "", lease);
            store::get(&mine).ok_or("rwlock: own key vanished")?
        }
    };
    // etcd's `WithLastRev` and `WithMaxModRev(myRev - 1)`: the newest key ahead of us that
    // blocks us. Store revisions start at 1, so the bound is never 0 (none).
    let blocker = Range::prefix(side.blockers(name))
        .keys_only()
        .sort_by(SortBy::ModRevision)
        .descending()
        .max_mod_revision(mine_kv.mod_revision - 1)
        .first();
    match blocker {
        None => Reply::json(&json!({ "key": mine })),
        Some(kv) => Ok(Reply::wait_for().key(kv.key).lease(lease).into()),
    }
}

baton_sdk::module!(RwLock);

#[cfg(test)]
mod tests;
