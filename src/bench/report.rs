//! The final report, as text and as JSON.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write as _};

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

use super::fail::Fail;
use super::progress::group;
use super::tls::TlsParams;
use crate::config::BenchMode;
use crate::plural::noun;

/// A distribution's count, and its percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Latency {
    pub(super) count: u64,
    pub(super) p50: f64,
    pub(super) p90: f64,
    pub(super) p99: f64,
    pub(super) p999: f64,
    pub(super) max: f64,
    pub(super) mean: f64,
}

/// The percentiles of a histogram of nanoseconds; `None` when it is empty.
pub(super) fn latency_summary(hist: &Histogram<u64>) -> Option<Latency> {
    if hist.is_empty() {
        return None;
    }
    let us = |ns: f64| (ns / 100.0).round() / 10.0;
    let q = |q: f64| us(hist.value_at_quantile(q) as f64);
    Some(Latency {
        count: hist.len(),
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        p999: q(0.999),
        max: us(hist.max() as f64),
        mean: us(hist.mean()),
    })
}

/// The shortfall beyond which the report says that the rate was not reached.
const SHORT_BY: f64 = 0.01;

/// The rate line: the target, the rate reached, and when that fell short of the target
/// by more than 1%, by how much and why. `unit`: "msg/s", "connections/s".
pub(super) fn rate_text(target: f64, reached: f64, unit: &str) -> String {
    let mut s = format!(
        "target {} {unit}, reached {} {unit}",
        rate(target),
        rate(reached)
    );
    if reached < target * (1.0 - SHORT_BY) {
        let short = (1.0 - reached / target) * 100.0;
        // Writing to a String cannot fail.
        let _ = write!(
            s,
            ": {short:.1}% short; the server or this machine could not keep up"
        );
    }
    s
}

/// A rate as the report shows it: whole and grouped, with a decimal below 100.
fn rate(per_s: f64) -> String {
    if per_s >= 100.0 {
        return group(per_s.round() as u64);
    }
    let text = format!("{per_s:.1}");
    match text.strip_suffix(".0") {
        Some(whole) => whole.to_string(),
        None => text,
    }
}

/// Seconds as the report shows a duration given: `1`, `0.2`; one that never ends (`inf`,
/// or more than the clock holds) as such.
fn seconds(secs: f64) -> String {
    if secs >= 1e15 {
        "ever".to_string()
    } else {
        format!("{secs} s")
    }
}

/// Width of the longest bar of the latency chart, in characters.
pub(super) const CHART_WIDTH: usize = 40;

/// The latencies the report's bar chart shows, in ns: p50, p90, p99, p99.9, p99.99 and
/// the max; none when `hist` is empty.
/// The chart of `hist`, only for a person at a terminal: with `--json`, or into a file or
/// a pipe, the report stays as it was.
pub(super) fn terminal_chart(json: bool, hist: &Histogram<u64>) -> Vec<(&'static str, u64)> {
    if !json && io::stdout().is_terminal() {
        chart_rows(hist)
    } else {
        Vec::new()
    }
}

/// Prints a finished run's report: with `--json` the object on stdout and the human
/// report on stderr, else the human report on stdout.
pub(super) fn print(json: Option<Value>, human: &str) -> io::Result<()> {
    match json {
        Some(value) => {
            let text = serde_json::to_string(&value).map_err(io::Error::other)?;
            writeln!(io::stdout().lock(), "{text}")?;
            write!(io::stderr().lock(), "{human}")
        }
        None => write!(io::stdout().lock(), "{human}"),
    }
}

pub(super) fn chart_rows(hist: &Histogram<u64>) -> Vec<(&'static str, u64)> {
    if hist.is_empty() {
        return Vec::new();
    }
    let mut rows: Vec<(&'static str, u64)> = [
        ("p50", 0.5),
        ("p90", 0.9),
        ("p99", 0.99),
        ("p99.9", 0.999),
        ("p99.99", 0.9999),
    ]
    .iter()
    .map(|&(label, q)| (label, hist.value_at_quantile(q)))
    .collect();
    rows.push(("max", hist.max()));
    rows
}

