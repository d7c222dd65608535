//! The wasmtime engine configuration: every setting that could make two replicas disagree is
//! set explicitly here rather than left to a default that may change between versions.

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use baton_limits::{
    GUEST_MEMORY_BYTES_MAX, GUEST_POOL_INSTANCES, GUEST_STACK_BYTES, GUEST_TABLE_ELEMENTS_MAX,
};

/// Core instances one component may contain (the guest's module plus adapter shims).
const CORE_INSTANCES_PER_COMPONENT: u32 = 4;
/// A table element is one pointer; reset in place like memory when pages can be scanned.
const GUEST_TABLE_KEEP_RESIDENT_BYTES: usize = GUEST_TABLE_ELEMENTS_MAX * 8;

fn deterministic_config() -> Config {
    let mut config = Config::new();
    // Fuel, not time, stops a guest: it runs out at the same operator on every replica.
    config.consume_fuel(true);
    config.epoch_interruption(false);
    // Float NaN bit patterns would otherwise depend on the host CPU.
    config.cranelift_nan_canonicalization(true);
    // SIMD is off, and relaxed SIMD (whose results vary by CPU) with it; were it ever enabled,
    // its deterministic lowering applies.
    config.wasm_simd(false);
    config.wasm_relaxed_simd(false);
    config.relaxed_simd_deterministic(true);
    // Threads are compiled out (no `threads` feature); no async or concurrent component calls.
    config.concurrency_support(false);
    config.wasm_component_model(true);
    config.max_wasm_stack(GUEST_STACK_BYTES);
    // Explicit bounds checks instead of guard pages and signal handlers: a pool slot whose memory
    // a call grew can then be reused as it is, where guard pages cost two `mprotect`s per call,
    // each flushing the TLB of every core running this process. The traps are the same.
    config.signals_based_traps(false);
    config.memory_guard_size(0);
    config.memory_reservation(GUEST_MEMORY_BYTES_MAX as u64);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling()));
    config
}

fn pooling() -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(GUEST_POOL_INSTANCES)
        .total_core_instances(GUEST_POOL_INSTANCES * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(GUEST_POOL_INSTANCES * CORE_INSTANCES_PER_COMPONENT)
        .total_tables(GUEST_POOL_INSTANCES * CORE_INSTANCES_PER_COMPONENT)
        .max_memory_size(GUEST_MEMORY_BYTES_MAX)
        .table_elements(GUEST_TABLE_ELEMENTS_MAX);
    // Where the kernel can list the pages a call wrote (PAGEMAP_SCAN, Linux 6.7+), reset only
    // those in place: no `madvise`, so no TLB flush across cores and no page faults in the next
    // call. With the settings above, a small call costs 6.6 us instead of 22 (`cargo bench
    // --bench wasm_invoke`). Without the scan, keeping memory resident would mean zeroing all
    // of it, which measured slower than handing the pages back.
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(GUEST_MEMORY_BYTES_MAX)
            .table_keep_resident(GUEST_TABLE_KEEP_RESIDENT_BYTES);
    }
    pool
}

pub(crate) fn deterministic_engine() -> wasmtime::Result<Engine> {
    Engine::new(&deterministic_config())
}
