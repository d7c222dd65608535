//! Counter: atomically adds to several counters in one call, something etcd clients can only
//! do with a get + compare-and-swap retry loop. Values are decimal strings, so any etcd client
//! reads them. `add {"keys":["c1","c2"],"by":2}` on a fresh store returns `{"c1":2,"c2":2}`;
//! `get {"keys":["c1","c3"]}` then returns `{"c1":2,"c3":0}` and writes nothing (so it can be
//! called read-only, without a log entry); with `"at_least":N` it first waits until every
//! listed counter reaches N (a countdown latch).

use std::collections::BTreeMap;

use baton_sdk::{KeyRange, Module, Reply, from_json, store};

#[derive(serde::Deserialize)]
struct Add {
    keys: Vec<String>,
    by: i64,
}

#[derive(serde::Deserialize)]
struct Get {
    keys: Vec<String>,
    at_least: Option<i64>,
}

struct Counter;

baton_sdk::functions! {
    "add" writes {
        summary: "Adds `by` to every counter in `keys` in one revision; returns the new values.",
        input: "keys: counter keys; by: amount to add (negative subtracts)",
        example: r#"{"keys":["c1","c2"],"by":2}"# => r#"{"c1":2,"c2":2}"#,
    }
    "get" reads waits {
        summary: "Reads counters (0 when absent); with at_least, waits until every one reaches it.",
        input: "keys: counter keys; at_least (optional): the value to wait for",
        example: r#"{"keys":["c1","c3"]}"# => r#"{"c1":2,"c3":0}"#,
    }
}

impl Module for Counter {
    fn invoke(function: &str, input: &[u8]) -> Result<Reply, String> {
        let mut totals = BTreeMap::new();
        match function {
            "add" => {
                let add: Add = from_json(input)?;
                for key in add.keys {
                    let total = read(&key)?.checked_add(add.by).ok_or("counter: overflow")?;
                    store::put(&key, total.to_string());
                    totals.insert(key, total);
                }
            }
            "get" => {
                let get: Get = from_json(input)?;
                for key in get.keys {
                    totals.insert(key.clone(), read(&key)?);
                }
                if totals
                    .values()
                    .any(|v| get.at_least.is_some_and(|n| *v < n))
                {
                    return Ok(Reply::wait_on(totals.keys().map(KeyRange::key)));
                }
            }
            _ => {
                return Err(format!(
                    "counter: unknown function {function:?} (try \"add\" or \"get\")"
                ));
            }
        }
        Reply::json(&totals)
    }
}

/// A counter's value; 0 when it does not exist yet.
fn read(key: &str) -> Result<i64, String> {
    match store::get_value(key) {
        Some(v) => parse(&v).ok_or_else(|| format!("counter: {key} is not an integer")),
        None => Ok(0),
    }
}

fn parse(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

baton_sdk::module!(Counter);

#[cfg(test)]
mod tests;
