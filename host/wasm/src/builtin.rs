//! Modules that ship inside the binary (built from `guests/` by `build.rs`). A new cluster
//! deploys them through the log so every replica stores the same bytes.

/// (name, component bytes) of every built-in module.
pub const BUILTIN_MODULES: [(&str, &[u8]); 6] = [
    (
        "counter",
        include_bytes!(concat!(env!("OUT_DIR"), "/counter.wasm")),
    ),
    (
        "compare-and-move",
        include_bytes!(concat!(env!("OUT_DIR"), "/compare-and-move.wasm")),
    ),
    (
        "lock",
        include_bytes!(concat!(env!("OUT_DIR"), "/lock.wasm")),
    ),
    (
        "queue",
        include_bytes!(concat!(env!("OUT_DIR"), "/queue.wasm")),
    ),
    (
        "priority-queue",
        include_bytes!(concat!(env!("OUT_DIR"), "/priority-queue.wasm")),
    ),
    (
        "registry",
        include_bytes!(concat!(env!("OUT_DIR"), "/registry.wasm")),
    ),
];

/// A module that misbehaves on purpose (loops, traps, hoards memory, recurses), for tests of
/// containment. Never deployed unless a test does so.
pub const HOSTILE_MODULE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile.wasm"));
