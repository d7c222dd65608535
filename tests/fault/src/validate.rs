//! End-of-run validators beyond the checker: every member holds the same key-value history
//! (Maintenance.HashKV at one revision), and the workload did enough to make the run mean
//! something.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::time::Instant;

use crate::cluster::{REQUEST_TIMEOUT, connect};
use crate::history::{Entry, Outcome};

const RETRY_INTERVAL: Duration = Duration::from_millis(300);

/// HashKV of every endpoint at the revision the first one has reached; fails unless all hashes
/// are equal. Members behind that revision are waited for (up to `limit`).
pub async fn hashkv_agree(endpoints: &[String], limit: Duration) -> Result<(i64, u32)> {
    let deadline = Instant::now() + limit;
    let revision = loop {
        let attempt = async {
            let mut client = connect(&endpoints[0]).await?;
            let reply = tokio::time::timeout(REQUEST_TIMEOUT, client.get("fault/", None)).await??;
            reply.header().map(|h| h.revision()).context("no header")
        };
        match attempt.await {
            Ok(revision) => break revision,
            Err(e) if Instant::now() >= deadline => return Err(e.context("reading the revision")),
            Err(_) => tokio::time::sleep(RETRY_INTERVAL).await,
        }
    };
    let mut hashes = Vec::new();
    for endpoint in endpoints {
        let hash = loop {
            let attempt = async {
                let mut client = connect(endpoint).await?;
                let reply =
                    tokio::time::timeout(REQUEST_TIMEOUT, client.hash_kv(revision)).await??;
                anyhow::Ok(reply.hash())
            };
            match attempt.await {
                Ok(hash) => break hash,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("HashKV at {revision} on {endpoint}")));
                }
                Err(_) => tokio::time::sleep(RETRY_INTERVAL).await,
            }
        };
        hashes.push(hash);
    }
    if hashes.iter().any(|&h| h != hashes[0]) {
        bail!("HashKV at revision {revision} differs between members: {hashes:?} ({endpoints:?})");
    }
    Ok((revision, hashes[0]))
}

/// Counts of a history's outcomes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
}

pub fn tally(entries: &[Entry]) -> Tally {
    let mut t = Tally::default();
    for e in entries {
        match e.outcome {
            Outcome::Ok(_) => t.ok += 1,
            Outcome::Failed => t.failed += 1,
            Outcome::Unknown => t.unknown += 1,
        }
    }
    t
}
