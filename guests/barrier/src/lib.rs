//! Barrier: one key that blocks waiters while it exists, in the layout of etcd's
//! `recipe.Barrier` (`contrib/recipes/barrier.go`): the barrier `<name>` is the key `<name>`
//! itself, so Go clients using it and callers of this module share barriers, and
//! `etcdctl del <name>` releases one too.
//!
//! `hold` creates the key (if it is absent: a second hold changes nothing, where etcd's answers
//! `ErrKeyExists`), attached to the caller's lease when the call has one, so a holder that dies
//! releases the barrier (etcd's takes no lease). `release` deletes it. `wait` returns once the
//! key is gone, at once if it already is; it writes nothing, so it may be called read-only
//! (`InvokeRequest.read_only`), which re-runs on the serving member without log entries.
//!
//! `hold {"name":"B"}` → `{"created":true}`; `release {"name":"B"}` → `{"released":true}`;
//! `wait {"name":"B"}` → `{"open":true}`.

use baton_sdk::json::json;
use baton_sdk::{Module, Reply, context, from_json, store};

#[derive(serde::Deserialize)]
struct Named {
    name: String,
}

struct Barrier;

baton_sdk::functions! {
    "hold" writes {
        summary: "Closes the barrier (creates its key, on the caller's lease if any).",
        input: "name",
        example: r#"{"name":"B"}"# => r#"{"created":true}"#,
    }
    "release" writes {
        summary: "Opens the barrier (deletes its key).",
        input: "name",
        example: r#"{"name":"B"}"# => r#"{"released":true}"#,
    }
    "wait" reads waits {
        summary: "Waits until the barrier is open.",
        input: "name",
        example: r#"{"name":"B"}"# => r#"{"open":true}"#,
    }
}

impl Module for Barrier {
    fn invoke(function: &str, input: &[u8]) -> Result<Reply, String> {
        let name = from_json::<Named>(input)?.name;
        match function {
            "hold" => {
                let created = store::get(&name).is_none();
                if created {
                    match context::caller_lease() {
                        0 => store::put(&name, ""),
                        lease => store::put_with_lease(&name, "", lease),
                    }
                }
                Reply::json(&json!({ "created": created }))
            }
            "release" => Reply::json(&json!({ "released": store::delete(&name) })),
            "wait" => match store::get(&name) {
                None => Reply::json(&json!({ "open": true })),
                Some(_) => Ok(Reply::wait_for().key(&name).into()),
            },
            other => Err(format!(
                "barrier: unknown function {other:?} (try \"hold\", \"release\" or \"wait\")"
            )),
        }
    }
    // Nothing to abandon: only `wait` waits, and it writes nothing.
}

baton_sdk::module!(Barrier);

#[cfg(test)]
mod tests;
