//! A member whose Raft log is damaged in the middle refuses to start, and says why: a flipped
//! byte with acknowledged writes behind it is no torn tail to cut off (RISKS R09). Baton only:
//! the test damages Baton's own log files.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use baton_e2e::{Backend, Cluster, run_test};

/// Acknowledged puts; the byte flipped lies in the middle of their records.
const PUTS: usize = 200;

/// The newest segment of the log in `dir`.
fn active_segment(dir: &Path) -> Result<PathBuf> {
    let mut segments = Vec::new();
    for item in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = item?.path();
        if path.extension().is_some_and(|x| x == "wal") {
            segments.push(path);
        }
    }
    segments.sort();
    segments.pop().context("no raft log segment")
}

/// Where the written part of a zero-filled segment ends.
fn written_len(segment: &Path) -> Result<usize> {
    let bytes = std::fs::read(segment)?;
    Ok(bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1))
}

async fn a_damaged_raft_log_stops_the_member(backend: Backend) -> Result<()> {
    let mut cluster = Cluster::start(backend, 1).await?;
    let mut client = cluster.client().await?;
    let log_dir = cluster.data_root().join(cluster.name(0)).join("raft-log");
    let (first_segment, puts_start) = {
        let segment = active_segment(&log_dir)?;
        let len = written_len(&segment)?;
        (segment, len)
    };
    for i in 0..PUTS {
        client.put(format!("k{i}"), "v", None).await?;
    }
    cluster.kill(0)?;

    let segment = active_segment(&log_dir)?;
    let puts_end = written_len(&segment)?;
    let start = if segment == first_segment {
        puts_start
    } else {
        0
    };
    ensure!(
        puts_end > start,
        "the puts wrote nothing to {}",
        segment.display()
    );
    let at = ((start + puts_end) / 2) as u64;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment)?;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at)?;
    file.write_all_at(&[byte[0] ^ 0x01], at)?;
    drop(file);

    cluster.restart(0)?;
    let error = match cluster.wait_ready().await {
        Ok(()) => bail!("the member started on a log damaged at byte {at}"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(
        error.contains("exited on its own") && error.contains("exit status: 1"),
        "the member should exit with status 1: {error}"
    );
    let log = cluster.log_tails();
    for needle in [
        "opening the raft log",
        "is corrupt at byte",
        "member remove",
    ] {
        ensure!(
            log.contains(needle),
            "no {needle:?} in the member's log:\n{log}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_raft_log_stops_the_member_baton() {
    run_test(
        Backend::Baton,
        a_damaged_raft_log_stops_the_member(Backend::Baton),
    )
    .await;
}
