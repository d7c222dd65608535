//! An in-memory Baton for unit tests (native targets only): a [`Harness`] runs a module's
//! calls the way the host does — each through "the log", with buffered writes that commit as
//! one revision only when the call succeeds — over a store, leases and a leader clock the test
//! controls. Waiting calls are recorded with their condition, and [`Harness::woken`] says when
//! it fired, so a test replays the interleavings that matter (a holder's lease ends, a waiter
//! abandons, a deadline passes) without a cluster.
//!
//! ```
//! use baton_sdk::testing::Harness;
//! use baton_sdk::{Module, Reply, context, store};
//!
//! /// Takes "slot" for the caller's lease, or waits until it is free.
//! struct Slot;
//! impl Module for Slot {
//!     fn invoke(_: &str, _: &[u8]) -> Result<Reply, String> {
//!         let lease = context::caller_lease();
//!         match store::get("slot") {
//!             Some(kv) if kv.lease != lease => Ok(Reply::wait_for().key("slot").into()),
//!             _ => {
//!                 store::put_with_lease("slot", "", lease);
//!                 Ok(Reply::done("mine"))
//!             }
//!         }
//!     }
//! }
//!
//! let mut h = Harness::new::<Slot>("slot");
//! let (a, b) = (h.grant_lease(10), h.grant_lease(10));
//! assert!(h.call("take", "", a).is_done());
//! let waiting = h.call("take", "", b);
//! assert!(waiting.is_waiting());
//! h.revoke(a);
//! let granted = h.resume(&waiting).expect("a's lease ending wakes b");
//! assert_eq!(granted.output(), b"mine");
//! ```
//!
//! What differs from a cluster: no fuel or memory limits, and a guest's panic fails the test
//! (on Wasm it would trap and fail the call). Calls never share a log entry.

#[cfg(test)]
mod tests;
pub(crate) mod world;

use crate::store::{Kv, Range, RangeResult};
use crate::{Function, KeyRange, Module, Reply, WaitFor};
use baton_limits::GUEST_WAIT_CONDITIONS_MAX;
use world::{CallFacts, HostStop, Lease, Scope, World, Writes};

/// The leader clock a new harness starts at (Unix ms, 2023-11-14): fixed, so runs repeat.
pub const START_MS: u64 = 1_700_000_000_000;

/// How a call's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Finished with this output; its writes committed.
    Done(Vec<u8>),
    /// Its writes committed and it waits for this before running again.
    Wait(WaitFor),
    /// Failed with this message (the guest's, or the host's refusal); nothing committed.
    Err(String),
}

/// One run of a call, as the harness recorded it.
#[derive(Debug, Clone)]
pub struct Call {
    pub function: String,
    pub input: Vec<u8>,
    /// The caller's lease (0 for none).
    pub lease: i64,
    pub read_only: bool,
    pub outcome: Outcome,
    /// The store's revision once the run's writes committed: a waiting call wakes on changes
    /// after it.
    pub revision: i64,
    pub log_index: u64,
    pub proposal_time_ms: u64,
}

impl Call {
    pub fn is_done(&self) -> bool {
        matches!(self.outcome, Outcome::Done(_))
    }

    pub fn is_waiting(&self) -> bool {
        matches!(self.outcome, Outcome::Wait(_))
    }

    /// The output; panics (naming the outcome) unless the run finished.
    pub fn output(&self) -> &[u8] {
        match &self.outcome {
            Outcome::Done(output) => output,
            other => panic!("{} did not finish: {other:?}", self.function),
        }
    }

    /// The output as JSON; panics unless the run finished with JSON.
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_slice(self.output()) {
            Ok(value) => value,
            Err(e) => panic!("{} answered non-JSON: {e}", self.function),
        }
    }

    /// What the run waits for, if it waits.
    pub fn wait(&self) -> Option<&WaitFor> {
        match &self.outcome {
            Outcome::Wait(wait) => Some(wait),
            _ => None,
        }
    }

    /// The error message, if the run failed.
    pub fn error(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Err(message) => Some(message),
            _ => None,
        }
    }
}

type InvokeFn = fn(&str, &[u8]) -> Result<Reply, String>;
type AbandonFn = fn(&str, &[u8]) -> Result<(), String>;

