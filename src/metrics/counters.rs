//! The server's counters: bumped where each event happens, read whole into a
//! [`Snapshot`] at scrape time and written as Prometheus text.

use std::sync::atomic::{AtomicU64, Ordering};

use super::text_format::{MetricType, TextFormat};
use crate::connection::{CloseReason, Summary};

/// Why a connection was refused, as the `reason` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-connections` reached (or no thread could be started).
    Busy,
    /// `--max-per-source` reached for the client's address.
    PerSource,
    /// The address rules (`--allow`, `--deny`) do not let the client in, or, with
    /// `--proxy-protocol`, the peer is not a trusted proxy (`--proxy-from`).
    Rule,
    /// `--proxy-protocol`: the connection did not begin with a usable PROXY header.
    ProxyHeader,
}

impl Refusal {
    const ALL: [Refusal; 4] = [
        Refusal::Busy,
        Refusal::PerSource,
        Refusal::Rule,
        Refusal::ProxyHeader,
    ];

    /// The `reason` label's value.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Busy => "busy",
            Refusal::PerSource => "per_source",
            Refusal::Rule => "rule",
            Refusal::ProxyHeader => "proxy_header",
        }
    }
}

/// The `reason` labels of closes, in the order of [`close_index`].
const CLOSE_LABELS: [&str; 10] = [
    "exit",
    "client_closed",
    "idle",
    "shutdown",
    "read_error",
    "write_error",
    "tls_handshake",
    "tls_on_plain_port",
    "fault",
    "max_lifetime",
];

/// A close reason's place in [`CLOSE_LABELS`] (its `reason` label).
fn close_index(reason: CloseReason) -> usize {
    match reason {
        CloseReason::Exit => 0,
        CloseReason::ClientClosed => 1,
        CloseReason::Idle => 2,
        CloseReason::Shutdown => 3,
        CloseReason::ReadError(_) | CloseReason::TlsAlert(_) => 4,
        CloseReason::WriteError(_) => 5,
        CloseReason::Handshake => 6,
        CloseReason::TlsOnPlainPort => 7,
        CloseReason::Fault(_) => 8,
        CloseReason::Lifetime => 9,
    }
}

/// The server's counters, kept whether or not `--metrics` serves them: each is bumped
/// at most a few times per connection, never per line.
#[derive(Debug, Default)]
pub struct Counters {
    connections: AtomicU64,
    refusals: [AtomicU64; 4],
    closes: [AtomicU64; 10],
    replies: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    accept_errors: AtomicU64,
    tls_handshake_failures: AtomicU64,
}

