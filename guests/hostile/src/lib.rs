//! Hostile: misbehaves on purpose so tests can show Baton contains it. Each function writes a
//! key first, so a test can check that a failed call leaves no partial writes.
//! Not deployed as a built-in.

use baton_sdk::{Module, Reply, store};

struct Hostile;

impl Module for Hostile {
    fn invoke(function: &str, input: &[u8]) -> Result<Reply, String> {
        store::put("hostile/touched", input);
        match function {
            "spin" => loop {
                // Volatile so the optimizer cannot prove the loop empty.
                let _ = store::get_value(b"hostile/never").map(|v| v.len());
            },
            "trap" => std::process::abort(),
            "hoard" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => Ok(Reply::done(depth(u64::MAX).to_le_bytes())),
            "fail" => Err("hostile: refused on purpose".to_string()),
            "ok" => Ok(Reply::done(b"ok")),
            other => Err(format!("hostile: unknown function {other:?}")),
        }
    }
}

/// Recursion the compiler cannot turn into a loop: the result is used after the call.
fn depth(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        std::hint::black_box(depth(n - 1)) + 1
    }
}

baton_sdk::module!(Hostile);