/// A module, its world and the calls it ran. See the module doc for an example.
pub struct Harness {
    invoke: InvokeFn,
    abandon: AbandonFn,
    world: World,
    calls: Vec<Call>,
}

impl Harness {
    /// A harness running module `M` deployed as `name`, on an empty store at revision 1 with
    /// the leader clock at [`START_MS`].
    pub fn new<M: Module>(name: &str) -> Self {
        let world = World {
            now_ms: START_MS,
            module_name: name.to_string(),
            module_hash: "0".repeat(64),
            ..World::default()
        };
        Harness {
            invoke: M::invoke,
            abandon: M::abandon,
            world,
            calls: Vec::new(),
        }
    }

    /// Checks a module's declaration (the `FUNCTIONS` of [`functions!`](crate::functions!))
    /// against the module: each function, run on a fresh store with a caller lease and its
    /// example input, is not refused as unknown, and one declared as only reading runs
    /// read-only without trying to write. Panics naming the first that fails.
    pub fn check_declared<M: Module>(functions: &[Function]) {
        for f in functions {
            let mut h = Harness::new::<M>("declared");
            let lease = h.grant_lease(60);
            let call = if f.writes {
                h.call(f.name, f.input_example, lease)
            } else {
                h.call_read_only(f.name, f.input_example, lease)
            };
            let error = call.error().unwrap_or_default();
            assert!(
                !error.contains("unknown function"),
                "{} is declared but the module does not run it: {error}",
                f.name
            );
            assert!(
                !error.contains(world::READ_ONLY_WRITE),
                "{} is declared as only reading but writes: {error}",
                f.name
            );
        }
    }

    /// Runs `function` through the log with `lease` as the caller's lease (0 for none).
    pub fn call(&mut self, function: &str, input: impl AsRef<[u8]>, lease: i64) -> Call {
        self.run(function, input.as_ref(), lease, false)
    }

    /// Runs `function` as a read-only call: no log entry, writes refused.
    pub fn call_read_only(&mut self, function: &str, input: impl AsRef<[u8]>, lease: i64) -> Call {
        self.run(function, input.as_ref(), lease, true)
    }

    /// Whether `call` waits and its condition fired since that run: a key in its ranges
    /// changed after the run's revision, a lease it names ended, or the clock reached its
    /// `until_ms`.
    pub fn woken(&self, call: &Call) -> bool {
        let Some(wait) = call.wait() else {
            return false;
        };
        self.world.changed_since(call.revision, &wait.keys)
            || wait
                .leases
                .iter()
                .any(|l| !self.world.leases.contains_key(l))
            || wait.until_ms.is_some_and(|t| self.world.now_ms >= t)
    }

    /// Runs `call` again, as the host does once its condition fired, if it did.
    pub fn resume(&mut self, call: &Call) -> Option<Call> {
        self.woken(call).then(|| self.rerun(call))
    }

    /// Runs `call` again with the same function, input and lease, woken or not (the host may
    /// wake a call spuriously).
    pub fn rerun(&mut self, call: &Call) -> Call {
        self.run(&call.function, &call.input, call.lease, call.read_only)
    }

    /// Runs the module's `abandon` for a call whose client left, through the log; its writes
    /// commit when it returns `Ok`.
    pub fn abandon(
        &mut self,
        function: &str,
        input: impl AsRef<[u8]>,
        lease: i64,
    ) -> Result<(), String> {
        let abandon = self.abandon;
        let input = input.as_ref();
        let (_, writes, ran) = self.execute(lease, false, || abandon(function, input));
        match ran {
            Ok(_) => {
                self.world.commit(writes);
                Ok(())
            }
            Err(message) => Err(message),
        }
    }

    /// Every run so far, oldest first.
    pub fn calls(&self) -> &[Call] {
        &self.calls
    }

    fn run(&mut self, function: &str, input: &[u8], lease: i64, read_only: bool) -> Call {
        let invoke = self.invoke;
        let (facts, writes, ran) = self.execute(lease, read_only, || invoke(function, input));
        let outcome = match ran.and_then(checked) {
            Ok(outcome) => {
                self.world.commit(writes);
                outcome
            }
            Err(message) => Outcome::Err(message),
        };
        let call = Call {
            function: function.to_string(),
            input: input.to_vec(),
            lease,
            read_only,
            outcome,
            revision: self.world.revision,
            log_index: facts.log_index,
            proposal_time_ms: facts.proposal_time_ms,
        };
        self.calls.push(call.clone());
        call
    }

