//! `baton serve`: etcd's flags, so scripts and habits carry over.

use std::path::PathBuf;

use clap::Args;

use crate::node::{self, NodeConfig, config::parse_initial_cluster};
use crate::server::compaction::AutoCompaction;
use baton_limits::{
    AUTO_COMPACTION_REVISION_CHECK, QUOTA_BACKEND_BYTES_DEFAULT, SNAPSHOT_LOGS_SINCE_LAST,
};

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// This member's name; must appear in --initial-cluster.
    #[arg(long, default_value = "default")]
    name: String,
    /// Where this member keeps its Raft log, state and snapshots.
    #[arg(long, default_value = "./baton-data")]
    data_dir: PathBuf,
    /// URLs to serve clients on, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    listen_client_urls: Vec<String>,
    /// Client URLs announced to the cluster (default: --listen-client-urls).
    #[arg(long, value_delimiter = ',')]
    advertise_client_urls: Vec<String>,
    /// URLs to serve peers on, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2380")]
    listen_peer_urls: Vec<String>,
    /// Peer URLs announced to the cluster (default: --listen-peer-urls).
    #[arg(long, value_delimiter = ',')]
    initial_advertise_peer_urls: Vec<String>,
    /// Founding members: name=peerURL,... (default: this member alone).
    #[arg(long)]
    initial_cluster: Option<String>,
    /// Distinguishes clusters started from the same member list.
    #[arg(long, default_value = "baton-cluster")]
    initial_cluster_token: String,
    /// `new` to found a cluster, `existing` to join one this member was added to (with
    /// `member add`). A member with an existing data dir always rejoins.
    #[arg(long, default_value = "new", value_parser = ["new", "existing"])]
    initial_cluster_state: String,
    /// Leader heartbeat interval in milliseconds.
    #[arg(long = "heartbeat-interval", default_value_t = 100)]
    heartbeat_interval_ms: u64,
    /// Election timeout in milliseconds (followers wait between this and twice this).
    #[arg(long = "election-timeout", default_value_t = 1000)]
    election_timeout_ms: u64,
    /// Applied entries between snapshots; the log behind a snapshot is then purged.
    #[arg(long, default_value_t = SNAPSHOT_LOGS_SINCE_LAST)]
    snapshot_count: u64,
    /// Async worker threads (default: `TOKIO_WORKER_THREADS`, else one per core). Fewer pay where
    /// members share cores (several on one machine, or a CPU quota below the core count).
    // A member's hot path is mostly serial (one Raft core task, one apply task, one log-writer
    // thread), so extra workers mainly spread client connections, and each costs cross-thread
    // wake-ups whenever work moves between them: three members on the 2-core test machine with
    // one worker each beat two each on every `bench/compare.sh` workload (Invoke +6 %,
    // serializable range +20 %, server CPU per Invoke -15 %). One worker is not the default even
    // there: work that runs long on a worker (a large module compiled at apply) would then hold
    // up the member's heartbeats and replication as well.
    #[arg(long)]
    pub(crate) worker_threads: Option<usize>,
    /// How often watches that asked for progress notifications get one, as a Go duration
    /// (`10m`, `1s`, `500ms`).
    #[arg(
        long = "experimental-watch-progress-notify-interval",
        default_value = "10m",
        value_parser = parse_go_duration_ms
    )]
    watch_progress_notify_interval_ms: u64,
    /// Raise the NOSPACE alarm when the state database reaches this many bytes (0: etcd's
    /// default of 2 GiB; negative: no quota).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    quota_backend_bytes: i64,
    /// `periodic` (retention is a duration) or `revision` (retention is a revision count).
    #[arg(long, default_value = "periodic")]
    auto_compaction_mode: String,
    /// History to keep: for periodic, a Go duration or whole hours (`0` disables); for
    /// revision, a number of revisions.
    #[arg(long, default_value = "0")]
    auto_compaction_retention: String,
    /// How often revision-mode auto-compaction looks at the revision, as a Go duration
    /// (Baton only; etcd always waits 5 minutes).
    #[arg(
        long,
        hide = true,
        default_value = AUTO_COMPACTION_REVISION_CHECK,
        value_parser = parse_go_duration_ms
    )]
    experimental_auto_compaction_check_interval: u64,
}

