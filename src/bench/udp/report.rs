//! The report of a `--udp` run, as text and as JSON: the TCP report's keys where they
//! mean the same (`messages` are the replies that matched), and what datagrams add.

use std::fmt::Write as _;
use std::net::SocketAddr;

use serde_json::{Map, Value, json};

use super::tally::UdpFail;
use crate::bench::progress::group;
use crate::bench::report::{CHART_WIDTH, Latency, bar_chart, rate_text};
use crate::plural::noun;

#[derive(Debug, Clone)]
pub(in crate::bench) struct UdpReport {
    pub(in crate::bench) addr: SocketAddr,
    pub(in crate::bench) sockets: usize,
    pub(in crate::bench) threads: usize,
    pub(in crate::bench) pipeline: usize,
    pub(in crate::bench) size: usize,
    pub(in crate::bench) duration_s: Option<f64>,
    pub(in crate::bench) messages_target: Option<u64>,
    /// `--rate`: datagrams per second scheduled.
    pub(in crate::bench) rate: Option<f64>,
    /// `None`: no timeout.
    pub(in crate::bench) timeout_s: Option<f64>,
    pub(in crate::bench) elapsed_s: f64,
    pub(in crate::bench) sent: u64,
    /// Replies that matched their datagram.
    pub(in crate::bench) replies: u64,
    pub(in crate::bench) lost: u64,
    pub(in crate::bench) duplicates: u64,
    pub(in crate::bench) late: u64,
    pub(in crate::bench) latency: Option<Latency>,
    /// Kinds with a non-zero count.
    pub(in crate::bench) errors: Vec<(UdpFail, u64)>,
    /// The first detail of each kind.
    pub(in crate::bench) examples: Vec<(UdpFail, String)>,
    /// The latencies to chart under the percentiles; none: no chart.
    pub(in crate::bench) chart: Vec<(&'static str, u64)>,
}

impl UdpReport {
    pub(in crate::bench) fn replies_per_s(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.replies as f64 / self.elapsed_s
        } else {
            0.0
        }
    }

