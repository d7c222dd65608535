//! What the etcd Lock and Election services share as thin adapters over the built-in `lock`
//! and `election` modules (`guests/lock`, `guests/election`): the one implementation of each
//! recipe is the module, so a `LockRequest` and a `baton call lock acquire` queue together, in
//! etcd's key layout, with the same fencing tokens and abandonment.
//!
//! A call names the module by the hash of the bytes built into this binary, so a member runs
//! the recipe it was built with; when that hash is not deployed (a new cluster still deploying
//! its built-ins, or one founded by an older release) it falls back to the latest version of
//! the name, and while neither exists it looks again for [`RECIPE_MODULE_WAIT_MS`] before
//! answering UNAVAILABLE. The modules' refusals reach clients as etcd's recipe servers send
//! theirs: code Unknown, etcd's words ([`RecipeError`], [`recipe_status`]).

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tonic::{Code, Status};

use crate::api::status::recipe_status;
use crate::modules::calls::{Calls, Failed};
use crate::server::Server;
use crate::server::lease::Lessor;
use baton_limits::{
    GUEST_FUEL_DEFAULT, RECIPE_MODULE_RETRY_MS, RECIPE_MODULE_WAIT_MS,
    RECIPE_SESSION_TTL_S as SESSION_TTL_S,
};
use baton_proto::batonpb::{ModuleInvoke, log_command};
use baton_proto::etcdserverpb::{LeaseGrantRequest, LeaseGrantResponse, ResponseHeader};
use baton_proto::mvccpb::KeyValue;
use baton_wasm::builtin::BUILTIN_MODULES;
use baton_wasm::{hash_hex, hex_bytes};

/// Refusals of the lock and election services, worded as etcd words them (etcd returns these
/// as plain errors, which gRPC reports with code Unknown); see `api::status` for the codes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum RecipeError {
    /// A Lock waiter's key vanished (its lease expired or was revoked) before its turn came.
    #[error("mutex: session is expired")]
    LockSessionExpired,
    /// The same for a campaign; etcd has no word for it, so this follows the mutex's.
    #[error("election: session is expired")]
    ElectionSessionExpired,
    #[error("election: not leader")]
    NotLeader,
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
}

/// The store's refusal of a put on a lease that does not exist, as the modules relay it.
const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

/// A built-in recipe module the services call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recipe {
    Lock = 0,
    Election = 1,
}

impl Recipe {
    fn name(self) -> &'static str {
        match self {
            Recipe::Lock => "lock",
            Recipe::Election => "election",
        }
    }

    /// What a waiter that lost its lease while waiting is told.
    fn session_expired(self) -> RecipeError {
        match self {
            Recipe::Lock => RecipeError::LockSessionExpired,
            Recipe::Election => RecipeError::ElectionSessionExpired,
        }
    }
}

/// A finished call: the module's JSON answer and the store revision it was given at.
pub(crate) struct Answer {
    pub(crate) output: Value,
    pub(crate) revision: i64,
}

/// Runs recipe calls for the Lock and Election services. Cheap to share.
pub(crate) struct Recipes {
    server: Arc<Server>,
    lessor: Arc<Lessor>,
    calls: Calls,
}

impl Recipes {
    pub(crate) fn new(server: Arc<Server>, lessor: Arc<Lessor>, calls: Calls) -> Self {
        Self {
            server,
            lessor,
            calls,
        }
    }

    pub(crate) fn header(&self, revision: i64) -> ResponseHeader {
        self.server.header(revision)
    }

    pub(crate) fn server(&self) -> &Arc<Server> {
        &self.server
    }

    /// The lease a request's keys are attached to: its own, or (when it names none) a new one
    /// that nobody renews, as etcd's server-side recipes do.
    pub(crate) async fn session_lease(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let req = self.lessor.prepare_grant(LeaseGrantRequest {
            ttl: SESSION_TTL_S,
            id: 0,
        });
        let op = log_command::Op::LeaseGrant(req);
        let resp: LeaseGrantResponse = self.server.write(op).await.map_err(recipe_status)?;
        if resp.error.is_empty() {
            Ok(resp.id)
        } else {
            Err(Status::unknown(resp.error))
        }
    }