/// etcd's reading of the auto-compaction flags: a bare integer is hours (periodic) or revisions
/// (revision); anything else must be a Go duration and only makes sense for periodic.
fn parse_auto_compaction(
    mode: &str,
    retention: &str,
    revision_check_ms: u64,
) -> anyhow::Result<AutoCompaction> {
    let whole: Option<u64> = retention.parse().ok();
    let policy = match (mode, whole) {
        ("revision", Some(0)) | ("periodic", Some(0)) => AutoCompaction::Off,
        ("revision", Some(n)) => AutoCompaction::Revision {
            retention: i64::try_from(n)?,
            check_ms: revision_check_ms,
        },
        ("revision", None) => {
            anyhow::bail!("--auto-compaction-retention {retention:?} is not a revision count")
        }
        ("periodic", Some(hours)) => AutoCompaction::Periodic {
            retention_ms: hours.saturating_mul(3_600_000),
        },
        ("periodic", None) => match parse_go_duration_ms(retention).map_err(anyhow::Error::msg)? {
            0 => AutoCompaction::Off,
            retention_ms => AutoCompaction::Periodic { retention_ms },
        },
        (other, _) => {
            anyhow::bail!("--auto-compaction-mode {other:?}: expected \"periodic\" or \"revision\"")
        }
    };
    Ok(policy)
}

/// etcd's quota rule: 0 means the default, a negative value means none.
fn quota_bytes(flag: i64) -> u64 {
    match flag {
        0 => QUOTA_BACKEND_BYTES_DEFAULT,
        n => u64::try_from(n).unwrap_or(0),
    }
}

/// Parses a Go `time.Duration` string (as etcd's flags take them) into whole milliseconds:
/// a sequence of decimal numbers, each with a unit out of ns, us, µs, ms, s, m, h.
fn parse_go_duration_ms(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid duration {text:?}");
    if text.is_empty() {
        return Err(bad());
    }
    if text == "0" {
        return Ok(0);
    }
    let mut rest = text;
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let ns_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total_ns += number * ns_per_unit;
        rest = &rest[unit_len..];
    }
    // Float-to-int `as` saturates; the value is a finite, non-negative duration.
    Ok((total_ns / 1e6).round() as u64)
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let advertise_client_urls = if args.advertise_client_urls.is_empty() {
        args.listen_client_urls.clone()
    } else {
        args.advertise_client_urls
    };
    let advertise_peer_urls = if args.initial_advertise_peer_urls.is_empty() {
        args.listen_peer_urls.clone()
    } else {
        args.initial_advertise_peer_urls
    };
    let initial_cluster = match &args.initial_cluster {
        Some(spec) => parse_initial_cluster(spec)?,
        None => vec![(args.name.clone(), advertise_peer_urls.clone())],
    };
    node::run(NodeConfig {
        name: args.name,
        data_dir: args.data_dir,
        listen_client_urls: args.listen_client_urls,
        advertise_client_urls,
        listen_peer_urls: args.listen_peer_urls,
        initial_advertise_peer_urls: advertise_peer_urls,
        initial_cluster,
        initial_cluster_token: args.initial_cluster_token,
        join_existing: args.initial_cluster_state == "existing",
        heartbeat_interval_ms: args.heartbeat_interval_ms,
        election_timeout_ms: args.election_timeout_ms,
        watch_progress_notify_interval_ms: args.watch_progress_notify_interval_ms,
        snapshot_count: args.snapshot_count.max(1),
        quota_backend_bytes: quota_bytes(args.quota_backend_bytes),
        auto_compaction: parse_auto_compaction(
            &args.auto_compaction_mode,
            &args.auto_compaction_retention,
            args.experimental_auto_compaction_check_interval,
        )?,
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_compaction_flags_read_like_etcd() {
        let parse = |m, r| parse_auto_compaction(m, r, 7).unwrap();
        assert_eq!(parse("periodic", "0"), AutoCompaction::Off);
        assert_eq!(
            parse("periodic", "2"),
            AutoCompaction::Periodic {
                retention_ms: 7_200_000
            }
        );
        assert_eq!(
            parse("periodic", "30m"),
            AutoCompaction::Periodic {
                retention_ms: 1_800_000
            }
        );
        assert_eq!(
            parse("revision", "1000"),
            AutoCompaction::Revision {
                retention: 1000,
                check_ms: 7
            }
        );
        assert!(parse_auto_compaction("revision", "1h", 7).is_err());
        assert!(parse_auto_compaction("sometimes", "1", 7).is_err());
        assert_eq!(quota_bytes(0), QUOTA_BACKEND_BYTES_DEFAULT);
        assert_eq!(quota_bytes(-1), 0);
        assert_eq!(quota_bytes(4096), 4096);
    }

    #[test]
    fn go_durations_parse_to_milliseconds() {
        assert_eq!(parse_go_duration_ms("10m"), Ok(600_000));
        assert_eq!(parse_go_duration_ms("1s"), Ok(1_000));
        assert_eq!(parse_go_duration_ms("1m30s"), Ok(90_000));
        assert_eq!(parse_go_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_go_duration_ms("1.5h"), Ok(5_400_000));
        assert_eq!(parse_go_duration_ms("0"), Ok(0));
        assert!(parse_go_duration_ms("").is_err());
        assert!(parse_go_duration_ms("10").is_err());
        assert!(parse_go_duration_ms("5x").is_err());
    }
}