    /// Datagrams sent per second.
    pub(in crate::bench) fn sent_per_s(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.sent as f64 / self.elapsed_s
        } else {
            0.0
        }
    }

    pub(in crate::bench) fn lost_percent(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.lost as f64 * 100.0 / self.sent as f64
        }
    }

    pub(in crate::bench) fn errors_total(&self) -> u64 {
        self.errors.iter().map(|&(_, n)| n).sum()
    }

    fn count(&self, kind: UdpFail) -> u64 {
        (self.errors.iter())
            .find(|(k, _)| *k == kind)
            .map_or(0, |&(_, n)| n)
    }

    /// Every reply matched and nothing failed; loss, duplicates and late replies are
    /// UDP's and fail nothing.
    pub(in crate::bench) fn ok(&self) -> bool {
        self.errors_total() == 0
    }

    pub(in crate::bench) fn to_json(&self) -> Value {
        let round = |x: f64, places: i32| {
            let f = 10f64.powi(places);
            (x * f).round() / f
        };
        let latency = self.latency.map_or(Value::Null, |l| {
            json!({
                "count": l.count, "p50": l.p50, "p90": l.p90, "p99": l.p99,
                "p999": l.p999, "max": l.max, "mean": l.mean,
            })
        });
        let errors: Map<String, Value> = (self.errors.iter())
            .map(|&(k, n)| (k.name().to_string(), json!(n)))
            .collect();
        let examples: Map<String, Value> = (self.examples.iter())
            .map(|(k, s)| (k.name().to_string(), json!(s)))
            .collect();
        let mut j = json!({
            "mode": "udp",
            "addr": self.addr.to_string(),
            "connections": self.sockets,
            "threads": self.threads,
            "pipeline": self.pipeline,
            "size": self.size,
            "duration_s": self.duration_s,
            "messages_target": self.messages_target,
            "timeout_s": self.timeout_s,
            "elapsed_s": round(self.elapsed_s, 3),
            "sent": self.sent,
            "messages": self.replies,
            "lost": self.lost,
            "lost_percent": round(self.lost_percent(), 3),
            "duplicates": self.duplicates,
            "late": self.late,
            "messages_per_s": round(self.replies_per_s(), 1),
            "latency_us": latency,
            "errors": errors,
            "errors_total": self.errors_total(),
            "mismatches": self.count(UdpFail::ReplyMismatch),
            "error_examples": examples,
            "ok": self.ok(),
        });
        if let (Some(target), Some(map)) = (self.rate, j.as_object_mut()) {
            map.insert("rate_target".into(), json!(round(target, 1)));
            map.insert("rate_reached".into(), json!(round(self.sent_per_s(), 1)));
        }
        j
    }

    pub(in crate::bench) fn human(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            s,
            "bench udp {}: {} {}, {} {}, {} in flight each, {}-byte names",
            self.addr,
            group(self.sockets as u64),
            noun(self.sockets as u64, "socket", "sockets"),
            self.threads,
            noun(self.threads as u64, "thread", "threads"),
            group(self.pipeline as u64),
            self.size,
        );
        let _ = writeln!(
            s,
            "  datagrams   {} sent, {} {}, {} lost ({:.2}%) in {:.2} s: {} replies/s",
            group(self.sent),
            group(self.replies),
            noun(self.replies, "reply", "replies"),
            group(self.lost),
            self.lost_percent(),
            self.elapsed_s,
            group(self.replies_per_s().round() as u64),
        );
        if let Some(target) = self.rate {
            let _ = writeln!(
                s,
                "  rate        {}",
                rate_text(target, self.sent_per_s(), "datagrams/s")
            );
        }
        match self.latency {
            Some(l) => {
                let _ = writeln!(
                    s,
                    "  latency µs  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  (mean {:.1})",
                    l.p50, l.p90, l.p99, l.p999, l.max, l.mean
                );
            }
            None => s.push_str("  latency µs  (no replies)\n"),
        }
        s.push_str(&bar_chart(&self.chart, CHART_WIDTH));
        if self.duplicates > 0 || self.late > 0 {
            let _ = writeln!(
                s,
                "  unmatched   {} {}, {} late {}",
                group(self.duplicates),
                noun(self.duplicates, "duplicate", "duplicates"),
                group(self.late),
                noun(self.late, "reply", "replies"),
            );
        }
        if self.errors.is_empty() {
            s.push_str("  errors      none\n");
        } else {
            let list: Vec<String> = (self.errors.iter())
                .map(|(k, n)| format!("{} {}", k.name(), group(*n)))
                .collect();
            let _ = writeln!(
                s,
                "  errors      {}: {}",
                group(self.errors_total()),
                list.join(", ")
            );
        }
        let _ = writeln!(
            s,
            "  mismatches  {}",
            group(self.count(UdpFail::ReplyMismatch))
        );
        for (kind, detail) in &self.examples {
            let _ = match kind.hint(self.addr) {
                Some(hint) => writeln!(s, "  first {}: {detail}; {hint}", kind.name()),
                None => writeln!(s, "  first {}: {detail}", kind.name()),
            };
        }
        if self.lost > 0 {
            let within = self
                .timeout_s
                .map_or_else(String::new, |t| format!(" within {t} s"));
            let _ = write!(
                s,
                "  lost: {} {} no reply{within}",
                group(self.lost),
                noun(self.lost, "datagram got", "datagrams got"),
            );
            // Each wrong reply counts its datagram lost; the rest got none.
            let wrong = self.count(UdpFail::ReplyMismatch);
            if wrong > 0 {
                s.push_str(" or a wrong one");
            }
            if self.lost > wrong {
                s.push_str(
                    ": a server drops what one address sends past its --udp-rate (default \
                     1000/s; --udp-rate 0 lifts it), a full socket buffer drops the rest; lower \
                     --pipeline or --rate to see which",
                );
            }
            if self.late > 0 {
                let _ = write!(s, "; late replies say --timeout is too short: raise it");
            }
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> UdpReport {
        UdpReport {
            addr: "127.0.0.1:9999".parse().unwrap(),
            sockets: 4,
            threads: 1,
            pipeline: 16,
            size: 8,
            duration_s: Some(5.0),
            messages_target: None,
            rate: None,
            timeout_s: Some(1.0),
            elapsed_s: 2.0,
            sent: 1_000_064,
            replies: 1_000_000,
            lost: 64,
            duplicates: 0,
            late: 0,
            latency: Some(Latency {
                count: 1_000_000,
                p50: 30.0,
                p90: 40.0,
                p99: 50.0,
                p999: 60.0,
                max: 70.0,
                mean: 31.0,
            }),
            errors: Vec::new(),
            examples: Vec::new(),
            chart: Vec::new(),
        }
    }

    #[test]
    fn report_json_has_the_tcp_keys_and_the_datagram_counts() {
        let r = report();
        assert!(r.ok());
        let j = r.to_json();
        assert_eq!(j["mode"], "udp");
        assert_eq!(j["connections"], 4);
        assert_eq!(j["sent"], 1_000_064);
        assert_eq!(j["messages"], 1_000_000);
        assert_eq!(j["lost"], 64);
        assert_eq!(j["lost_percent"], 0.006);
        assert_eq!(j["messages_per_s"], 500_000.0);
        assert_eq!(j["errors_total"], 0);
        assert_eq!(j["mismatches"], 0);
        assert_eq!(j["ok"], true);
        let latency = j["latency_us"].as_object().unwrap();
        let keys: Vec<&str> = latency.keys().map(String::as_str).collect();
        let mut want = ["count", "p50", "p90", "p99", "p999", "max", "mean"];
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(j["latency_us"]["count"], 1_000_000);
        assert_eq!(j["latency_us"]["p999"], 60.0);

        let text = r.human();
        assert!(
            text.starts_with(
                "bench udp 127.0.0.1:9999: 4 sockets, 1 thread, 16 in flight each, 8-byte names\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "  datagrams   1,000,064 sent, 1,000,000 replies, 64 lost (0.01%) in 2.00 s: \
                 500,000 replies/s\n"
            ),
            "{text}"
        );
        assert!(text.contains("errors      none"), "{text}");
        assert!(!text.contains("unmatched"), "{text}");
        assert!(
            text.contains("  lost: 64 datagrams got no reply within 1 s: "),
            "{text}"
        );
        assert!(!text.contains("late replies"), "{text}");
    }

    #[test]
    fn failures_duplicates_and_late_replies_are_told_apart() {
        let mut r = report();
        r.sockets = 1;
        r.rate = Some(20_000.0);
        r.lost = 1;
        r.duplicates = 1;
        r.late = 2;
        r.latency = None;
        r.errors = vec![(UdpFail::PortUnreachable, 1), (UdpFail::ReplyMismatch, 3)];
        r.examples = vec![
            (UdpFail::PortUnreachable, "nothing listens".into()),
            (UdpFail::ReplyMismatch, "expected \"a\", got \"b\"".into()),
        ];
        assert!(!r.ok());
        let j = r.to_json();
        assert_eq!(j["errors_total"], 4);
        assert_eq!(j["mismatches"], 3);
        assert_eq!(j["errors"]["port_unreachable"], 1);
        assert_eq!(j["duplicates"], 1);
        assert_eq!(j["late"], 2);
        assert_eq!(j["rate_target"], 20_000.0);
        assert_eq!(j["rate_reached"], 500_032.0);
        assert!(j["latency_us"].is_null());
        let text = r.human();
        assert!(text.contains("1 socket, 1 thread"), "{text}");
        assert!(
            text.contains(
                "\n  rate        target 20,000 datagrams/s, reached 500,032 datagrams/s\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  unmatched   1 duplicate, 2 late replies\n"),
            "{text}"
        );
        assert!(
            text.contains("  errors      4: port_unreachable 1, reply_mismatch 3\n"),
            "{text}"
        );
        assert!(text.contains("  mismatches  3\n"), "{text}");
        assert!(
            text.contains(
                "  first port_unreachable: nothing listens; is `tcp-hello serve --udp-bind \
                 127.0.0.1:9999` running?"
            ),
            "{text}"
        );
        assert!(
            text.contains("  lost: 1 datagram got no reply within 1 s or a wrong one; late"),
            "{text}"
        );
        assert!(
            text.contains("late replies say --timeout is too short"),
            "{text}"
        );
    }
}