impl Counters {
    /// A connection was admitted.
    pub fn admitted(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was refused.
    pub fn refused(&self, why: Refusal) {
        self.refusals[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection closed: its counts are folded in.
    pub fn closed(&self, summary: &Summary) {
        self.closes[close_index(summary.reason)].fetch_add(1, Ordering::Relaxed);
        self.replies.fetch_add(summary.replies, Ordering::Relaxed);
        self.bytes_in.fetch_add(summary.bytes_in, Ordering::Relaxed);
        self.bytes_out
            .fetch_add(summary.bytes_out, Ordering::Relaxed);
    }

    /// `accept` failed (other than by the listener's own timeout).
    pub fn accept_failed(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A TLS handshake failed.
    pub fn handshake_failed(&self) {
        self.tls_handshake_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now, with the gauges the caller reads at scrape time.
    pub fn snapshot(&self, open: usize, threads: Option<u64>) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            open: open as u64,
            connections: get(&self.connections),
            refusals: self.refusals.each_ref().map(get),
            closes: self.closes.each_ref().map(get),
            replies: get(&self.replies),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            accept_errors: get(&self.accept_errors),
            tls_handshake_failures: get(&self.tls_handshake_failures),
            threads,
        }
    }
}

/// The values of one scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Connections open now.
    pub open: u64,
    /// Connections admitted since start.
    pub connections: u64,
    /// Refusals, by [`Refusal`] (in its order).
    pub refusals: [u64; 4],
    /// Closes, by reason (in the order of the `reason` labels).
    pub closes: [u64; 10],
    /// Replies sent by closed connections.
    pub replies: u64,
    /// Bytes received by closed connections.
    pub bytes_in: u64,
    /// Bytes sent by closed connections.
    pub bytes_out: u64,
    /// Failed accepts.
    pub accept_errors: u64,
    /// Failed TLS handshakes.
    pub tls_handshake_failures: u64,
    /// The process's threads, if `/proc/self/status` says.
    pub threads: Option<u64>,
}

impl Snapshot {
    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = TextFormat::with_capacity(2048);
        out.single(
            "tcp_hello_connections_open",
            MetricType::Gauge,
            "Connections open now.",
            self.open,
        );
        out.single(
            "tcp_hello_connections_total",
            MetricType::Counter,
            "Connections admitted.",
            self.connections,
        );
        let labels = Refusal::ALL.iter().map(|why| why.label());
        out.by_label(
            "tcp_hello_refusals_total",
            MetricType::Counter,
            "Connections refused, by reason.",
            "reason",
            labels.zip(self.refusals),
        );
        out.by_label(
            "tcp_hello_closes_total",
            MetricType::Counter,
            "Connections closed, by reason.",
            "reason",
            CLOSE_LABELS.iter().copied().zip(self.closes),
        );
        out.single(
            "tcp_hello_replies_total",
            MetricType::Counter,
            "Replies sent, counted when their connection closes.",
            self.replies,
        );
        out.single(
            "tcp_hello_received_bytes_total",
            MetricType::Counter,
            "Bytes received, counted when their connection closes.",
            self.bytes_in,
        );
        out.single(
            "tcp_hello_sent_bytes_total",
            MetricType::Counter,
            "Bytes sent, counted when their connection closes.",
            self.bytes_out,
        );
        out.single(
            "tcp_hello_accept_errors_total",
            MetricType::Counter,
            "Failed accepts.",
            self.accept_errors,
        );
        out.single(
            "tcp_hello_tls_handshake_failures_total",
            MetricType::Counter,
            "TLS handshakes that failed.",
            self.tls_handshake_failures,
        );
        if let Some(threads) = self.threads {
            out.single(
                "tcp_hello_threads",
                MetricType::Gauge,
                "Threads of the process.",
                threads,
            );
        }
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;

    use super::*;

    #[test]
    fn renders_the_text_format_with_help_type_and_labels() {
        let snapshot = Snapshot {
            open: 2,
            connections: 5,
            refusals: [1, 2, 3, 4],
            closes: [1, 0, 0, 0, 0, 0, 0, 4, 0, 3],
            replies: 7,
            bytes_in: 10,
            bytes_out: 20,
            accept_errors: 0,
            tls_handshake_failures: 1,
            threads: Some(3),
        };
        let text = snapshot.render();
        for line in [
            "# HELP tcp_hello_connections_open Connections open now.",
            "# TYPE tcp_hello_connections_open gauge",
            "tcp_hello_connections_open 2",
            "# TYPE tcp_hello_connections_total counter",
            "tcp_hello_connections_total 5",
            "tcp_hello_refusals_total{reason=\"busy\"} 1",
            "tcp_hello_refusals_total{reason=\"per_source\"} 2",
            "tcp_hello_refusals_total{reason=\"rule\"} 3",
            "tcp_hello_refusals_total{reason=\"proxy_header\"} 4",
            "tcp_hello_closes_total{reason=\"exit\"} 1",
            "tcp_hello_closes_total{reason=\"tls_on_plain_port\"} 4",
            "tcp_hello_closes_total{reason=\"max_lifetime\"} 3",
            "tcp_hello_replies_total 7",
            "tcp_hello_received_bytes_total 10",
            "tcp_hello_sent_bytes_total 20",
            "tcp_hello_accept_errors_total 0",
            "tcp_hello_tls_handshake_failures_total 1",
            "# TYPE tcp_hello_threads gauge",
            "tcp_hello_threads 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with('\n'));
        // Every sample's metric has exactly one TYPE line, before it.
        for sample in text.lines().filter(|l| !l.starts_with('#')) {
            let name = sample.split(['{', ' ']).next().unwrap();
            let typed = format!("# TYPE {name} ");
            let at = text.find(&typed).expect(&typed);
            assert!(at < text.find(sample).unwrap());
            assert_eq!(text.matches(&typed).count(), 1);
        }
    }

    #[test]
    fn without_a_thread_count_the_threads_gauge_is_left_out() {
        let text = Snapshot::default().render();
        assert!(!text.contains("tcp_hello_threads"));
        assert!(text.contains("tcp_hello_closes_total{reason=\"shutdown\"} 0"));
    }

    #[test]
    fn closes_fold_in_their_summary() {
        let counters = Counters::default();
        counters.admitted();
        counters.refused(Refusal::Rule);
        counters.closed(&Summary {
            replies: 2,
            bytes_in: 11,
            bytes_out: 40,
            reason: CloseReason::WriteError(ErrorKind::BrokenPipe),
        });
        let s = counters.snapshot(0, None);
        assert_eq!((s.connections, s.refusals), (1, [0, 0, 1, 0]));
        assert_eq!(
            s.closes[close_index(CloseReason::WriteError(ErrorKind::Other))],
            1
        );
        assert_eq!((s.replies, s.bytes_in, s.bytes_out), (2, 11, 40));
        assert_eq!(CLOSE_LABELS[5], "write_error");
    }
}
