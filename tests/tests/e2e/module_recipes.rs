//! The built-in `lock` module's try-acquire, fenced-txn and lock-delay, and the built-in
//! `election` module (Baton only: etcd has no modules), on a 3-member cluster with calls
//! spread over the members: waits and hand-offs, fencing, a holder's lease ending, and a
//! campaign abandoned by its client's deadline.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use baton_e2e::{Backend, Cluster, run_test};
use baton_proto::baton::v1::InvokeRequest;
use baton_proto::baton::v1::modules_client::ModulesClient;
use serde_json::{Value, json};
use tokio::time::{Instant, sleep, timeout};
use tonic::transport::Channel;

use crate::modules::{
    PARKED_PROOF, WAKE_BOUND, invoke, modules_client, output_json, park, wait_deployed,
};

/// A lease that outlives the test.
const LONG_TTL_S: i64 = 60;
/// The shortest TTL Baton grants with default timing.
const SHORT_TTL_S: i64 = 2;
/// The lock-delay asked for: long enough to tell from a prompt hand-off under load.
const LOCK_DELAY_MS: u64 = 3_000;
/// What polling for a key's end may add to when it is seen gone.
const POLL: Duration = Duration::from_millis(50);
/// Slack for clock reads on either side of a measured delay.
const CLOCK_SLACK: Duration = Duration::from_millis(300);

fn call(module: &str, function: &str, input: &Value, lease: i64) -> InvokeRequest {
    InvokeRequest {
        lease,
        ..invoke(module, function, &input.to_string(), 0)
    }
}

/// A client of each member's Modules service, once both recipes are deployed.
async fn members(cluster: &Cluster) -> Result<Vec<ModulesClient<Channel>>> {
    let mut clients = Vec::new();
    for member in 0..3 {
        clients.push(modules_client(cluster.endpoint(member)).await?);
    }
    wait_deployed(&mut clients[0], "lock").await?;
    wait_deployed(&mut clients[0], "election").await?;
    Ok(clients)
}

async fn run(client: &ModulesClient<Channel>, request: InvokeRequest) -> Result<Value> {
    let reply = client.clone().invoke(request).await?.into_inner();
    output_json(&reply.output)
}

/// The election's leader, read on `m` without a log entry.
async fn leader(m: &ModulesClient<Channel>) -> Result<Value> {
    let mut request = call("election", "leader", &json!({"name": "el"}), 0);
    request.read_only = true;
    run(m, request).await
}

fn token(output: &Value) -> Result<i64> {
    output["token"].as_i64().context("no token in the answer")
}

async fn value_of(kv: &mut etcd_client::Client, key: &str) -> Result<Option<String>> {
    let resp = kv.get(key, None).await?;
    Ok(resp
        .kvs()
        .first()
        .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
}

async fn wait_gone(kv: &mut etcd_client::Client, key: &str) -> Result<Instant> {
    timeout(WAKE_BOUND, async {
        while value_of(kv, key).await?.is_some() {
            sleep(POLL).await;
        }
        Ok::<_, anyhow::Error>(Instant::now())
    })
    .await
    .with_context(|| format!("{key} still there"))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_acquire_and_fenced_txn_across_members() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let m = members(&cluster).await?;
        let mut kv = cluster.member_client(2).await?;
        let (a, b) = (
            kv.lease_grant(LONG_TTL_S, None).await?.id(),
            kv.lease_grant(LONG_TTL_S, None).await?.id(),
        );
        let name = json!({"name": "tl"});
        let held = run(&m[0], call("lock", "try-acquire", &name, a)).await?;
        ensure!(held["acquired"] == true, "{held}");
        let refused = run(&m[1], call("lock", "try-acquire", &name, b)).await?;
        ensure!(
            refused == json!({"acquired": false, "holder_token": token(&held)?}),
            "{refused}"
        );
        ensure!(value_of(&mut kv, &format!("tl/{b:x}")).await?.is_none());

        let txn = |token: i64, value: &str| {
            json!({"name": "tl", "token": token, "ops": [
                {"put": "tl-data/x", "value": value}, {"put": "tl-data/y", "value": value},
                {"delete": "tl-data/old"}]})
        };
        kv.put("tl-data/old", "o", None).await?;
        run(
            &m[2],
            call("lock", "fenced-txn", &txn(token(&held)?, "1"), 0),
        )
        .await?;
        ensure!(value_of(&mut kv, "tl-data/x").await?.as_deref() == Some("1"));
        ensure!(value_of(&mut kv, "tl-data/old").await?.is_none());

        run(&m[0], call("lock", "release", &name, a)).await?;
        let next = run(&m[1], call("lock", "try-acquire", &name, b)).await?;
        ensure!(token(&next)? > token(&held)?, "{next}");
        let stale = m[2]
            .clone()
            .invoke(call("lock", "fenced-txn", &txn(token(&held)?, "2"), 0))
            .await;
        let status = stale.err().context("a stale token must be refused")?;
        ensure!(
            status.code() == tonic::Code::FailedPrecondition
                && status.message().contains("stale fencing token"),
            "{status:?}"
        );
        ensure!(value_of(&mut kv, "tl-data/y").await?.as_deref() == Some("1"));
        Ok(())
    })
    .await;
}

