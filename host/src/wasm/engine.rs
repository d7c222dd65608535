//! The wasmtime engine configuration: every setting that could make two replicas disagree is
//! set explicitly here rather than left to a default that may change between versions.

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::limits::{
    GUEST_MEMORY_BYTES_MAX, GUEST_POOL_INSTANCES, GUEST_STACK_BYTES, GUEST_TABLE_ELEMENTS_MAX,
};

/// Core instances one component may contain (the guest's module plus adapter shims).
const CORE_INSTANCES_PER_COMPONENT: u32 = 4;

pub fn deterministic_config() -> Config {
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
        // No `linear_memory_keep_resident`: zeroing even 1 MiB in place per call measured slower
        // (37 us per small call) than handing the pages back to the kernel (21 us).
        .table_elements(GUEST_TABLE_ELEMENTS_MAX);
    pool
}

pub fn deterministic_engine() -> wasmtime::Result<Engine> {
    Engine::new(&deterministic_config())
}
