//! One server process: spawn, signal (SIGKILL, SIGTERM, ...), respawn with the same arguments,
//! wait for its exit, read its log.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use tokio::time::{Instant, sleep};

use crate::backend::MemberAddrs;

/// How often [`MemberProcess::wait_exit`] looks at the process.
const EXIT_POLL: Duration = Duration::from_millis(20);
/// How much of the end of a log file a failure report shows.
const LOG_TAIL_BYTES_MAX: u64 = 12 * 1024;

/// Environment prefixes that would silently reconfigure etcd/etcdctl behind the flags' back.
pub(crate) const FOREIGN_ENV_PREFIXES: [&str; 2] = ["ETCD_", "ETCDCTL_"];

pub(crate) struct MemberProcess {
    pub addrs: MemberAddrs,
    program: PathBuf,
    args: Vec<OsString>,
    /// Variables set in the process's environment on every start, besides the test's own.
    pub env: Vec<(OsString, OsString)>,
    log_path: PathBuf,
    child: Option<Child>,
    /// Raft member id as reported in response headers; 0 until the member was seen ready.
    pub member_id: u64,
    /// Removed from the cluster with `member remove`; never started again.
    pub removed: bool,
}

impl MemberProcess {
    pub(crate) fn new(
        addrs: MemberAddrs,
        program: PathBuf,
        args: Vec<OsString>,
        dir: &Path,
    ) -> Self {
        Self {
            log_path: dir.join(format!("{}.log", addrs.name)),
            addrs,
            program,
            args,
            env: Vec::new(),
            child: None,
            member_id: 0,
            removed: false,
        }
    }

    /// Starts the process; stdout and stderr are appended to the member's log file.
    pub(crate) fn spawn(&mut self) -> Result<()> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        writeln!(
            log,
            "=== harness: spawning {} {:?}",
            self.program.display(),
            self.args
        )?;
        let stderr = log.try_clone()?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if FOREIGN_ENV_PREFIXES.iter().any(|p| key_text.starts_with(p)) {
                command.env_remove(&key);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", self.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL (kill -9) and reap; a no-op when the process is not running.
    pub(crate) fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // kill() fails only if the process was already reaped; wait() still collects it.
            let _ = child.kill();
            child.wait().context("reaping a killed member")?;
        }
        Ok(())
    }

    pub(crate) fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The exit status if the process died on its own (as opposed to being killed by us).
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().ok().flatten()
    }

    /// Sends `signal` (a name `kill -s` knows: TERM, STOP, CONT, ...) to the running process.
    pub(crate) fn signal(&self, signal: &str) -> Result<()> {
        let child = self.child.as_ref().context("the member is not running")?;
        let status = Command::new("kill")
            .args(["-s", signal, &child.id().to_string()])
            .status()
            .context("running kill")?;
        ensure!(status.success(), "kill -s {signal} {} failed", child.id());
        Ok(())
    }

    /// Waits up to `timeout` for the process to end by itself, reaps it and returns its status.
    pub(crate) async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                self.child = None;
                return Ok(status);
            }
            if self.child.is_none() {
                bail!("the member is not running");
            }
            if Instant::now() >= deadline {
                bail!("{} still runs after {timeout:?}", self.addrs.name);
            }
            sleep(EXIT_POLL).await;
        }
    }

    pub(crate) fn log_tail(&self) -> String {
        match read_tail(&self.log_path) {
            Ok(text) => text,
            Err(e) => format!("<cannot read {}: {e:#}>", self.log_path.display()),
        }
    }

    pub(crate) fn log_contains(&self, needle: &str) -> bool {
        std::fs::read_to_string(&self.log_path)
            .map(|log| log.to_lowercase().contains(&needle.to_lowercase()))
            .unwrap_or(false)
    }
}

impl Drop for MemberProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

fn read_tail(path: &Path) -> Result<String> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(LOG_TAIL_BYTES_MAX);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Ok(if start > 0 {
        format!("[... {start} earlier bytes ...]\n{text}")
    } else {
        text
    })
}