/// A bar chart of `rows` (a label and a latency in ns each), one line a row: the label,
/// the latency in ms and a bar, the largest latency's `width` characters long, the others
/// in proportion to eighths of a character. A latency above 0 shows at least an eighth.
pub(super) fn bar_chart(rows: &[(&str, u64)], width: usize) -> String {
    const EIGHTHS: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];
    let top = rows.iter().map(|&(_, ns)| ns).max().unwrap_or(0);
    let mut s = String::new();
    for &(label, ns) in rows {
        let eighths = if top == 0 {
            0
        } else {
            let exact = ns as f64 / top as f64 * (width * 8) as f64;
            (exact.round() as usize).max(usize::from(ns > 0))
        };
        let bar = format!("{}{}", "█".repeat(eighths / 8), EIGHTHS[eighths % 8]);
        let line = format!("    {label:<7}{:>10.3} ms  {bar}", ns as f64 / 1e6);
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// `--tls`: the handshakes of the connections that got their welcome.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct HandshakeReport {
    pub(super) count: u64,
    /// How many resumed a session (`--tls-resume`).
    pub(super) resumed: u64,
    /// From the connection (the connect's end) to the end of the handshake.
    pub(super) latency: Option<Latency>,
    /// What the first one agreed on.
    pub(super) params: Option<TlsParams>,
}

