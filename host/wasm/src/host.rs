//! The host side of one call: the store data a guest's imports reach, and the memory limiter.

use wasmtime::ResourceLimiter;

use crate::runtime::CallContext;
use crate::store::{GuestStore, StoreFailure, StoredKv};
use baton_limits::{
    GUEST_HOST_BYTE_FUEL, GUEST_HOST_CALL_FUEL, GUEST_HOST_KV_FUEL, GUEST_RANGE_KEYS_MAX,
    GUEST_TABLE_ELEMENTS_MAX,
};

wasmtime::component::bindgen!({
    path: "../../wit/v0.1",
    world: "module",
    // Every import may fail the call (a refused put, a storage failure).
    imports: { default: trappable },
});

pub(crate) use baton::module::{context, store};

/// Why a host function stopped the guest; read after the call to classify the outcome.
#[derive(Debug)]
pub(crate) enum HostStop {
    Refused(String),
    Fatal(String),
    /// Host calls used up the call's fuel.
    OutOfFuel,
}

/// Fuel charged for work done in host calls, which the engine's metering does not see: without
/// it a cheap loop of `range` calls could hold the apply path for as long as it likes. Charged
/// from the same budget as the guest's own instructions.
pub(crate) struct HostFuel {
    pub(crate) budget: u64,
    pub(crate) used: u64,
}

/// Everything one call's store holds.
pub(crate) struct CallState {
    pub(crate) store: Box<dyn GuestStore>,
    pub(crate) context: CallContext,
    pub(crate) limiter: MemoryCap,
    pub(crate) host_fuel: HostFuel,
    /// Set when a host function trapped the guest on purpose.
    pub(crate) stop: Option<HostStop>,
}

/// Caps linear memory per instance and records whether the cap was what stopped a guest.
pub(crate) struct MemoryCap {
    pub(crate) bytes_max: usize,
    pub(crate) hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = desired <= self.bytes_max;
        self.hit |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= GUEST_TABLE_ELEMENTS_MAX)
    }
}

/// The fuel for moving `kvs` key-values of `bytes` bytes in all; a host call costs this plus
/// `GUEST_HOST_CALL_FUEL` for the call itself.
fn moved(kvs: usize, bytes: usize) -> u64 {
    let kvs = u64::try_from(kvs).unwrap_or(u64::MAX);
    let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
    kvs.saturating_mul(GUEST_HOST_KV_FUEL)
        .saturating_add(bytes.saturating_mul(GUEST_HOST_BYTE_FUEL))
}

/// A call's own cost plus what it moves on the way in.
fn call(kvs: usize, bytes: usize) -> u64 {
    GUEST_HOST_CALL_FUEL.saturating_add(moved(kvs, bytes))
}

fn kv_bytes(kv: &StoredKv) -> usize {
    kv.key.len() + kv.value.len()
}

impl CallState {
    /// Charges host work to the call's fuel; traps the guest once the budget is spent.
    fn charge(&mut self, fuel: u64) -> wasmtime::Result<()> {
        self.host_fuel.used = self.host_fuel.used.saturating_add(fuel);
        if self.host_fuel.used > self.host_fuel.budget {
            self.stop = Some(HostStop::OutOfFuel);
            return Err(wasmtime::format_err!("host calls used up the call's fuel"));
        }
        Ok(())
    }

    /// Turns a store failure into a trap, remembering why.
    fn stop<T>(&mut self, result: Result<T, StoreFailure>) -> wasmtime::Result<T> {
        result.map_err(|failure| {
            let message = failure.to_string();
            self.stop = Some(match failure {
                StoreFailure::Refused(m) => HostStop::Refused(m),
                StoreFailure::Fatal(m) => HostStop::Fatal(m),
            });
            wasmtime::format_err!("host stopped the guest: {message}")
        })
    }
}

fn to_wit(kv: StoredKv) -> store::Kv {
    store::Kv {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

impl store::Host for CallState {
    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<store::Kv>> {
        self.charge(call(1, key.len()))?;
        let found = self.store.get(&key);
        let found = self.stop(found)?;
        self.charge(moved(0, found.as_ref().map_or(0, |kv| kv.value.len())))?;
        Ok(found.map(to_wit))
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>, lease: Option<i64>) -> wasmtime::Result<()> {
        self.charge(call(1, key.len() + value.len()))?;
        let done = self.store.put(&key, &value, lease.unwrap_or(0));
        self.stop(done)
    }

    fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<bool> {
        self.charge(call(1, key.len()))?;
        let deleted = self.store.delete_range(&key, &[]);
        Ok(self.stop(deleted)? > 0)
    }

    fn delete_range(&mut self, start: Vec<u8>, end: Vec<u8>) -> wasmtime::Result<u64> {
        self.charge(call(0, start.len() + end.len()))?;
        let deleted = self.store.delete_range(&start, &end);
        let deleted = self.stop(deleted)?;
        let kvs = usize::try_from(deleted).unwrap_or(usize::MAX);
        self.charge(moved(kvs, 0))?;
        Ok(deleted)
    }

    fn range(
        &mut self,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: u32,
        reverse: bool,
    ) -> wasmtime::Result<Vec<store::Kv>> {
        let limit = match usize::try_from(limit) {
            Ok(0) | Err(_) => GUEST_RANGE_KEYS_MAX,
            Ok(n) => n.min(GUEST_RANGE_KEYS_MAX),
        };
        self.charge(call(0, start.len() + end.len()))?;
        let found = self.store.range(&start, &end, limit, reverse);
        let found = self.stop(found)?;
        let bytes = found.iter().map(kv_bytes).sum();
        self.charge(moved(found.len(), bytes))?;
        Ok(found.into_iter().map(to_wit).collect())
    }
}

impl context::Host for CallState {
    fn log_index(&mut self) -> wasmtime::Result<u64> {
        Ok(self.context.log_index)
    }

    fn revision(&mut self) -> wasmtime::Result<i64> {
        Ok(self.context.revision)
    }

    fn proposal_time_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(self.context.proposal_time_ms)
    }

    fn caller_lease(&mut self) -> wasmtime::Result<i64> {
        Ok(self.context.caller_lease)
    }

    fn module_name(&mut self) -> wasmtime::Result<String> {
        Ok(self.context.module_name.clone())
    }

    fn module_hash(&mut self) -> wasmtime::Result<String> {
        Ok(crate::hash_hex(&self.context.module_hash))
    }
}
