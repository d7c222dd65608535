//! The run's network: one namespace per member, one for the clients, and one holding the bridge
//! (the "switch") that joins them, all on a private /24. The root namespace gets no interfaces,
//! addresses or routes, and traffic never leaves the namespaces this run created. Partitions are
//! blackhole routes inside the members' namespaces. Everything is torn down on drop; namespaces
//! left by runs that died are removed at the start of the next one.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Every namespace of a run is named `<NS_PREFIX><pid>-<role>`.
pub const NS_PREFIX: &str = "bfault-";
/// The process name a live run has; a namespace whose pid runs something else is stale.
const RUN_PROCESS_NAME: &str = "baton-fault";
/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/var/run/netns";
/// The private subnet inside the namespaces: 10.88.0.0/24.
const SUBNET_OCTETS: [u8; 3] = [10, 88, 0];
const SUBNET_PREFIX_LEN: u8 = 24;
const CLIENT_HOST: u8 = 2;
const MEMBER_HOST_FIRST: u8 = 11;

/// Runs `ip` with `args`; fails with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2 is required)")?;
    if !output.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn ip_output(args: &[&str]) -> Result<String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip`")?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn host(last: u8) -> Ipv4Addr {
    let [a, b, c] = SUBNET_OCTETS;
    Ipv4Addr::new(a, b, c, last)
}

/// The namespaces and addresses of one run.
pub struct Network {
    switch: String,
    pub client_ns: String,
    pub member_ns: Vec<String>,
    pub member_ips: Vec<Ipv4Addr>,
    /// Created so far, torn down in reverse on drop.
    created: Vec<String>,
    /// Directed cuts (from member, to member) currently installed.
    cuts: BTreeSet<(usize, usize)>,
}

impl Network {
    /// Creates the switch, the client namespace and `members` member namespaces.
    pub fn create(members: usize) -> Result<Self> {
        let pid = std::process::id();
        let name = |role: &str| format!("{NS_PREFIX}{pid}-{role}");
        let mut net = Network {
            switch: name("sw"),
            client_ns: name("cl"),
            member_ns: (0..members).map(|i| name(&format!("m{i}"))).collect(),
            member_ips: (0..members)
                .map(|i| host(MEMBER_HOST_FIRST + u8::try_from(i).unwrap_or(0)))
                .collect(),
            created: Vec::new(),
            cuts: BTreeSet::new(),
        };
        net.add_ns(&net.switch.clone()).context(
            "cannot create network namespaces: the fault harness needs root and `ip netns`",
        )?;
        ip(&["-n", &net.switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &net.switch, "link", "set", "br0", "up"])?;
        let client = net.client_ns.clone();
        net.attach(&client, "pc", host(CLIENT_HOST))?;
        for i in 0..members {
            let (ns, addr) = (net.member_ns[i].clone(), net.member_ips[i]);
            net.attach(&ns, &format!("p{i}"), addr)?;
        }
        Ok(net)
    }

    fn add_ns(&mut self, ns: &str) -> Result<()> {
        ip(&["netns", "add", ns])?;
        self.created.push(ns.to_owned());
        ip(&["-n", ns, "link", "set", "lo", "up"])
    }

    /// A namespace with `eth0` at `addr`, its veth peer `port` plugged into the switch.
    fn attach(&mut self, ns: &str, port: &str, addr: Ipv4Addr) -> Result<()> {
        self.add_ns(ns)?;
        let sw = self.switch.clone();
        ip(&[
            "-n", &sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        ip(&["-n", &sw, "link", "set", port, "master", "br0", "up"])?;
        let cidr = format!("{addr}/{SUBNET_PREFIX_LEN}");
        ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])
    }

    /// Moves the calling thread into the client namespace. Threads it spawns afterwards (a tokio
    /// runtime built after this call) inherit it, so every client connection starts there.
    pub fn enter_client_ns(&self) -> Result<()> {
        let path = format!("{NETNS_DIR}/{}", self.client_ns);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .with_context(|| format!("setns into {path}"))
    }

    /// Drops packets from member `from` to member `to` (one direction).
    fn cut(&mut self, from: usize, to: usize) -> Result<()> {
        if self.cuts.insert((from, to)) {
            let dest = format!("{}/32", self.member_ips[to]);
            ip(&[
                "-n",
                &self.member_ns[from],
                "route",
                "add",
                "blackhole",
                &dest,
            ])?;
        }
        Ok(())
    }

    /// Separates the members into the given groups: no traffic between members of different
    /// groups, in either direction. Members in no group keep all their links.
    pub fn partition(&mut self, groups: &[Vec<usize>]) -> Result<()> {
        for (g, group) in groups.iter().enumerate() {
            for other in groups.iter().skip(g + 1) {
                for &a in group {
                    for &b in other {
                        self.cut(a, b)?;
                        self.cut(b, a)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Cuts the one link between members `a` and `b`, both directions.
    pub fn cut_link(&mut self, a: usize, b: usize) -> Result<()> {
        self.cut(a, b)?;
        self.cut(b, a)
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> Result<()> {
        for (from, to) in std::mem::take(&mut self.cuts) {
            let dest = format!("{}/32", self.member_ips[to]);
            ip(&[
                "-n",
                &self.member_ns[from],
                "route",
                "del",
                "blackhole",
                &dest,
            ])?;
        }
        Ok(())
    }

    /// Kills whatever still runs in the run's namespaces and deletes them.
    pub fn teardown(&mut self) {
        while let Some(ns) = self.created.pop() {
            remove_namespace(&ns);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Kills what runs in `ns` (except this process, whose main thread lives in the client
/// namespace) and deletes it.
fn remove_namespace(ns: &str) {
    let me = rustix::process::getpid();
    for pid in ip_output(&["netns", "pids", ns])
        .unwrap_or_default()
        .split_whitespace()
    {
        let pid = pid.parse().ok().and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid.filter(|&pid| pid != me) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    if let Err(e) = ip(&["netns", "del", ns]) {
        tracing::warn!("{e:#}");
    }
}

/// Whether `pid` is a live (not zombie) `baton-fault` process.
fn run_alive(pid: &str) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    // The state follows the parenthesized command name in /proc/<pid>/stat.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    comm.trim() == RUN_PROCESS_NAME && state.is_some_and(|s| s != 'Z')
}

/// Deletes the namespaces of earlier runs whose process is gone (killed before it could clean up).
pub fn remove_stale() -> Result<usize> {
    let listing = ip_output(&["netns", "list"])?;
    let mut removed = 0;
    for ns in listing.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = ns
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !run_alive(pid) {
            tracing::info!("removing stale namespace {ns}");
            remove_namespace(ns);
            removed += 1;
        }
    }
    Ok(removed)
}