/// A holder granted with a lock-delay whose lease ends holds the lock for the delay after its
/// key went; one that releases hands it on at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_delay_follows_a_holders_lease_end_but_not_a_release() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let m = members(&cluster).await?;
        let mut kv = cluster.member_client(2).await?;
        let delayed = json!({"name": "ld", "lock_delay_ms": LOCK_DELAY_MS});

        // A released holder: the next waiter is granted at once.
        let (a, b) = (
            kv.lease_grant(LONG_TTL_S, None).await?.id(),
            kv.lease_grant(LONG_TTL_S, None).await?.id(),
        );
        run(&m[0], call("lock", "acquire", &delayed, a)).await?;
        let waiting = park(&m[1], call("lock", "acquire", &delayed, b));
        sleep(PARKED_PROOF).await;
        ensure!(!waiting.is_finished(), "the lock is held");
        run(&m[2], call("lock", "release", &json!({"name": "ld"}), a)).await?;
        let released_at = Instant::now();
        timeout(WAKE_BOUND, waiting).await???;
        let handoff = released_at.elapsed();
        ensure!(
            handoff < Duration::from_millis(LOCK_DELAY_MS),
            "a release is not delayed: {handoff:?}"
        );

        // b (delayed, holding) dies: its lease is never renewed... so take a fresh short one.
        run(&m[1], call("lock", "release", &json!({"name": "ld"}), b)).await?;
        let dying = kv.lease_grant(SHORT_TTL_S, None).await?.id();
        run(&m[1], call("lock", "acquire", &delayed, dying)).await?;
        let c = kv.lease_grant(LONG_TTL_S, None).await?.id();
        let waiting = park(&m[2], call("lock", "acquire", &json!({"name": "ld"}), c));
        let gone = wait_gone(&mut kv, &format!("ld/{dying:x}")).await?;
        let granted = timeout(WAKE_BOUND, waiting).await???.into_inner();
        let waited = gone.elapsed();
        ensure!(
            waited + POLL + CLOCK_SLACK >= Duration::from_millis(LOCK_DELAY_MS),
            "granted {waited:?} after the holder's lease ended"
        );
        ensure!(
            granted.runs >= 3,
            "parked, delayed, granted: {} runs",
            granted.runs
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_hands_over_and_observe_follows_across_members() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let m = members(&cluster).await?;
        let mut kv = cluster.member_client(0).await?;
        let (a, b) = (
            kv.lease_grant(LONG_TTL_S, None).await?.id(),
            kv.lease_grant(LONG_TTL_S, None).await?.id(),
        );
        let won = run(
            &m[0],
            call(
                "election",
                "campaign",
                &json!({"name": "el", "value": "a"}),
                a,
            ),
        )
        .await?;
        ensure!(won["key"] == format!("el/{a:x}"), "{won}");
        let challenger = park(
            &m[1],
            call(
                "election",
                "campaign",
                &json!({"name": "el", "value": "b"}),
                b,
            ),
        );
        let now = leader(&m[2]).await?;
        ensure!(now["value"] == "a" && now["token"] == won["token"], "{now}");

        // An observer on the third member waits for the next change of what it knows.
        let mut observe = call(
            "election",
            "observe",
            &json!({"name": "el", "key": now["key"], "mod_revision": now["mod_revision"]}),
            0,
        );
        observe.read_only = true;
        let observing = park(&m[2], observe);
        sleep(PARKED_PROOF).await;
        ensure!(
            !observing.is_finished() && !challenger.is_finished(),
            "nothing changed"
        );
        let proclaim = json!({"name": "el", "token": token(&won)?, "value": "a2"});
        run(&m[0], call("election", "proclaim", &proclaim, a)).await?;
        let seen = output_json(&timeout(WAKE_BOUND, observing).await???.into_inner().output)?;
        ensure!(seen["value"] == "a2" && seen["key"] == now["key"], "{seen}");

        let stale = json!({"name": "el", "token": token(&won)? + 1, "value": "x"});
        let refused = m[0]
            .clone()
            .invoke(call("election", "proclaim", &stale, a))
            .await;
        ensure!(
            refused
                .err()
                .is_some_and(|s| s.message() == "election: not leader"),
            "a wrong token may not proclaim"
        );
        let resign = json!({"name": "el", "token": token(&won)?});
        run(&m[2], call("election", "resign", &resign, a)).await?;
        let second = timeout(WAKE_BOUND, challenger).await???.into_inner();
        let second = output_json(&second.output)?;
        ensure!(
            token(&second)? > token(&won)?,
            "leadership tokens grow: {second}"
        );
        ensure!(leader(&m[0]).await?["value"] == "b");
        Ok(())
    })
    .await;
}

