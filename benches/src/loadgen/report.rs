//! Results: one [`Row`] per scenario run, printed as a table or written as JSON, and the
//! side-by-side comparison of two systems' rows with Vexil/etcd ratios.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, from 1 µs to 60 s, with 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("the histogram bounds are constants and valid")
}

/// One scenario's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub system: String,
    /// `write`, `read`, `watch` or `failover`.
    pub scenario: String,
    /// The read level (reads only).
    pub level: Option<String>,
    /// `leader` or `follower`: the node the clients (or the watcher) talk to.
    pub target: Option<String>,
    pub clients: usize,
    /// Operations measured (failover: repetitions).
    pub ops: u64,
    pub errors: u64,
    /// Measured time (after the warm-up).
    pub seconds: f64,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Failover: each repetition's time, in order.
    #[serde(default)]
    pub samples_ms: Vec<f64>,
    #[serde(default)]
    pub note: String,
    /// CPU time (user + system) the cluster's server processes spent per measured operation,
    /// in microseconds: how much work each operation costs, whatever else the machine does.
    #[serde(default)]
    pub server_cpu_us_per_op: Option<f64>,
}

impl Row {
    /// A row from a latency histogram (µs) over `seconds` of measurement.
    pub fn from_histogram(system: &str, scenario: &str, h: &Histogram<u64>, errors: u64, seconds: f64) -> Row {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Row {
            system: system.into(),
            scenario: scenario.into(),
            level: None,
            target: None,
            clients: 0,
            ops: h.len(),
            errors,
            seconds,
            ops_per_s: if seconds > 0.0 { h.len() as f64 / seconds } else { 0.0 },
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: h.max() as f64 / 1000.0,
            samples_ms: Vec::new(),
            note: String::new(),
            server_cpu_us_per_op: None,
        }
    }

    fn label(&self) -> String {
        let mut s = self.scenario.clone();
        if let Some(level) = &self.level {
            s.push(' ');
            s.push_str(level);
        }
        if let Some(target) = &self.target {
            s.push_str(&format!(" @{target}"));
        }
        s
    }

    /// The etcd level a Vexil read level is compared with: lease and stale reads against
    /// serializable ones (both skip the read index).
    fn comparable_level(&self) -> Option<String> {
        self.level.as_deref().map(|l| match l {
            "lease" | "stale" => "serializable".to_string(),
            other => other.to_string(),
        })
    }
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_rate(v: f64) -> String {
    if v >= 10_000.0 { format!("{:.1}k", v / 1000.0) } else { format!("{v:.0}") }
}

/// One system's rows as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| system | scenario | clients | ops/s | p50 ms | p99 ms | p99.9 ms | max ms | errors | server CPU µs/op |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.system,
            r.label(),
            r.clients,
            fmt_rate(r.ops_per_s),
            fmt_ms(r.p50_ms),
            fmt_ms(r.p99_ms),
            fmt_ms(r.p999_ms),
            fmt_ms(r.max_ms),
            r.errors,
            fmt_cpu(r.server_cpu_us_per_op)
        );
    }
    out
}

fn fmt_cpu(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into())
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 { format!("{:.2}", a / b) } else { "–".into() }
}

/// Vexil's rows beside etcd's comparable rows: throughput ratio (higher is better for Vexil)
/// and latency ratios (lower is better for Vexil). Failover compares the median.
pub fn comparison(vexil: &[Row], etcd: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| scenario | clients | Vexil ops/s | etcd ops/s | ops/s ratio | Vexil p50 / p99 / p99.9 ms | \
         etcd p50 / p99 / p99.9 ms | p99 ratio | server CPU µs/op Vexil / etcd |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for v in vexil {
        let level = v.comparable_level();
        let e = etcd
            .iter()
            .find(|e| e.scenario == v.scenario && e.level == level && e.target == v.target && e.clients == v.clients);
        let lat = |r: &Row| format!("{} / {} / {}", fmt_ms(r.p50_ms), fmt_ms(r.p99_ms), fmt_ms(r.p999_ms));
        let mut label = v.label();
        if let (Some(vl), Some(el)) = (&v.level, &level)
            && vl != el
        {
            label.push_str(&format!(" (vs {el})"));
        }
        let (rate_v, rate_e) = if v.scenario == "failover" || v.scenario == "watch" {
            ("–".to_string(), "–".to_string())
        } else {
            (fmt_rate(v.ops_per_s), e.map(|e| fmt_rate(e.ops_per_s)).unwrap_or_else(|| "–".into()))
        };
        let rate_ratio = match e {
            Some(e) if v.scenario != "failover" && v.scenario != "watch" => ratio(v.ops_per_s, e.ops_per_s),
            _ => "–".into(),
        };
        let (lat_e, p99_ratio) = match e {
            Some(e) if v.scenario == "failover" => {
                (format!("median {} (max {})", fmt_ms(e.p50_ms), fmt_ms(e.max_ms)), ratio(v.p50_ms, e.p50_ms))
            }
            Some(e) => (lat(e), ratio(v.p99_ms, e.p99_ms)),
            None => ("–".into(), "–".into()),
        };
        let lat_v = if v.scenario == "failover" {
            format!("median {} (max {})", fmt_ms(v.p50_ms), fmt_ms(v.max_ms))
        } else {
            lat(v)
        };
        let cpu = match (v.server_cpu_us_per_op, e.and_then(|e| e.server_cpu_us_per_op)) {
            (None, None) => "–".to_string(),
            (a, b) => format!("{} / {}", fmt_cpu(a), fmt_cpu(b)),
        };
        let _ = writeln!(
            out,
            "| {label} | {} | {rate_v} | {rate_e} | {rate_ratio} | {lat_v} | {lat_e} | {p99_ratio} | {cpu} |",
            v.clients
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: &str, scenario: &str, level: Option<&str>, rate: f64, p99: f64) -> Row {
        let mut h = histogram();
        h.record(1000).expect("in bounds");
        let mut r = Row::from_histogram(system, scenario, &h, 0, 1.0);
        r.level = level.map(str::to_string);
        r.clients = 64;
        r.ops_per_s = rate;
        r.p99_ms = p99;
        r
    }

    #[test]
    fn lease_reads_are_compared_with_serializable_reads() {
        let v = [row("vexil", "read", Some("lease"), 30_000.0, 2.0), row("vexil", "write", None, 5_000.0, 20.0)];
        let e = [row("etcd", "read", Some("serializable"), 20_000.0, 4.0), row("etcd", "write", None, 10_000.0, 10.0)];
        let table = comparison(&v, &e);
        assert!(table.contains("read lease (vs serializable) | 64 | 30.0k | 20.0k | 1.50 |"), "{table}");
        assert!(table.contains("| write | 64 | 5000 | 10.0k | 0.50 |"), "{table}");
        assert!(table.contains("| 0.50 | – |\n"), "{table}");
    }
}
