//! Lock clients in the concurrent workload: each keeps a short lease alive, takes one of a few
//! locks (through etcd's Lock service or Baton's `lock` module; both use the same key layout,
//! so the two kinds contend for the same locks), does fenced writes to the lock's protected
//! key, and releases. Every step is recorded as a `LockOp`; after the run the protected keys'
//! full history is read back (`stored_history`) and `lockmodel::check` judges both.
//!
//! Under faults a lease ends while its client still thinks it holds the lock: that is allowed,
//! and the fence (a Txn comparing the lock key's create revision, or the module's `fenced-put`)
//! must then refuse the late writes. A client whose acquire or release went unanswered, or
//! whose write was refused, gives its lease up and starts over with a new one.

use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{Client, Compare, CompareOp, LockOptions, Txn, TxnOp, WatchOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::{REQUEST_TIMEOUT, connect};
use crate::gcpause::LockKind;
use crate::lockmodel::{LockOp, Step, Stored, WriteOutcome, fenced_value};
use crate::modcall::{self, CallError, Modules};
use crate::workload::{ERROR_BACKOFF, RECONNECT_BACKOFF, since};

/// Locks the clients contend for: few, so every lock has several contenders.
pub const LOCK_COUNT: u32 = 2;
/// Short enough to end during a fault (faults last 3-6 s), long enough to survive a busy
/// machine between keep-alives.
const LEASE_TTL_S: i64 = 4;
const KEEPALIVE_PERIOD: Duration = Duration::from_secs(1);
/// An acquire waits for the holders ahead of it; under a fault one of them may hold until its
/// lease ends.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(8);
/// Acknowledged fenced writes per hold, drawn up to this.
const WRITES_PER_HOLD_MAX: u32 = 3;
/// A holder whose writes get no answer (its member is paused or cut off) keeps trying up to
/// this many times: it does not know its lease may have ended meanwhile, which is exactly when
/// the fence must refuse it.
const WRITE_ATTEMPTS_PER_HOLD_MAX: u32 = 6;
/// Pause before each fenced write and after each release, drawn up to this.
const STEP_GAP_MS_MAX: u64 = 60;
const LOCK_MODULE: &str = "lock";
/// The protected keys, one per lock; outside the lock's own prefix and the KV workload's.
pub const PROTECTED_PREFIX: &str = "fault/fenced/";

pub fn lock_name(lock: u32) -> String {
    format!("fault/lock/{lock}")
}

pub fn protected_key(lock: u32) -> String {
    format!("{PROTECTED_PREFIX}{lock}")
}

/// How a lock client behaves.
#[derive(Clone, Copy, Debug)]
pub struct LockClient {
    pub id: u32,
    pub kind: LockKind,
    pub seed: u64,
    /// Negative control: writes are plain puts with no fence, so a holder whose lease ended
    /// overwrites its successor and the checker must fail the run.
    pub unfenced: bool,
}

/// A lease kept alive in the background, and the clients that use it.
struct Session {
    lease: i64,
    kv: Client,
    modules: Option<Modules>,
    keeper: JoinHandle<()>,
}

impl Session {
    async fn open(endpoint: &str, kind: LockKind) -> Option<Session> {
        let mut kv = connect(endpoint).await.ok()?;
        let granted = tokio::time::timeout(REQUEST_TIMEOUT, kv.lease_grant(LEASE_TTL_S, None));
        let lease = granted.await.ok()?.ok()?.id();
        let modules = match kind {
            LockKind::Module => Some(modcall::client(endpoint)?),
            LockKind::Etcd => None,
        };
        let keeper = tokio::spawn(keep_alive(kv.clone(), lease));
        Some(Session {
            lease,
            kv,
            modules,
            keeper,
        })
    }

    /// Gives the lease up (best effort: if the member does not answer, the lease expires).
    async fn close(mut self) {
        self.keeper.abort();
        let revoke = self.kv.lease_revoke(self.lease);
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, revoke).await;
    }
}

/// Renews `lease` every period until the server says it is gone.
async fn keep_alive(mut client: Client, lease: i64) {
    loop {
        tokio::time::sleep(KEEPALIVE_PERIOD).await;
        let renew = async {
            let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            anyhow::Ok(stream.message().await?)
        };
        if let Ok(Ok(Some(reply))) = tokio::time::timeout(REQUEST_TIMEOUT, renew).await
            && reply.ttl() <= 0
        {
            return;
        }
    }
}