/// A campaign whose client's deadline passes while it waits resigns; the leader stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_campaign_resigns() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let m = members(&cluster).await?;
        let mut kv = cluster.member_client(0).await?;
        let (a, b) = (
            kv.lease_grant(LONG_TTL_S, None).await?.id(),
            kv.lease_grant(LONG_TTL_S, None).await?.id(),
        );
        run(
            &m[0],
            call(
                "election",
                "campaign",
                &json!({"name": "ab", "value": "a"}),
                a,
            ),
        )
        .await?;
        let mut impatient = tonic::Request::new(call(
            "election",
            "campaign",
            &json!({"name": "ab", "value": "b"}),
            b,
        ));
        impatient.set_timeout(Duration::from_secs(1));
        let gave_up = m[1].clone().invoke(impatient).await;
        ensure!(gave_up.is_err(), "the election is led: {gave_up:?}");
        wait_gone(&mut kv, &format!("ab/{b:x}")).await?;
        ensure!(value_of(&mut kv, &format!("ab/{a:x}")).await?.as_deref() == Some("a"));
        Ok(())
    })
    .await;
}

/// etcd's client-side `concurrency.Election.Campaign` (election.go), step by step over
/// `etcd_client`: create `<prefix><lease hex>` unless it exists, then wait until no key under
/// the prefix was created before it (`waitDeletes`). Returns the key and its create revision.
async fn go_campaign(
    c: &mut etcd_client::Client,
    prefix: &str,
    lease: i64,
    value: &str,
) -> Result<(String, i64)> {
    use etcd_client::{
        Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
        WatchOptions,
    };
    let key = format!("{prefix}{lease:x}");
    let txn = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.as_str(),
            value,
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key.as_str(), None)]);
    let resp = c.txn(txn).await?;
    let header_rev = resp.header().context("header")?.revision();
    let rev = if resp.succeeded() {
        header_rev
    } else {
        match resp.op_responses().first() {
            Some(etcd_client::TxnOpResponse::Get(get)) => {
                get.kvs().first().context("own key")?.create_revision()
            }
            _ => anyhow::bail!("unexpected txn answer"),
        }
    };
    // waitDeletes: the last key created before ours, until there is none.
    loop {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_max_create_revision(rev - 1)
            .with_limit(1);
        let ahead = c.get(prefix, Some(options)).await?;
        let Some(kv) = ahead.kvs().first() else {
            return Ok((key, rev));
        };
        let from = ahead.header().context("header")?.revision() + 1;
        let options = WatchOptions::new().with_start_revision(from);
        let mut stream = c.watch(kv.key(), Some(options)).await?;
        'deleted: while let Some(msg) = stream.message().await? {
            for event in msg.events() {
                if event.event_type() == EventType::Delete {
                    break 'deleted;
                }
            }
        }
    }
}

/// etcd's client-side election and the module queue together in one layout: a client-side
/// leader holds off the module's candidate until it resigns (deletes its key), and the module's
/// leader holds off a client-side candidate until the module resigns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_module_and_etcds_client_side_election_interoperate() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        let m = members(&cluster).await?;
        let mut kv = cluster.member_client(0).await?;
        let (go, module) = (
            kv.lease_grant(LONG_TTL_S, None).await?.id(),
            kv.lease_grant(LONG_TTL_S, None).await?.id(),
        );
        let (go_key, go_rev) = go_campaign(&mut kv, "io/", go, "go").await?;
        let waiting = park(
            &m[1],
            call(
                "election",
                "campaign",
                &json!({"name": "io", "value": "wasm"}),
                module,
            ),
        );
        sleep(PARKED_PROOF).await;
        ensure!(!waiting.is_finished(), "the client-side leader leads");
        kv.delete(go_key.as_str(), None).await?;
        let won = output_json(&timeout(WAKE_BOUND, waiting).await???.into_inner().output)?;
        ensure!(token(&won)? > go_rev, "{won}");

        let mut other = cluster.member_client(2).await?;
        let go_again = tokio::spawn(async move { go_campaign(&mut other, "io/", go, "go2").await });
        sleep(PARKED_PROOF).await;
        ensure!(!go_again.is_finished(), "the module's leader leads");
        let resign = json!({"name": "io", "token": token(&won)?});
        run(&m[2], call("election", "resign", &resign, module)).await?;
        let (_, rev) = timeout(WAKE_BOUND, go_again).await???;
        ensure!(rev > token(&won)?, "leadership tokens grow");
        Ok(())
    })
    .await;
}
