//! The recipe command line (Baton only: it calls Baton's built-in modules) run as a user runs
//! it: the real `baton` binary as a subprocess against a 3-member cluster, its commands real
//! `sh` scripts. `baton lock` holders never overlap and pass their command's status on, a lost
//! lease stops the command, `-n 2` admits two; `elect`/`--observe`, `queue`, `barrier` and
//! `watch -- CMD` do what their etcdctl counterparts do; `baton lock` and `etcdctl lock`
//! exclude each other on one name.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use baton_e2e::{Backend, Cluster, baton_bin, etcdctl_bin, run_test};
use etcd_client::GetOptions;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::{Instant, sleep};

/// Bound on a CLI starting, acquiring an uncontended recipe and printing or exiting.
const PROMPTLY: Duration = Duration::from_secs(20);
/// How long a blocked CLI is watched to show that it stays blocked.
const STILL_BLOCKED: Duration = Duration::from_millis(1500);
const POLL_PAUSE: Duration = Duration::from_millis(100);
/// `--ttl` for the lease-loss test: keep-alives every second, loss noticed within one.
const SHORT_TTL_S: &str = "3";

/// One `baton` (or etcdctl) process: stdout read line by line, stderr kept in a file.
struct Proc {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: PathBuf,
}

impl Proc {
    fn baton(cluster: &Cluster, dir: &Path, args: &[&str]) -> Result<Self> {
        let mut command = Command::new(baton_bin()?);
        command
            .arg(format!("--endpoints={}", cluster.endpoints().join(",")))
            .args(args);
        Self::spawn(command, dir)
    }

    /// etcdctl 3.4 wants `host:port` endpoints.
    fn etcdctl(cluster: &Cluster, dir: &Path, args: &[&str]) -> Result<Self> {
        let endpoints: Vec<String> = cluster
            .endpoints()
            .iter()
            .map(|e| e.trim_start_matches("http://").to_owned())
            .collect();
        let mut command = Command::new(etcdctl_bin()?);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD") {
                command.env_remove(&key);
            }
        }
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(args);
        Self::spawn(command, dir)
    }

    fn spawn(mut command: Command, dir: &Path) -> Result<Self> {
        let stderr = dir.join(format!("stderr.{}", rand::random::<u32>()));
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr)?)
            .kill_on_drop(true)
            .spawn()
            .context("spawning the CLI")?;
        let stdout = child.stdout.take().context("stdout")?;
        Ok(Self {
            child,
            lines: BufReader::new(stdout).lines(),
            stderr,
        })
    }

    async fn line(&mut self, what: &str) -> Result<String> {
        match tokio::time::timeout(PROMPTLY, self.lines.next_line()).await {
            Ok(line) => line?.with_context(|| format!("{what}: output closed; {}", self.errors())),
            Err(_) => bail!("{what}: nothing printed within {PROMPTLY:?}"),
        }
    }

    async fn stays_quiet(&mut self, what: &str) -> Result<()> {
        if let Ok(line) = tokio::time::timeout(STILL_BLOCKED, self.lines.next_line()).await {
            bail!("{what} should be blocked, printed {:?}", line?);
        }
        ensure!(
            self.child.try_wait()?.is_none(),
            "{what} exited: {}",
            self.errors()
        );
        Ok(())
    }

    /// Its exit status, within `limit`.
    async fn exit_within(&mut self, limit: Duration, what: &str) -> Result<ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .with_context(|| format!("{what} did not exit within {limit:?}"))?
            .context("waiting for the CLI")
    }

    async fn exit(&mut self, what: &str) -> Result<ExitStatus> {
        self.exit_within(PROMPTLY, what).await
    }

    /// SIGTERM, as a supervisor stops it.
    async fn terminate(&mut self, what: &str) -> Result<ExitStatus> {
        let pid = self.child.id().context("already exited")?;
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        ensure!(status.success(), "kill -TERM {pid} failed");
        self.exit(what).await
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// Runs `baton ARGS` to completion; its status and stdout.
async fn baton(cluster: &Cluster, dir: &Path, args: &[&str]) -> Result<(ExitStatus, String)> {
    let mut proc = Proc::baton(cluster, dir, args)?;
    let mut out = String::new();
    while let Some(line) = tokio::time::timeout(PROMPTLY, proc.lines.next_line())
        .await
        .with_context(|| format!("baton {args:?} kept printing past {PROMPTLY:?}"))??
    {
        out.push_str(&line);
        out.push('\n');
    }
    let status = proc.exit(&format!("baton {args:?}")).await?;
    if !status.success() {
        eprintln!("baton {args:?}: {status}: {}", proc.errors());
    }
    Ok((status, out))
}

/// `baton ARGS` that must succeed; its stdout lines.
async fn baton_ok(cluster: &Cluster, dir: &Path, args: &[&str]) -> Result<Vec<String>> {
    let (status, out) = baton(cluster, dir, args).await?;
    ensure!(status.success(), "baton {args:?} failed: {status}");
    Ok(out.lines().map(str::to_owned).collect())
}

/// The lines of `path` once `done` accepts them.
async fn file_lines_when(path: &Path, done: impl Fn(&[String]) -> bool) -> Result<Vec<String>> {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let lines: Vec<String> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if done(&lines) {
            return Ok(lines);
        }
        if Instant::now() >= deadline {
            bail!("{} after {PROMPTLY:?}: {lines:?}", path.display());
        }
        sleep(POLL_PAUSE).await;
    }
}

