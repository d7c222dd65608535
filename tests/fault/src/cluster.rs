//! Members in their namespaces: command lines for Baton and etcd 3.4, start, `kill -9` and
//! restart on the same data dir, SIGSTOP/SIGCONT, clients, and finding the leader. Members run
//! under `ip netns exec`, which execs in place, so the child's pid is the server's own.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use etcd_client::{Client, ConnectOptions};
use rustix::process::{Pid, Signal, kill_process};
use tokio::time::{Instant, sleep};

use crate::netns::Network;

pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;
/// Raft election timeout given to every member; fault durations are multiples of it.
pub const ELECTION_TIMEOUT_MS: u64 = 1000;
pub const HEARTBEAT_INTERVAL_MS: u64 = 100;
/// Connecting to a member that is down or cut off fails after this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Every client request gives up after this; its outcome is then unknown.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// A started cluster must elect a leader and answer within this (debug builds on a loaded
/// 2-core machine are slow to start).
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `leader_views` waits for each member.
const VIEW_TIMEOUT: Duration = Duration::from_millis(800);
const POLL_INTERVAL: Duration = Duration::from_millis(200);
const LOG_TAIL_BYTES_MAX: usize = 6 * 1024;

/// Which server the members run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Baton,
    Etcd,
}

struct Member {
    name: String,
    ns: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// A running cluster, one member per member namespace of `net`.
pub struct Cluster {
    backend: Backend,
    program: PathBuf,
    token: String,
    initial_cluster: String,
    members: Vec<Member>,
    /// Raft ids by member index, learnt once the cluster is ready (stable across restarts).
    pub ids: Vec<u64>,
}

impl Cluster {
    /// Starts every member; returns once each answers and a leader exists.
    pub async fn start(
        backend: Backend,
        program: PathBuf,
        net: &Network,
        dir: &Path,
    ) -> Result<Self> {
        let members: Vec<Member> = net
            .member_ns
            .iter()
            .zip(&net.member_ips)
            .enumerate()
            .map(|(i, (ns, addr))| Member {
                name: format!("m{i}"),
                ns: ns.clone(),
                client_url: format!("http://{addr}:{CLIENT_PORT}"),
                peer_url: format!("http://{addr}:{PEER_PORT}"),
                data_dir: dir.join(format!("m{i}.data")),
                log_path: dir.join(format!("m{i}.log")),
                child: None,
                paused: false,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            backend,
            program,
            token: format!("bfault-{}", std::process::id()),
            initial_cluster,
            members,
            ids: Vec::new(),
        };
        for i in 0..cluster.members.len() {
            cluster.spawn(i)?;
        }
        cluster.ids = cluster.await_ready(READY_TIMEOUT).await?;
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn endpoint(&self, i: usize) -> &str {
        &self.members[i].client_url
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    fn args(&self, m: &Member) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        if self.backend == Backend::Baton {
            args.push("serve".into());
        }
        let flags = [
            ("--name", m.name.clone()),
            ("--data-dir", m.data_dir.display().to_string()),
            ("--listen-client-urls", m.client_url.clone()),
            ("--advertise-client-urls", m.client_url.clone()),
            ("--listen-peer-urls", m.peer_url.clone()),
            ("--initial-advertise-peer-urls", m.peer_url.clone()),
            ("--initial-cluster", self.initial_cluster.clone()),
            ("--initial-cluster-token", self.token.clone()),
            ("--initial-cluster-state", "new".into()),
            ("--election-timeout", ELECTION_TIMEOUT_MS.to_string()),
            ("--heartbeat-interval", HEARTBEAT_INTERVAL_MS.to_string()),
        ];
        for (flag, value) in flags {
            args.push(flag.into());
            args.push(value);
        }
        args
    }

    /// Starts member `i` (first start or restart: both servers ignore the bootstrap flags once
    /// the data dir holds state).
    pub fn spawn(&mut self, i: usize) -> Result<()> {
        let args = self.args(&self.members[i]);
        let m = &mut self.members[i];
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log_path)
            .with_context(|| format!("opening {}", m.log_path.display()))?;
        writeln!(
            log,
            "=== harness: starting {} {args:?}",
            self.program.display()
        )?;
        let stderr = log.try_clone()?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &m.ns])
            .arg(&self.program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(&key);
            }
        }
        m.child = Some(
            command
                .spawn()
                .context("spawning a member under `ip netns exec`")?,
        );
        m.paused = false;
        Ok(())
    }

    fn signal(&self, i: usize, signal: Signal) -> Result<()> {
        let Some(child) = &self.members[i].child else {
            bail!("member {i} is not running");
        };
        let pid = Pid::from_raw(i32::try_from(child.id())?).context("pid 0")?;
        kill_process(pid, signal).with_context(|| format!("signalling member {i}"))
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let m = &mut self.members[i];
        if let Some(mut child) = m.child.take() {
            let _ = child.kill();
            child.wait().context("reaping a killed member")?;
        }
        m.paused = false;
        Ok(())
    }

    pub fn pause(&mut self, i: usize) -> Result<()> {
        self.signal(i, Signal::STOP)?;
        self.members[i].paused = true;
        Ok(())
    }

    pub fn resume(&mut self, i: usize) -> Result<()> {
        if self.members[i].paused {
            self.signal(i, Signal::CONT)?;
            self.members[i].paused = false;
        }
        Ok(())
    }

    /// Resumes paused members and restarts dead ones.
    pub fn revive_all(&mut self) -> Result<()> {
        for i in 0..self.members.len() {
            self.resume(i)?;
            if !self.is_running(i) {
                self.spawn(i)?;
            }
        }
        Ok(())
    }

    /// Whether member `i`'s process is alive (a member that died on its own is reaped here).
    pub fn is_running(&mut self, i: usize) -> bool {
        let m = &mut self.members[i];
        match m.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                tracing::warn!("member {i} exited on its own: {status}");
                m.child = None;
                false
            }
            _ => false,
        }
    }

    /// Members that exited without being killed: a crash is a failure of the run.
    pub fn crashed(&mut self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some() && !self.is_running(i))
            .collect()
    }

    /// Index of the member the others follow, as member `ask` reports it.
    pub async fn leader_seen_by(&self, ask: usize) -> Result<usize> {
        let mut client = connect(self.endpoint(ask)).await?;
        let status = tokio::time::timeout(REQUEST_TIMEOUT, client.status()).await??;
        self.index_of(status.leader())
            .with_context(|| format!("member {ask} knows no leader"))
    }

    /// The leader as any reachable member reports it.
    pub async fn leader(&self) -> Result<usize> {
        let mut last = None;
        for i in 0..self.len() {
            if self.members[i].paused || self.members[i].child.is_none() {
                continue;
            }
            match self.leader_seen_by(i).await {
                Ok(leader) => return Ok(leader),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no member is running")))
    }

    /// Which member each member takes for the leader right now (`None`: no answer within
    /// `VIEW_TIMEOUT` or no leader known), asked concurrently.
    pub async fn leader_views(&self) -> Vec<Option<usize>> {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, endpoint) in self.endpoints().into_iter().enumerate() {
            tasks.spawn(async move {
                let ask = async {
                    let mut client = connect(&endpoint).await?;
                    anyhow::Ok(client.status().await?.leader())
                };
                (
                    i,
                    tokio::time::timeout(VIEW_TIMEOUT, ask)
                        .await
                        .ok()
                        .and_then(Result::ok),
                )
            });
        }
        let mut views = vec![None; self.len()];
        while let Some(Ok((i, leader))) = tasks.join_next().await {
            views[i] = leader.and_then(|id| self.index_of(id));
        }
        views
    }

    fn index_of(&self, id: u64) -> Option<usize> {
        self.ids.iter().position(|&known| known == id && id != 0)
    }

    /// Waits until every member answers a status request and agrees on one leader; returns the
    /// members' Raft ids.
    pub async fn await_ready(&mut self, limit: Duration) -> Result<Vec<u64>> {
        let deadline = Instant::now() + limit;
        loop {
            let outcome = self.probe().await;
            match outcome {
                Ok(ids) => return Ok(ids),
                Err(e) if Instant::now() >= deadline => {
                    let logs = self.log_tails();
                    return Err(e.context(format!("cluster not ready within {limit:?}:\n{logs}")));
                }
                Err(_) => {}
            }
            let crashed = self.crashed();
            if !crashed.is_empty() {
                bail!("members {crashed:?} exited:\n{}", self.log_tails());
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    async fn probe(&self) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        let mut leaders = Vec::new();
        for i in 0..self.len() {
            let mut client = connect(self.endpoint(i)).await?;
            let status = tokio::time::timeout(REQUEST_TIMEOUT, client.status()).await??;
            let id = status.header().map(|h| h.member_id()).unwrap_or(0);
            ids.push(id);
            leaders.push(status.leader());
        }
        let leader = leaders[0];
        if leader == 0 || leaders.iter().any(|&l| l != leader) || !ids.contains(&leader) {
            bail!("no agreed leader yet: {leaders:?} among {ids:?}");
        }
        Ok(ids)
    }

    /// The end of every member's log, for failure reports.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(&m.log_path).unwrap_or_default();
            let start = text.len().saturating_sub(LOG_TAIL_BYTES_MAX);
            let start = (start..text.len())
                .find(|&s| text.is_char_boundary(s))
                .unwrap_or(0);
            out.push_str(&format!(
                "----- {} ({})\n{}\n",
                m.name,
                m.log_path.display(),
                &text[start..]
            ));
        }
        out
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            let _ = self.resume(i);
            let _ = self.kill(i);
        }
    }
}

/// A client for one endpoint with the harness's timeouts.
pub async fn connect(endpoint: &str) -> Result<Client> {
    connect_with_timeout(endpoint, REQUEST_TIMEOUT).await
}

/// A client whose requests give up after `timeout` (longer than usual for calls that wait,
/// such as a Lock queued behind another holder).
pub async fn connect_with_timeout(endpoint: &str, timeout: Duration) -> Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(timeout);
    let client = tokio::time::timeout(
        CONNECT_TIMEOUT + REQUEST_TIMEOUT,
        Client::connect([endpoint], Some(options)),
    )
    .await
    .with_context(|| format!("connecting to {endpoint} timed out"))??;
    Ok(client)
}
