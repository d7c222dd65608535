//! Queue: a FIFO of items under `<queue>/`, in key order. `push` appends one item; `pop` takes
//! the first and, when the queue is empty, waits server-side until something arrives, so a
//! consumer makes one call instead of polling. Items are plain keys: `etcdctl put jobs/x y`
//! enqueues too, and `etcdctl get --prefix jobs/` lists them.
//!
//! `push {"queue":"jobs","value":"a"}` → `{"key":"jobs/00000000000000000042","value":"a"}`;
//! `pop {"queue":"jobs"}` → the same shape, for the item it removed.

use baton_sdk::{KeyRange, Module, Reply, context, from_json, store};

#[derive(serde::Deserialize)]
struct Push {
    queue: String,
    value: String,
}

#[derive(serde::Deserialize)]
struct Pop {
    queue: String,
}

#[derive(serde::Serialize)]
struct Item {
    key: String,
    value: String,
}

struct Queue;

impl Module for Queue {
    fn invoke(function: &str, input: &[u8]) -> Result<Reply, String> {
        match function {
            "push" => {
                let push: Push = from_json(input)?;
                // The call's revision orders items across calls; zero-padded so key order is
                // revision order.
                let key = format!("{}/{:020}", push.queue, context::revision());
                if store::get(&key).is_some() {
                    return Err("queue: one push per call".to_string());
                }
                store::put(&key, &push.value);
                Reply::json(&Item {
                    key,
                    value: push.value,
                })
            }
            "pop" => {
                let pop: Pop = from_json(input)?;
                let prefix = format!("{}/", pop.queue);
                let Some(first) = store::prefix(&prefix, 1, false).into_iter().next() else {
                    return Ok(Reply::wait_on([KeyRange::prefix(&prefix)]));
                };
                store::delete(&first.key);
                let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
                Reply::json(&Item {
                    key: text(first.key),
                    value: text(first.value),
                })
            }
            other => Err(format!(
                "queue: unknown function {other:?} (try \"push\" or \"pop\")"
            )),
        }
    }
}

baton_sdk::module!(Queue);

#[cfg(test)]
mod tests;
