//! Watch validation: one watcher per member over the workload prefix from revision 1, re-created
//! from its last revision + 1 whenever its stream breaks (the member was killed, say). At the
//! end each watcher's events must equal the history a fresh watch from revision 1 reads from
//! one member (`reference`): same revisions, keys and values, so no gaps, duplicates or
//! reordering; and that history must contain every acknowledged write and only writes some
//! client asked for. The comparison (`validate`) is pure.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use etcd_client::{EventType, GetOptions, WatchOptions};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cluster::{REQUEST_TIMEOUT, connect};
use crate::history::{Entry, Op, Outcome, Reply, Value, decode_value};
use crate::workload::KEY_PREFIX;

/// A broken watch is re-created after this.
const RESUBSCRIBE_BACKOFF: Duration = Duration::from_millis(300);

/// One observed change: `value` is `None` for a delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub revision: i64,
    pub key: String,
    pub value: Option<Value>,
}

/// What a watcher saw, and how often its stream had to be re-created.
#[derive(Debug, Default)]
pub struct Watched {
    pub changes: Vec<Change>,
    pub resubscribed: usize,
}

/// Watches `endpoint` until `stop`; `progress` carries the last revision seen.
pub async fn run_watcher(
    endpoint: String,
    progress: watch::Sender<i64>,
    mut stop: watch::Receiver<bool>,
) -> Watched {
    let mut watched = Watched::default();
    let mut next_revision = 1;
    let mut first = true;
    while !*stop.borrow() {
        if !first {
            watched.resubscribed += 1;
        }
        first = false;
        tokio::select! {
            _ = follow(&endpoint, &mut next_revision, &mut watched.changes, &progress, None) => {}
            _ = stop.changed() => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(RESUBSCRIBE_BACKOFF) => {}
            _ = stop.changed() => break,
        }
    }
    watched
}

/// One watch stream, until it breaks or reaches revision `until`; appends what it sees.
async fn follow(
    endpoint: &str,
    next_revision: &mut i64,
    changes: &mut Vec<Change>,
    progress: &watch::Sender<i64>,
    until: Option<i64>,
) -> Result<()> {
    let mut client = connect(endpoint).await?;
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(*next_revision);
    let mut stream =
        tokio::time::timeout(REQUEST_TIMEOUT, client.watch(KEY_PREFIX, Some(options))).await??;
    while let Some(reply) = stream.message().await? {
        if reply.canceled() {
            bail!("watch canceled: {}", reply.cancel_reason());
        }
        for event in reply.events() {
            let Some(kv) = event.kv() else { continue };
            changes.push(Change {
                revision: kv.mod_revision(),
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: match event.event_type() {
                    EventType::Put => Some(decode_value(kv.value())),
                    EventType::Delete => None,
                },
            });
            *next_revision = kv.mod_revision() + 1;
            progress.send_replace(kv.mod_revision());
        }
        if until.is_some_and(|until| *next_revision > until) {
            return Ok(());
        }
    }
    Ok(())
}

/// The last revision that touched the workload prefix, read through `endpoint`.
pub async fn last_prefix_revision(endpoint: &str) -> Result<i64> {
    let mut client = connect(endpoint).await?;
    let reply = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.get(KEY_PREFIX, Some(GetOptions::new().with_prefix())),
    )
    .await??;
    Ok(reply
        .kvs()
        .iter()
        .map(|kv| kv.mod_revision())
        .max()
        .unwrap_or(0))
}

/// The prefix's whole history up to `upto`, read with a fresh watch from revision 1.
pub async fn reference(endpoint: &str, upto: i64, limit: Duration) -> Result<Vec<Change>> {
    let (tx, _rx) = watch::channel(0);
    let mut changes = Vec::new();
    let mut next = 1;
    let reading = async {
        while changes.last().is_none_or(|c: &Change| c.revision < upto) {
            if follow(endpoint, &mut next, &mut changes, &tx, Some(upto))
                .await
                .is_err()
            {
                tokio::time::sleep(RESUBSCRIBE_BACKOFF).await;
            }
        }
    };
    tokio::time::timeout(limit, reading)
        .await
        .with_context(|| format!("reading the history up to revision {upto} from {endpoint}"))?;
    Ok(changes)
}

