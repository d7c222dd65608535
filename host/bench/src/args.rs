//! Option groups shared by the workloads, and the checks that keep a run bounded.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

/// Operations issued when neither `--total` nor `--duration` is given.
pub(crate) const TOTAL_DEFAULT: u64 = 10_000;
const CLIENTS_MAX: usize = 10_000;
pub(crate) const CONNS_MAX: usize = 1_000;
/// etcd refuses requests above 1.5 MiB; one key or value stays well under it.
pub(crate) const KEY_SIZE_MAX: usize = 64 * 1024;
pub(crate) const VAL_SIZE_MAX: usize = 1024 * 1024;
/// A duration-bounded run still has to end on a human scale.
const DURATION_MAX: Duration = Duration::from_secs(24 * 60 * 60);

/// Options every workload takes: concurrency, how long to run, where to send requests.
#[derive(Args, Debug, Clone)]
pub(crate) struct CommonArgs {
    /// Concurrent in-flight requesters.
    #[arg(long, default_value_t = 1)]
    pub(crate) clients: usize,

    /// gRPC connections shared by the requesters (requester i uses connection i % conns).
    #[arg(long, default_value_t = 1)]
    pub(crate) conns: usize,

    /// Operations to issue (errors included); defaults to 10000 unless --duration is given.
    #[arg(long)]
    pub(crate) total: Option<u64>,

    /// Stop after this long, e.g. 500ms, 10s, 2m (whichever of --total/--duration comes first).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,

    /// Give up on one request after this long and count it as an error.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub(crate) timeout: Duration,

    /// Send to every endpoint given (connection j pinned to endpoint j % n) or only the leader.
    #[arg(long, value_enum, default_value_t = Target::All)]
    pub(crate) target: Target,

    /// Print one JSON object instead of the table and summary line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Which members receive requests.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    All,
    Leader,
}

impl Target {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Target::All => "all",
            Target::Leader => "leader",
        }
    }
}

/// When a run stops: after `total` operations or at `duration`, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) total: u64,
    pub(crate) duration: Option<Duration>,
}

impl CommonArgs {
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if !(1..=CLIENTS_MAX).contains(&self.clients) {
            bail!("--clients must be between 1 and {CLIENTS_MAX}");
        }
        if !(1..=CONNS_MAX).contains(&self.conns) {
            bail!("--conns must be between 1 and {CONNS_MAX}");
        }
        if self.conns > self.clients {
            bail!(
                "--conns ({}) exceeds --clients ({}): extra connections would sit idle",
                self.conns,
                self.clients
            );
        }
        if self.total == Some(0) {
            bail!("--total must be at least 1");
        }
        if let Some(d) = self.duration
            && (d.is_zero() || d > DURATION_MAX)
        {
            bail!(
                "--duration must be above zero and at most {}s",
                DURATION_MAX.as_secs()
            );
        }
        if self.timeout.is_zero() {
            bail!("--timeout must be above zero");
        }
        Ok(())
    }

    pub(crate) fn limits(&self) -> Limits {
        let total = match (self.total, self.duration) {
            (Some(total), _) => total,
            // The deadline alone bounds the run.
            (None, Some(_)) => u64::MAX,
            (None, None) => TOTAL_DEFAULT,
        };
        Limits {
            total,
            duration: self.duration,
        }
    }
}

/// Which keys a workload touches.
#[derive(Args, Debug, Clone)]
pub(crate) struct KeyArgs {
    /// Bytes per key, prefix included (the rest is the zero-padded key number).
    #[arg(long, default_value_t = 8)]
    pub(crate) key_size: usize,

    /// Distinct keys to choose from.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) key_space_size: u64,

    /// Walk the key space in order instead of picking keys at random.
    #[arg(long)]
    pub(crate) sequential_keys: bool,

    /// Prefix of every key, to keep benchmark keys apart from real data.
    #[arg(long, default_value = "")]
    pub(crate) key_prefix: String,

    /// Seed for random key choice, so runs are repeatable.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
}

/// Value size, checked against [`VAL_SIZE_MAX`].
pub(crate) fn check_val_size(val_size: usize) -> anyhow::Result<()> {
    if val_size > VAL_SIZE_MAX {
        bail!("--val-size must be at most {VAL_SIZE_MAX}");
    }
    Ok(())
}

/// Parses `250ms`, `10s`, `2m`, or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let (number, unit_ms) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000)
    } else {
        (text, 1_000)
    };
    let number: f64 = number
        .trim()
        .parse()
        .with_context(|| format!("not a duration: {text:?} (use e.g. 500ms, 10s, 2m)"))?;
    if !number.is_finite() || number < 0.0 {
        bail!("not a duration: {text:?}");
    }
    let ms = number * f64::from(unit_ms);
    if ms > DURATION_MAX.as_millis() as f64 {
        bail!(
            "duration {text:?} is longer than {}s",
            DURATION_MAX.as_secs()
        );
    }
    Ok(Duration::from_micros((ms * 1_000.0).round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("100000m").is_err());
    }
}
