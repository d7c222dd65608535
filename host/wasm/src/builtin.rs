//! Modules that ship inside the binary (built from `guests/` by `build.rs`). A new cluster
//! deploys them through the log so every replica stores the same bytes.

/// (name, component bytes) of every built-in module. When any of these bytes change (a guest,
/// the SDK, the toolchain), raise `BUILTIN_SET` in `host/server/src/modules/builtin.rs`: it is
/// how clusters founded by an older release learn that these are newer.
pub const BUILTIN_MODULES: [(&str, &[u8]); 11] = [
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
        "election",
        include_bytes!(concat!(env!("OUT_DIR"), "/election.wasm")),
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
    // Semaphore, rwlock and barriers (issue 21).
    (
        "semaphore",
        include_bytes!(concat!(env!("OUT_DIR"), "/semaphore.wasm")),
    ),
    (
        "rwlock",
        include_bytes!(concat!(env!("OUT_DIR"), "/rwlock.wasm")),
    ),
    (
        "barrier",
        include_bytes!(concat!(env!("OUT_DIR"), "/barrier.wasm")),
    ),
    (
        "double-barrier",
        include_bytes!(concat!(env!("OUT_DIR"), "/double-barrier.wasm")),
    ),
];

/// A module that misbehaves on purpose (loops, traps, hoards memory, recurses), for tests of
/// containment. Never deployed unless a test does so.
pub const HOSTILE_MODULE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hostile.wasm"));
