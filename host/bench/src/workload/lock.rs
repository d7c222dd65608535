//! `lock`: acquire-and-release cycles through the v3lock Lock service on a few names.
//!
//! Each requester holds one lease for the whole run (granted and kept alive outside the
//! measurement); one operation is a Lock on a name followed by the Unlock of the returned key.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use etcd_client::{Client, LeaseClient, LockClient, LockOptions};
use tokio::task::AbortHandle;

use super::Workload;
use crate::pool::{Pool, connect_streaming};

/// Lock names are `bench/lock/<n>`, apart from real data.
const LOCK_NAME_PREFIX: &str = "bench/lock/";
/// Lease TTL of each requester; kept alive every third of it, so a crashed run's lock keys
/// disappear soon after.
pub(crate) const LEASE_TTL_S: i64 = 30;
pub(crate) const NAMES_MAX: u64 = 1_000_000;

pub(crate) struct LockWorkload {
    names: u64,
    /// Lease id of requester i, granted in `prepare`.
    leases: Mutex<Vec<i64>>,
    keep_alives: KeepAlives,
}

pub(crate) struct LockRequester {
    lock: LockClient,
    lease: Option<i64>,
    /// A key this requester still holds because an operation was cut off (timeout) between
    /// Lock and Unlock; released before the next Lock so the name does not stay taken.
    held: Option<Vec<u8>>,
}

impl LockWorkload {
    pub(crate) fn new(names: u64) -> Self {
        Self {
            names,
            leases: Mutex::new(Vec::new()),
            keep_alives: KeepAlives::default(),
        }
    }

    fn name(&self, seq: u64) -> Vec<u8> {
        format!("{LOCK_NAME_PREFIX}{}", seq % self.names).into_bytes()
    }
}

/// The keep-alive tasks of a run's leases, stopped when the workload is dropped.
#[derive(Default)]
pub(crate) struct KeepAlives(Mutex<Vec<AbortHandle>>);

impl KeepAlives {
    pub(crate) fn set(&self, handles: Vec<AbortHandle>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = handles;
    }
}

impl Drop for KeepAlives {
    fn drop(&mut self) {
        let handles = self.0.get_mut().unwrap_or_else(|e| e.into_inner());
        for handle in handles.drain(..) {
            handle.abort();
        }
    }
}

/// Refreshes `id` until aborted (or until the member stops answering, which the lock
/// requests will then report themselves).
async fn keep_alive(mut leases: LeaseClient, id: i64, every: Duration) {
    let (mut keeper, mut stream) = match leases.keep_alive(id).await {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(lease = id, error = %e, "lease keep-alive stream failed");
            return;
        }
    };
    loop {
        tokio::time::sleep(every).await;
        let refreshed = match keeper.keep_alive().await {
            Ok(()) => stream.message().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = refreshed {
            tracing::warn!(lease = id, error = %e, "lease keep-alive failed");
            return;
        }
    }
}

/// Grants one lease of `ttl_s` per requester and keeps each alive (every third of its TTL)
/// over connections of its own, so renewals do not queue behind measured requests. Returns
/// the lease ids, requester i's at i, and the keep-alive tasks to abort when the run ends.
pub(crate) async fn grant_kept_alive(
    pool: &Pool,
    ttl_s: i64,
) -> anyhow::Result<(Vec<i64>, Vec<AbortHandle>)> {
    let mut streaming = Vec::with_capacity(pool.endpoints.len());
    for endpoint in &pool.endpoints {
        streaming.push(connect_streaming(endpoint).await?);
    }
    let every = Duration::from_secs(ttl_s.max(3) as u64 / 3);
    let mut granted = Vec::with_capacity(pool.clients);
    let mut handles = Vec::with_capacity(pool.clients);
    for index in 0..pool.clients {
        let mut leases = streaming
            .get(index % streaming.len().max(1))
            .context("no endpoint to keep leases alive on")?
            .lease_client();
        let id = leases
            .grant(ttl_s, None)
            .await
            .context("granting a requester's lease")?
            .id();
        handles.push(tokio::spawn(keep_alive(leases, id, every)).abort_handle());
        granted.push(id);
    }
    Ok((granted, handles))
}

impl Workload for LockWorkload {
    type Requester = LockRequester;

    fn name(&self) -> &'static str {
        "lock"
    }

    fn params(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("names".to_string(), self.names.to_string()),
            ("lease_ttl_s".to_string(), LEASE_TTL_S.to_string()),
        ])
    }

    async fn prepare(&self, pool: &Pool) -> anyhow::Result<()> {
        let (granted, handles) = grant_kept_alive(pool, LEASE_TTL_S).await?;
        *self.leases.lock().unwrap_or_else(|e| e.into_inner()) = granted;
        self.keep_alives.set(handles);
        Ok(())
    }

    fn requester(&self, conn: Client, index: usize) -> LockRequester {
        let leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        LockRequester {
            lock: conn.lock_client(),
            lease: leases.get(index).copied(),
            held: None,
        }
    }

    fn op(
        &self,
        r: &mut LockRequester,
        seq: u64,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        let name = self.name(seq);
        async move {
            if let Some(stale) = r.held.clone() {
                r.lock.unlock(stale).await.context("unlock (stale)")?;
                r.held = None;
            }
            let options = r.lease.map(|id| LockOptions::new().with_lease(id));
            let key = r
                .lock
                .lock(name, options)
                .await
                .context("lock")?
                .key()
                .to_vec();
            r.held = Some(key.clone());
            r.lock.unlock(key).await.context("unlock")?;
            r.held = None;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cycle_through_the_set() {
        let w = LockWorkload::new(3);
        assert_eq!(w.name(0), b"bench/lock/0");
        assert_eq!(w.name(4), b"bench/lock/1");
        assert_eq!(w.name(5), b"bench/lock/2");
    }
}
