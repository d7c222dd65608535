//! End-to-end runs of the benchmark client. The ignored ones start a real single-member etcd
//! (`etcd` on PATH, or ETCD_BIN) on loopback: `cargo test -p baton --lib bench -- --ignored`.
//! They check counts and stored data, never timings.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::Parser;
use etcd_client::{Client, GetOptions};

use super::{BenchArgs, measure};

/// How long a freshly started etcd gets to answer.
const READY_ATTEMPTS: u32 = 100;
const READY_PAUSE: Duration = Duration::from_millis(200);

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

fn args(line: &str) -> BenchArgs {
    Cli::try_parse_from(std::iter::once("bench").chain(line.split_whitespace()))
        .unwrap()
        .bench
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `line` against `etcd` and checks that all `ops` operations succeeded.
async fn measure_clean(etcd: &Etcd, line: &str, ops: u64) -> super::Summary {
    let summary = measure(vec![etcd.endpoint.clone()], args(line))
        .await
        .unwrap();
    assert_eq!(
        (summary.ops, summary.errors),
        (ops, 0),
        "{:?}",
        summary.error_samples
    );
    summary
}

/// A single-member etcd in a temporary directory, killed on drop.
struct Etcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (client_port, peer_port) = (free_port(), free_port());
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let bin = std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".to_string());
        let child = Command::new(bin)
            .args(["--name", "t1", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t1={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd binary on PATH (apt-get install etcd-server) or in ETCD_BIN");
        let etcd = Self {
            child,
            endpoint: client,
            _dir: dir,
        };
        for _ in 0..READY_ATTEMPTS {
            if let Ok(mut c) = Client::connect([&etcd.endpoint], None).await
                && c.put("ready", "1", None).await.is_ok()
            {
                return etcd;
            }
            tokio::time::sleep(READY_PAUSE).await;
        }
        panic!("etcd at {} never became ready", etcd.endpoint);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
#[ignore = "needs an etcd binary"]
async fn put_writes_every_key_it_reports() {
    let etcd = Etcd::start().await;
    let line = "put --total 300 --clients 8 --conns 2 --sequential-keys --key-space-size 300 \
                --key-prefix t/ --key-size 8 --val-size 16";
    let summary = measure_clean(&etcd, line, 300).await;
    let l = &summary.latency_ms;
    assert!(0.0 < l.p50 && l.p50 <= l.p99 && l.p99 <= l.max, "{l:?}");

    let mut client = Client::connect([&etcd.endpoint], None).await.unwrap();
    let stored = client
        .get("t/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(stored.kvs().len(), 300);
    assert_eq!(stored.kvs()[0].key(), b"t/000000");
    assert_eq!(stored.kvs()[0].value(), [b'v'; 16]);
}

#[tokio::test]
#[ignore = "needs an etcd binary"]
async fn range_reads_find_the_populated_keys() {
    let etcd = Etcd::start().await;
    for consistency in ["l", "s"] {
        let line = format!(
            "range --consistency {consistency} --total 200 --clients 4 --conns 2 --key-space-size 50 --target leader"
        );
        // A missing key counts as an error, so zero errors means every read found its key.
        let summary = measure_clean(&etcd, &line, 200).await;
        assert_eq!(summary.params["consistency"], consistency);
        assert_eq!(summary.endpoints, vec![etcd.endpoint.clone()]);
    }
}

#[tokio::test]
#[ignore = "needs an etcd binary"]
async fn lock_cycles_release_every_name() {
    let etcd = Etcd::start().await;
    let line = "lock --total 200 --clients 16 --conns 4 --names 4";
    let summary = measure_clean(&etcd, line, 200).await;
    assert_eq!(summary.params["names"], "4");
    // Every Lock was followed by its Unlock, so no lock key is left behind.
    let mut client = Client::connect([&etcd.endpoint], None).await.unwrap();
    let left = client
        .get("bench/lock/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(left.kvs().len(), 0);
}

#[tokio::test]
#[ignore = "needs an etcd binary"]
async fn watch_sees_every_put() {
    let etcd = Etcd::start().await;
    let line = "watch --total 200 --clients 4 --conns 2 --watchers 2";
    // An operation only succeeds once both watchers delivered its event.
    measure_clean(&etcd, line, 200).await;
    let mut client = Client::connect([&etcd.endpoint], None).await.unwrap();
    let written = client
        .get(
            "bench/watch/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(written.count(), 200);
}

#[tokio::test]
#[ignore = "needs an etcd binary"]
async fn incr_cas_loses_no_increment() {
    let etcd = Etcd::start().await;
    let line = "incr --mode cas --total 400 --clients 16 --conns 4 --counters 4";
    let summary = measure_clean(&etcd, line, 400).await;
    // 16 clients on 4 counters: some compares must have lost a race.
    let retries: u64 = summary.extra["retries"].parse().unwrap();
    assert!(retries > 0, "{summary:?}");
    // measure() already compared the sum; read it back independently too.
    let prefix = &summary.params["prefix"];
    let mut client = Client::connect([&etcd.endpoint], None).await.unwrap();
    let stored = client
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(stored.kvs().len(), 4);
    let sum: u64 = stored
        .kvs()
        .iter()
        .map(|kv| kv.value_str().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(sum, 400);
    assert_eq!(summary.extra["counted"], "400");
}

#[tokio::test]
#[ignore = "needs an etcd binary"]
async fn incr_invoke_refuses_etcd_before_starting() {
    let etcd = Etcd::start().await;
    let err = measure(
        vec![etcd.endpoint.clone()],
        args("incr --mode invoke --total 10"),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("--mode invoke needs Baton"),
        "{err:#}"
    );
}

#[tokio::test]
async fn unreachable_endpoint_fails_instead_of_retrying() {
    // Nothing listens on a port just released by the OS.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let err = measure(vec![endpoint.clone()], args("put --total 10"))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains(&endpoint), "{err:#}");
}

#[tokio::test]
#[ignore = "needs an etcd binary"]
async fn keepalive_renews_every_lease_on_schedule() {
    let etcd = Etcd::start().await;
    // 50 leases renewed every 200 ms for 1 s: 5 rounds of 50 renewals.
    let line = "keepalive --leases 50 --ttl 5 --interval 200ms --duration 1s --clients 4 --conns 2";
    let summary = measure_clean(&etcd, line, 250).await;
    assert_eq!(summary.params["leases"], "50");
    let mut client = Client::connect([&etcd.endpoint], None).await.unwrap();
    let leases = client.leases().await.unwrap();
    assert_eq!(
        leases.leases().len(),
        50,
        "granted leases are left to expire"
    );
    let one = leases.leases()[0].id();
    let ttl = client.lease_time_to_live(one, None).await.unwrap();
    assert!(ttl.ttl() > 3, "recently renewed: {ttl:?}");
}

#[tokio::test]
#[ignore = "needs an etcd binary"]
async fn park_recipe_delivers_every_item_once_and_races_every_waiter() {
    let etcd = Etcd::start().await;
    let line = "park --mode recipe --waiters 20 --items 4 --conns 2 --settle 200ms --timeout 30s";
    // measure() fails the run on an item lost, delivered twice, or left in the queue.
    let summary = measure_clean(&etcd, line, 4).await;
    // Every waiter races one Txn per push (one wins) and then reads the queue again.
    assert_eq!(summary.extra["txns_per_push"], "20.00", "{summary:?}");
    assert_eq!(summary.extra["reads_per_push"], "20.00", "{summary:?}");
    // The push and every claim Txn are log entries in etcd.
    assert_eq!(summary.extra["entries_per_push"], "21.00", "{summary:?}");
    let mut client = Client::connect([&etcd.endpoint], None).await.unwrap();
    let left = client
        .get(
            "bench/park/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .unwrap();
    assert_eq!(left.count(), 0, "every item was claimed");
}

#[tokio::test]
#[ignore = "needs an etcd binary"]
async fn park_invoke_refuses_etcd_before_starting() {
    let etcd = Etcd::start().await;
    let err = measure(vec![etcd.endpoint.clone()], args("park --waiters 2"))
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("--mode invoke needs Baton"),
        "{err:#}"
    );
}
