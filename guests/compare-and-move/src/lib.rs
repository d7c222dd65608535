//! Compare-and-move: moves a value from one key to another in one revision, only if the source
//! still holds the expected value and the destination is free — a work-queue hand-off
//! (`queue/job1` -> `running/job1`) without a read-modify-write race.
//! `move {"from":"a","to":"b","expect":"v"}` returns `{"moved":true}` or `{"moved":false,"reason":..}`.

use baton_sdk::{Module, Reply, from_json, json::json, store};

#[derive(serde::Deserialize)]
struct Move {
    from: String,
    to: String,
    /// The value `from` must hold; any value when absent.
    expect: Option<String>,
}

struct CompareAndMove;

baton_sdk::functions! {
    "move" writes {
        summary: "Moves a value from `from` to `to` in one revision, if `from` holds `expect` and `to` is free.",
        input: "from, to: keys; expect (optional): the value `from` must hold",
        example: r#"{"from":"queue/job1","to":"running/job1","expect":"v"}"# => r#"{"moved":true}"#,
    }
}

impl Module for CompareAndMove {
    fn invoke(function: &str, input: &[u8]) -> Result<Reply, String> {
        if function != "move" {
            return Err(format!(
                "compare-and-move: unknown function {function:?} (try \"move\")"
            ));
        }
        let m: Move = from_json(input)?;
        let Some(value) = store::get_value(&m.from) else {
            return Reply::json(&json!({"moved": false, "reason": "source is absent"}));
        };
        if m.expect
            .is_some_and(|want| want.as_bytes() != value.as_slice())
        {
            return Reply::json(&json!({"moved": false, "reason": "source value differs"}));
        }
        if store::get(&m.to).is_some() {
            return Reply::json(&json!({"moved": false, "reason": "destination exists"}));
        }
        store::delete(&m.from);
        store::put(&m.to, &value);
        Reply::json(&json!({"moved": true}))
    }
}

baton_sdk::module!(CompareAndMove);

#[cfg(test)]
mod tests;
