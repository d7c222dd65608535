//! Debian's etcdctl (API v3) against 1- and 3-member clusters: the CLI users actually run.
//! Test names avoid the substring "etcd" so `cargo test -- etcd` selects only etcd backends.

use std::process::Output;

use anyhow::{Context, Result, ensure};
use baton_e2e::{Backend, Cluster, backend_test};
use serde_json::Value;

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs etcdctl and insists it succeeded; returns stdout.
async fn ok(cluster: &Cluster, args: &[&str]) -> Result<String> {
    ok_with_stdin(cluster, args, None).await
}

async fn ok_with_stdin(cluster: &Cluster, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let output = cluster
        .etcdctl_at(&cluster.endpoints(), args, stdin)
        .await?;
    ensure!(
        output.status.success(),
        "etcdctl {args:?} failed ({}): {}",
        output.status,
        stderr(&output)
    );
    Ok(stdout(&output))
}

async fn json(cluster: &Cluster, args: &[&str]) -> Result<Value> {
    let text = ok(cluster, args).await?;
    serde_json::from_str(&text)
        .with_context(|| format!("etcdctl {args:?} printed non-JSON: {text}"))
}

async fn put_get_del(backend: Backend, size: usize) -> Result<()> {
    let cluster = Cluster::start(backend, size).await?;
    assert_eq!(ok(&cluster, &["put", "foo", "bar"]).await?, "OK\n"); // rev 2
    assert_eq!(ok(&cluster, &["put", "foo2", "baz"]).await?, "OK\n"); // rev 3
    assert_eq!(ok(&cluster, &["put", "foo", "bar2"]).await?, "OK\n"); // rev 4
    assert_eq!(ok(&cluster, &["get", "foo"]).await?, "foo\nbar2\n");
    assert_eq!(
        ok(&cluster, &["get", "foo", "--prefix"]).await?,
        "foo\nbar2\nfoo2\nbaz\n"
    );
    assert_eq!(
        ok(&cluster, &["get", "foo", "--rev=2"]).await?,
        "foo\nbar\n"
    );
    assert_eq!(ok(&cluster, &["get", "nothing"]).await?, "");
    let listing = json(&cluster, &["get", "foo", "--prefix", "-w", "json"]).await?;
    assert_eq!(listing["count"], 2);
    assert_eq!(listing["header"]["revision"], 4);
    // Keys and values are base64 in etcdctl's JSON: "foo" and "bar2".
    assert_eq!(listing["kvs"][0]["key"], "Zm9v");
    assert_eq!(listing["kvs"][0]["value"], "YmFyMg==");
    assert_eq!(listing["kvs"][0]["create_revision"], 2);
    assert_eq!(listing["kvs"][0]["mod_revision"], 4);
    assert_eq!(listing["kvs"][0]["version"], 2);
    assert_eq!(ok(&cluster, &["del", "foo", "--prefix"]).await?, "2\n");
    assert_eq!(ok(&cluster, &["del", "nothing"]).await?, "0\n");
    assert_eq!(ok(&cluster, &["get", "foo", "--prefix"]).await?, "");
    Ok(())
}

async fn ctl_put_get_del_one_member(backend: Backend) -> Result<()> {
    put_get_del(backend, 1).await
}

async fn ctl_put_get_del_three_members(backend: Backend) -> Result<()> {
    put_get_del(backend, 3).await
}

/// The prompts etcdctl itself prints in interactive txn mode.
const TXN_PROMPTS: &str =
    "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n";

async fn txn_and_compaction(backend: Backend, size: usize) -> Result<()> {
    let cluster = Cluster::start(backend, size).await?;
    ok(&cluster, &["put", "foo", "bar"]).await?; // rev 2
    ok(&cluster, &["put", "foo2", "baz"]).await?; // rev 3
    ok(&cluster, &["put", "foo", "bar2"]).await?; // rev 4
    let success = "value(\"foo\") = \"bar2\"\n\nput foo3 x\nget foo\n\nput foo4 y\n\n";
    let out = ok_with_stdin(&cluster, &["txn", "-i"], Some(success)).await?;
    assert_eq!(out, format!("{TXN_PROMPTS}SUCCESS\n\nOK\n\nfoo\nbar2\n"));
    let failure = "mod(\"foo\") > \"100\"\n\nput foo3 x\n\nput foo4 y\ndel foo2\n\n";
    let out = ok_with_stdin(&cluster, &["txn", "-i"], Some(failure)).await?;
    assert_eq!(out, format!("{TXN_PROMPTS}FAILURE\n\nOK\n\n1\n"));
    assert_eq!(
        ok(&cluster, &["get", "foo", "--prefix", "--keys-only"]).await?,
        "foo\n\nfoo3\n\nfoo4\n\n"
    );

    assert_eq!(
        ok(&cluster, &["compaction", "3"]).await?,
        "compacted revision 3\n"
    );
    for args in [&["compaction", "3"][..], &["get", "foo", "--rev=2"][..]] {
        let output = cluster.etcdctl(args).await?;
        assert!(
            !output.status.success(),
            "etcdctl {args:?} succeeded after compaction"
        );
        let err = stderr(&output);
        assert!(
            err.contains(&format!("Error: {COMPACTED}")),
            "etcdctl {args:?} stderr: {err}"
        );
    }
    assert_eq!(
        ok(&cluster, &["get", "foo", "--rev=3"]).await?,
        "foo\nbar\n"
    );
    Ok(())
}