    /// Runs `guest` (one of the module's exports) over the world as a call with `lease`; its
    /// writes come back uncommitted.
    fn execute<T>(
        &mut self,
        lease: i64,
        read_only: bool,
        guest: impl FnOnce() -> Result<T, String>,
    ) -> (CallFacts, Writes, Result<T, String>) {
        let mut world = std::mem::take(&mut self.world);
        if !read_only {
            world.log_index += 1;
        }
        let facts = CallFacts {
            log_index: world.log_index,
            revision: world.revision + i64::from(!read_only),
            proposal_time_ms: world.now_ms,
            caller_lease: lease,
            read_only,
        };
        let scope = Scope {
            world,
            facts: facts.clone(),
            writes: Writes::new(),
        };
        let (scope, result) = world::enter(scope, guest);
        self.world = scope.world;
        let ran = match result {
            Ok(ran) => ran,
            Err(payload) => match payload.downcast::<HostStop>() {
                Ok(stop) => Err(stop.0),
                // A guest panic: on Wasm a trap; here the test's failure, with its message.
                Err(payload) => std::panic::resume_unwind(payload),
            },
        };
        (facts, scope.writes, ran)
    }

    // --- The world, as other clients and the test see and change it. ---

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        self.world.revision
    }

    /// The leader's clock (Unix ms), which the next call is proposed at.
    pub fn now_ms(&self) -> u64 {
        self.world.now_ms
    }

    /// Moves the leader's clock forward; leases whose TTL ran out expire, oldest deadline
    /// first, each in its own revision.
    pub fn advance_ms(&mut self, ms: u64) {
        self.world.now_ms = self.world.now_ms.saturating_add(ms);
        loop {
            let now = self.world.now_ms;
            let due = self
                .world
                .leases
                .iter()
                .filter(|(_, l)| l.expires_ms <= now)
                .min_by_key(|(id, l)| (l.expires_ms, **id))
                .map(|(id, _)| *id);
            match due {
                Some(id) => self.world.end_lease(id),
                None => break,
            };
        }
    }

    /// Sets the leader's clock, e.g. back, as a new leader with a slower clock would.
    /// Expires nothing; see [`Harness::advance_ms`].
    pub fn set_now_ms(&mut self, ms: u64) {
        self.world.now_ms = ms;
    }

    /// Grants a lease of `ttl_s` seconds and returns its id. Ids are scattered, as etcd's are,
    /// so their hex does not sort in grant order.
    pub fn grant_lease(&mut self, ttl_s: i64) -> i64 {
        loop {
            self.world.lease_seq += 1;
            let id = (self.world.lease_seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 1) as i64;
            if id != 0 && !self.world.leases.contains_key(&id) {
                self.grant_lease_id(id, ttl_s);
                return id;
            }
        }
    }

    /// Grants lease `id` of `ttl_s` seconds; panics if it exists.
    pub fn grant_lease_id(&mut self, id: i64, ttl_s: i64) {
        assert!(id > 0, "lease ids are positive");
        assert!(!self.world.leases.contains_key(&id), "lease {id:x} exists");
        let lease = Lease {
            ttl_s,
            expires_ms: self.expiry(ttl_s),
        };
        self.world.log_index += 1;
        self.world.leases.insert(id, lease);
    }

    fn expiry(&self, ttl_s: i64) -> u64 {
        let ttl_ms = u64::try_from(ttl_s).unwrap_or(0).saturating_mul(1000);
        self.world.now_ms.saturating_add(ttl_ms)
    }

    /// Renews `lease` for its full TTL from now; returns whether it exists.
    pub fn keep_alive(&mut self, lease: i64) -> bool {
        let now = self.world.now_ms;
        match self.world.leases.get_mut(&lease) {
            Some(l) => {
                let ttl_ms = u64::try_from(l.ttl_s).unwrap_or(0).saturating_mul(1000);
                l.expires_ms = now.saturating_add(ttl_ms);
                true
            }
            None => false,
        }
    }

    /// Revokes `lease`: its keys are deleted in one revision. Returns whether it existed.
    pub fn revoke(&mut self, lease: i64) -> bool {
        self.world.end_lease(lease)
    }

    /// Whether `lease` exists (was granted and has not ended).
    pub fn lease_exists(&self, lease: i64) -> bool {
        self.world.leases.contains_key(&lease)
    }

    /// Puts `key` as a client would (one revision); returns the store's revision.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> i64 {
        self.put_with_lease(key, value, 0)
    }

    /// Puts `key` attached to `lease`; panics if the lease does not exist, as the test's setup
    /// is then wrong.
    pub fn put_with_lease(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        lease: i64,
    ) -> i64 {
        let key = key.as_ref();
        if let Err(refused) = self.world.check_put(key, lease) {
            panic!("put {:?}: {refused}", String::from_utf8_lossy(key));
        }
        let mut writes = Writes::new();
        writes.insert(key.to_vec(), Some((value.as_ref().to_vec(), lease)));
        self.world.log_index += 1;
        self.world.commit(writes)
    }

    /// Deletes `key` as a client would; returns whether it existed.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> bool {
        let mut writes = Writes::new();
        let deleted =
            self.world
                .delete_range(&mut writes, self.world.revision + 1, key.as_ref(), &[]);
        self.world.log_index += 1;
        self.world.commit(writes);
        deleted > 0
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<Kv> {
        self.world
            .get(&Writes::new(), self.world.revision, key.as_ref())
    }

    /// The value of `key` as text, if it exists.
    pub fn get_str(&self, key: impl AsRef<[u8]>) -> Option<String> {
        self.get(key)
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
    }

    /// Runs `range` as the host would for a guest (same sorts, filters and cap).
    pub fn range(&self, range: Range) -> RangeResult {
        self.world
            .range(&Writes::new(), self.world.revision, range.request())
    }

    /// How many keys `range` matches, as [`Range::count`] answers a guest.
    pub fn count(&self, range: Range) -> u64 {
        let mut request = range.request().clone();
        request.count_only = true;
        self.world
            .range(&Writes::new(), self.world.revision, &request)
            .count
    }

    /// The keys starting with `prefix`, in key order, as text.
    pub fn keys(&self, prefix: impl AsRef<[u8]>) -> Vec<String> {
        let mut keys = Vec::new();
        let end = crate::store::prefix_end(prefix.as_ref());
        let writes = Writes::new();
        let mut from = prefix.as_ref().to_vec();
        // Past the guest cap too: assertions want every key.
        loop {
            let page = self.world.range(
                &writes,
                self.world.revision,
                Range::new(&from, &end).request(),
            );
            for kv in &page.kvs {
                keys.push(String::from_utf8_lossy(&kv.key).into_owned());
            }
            match page.kvs.last() {
                Some(last) if page.more => {
                    from = last.key.clone();
                    from.push(0);
                }
                _ => return keys,
            }
        }
    }

    /// Sets what `context::caller` answers.
    pub fn set_caller(&mut self, caller: &str) {
        self.world.caller = caller.to_string();
    }

    /// Sets what `context::module_hash` answers (64 zeros by default).
    pub fn set_module_hash(&mut self, hash: &str) {
        self.world.module_hash = hash.to_string();
    }
}

/// What the host makes of a reply: a wait it would refuse fails the call.
fn checked(reply: Reply) -> Result<Outcome, String> {
    let (keys, leases, until_ms) = match reply {
        Reply::Done(output) => return Ok(Outcome::Done(output)),
        Reply::Wait {
            keys,
            leases,
            until_ms,
        } => (keys, leases, until_ms),
    };
    if keys.is_empty() && leases.is_empty() && until_ms.is_none() {
        return Err("guest asked to wait but named no keys, leases or time".into());
    }
    let most = GUEST_WAIT_CONDITIONS_MAX;
    if keys.len() > most || leases.len() > most {
        return Err(format!(
            "guest may wait on at most {most} key ranges and {most} leases"
        ));
    }
    if keys.iter().any(is_empty_range) {
        return Err("guest asked to wait on an empty key range (end <= start)".into());
    }
    Ok(Outcome::Wait(WaitFor {
        keys,
        leases,
        until_ms,
    }))
}

fn is_empty_range(range: &KeyRange) -> bool {
    !matches!(range.end.as_slice(), [] | [0]) && range.end <= range.start
}
