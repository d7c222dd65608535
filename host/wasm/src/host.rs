//! The host side of one call: the store data a guest's imports reach, and the memory limiter.
//! Both contract versions are linked: a 0.1 guest imports `store@0.1.0`/`context@0.1.0`, a 0.2
//! guest their 0.2 versions, and one [`CallState`] serves either.

use wasmtime::ResourceLimiter;

use crate::runtime::CallContext;
use crate::store::{GuestStore, LeaseFacts, RangeQuery, SortBy, StoreFailure, StoredKv};
use baton_limits::{
    GUEST_HOST_BYTE_FUEL, GUEST_HOST_CALL_FUEL, GUEST_HOST_KV_FUEL, GUEST_HOST_SCAN_FUEL,
    GUEST_PUT_BYTES_MAX, GUEST_RANGE_KEYS_MAX, GUEST_RUN_WRITE_BYTES_MAX, GUEST_TABLE_ELEMENTS_MAX,
};

/// Contract 0.1 (`wit/v0.1`): its guests keep running unchanged.
pub(crate) mod v01 {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.1",
        world: "module",
        // Every import may fail the call (a refused put, a storage failure).
        imports: { default: trappable },
    });
}

/// Contract 0.2 (`wit/baton.wit`).
pub(crate) mod v02 {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "module",
        imports: { default: trappable },
    });
}

/// Why a host function stopped the guest; read after the call to classify the outcome.
#[derive(Debug)]
pub(crate) enum HostStop {
    Refused(String),
    /// The run tried to write past a size bound.
    WriteLimit(String),
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
    /// Key and value bytes this run has put.
    pub(crate) written_bytes: usize,
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
                StoreFailure::OutOfFuel => HostStop::OutOfFuel,
                StoreFailure::Fatal(m) => HostStop::Fatal(m),
            });
            wasmtime::format_err!("host stopped the guest: {message}")
        })
    }
}

/// The work behind each import, shared by both contract versions.
impl CallState {
    fn get_kv(&mut self, key: &[u8]) -> wasmtime::Result<Option<StoredKv>> {
        self.charge(call(1, key.len()))?;
        let found = self.store.get(key);
        let found = self.stop(found)?;
        self.charge(moved(0, found.as_ref().map_or(0, |kv| kv.value.len())))?;
        Ok(found)
    }

    fn put_kv(&mut self, key: &[u8], value: &[u8], lease: Option<i64>) -> wasmtime::Result<()> {
        let bytes = key.len().saturating_add(value.len());
        self.charge(call(1, bytes))?;
        self.written_bytes = self.written_bytes.saturating_add(bytes);
        let too_large = if bytes > GUEST_PUT_BYTES_MAX {
            Some(format!(
                "module put of {bytes} bytes (key and value) exceeds the limit of \
                 {GUEST_PUT_BYTES_MAX}, the largest etcd request"
            ))
        } else if self.written_bytes > GUEST_RUN_WRITE_BYTES_MAX {
            Some(format!(
                "module call wrote more than {GUEST_RUN_WRITE_BYTES_MAX} bytes of keys and \
                 values in one run; spread the writes over several calls"
            ))
        } else {
            None
        };
        if let Some(message) = too_large {
            let error = wasmtime::format_err!("host stopped the guest: {message}");
            self.stop = Some(HostStop::WriteLimit(message));
            return Err(error);
        }
        let done = self.store.put(key, value, lease.unwrap_or(0));
        self.stop(done)
    }

    fn delete_kv(&mut self, key: &[u8]) -> wasmtime::Result<bool> {
        self.charge(call(1, key.len()))?;
        let deleted = self.store.delete_range(key, &[]);
        Ok(self.stop(deleted)? > 0)
    }

    fn delete_kv_range(&mut self, start: &[u8], end: &[u8]) -> wasmtime::Result<u64> {
        self.charge(call(0, start.len() + end.len()))?;
        let deleted = self.store.delete_range(start, end);
        let deleted = self.stop(deleted)?;
        let kvs = usize::try_from(deleted).unwrap_or(usize::MAX);
        self.charge(moved(kvs, 0))?;
        Ok(deleted)
    }

    fn range_kvs(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        reverse: bool,
    ) -> wasmtime::Result<Vec<StoredKv>> {
        self.charge(call(0, start.len() + end.len()))?;
        let found = self.store.range(start, end, bounded_limit(limit), reverse);
        let found = self.stop(found)?;
        let bytes = found.iter().map(kv_bytes).sum();
        self.charge(moved(found.len(), bytes))?;
        Ok(found)
    }

    /// Fuel left in the call's budget for host work (the guest's own instructions are metered
    /// by the engine from the same budget; this is a bound, not the exact remainder).
    fn host_fuel_left(&self) -> u64 {
        self.host_fuel.budget.saturating_sub(self.host_fuel.used)
    }

