//! The report of a run: a human table, one `key=value` line for scripts, or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::driver::Outcome;

/// Latency percentiles of successful operations, in milliseconds.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub(crate) struct LatencyMs {
    mean: f64,
    pub(crate) p50: f64,
    p90: f64,
    pub(crate) p99: f64,
    p999: f64,
    pub(crate) max: f64,
}

impl LatencyMs {
    fn from_histogram(latency_us: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1_000.0;
        if latency_us.is_empty() {
            return Self {
                mean: 0.0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
            };
        }
        Self {
            mean: latency_us.mean() / 1_000.0,
            p50: ms(latency_us.value_at_quantile(0.50)),
            p90: ms(latency_us.value_at_quantile(0.90)),
            p99: ms(latency_us.value_at_quantile(0.99)),
            p999: ms(latency_us.value_at_quantile(0.999)),
            max: ms(latency_us.max()),
        }
    }
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub(crate) struct Summary {
    workload: String,
    pub(crate) params: BTreeMap<String, String>,
    clients: usize,
    conns: usize,
    /// `all` or `leader`.
    target: String,
    pub(crate) endpoints: Vec<String>,
    /// Successful operations.
    pub(crate) ops: u64,
    pub(crate) errors: u64,
    elapsed_s: f64,
    ops_per_s: f64,
    pub(crate) latency_ms: LatencyMs,
    pub(crate) error_samples: Vec<String>,
    /// Workload-specific figures from after the run (e.g. retries per increment).
    pub(crate) extra: BTreeMap<String, String>,
}

/// Who ran: the parts of a summary that do not come from the measurements.
pub(crate) struct RunShape {
    pub(crate) workload: &'static str,
    pub(crate) params: BTreeMap<String, String>,
    pub(crate) clients: usize,
    pub(crate) conns: usize,
    pub(crate) target: &'static str,
    pub(crate) endpoints: Vec<String>,
}

impl Summary {
    pub(crate) fn new(shape: RunShape, outcome: &Outcome) -> Self {
        let elapsed_s = outcome.elapsed.as_secs_f64();
        let ops_per_s = if elapsed_s > 0.0 {
            outcome.ok as f64 / elapsed_s
        } else {
            0.0
        };
        Self {
            workload: shape.workload.to_string(),
            params: shape.params,
            clients: shape.clients,
            conns: shape.conns,
            target: shape.target.to_string(),
            endpoints: shape.endpoints,
            ops: outcome.ok,
            errors: outcome.errors,
            elapsed_s,
            ops_per_s,
            latency_ms: LatencyMs::from_histogram(&outcome.latency_us),
            error_samples: outcome.error_samples.clone(),
            extra: BTreeMap::new(),
        }
    }

    /// One line of space-separated `key=value` fields, after the workload name.
    pub(crate) fn line(&self) -> String {
        let mut line = self.workload.clone();
        for (key, value) in &self.params {
            let _ = write!(line, " {key}={value}");
        }
        let l = &self.latency_ms;
        let _ = write!(
            line,
            " clients={} conns={} target={} ops={} errors={} elapsed_s={:.3} ops/s={:.1} \
             mean_ms={:.3} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p99.9_ms={:.3} max_ms={:.3}",
            self.clients,
            self.conns,
            self.target,
            self.ops,
            self.errors,
            self.elapsed_s,
            self.ops_per_s,
            l.mean,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
        );
        for (key, value) in &self.extra {
            let _ = write!(line, " {key}={value}");
        }
        line
    }

    /// A few aligned lines for a person.
    pub(crate) fn table(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let l = &self.latency_ms;
        let mut out = String::new();
        let _ = writeln!(out, "workload    {} ({})", self.workload, params.join(" "));
        let _ = writeln!(
            out,
            "target      {}: {}",
            self.target,
            self.endpoints.join(", ")
        );
        let _ = writeln!(
            out,
            "clients     {} over {} connection(s)",
            self.clients, self.conns
        );
        let _ = writeln!(
            out,
            "ops         {} ok, {} errors in {:.3} s = {:.1} ops/s",
            self.ops, self.errors, self.elapsed_s, self.ops_per_s
        );
        let _ = writeln!(
            out,
            "latency ms  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "mean", "p50", "p90", "p99", "p99.9", "max"
        );
        let _ = writeln!(
            out,
            "            {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            l.mean, l.p50, l.p90, l.p99, l.p999, l.max
        );
        if !self.extra.is_empty() {
            let extra: Vec<String> = self.extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(out, "after run   {}", extra.join(" "));
        }
        for sample in &self.error_samples {
            let _ = writeln!(out, "error       {sample}");
        }
        out
    }