    /// Runs `function` of `recipe` with `input` and the caller's `lease`: through the log (and
    /// abandoned if the client leaves), or read-only on this member. Errors are final: as etcd
    /// sends them, or UNAVAILABLE while the module is not deployed.
    pub(crate) async fn call(
        &self,
        recipe: Recipe,
        function: &str,
        input: &Value,
        lease: i64,
        read_only: bool,
    ) -> Result<Answer, Status> {
        let give_up = Instant::now() + Duration::from_millis(RECIPE_MODULE_WAIT_MS);
        let builtin = builtin_hash(recipe);
        loop {
            // By the built-in's hash first, then by name.
            for hash in [builtin.to_vec(), Vec::new()] {
                if hash.is_empty() && builtin.is_empty() {
                    // Already tried by name: this binary has no such built-in.
                    continue;
                }
                let call = ModuleInvoke {
                    name: recipe.name().to_string(),
                    hash,
                    function: function.to_string(),
                    input: input.to_string().into_bytes(),
                    lease,
                    fuel: GUEST_FUEL_DEFAULT,
                };
                let ran = if read_only {
                    self.calls
                        .run_read_only(call)
                        .await
                        .map_err(|status| Failed { status, runs: 0 })
                } else {
                    self.calls.run_counted(call).await
                };
                match ran {
                    Ok(reply) => {
                        let output = serde_json::from_slice(&reply.output).map_err(|e| {
                            Status::internal(format!("{} answered non-JSON: {e}", recipe.name()))
                        })?;
                        return Ok(Answer {
                            output,
                            revision: reply.revision,
                        });
                    }
                    Err(Failed { status, runs: 0 }) if not_deployed(&status) => {}
                    Err(Failed { status, runs }) => return Err(refusal(recipe, status, runs)),
                }
            }
            if Instant::now() >= give_up {
                return Err(Status::unavailable(format!(
                    "baton: the built-in {} module is not deployed (yet); try again, or deploy it \
                     with `baton module deploy`",
                    recipe.name()
                )));
            }
            tokio::time::sleep(Duration::from_millis(RECIPE_MODULE_RETRY_MS)).await;
        }
    }
}

/// The hash of the bytes of `recipe` built into this binary (empty if it has none), hashed
/// once: every Lock and Campaign names it, and a built-in is ~100 KB to hash.
fn builtin_hash(recipe: Recipe) -> &'static [u8] {
    static HASHES: LazyLock<[Vec<u8>; 2]> =
        LazyLock::new(|| [Recipe::Lock, Recipe::Election].map(hash_of_builtin));
    &HASHES[recipe as usize]
}

fn hash_of_builtin(recipe: Recipe) -> Vec<u8> {
    BUILTIN_MODULES
        .iter()
        .find(|(name, _)| *name == recipe.name())
        .map(|(_, bytes)| baton_wasm::module_hash(bytes).to_vec())
        .unwrap_or_default()
}

fn not_deployed(status: &Status) -> bool {
    status.code() == Code::NotFound && status.message().starts_with("module not found")
}

/// A module call's failure as etcd's recipe servers word it. A put on an ended lease in a
/// re-run (`runs > 0`) means a waiter lost its session while it waited.
fn refusal(recipe: Recipe, status: Status, runs: u32) -> Status {
    if runs > 0 && status.message() == LEASE_NOT_FOUND {
        return recipe.session_expired().into();
    }
    recipe_status(status)
}

/// The bytes of field `name` of a module's answer (`name` as text, or `name_hex`).
pub(crate) fn field_bytes(output: &Value, name: &str) -> Result<Vec<u8>, Status> {
    if let Some(text) = output.get(name).and_then(Value::as_str) {
        return Ok(text.as_bytes().to_vec());
    }
    let hex = output.get(format!("{name}_hex")).and_then(Value::as_str);
    hex.and_then(hex_bytes)
        .ok_or_else(|| Status::internal(format!("recipe answer without {name}: {output}")))
}