    fn query(&mut self, query: RangeQuery) -> wasmtime::Result<crate::store::RangeAnswer> {
        self.charge(call(0, query.start.len() + query.end.len()))?;
        // Bound the scan and the candidates by what the call can still pay for, so a scan of
        // a huge range stops where its fuel would have run out instead of after the fact.
        let left = self.host_fuel_left();
        let scan_max = left / GUEST_HOST_SCAN_FUEL.max(1);
        let bytes_max = left / GUEST_HOST_BYTE_FUEL.max(1);
        let answer = self.store.range_query(&query, scan_max, bytes_max);
        let answer = self.stop(answer)?;
        let scanned = usize::try_from(answer.scanned).unwrap_or(usize::MAX);
        let bytes = answer.kvs.iter().map(kv_bytes).sum();
        self.charge(scan(scanned).saturating_add(moved(answer.kvs.len(), bytes)))?;
        Ok(answer)
    }

    fn lease_facts(&mut self, id: i64) -> wasmtime::Result<Option<LeaseFacts>> {
        self.charge(call(1, 0))?;
        let found = self.store.lease(id);
        self.stop(found)
    }
}

/// A guest's range limit as the host applies it: 0 and anything above the cap are the cap.
fn bounded_limit(limit: u32) -> usize {
    match usize::try_from(limit) {
        Ok(0) | Err(_) => GUEST_RANGE_KEYS_MAX,
        Ok(n) => n.min(GUEST_RANGE_KEYS_MAX),
    }
}

/// The fuel for looking at `keys` keys in a scan, on top of what the matches move.
fn scan(keys: usize) -> u64 {
    u64::try_from(keys)
        .unwrap_or(u64::MAX)
        .saturating_mul(GUEST_HOST_SCAN_FUEL)
}

/// Generates one contract version's `store` and `context` host traits over the shared work.
macro_rules! host_version {
    ($v:ident $(, $context_item:item)*) => {
        impl $v::baton::module::context::Host for CallState {
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

            $($context_item)*
        }

        impl $v::baton::module::store::Host for CallState {
            fn get(
                &mut self,
                key: Vec<u8>,
            ) -> wasmtime::Result<Option<$v::baton::module::store::Kv>> {
                Ok(self.get_kv(&key)?.map(Into::into))
            }

            fn put(
                &mut self,
                key: Vec<u8>,
                value: Vec<u8>,
                lease: Option<i64>,
            ) -> wasmtime::Result<()> {
                self.put_kv(&key, &value, lease)
            }

            fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<bool> {
                self.delete_kv(&key)
            }

            fn delete_range(&mut self, start: Vec<u8>, end: Vec<u8>) -> wasmtime::Result<u64> {
                self.delete_kv_range(&start, &end)
            }

            version_range!($v);
        }

        impl From<StoredKv> for $v::baton::module::store::Kv {
            fn from(kv: StoredKv) -> Self {
                Self {
                    key: kv.key,
                    value: kv.value,
                    create_revision: kv.create_revision,
                    mod_revision: kv.mod_revision,
                    version: kv.version,
                    lease: kv.lease,
                }
            }
        }
    };
}

/// The `range` import of each version (0.1: key order only; 0.2: a full query).
macro_rules! version_range {
    (v01) => {
        fn range(
            &mut self,
            start: Vec<u8>,
            end: Vec<u8>,
            limit: u32,
            reverse: bool,
        ) -> wasmtime::Result<Vec<v01::baton::module::store::Kv>> {
            let found = self.range_kvs(&start, &end, limit, reverse)?;
            Ok(found.into_iter().map(Into::into).collect())
        }
    };
    (v02) => {
        fn range(
            &mut self,
            request: v02::baton::module::store::RangeRequest,
        ) -> wasmtime::Result<v02::baton::module::store::RangeResult> {
            let answer = self.query(range_query(request))?;
            Ok(v02::baton::module::store::RangeResult {
                kvs: answer.kvs.into_iter().map(Into::into).collect(),
                more: answer.more,
                count: answer.count,
            })
        }

        fn lease(
            &mut self,
            id: i64,
        ) -> wasmtime::Result<Option<v02::baton::module::store::LeaseInfo>> {
            let found = self.lease_facts(id)?;
            Ok(found.map(|l| v02::baton::module::store::LeaseInfo {
                id: l.id,
                granted_ttl_s: l.granted_ttl_s,
            }))
        }
    };
}

host_version!(v01);
host_version!(
    v02,
    fn caller(&mut self) -> wasmtime::Result<String> {
        Ok(self.context.caller.clone())
    }
);

fn range_query(r: v02::baton::module::store::RangeRequest) -> RangeQuery {
    use v02::baton::module::store::SortBy as By;
    RangeQuery {
        start: r.start,
        end: r.end,
        limit: bounded_limit(r.limit),
        sort_by: match r.sort_by {
            By::Key => SortBy::Key,
            By::Version => SortBy::Version,
            By::CreateRevision => SortBy::CreateRevision,
            By::ModRevision => SortBy::ModRevision,
            By::Value => SortBy::Value,
        },
        descending: r.descending,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        keys_only: r.keys_only,
        count_only: r.count_only,
    }
}
