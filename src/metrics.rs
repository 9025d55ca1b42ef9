//! `--metrics`: the server's counters, and the Prometheus text format over HTTP.
//!
//! The counters are relaxed atomics bumped where each event happens; per-connection
//! counts (replies, bytes) are folded in once, when the connection closes. A scrape
//! reads them, and the live-connection count once under the registry's lock, on the
//! metrics thread of its own: it never holds up accepting or serving.

use std::fmt::Write as _;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use slab::Slab;

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
const CLOSE_LABELS: [&str; 8] = [
    "exit",
    "client_closed",
    "idle",
    "shutdown",
    "read_error",
    "write_error",
    "tls_handshake",
    "tls_on_plain_port",
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
    }
}

/// The server's counters, kept whether or not `--metrics` serves them: each is bumped
/// at most a few times per connection, never per line.
#[derive(Debug, Default)]
pub struct Counters {
    connections: AtomicU64,
    refusals: [AtomicU64; 4],
    closes: [AtomicU64; 8],
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
    pub closes: [u64; 8],
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

/// A metric's type, as its `# TYPE` line says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
}

/// Writes the Prometheus text exposition format (version 0.0.4): each metric's `# HELP`
/// and `# TYPE` lines, then its samples. The TCP server's counters and the UDP
/// server's are both written with it, so a scrape reads as one.
#[derive(Debug)]
pub struct TextFormat {
    out: String,
}

impl TextFormat {
    /// An empty exposition with room for `bytes`.
    pub fn with_capacity(bytes: usize) -> TextFormat {
        TextFormat {
            out: String::with_capacity(bytes),
        }
    }

    /// A metric with one sample, without labels.
    pub fn single(&mut self, name: &str, kind: MetricType, help: &str, value: u64) {
        self.header(name, kind, help);
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// A metric with one sample per value of its one label.
    pub fn by_label<'a>(
        &mut self,
        name: &str,
        kind: MetricType,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        self.header(name, kind, help);
        for (value_of_label, value) in samples {
            let shown = escape_label(value_of_label);
            let _ = writeln!(self.out, "{name}{{{label}=\"{shown}\"}} {value}");
        }
    }

    /// The text written.
    pub fn finish(self) -> String {
        self.out
    }