pub(crate) fn field_i64(output: &Value, name: &str) -> Result<i64, Status> {
    output
        .get(name)
        .and_then(Value::as_i64)
        .ok_or_else(|| Status::internal(format!("recipe answer without {name}: {output}")))
}

/// A candidate's key-value as the election module describes it (`leader`, `observe`).
pub(crate) fn leader_kv(output: &Value) -> Result<KeyValue, Status> {
    Ok(KeyValue {
        key: field_bytes(output, "key")?,
        value: field_bytes(output, "value")?,
        create_revision: field_i64(output, "token")?,
        mod_revision: field_i64(output, "mod_revision")?,
        version: field_i64(output, "version")?,
        lease: field_i64(output, "lease")?,
    })
}

/// An input field `name` carrying `bytes`: as text when they are UTF-8 (no growth, so etcd's
/// largest names and values fit a module's input), else as `name_hex`.
/// Replaces either spelling already there.
pub(crate) fn bytes_field(input: &mut Value, name: &str, bytes: &[u8]) {
    let Some(object) = input.as_object_mut() else {
        return;
    };
    let hex_name = format!("{name}_hex");
    object.remove(name);
    object.remove(&hex_name);
    match std::str::from_utf8(bytes) {
        Ok(text) => object.insert(name.to_string(), Value::from(text)),
        Err(_) => object.insert(hex_name, Value::from(hash_hex(bytes))),
    };
}

/// The input `{"name": ...}` naming recipe `name`.
pub(crate) fn named(name: &[u8]) -> Value {
    let mut input = Value::Object(serde_json::Map::new());
    bytes_field(&mut input, "name", name);
    input
}

/// `<name>/<lease hex>`, the participant key of etcd's layout (Go's `%x` of a signed id).
pub(crate) fn participant_key(name: &[u8], lease: i64) -> Vec<u8> {
    let hex = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    [name, b"/", hex.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_go_formatting() {
        assert_eq!(
            participant_key(b"lk", 0x694d7a5b3c1f2e0d),
            b"lk/694d7a5b3c1f2e0d"
        );
        assert_eq!(participant_key(b"lk", 10), b"lk/a");
        assert_eq!(participant_key(b"", -255), b"/-ff");
    }

    #[test]
    fn answers_carry_text_or_hex() {
        let output = serde_json::json!({"key": "E/a", "value_hex": "00ff", "token": 3,
            "mod_revision": 4, "version": 2, "lease": 10});
        let kv = leader_kv(&output).expect("a kv");
        assert_eq!((kv.key, kv.value), (b"E/a".to_vec(), vec![0, 0xff]));
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.version, kv.lease),
            (3, 4, 2, 10)
        );
        assert_eq!(
            hex_bytes(&hash_hex(b"\x00\x7f\xff")),
            Some(b"\x00\x7f\xff".to_vec())
        );
        assert!(field_bytes(&serde_json::json!({}), "key").is_err());
        let mut input = named(b"L");
        bytes_field(&mut input, "value", b"\xff");
        assert_eq!(input, serde_json::json!({"name": "L", "value_hex": "ff"}));
        bytes_field(&mut input, "value", b"v");
        assert_eq!(input, serde_json::json!({"name": "L", "value": "v"}));
    }

    #[test]
    fn a_lease_lost_while_waiting_is_etcds_session_expiry() {
        let lost = Status::failed_precondition(LEASE_NOT_FOUND);
        let s = refusal(Recipe::Lock, lost.clone(), 1);
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unknown, "mutex: session is expired")
        );
        let s = refusal(Recipe::Election, lost.clone(), 2);
        assert_eq!(s.message(), "election: session is expired");
        let s = refusal(Recipe::Lock, lost, 0);
        assert_eq!((s.code(), s.message()), (Code::Unknown, LEASE_NOT_FOUND));
    }

    #[test]
    fn every_recipe_is_built_in() {
        for recipe in [Recipe::Lock, Recipe::Election] {
            assert_eq!(builtin_hash(recipe).len(), 32, "{recipe:?}");
        }
    }
}