/// A hold as the client knows it: the token and, for etcd's Lock, the lock key.
struct Held {
    lock: u32,
    token: i64,
    lock_key: Vec<u8>,
}

/// Runs one lock client against `endpoint` until `stop`; returns what it did. Never abandons a
/// write in flight (a dropped write could still land, unrecorded): `stop` is looked at between
/// steps only.
pub async fn run_lock_client(
    client: LockClient,
    endpoint: String,
    start: Instant,
    stop: watch::Receiver<bool>,
) -> Vec<LockOp> {
    let mut rng = StdRng::seed_from_u64(client.seed);
    let mut ops = Vec::new();
    let mut writes = 0u32;
    while !*stop.borrow() {
        let Some(mut session) = Session::open(&endpoint, client.kind).await else {
            tokio::time::sleep(RECONNECT_BACKOFF).await;
            continue;
        };
        while !*stop.borrow() && !session.keeper.is_finished() {
            let lock = rng.random_range(0..LOCK_COUNT);
            let op = |call_ns, step| LockOp {
                client: client.id,
                lock,
                call_ns,
                return_ns: Some(since(start)),
                step,
            };
            let call_ns = since(start);
            let Some(held) = acquire(&mut session, client.kind, lock).await else {
                ops.push(op(call_ns, Step::AcquireFailed));
                break;
            };
            ops.push(op(call_ns, Step::Acquired { token: held.token }));
            let mut lost = false;
            let wanted = rng.random_range(1..=WRITES_PER_HOLD_MAX);
            let mut answered = 0;
            for _ in 0..WRITE_ATTEMPTS_PER_HOLD_MAX {
                if answered == wanted {
                    break;
                }
                gap(&mut rng).await;
                writes += 1;
                let value = fenced_value(held.token, client.id, writes);
                let call_ns = since(start);
                let outcome = write(&mut session, &client, &held, &value).await;
                let mut write_op = op(
                    call_ns,
                    Step::Write {
                        token: held.token,
                        value,
                        outcome,
                    },
                );
                if outcome == WriteOutcome::Unknown {
                    write_op.return_ns = None;
                } else {
                    answered += 1;
                }
                ops.push(write_op);
                if outcome == WriteOutcome::Refused {
                    lost = true;
                    break;
                }
            }
            let call_ns = since(start);
            match release(&mut session, client.kind, &held).await {
                Some(was_holder) if !lost => ops.push(op(
                    call_ns,
                    Step::Released {
                        token: held.token,
                        was_holder,
                    },
                )),
                _ => break,
            }
            gap(&mut rng).await;
        }
        session.close().await;
        tokio::time::sleep(ERROR_BACKOFF).await;
    }
    ops
}