fn shell(script: &str) -> [&str; 3] {
    ["sh", "-c", script]
}

async fn three_members() -> Result<(Cluster, TempDir)> {
    let cluster = Cluster::start(Backend::Baton, 3).await?;
    Ok((cluster, tempfile::tempdir()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lock_holders_take_turns_and_pass_the_status_on() {
    run_test(Backend::Baton, async {
        let (cluster, dir) = three_members().await?;
        let log = dir.path().join("turns");
        let script = format!(
            "echo \"start $BATON_FENCING_TOKEN $BATON_LOCK_KEY\" >> {0}; sleep 0.5; \
             echo \"end $BATON_FENCING_TOKEN\" >> {0}",
            log.display()
        );
        let mut holders = Vec::new();
        for _ in 0..3 {
            let mut args = vec!["lock", "turns", "--"];
            args.extend(shell(&script));
            holders.push(Proc::baton(&cluster, dir.path(), &args)?);
        }
        for holder in &mut holders {
            let status = holder.exit("a lock holder").await?;
            ensure!(status.success(), "holder: {status}: {}", holder.errors());
        }
        // start/end pairs, never interleaved, with growing tokens and the holder's own key.
        let lines = file_lines_when(&log, |l| l.len() == 6).await?;
        let mut last_token = 0;
        for pair in lines.chunks(2) {
            let start: Vec<&str> = pair[0].split(' ').collect();
            ensure!(start.len() == 3 && start[0] == "start", "{lines:?}");
            ensure!(pair[1] == format!("end {}", start[1]), "overlap: {lines:?}");
            ensure!(start[2].starts_with("turns/"), "lock key {}", start[2]);
            let token: i64 = start[1].parse()?;
            ensure!(token > last_token, "tokens must grow: {lines:?}");
            last_token = token;
        }

        // The command's status is baton's; the lock was released after each holder.
        let mut args = vec!["lock", "turns", "--"];
        args.extend(shell("exit 7"));
        let (status, _) = baton(&cluster, dir.path(), &args).await?;
        ensure!(status.code() == Some(7), "status passed on: {status}");
        let mut kv = cluster.client().await?;
        let left = kv
            .get("turns/", Some(GetOptions::new().with_prefix()))
            .await?;
        ensure!(left.count() == 0, "every holder released: {:?}", left.kvs());
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lock_times_out_and_holds_without_a_command() {
    run_test(Backend::Baton, async {
        let (cluster, dir) = three_members().await?;
        let mut holder = Proc::baton(&cluster, dir.path(), &["lock", "held"])?;
        let key = holder.line("holder key").await?;
        let token: i64 = holder.line("holder token").await?.parse()?;
        ensure!(key.starts_with("held/") && token > 0, "{key} {token}");

        let started = Instant::now();
        let (status, _) = baton(
            &cluster,
            dir.path(),
            &["lock", "held", "--timeout", "1", "--", "true"],
        )
        .await?;
        ensure!(!status.success(), "a timed-out acquire fails");
        ensure!(started.elapsed() < PROMPTLY, "gave up in time");

        let status = holder.terminate("holder").await?;
        ensure!(
            status.success(),
            "Ctrl-C/SIGTERM ends a hold cleanly: {status}"
        );
        let lines = baton_ok(&cluster, dir.path(), &["lock", "held", "--", "true"]).await?;
        ensure!(
            lines.is_empty(),
            "with a command nothing is printed: {lines:?}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lock_lost_lease_stops_the_command() {
    run_test(Backend::Baton, async {
        let (cluster, dir) = three_members().await?;
        let log = dir.path().join("lost");
        let script = format!(
            "trap 'echo terminated >> {0}; exit 0' TERM; echo \"held $BATON_LOCK_KEY\" >> {0}; \
             while true; do sleep 0.1; done",
            log.display()
        );
        let mut args = vec!["lock", "doomed", "--ttl", SHORT_TTL_S, "--"];
        args.extend(shell(&script));
        let mut holder = Proc::baton(&cluster, dir.path(), &args)?;
        let lines = file_lines_when(&log, |l| !l.is_empty()).await?;
        let key = lines[0].strip_prefix("held ").context("held line")?;
        let lease_hex = key.rsplit('/').next().context("lease in the key")?;
        let lease = i64::from_str_radix(lease_hex, 16)?;

        let mut kv = cluster.client().await?;
        kv.lease_revoke(lease).await?;
        let status = holder.exit("holder after its lease was revoked").await?;
        ensure!(!status.success(), "baton exits non-zero after a lost lease");
        ensure!(
            holder.errors().contains("lost"),
            "says why: {}",
            holder.errors()
        );
        file_lines_when(&log, |l| l.iter().any(|l| l == "terminated")).await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_semaphore_admits_two_not_three() {
    run_test(Backend::Baton, async {
        let (cluster, dir) = three_members().await?;
        let go = dir.path().join("go");
        let script = format!(
            "touch {0}/held.$BATON_FENCING_TOKEN; while [ ! -e {1} ]; do sleep 0.1; done",
            dir.path().display(),
            go.display()
        );
        let mut args = vec!["lock", "pool", "-n", "2", "--"];
        args.extend(shell(&script));
        let mut holders = Vec::new();
        for _ in 0..3 {
            holders.push(Proc::baton(&cluster, dir.path(), &args)?);
        }
        let held = || {
            std::fs::read_dir(dir.path())
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .filter(|e| e.file_name().to_string_lossy().starts_with("held."))
                        .count()
                })
                .unwrap_or(0)
        };
        let deadline = Instant::now() + PROMPTLY;
        while held() < 2 {
            ensure!(Instant::now() < deadline, "two permits within {PROMPTLY:?}");
            sleep(POLL_PAUSE).await;
        }
        sleep(STILL_BLOCKED).await;
        ensure!(held() == 2, "a third holder got in: {}", held());

        std::fs::write(&go, "")?;
        for holder in &mut holders {
            let status = holder.exit("a permit holder").await?;
            ensure!(status.success(), "holder: {status}: {}", holder.errors());
        }
        ensure!(held() == 3, "the third ran once a permit was free");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_elect_hands_over_and_observe_follows() {
    run_test(Backend::Baton, async {
        let (cluster, dir) = three_members().await?;
        let mut observer = Proc::baton(&cluster, dir.path(), &["elect", "--observe", "boss"])?;
        let mut first = Proc::baton(&cluster, dir.path(), &["elect", "boss", "alpha"])?;
        let first_key = first.line("first leader key").await?;
        let first_token: i64 = first.line("first leader token").await?.parse()?;
        ensure!(observer.line("observed key").await? == first_key);
        ensure!(observer.line("observed value").await? == "alpha");

        let log = dir.path().join("leading");
        let script = format!(
            "echo \"$BATON_LOCK_KEY $BATON_FENCING_TOKEN\" > {}; exec sleep 60",
            log.display()
        );
        let mut args = vec!["elect", "boss", "beta", "--"];
        args.extend(shell(&script));
        let mut second = Proc::baton(&cluster, dir.path(), &args)?;
        second.stays_quiet("second candidate").await?;
        ensure!(!log.exists(), "the command ran before its candidate led");

        let status = first.terminate("first leader").await?;
        ensure!(status.success(), "resigns and exits cleanly: {status}");
        let lines = file_lines_when(&log, |l| !l.is_empty()).await?;
        let (second_key, second_token) = lines[0].split_once(' ').context("env line")?;
        ensure!(second_key.starts_with("boss/") && second_key != first_key);
        ensure!(second_token.parse::<i64>()? > first_token, "tokens grow");
        ensure!(observer.line("next observed key").await? == second_key);
        ensure!(observer.line("next observed value").await? == "beta");

        // Stopping the leader stops its command (sleep dies of SIGTERM: 128 + 15).
        let status = second.terminate("second leader").await?;
        ensure!(status.code() == Some(143), "command's status: {status}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_queue_and_barrier() {
    run_test(Backend::Baton, async {
        let (cluster, dir) = three_members().await?;
        let dir = dir.path();
        let pushed = baton_ok(&cluster, dir, &["queue", "push", "jobs", "a"]).await?;
        ensure!(
            pushed.len() == 1 && pushed[0].starts_with("jobs/"),
            "{pushed:?}"
        );
        baton_ok(&cluster, dir, &["queue", "push", "jobs", "b"]).await?;
        baton_ok(&cluster, dir, &["queue", "push", "jobs", "c"]).await?;
        ensure!(baton_ok(&cluster, dir, &["queue", "pop", "jobs"]).await? == ["a"]);

        let reserved = baton_ok(&cluster, dir, &["queue", "reserve", "jobs"]).await?;
        ensure!(reserved.len() == 2 && reserved[1] == "b", "{reserved:?}");
        let acked = baton_ok(&cluster, dir, &["queue", "ack", "jobs", &reserved[0]]).await?;
        ensure!(
            acked.len() == 1 && acked[0].starts_with("jobs/"),
            "{acked:?}"
        );
        let (status, _) = baton(&cluster, dir, &["queue", "ack", "jobs", &reserved[0]]).await?;
        ensure!(!status.success(), "a second ack is refused");

        let args = ["queue", "reserve", "jobs", "--visibility", "60"];
        let reserved = baton_ok(&cluster, dir, &args).await?;
        ensure!(reserved.len() == 2 && reserved[1] == "c", "{reserved:?}");
        baton_ok(&cluster, dir, &["queue", "nack", "jobs", &reserved[0]]).await?;
        ensure!(baton_ok(&cluster, dir, &["queue", "pop", "jobs"]).await? == ["c"]);
        let (status, _) = baton(&cluster, dir, &["queue", "pop", "jobs", "--timeout", "1"]).await?;
        ensure!(!status.success(), "an empty queue's pop gives up");

        baton_ok(&cluster, dir, &["barrier", "hold", "gate"]).await?;
        let mut waiter = Proc::baton(&cluster, dir, &["barrier", "wait", "gate"])?;
        waiter.stays_quiet("barrier waiter").await?;
        let (status, _) = baton(
            &cluster,
            dir,
            &["barrier", "wait", "gate", "--timeout", "1"],
        )
        .await?;
        ensure!(!status.success(), "a timed wait on a held barrier fails");
        baton_ok(&cluster, dir, &["barrier", "release", "gate"]).await?;
        let status = waiter.exit("barrier waiter after release").await?;
        ensure!(status.success(), "waiter: {status}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_watch_runs_the_command_per_event() {
    run_test(Backend::Baton, async {
        let (cluster, dir) = three_members().await?;
        let mut kv = cluster.client().await?;
        let first = kv.put("w/a", "1", None).await?;
        let first_rev = first.header().context("header")?.revision();
        kv.put("elsewhere", "x", None).await?;
        kv.delete("w/a", None).await?;

        let log = dir.path().join("events");
        let script = format!(
            "echo \"$BATON_WATCH_EVENT_TYPE|$BATON_WATCH_KEY|$BATON_WATCH_VALUE|$BATON_WATCH_REVISION\" >> {}",
            log.display()
        );
        let rev = first_rev.to_string();
        let mut args = vec!["watch", "w/", "--rev", &rev, "--"];
        args.extend(shell(&script));
        let mut watcher = Proc::baton(&cluster, dir.path(), &args)?;
        // History from --rev replays, then live changes follow.
        file_lines_when(&log, |l| l.len() == 2).await?;
        let live = kv.put("w/b", "two words", None).await?;
        let live_rev = live.header().context("header")?.revision();
        let lines = file_lines_when(&log, |l| l.len() == 3).await?;
        let expected = [
            format!("PUT|w/a|1|{first_rev}"),
            format!("DELETE|w/a||{}", first_rev + 2),
            format!("PUT|w/b|two words|{live_rev}"),
        ];
        ensure!(lines == expected, "{lines:?}");
        ensure!(watcher.line("printed type").await? == "PUT");
        ensure!(watcher.line("printed key").await? == "w/a");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lock_and_etcdctl_lock_exclude_each_other() {
    run_test(Backend::Baton, async {
        let (cluster, dir) = three_members().await?;
        let dir = dir.path();
        let mut etcdctl = Proc::etcdctl(&cluster, dir, &["lock", "shared"])?;
        let etcdctl_key = etcdctl.line("etcdctl lock key").await?;
        let (status, _) = baton(&cluster, dir, &["lock", "shared", "--timeout", "1"]).await?;
        ensure!(!status.success(), "baton waits behind etcdctl's holder");

        let mut ours = Proc::baton(&cluster, dir, &["lock", "shared"])?;
        ours.stays_quiet("baton lock behind etcdctl").await?;
        etcdctl.terminate("etcdctl lock").await?;
        let our_key = ours.line("baton lock key").await?;
        ensure!(our_key.starts_with("shared/") && our_key != etcdctl_key);

        let mut theirs = Proc::etcdctl(&cluster, dir, &["lock", "shared"])?;
        theirs.stays_quiet("etcdctl lock behind baton").await?;
        ours.terminate("baton lock").await?;
        theirs.line("etcdctl lock key after baton released").await?;
        theirs.terminate("second etcdctl lock").await?;
        Ok(())
    })
    .await;
}
