//! A session: one lease, granted for a CLI command and kept alive in the background until the
//! command ends, as etcd's `concurrency.Session` does for etcdctl. Everything the command holds
//! (a lock key, a candidacy) is attached to it, so a `baton` that dies frees it within the TTL.
//!
//! The lease counts as lost when the cluster answers a keep-alive with TTL 0 (it expired or was
//! revoked) or when no keep-alive has been answered for a whole TTL (the cluster may have let
//! it expire by then). Either way `lost()` resolves, with the reason, and stays resolved.

use std::time::Duration;

use anyhow::Result;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout, timeout_at};
use tracing::warn;

use baton_limits::{
    CLI_CLEANUP_TIMEOUT_MS, CLI_KEEPALIVE_RETRY_MS, CLI_KEEPALIVES_PER_TTL, CLI_UNAVAILABLE_WAIT_MS,
};

pub(crate) struct Session {
    client: etcd_client::Client,
    id: i64,
    lost: watch::Receiver<Option<String>>,
    keeper: JoinHandle<()>,
}

impl Session {
    /// Grants a lease of `ttl_s` seconds and starts keeping it alive.
    pub(crate) async fn grant(client: &etcd_client::Client, ttl_s: i64) -> Result<Self> {
        let mut client = client.clone();
        let give_up = Instant::now() + Duration::from_millis(CLI_UNAVAILABLE_WAIT_MS);
        let (granted_at, grant) = loop {
            let granted_at = Instant::now();
            match client.lease_grant(ttl_s, None).await {
                Ok(grant) => break (granted_at, grant),
                // No leader for now (an election): a lease granted but unanswered expires.
                Err(etcd_client::Error::GRpcStatus(s))
                    if s.code() == tonic::Code::Unavailable && granted_at < give_up =>
                {
                    sleep(Duration::from_millis(CLI_KEEPALIVE_RETRY_MS)).await;
                }
                Err(e) => return Err(anyhow::Error::new(e).context("granting the session lease")),
            }
        };
        let id = grant.id();
        let ttl = Duration::from_secs(u64::try_from(grant.ttl()).unwrap_or(0));
        let (tell, lost) = watch::channel(None);
        let keeper = tokio::spawn(keep_alive(client.clone(), id, granted_at + ttl, ttl, tell));
        Ok(Self {
            client,
            id,
            lost,
            keeper,
        })
    }

    pub(crate) fn id(&self) -> i64 {
        self.id
    }

    /// Resolves once the lease is lost, with the reason.
    pub(crate) async fn lost(&self) -> String {
        let mut lost = self.lost.clone();
        match lost.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // The keeper only ends after saying why; a panic in it loses the lease too.
            Err(_) => "the keep-alive task ended".to_owned(),
        }
    }

    /// Stops renewing and revokes the lease, deleting whatever is attached to it; a failure
    /// only means the lease runs out its TTL instead.
    pub(crate) async fn close(mut self) {
        self.keeper.abort();
        let limit = Duration::from_millis(CLI_CLEANUP_TIMEOUT_MS);
        match timeout(limit, self.client.lease_revoke(self.id)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(lease = self.id, "revoking the session lease: {e}"),
            Err(_) => warn!(lease = self.id, "revoking the session lease timed out"),
        }
    }
}

/// Why a keep-alive stream stopped.
enum Stopped {
    /// The lease is gone or can no longer be trusted.
    Lost(String),
    /// The stream broke; another may still renew in time.
    Broken(String),
}

/// Renews the lease every TTL / `CLI_KEEPALIVES_PER_TTL` until it is lost, then says why.
async fn keep_alive(
    mut client: etcd_client::Client,
    id: i64,
    mut expires: Instant,
    ttl: Duration,
    tell: watch::Sender<Option<String>>,
) {
    let period = ttl / CLI_KEEPALIVES_PER_TTL;
    let reason = loop {
        match renew(&mut client, id, &mut expires, period).await {
            Stopped::Lost(reason) => break reason,
            Stopped::Broken(why) => {
                warn!(lease = id, "keep-alive stream broke, reopening: {why}");
                let retry = Instant::now() + Duration::from_millis(CLI_KEEPALIVE_RETRY_MS);
                if retry >= expires {
                    break format!("no keep-alive answered within the TTL ({why})");
                }
                sleep(retry - Instant::now()).await;
            }
        }
    };
    tell.send_replace(Some(format!("lease {id:x} lost: {reason}")));
}

/// One keep-alive stream: renews until the lease is lost or the stream breaks; every wait ends
/// when the lease would have expired.
async fn renew(
    client: &mut etcd_client::Client,
    id: i64,
    expires: &mut Instant,
    period: Duration,
) -> Stopped {
    let past_ttl = || Stopped::Lost("no keep-alive answered within the TTL".to_owned());
    let (mut keeper, mut stream) = match timeout_at(*expires, client.lease_keep_alive(id)).await {
        Err(_) => return past_ttl(),
        Ok(Err(e)) => return Stopped::Broken(e.to_string()),
        Ok(Ok(pair)) => pair,
    };
    loop {
        let sent = Instant::now();
        match timeout_at(*expires, keeper.keep_alive()).await {
            Err(_) => return past_ttl(),
            Ok(Err(e)) => return Stopped::Broken(e.to_string()),
            Ok(Ok(())) => {}
        }
        match timeout_at(*expires, stream.message()).await {
            Err(_) => return past_ttl(),
            Ok(Err(e)) => return Stopped::Broken(e.to_string()),
            Ok(Ok(None)) => return Stopped::Broken("the stream ended".to_owned()),
            Ok(Ok(Some(reply))) if reply.ttl() <= 0 => {
                return Stopped::Lost("it expired or was revoked".to_owned());
            }
            Ok(Ok(Some(reply))) => {
                // Counted from the request, not the answer: the server renewed no later.
                *expires = sent + Duration::from_secs(u64::try_from(reply.ttl()).unwrap_or(0));
            }
        }
        sleep(period).await;
    }
}