    pub(crate) fn json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::driver::new_histogram;

    fn outcome(latencies_us: impl IntoIterator<Item = u64>, errors: u64) -> Outcome {
        let mut latency_us = new_histogram().unwrap();
        let mut ok = 0;
        for us in latencies_us {
            latency_us.record(us).unwrap();
            ok += 1;
        }
        Outcome {
            latency_us,
            ok,
            errors,
            elapsed: Duration::from_secs(2),
            error_samples: vec!["put: boom".to_string()],
        }
    }

    fn shape() -> RunShape {
        RunShape {
            workload: "put",
            params: BTreeMap::from([("keys".to_string(), "random".to_string())]),
            clients: 64,
            conns: 8,
            target: "leader",
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
        }
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        // 1..=1000 ms: p50 is 500 ms, p99 is 990 ms, max 1000 ms (within 0.1% resolution).
        let summary = Summary::new(shape(), &outcome((1..=1000).map(|ms| ms * 1_000), 3));
        let l = &summary.latency_ms;
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(close(l.p50, 500.0), "p50 {}", l.p50);
        assert!(close(l.p90, 900.0), "p90 {}", l.p90);
        assert!(close(l.p99, 990.0), "p99 {}", l.p99);
        assert!(close(l.p999, 999.0), "p999 {}", l.p999);
        assert!(close(l.max, 1000.0), "max {}", l.max);
        assert!(close(l.mean, 500.5), "mean {}", l.mean);
        assert_eq!(summary.ops, 1000);
        assert_eq!(summary.errors, 3);
        assert!((summary.ops_per_s - 500.0).abs() < 1e-9);
    }

    #[test]
    fn summary_line_has_stable_fields() {
        let summary = Summary::new(shape(), &outcome([1_500, 2_000], 0));
        let line = summary.line();
        assert!(line.starts_with("put keys=random clients=64 conns=8 target=leader ops=2 errors=0 elapsed_s=2.000 ops/s=1.0 "), "{line}");
        let fields: BTreeMap<&str, &str> = line
            .split(' ')
            .skip(1)
            .filter_map(|f| f.split_once('='))
            .collect();
        assert_eq!(fields["p50_ms"], "1.500");
        // Both are below 2048 us, where the histogram is exact.
        assert_eq!(fields["max_ms"], "2.000");
        for key in ["mean_ms", "p90_ms", "p99_ms", "p99.9_ms"] {
            assert!(fields.contains_key(key), "{key} missing from {line}");
        }
    }

    #[test]
    fn extra_figures_follow_the_latencies() {
        let mut summary = Summary::new(shape(), &outcome([1_000], 0));
        summary.extra = BTreeMap::from([("retries_per_incr".to_string(), "0.250".to_string())]);
        assert!(
            summary.line().ends_with(" retries_per_incr=0.250"),
            "{}",
            summary.line()
        );
        assert!(
            summary
                .table()
                .contains("after run   retries_per_incr=0.250")
        );
        let value: serde_json::Value = serde_json::from_str(&summary.json().unwrap()).unwrap();
        assert_eq!(value["extra"]["retries_per_incr"], "0.250");
    }

    #[test]
    fn json_round_trips_the_numbers() {
        let summary = Summary::new(shape(), &outcome([1_000], 1));
        let value: serde_json::Value = serde_json::from_str(&summary.json().unwrap()).unwrap();
        assert_eq!(value["workload"], "put");
        assert_eq!(value["params"]["keys"], "random");
        assert_eq!(value["ops"], 1);
        assert_eq!(value["errors"], 1);
        assert_eq!(value["latency_ms"]["p50"], 1.0);
        assert_eq!(value["error_samples"][0], "put: boom");
    }

    #[test]
    fn empty_runs_report_zero_latency() {
        let summary = Summary::new(shape(), &outcome([], 5));
        assert_eq!(summary.latency_ms.max, 0.0);
        assert!(summary.table().contains("0 ok, 5 errors"));
        assert!(summary.table().contains("error       put: boom"));
    }
}