#[derive(Debug, Clone)]
pub(super) struct Report {
    /// The server, as `--connect` named it once resolved.
    pub(super) addr: String,
    pub(super) mode: BenchMode,
    pub(super) connections: usize,
    pub(super) established: u64,
    /// The fewest verified replies one connection got (of those open at the end).
    pub(super) fewest_replies: Option<u64>,
    pub(super) threads: usize,
    pub(super) pipeline: usize,
    pub(super) size: usize,
    pub(super) duration_s: Option<f64>,
    pub(super) messages_target: Option<u64>,
    /// `--mode hold`: how often each connection sent a name.
    pub(super) every_s: Option<f64>,
    /// The open loop's target: names (in churn, connections) per second.
    pub(super) rate_target: Option<f64>,
    pub(super) setup_s: f64,
    pub(super) elapsed_s: f64,
    /// Verified replies.
    pub(super) messages: u64,
    /// Churn: connections that went all the way.
    pub(super) completed: u64,
    /// Reply latencies (in the open loop from when each name was due).
    pub(super) latency: Option<Latency>,
    /// From the connect call to the connection.
    pub(super) connect: Option<Latency>,
    /// From the connect call to the welcome.
    pub(super) first_reply: Option<Latency>,
    /// With `--tls`.
    pub(super) handshake: Option<HandshakeReport>,
    /// Kinds with a non-zero count.
    pub(super) errors: Vec<(&'static str, u64)>,
    /// The first detail of each kind.
    pub(super) examples: Vec<(Fail, String)>,
    /// The latencies to chart under the percentiles ([`chart_rows`]); none: no chart.
    pub(super) chart: Vec<(&'static str, u64)>,
}

impl Report {
    pub(super) fn messages_per_s(&self) -> f64 {
        self.per_s(self.messages)
    }

    /// Churn: completed connections per second.
    pub(super) fn completed_per_s(&self) -> f64 {
        self.per_s(self.completed)
    }

    fn per_s(&self, n: u64) -> f64 {
        if self.elapsed_s > 0.0 {
            n as f64 / self.elapsed_s
        } else {
            0.0
        }
    }

    /// What the rate counts, and how many of it came per second.
    fn rate_reached(&self) -> (&'static str, f64) {
        match self.mode {
            BenchMode::Churn => ("connections/s", self.completed_per_s()),
            _ => ("msg/s", self.messages_per_s()),
        }
    }

    pub(super) fn errors_total(&self) -> u64 {
        self.errors.iter().map(|&(_, n)| n).sum()
    }

    pub(super) fn mismatches(&self) -> u64 {
        self.errors
            .iter()
            .find(|(k, _)| *k == Fail::ReplyMismatch.name())
            .map_or(0, |&(_, n)| n)
    }

    pub(super) fn ok(&self) -> bool {
        self.errors_total() == 0
    }

    pub(super) fn to_json(&self) -> Value {
        let round = |x: f64, places: i32| {
            let f = 10f64.powi(places);
            (x * f).round() / f
        };
        let percentiles = |l: Option<Latency>| {
            l.map_or(Value::Null, |l| {
                json!({
                    "count": l.count, "p50": l.p50, "p90": l.p90, "p99": l.p99,
                    "p999": l.p999, "max": l.max, "mean": l.mean,
                })
            })
        };
        let latency = percentiles(self.latency);
        let handshake = self.handshake.as_ref().map_or(Value::Null, |h| {
            let p = h.params.as_ref();
            json!({
                "count": h.count,
                "resumed": h.resumed,
                "latency_us": percentiles(h.latency),
                "protocol": p.map(|p| &p.version),
                "cipher_suite": p.map(|p| &p.cipher_suite),
                "key_exchange": p.and_then(|p| p.key_exchange.as_ref()),
            })
        });
        let errors: Map<String, Value> = self
            .errors
            .iter()
            .map(|&(k, n)| (k.to_string(), json!(n)))
            .collect();
        let examples: Map<String, Value> = self
            .examples
            .iter()
            .map(|(k, s)| (k.name().to_string(), json!(s)))
            .collect();
        let mut j = json!({
            "addr": self.addr,
            "mode": self.mode.name(),
            "connections": self.connections,
            "established": self.established,
            "fewest_replies": self.fewest_replies,
            "threads": self.threads,
            "pipeline": self.pipeline,
            "size": self.size,
            "duration_s": self.duration_s,
            "messages_target": self.messages_target,
            "setup_s": round(self.setup_s, 3),
            "elapsed_s": round(self.elapsed_s, 3),
            "messages": self.messages,
            "messages_per_s": round(self.messages_per_s(), 1),
            "latency_us": latency,
            "tls": self.handshake.is_some(),
            "handshake": handshake,
            "errors": errors,
            "errors_total": self.errors_total(),
            "mismatches": self.mismatches(),
            "error_examples": examples,
            "ok": self.ok(),
            "connect_us": percentiles(self.connect),
            "first_reply_us": percentiles(self.first_reply),
        });
        // Built as an object just above.
        if let Some(map) = j.as_object_mut() {
            if let Some(h) = &self.handshake {
                map.insert("handshake_us".into(), percentiles(h.latency));
            }
            if let Some(target) = self.rate_target {
                map.insert("rate_target".into(), json!(round(target, 1)));
                map.insert(
                    "rate_reached".into(),
                    json!(round(self.rate_reached().1, 1)),
                );
            }
            if self.mode == BenchMode::Churn {
                map.insert("completed".into(), json!(self.completed));
                map.insert(
                    "completed_per_s".into(),
                    json!(round(self.completed_per_s(), 1)),
                );
            }
            if let Some(every) = self.every_s {
                map.insert("every_s".into(), json!(every));
            }
        }
        j
    }

    pub(super) fn human(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(s, "{}", self.headline());
        if self.mode == BenchMode::Churn {
            let _ = writeln!(
                s,
                "  connections {} completed in {:.2} s: {} connections/s, {} {}",
                group(self.completed),
                self.elapsed_s,
                group(self.completed_per_s().round() as u64),
                group(self.messages),
                noun(self.messages, "message", "messages")
            );
        } else {
            let _ = writeln!(
                s,
                "  messages    {} in {:.2} s (setup {:.2} s): {} msg/s{}",
                group(self.messages),
                self.elapsed_s,
                self.setup_s,
                group(self.messages_per_s().round() as u64),
                self.fewest_replies.map_or(String::new(), |f| format!(
                    ", at least {} a connection",
                    group(f)
                ))
            );
        }
        if let Some(target) = self.rate_target {
            let (unit, reached) = self.rate_reached();
            let _ = writeln!(s, "  rate        {}", rate_text(target, reached, unit));
        }
        // In the open loop a name's latency counts from when it was due.
        let due = if self.rate_target.is_some() && self.mode != BenchMode::Churn {
            "; from due times"
        } else {
            ""
        };
        match self.latency {
            Some(l) => {
                let _ = writeln!(
                    s,
                    "  latency µs  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  (mean {:.1}{due})",
                    l.p50, l.p90, l.p99, l.p999, l.max, l.mean
                );
            }
            None => s.push_str("  latency µs  (no replies)\n"),
        }
        s.push_str(&bar_chart(&self.chart, CHART_WIDTH));
        s.push_str(&self.phases());
        if let Some(h) = &self.handshake {
            let agreed = h.params.as_ref().map_or_else(String::new, |p| {
                let kx = p.key_exchange.as_ref().map_or("", |k| k.as_str());
                format!(", {} {} {kx}", p.version, p.cipher_suite)
                    .trim_end()
                    .to_string()
            });
            let _ = writeln!(
                s,
                "  tls         {} {} ({} resumed){agreed}",
                group(h.count),
                noun(h.count, "handshake", "handshakes"),
                group(h.resumed)
            );
        }
        if self.errors.is_empty() {
            s.push_str("  errors      none\n");
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k} {}", group(*n)))
                .collect();
            let _ = writeln!(
                s,
                "  errors      {}: {}",
                group(self.errors_total()),
                list.join(", ")
            );
        }
        let _ = writeln!(s, "  mismatches  {}", group(self.mismatches()));
        for (kind, detail) in &self.examples {
            let _ = match kind.hint() {
                Some(hint) => writeln!(s, "  first {}: {detail}; {hint}", kind.name()),
                None => writeln!(s, "  first {}: {detail}", kind.name()),
            };
        }
        s
    }

    /// The first line: where, what each connection did, how many, how.
    fn headline(&self) -> String {
        let n = self.connections as u64;
        let connections = format!("{} {}", group(n), noun(n, "connection", "connections"));
        let established = format!("({} established)", group(self.established));
        let threads = format!(
            "{} {}",
            self.threads,
            noun(self.threads as u64, "thread", "threads")
        );
        let names = format!("{}-byte names", self.size);
        let what = match self.mode {
            BenchMode::Pingpong => format!(
                "{connections} {established}, {threads}, pipeline {}, {names}",
                self.pipeline
            ),
            BenchMode::Churn => {
                format!("churn, {connections} at a time {established}, {threads}, {names}")
            }
            BenchMode::Hold => format!(
                "{connections} held for {}, every {} {established}, {threads}, {names}",
                self.duration_s.map_or_else(String::new, seconds),
                self.every_s.map_or_else(String::new, seconds)
            ),
        };
        format!("bench {}: {what}", self.addr)
    }

    /// The setup phases' distributions, a row each: count, p50, p90, p99, p99.9, max.
    fn phases(&self) -> String {
        let mut rows = vec![("connect", self.connect)];
        if let Some(h) = &self.handshake {
            rows.push(("handshake", h.latency));
        }
        rows.push(("first reply", self.first_reply));
        let mut s = format!(
            "  {:<16}{:>8}{:>10}{:>10}{:>10}{:>10}{:>10}\n",
            "setup µs", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        for (label, l) in rows {
            // Writing to a String cannot fail.
            let _ = match l {
                Some(l) => writeln!(
                    s,
                    "    {label:<14}{:>8}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>10.1}",
                    group(l.count),
                    l.p50,
                    l.p90,
                    l.p99,
                    l.p999,
                    l.max
                ),
                None => writeln!(s, "    {label:<14}{:>8}", 0),
            };
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::state::WorkerResults;

    #[test]
    fn percentiles_are_in_microseconds() {
        let mut t = WorkerResults::new().unwrap();
        assert_eq!(latency_summary(&t.hist), None);
        for us in 1..=1000u64 {
            t.hist.record(us * 1000).unwrap();
        }
        let l = latency_summary(&t.hist).unwrap();
        assert!((l.p50 - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.p99 - 990.0).abs() < 1.0, "{l:?}");
        assert!((l.max - 1000.0).abs() < 1.0, "{l:?}");
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max);
        assert_eq!(l.count, 1000);
    }

    /// A distribution of `count` whose percentiles are `p50` and up.
    fn latency(count: u64, p50: f64) -> Latency {
        Latency {
            count,
            p50,
            p90: p50 + 10.0,
            p99: p50 + 20.0,
            p999: p50 + 30.0,
            max: p50 + 40.0,
            mean: p50 + 1.0,
        }
    }

    fn report() -> Report {
        Report {
            addr: "127.0.0.1:9999".to_string(),
            mode: BenchMode::Pingpong,
            connections: 64,
            established: 64,
            fewest_replies: Some(3),
            threads: 2,
            pipeline: 1,
            size: 8,
            duration_s: Some(5.0),
            messages_target: None,
            every_s: None,
            rate_target: None,
            setup_s: 0.012,
            elapsed_s: 2.0,
            messages: 1_000_000,
            completed: 0,
            latency: Some(latency(1_000_000, 30.0)),
            connect: Some(latency(64, 0.5)),
            first_reply: Some(latency(64, 1.0)),
            handshake: None,
            errors: Vec::new(),
            examples: Vec::new(),
            chart: Vec::new(),
        }
    }

    #[test]
    fn report_json_and_text() {
        let r = report();
        assert!(r.ok());
        let j = r.to_json();
        assert_eq!(j["messages"], 1_000_000);
        assert_eq!(j["messages_per_s"], 500_000.0);
        assert_eq!(j["errors_total"], 0);
        assert_eq!(j["latency_us"]["p999"], 60.0);
        assert_eq!(j["latency_us"]["count"], 1_000_000);
        assert_eq!(j["ok"], true);
        assert_eq!(j["mode"], "pingpong");
        // Every distribution has one shape.
        for key in ["latency_us", "connect_us", "first_reply_us"] {
            let mut fields: Vec<&str> = j[key]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            fields.sort_unstable();
            assert_eq!(
                fields,
                ["count", "max", "mean", "p50", "p90", "p99", "p999"],
                "{key}"
            );
        }
        assert_eq!(j["connect_us"]["count"], 64);
        assert_eq!(j["first_reply_us"]["p50"], 1.0);
        // Only with TLS, a rate, churn or hold.
        for key in [
            "handshake_us",
            "rate_target",
            "rate_reached",
            "completed",
            "completed_per_s",
            "every_s",
        ] {
            assert!(j.get(key).is_none(), "{key}: {j}");
        }
        let text = r.human();
        assert!(text.contains("1,000,000 in 2.00 s"), "{text}");
        assert!(text.contains("500,000 msg/s"), "{text}");
        assert!(text.contains("errors      none"), "{text}");
        assert!(!text.contains('█'), "{text}");

        let mut bad = report();
        bad.errors = vec![("reply_mismatch", 2), ("eof", 1)];
        bad.examples = vec![(Fail::ReplyMismatch, "expected \"a\", got \"b\"".into())];
        bad.latency = None;
        assert!(!bad.ok());
        let j = bad.to_json();
        assert_eq!(j["errors_total"], 3);
        assert_eq!(j["mismatches"], 2);
        assert_eq!(j["errors"]["eof"], 1);
        assert!(j["latency_us"].is_null());
        let text = bad.human();
        assert!(
            text.contains("errors      3: reply_mismatch 2, eof 1"),
            "{text}"
        );
        assert!(text.contains("first reply_mismatch: expected"), "{text}");
    }

    #[test]
    fn bars_are_scaled_to_the_largest_latency() {
        let rows = [
            ("p50", 250_000),
            ("p90", 500_000),
            ("p99", 1_234_000),
            ("p99.9", 1_000),
            ("p99.99", 0),
            ("max", 2_000_000),
        ];
        assert_eq!(
            bar_chart(&rows, 8),
            "    p50         0.250 ms  █
    p90         0.500 ms  ██
    p99         1.234 ms  ████▉
    p99.9       0.001 ms  ▏
    p99.99      0.000 ms
    max         2.000 ms  ████████
"
        );
        assert_eq!(bar_chart(&[], 8), "");
        assert_eq!(bar_chart(&[("max", 0)], 8), "    max         0.000 ms\n");
    }

    #[test]
    fn the_chart_goes_under_the_percentiles_when_asked_for() {
        let mut t = WorkerResults::new().unwrap();
        assert!(chart_rows(&t.hist).is_empty());
        for us in 1..=10_000u64 {
            t.hist.record(us * 1000).unwrap();
        }
        let rows = chart_rows(&t.hist);
        let labels: Vec<&str> = rows.iter().map(|r| r.0).collect();
        assert_eq!(labels, ["p50", "p90", "p99", "p99.9", "p99.99", "max"]);
        assert!(rows.windows(2).all(|w| w[0].1 <= w[1].1), "{rows:?}");
        let mut r = report();
        r.chart = rows;
        let text = r.human();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[2].starts_with("  latency µs  p50"), "{text}");
        assert!(
            lines[3].starts_with("    p50         5.001 ms  ████"),
            "{text}"
        );
        assert!(lines[8].starts_with("    max        10.002 ms  "), "{text}");
        assert!(lines[8].ends_with(&"█".repeat(CHART_WIDTH)), "{text}");
        assert!(lines[9].starts_with("  setup µs"), "{text}");
        assert_eq!(lines[12], "  errors      none", "{text}");
    }

    #[test]
    fn the_setup_phases_are_rows_under_the_latency() {
        let mut r = report();
        r.first_reply = None;
        r.handshake = Some(HandshakeReport {
            count: 64,
            resumed: 0,
            latency: Some(latency(64, 900.0)),
            params: None,
        });
        let text = r.human();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            &lines[3..7],
            [
                "  setup µs           count       p50       p90       p99     p99.9       max",
                "    connect             64       0.5      10.5      20.5      30.5      40.5",
                "    handshake           64     900.0     910.0     920.0     930.0     940.0",
                "    first reply          0",
            ],
            "{text}"
        );
        assert_eq!(
            lines[7], "  tls         64 handshakes (0 resumed)",
            "{text}"
        );
        let j = r.to_json();
        assert_eq!(j["handshake_us"], j["handshake"]["latency_us"]);
        assert_eq!(j["handshake_us"]["p999"], 930.0);
        assert!(j["first_reply_us"].is_null(), "{j}");
    }

    #[test]
    fn a_rate_short_by_more_than_1_percent_says_by_how_much() {
        assert_eq!(
            rate_text(10_000.0, 7_912.0, "msg/s"),
            "target 10,000 msg/s, reached 7,912 msg/s: 20.9% short; the server or this \
             machine could not keep up"
        );
        assert_eq!(
            rate_text(2_000.0, 1_985.2, "msg/s"),
            "target 2,000 msg/s, reached 1,985 msg/s"
        );
        assert_eq!(
            rate_text(100.0, 98.9, "connections/s"),
            "target 100 connections/s, reached 98.9 connections/s: 1.1% short; the server \
             or this machine could not keep up"
        );
        assert_eq!(
            rate_text(0.5, 0.5, "msg/s"),
            "target 0.5 msg/s, reached 0.5 msg/s"
        );
        assert_eq!(
            rate_text(1000.0, 19.6, "msg/s"),
            "target 1,000 msg/s, reached 19.6 msg/s: 98.0% short; the server or this \
             machine could not keep up"
        );
    }

    #[test]
    fn each_mode_has_its_own_headline() {
        let mut r = report();
        r.rate_target = Some(600_000.0);
        let text = r.human();
        assert!(
            text.starts_with(
                "bench 127.0.0.1:9999: 64 connections (64 established), 2 threads, pipeline 1, \
                 8-byte names\n  messages    1,000,000 in 2.00 s (setup 0.01 s): 500,000 \
                 msg/s, at least 3 a connection\n  rate        target 600,000 msg/s, reached \
                 500,000 msg/s: 16.7% short;"
            ),
            "{text}"
        );
        assert!(text.contains("(mean 31.0; from due times)\n"), "{text}");
        let j = r.to_json();
        assert_eq!(j["rate_target"], 600_000.0);
        assert_eq!(j["rate_reached"], 500_000.0);

        let mut churn = report();
        churn.mode = BenchMode::Churn;
        churn.completed = 5_000;
        churn.messages = 5_000;
        churn.established = 5_001;
        churn.fewest_replies = None;
        churn.rate_target = Some(2_500.0);
        let text = churn.human();
        assert!(
            text.starts_with(
                "bench 127.0.0.1:9999: churn, 64 connections at a time (5,001 established), 2 \
                 threads, 8-byte names\n  connections 5,000 completed in 2.00 s: 2,500 \
                 connections/s, 5,000 messages\n  rate        target 2,500 connections/s, \
                 reached 2,500 connections/s\n"
            ),
            "{text}"
        );
        // The reply to a churn connection's one name goes out when its welcome comes.
        assert!(!text.contains("from due times"), "{text}");
        let j = churn.to_json();
        assert_eq!(j["mode"], "churn");
        assert_eq!(j["completed"], 5_000);
        assert_eq!(j["completed_per_s"], 2_500.0);
        assert_eq!(j["rate_reached"], 2_500.0);

        let mut hold = report();
        hold.mode = BenchMode::Hold;
        hold.connections = 1;
        hold.established = 1;
        hold.threads = 1;
        hold.duration_s = Some(60.0);
        hold.every_s = Some(0.5);
        hold.rate_target = Some(2.0);
        let text = hold.human();
        assert!(
            text.starts_with(
                "bench 127.0.0.1:9999: 1 connection held for 60 s, every 0.5 s (1 established), \
                 1 thread, 8-byte names\n"
            ),
            "{text}"
        );
        let j = hold.to_json();
        assert_eq!(j["mode"], "hold");
        assert_eq!(j["every_s"], 0.5);
        assert!(j.get("completed").is_none(), "{j}");
    }
}
