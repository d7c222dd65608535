//! `etcdctl lock` and `etcdctl elect` (etcdctl 3.4 runs etcd's client-side recipes over KV,
//! Watch and Lease), competing with each other and with the server-side Lock and Election
//! services: both sides use one key layout, so they queue together. Test names avoid the
//! substring "etcd" so `cargo test -- etcd` selects only etcd backends.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use baton_e2e::{Backend, Cluster, backend_test, etcdctl_bin, start_single};
use etcd_client::LockOptions;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// Bound on etcdctl starting and printing what it holds, when nothing stands in its way.
const PROMPTLY: Duration = Duration::from_secs(10);
/// How long a blocked etcdctl is given to show that it stays blocked.
const STILL_BLOCKED: Duration = Duration::from_millis(1500);
/// `etcdctl lock --ttl`: the session lease of a killed holder expires after this.
const SESSION_TTL_S: &str = "2";
/// Bound on a killed holder's session lease expiring (TTL, expiry tick, busy machine).
const EXPIRY_MAX: Duration = Duration::from_secs(12);
const TTL_S: i64 = 60;

/// A long-running etcdctl whose stdout is read line by line.
struct Etcdctl {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Etcdctl {
    /// etcdctl 3.4 wants `host:port` endpoints (see the README).
    fn spawn(cluster: &Cluster, args: &[&str]) -> Result<Self> {
        let endpoints: Vec<String> = cluster
            .endpoints()
            .iter()
            .map(|e| e.trim_start_matches("http://").to_owned())
            .collect();
        let mut command = tokio::process::Command::new(etcdctl_bin()?);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD") {
                command.env_remove(&key);
            }
        }
        let mut child = command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawning etcdctl")?;
        let stdout = child.stdout.take().context("etcdctl stdout")?;
        Ok(Self {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next line printed within `limit`; None if it printed nothing in that time.
    async fn line_within(&mut self, limit: Duration) -> Result<Option<String>> {
        match tokio::time::timeout(limit, self.lines.next_line()).await {
            Ok(line) => Ok(Some(line?.context("etcdctl closed its output")?)),
            Err(_) => Ok(None),
        }
    }

    async fn line(&mut self, what: &str) -> Result<String> {
        self.line_within(PROMPTLY)
            .await?
            .with_context(|| format!("{what}: nothing printed within {PROMPTLY:?}"))
    }

    async fn stays_quiet(&mut self, what: &str) -> Result<()> {
        let line = self.line_within(STILL_BLOCKED).await?;
        ensure!(line.is_none(), "{what} should be blocked, printed {line:?}");
        Ok(())
    }

    /// SIGKILL: no clean-up, its session lease has to expire.
    async fn kill(&mut self) -> Result<()> {
        self.child.kill().await.context("killing etcdctl")
    }

    /// SIGTERM: etcdctl releases what it holds and exits.
    async fn terminate(&mut self) -> Result<()> {
        let pid = self.child.id().context("etcdctl already exited")?;
        let status = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        ensure!(status.success(), "kill -TERM {pid} failed");
        tokio::time::timeout(PROMPTLY, self.child.wait())
            .await
            .context("etcdctl did not exit on SIGTERM")??;
        Ok(())
    }
}

async fn cli_lock_hands_over_between_processes_and_rpc(backend: Backend) -> Result<()> {
    let (cluster, mut client) = start_single(backend).await?;
    let mut first = Etcdctl::spawn(&cluster, &["lock", "--ttl", SESSION_TTL_S, "shared"])?;
    let first_key = first.line("first holder").await?;
    ensure!(
        first_key.starts_with("shared/"),
        "prints its key: {first_key}"
    );

    let mut second = Etcdctl::spawn(&cluster, &["lock", "--ttl", SESSION_TTL_S, "shared"])?;
    second.stays_quiet("second etcdctl lock").await?;
    // The server-side Lock queues behind both client-side holders.
    let lease = client.lease_grant(TTL_S, None).await?.id();
    let rpc = {
        let mut c = client.clone();
        tokio::spawn(async move {
            c.lock("shared", Some(LockOptions::new().with_lease(lease)))
                .await
        })
    };

    first.kill().await?;
    let second_key = second
        .line_within(EXPIRY_MAX)
        .await?
        .context("second etcdctl never got the lock after the first was killed")?;
    ensure!(second_key.starts_with("shared/") && second_key != first_key);
    ensure!(
        !rpc.is_finished(),
        "the Lock RPC waits behind the second holder"
    );

    second.terminate().await?;
    let granted = tokio::time::timeout(PROMPTLY, rpc)
        .await
        .context("Lock RPC after the etcdctl holders")???;
    assert_eq!(granted.key(), format!("shared/{lease:x}").as_bytes());
    let left = client
        .get(
            "shared/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await?;
    assert_eq!(left.count(), 1, "only the RPC's key is left");
    Ok(())
}

async fn cli_elect_hands_over_when_the_leader_exits(backend: Backend) -> Result<()> {
    let (cluster, mut client) = start_single(backend).await?;
    let mut observer = Etcdctl::spawn(&cluster, &["elect", "--listen", "el"])?;
    let mut first = Etcdctl::spawn(&cluster, &["elect", "el", "alpha"])?;
    let first_key = first.line("first candidate's key").await?;
    assert_eq!(first.line("first candidate's value").await?, "alpha");
    assert_eq!(observer.line("observed key").await?, first_key);
    assert_eq!(observer.line("observed value").await?, "alpha");

    let mut second = Etcdctl::spawn(&cluster, &["elect", "el", "beta"])?;
    second.stays_quiet("second candidate").await?;
    let leader = client.leader("el").await?;
    let kv = leader.kv().context("leader kv")?;
    assert_eq!(
        (kv.key(), kv.value()),
        (first_key.as_bytes(), b"alpha".as_slice())
    );

    first.terminate().await?;
    let second_key = second.line("second candidate's key").await?;
    assert_eq!(second.line("second candidate's value").await?, "beta");
    ensure!(second_key != first_key);
    assert_eq!(observer.line("observed new key").await?, second_key);
    assert_eq!(observer.line("observed new value").await?, "beta");
    let leader = client.leader("el").await?;
    assert_eq!(leader.kv().map(|kv| kv.value()), Some(b"beta".as_slice()));
    Ok(())
}

backend_test!(
    cli_lock_hands_over_between_processes_and_rpc,
    cli_elect_hands_over_when_the_leader_exits,
);
