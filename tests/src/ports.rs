//! Loopback port allocation that tolerates many test processes running side by side.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::ops::Range;
use std::sync::Mutex;

use anyhow::{Result, bail};
use rand::Rng;

/// Candidate ports sit below Linux's default ephemeral range (32768..61000), so outgoing
/// client connections cannot occupy them between our probe and the server's bind.
const CANDIDATE_PORTS: Range<u16> = 12_000..32_000;

/// Give up after this many random probes; reaching it means the range is exhausted.
const PROBES_MAX: usize = 1_000;

/// Ports this process already handed out, so two clusters in one process never collide.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A random loopback port that was free a moment ago. Another process can still grab it
/// before the server binds; `Cluster::start` detects that and retries with fresh ports.
pub fn free_port() -> Result<u16> {
    let mut rng = rand::rng();
    for _ in 0..PROBES_MAX {
        let port = rng.random_range(CANDIDATE_PORTS);
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    bail!("no free loopback port found in {CANDIDATE_PORTS:?} after {PROBES_MAX} probes")
}