    fn header(&mut self, name: &str, kind: MetricType, help: &str) {
        let kind = match kind {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
}

/// A label's value as the text format writes it: backslash, double quote and line feed
/// escaped, so that no value can end its sample's line or quotes early.
fn escape_label(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.into()
}

/// The `Threads:` count of a `/proc/PID/status` text.
pub fn threads_in_status(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

/// The process's threads now (Linux; `None` elsewhere).
pub fn threads() -> Option<u64> {
    threads_in_status(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// The longest one scraper may take, from its connection to the end of its answer,
/// however it spaces its bytes.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// Scrapers served at once. A new one beyond them takes the place of the oldest, so
/// connections that send nothing cannot keep a scraper out.
pub const MAX_SCRAPERS: usize = 64;

/// The longest request head read; the rest is ignored.
const MAX_REQUEST: usize = 4096;

/// How long the metrics thread waits before accepting again after `accept` failed for
/// another reason than an aborted connection (out of descriptors, say): it must not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The listener's token; a scraper's is its slab key plus one.
const LISTENER: Token = Token(0);

/// Binds the metrics listener; the error names the address.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen for metrics on {addr}: {e}"),
        )
    })
}

/// Serves `GET /metrics` on `listener` from a thread of its own; `scrape` renders the
/// page. The thread ends with the process.
///
/// A minimal responder rather than an HTTP library: one path, one method, no keep-alive.
/// Its scrapers are served together, without blocking on any, each within
/// [`SCRAPE_TIMEOUT`] of its connection, at most [`MAX_SCRAPERS`] at once: a slow or
/// hostile scraper holds one place for two seconds and delays no one, and never costs a
/// thread.
pub fn spawn<F>(listener: TcpListener, scrape: F) -> io::Result<thread::JoinHandle<()>>
where
    F: Fn() -> String + Send + 'static,
{
    listener.set_nonblocking(true)?;
    let mut listener = mio::net::TcpListener::from_std(listener);
    let poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut responder = Responder {
        poll,
        listener,
        scrapers: Slab::with_capacity(MAX_SCRAPERS),
        accept_after: None,
        scrape,
    };
    // The server starts it before it installs its signal handlers.
    crate::signals::spawn_blocking_stops(thread::Builder::new().name("metrics".into()), move || {
        responder.run()
    })
}

/// The metrics thread's state.
struct Responder<F> {
    poll: Poll,
    listener: mio::net::TcpListener,
    scrapers: Slab<Scraper>,
    /// When to accept again after `accept` failed.
    accept_after: Option<Instant>,
    scrape: F,
}

/// One scraper's connection: its request head as far as it came, then its answer.
struct Scraper {
    stream: mio::net::TcpStream,
    /// When it is closed, answered or not.
    deadline: Instant,
    head: Vec<u8>,
    /// The answer and how much of it is sent, once the head is read.
    answer: Option<(Vec<u8>, usize)>,
}

/// What to do with a scraper after some progress.
enum Next {
    Wait,
    Close,
}

impl<F: Fn() -> String> Responder<F> {
    fn run(&mut self) {
        let mut events = Events::with_capacity(MAX_SCRAPERS + 1);
        loop {
            let wake = self
                .scrapers
                .iter()
                .map(|(_, s)| s.deadline)
                .chain(self.accept_after)
                .min();
            let timeout = wake.map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != ErrorKind::Interrupted {
                    log::debug!("metrics poll: {e}");
                    thread::sleep(ACCEPT_BACKOFF);
                }
                continue;
            }
            for event in &events {
                match event.token() {
                    LISTENER => self.accept(),
                    Token(n) => self.progress(n - 1),
                }
            }
            let now = Instant::now();
            if self.accept_after.is_some_and(|at| at <= now) {
                self.accept_after = None;
                self.accept();
            }
            let late: Vec<usize> = self
                .scrapers
                .iter()
                .filter(|(_, s)| s.deadline <= now)
                .map(|(key, _)| key)
                .collect();
            for key in late {
                log::debug!("metrics: a scraper took longer than {SCRAPE_TIMEOUT:?}; closed");
                self.close(key);
            }
        }
    }

    /// Accepts every waiting connection: readiness is reported once per arrival.
    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    log::debug!("metrics accept: {e}");
                    self.accept_after = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    /// Takes a new scraper, in the place of the oldest when every place is taken.
    fn admit(&mut self, mut stream: mio::net::TcpStream) {
        if self.scrapers.len() >= MAX_SCRAPERS {
            let oldest = self
                .scrapers
                .iter()
                .min_by_key(|(_, s)| s.deadline)
                .map(|(key, _)| key);
            if let Some(key) = oldest {
                log::debug!("metrics: {MAX_SCRAPERS} scrapers at once; the oldest is closed");
                self.close(key);
            }
        }
        let entry = self.scrapers.vacant_entry();
        let token = Token(entry.key() + 1);
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::debug!("metrics: {e}");
            return;
        }
        let key = entry.key();
        entry.insert(Scraper {
            stream,
            deadline: Instant::now() + SCRAPE_TIMEOUT,
            head: Vec::new(),
            answer: None,
        });
        // Bytes that came with the connection were reported before it was registered.
        self.progress(key);
    }

    /// Reads what scraper `key` sent, or sends what is left of its answer.
    fn progress(&mut self, key: usize) {
        let Some(scraper) = self.scrapers.get_mut(key) else {
            return;
        };
        let next = match scraper.step(&self.scrape) {
            Ok(next) => next,
            Err(e) => {
                log::debug!("metrics: {e}");
                Next::Close
            }
        };
        if let Next::Close = next {
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut scraper) = self.scrapers.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut scraper.stream);
        }
    }
}

