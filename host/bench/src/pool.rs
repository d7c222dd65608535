//! The gRPC connections a run shares out to its requesters, and the choice of members.

use std::time::Duration;

use anyhow::{Context, bail};
use etcd_client::{Client, ConnectOptions};
use tokio::time::timeout;

use super::args::Target;

/// How long to wait for a member to accept a connection and answer the warm-up request.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read once per connection before the clock starts, so handshakes are not measured.
const WARMUP_KEY: &[u8] = b"baton-bench-warmup";

/// `conns` clients, each with its own HTTP/2 connection to one member.
#[derive(Clone)]
pub(crate) struct Pool {
    pub(crate) conns: Vec<Client>,
    /// The members actually receiving requests.
    pub(crate) endpoints: Vec<String>,
    pub(crate) clients: usize,
    pub(crate) request_timeout: Duration,
}

impl Pool {
    /// Connects `conns` clients; connection j talks only to `endpoints[j % len]`, so the load
    /// spreads evenly over members instead of following the client library's balancer.
    pub(crate) async fn connect(
        endpoints: Vec<String>,
        conns: usize,
        clients: usize,
        request_timeout: Duration,
    ) -> anyhow::Result<Self> {
        if endpoints.is_empty() {
            bail!("no endpoints given");
        }
        let mut pool = Vec::with_capacity(conns);
        for j in 0..conns {
            let endpoint = &endpoints[j % endpoints.len()];
            let mut client = connect_one(endpoint, request_timeout).await?;
            timeout(CONNECT_TIMEOUT, client.get(WARMUP_KEY, None))
                .await
                .with_context(|| format!("{endpoint}: no answer within {CONNECT_TIMEOUT:?}"))?
                .with_context(|| format!("{endpoint}: warm-up read failed"))?;
            pool.push(client);
        }
        let used = endpoints.len().min(conns);
        Ok(Self {
            conns: pool,
            endpoints: endpoints[..used].to_vec(),
            clients,
            request_timeout,
        })
    }

    /// The connection requester `index` uses.
    pub(crate) fn conn_for(&self, index: usize) -> Client {
        self.conns[index % self.conns.len()].clone()
    }
}

/// A connection for long-lived streams (watches, lease keep-alives): no per-request timeout,
/// which would otherwise travel as a gRPC deadline and end the stream.
pub(crate) async fn connect_streaming(endpoint: &str) -> anyhow::Result<Client> {
    let options = ConnectOptions::new().with_connect_timeout(CONNECT_TIMEOUT);
    let connecting = Client::connect([endpoint], Some(options));
    timeout(CONNECT_TIMEOUT, connecting)
        .await
        .with_context(|| format!("{endpoint}: connect timed out after {CONNECT_TIMEOUT:?}"))?
        .with_context(|| format!("{endpoint}: connect failed"))
}

async fn connect_one(endpoint: &str, request_timeout: Duration) -> anyhow::Result<Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(request_timeout);
    let connecting = Client::connect([endpoint], Some(options));
    timeout(CONNECT_TIMEOUT, connecting)
        .await
        .with_context(|| format!("{endpoint}: connect timed out after {CONNECT_TIMEOUT:?}"))?
        .with_context(|| format!("{endpoint}: connect failed"))
}

/// The endpoints to send to: all of them, or the one whose member reports being the leader.
pub(crate) async fn select_endpoints(
    endpoints: &[String],
    target: Target,
) -> anyhow::Result<Vec<String>> {
    if endpoints.is_empty() {
        bail!("no endpoints given");
    }
    match target {
        Target::All => Ok(endpoints.to_vec()),
        Target::Leader => Ok(vec![find_leader(endpoints).await?]),
    }
}

async fn find_leader(endpoints: &[String]) -> anyhow::Result<String> {
    let mut failures = Vec::new();
    for endpoint in endpoints {
        match member_status(endpoint).await {
            Ok((member, leader)) if member == leader && leader != 0 => {
                tracing::info!(%endpoint, member, "found leader");
                return Ok(endpoint.clone());
            }
            Ok(_) => {}
            Err(e) => failures.push(format!("{endpoint}: {e:#}")),
        }
    }
    bail!(
        "no endpoint reports itself as leader; {}",
        failures.join("; ")
    )
}

/// The (own member id, leader id) an endpoint reports in its Status answer.
async fn member_status(endpoint: &str) -> anyhow::Result<(u64, u64)> {
    let client = connect_one(endpoint, CONNECT_TIMEOUT).await?;
    let status = timeout(CONNECT_TIMEOUT, client.maintenance_client().status())
        .await
        .context("status timed out")??;
    let member = status.header().map(|h| h.member_id()).unwrap_or(0);
    Ok((member, status.leader()))
}