async fn ctl_txn_and_compaction_one_member(backend: Backend) -> Result<()> {
    txn_and_compaction(backend, 1).await
}

async fn ctl_txn_and_compaction_three_members(backend: Backend) -> Result<()> {
    txn_and_compaction(backend, 3).await
}

/// Endpoints as `host:port`, the other form etcdctl accepts (and sends as the `:authority`
/// unchanged, unlike a `http://` URL: see `ctl_endpoint_status_and_hashkv_with_urls`).
fn bare_endpoints(cluster: &Cluster) -> Vec<String> {
    cluster
        .endpoints()
        .iter()
        .map(|e| e.trim_start_matches("http://").to_string())
        .collect()
}

async fn bare(cluster: &Cluster, args: &[&str]) -> Result<String> {
    let output = cluster
        .etcdctl_at(&bare_endpoints(cluster), args, None)
        .await?;
    ensure!(
        output.status.success(),
        "etcdctl {args:?} failed ({}): {}",
        output.status,
        stderr(&output)
    );
    Ok(stdout(&output))
}

async fn endpoint_status_and_health(backend: Backend, size: usize) -> Result<()> {
    let cluster = Cluster::start(backend, size).await?;
    ok(&cluster, &["put", "k", "v"]).await?;
    for member in 0..size {
        // A linearizable read makes each member apply the put before it reports status.
        cluster.member_client(member).await?.get("k", None).await?;
    }
    let endpoints = bare_endpoints(&cluster);
    let text = bare(&cluster, &["endpoint", "status", "-w", "json"]).await?;
    let statuses: Value = serde_json::from_str(&text)
        .with_context(|| format!("endpoint status printed non-JSON: {text}"))?;
    let statuses = statuses
        .as_array()
        .context("endpoint status JSON is not a list")?;
    assert_eq!(statuses.len(), size);
    let leader = cluster.member_id(cluster.leader().await?);
    for (member, entry) in statuses.iter().enumerate() {
        assert_eq!(entry["Endpoint"], endpoints[member]);
        let status = &entry["Status"];
        assert_eq!(status["header"]["member_id"], cluster.member_id(member));
        assert_eq!(status["leader"], leader);
        assert_eq!(status["header"]["revision"], 2);
        assert!(status["raftTerm"].as_u64() >= Some(1), "{status}");
        assert!(status["raftIndex"].as_u64() >= Some(1), "{status}");
    }
    // Table form: endpoint, id, version, db size, is leader, is learner, term, index, applied.
    let table = bare(&cluster, &["endpoint", "status"]).await?;
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split(", ").collect()).collect();
    assert_eq!(rows.len(), size, "{table}");
    for (member, row) in rows.iter().enumerate() {
        assert_eq!(row[0], endpoints[member], "{table}");
        assert_eq!(
            row[1],
            format!("{:x}", cluster.member_id(member)),
            "{table}"
        );
        let is_leader = cluster.member_id(member) == leader;
        assert_eq!(
            (row[4], row[5]),
            (if is_leader { "true" } else { "false" }, "false")
        );
    }

    // etcdctl prints health lines on stderr.
    let health = cluster.etcdctl(&["endpoint", "health"]).await?;
    assert!(
        health.status.success(),
        "endpoint health failed: {}",
        stderr(&health)
    );
    for endpoint in cluster.endpoints() {
        let line = format!("{endpoint} is healthy: successfully committed proposal");
        assert!(stderr(&health).contains(&line), "{}", stderr(&health));
    }
    let health = json(&cluster, &["endpoint", "health", "-w", "json"]).await?;
    let entries = health
        .as_array()
        .context("endpoint health JSON is not a list")?;
    assert_eq!(entries.len(), size);
    assert!(entries.iter().all(|e| e["health"] == true), "{health}");
    Ok(())
}

async fn ctl_endpoint_status_and_health_one_member(backend: Backend) -> Result<()> {
    endpoint_status_and_health(backend, 1).await
}

async fn ctl_endpoint_status_and_health_three_members(backend: Backend) -> Result<()> {
    endpoint_status_and_health(backend, 3).await
}

/// The cells of an etcdctl `-w table` output: its header row, then one row per line.
fn table_rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .filter(|line| line.starts_with('|'))
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_string())
                .collect()
        })
        .collect()
}

/// etcdctl's own 5 s per command is short on a loaded test machine.
const SLOW_MACHINE: &str = "--command-timeout=20s";

