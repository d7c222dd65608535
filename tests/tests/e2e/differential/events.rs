//! The watch half of the differential test: the same operations must produce the same event
//! sequence on both servers, both live (a watch opened before the first operation) and replayed
//! from history afterwards (a watch opened at a past revision).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use baton_e2e::Cluster;
use etcd_client::{Client, EventType, WatchOptions, WatchStream};

/// Everything a client can see of one event.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct EventView {
    kind: &'static str,
    key: Vec<u8>,
    value: Vec<u8>,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: i64,
    prev: Option<(Vec<u8>, i64, i64)>,
}

/// Any key: the read in `settle` is for its barrier, not its answer.
const SETTLE_KEY: &str = "a";
/// How long to wait for the events of operations that have already been answered.
const EVENTS_TIMEOUT: Duration = Duration::from_secs(15);

/// A watch over the whole key space with prev_kv, from `start_revision` (0 = from now).
pub(super) async fn open(client: &mut Client, start_revision: i64) -> Result<WatchStream> {
    let options = WatchOptions::new()
        .with_all_keys()
        .with_prev_key()
        .with_start_revision(start_revision);
    let mut stream = client.watch("", Some(options)).await?;
    // The first response confirms the watch was created.
    let created = stream
        .message()
        .await?
        .context("watch stream ended before `created`")?;
    if !created.created() {
        bail!("first watch response was not `created`: {created:?}");
    }
    Ok(stream)
}

/// Makes every member of `cluster` apply all that was committed so far, with a linearizable
/// read through each. Opening a watch has no read barrier: a member that has not applied the
/// last compaction yet would replay from a revision the others refuse as compacted.
pub(super) async fn settle(cluster: &Cluster) -> Result<()> {
    for member in 0..cluster.size() {
        let mut client = cluster.member_client(member).await?;
        client
            .get(SETTLE_KEY, None)
            .await
            .with_context(|| format!("linearizable read through member {member}"))?;
    }
    Ok(())
}

/// Reads events until one at `final_revision` (or later) arrived. A cancellation (a compacted
/// start revision) is reported as its compact revision so both servers can be compared on it.
pub(super) async fn collect(
    stream: &mut WatchStream,
    final_revision: i64,
) -> Result<Result<Vec<EventView>, i64>> {
    let mut events = Vec::new();
    let mut last = 0;
    let read = async {
        while last < final_revision {
            let Some(resp) = stream.message().await? else {
                bail!("watch stream ended at revision {last}, expected {final_revision}");
            };
            if resp.canceled() {
                return Ok(Err(resp.compact_revision()));
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                last = kv.mod_revision();
                events.push(EventView {
                    kind: match event.event_type() {
                        EventType::Put => "put",
                        EventType::Delete => "delete",
                    },
                    key: kv.key().to_vec(),
                    value: kv.value().to_vec(),
                    create_revision: kv.create_revision(),
                    mod_revision: kv.mod_revision(),
                    version: kv.version(),
                    lease: kv.lease(),
                    prev: event
                        .prev_kv()
                        .map(|p| (p.value().to_vec(), p.mod_revision(), p.version())),
                });
            }
        }
        Ok(Ok(std::mem::take(&mut events)))
    };
    tokio::time::timeout(EVENTS_TIMEOUT, read)
        .await
        .with_context(|| {
            format!("no event at revision {final_revision} within {EVENTS_TIMEOUT:?}")
        })?
}
