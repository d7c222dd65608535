//! `baton bench incr` against a 3-member Baton cluster, as a user runs it: both ways of
//! incrementing (CAS retry loop, counter module call) spread over all members, and the counters
//! sum to the acknowledged increments (the bench itself fails a run that lost one; the sum is
//! read back here independently).

use anyhow::{Context, Result, ensure};
use baton_e2e::{Backend, Cluster, baton_bin, run_test};
use etcd_client::GetOptions;
use serde_json::Value;

use crate::modules::{modules_client, wait_deployed};

const INCREMENTS: u64 = 200;
/// Generous, so a loaded machine slows the run down instead of failing requests.
const REQUEST_TIMEOUT: &str = "30s";

async fn bench_incr(cluster: &Cluster, mode: &str) -> Result<Value> {
    let total = INCREMENTS.to_string();
    let out = tokio::process::Command::new(baton_bin()?)
        .args([
            "--endpoints",
            &cluster.endpoints().join(","),
            "bench",
            "incr",
        ])
        .args(["--mode", mode, "--total", &total, "--clients", "12"])
        .args([
            "--conns",
            "3",
            "--counters",
            "3",
            "--timeout",
            REQUEST_TIMEOUT,
            "--json",
        ])
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "bench incr --mode {mode} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).context("bench --json output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_incr_loses_no_increment_in_either_mode() {
    run_test(Backend::Baton, async {
        let cluster = Cluster::start(Backend::Baton, 3).await?;
        // The invoke mode needs the built-in counter, which arrives through the log.
        let mut modules = modules_client(cluster.endpoint(0)).await?;
        wait_deployed(&mut modules, "counter").await?;
        let mut kv = cluster.client().await?;
        for mode in ["cas", "invoke"] {
            let summary = bench_incr(&cluster, mode).await?;
            println!("{mode}: {summary}");
            let acked = summary["ops"].as_u64().context("ops")?;
            let failed = summary["errors"].as_u64().context("errors")?;
            ensure!(
                acked + failed == INCREMENTS && acked > 0,
                "{mode}: {summary}"
            );
            // A member starved of CPU may time a request out (and it may still apply); anything
            // else is a bug.
            let samples = summary["error_samples"]
                .as_array()
                .context("error_samples")?;
            ensure!(
                samples
                    .iter()
                    .all(|e| e.as_str().is_some_and(|e| e.contains("timed out"))),
                "{mode}: {summary}"
            );
            let prefix = summary["params"]["prefix"].as_str().context("prefix")?;
            let stored = kv
                .get(prefix, Some(GetOptions::new().with_prefix()))
                .await?;
            let mut sum = 0;
            for counter in stored.kvs() {
                sum += counter.value_str()?.parse::<u64>()?;
            }
            let counted = summary["extra"]["counted"].as_str().context("counted")?;
            ensure!(counted == sum.to_string(), "{summary}");
            // Every acknowledged increment is there; each timed-out one at most once.
            ensure!(
                (acked..=acked + failed).contains(&sum),
                "{mode}: counters sum to {sum}, {acked} acknowledged, {failed} timed out"
            );
            if mode == "invoke" {
                // The module reads and writes inside the state machine: nothing to retry.
                ensure!(summary["extra"]["retries"] == "0", "{summary}");
            }
        }
        Ok(())
    })
    .await;
}
