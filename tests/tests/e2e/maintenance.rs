//! The Maintenance service through etcdctl 3.4 and the Rust client: HashKV agreement between
//! members, `snapshot save`, the NOSPACE alarm under a tiny quota, MoveLeader, and (Baton only,
//! etcd checks every 5 minutes) auto-compaction. Test names avoid the substring "etcd".

use std::process::Output;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use baton_e2e::{Backend, Cluster, assert_grpc_error, backend_test, run_test};
use etcd_client::{AlarmAction, AlarmType, Compare, CompareOp, Txn, TxnOp};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tonic::Code;

const NO_SPACE: &str = "etcdserver: mvcc: database space exceeded";
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
/// Small enough that a few megabytes of puts reach it on both servers, large enough that a
/// fresh database (about 1 MiB for Baton's redb file) is well below it.
const TINY_QUOTA_BYTES: &str = "3000000";
/// Value size used to fill the database quickly.
const FILL_VALUE_BYTES: usize = 100_000;
/// Puts tried before giving up on reaching the quota.
const FILL_PUTS_MAX: usize = 200;
/// Distinct keys the fill cycles over, so deleting them and compacting frees the space.
const FILL_KEYS: usize = 5;
/// Polls for an asynchronous outcome (alarm raised, compaction done).
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const POLL_ATTEMPTS: usize = 150;

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `host:port` endpoints; etcdctl 3.4 sends `http://` endpoints verbatim as the HTTP/2 authority
/// for endpoint-wide commands, which Baton refuses (see the README).
fn bare(endpoint: &str) -> String {
    endpoint.trim_start_matches("http://").to_string()
}

