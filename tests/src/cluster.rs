//! A cluster of real server processes on loopback, with fresh data dirs and ports.

use std::process::Output;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use etcd_client::{Client, StatusResponse};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, sleep};

use crate::backend::{Backend, LaunchSpec, MemberAddrs};
use crate::binaries;
use crate::client::{connect, connect_with_timeout};
use crate::member::{FOREIGN_ENV_PREFIXES, MemberProcess};
use crate::ports::free_port;

/// How long a cluster (or a restarted member) may take to answer Status with a leader.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between readiness polls.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Per-call bound on a readiness Status probe.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// Whole-cluster start attempts when a pre-allocated port was taken by someone else.
const START_ATTEMPTS_MAX: usize = 3;
/// Bound on one etcdctl invocation.
const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(30);
/// Log text that identifies a lost port race rather than a server bug.
const PORT_TAKEN_MARKER: &str = "address already in use";

pub struct Cluster {
    backend: Backend,
    // Declared before `root` so processes die before their directory is removed.
    members: Vec<MemberProcess>,
    root: TempDir,
}

impl Cluster {
    /// Starts `size` members and waits until every one reports a leader.
    pub async fn start(backend: Backend, size: usize) -> Result<Cluster> {
        Self::start_with_flags(backend, size, &[]).await
    }

    /// Like [`Cluster::start`], with extra command-line flags that both servers understand
    /// (etcd's flag names, e.g. `--snapshot-count`), given to every member on every start.
    pub async fn start_with_flags(
        backend: Backend,
        size: usize,
        flags: &[&str],
    ) -> Result<Cluster> {
        Self::start_with_env(backend, size, flags, &[]).await
    }