/// etcdctl 3.4 sends an endpoint given as `http://127.0.0.1:PORT` whole as the HTTP/2
/// `:authority` of `endpoint status`, `endpoint hashkv` and `defrag`; etcd (grpc-go) never
/// parses it, and neither may Baton (h2 refused it as malformed before the client port repaired
/// it).
async fn ctl_endpoint_status_and_hashkv_with_urls(backend: Backend) -> Result<()> {
    let cluster = Cluster::start(backend, 3).await?;
    cluster.client().await?.put("k", "v", None).await?;
    for member in 0..cluster.size() {
        // A linearizable read makes each member apply the put before it reports or hashes.
        cluster.member_client(member).await?.get("k", None).await?;
    }
    let endpoints = cluster.endpoints();
    assert!(endpoints.iter().all(|e| e.starts_with("http://")));
    let leader = cluster.member_id(cluster.leader().await?);

    let table = ok(
        &cluster,
        &["endpoint", "status", "-w", "table", SLOW_MACHINE],
    )
    .await?;
    let rows = table_rows(&table);
    let columns = [
        "ENDPOINT",
        "ID",
        "VERSION",
        "DB SIZE",
        "IS LEADER",
        "IS LEARNER",
        "RAFT TERM",
        "RAFT INDEX",
        "RAFT APPLIED INDEX",
        "ERRORS",
    ];
    assert_eq!(
        rows.first().map(Vec::as_slice),
        Some(&columns.map(String::from)[..])
    );
    assert_eq!(rows.len(), 1 + cluster.size(), "{table}");
    for (member, row) in rows[1..].iter().enumerate() {
        let id = cluster.member_id(member);
        assert_eq!(row[0], endpoints[member], "{table}");
        assert_eq!(row[1], format!("{id:x}"), "{table}");
        assert!(!row[2].is_empty() && !row[3].is_empty(), "{table}");
        let is_leader = if id == leader { "true" } else { "false" };
        assert_eq!((row[4].as_str(), row[5].as_str()), (is_leader, "false"));
        for number in &row[6..9] {
            assert!(number.parse::<u64>().is_ok_and(|n| n >= 1), "{table}");
        }
        assert_eq!(row[9], "", "{table}");
    }

    let table = ok(
        &cluster,
        &["endpoint", "hashkv", "-w", "table", SLOW_MACHINE],
    )
    .await?;
    let rows = table_rows(&table);
    assert_eq!(
        rows.first().map(Vec::as_slice),
        Some(&["ENDPOINT", "HASH"].map(String::from)[..])
    );
    assert_eq!(rows.len(), 1 + cluster.size(), "{table}");
    for (member, row) in rows[1..].iter().enumerate() {
        assert_eq!(row[0], endpoints[member], "{table}");
        // Every member holds the same history, so the same hash.
        assert_eq!(row[1], rows[1][1], "{table}");
        assert!(row[1].parse::<u32>().is_ok(), "{table}");
    }
    // The simple form: "ENDPOINT, HASH" per member.
    let lines = ok(&cluster, &["endpoint", "hashkv", SLOW_MACHINE]).await?;
    let expected: String = endpoints
        .iter()
        .map(|e| format!("{e}, {}\n", rows[1][1]))
        .collect();
    assert_eq!(lines, expected);
    // defrag dials each endpoint the same way.
    let defrag = ok(&cluster, &["defrag", SLOW_MACHINE]).await?;
    let expected: String = endpoints
        .iter()
        .map(|e| format!("Finished defragmenting etcd member[{e}]\n"))
        .collect();
    assert_eq!(defrag, expected);
    Ok(())
}

async fn member_list(backend: Backend, size: usize) -> Result<()> {
    let cluster = Cluster::start(backend, size).await?;
    // Members come back ordered by id.
    let mut members: Vec<usize> = (0..size).collect();
    members.sort_by_key(|&m| cluster.member_id(m));
    let expected: String = members
        .iter()
        .map(|&m| {
            format!(
                "{:x}, started, {}, {}, {}, false\n",
                cluster.member_id(m),
                cluster.name(m),
                cluster.peer_url(m),
                cluster.endpoint(m)
            )
        })
        .collect();
    assert_eq!(ok(&cluster, &["member", "list"]).await?, expected);
    let listing = json(&cluster, &["member", "list", "-w", "json"]).await?;
    for (row, &m) in members.iter().enumerate() {
        let entry = &listing["members"][row];
        assert_eq!(entry["ID"], cluster.member_id(m));
        assert_eq!(entry["name"], cluster.name(m));
        assert_eq!(entry["peerURLs"], serde_json::json!([cluster.peer_url(m)]));
        assert_eq!(
            entry["clientURLs"],
            serde_json::json!([cluster.endpoint(m)])
        );
    }
    Ok(())
}

async fn ctl_member_list_one_member(backend: Backend) -> Result<()> {
    member_list(backend, 1).await
}

async fn ctl_member_list_three_members(backend: Backend) -> Result<()> {
    member_list(backend, 3).await
}

backend_test!(
    ctl_put_get_del_one_member,
    ctl_put_get_del_three_members,
    ctl_txn_and_compaction_one_member,
    ctl_txn_and_compaction_three_members,
    ctl_endpoint_status_and_health_one_member,
    ctl_endpoint_status_and_health_three_members,
    ctl_endpoint_status_and_hashkv_with_urls,
    ctl_member_list_one_member,
    ctl_member_list_three_members,
);