/// Runs etcdctl against `endpoints`, insisting on success; returns stdout.
async fn ctl(cluster: &Cluster, endpoints: &[String], args: &[&str]) -> Result<String> {
    let output = cluster.etcdctl_at(endpoints, args, None).await?;
    ensure!(
        output.status.success(),
        "etcdctl {args:?} failed ({}): {}",
        output.status,
        stderr(&output)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn all_bare(cluster: &Cluster) -> Vec<String> {
    cluster.endpoints().iter().map(|e| bare(e)).collect()
}

async fn hashkv_agrees_across_members(backend: Backend) -> Result<()> {
    let cluster = Cluster::start(backend, 3).await?;
    let mut client = cluster.client().await?;
    for i in 0..20 {
        client
            .put(format!("h{}", i % 4), format!("v{i}"), None)
            .await?;
    }
    client.delete("h1", None).await?;
    let revision = client
        .get("h0", None)
        .await?
        .header()
        .map_or(0, |h| h.revision());
    ensure!(revision == 22, "revision {revision}");
    let mut hashes = Vec::new();
    for member in 0..3 {
        let mut one = cluster.member_client(member).await?;
        // A linearizable read makes the member apply everything first.
        one.get("h0", None).await?;
        let mut m = one.maintenance_client();
        let at = m.hash_kv(revision).await?;
        ensure!(at.compact_version() == -1, "compact revision {at:?}");
        ensure!(at.header().map(|h| h.revision()) == Some(revision));
        let latest = m.hash_kv(0).await?;
        ensure!(
            latest.hash() == at.hash(),
            "hash at 0 differs from hash at current"
        );
        let earlier = m.hash_kv(10).await?;
        ensure!(
            earlier.hash() != at.hash(),
            "history before revision 10 hashed the same"
        );
        assert_grpc_error(
            m.hash_kv(revision + 1).await,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        );
        let whole = m.hash().await?;
        ensure!(whole.header().map(|h| h.revision()) == Some(revision));
        hashes.push(at.hash());
    }
    ensure!(hashes.windows(2).all(|w| w[0] == w[1]), "hashes {hashes:?}");

    client.compact(10, None).await?;
    for member in 0..3 {
        let mut one = cluster.member_client(member).await?;
        one.get("h0", None).await?;
        let mut m = one.maintenance_client();
        let after = m.hash_kv(revision).await?;
        ensure!(after.compact_version() == 10, "{after:?}");
        assert_grpc_error(m.hash_kv(10).await, Code::OutOfRange, COMPACTED);
    }

    // etcdctl's corruption-check view: one line per member, equal hashes.
    let text = ctl(
        &cluster,
        &all_bare(&cluster),
        &["endpoint", "hashkv", "-w", "json"],
    )
    .await?;
    let listing: Value = serde_json::from_str(&text).with_context(|| text.clone())?;
    let rows = listing.as_array().context("hashkv JSON is not a list")?;
    ensure!(rows.len() == 3, "{text}");
    let first = &rows[0]["HashKV"]["hash"];
    ensure!(rows.iter().all(|r| &r["HashKV"]["hash"] == first), "{text}");
    ensure!(
        rows.iter().all(|r| r["HashKV"]["compact_revision"] == 10),
        "{text}"
    );
    Ok(())
}

async fn snapshot_save_appends_sha256(backend: Backend) -> Result<()> {
    let cluster = Cluster::start(backend, 1).await?;
    let mut client = cluster.client().await?;
    for i in 0..50 {
        client
            .put(format!("s{i}"), "x".repeat(i * 100), None)
            .await?;
    }
    let file = cluster.data_root().join("saved.db");
    let path = file.to_str().context("temp path is not utf-8")?;
    let endpoint = vec![bare(&cluster.endpoint(0))];
    let output = cluster
        .etcdctl_at(&endpoint, &["snapshot", "save", path], None)
        .await?;
    ensure!(
        output.status.success(),
        "snapshot save: {}",
        stderr(&output)
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    ensure!(
        printed.contains(&format!("Snapshot saved at {path}")),
        "{printed}"
    );
    let bytes = std::fs::read(&file)?;
    // etcdctl's own test for a trailing checksum: 512·n + 32 bytes.
    ensure!(bytes.len() % 512 == 32, "saved {} bytes", bytes.len());
    let (content, digest) = bytes.split_at(bytes.len() - 32);
    ensure!(
        Sha256::digest(content).as_slice() == digest,
        "the file does not end with the sha256 of its content"
    );
    Ok(())
}

/// Puts large values until the server refuses with NOSPACE; the alarm may be raised a moment
/// after the database grows (Baton checks twice a second), so a few puts may succeed first.
async fn fill_until_no_space(client: &mut etcd_client::Client) -> Result<()> {
    let value = "x".repeat(FILL_VALUE_BYTES);
    for i in 0..FILL_PUTS_MAX {
        match client
            .put(format!("fill{}", i % FILL_KEYS), value.clone(), None)
            .await
        {
            Ok(_) => {}
            Err(e) => {
                let status = baton_e2e::grpc_status(&e).with_context(|| format!("{e:?}"))?;
                ensure!(
                    (status.code(), status.message()) == (Code::ResourceExhausted, NO_SPACE),
                    "unexpected failure while filling: {status:?}"
                );
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("{FILL_PUTS_MAX} puts of {FILL_VALUE_BYTES} bytes never hit the quota")
}

async fn nospace_alarm_blocks_puts_until_disarmed(backend: Backend) -> Result<()> {
    let cluster =
        Cluster::start_with_flags(backend, 1, &["--quota-backend-bytes", TINY_QUOTA_BYTES]).await?;
    let mut client = cluster.client().await?;
    client.put("keep", "me", None).await?;
    fill_until_no_space(&mut client).await?;
    let member = cluster.member_id(0);
    let endpoints = vec![bare(&cluster.endpoint(0))];

    assert_grpc_error(
        client.put("more", "x", None).await,
        Code::ResourceExhausted,
        NO_SPACE,
    );
    let with_put = Txn::new().and_then([TxnOp::put("t", "x", None)]);
    assert_grpc_error(
        client.txn(with_put).await,
        Code::ResourceExhausted,
        NO_SPACE,
    );
    // Reads, deletes and a txn that only deletes still work.
    let got = client.get("keep", None).await?;
    ensure!(got.kvs().first().map(|kv| kv.value()) == Some(&b"me"[..]));
    let delete_only = Txn::new()
        .when([Compare::version("keep", CompareOp::Greater, 0)])
        .and_then([TxnOp::delete("keep", None)]);
    ensure!(client.txn(delete_only).await?.succeeded());

    let listed = ctl(&cluster, &endpoints, &["alarm", "list"]).await?;
    ensure!(
        listed == format!("memberID:{member} alarm:NOSPACE \n"),
        "{listed:?}"
    );
    let status = client.maintenance_client().status().await?;
    ensure!(
        status.errors() == [format!("memberID:{member} alarm:NOSPACE ")],
        "{:?}",
        status.errors()
    );

    // The operator's way out: delete, compact, defragment, disarm.
    client
        .delete(
            "fill",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await?;
    let revision = client
        .get("fill", None)
        .await?
        .header()
        .map_or(0, |h| h.revision());
    client.compact(revision, None).await?;
    let defrag = cluster.etcdctl_at(&endpoints, &["defrag"], None).await?;
    ensure!(defrag.status.success(), "defrag: {}", stderr(&defrag));
    ctl(&cluster, &endpoints, &["alarm", "disarm"]).await?;
    ensure!(
        ctl(&cluster, &endpoints, &["alarm", "list"])
            .await?
            .is_empty()
    );
    let alarms = client
        .maintenance_client()
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await?;
    ensure!(alarms.alarms().is_empty());
    client.put("after", "disarm", None).await?;
    Ok(())
}

async fn move_leader_hands_over(backend: Backend) -> Result<()> {
    let cluster = Cluster::start(backend, 3).await?;
    let leader = cluster.leader().await?;
    let target = (leader + 1) % 3;
    let target_id = cluster.member_id(target);
    let follower = cluster.member_client(target).await?;
    assert_grpc_error(
        follower.maintenance_client().move_leader(target_id).await,
        Code::FailedPrecondition,
        "etcdserver: not leader",
    );
    let at_leader = cluster.member_client(leader).await?;
    assert_grpc_error(
        at_leader.maintenance_client().move_leader(0x1234).await,
        Code::FailedPrecondition,
        "etcdserver: bad leader transferee",
    );
    let printed = ctl(
        &cluster,
        &all_bare(&cluster),
        &["move-leader", &format!("{target_id:x}")],
    )
    .await?;
    let expected = format!(
        "Leadership transferred from {:x} to {target_id:x}",
        cluster.member_id(leader)
    );
    ensure!(printed.contains(&expected), "{printed:?}");
    ensure!(cluster.leader().await? == target, "leadership did not move");
    // The cluster keeps serving writes under its new leader.
    cluster.client().await?.put("after-move", "1", None).await?;
    Ok(())
}

backend_test!(
    hashkv_agrees_across_members,
    snapshot_save_appends_sha256,
    nospace_alarm_blocks_puts_until_disarmed,
    move_leader_hands_over,
);

/// The compacted revision as HashKV reports it.
async fn compacted(client: &mut etcd_client::Client) -> Result<i64> {
    Ok(client
        .maintenance_client()
        .hash_kv(0)
        .await?
        .compact_version())
}

async fn wait_compacted(
    client: &mut etcd_client::Client,
    want: impl Fn(i64) -> bool,
) -> Result<i64> {
    let mut last = -1;
    for _ in 0..POLL_ATTEMPTS {
        last = compacted(client).await?;
        if want(last) {
            return Ok(last);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    bail!("compacted revision stayed at {last}")
}

/// Revision mode with a small retention: the leader compacts to current - retention.
async fn auto_compaction_by_revision(backend: Backend) -> Result<()> {
    let flags = [
        "--auto-compaction-mode",
        "revision",
        "--auto-compaction-retention",
        "5",
        "--experimental-auto-compaction-check-interval",
        "200ms",
    ];
    let cluster = Cluster::start_with_flags(backend, 3, &flags).await?;
    let mut client = cluster.client().await?;
    for i in 0..20 {
        client.put("ac", format!("{i}"), None).await?;
    }
    // 20 puts: revision 21, so everything up to 16 may go.
    let at = wait_compacted(&mut client, |c| c == 16).await?;
    ensure!(at == 16);
    let old = client
        .get("ac", Some(etcd_client::GetOptions::new().with_revision(10)))
        .await;
    assert_grpc_error(old, Code::OutOfRange, COMPACTED);
    Ok(())
}

/// Periodic mode with a one-second retention: history older than that is compacted soon.
async fn auto_compaction_periodic(backend: Backend) -> Result<()> {
    let flags = ["--auto-compaction-retention", "1s"];
    let cluster = Cluster::start_with_flags(backend, 1, &flags).await?;
    let mut client = cluster.client().await?;
    for i in 0..10 {
        client.put("pc", format!("{i}"), None).await?;
    }
    let at = wait_compacted(&mut client, |c| c > 1).await?;
    ensure!(at <= 11, "compacted past the last revision: {at}");
    Ok(())
}

/// Baton only: etcd's revision compactor looks every 5 minutes and takes no flag to change it.
mod maintenance_auto_compaction {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn by_revision_baton() {
        run_test(Backend::Baton, auto_compaction_by_revision(Backend::Baton)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn periodic_baton() {
        run_test(Backend::Baton, auto_compaction_periodic(Backend::Baton)).await;
    }
}