/// Waits until every watcher has seen revision `upto`.
pub async fn await_caught_up(
    progress: &[watch::Receiver<i64>],
    upto: i64,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    for (i, rx) in progress.iter().enumerate() {
        let mut rx = rx.clone();
        let caught_up = tokio::time::timeout_at(deadline, rx.wait_for(|&seen| seen >= upto))
            .await
            .is_ok_and(|waited| waited.is_ok());
        if !caught_up {
            let seen = *rx.borrow();
            bail!("the watcher on member {i} is stuck at revision {seen} (expected {upto})");
        }
    }
    Ok(())
}

/// Checks every watcher against the reference history and the reference against the clients'
/// history. Returns one message per problem found.
pub fn validate(reference: &[Change], watchers: &[Watched], entries: &[Entry]) -> Vec<String> {
    let mut problems = Vec::new();
    for pair in reference.windows(2) {
        if pair[1].revision <= pair[0].revision {
            problems.push(format!("reference history out of order: {pair:?}"));
        }
    }
    let upto = reference.last().map_or(0, |c| c.revision);
    for (i, w) in watchers.iter().enumerate() {
        let seen: Vec<&Change> = w.changes.iter().filter(|c| c.revision <= upto).collect();
        let first_difference = reference
            .iter()
            .zip(&seen)
            .position(|(want, got)| want != *got)
            .or((seen.len() != reference.len()).then_some(seen.len().min(reference.len())));
        if let Some(at) = first_difference {
            problems.push(format!(
                "watcher on member {i} ({} events, {} resubscriptions) differs from the history \
                 ({} events) at event {at}: saw {:?}, history has {:?}",
                seen.len(),
                w.resubscribed,
                reference.len(),
                seen.get(at),
                reference.get(at)
            ));
        }
    }
    let in_history: HashSet<(&str, Value)> = reference
        .iter()
        .filter_map(|c| c.value.map(|v| (c.key.as_str(), v)))
        .collect();
    let mut requested: HashSet<(&str, Value)> = HashSet::new();
    for e in entries {
        let written = match e.op {
            Op::Put { value } => value,
            Op::Cas { new, .. } => new,
            Op::Get | Op::Incr | Op::ReadCounter => continue,
        };
        requested.insert((e.key.as_str(), written));
        let acknowledged = matches!(e.outcome, Outcome::Ok(Reply::Done | Reply::Swapped(true)));
        if acknowledged && !in_history.contains(&(e.key.as_str(), written)) {
            problems.push(format!(
                "acknowledged write missing from the watch history: {e:?}"
            ));
        }
    }
    for change in reference {
        if let Some(value) = change.value
            && !requested.contains(&(change.key.as_str(), value))
        {
            problems.push(format!(
                "the history holds a write no client made: {change:?}"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(revision: i64, value: Value) -> Change {
        Change {
            revision,
            key: "k".into(),
            value: Some(value),
        }
    }
    fn put(value: Value, outcome: Outcome) -> Entry {
        Entry {
            client: 0,
            key: "k".into(),
            op: Op::Put { value },
            call_ns: 0,
            return_ns: Some(1),
            outcome,
        }
    }
    fn watched(changes: Vec<Change>) -> Watched {
        Watched {
            changes,
            resubscribed: 0,
        }
    }

    #[test]
    fn matching_streams_pass_and_gaps_duplicates_and_phantoms_fail() {
        let history = vec![change(2, 1), change(5, 2)];
        let entries = [put(1, Outcome::Ok(Reply::Done)), put(2, Outcome::Unknown)];
        assert!(validate(&history, &[watched(history.clone())], &entries).is_empty());
        let gap = watched(vec![change(5, 2)]);
        assert_eq!(validate(&history, &[gap], &entries).len(), 1);
        let duplicate = watched(vec![change(2, 1), change(2, 1), change(5, 2)]);
        assert_eq!(validate(&history, &[duplicate], &entries).len(), 1);
        let lost = [
            put(1, Outcome::Ok(Reply::Done)),
            put(3, Outcome::Ok(Reply::Done)),
        ];
        let problems = validate(&history, &[], &lost);
        assert_eq!(problems.len(), 2, "{problems:?}"); // 3 missing, 2 a phantom
    }
}
