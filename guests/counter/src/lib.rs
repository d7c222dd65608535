//! Counter: atomically adds to several counters in one call, something etcd clients can only
//! do with a get + compare-and-swap retry loop. Values are decimal strings, so any etcd client
//! reads them. `add {"keys":["c1","c2"],"by":2}` on a fresh store returns `{"c1":2,"c2":2}`.

use std::collections::BTreeMap;

use baton_sdk::{Module, Reply, from_json, store};

#[derive(serde::Deserialize)]
struct Add {
    keys: Vec<String>,
    by: i64,
}

struct Counter;

impl Module for Counter {
    fn invoke(function: &str, input: &[u8]) -> Result<Reply, String> {
        if function != "add" {
            return Err(format!(
                "counter: unknown function {function:?} (try \"add\")"
            ));
        }
        let add: Add = from_json(input)?;
        let mut totals = BTreeMap::new();
        for key in add.keys {
            let current: i64 = match store::get_value(&key) {
                Some(v) => parse(&v).ok_or_else(|| format!("counter: {key} is not an integer"))?,
                None => 0,
            };
            let total = current.checked_add(add.by).ok_or("counter: overflow")?;
            store::put(&key, total.to_string());
            totals.insert(key, total);
        }
        Reply::json(&totals)
    }
}

fn parse(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

baton_sdk::module!(Counter);