    /// Like [`Cluster::start_with_flags`], with variables set in every member's environment
    /// until [`Cluster::set_env`] changes them (e.g. Baton's test-only switches). With any
    /// set, a Baton cluster is not awaited to deploy all the built-in modules.
    pub async fn start_with_env(
        backend: Backend,
        size: usize,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Cluster> {
        let mut attempt = 1;
        loop {
            let mut cluster = Self::prepare(backend, size, flags)?;
            for member in &mut cluster.members {
                member.env = env.iter().map(|(k, v)| (k.into(), v.into())).collect();
            }
            for member in &mut cluster.members {
                member.spawn()?;
            }
            match cluster.wait_ready().await {
                Ok(()) => {
                    if backend == Backend::Baton && env.is_empty() {
                        cluster.wait_builtins().await;
                    }
                    return Ok(cluster);
                }
                Err(e) if attempt < START_ATTEMPTS_MAX && cluster.lost_port_race() => {
                    eprintln!("baton-e2e: port taken during start (attempt {attempt}): {e:#}");
                    attempt += 1;
                }
                // Dropping `cluster` prints every member's log tail.
                Err(e) => {
                    return Err(e.context(format!("starting a {size}-member {backend} cluster")));
                }
            }
        }
    }

    /// The members' processes, not started yet.
    fn prepare(backend: Backend, size: usize, flags: &[&str]) -> Result<Cluster> {
        let root = tempfile::Builder::new()
            .prefix(&format!("baton-e2e-{backend}-"))
            .tempdir()
            .context("creating the cluster's temp dir")?;
        let program = backend.program()?;
        let all = (1..=size)
            .map(|n| {
                Ok(MemberAddrs {
                    name: format!("n{n}"),
                    client_port: free_port()?,
                    peer_port: free_port()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let token = cluster_token(root.path());
        let mut members = Vec::with_capacity(size);
        for addrs in &all {
            let data_dir = root.path().join(&addrs.name);
            let spec = LaunchSpec {
                member: addrs,
                all: &all,
                data_dir: &data_dir,
                cluster_token: &token,
                existing: false,
            };
            let mut args = backend.args(&spec);
            args.extend(flags.iter().map(Into::into));
            members.push(MemberProcess::new(
                addrs.clone(),
                program.clone(),
                args,
                root.path(),
            ));
        }
        Ok(Cluster {
            backend,
            members,
            root,
        })
    }

    fn lost_port_race(&self) -> bool {
        self.members
            .iter()
            .any(|m| m.log_contains(PORT_TAKEN_MARKER))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Client URLs of all members, running or not (but not removed), in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| !m.removed)
            .map(|m| m.addrs.client_url())
            .collect()
    }

    /// Fresh addresses and the next free name for a member to add with `member add`.
    pub fn next_member_addrs(&self) -> Result<MemberAddrs> {
        Ok(MemberAddrs {
            name: format!("n{}", self.members.len() + 1),
            client_port: free_port()?,
            peer_port: free_port()?,
        })
    }

    /// Starts a member already added with `member add`, the way both servers join a running
    /// cluster: `--initial-cluster-state existing` and an `--initial-cluster` of every current
    /// member plus itself. Returns its index; does not wait (see `wait_ready`).
    pub fn start_added(&mut self, addrs: MemberAddrs, flags: &[&str]) -> Result<usize> {
        let program = self.backend.program()?;
        let mut all: Vec<MemberAddrs> = self
            .members
            .iter()
            .filter(|m| !m.removed)
            .map(|m| m.addrs.clone())
            .collect();
        all.push(addrs.clone());
        let token = cluster_token(self.root.path());
        let data_dir = self.root.path().join(&addrs.name);
        let spec = LaunchSpec {
            member: &addrs,
            all: &all,
            data_dir: &data_dir,
            cluster_token: &token,
            existing: true,
        };
        let mut args = self.backend.args(&spec);
        args.extend(flags.iter().map(Into::into));
        let mut member = MemberProcess::new(addrs, program, args, self.root.path());
        member.spawn()?;
        self.members.push(member);
        Ok(self.members.len() - 1)
    }

    /// Records that `member remove` took this member out: its process is stopped if it has not
    /// stopped by itself (etcd's does), and it is left out of endpoints and of the
    /// `--initial-cluster` of members started later.
    pub fn forget(&mut self, member: usize) -> Result<()> {
        self.members[member].removed = true;
        self.members[member].kill()
    }

    /// Whether the member's process ended on its own (as etcd's does once removed).
    pub fn has_exited(&mut self, member: usize) -> bool {
        self.members[member].exited().is_some()
    }

    pub fn endpoint(&self, member: usize) -> String {
        self.members[member].addrs.client_url()
    }

    /// Client URLs of the members whose process is running.
    pub fn running_endpoints(&self) -> Vec<String> {
        self.running().map(|i| self.endpoint(i)).collect()
    }

    pub fn name(&self, member: usize) -> &str {
        &self.members[member].addrs.name
    }

    pub fn peer_url(&self, member: usize) -> String {
        self.members[member].addrs.peer_url()
    }

    pub fn data_root(&self) -> &std::path::Path {
        self.root.path()
    }

    /// The member's raft id (as in response headers), learned when the cluster became ready.
    pub fn member_id(&self, member: usize) -> u64 {
        self.members[member].member_id
    }

    pub fn is_running(&self, member: usize) -> bool {
        self.members[member].is_running()
    }

    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|&i| self.members[i].is_running())
    }

    /// A client balanced over every member's endpoint.
    pub async fn client(&self) -> Result<Client> {
        connect(&self.endpoints()).await
    }

    /// A client talking to one member only.
    pub async fn member_client(&self, member: usize) -> Result<Client> {
        connect(&[self.endpoint(member)]).await
    }

    /// SIGKILL (kill -9) one member.
    pub fn kill(&mut self, member: usize) -> Result<()> {
        self.members[member].kill()
    }

    /// Sends `signal` (TERM, STOP, CONT, ...) to one running member.
    pub fn signal(&self, member: usize, signal: &str) -> Result<()> {
        self.members[member].signal(signal)
    }

    /// Waits up to `timeout` for a member's process to end by itself; returns its exit status.
    /// The member then counts as not running (it may be restarted).
    pub async fn wait_exit(
        &mut self,
        member: usize,
        timeout: Duration,
    ) -> Result<std::process::ExitStatus> {
        self.members[member].wait_exit(timeout).await
    }

    /// The member's data dir.
    pub fn data_dir(&self, member: usize) -> std::path::PathBuf {
        self.root.path().join(self.name(member))
    }

    /// Whether the member's log contains `needle` (case-insensitive).
    pub fn log_contains(&self, member: usize, needle: &str) -> bool {
        self.members[member].log_contains(needle)
    }

    /// Replaces the variables [`Cluster::start_with_env`] set for `member`, from its next start.
    pub fn set_env(&mut self, member: usize, env: &[(&str, &str)]) {
        self.members[member].env = env.iter().map(|(k, v)| (k.into(), v.into())).collect();
    }

    /// Starts a killed member again with the same arguments and data dir. Does not wait;
    /// call `wait_ready` (a lone member cannot become ready without a quorum).
    pub fn restart(&mut self, member: usize) -> Result<()> {
        if self.members[member].removed {
            bail!("member {member} was removed from the cluster");
        }
        if self.members[member].is_running() {
            bail!("member {member} is still running");
        }
        self.members[member].spawn()
    }

    /// Waits (bounded) until a new Baton cluster has deployed its built-in modules: they arrive
    /// through the log just after bootstrap and each member compiles them as it applies them,
    /// so a test that starts sooner sees its first requests queue behind that work. Gives up
    /// quietly: a cluster started with flags that refuse the deploys (a tiny quota) still runs.
    async fn wait_builtins(&self) {
        use baton_proto::baton::v1::ListRequest;
        use baton_proto::baton::v1::modules_client::ModulesClient;
        use baton_wasm::builtin::BUILTIN_MODULES;
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            let listed = async {
                let channel = tonic::transport::Channel::from_shared(self.endpoint(0))?
                    .connect()
                    .await?;
                let reply = ModulesClient::new(channel).list(ListRequest {}).await?;
                anyhow::Ok(reply.into_inner().modules)
            };
            if let Ok(Ok(modules)) = tokio::time::timeout(STATUS_TIMEOUT, listed).await
                && BUILTIN_MODULES
                    .iter()
                    .all(|(name, _)| modules.iter().any(|m| m.name == *name))
            {
                return;
            }
            sleep(POLL_INTERVAL).await;
        }
        eprintln!("baton-e2e: built-in modules not all deployed after {READY_TIMEOUT:?}");
    }

    /// Waits until every running member answers Status and reports a leader.
    pub async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_not_crashed()?;
            let mut pending = Vec::new();
            for member in self.running().collect::<Vec<_>>() {
                match self.status(member).await {
                    Ok(status) if status.leader() != 0 => {
                        let id = status.header().map(|h| h.member_id()).unwrap_or(0);
                        self.members[member].member_id = id;
                    }
                    Ok(_) => pending.push(format!("{}: no leader yet", self.name(member))),
                    Err(e) => pending.push(format!("{}: {e:#}", self.name(member))),
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("not ready after {READY_TIMEOUT:?}: {}", pending.join("; "));
            }
            sleep(POLL_INTERVAL).await;
        }
    }