impl Scraper {
    /// Reads until the head is complete (or [`MAX_REQUEST`] bytes, or the end), then
    /// writes the answer until it is sent or the socket is full.
    fn step<F: Fn() -> String>(&mut self, scrape: &F) -> io::Result<Next> {
        if self.answer.is_none() {
            let mut buf = [0u8; MAX_REQUEST];
            let mut ended = false;
            while self.head.len() < MAX_REQUEST && !self.head.windows(4).any(|w| w == b"\r\n\r\n") {
                let room = MAX_REQUEST - self.head.len();
                match self.stream.read(&mut buf[..room]) {
                    Ok(0) => {
                        ended = true;
                        break;
                    }
                    Ok(n) => self.head.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Next::Wait),
                    Err(e) => return Err(e),
                }
            }
            if ended && self.head.is_empty() {
                return Ok(Next::Close);
            }
            self.answer = Some((answer(&self.head, scrape).into_bytes(), 0));
        }
        let Some((answer, sent)) = &mut self.answer else {
            return Ok(Next::Close);
        };
        while *sent < answer.len() {
            match self.stream.write(&answer[*sent..]) {
                Ok(0) => return Ok(Next::Close),
                Ok(n) => *sent += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Next::Wait),
                Err(e) => return Err(e),
            }
        }
        Ok(Next::Close)
    }
}

/// The whole HTTP response to a request head.
fn answer<F: Fn() -> String>(head: &[u8], scrape: &F) -> String {
    let (status, body) = respond(head, scrape);
    let content_type = if status == "200 OK" {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The status line's text and the body for a request head.
fn respond<F: Fn() -> String>(head: &[u8], scrape: &F) -> (&'static str, String) {
    let line = head
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(&[]);
    let mut words = line.split(|&b| b == b' ');
    let (method, target) = (words.next(), words.next());
    let Some(target) = target else {
        return ("400 Bad Request", "bad request\n".into());
    };
    let path = target.split(|&b| b == b'?').next().unwrap_or(target);
    if path != b"/metrics" {
        return ("404 Not Found", "not found: try /metrics\n".into());
    }
    if method != Some(b"GET".as_slice()) {
        return ("405 Method Not Allowed", "only GET\n".into());
    }
    ("200 OK", scrape())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format_with_help_type_and_labels() {
        let snapshot = Snapshot {
            open: 2,
            connections: 5,
            refusals: [1, 2, 3, 4],
            closes: [1, 0, 0, 0, 0, 0, 0, 4],
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
    fn the_writer_escapes_label_values() {
        let mut out = TextFormat::with_capacity(0);
        out.by_label(
            "m",
            MetricType::Counter,
            "Help.",
            "l",
            [("plain", 1), ("a\\b\"c\nd", 2)],
        );
        assert_eq!(
            out.finish(),
            "# HELP m Help.\n# TYPE m counter\nm{l=\"plain\"} 1\nm{l=\"a\\\\b\\\"c\\nd\"} 2\n"
        );
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

    #[test]
    fn reads_threads_from_proc_status() {
        let status = "Name:\ttcp-hello\nState:\tS (sleeping)\nThreads:\t17\nSigQ:\t0/1\n";
        assert_eq!(threads_in_status(status), Some(17));
        assert_eq!(threads_in_status("Name:\tx\n"), None);
        if cfg!(target_os = "linux") {
            assert!(threads().is_some_and(|n| n >= 1));
        }
    }

    #[test]
    fn answers_metrics_404_elsewhere_and_400_for_garbage() {
        let scrape = || "x 1\n".to_string();
        let req = |head: &str| respond(head.as_bytes(), &scrape);
        assert_eq!(
            req("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("200 OK", "x 1\n".into())
        );
        assert_eq!(req("GET /metrics?a=b HTTP/1.0\r\n\r\n").0, "200 OK");
        assert_eq!(req("GET /other HTTP/1.1\r\n\r\n").0, "404 Not Found");
        assert_eq!(req("GET / HTTP/1.1\r\n\r\n").0, "404 Not Found");
        assert_eq!(
            req("POST /metrics HTTP/1.1\r\n\r\n").0,
            "405 Method Not Allowed"
        );
        assert_eq!(req("").0, "400 Bad Request");
        assert_eq!(req("garbage\r\n\r\n").0, "400 Bad Request");
    }
}
