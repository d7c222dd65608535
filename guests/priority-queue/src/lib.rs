//! Priority queue in the layout of etcd's `contrib/recipes` `PriorityQueue`
//! (`client/v3/experimental/recipes/priority_queue.go`), so Go's `recipe.NewPriorityQueue` and
//! this module serve the same queue: items are `<queue>/<priority, 5 digits>/<seq, 16 digits>`,
//! the lowest priority number is served first and, within a priority, in sequence order (FIFO).
//! Each enqueue also puts the bookkeeping key `__<queue>/<priority, 5 digits>` (empty), exactly
//! as etcd's `newSequentialKV` does: a Go client that read the last sequence number before our
//! enqueue then fails its compare on that key and retries, so the two never write the same key.
//!
//! Guarantees: each item is dequeued by exactly one caller (the module's dequeue is one
//! transaction; etcd's deletes with a mod-revision compare); `dequeue` on an empty queue waits
//! server-side for an enqueue from either side. A waiting `dequeue` writes nothing, so
//! abandoning it (client deadline, cancel, disconnect) takes no item.
//!
//! - `enqueue {"queue":"jobs","value":"a","priority":3}` →
//!   `{"key":"jobs/00003/0000000000000000","value":"a","priority":3}` (priority 0..=65535, as
//!   Go's `uint16`);
//! - `dequeue {"queue":"jobs"}` → the same shape for the item it removed.

use baton_sdk::json::json;
use baton_sdk::store::{self, Range};
use baton_sdk::{Module, Reply, from_json};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Enqueue {
    queue: String,
    value: String,
    priority: u16,
}

#[derive(serde::Deserialize)]
struct Dequeue {
    queue: String,
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn checked(queue: &str) -> Result<(), String> {
    match queue.is_empty() {
        true => Err("priority-queue: name the queue (\"queue\":\"jobs\")".into()),
        false => Ok(()),
    }
}

/// The number after the last `/` of `key`, as Go's `fmt.Sscanf("%d")` reads it there.
fn last_number(key: &[u8]) -> Result<u64, String> {
    let key = text(key);
    let field = key.rsplit('/').next().unwrap_or_default();
    let digits: String = field.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .map_err(|_| format!("priority-queue: {key:?} does not end in a sequence number"))
}

fn enqueue(e: Enqueue) -> Result<Reply, String> {
    checked(&e.queue)?;
    // etcd's newSequentialKV(prefix = "<queue>/<pr>"): one past the last key under the prefix.
    let prefix = format!("{}/{:05}", e.queue, e.priority);
    let next = match Range::prefix(&prefix).keys_only().descending().first() {
        Some(last) => last_number(&last.key)?.saturating_add(1),
        None => 0,
    };
    let key = format!("{prefix}/{next:016}");
    store::put(format!("__{prefix}"), "");
    store::put(&key, &e.value);
    Reply::json(&json!({ "key": key, "value": e.value, "priority": e.priority }))
}

fn dequeue(d: Dequeue) -> Result<Reply, String> {
    checked(&d.queue)?;
    let prefix = format!("{}/", d.queue);
    let Some(first) = Range::prefix(&prefix).first() else {
        return Ok(Reply::wait_for().prefix(&prefix).into());
    };
    store::delete(&first.key);
    let key = text(&first.key);
    // "<queue>/<pr>/<seq>": the priority is the second field from the end.
    let priority = key.rsplit('/').nth(1).and_then(|p| p.parse::<u16>().ok());
    Reply::json(&json!({ "key": key, "value": text(&first.value), "priority": priority }))
}

struct PriorityQueue;

baton_sdk::functions! {
    "enqueue" writes {
        summary: "Adds an item; lower priority numbers are served first, FIFO within one.",
        input: "queue, value; priority: 0..=65535",
        example: r#"{"queue":"jobs","value":"a","priority":3}"# => r#"{"key":"jobs/00003/0000000000000000","value":"a","priority":3}"#,
    }
    "dequeue" writes waits {
        summary: "Removes and answers the first item, waiting for one when the queue is empty.",
        input: "queue",
        example: r#"{"queue":"jobs"}"# => r#"{"key":"jobs/00003/0000000000000000","value":"a","priority":3}"#,
    }
}

impl Module for PriorityQueue {
    fn invoke(function: &str, input: &[u8]) -> Result<Reply, String> {
        match function {
            "enqueue" => enqueue(from_json(input)?),
            "dequeue" => dequeue(from_json(input)?),
            other => Err(format!(
                "priority-queue: unknown function {other:?} (try enqueue or dequeue)"
            )),
        }
    }
}

baton_sdk::module!(PriorityQueue);

#[cfg(test)]
mod tests;
