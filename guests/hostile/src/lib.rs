//! Hostile: misbehaves on purpose so tests can show Baton contains it. Each function but
//! `spin-reading` writes a key first, so a test can check that a failed call leaves no partial
//! writes; `spin-reading` only reads, so it can hog an instance as a read-only call.
//! `flood` writes large values, to show the write bounds. Not deployed as a built-in.

use baton_sdk::{Module, Reply, store};

struct Hostile;

impl Module for Hostile {
    fn invoke(function: &str, input: &[u8]) -> Result<Reply, String> {
        if function == "spin-reading" {
            spin();
        }
        store::put("hostile/touched", input);
        match function {
            "spin" => spin(),
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
            // Input: 8 bytes of count then 8 of size, little-endian: puts `count` values of
            // `size` bytes under distinct keys.
            "flood" => {
                let number = |at: usize| {
                    input
                        .get(at..at + 8)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_le_bytes)
                        .ok_or("hostile: flood takes count and size, 8 bytes each")
                };
                let (count, size) = (number(0)?, number(8)?);
                let value = vec![7u8; usize::try_from(size).map_err(|e| e.to_string())?];
                for i in 0..count {
                    store::put(format!("hostile/flood/{i}").as_bytes(), &value);
                }
                Ok(Reply::done(b"flooded"))
            }
            other => Err(format!("hostile: unknown function {other:?}")),
        }
    }
}

/// Loops until the fuel runs out, reading a key each time (so the optimizer cannot prove the
/// loop empty).
fn spin() -> ! {
    loop {
        let _ = store::get_value(b"hostile/never").map(|v| v.len());
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
