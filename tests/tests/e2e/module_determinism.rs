//! Replicas agree after a storm of module calls: a seeded random mix of counter,
//! compare-and-move, lock (try-acquire with and without lock-delay, release, fenced-txn) and
//! election (campaign, proclaim, resign) calls, recipe calls that never wait (semaphore,
//! rwlock, barrier and double-barrier), each client with its own lease, queue calls (delayed
//! pushes, reservations that time out, acks and nacks, pops and reserves whose client deadline
//! passes while they wait), priority-queue and registry calls, hostile calls that trap, run out
//! of fuel, hit the memory cap,
//! overflow the stack or return an error, and plain puts, deletes and txns on the same keys,
//! sent concurrently by several clients to different members (followers forward). Once every
//! member has applied the last revision, HashKV must be identical on all three.
//!
//! The seed is printed; `MODULE_DETERMINISM_SEED=<n>` replays every client's operation stream
//! (the interleaving between clients is the scheduler's).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use baton_e2e::{Backend, Cluster, run_test};
use baton_proto::baton::v1::modules_client::ModulesClient;
use baton_proto::baton::v1::{DeployRequest, InvokeRequest, ListRequest};
use baton_wasm::builtin::HOSTILE_MODULE;
use etcd_client::{Client, Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::{Instant, sleep};
use tonic::Code;
use tonic::transport::Channel;

use crate::modules::{invoke, modules_client, wait_deployed};

const SEED_ENV: &str = "MODULE_DETERMINISM_SEED";
const CLIENTS: usize = 4;
const OPS_PER_CLIENT: usize = 250;
const COUNTERS: usize = 6;
const PLAIN_KEYS: usize = 12;
const JOBS: usize = 6;
/// Leases of the requesters' lock and election calls: they outlive the workload.
const RECIPE_LEASE_TTL_S: i64 = 600;
/// Spin budgets vary so the loop stops at many different points.
const SPIN_FUEL_MIN: u64 = 2_000;
const SPIN_FUEL_MAX: u64 = 200_000;
/// Room for hoard and recurse to reach the memory and stack caps before fuel runs out.
const CAP_FUEL: u64 = 100_000_000;
/// Client deadline on calls that may wait (pop, reserve, dequeue, changes): short, so a waiting
/// call is abandoned and its clean-up goes through the log too.
const WAITING_CALL_DEADLINE: Duration = Duration::from_millis(300);
const INSTANCES: usize = 6;
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_PAUSE: Duration = Duration::from_millis(50);

/// What one operation came to: e.g. `counter ok` or `hostile/spin ResourceExhausted`.
type Tally = BTreeMap<String, usize>;

struct Requester {
    kv: Client,
    modules: ModulesClient<Channel>,
    rng: StdRng,
    tally: Tally,
    /// The client's own lease, for the recipes that take one.
    lease: i64,
    /// The fencing tokens of its latest lock grant and leadership.
    lock_token: i64,
    election_token: i64,
}

fn counter_key(rng: &mut StdRng) -> String {
    format!("det/c{}", rng.random_range(0..COUNTERS))
}

fn plain_key(rng: &mut StdRng) -> String {
    format!("det/p{}", rng.random_range(0..PLAIN_KEYS))
}

impl Requester {
    /// Invokes and records the outcome; a gRPC code the call cannot produce fails the test.
    async fn call(&mut self, module: &str, function: &str, input: String, fuel: u64) -> Result<()> {
        let lease = if matches!(module, "lock" | "election") {
            self.lease
        } else {
            0
        };
        self.call_as(module, function, input, fuel, lease)
            .await
            .map(drop)
    }

    /// [`Requester::call`] with a caller lease; returns the call's code.
    async fn call_as(
        &mut self,
        module: &str,
        function: &str,
        input: String,
        fuel: u64,
        lease: i64,
    ) -> Result<Code> {
        let request = InvokeRequest {
            lease,
            ..invoke(module, function, &input, fuel)
        };
        self.call_with(request, None).await.map(|(code, _)| code)
    }

    /// Invokes `request`, with an optional client deadline, and records the outcome; a gRPC code
    /// the call cannot produce fails the test. Returns the code, and the output on success.
    async fn call_with(
        &mut self,
        request: InvokeRequest,
        deadline: Option<Duration>,
    ) -> Result<(Code, Option<Vec<u8>>)> {
        let (module, function) = (request.name.clone(), request.function.clone());
        let (module, function) = (module.as_str(), function.as_str());
        let (input, fuel) = (
            String::from_utf8_lossy(&request.input).into_owned(),
            request.fuel,
        );
        let mut request = tonic::Request::new(request);
        if let Some(deadline) = deadline {
            request.set_timeout(deadline);
        }
        let (code, output, message) = match self.modules.invoke(request).await {
            Ok(reply) => {
                let output = reply.into_inner().output;
                let json: serde_json::Value = serde_json::from_slice(&output).unwrap_or_default();
                match (module, json["token"].as_i64()) {
                    ("lock", Some(token)) => self.lock_token = token,
                    ("election", Some(token)) => self.election_token = token,
                    _ => {}
                }
                (Code::Ok, Some(output), String::new())
            }
            Err(status) => (status.code(), None, status.message().to_string()),
        };
        let waited: &[Code] = &[Code::Ok, Code::DeadlineExceeded, Code::Cancelled];
        let allowed: &[Code] = match (module, function) {
            // A plain put may have left a non-integer in a counter key.
            ("counter", _) => &[Code::Ok, Code::FailedPrecondition],
            ("compare-and-move", _) | ("hostile", "ok") => &[Code::Ok],
            // Another client holds the one place ("too many clients").
            ("double-barrier", "enter") => &[Code::Ok, Code::FailedPrecondition],
            ("semaphore" | "rwlock" | "barrier" | "double-barrier", _) => &[Code::Ok],
            // Lock or lead only while the token is good; the rest always succeed.
            ("lock", "fenced-txn") | ("election", "proclaim") => {
                &[Code::Ok, Code::FailedPrecondition]
            }
            ("lock" | "election", _) => &[Code::Ok],
            ("queue", "pop" | "reserve") | ("priority-queue", "dequeue") => waited,
            ("registry", "changes") => waited,
            // The reservation may have timed out meanwhile.
            ("queue", "ack" | "nack") => &[Code::Ok, Code::FailedPrecondition],
            ("queue" | "priority-queue" | "registry", _) => &[Code::Ok],
            ("hostile", "spin" | "hoard") => &[Code::ResourceExhausted],
            ("hostile", _) => &[Code::FailedPrecondition],
            _ => bail!("no expectation for {module}/{function}"),
        };
        ensure!(
            allowed.contains(&code),
            "{module}/{function} {input} (fuel {fuel}) answered {code:?} {message}"
        );
        *self
            .tally
            .entry(format!("{module}/{function} {code:?}"))
            .or_default() += 1;
        Ok((code, output))
    }

    /// A recipe call that never waits: no writer ever takes the rwlock, try-acquire never
    /// queues, nobody waits on the barrier, and only the one client inside the double barrier
    /// (of count 1) leaves it.
    async fn recipe_op(&mut self) -> Result<()> {
        let lease = self.lease;
        let (module, function, input) = match self.rng.random_range(0..8) {
            0 => (
                "semaphore",
                "try-acquire",
                r#"{"name":"det-sem","permits":2}"#,
            ),
            1 => ("semaphore", "release", r#"{"name":"det-sem"}"#),
            2 => ("rwlock", "rlock", r#"{"name":"det-rw"}"#),
            3 => ("rwlock", "runlock", r#"{"name":"det-rw"}"#),
            4 => ("barrier", "hold", r#"{"name":"det-barrier"}"#),
            5 => ("barrier", "release", r#"{"name":"det-barrier"}"#),
            _ => {
                let enter = r#"{"name":"det-db","count":1}"#;
                let code = self
                    .call_as("double-barrier", "enter", enter.into(), 0, lease)
                    .await?;
                if code == Code::Ok {
                    let leave = r#"{"name":"det-db"}"#;
                    self.call_as("double-barrier", "leave", leave.into(), 0, lease)
                        .await?;
                }
                return Ok(());
            }
        };
        self.call_as(module, function, input.into(), 0, lease)
            .await
            .map(drop)
    }

    /// One call to the queue, priority-queue or registry recipe.
    async fn queue_op(&mut self) -> Result<()> {
        let rng = &mut self.rng;
        let queue = serde_json::json!({"queue": "det/q"});
        let (request, deadline) = match rng.random_range(0..30) {
            0..6 => {
                let mut push = serde_json::json!({"queue": "det/q", "value": rng.random_range(0..100).to_string()});
                if rng.random_bool(0.3) {
                    push["delay_ms"] = rng.random_range(50..400).into();
                }
                (invoke("queue", "push", &push.to_string(), 0), None)
            }
            6..10 => {
                let visibility_ms = rng.random_range(100..600);
                let reserve = serde_json::json!({"queue": "det/q", "visibility_ms": visibility_ms});
                let settle = rng.random_range(0..3);
                let request = invoke("queue", "reserve", &reserve.to_string(), 0);
                let (_, output) = self.call_with(request, Some(WAITING_CALL_DEADLINE)).await?;
                let Some(token) = output.and_then(|o| {
                    serde_json::from_slice::<serde_json::Value>(&o).ok()?["token"].as_i64()
                }) else {
                    return Ok(());
                };
                let function = match settle {
                    0 => "ack",
                    1 => "nack",
                    // Left to time out and be redelivered.
                    _ => return Ok(()),
                };
                let input = serde_json::json!({"queue": "det/q", "token": token});
                (invoke("queue", function, &input.to_string(), 0), None)
            }
            10..13 => (
                invoke("queue", "pop", &queue.to_string(), 0),
                Some(WAITING_CALL_DEADLINE),
            ),
            13..15 => {
                let function = if rng.random_bool(0.5) {
                    "length"
                } else {
                    "peek"
                };
                (invoke("queue", function, &queue.to_string(), 0), None)
            }
            15..20 => {
                let input = serde_json::json!({
                    "queue": "det/pq", "value": "v", "priority": rng.random_range(0..4),
                });
                (
                    invoke("priority-queue", "enqueue", &input.to_string(), 0),
                    None,
                )
            }
            20..23 => {
                let input = serde_json::json!({"queue": "det/pq"});
                let request = invoke("priority-queue", "dequeue", &input.to_string(), 0);
                (request, Some(WAITING_CALL_DEADLINE))
            }
            23..27 => {
                let instance = format!("i{}", rng.random_range(0..INSTANCES));
                let meta = rng.random_range(0..3);
                let input =
                    serde_json::json!({"service": "det/svc", "instance": instance, "meta": meta});
                if rng.random_bool(0.7) {
                    let request = InvokeRequest {
                        lease: self.lease,
                        ..invoke("registry", "register", &input.to_string(), 0)
                    };
                    (request, None)
                } else {
                    let input = serde_json::json!({"service": "det/svc", "instance": instance});
                    (
                        invoke("registry", "deregister", &input.to_string(), 0),
                        None,
                    )
                }
            }
            _ => {
                let since = rng.random_range(0..50);
                let input = serde_json::json!({"service": "det/svc", "since_revision": since});
                let request = invoke("registry", "changes", &input.to_string(), 0);
                (request, Some(WAITING_CALL_DEADLINE))
            }
        };
        self.call_with(request, deadline).await.map(drop)
    }

    async fn module_op(&mut self) -> Result<()> {
        let rng = &mut self.rng;
        match rng.random_range(0..130) {
            100.. => self.queue_op().await,
            0..32 => {
                let keys: Vec<String> = (0..rng.random_range(1..=3))
                    .map(|_| counter_key(rng))
                    .collect();
                let by: i64 = rng.random_range(-3..=5);
                let input = serde_json::json!({ "keys": keys, "by": by }).to_string();
                self.call("counter", "add", input, 0).await
            }
            32..38 => self.recipe_op().await,
            38..46 => self.lock_election_op().await,
            46..60 => {
                let job = rng.random_range(0..JOBS);
                let expect = rng
                    .random_bool(0.5)
                    .then(|| format!("job{}", rng.random_range(0..3)));
                let input = serde_json::json!({
                    "from": format!("det/queue/j{job}"),
                    "to": format!("det/running/j{job}"),
                    "expect": expect,
                });
                self.call("compare-and-move", "move", input.to_string(), 0)
                    .await
            }
            60..70 => {
                let fuel = rng.random_range(SPIN_FUEL_MIN..=SPIN_FUEL_MAX);
                self.call("hostile", "spin", "spun".into(), fuel).await
            }
            70..76 => {
                self.call("hostile", "hoard", "hoarded".into(), CAP_FUEL)
                    .await
            }
            76..82 => {
                self.call("hostile", "recurse", "recursed".into(), CAP_FUEL)
                    .await
            }
            82..90 => self.call("hostile", "trap", "trapped".into(), 0).await,
            90..95 => self.call("hostile", "fail", "failed".into(), 0).await,
            _ => {
                let input = format!("ok{}", rng.random_range(0..100));
                self.call("hostile", "ok", input, 0).await
            }
        }
    }

    /// A lock or election call. Every requester campaigns on an election of its own, so no
    /// call here waits; the lock is shared, so grants and refusals interleave.
    async fn lock_election_op(&mut self) -> Result<()> {
        let rng = &mut self.rng;
        let election = format!("det/el{}", self.lease);
        let (lock_token, election_token) = if rng.random_bool(0.7) {
            (self.lock_token, self.election_token)
        } else {
            (rng.random_range(1..1_000), rng.random_range(1..1_000))
        };
        match rng.random_range(0..6) {
            0 => {
                let delay = rng.random_range(0..3) * 1_000;
                let input = serde_json::json!({"name": "det/lk", "lock_delay_ms": delay});
                self.call("lock", "try-acquire", input.to_string(), 0).await
            }
            1 => {
                let input = r#"{"name":"det/lk"}"#.to_string();
                self.call("lock", "release", input, 0).await
            }
            2 => {
                let input = serde_json::json!({"name": "det/lk", "token": lock_token, "ops": [
                    {"put": plain_key(rng), "value": "locked"}, {"delete": plain_key(rng)}]});
                self.call("lock", "fenced-txn", input.to_string(), 0).await
            }
            3 => {
                let value = format!("v{}", rng.random_range(0..3));
                let input = serde_json::json!({"name": election, "value": value});
                self.call("election", "campaign", input.to_string(), 0)
                    .await
            }
            4 => {
                let input =
                    serde_json::json!({"name": election, "token": election_token, "value": "p"});
                self.call("election", "proclaim", input.to_string(), 0)
                    .await
            }
            _ => {
                let input = serde_json::json!({"name": election});
                self.call("election", "resign", input.to_string(), 0).await
            }
        }
    }

    async fn kv_op(&mut self) -> Result<()> {
        let rng = &mut self.rng;
        let kind = match rng.random_range(0..100) {
            0..30 => {
                let key = plain_key(rng);
                self.kv
                    .put(key, format!("v{}", rng.random_range(0..4)), None)
                    .await?;
                "put plain"
            }
            30..45 => {
                // Mostly integers the counter adds to; now and then one it must refuse.
                let value = if rng.random_bool(0.1) {
                    "not-a-number".to_string()
                } else {
                    rng.random_range(-10..100).to_string()
                };
                self.kv.put(counter_key(rng), value, None).await?;
                "put counter"
            }
            45..60 => {
                let (job, n) = (rng.random_range(0..JOBS), rng.random_range(0..3));
                self.kv
                    .put(format!("det/queue/j{job}"), format!("job{n}"), None)
                    .await?;
                "put job"
            }
            60..75 => {
                let options = DeleteOptions::new().with_prefix();
                let prefix = if rng.random_bool(0.5) {
                    "det/running/"
                } else {
                    "hostile/"
                };
                self.kv.delete(prefix, Some(options)).await?;
                "delete prefix"
            }
            75..85 => {
                self.kv.delete(plain_key(rng), None).await?;
                "delete key"
            }
            _ => {
                let (key, other) = (plain_key(rng), counter_key(rng));
                let want = format!("v{}", rng.random_range(0..4));
                let txn = Txn::new()
                    .when([Compare::value(key.as_str(), CompareOp::Equal, want)])
                    .and_then([
                        TxnOp::put(other.as_str(), "7", None),
                        TxnOp::delete(key.as_str(), None),
                    ])
                    .or_else([
                        TxnOp::put(key.as_str(), "v0", None),
                        TxnOp::get(other.as_str(), None),
                    ]);
                let reply = self.kv.txn(txn).await?;
                if reply.succeeded() {
                    "txn succeeded"
                } else {
                    "txn failed"
                }
            }
        };
        *self.tally.entry(kind.to_string()).or_default() += 1;
        Ok(())
    }

    async fn run(mut self, client: usize) -> Result<Tally> {
        for index in 0..OPS_PER_CLIENT {
            let op = if self.rng.random_bool(0.15) {
                self.recipe_op().await
            } else if self.rng.random_bool(0.6) {
                self.module_op().await
            } else {
                self.kv_op().await
            };
            op.with_context(|| format!("client {client}, operation #{index}"))?;
        }
        Ok(self.tally)
    }
}

/// The revision every member has applied once the writes stop: the leader's, read
/// linearizably, then awaited on each member with serializable (member-local) reads.
async fn converged_revision(cluster: &Cluster) -> Result<i64> {
    let mut any = cluster.client().await?;
    let target = any
        .get("det/", None)
        .await?
        .header()
        .context("header")?
        .revision();
    for member in 0..cluster.size() {
        let mut local = cluster.member_client(member).await?;
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        loop {
            let read = local
                .get("det/", Some(GetOptions::new().with_serializable()))
                .await?;
            let applied = read.header().context("header")?.revision();
            if applied == target {
                break;
            }
            ensure!(
                applied < target,
                "member {member} is at {applied}, past {target}"
            );
            ensure!(
                Instant::now() < deadline,
                "member {member} stuck at {applied} < {target}"
            );
            sleep(POLL_PAUSE).await;
        }
    }
    Ok(target)
}

/// HashKV at `revision` and the module tables are identical on every member.
async fn members_agree(cluster: &Cluster, revision: i64) -> Result<()> {
    let mut hashes = Vec::new();
    for member in 0..cluster.size() {
        let client = cluster.member_client(member).await?;
        let reply = client.maintenance_client().hash_kv(revision).await?;
        hashes.push((reply.hash(), reply.compact_version()));
    }
    println!("revision {revision}, (hash, compact revision) per member: {hashes:?}");
    ensure!(
        hashes.iter().all(|h| *h == hashes[0]),
        "members disagree at revision {revision}: {hashes:?}"
    );
    // The module tables (outside HashKV) agree too.
    let mut tables = Vec::new();
    for member in 0..cluster.size() {
        let mut modules = modules_client(cluster.endpoint(member)).await?;
        tables.push(modules.list(ListRequest {}).await?.into_inner());
    }
    ensure!(
        tables.iter().all(|t| *t == tables[0]),
        "module tables differ: {tables:#?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_agree_after_random_module_calls() {
    run_test(Backend::Baton, async {
        let seed = baton_e2e::seed_from_env(SEED_ENV)?;
        println!("module determinism seed {seed}; replay with {SEED_ENV}={seed}");
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let mut setup = modules_client(cluster.endpoint(0)).await?;
        for (builtin, _) in baton_wasm::builtin::BUILTIN_MODULES {
            wait_deployed(&mut setup, builtin).await?;
        }
        let hostile = DeployRequest {
            name: "hostile".to_string(),
            component: HOSTILE_MODULE.to_vec(),
        };
        setup.deploy(hostile).await.context("deploy hostile")?;

        let mut clients = tokio::task::JoinSet::new();
        for client in 0..CLIENTS {
            let member = client % cluster.size();
            let mut kv = cluster.member_client(member).await?;
            let lease = kv.lease_grant(RECIPE_LEASE_TTL_S, None).await?.id();
            let requester = Requester {
                kv,
                lease,
                lock_token: 0,
                election_token: 0,
                modules: modules_client(cluster.endpoint(member)).await?,
                rng: StdRng::seed_from_u64(seed.wrapping_add(client as u64)),
                tally: Tally::new(),
            };
            clients.spawn(requester.run(client));
        }
        let mut tally = Tally::new();
        while let Some(joined) = clients.join_next().await {
            for (kind, n) in joined?.with_context(|| format!("seed {seed}"))? {
                *tally.entry(kind).or_default() += n;
            }
        }
        println!("outcomes: {tally:#?}");
        for kind in [
            "counter/add Ok",
            "compare-and-move/move Ok",
            "hostile/spin ResourceExhausted",
            "hostile/hoard ResourceExhausted",
            "hostile/recurse FailedPrecondition",
            "hostile/trap FailedPrecondition",
            "hostile/fail FailedPrecondition",
            "hostile/ok Ok",
            "semaphore/try-acquire Ok",
            "rwlock/rlock Ok",
            "barrier/hold Ok",
            "double-barrier/enter Ok",
            "double-barrier/leave Ok",
            "lock/try-acquire Ok",
            "election/campaign Ok",
            "queue/push Ok",
            "priority-queue/enqueue Ok",
            "registry/register Ok",
            "txn succeeded",
        ] {
            ensure!(
                tally.get(kind).is_some_and(|&n| n > 0),
                "no {kind:?} in {tally:#?}"
            );
        }

        let revision = converged_revision(&cluster).await?;
        members_agree(&cluster, revision)
            .await
            .with_context(|| format!("seed {seed}"))?;
        Ok(())
    })
    .await;
}