async fn gap(rng: &mut StdRng) {
    let ms = rng.random_range(0..=STEP_GAP_MS_MAX);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Takes `lock`; `None` unless it was granted and its token is known.
async fn acquire(session: &mut Session, kind: LockKind, lock: u32) -> Option<Held> {
    let name = lock_name(lock);
    match kind {
        LockKind::Module => {
            let modules = session.modules.as_mut()?;
            let input = format!(r#"{{"name":"{name}"}}"#);
            let request = modcall::request((LOCK_MODULE, "acquire"), input, session.lease, false);
            let reply = modcall::invoke_within(modules, request, ACQUIRE_TIMEOUT)
                .await
                .ok()?;
            let reply: serde_json::Value = serde_json::from_slice(&reply.output).ok()?;
            Some(Held {
                lock,
                token: reply["token"].as_i64()?,
                lock_key: Vec::new(),
            })
        }
        LockKind::Etcd => {
            let options = LockOptions::new().with_lease(session.lease);
            let locked = session.kv.lock(name, Some(options));
            let lock_key = tokio::time::timeout(ACQUIRE_TIMEOUT, locked)
                .await
                .ok()?
                .ok()?
                .key()
                .to_vec();
            // The token is the lock key's create revision (etcd's convention); the key is gone
            // already if the lease ended in between, and then nothing is held.
            let got = tokio::time::timeout(REQUEST_TIMEOUT, session.kv.get(lock_key.clone(), None));
            let token = got.await.ok()?.ok()?.kvs().first()?.create_revision();
            Some(Held {
                lock,
                token,
                lock_key,
            })
        }
    }
}

/// One write of `value` to the protected key, fenced by `held` (unless the control is on).
async fn write(
    session: &mut Session,
    client: &LockClient,
    held: &Held,
    value: &str,
) -> WriteOutcome {
    let key = protected_key(held.lock);
    if client.unfenced {
        let put = tokio::time::timeout(REQUEST_TIMEOUT, session.kv.put(key, value, None)).await;
        return match put {
            Ok(Ok(reply)) => accepted(reply.header().map(|h| h.revision())),
            _ => WriteOutcome::Unknown,
        };
    }
    match client.kind {
        LockKind::Module => {
            let Some(modules) = session.modules.as_mut() else {
                return WriteOutcome::Refused;
            };
            let input = serde_json::json!({
                "name": lock_name(held.lock),
                "token": held.token,
                "key": key,
                "value": value,
            });
            let call = (LOCK_MODULE, "fenced-put");
            match modcall::invoke(modules, call, input.to_string(), session.lease, false).await {
                Ok(reply) => accepted(Some(reply.revision)),
                Err(CallError::Refused(_)) => WriteOutcome::Refused,
                Err(CallError::Unknown(_)) => WriteOutcome::Unknown,
            }
        }
        LockKind::Etcd => {
            let fence =
                Compare::create_revision(held.lock_key.clone(), CompareOp::Equal, held.token);
            let txn = Txn::new()
                .when([fence])
                .and_then([TxnOp::put(key, value, None)]);
            match tokio::time::timeout(REQUEST_TIMEOUT, session.kv.txn(txn)).await {
                Ok(Ok(reply)) if reply.succeeded() => {
                    accepted(reply.header().map(|h| h.revision()))
                }
                Ok(Ok(_)) => WriteOutcome::Refused,
                _ => WriteOutcome::Unknown,
            }
        }
    }
}

/// An acknowledged write; a reply without a revision cannot be placed, so it counts as unknown.
fn accepted(revision: Option<i64>) -> WriteOutcome {
    revision.map_or(WriteOutcome::Unknown, |revision| WriteOutcome::Accepted {
        revision,
    })
}

/// Releases `held`; `None` when no answer came, else whether the module found the key (`None`
/// inside for etcd's Unlock, which does not say).
async fn release(session: &mut Session, kind: LockKind, held: &Held) -> Option<Option<bool>> {
    match kind {
        LockKind::Module => {
            let modules = session.modules.as_mut()?;
            let input = format!(r#"{{"name":"{}"}}"#, lock_name(held.lock));
            let call = (LOCK_MODULE, "release");
            let reply = modcall::invoke(modules, call, input, session.lease, false)
                .await
                .ok()?;
            let reply: serde_json::Value = serde_json::from_slice(&reply.output).ok()?;
            Some(reply["released"].as_bool())
        }
        LockKind::Etcd => {
            let unlock = session.kv.unlock(held.lock_key.clone());
            tokio::time::timeout(REQUEST_TIMEOUT, unlock)
                .await
                .ok()?
                .ok()?;
            Some(None)
        }
    }
}

/// Every write the protected keys ever took, in revision order, read with a watch from revision
/// 1 up to their last modification (protected keys are never deleted).
pub async fn stored_history(endpoint: &str, limit: Duration) -> Result<Vec<Stored>> {
    let reading = async {
        let mut client = connect(endpoint).await?;
        let options = etcd_client::GetOptions::new().with_prefix();
        let current = client.get(PROTECTED_PREFIX, Some(options)).await?;
        let upto = current.kvs().iter().map(|kv| kv.mod_revision()).max();
        let Some(upto) = upto else {
            return Ok(Vec::new());
        };
        let options = WatchOptions::new().with_prefix().with_start_revision(1);
        let mut stream = client.watch(PROTECTED_PREFIX, Some(options)).await?;
        let mut stored = Vec::new();
        while let Some(reply) = stream.message().await? {
            for event in reply.events() {
                let kv = event.kv().context("a watch event without its key")?;
                let key = String::from_utf8_lossy(kv.key());
                let lock = key
                    .strip_prefix(PROTECTED_PREFIX)
                    .and_then(|n| n.parse().ok())
                    .with_context(|| format!("unexpected protected key {key:?}"))?;
                stored.push(Stored {
                    lock,
                    revision: kv.mod_revision(),
                    value: String::from_utf8_lossy(kv.value()).into_owned(),
                });
            }
            if stored.last().is_some_and(|s| s.revision >= upto) {
                return Ok(stored);
            }
        }
        anyhow::bail!("the watch of {PROTECTED_PREFIX} ended before revision {upto}")
    };
    tokio::time::timeout(limit, reading)
        .await
        .context("reading the protected keys' history")?
}
