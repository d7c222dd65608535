//! python-etcd3 (a widely used Python client) drives put/get, txn, watch, lease and its lock
//! against a one-member cluster, through `tests/python/etcd3_client.py`. The test name avoids
//! the substring "etcd" so `cargo test -- etcd` selects only etcd backends.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use baton_e2e::{Backend, Cluster, backend_test};

/// What CI runs to provide the client: protobuf 4+ only works with the pure-Python backend
/// (set below anyway), and etcd3 0.12's lock needs tenacity's pre-7 callback style.
const INSTALL: &str = "pip install etcd3 'protobuf<4' 'tenacity<7'";
/// Bound on the whole script (it waits at most a few seconds for locks and watches).
const SCRIPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn python(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("python3");
    command
        .args(args)
        .env("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
        .kill_on_drop(true);
    command
}

async fn python_client_suite(backend: Backend) -> Result<()> {
    let probe = python(&["-c", "import etcd3"])
        .output()
        .await
        .context("python3 is not on PATH")?;
    if !probe.status.success() {
        bail!(
            "python-etcd3 is not installed (run `{INSTALL}`): {}",
            String::from_utf8_lossy(&probe.stderr)
        );
    }
    let cluster = Cluster::start(backend, 1).await?;
    let endpoint = cluster.endpoint(0);
    let port = endpoint
        .rsplit(':')
        .next()
        .context("endpoint without a port")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/etcd3_client.py");
    let script = script.to_str().context("script path is not UTF-8")?;
    let output = tokio::time::timeout(
        SCRIPT_TIMEOUT,
        python(&[script, "127.0.0.1", port]).output(),
    )
    .await
    .context("the python-etcd3 script did not finish")??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "python-etcd3 script failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout, "kv: ok\nwatch: ok\nlease: ok\nlock: ok\n");
    Ok(())
}

backend_test!(python_client_suite);