    /// Index of the member that running members agree is leader; polls until a running
    /// member reports a running leader (e.g. after the old leader was killed).
    pub async fn leader(&self) -> Result<usize> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no member answered");
        while Instant::now() < deadline {
            for member in self.running() {
                match self.status(member).await {
                    Ok(status) => {
                        let leader = self
                            .running()
                            .find(|&i| self.member_id(i) == status.leader());
                        if let Some(leader) = leader {
                            return Ok(leader);
                        }
                        last = format!(
                            "{} reports leader {:#x}",
                            self.name(member),
                            status.leader()
                        );
                    }
                    Err(e) => last = format!("{}: {e:#}", self.name(member)),
                }
            }
            sleep(POLL_INTERVAL).await;
        }
        bail!("no running leader after {READY_TIMEOUT:?}: {last}")
    }

    /// Status of one member with a short timeout.
    pub async fn status(&self, member: usize) -> Result<StatusResponse> {
        let client = connect_with_timeout(&[self.endpoint(member)], STATUS_TIMEOUT).await?;
        let status = client.maintenance_client().status().await?;
        Ok(status)
    }

    fn check_not_crashed(&mut self) -> Result<()> {
        for member in &mut self.members {
            if let Some(status) = member.exited() {
                let name = member.addrs.name.clone();
                return Err(anyhow!("member {name} exited on its own: {status}"));
            }
        }
        Ok(())
    }

    /// Runs Debian's etcdctl (API v3) against every running member.
    pub async fn etcdctl(&self, args: &[&str]) -> Result<Output> {
        self.etcdctl_at(&self.running_endpoints(), args, None).await
    }

    /// Runs etcdctl against the given endpoints, optionally feeding `stdin` (e.g. `txn -i`).
    pub async fn etcdctl_at(
        &self,
        endpoints: &[String],
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<Output> {
        let mut command = tokio::process::Command::new(binaries::etcdctl_bin()?);
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if FOREIGN_ENV_PREFIXES.iter().any(|p| key_text.starts_with(p)) {
                command.env_remove(&key);
            }
        }
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().context("spawning etcdctl")?;
        let mut pipe = child.stdin.take().context("etcdctl stdin")?;
        if let Some(text) = stdin {
            pipe.write_all(text.as_bytes()).await?;
        }
        drop(pipe);
        let output = tokio::time::timeout(ETCDCTL_TIMEOUT, child.wait_with_output())
            .await
            .with_context(|| {
                format!("etcdctl {args:?} did not finish within {ETCDCTL_TIMEOUT:?}")
            })??;
        Ok(output)
    }

    /// The end of every member's log, for failure reports.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for member in &self.members {
            let name = &member.addrs.name;
            out.push_str(&format!(
                "----- {} member {name} log (tail) -----\n",
                self.backend
            ));
            out.push_str(&member.log_tail());
            out.push('\n');
        }
        out
    }
}

/// Unique per cluster (the temp dir's name) so stray etcd peers of other tests never join.
fn cluster_token(root: &std::path::Path) -> String {
    root.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            let _ = member.kill();
        }
        // The test runner (cargo test / nextest) captures this and shows it only when the test
        // fails, which is exactly when the server logs are needed.
        eprintln!(
            "baton-e2e: {} cluster in {}\n{}",
            self.backend,
            self.root.path().display(),
            self.log_tails()
        );
    }
}
