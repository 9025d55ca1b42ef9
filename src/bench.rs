//! `tcp-hello bench`: a load generator for the greeting protocol.
//!
//! `--threads` workers each drive a share of the connections with their own
//! `mio::Poll`: non-blocking sockets, one reused read buffer per connection, all
//! pipelined names of a connection in one write, one clock read per read or
//! write call. Connections are opened at a bounded rate with a bounded number of
//! setups (connect + welcome) in flight; once every connection has its welcome
//! or has failed, all of them start sending at the same instant, so the measured
//! interval is spent at full load. Every reply is checked byte for byte against
//! `--expect`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Read, Write};
use std::iter;
use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use serde_json::{Map, Value, json};

use crate::cli::BenchArgs;

/// Connection setups (connect + welcome) in flight at once over all workers:
/// few enough that a burst cannot overflow a 128-entry listen backlog.
const SETUPS_IN_FLIGHT: usize = 64;
/// Read buffer per connection, unless one expected reply needs more.
const READ_BUF: usize = 4096;
/// How often workers look for timed-out connections.
const TICK: Duration = Duration::from_millis(50);
/// How often the coordinating thread checks the start barrier and progress.
const COORDINATOR_TICK: Duration = Duration::from_millis(10);
/// Longest wait for the server to close a connection after `exit`.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Largest latency the histogram tells apart (an hour, in ns); larger ones are clamped.
const HIST_MAX_NS: u64 = 3_600_000_000_000;
/// Run time when neither `--duration` nor `--messages` is given.
const DEFAULT_SECS: f64 = 5.0;
/// Largest `--pipeline` × (`--size` + 1): the write buffer of one connection.
const MAX_BATCH_BYTES: usize = 64 << 20;
/// Reserved for the worker's waker; connection tokens are indices into its list.
const WAKE: Token = Token(usize::MAX);

/// How a finished run went, for the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Ran to the end; every reply matched and nothing failed.
    Passed,
    /// Ran to the end with errors or mismatches.
    Failed,
    /// Ended early by Ctrl-C; the report covers the run so far.
    Interrupted,
}

/// Runs the benchmark described by `args`, prints progress and the report, and says
/// how it went.
///
/// Progress goes to stderr. The report goes to stdout, or with `--json` one JSON
/// object goes to stdout and the human report to stderr. It is an error when no
/// connection at all could be set up; the message names the likely cause and fix.
pub fn run(args: &BenchArgs) -> io::Result<Outcome> {
    let cfg = Arc::new(Config::from_args(args)?);
    // The first Ctrl-C ends the run early with a report of what was measured; a second
    // one exits at once.
    let interrupted = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register_conditional_shutdown(
        signal_hook::consts::SIGINT,
        130,
        Arc::clone(&interrupted),
    )?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&interrupted))?;
    let t0 = Instant::now();
    let shared = Arc::new(Shared {
        interrupted,
        t0,
        start: OnceLock::new(),
        budget: cfg.messages.map(AtomicU64::new),
        stats: (0..cfg.threads).map(|_| Stats::default()).collect(),
    });

    let mut wakers = Vec::with_capacity(cfg.threads);
    let mut handles = Vec::with_capacity(cfg.threads);
    for index in 0..cfg.threads {
        let poll = Poll::new()?;
        wakers.push(Waker::new(poll.registry(), WAKE)?);
        let worker = Worker::new(index, poll, Arc::clone(&cfg), Arc::clone(&shared))?;
        let handle = thread::Builder::new()
            .name(format!("bench-{index}"))
            .spawn(move || worker.run())?;
        handles.push(handle);
    }

    let mut progress = Progress::new(io::stderr().is_terminal(), t0);
    let mut started = None;
    while !handles.iter().all(|h| h.is_finished()) {
        thread::sleep(COORDINATOR_TICK);
        let now = Instant::now();
        let snap = shared.snapshot();
        if started.is_none() && snap.settled >= cfg.connections as u64 {
            started = Some(now);
            // Workers also look at `start` on every tick, so a failed wake only delays them.
            let _ = shared.start.set(now);
            for waker in &wakers {
                if let Err(e) = waker.wake() {
                    log::debug!("waking a bench worker: {e}");
                }
            }
        }
        progress.update(now, started, &snap, cfg.connections);
    }
    progress.finish();
    if shared.interrupted.load(Relaxed) {
        writeln!(
            io::stderr().lock(),
            "bench: interrupted; the report covers the run so far"
        )?;
    }

    let mut total = Tally::new()?;
    for handle in handles {
        let tally = handle
            .join()
            .map_err(|_| io::Error::other("a bench worker thread panicked"))??;
        total.merge(tally)?;
    }
    if total.established == 0 {
        return Err(no_connection_error(cfg.addr, cfg.timeout, &total));
    }

    let start = started.unwrap_or(t0);
    let report = Report {
        addr: cfg.addr,
        connections: cfg.connections,
        established: total.established,
        threads: cfg.threads,
        pipeline: cfg.pipeline,
        size: cfg.size,
        duration_s: cfg.duration.map(|d| d.as_secs_f64()),
        messages_target: cfg.messages,
        setup_s: start.duration_since(t0).as_secs_f64(),
        elapsed_s: total
            .last_reply
            .map_or(0.0, |t| t.saturating_duration_since(start).as_secs_f64()),
        messages: total.ok,
        latency: latency_summary(&total.hist),
        errors: Fail::ALL
            .iter()
            .map(|&f| (f.name(), total.errors[f as usize]))
            .filter(|&(_, n)| n > 0)
            .collect(),
        examples: total
            .examples
            .iter()
            .map(|(f, s)| (f.name(), s.clone()))
            .collect(),
    };
    if args.json {
        let text = serde_json::to_string(&report.to_json()).map_err(io::Error::other)?;
        writeln!(io::stdout().lock(), "{text}")?;
        write!(io::stderr().lock(), "{}", report.human())?;
    } else {
        write!(io::stdout().lock(), "{}", report.human())?;
    }
    Ok(if shared.interrupted.load(Relaxed) {
        Outcome::Interrupted
    } else if report.ok() {
        Outcome::Passed
    } else {
        Outcome::Failed
    })
}

// ---------------------------------------------------------------- configuration

/// `BenchArgs`, checked and resolved.
#[derive(Debug)]
struct Config {
    addr: SocketAddr,
    connections: usize,
    threads: usize,
    pipeline: usize,
    size: usize,
    template: Template,
    timeout: Duration,
    /// `None` in messages mode.
    duration: Option<Duration>,
    messages: Option<u64>,
    connect_rate: u64,
    /// Setups in flight per worker.
    setup_limit: usize,
    read_cap: usize,
    close_grace: Duration,
}

impl Config {
    fn from_args(a: &BenchArgs) -> io::Result<Config> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let secs = |flag: &str, v: f64| {
            Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    invalid(format!(
                        "{flag} must be a positive number of seconds, not {v}"
                    ))
                })
        };
        if a.connections == 0 {
            return Err(invalid("--connections must be at least 1".into()));
        }
        if a.pipeline == 0 {
            return Err(invalid("--pipeline must be at least 1".into()));
        }
        if a.size == 0 {
            return Err(invalid("--size must be at least 1 byte".into()));
        }
        if a.pipeline.saturating_mul(a.size.saturating_add(1)) > MAX_BATCH_BYTES {
            return Err(invalid(format!(
                "--pipeline {} with --size {} needs more than {} MiB per connection",
                a.pipeline,
                a.size,
                MAX_BATCH_BYTES >> 20
            )));
        }
        if a.messages == Some(0) {
            return Err(invalid("--messages must be at least 1".into()));
        }
        if a.threads == Some(0) {
            return Err(invalid("--threads must be at least 1".into()));
        }
        let timeout = secs("--timeout", a.timeout)?;
        let duration = match a.messages {
            Some(_) => None,
            None => Some(secs("--duration", a.duration.unwrap_or(DEFAULT_SECS))?),
        };
        let template = Template::parse(&a.expect).map_err(invalid)?;
        let addr = resolve(&a.connect)?;
        let threads = a
            .threads
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, NonZeroUsize::get))
            .min(a.connections);
        Ok(Config {
            addr,
            connections: a.connections,
            threads,
            pipeline: a.pipeline,
            size: a.size,
            read_cap: READ_BUF.max(template.reply_len(a.size) + 2),
            template,
            timeout,
            duration,
            messages: a.messages,
            connect_rate: a.connect_rate,
            setup_limit: setup_share(SETUPS_IN_FLIGHT, threads),
            close_grace: CLOSE_GRACE.min(timeout),
        })
    }
}

/// The first address `connect` resolves to.
fn resolve(connect: &str) -> io::Result<SocketAddr> {
    match connect.to_socket_addrs() {
        Ok(mut addrs) => addrs.next().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("--connect {connect} resolved to no address"),
            )
        }),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "cannot resolve --connect {connect}: {e} (expected HOST:PORT, e.g. 127.0.0.1:9999)"
            ),
        )),
    }
}

/// Each worker's share of `total` setups in flight (at least one).
fn setup_share(total: usize, threads: usize) -> usize {
    total.div_ceil(threads.max(1)).max(1)
}

/// When connection number `index` may start, counted from the beginning of the
/// run, for `rate` new connections per second (0 = no limit).
fn connect_offset(index: u64, rate: u64) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    let nanos = u128::from(index) * 1_000_000_000 / u128::from(rate);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Takes up to `want` messages from the shared budget of messages mode (no
/// budget: duration mode, no limit); 0 once it is spent.
fn claim(budget: Option<&AtomicU64>, want: u64) -> u64 {
    let Some(budget) = budget else { return want };
    match budget.fetch_update(Relaxed, Relaxed, |left| {
        (left > 0).then(|| left - left.min(want))
    }) {
        Ok(left) => left.min(want),
        Err(_) => 0,
    }
}

// ---------------------------------------------------------------- names and replies

/// The reply the server should send: literal parts around each `{}`.
#[derive(Debug, Clone)]
struct Template {
    /// One more part than there are `{}` (so never empty).
    parts: Vec<Vec<u8>>,
    fixed: usize,
}

impl Template {
    fn parse(template: &str) -> Result<Template, String> {
        if template.contains(['\r', '\n']) {
            return Err(format!("--expect {template:?} must be a single line"));
        }
        let parts: Vec<Vec<u8>> = template
            .split("{}")
            .map(|p| p.as_bytes().to_vec())
            .collect();
        let fixed = parts.iter().map(Vec::len).sum();
        Ok(Template { parts, fixed })
    }

    /// Length of the reply to a name of `name_len` bytes.
    fn reply_len(&self, name_len: usize) -> usize {
        self.fixed + (self.parts.len() - 1) * name_len
    }

    /// Whether `line` (without its line ending) is the reply to `name`.
    fn matches(&self, line: &[u8], name: &[u8]) -> bool {
        if line.len() != self.reply_len(name.len()) {
            return false;
        }
        let mut rest = line;
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                match rest.strip_prefix(name) {
                    Some(r) => rest = r,
                    None => return false,
                }
            }
            match rest.strip_prefix(part.as_slice()) {
                Some(r) => rest = r,
                None => return false,
            }
        }
        rest.is_empty()
    }

    /// The reply to `name`.
    fn render(&self, name: &[u8]) -> Vec<u8> {
        self.parts.join(name)
    }
}

/// Appends name number `seq` of connection `conn`: exactly `size` bytes of
/// `<conn>x<seq>`, left-padded with letters, or its last `size` bytes when
/// longer. It always ends in a digit, so it is never `exit` or `quit`, and it
/// holds no whitespace.
fn write_name(out: &mut Vec<u8>, conn: u64, seq: u64, size: usize) {
    const LETTERS: &[u8; 26] = b"abcdefghijklmnopqrstuvwxyz";
    // Two u64 in decimal (20 digits each) and the separator.
    let mut body = [0u8; 41];
    let mut at = body.len();
    for (i, mut n) in [seq, conn].into_iter().enumerate() {
        if i == 1 {
            at -= 1;
            body[at] = b'x';
        }
        loop {
            at -= 1;
            body[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
    }
    let body = &body[at..];
    if body.len() >= size {
        out.extend_from_slice(&body[body.len() - size..]);
        return;
    }
    let mut pad = size - body.len();
    while pad > 0 {
        let n = pad.min(LETTERS.len());
        out.extend_from_slice(&LETTERS[..n]);
        pad -= n;
    }
    out.extend_from_slice(body);
}

/// `line` without a trailing `\r` (the `\n` is already gone).
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `bytes` as text for a report, cut to a readable length.
fn lossy(bytes: &[u8]) -> String {
    const MAX: usize = 200;
    let mut s = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
    if bytes.len() > MAX {
        s.push('…');
    }
    s
}

// ---------------------------------------------------------------- failures

/// Why a connection failed, or (reply_mismatch, unexpected_line) why one reply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    ConnectRefused,
    ConnectTimeout,
    ConnectUnreachable,
    AddrUnavailable,
    TooManyOpenFiles,
    WelcomeTimeout,
    ServerBusy,
    ReplyTimeout,
    ReplyMismatch,
    UnexpectedLine,
    LineTooLong,
    Eof,
    Reset,
    Other,
}

impl Fail {
    /// Every kind, in `as usize` order.
    const ALL: [Fail; 14] = [
        Fail::ConnectRefused,
        Fail::ConnectTimeout,
        Fail::ConnectUnreachable,
        Fail::AddrUnavailable,
        Fail::TooManyOpenFiles,
        Fail::WelcomeTimeout,
        Fail::ServerBusy,
        Fail::ReplyTimeout,
        Fail::ReplyMismatch,
        Fail::UnexpectedLine,
        Fail::LineTooLong,
        Fail::Eof,
        Fail::Reset,
        Fail::Other,
    ];

    fn name(self) -> &'static str {
        match self {
            Fail::ConnectRefused => "connect_refused",
            Fail::ConnectTimeout => "connect_timeout",
            Fail::ConnectUnreachable => "connect_unreachable",
            Fail::AddrUnavailable => "addr_unavailable",
            Fail::TooManyOpenFiles => "too_many_open_files",
            Fail::WelcomeTimeout => "welcome_timeout",
            Fail::ServerBusy => "server_busy",
            Fail::ReplyTimeout => "reply_timeout",
            Fail::ReplyMismatch => "reply_mismatch",
            Fail::UnexpectedLine => "unexpected_line",
            Fail::LineTooLong => "line_too_long",
            Fail::Eof => "eof",
            Fail::Reset => "reset",
            Fail::Other => "other",
        }
    }
}

/// Where an I/O error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connect,
    Session,
}

fn classify(e: &io::Error, stage: Stage) -> Fail {
    use io::ErrorKind as K;
    // EMFILE and ENFILE: the same numbers on Linux, the BSDs and macOS, and std
    // has no stable ErrorKind for them.
    if cfg!(unix) && matches!(e.raw_os_error(), Some(23 | 24)) {
        return Fail::TooManyOpenFiles;
    }
    match (e.kind(), stage) {
        (K::ConnectionRefused, Stage::Connect) => Fail::ConnectRefused,
        (K::TimedOut, Stage::Connect) => Fail::ConnectTimeout,
        (K::HostUnreachable | K::NetworkUnreachable, Stage::Connect) => Fail::ConnectUnreachable,
        (K::AddrNotAvailable, Stage::Connect) => Fail::AddrUnavailable,
        (K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe, _) => Fail::Reset,
        (K::UnexpectedEof, _) => Fail::Eof,
        _ => Fail::Other,
    }
}

/// The error `run` returns when not one connection got as far as its welcome:
/// the most frequent failure, with what to do about it.
fn no_connection_error(addr: SocketAddr, timeout: Duration, tally: &Tally) -> io::Error {
    let top = Fail::ALL
        .iter()
        .copied()
        .filter(|&f| tally.errors[f as usize] > 0)
        .max_by_key(|&f| tally.errors[f as usize]);
    let example = |f: Fail| {
        tally
            .examples
            .iter()
            .find(|(k, _)| *k == f)
            .map_or_else(String::new, |(_, s)| format!(" ({s})"))
    };
    let secs = timeout.as_secs_f64();
    let (kind, msg) = match top {
        Some(Fail::ConnectRefused) => (
            io::ErrorKind::ConnectionRefused,
            format!("connection refused: is tcp-hello serve running on {addr}?"),
        ),
        Some(Fail::ConnectTimeout) => (
            io::ErrorKind::TimedOut,
            format!(
                "connecting to {addr} timed out after {secs} s: is the host up, the port open \
                 (firewall?) and the server accepting? (--timeout sets the wait)"
            ),
        ),
        Some(Fail::ConnectUnreachable) => (
            io::ErrorKind::HostUnreachable,
            format!(
                "{addr} is unreachable: check the address and the network{}",
                example(Fail::ConnectUnreachable)
            ),
        ),
        Some(Fail::AddrUnavailable) => (
            io::ErrorKind::AddrNotAvailable,
            "no local address or port available: lower --connections or widen \
             net.ipv4.ip_local_port_range"
                .to_string(),
        ),
        Some(Fail::TooManyOpenFiles) => (
            io::ErrorKind::Other,
            "too many open files: raise the limit (ulimit -n) or lower --connections".to_string(),
        ),
        Some(Fail::WelcomeTimeout) => (
            io::ErrorKind::TimedOut,
            format!(
                "connected to {addr} but no welcome line came within {secs} s: is it a tcp-hello \
                 server in greet mode (not echo, not chunk framing)? (--timeout sets the wait)"
            ),
        ),
        Some(Fail::ServerBusy) => (
            io::ErrorKind::Other,
            format!(
                "the server at {addr} refused every connection{}: raise its --max-connections or \
                 lower --connections",
                example(Fail::ServerBusy)
            ),
        ),
        Some(Fail::Eof | Fail::Reset) => (
            io::ErrorKind::ConnectionAborted,
            format!(
                "{addr} closed every connection before its welcome line: is it a tcp-hello server, \
                 and not already at its --max-connections?"
            ),
        ),
        Some(f) => (
            io::ErrorKind::Other,
            format!(
                "no connection to {addr} could be set up: {}{}",
                f.name(),
                example(f)
            ),
        ),
        None => (
            io::ErrorKind::Other,
            format!("no connection to {addr} could be set up"),
        ),
    };
    io::Error::new(kind, msg)
}

// ---------------------------------------------------------------- shared state

/// What the coordinating thread and the workers share.
#[derive(Debug)]
struct Shared {
    /// Set by Ctrl-C: stop opening connections and sending names, then report.
    interrupted: Arc<AtomicBool>,
    /// When the run began: connection start times count from here.
    t0: Instant,
    /// When every connection had settled: sending starts, the measured interval begins.
    start: OnceLock<Instant>,
    /// Messages mode: names not yet handed to a connection.
    budget: Option<AtomicU64>,
    /// One per worker.
    stats: Vec<Stats>,
}

/// Live counters of one worker, for the progress line and the start barrier.
// Aligned so that two workers' counters never share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stats {
    ok: AtomicU64,
    errors: AtomicU64,
    /// Connections whose setup ended, with their welcome or with a failure.
    settled: AtomicU64,
    established: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Snapshot {
    ok: u64,
    errors: u64,
    settled: u64,
    established: u64,
}

impl Shared {
    fn snapshot(&self) -> Snapshot {
        self.stats
            .iter()
            .fold(Snapshot::default(), |s, w| Snapshot {
                ok: s.ok + w.ok.load(Relaxed),
                errors: s.errors + w.errors.load(Relaxed),
                settled: s.settled + w.settled.load(Relaxed),
                established: s.established + w.established.load(Relaxed),
            })
    }
}

/// A worker's results, merged at the end.
struct Tally {
    ok: u64,
    errors: [u64; Fail::ALL.len()],
    /// The first detail seen of each kind of failure.
    examples: Vec<(Fail, String)>,
    established: u64,
    last_reply: Option<Instant>,
    /// Reply latencies in nanoseconds.
    hist: Histogram<u64>,
}

impl Tally {
    fn new() -> io::Result<Tally> {
        Ok(Tally {
            ok: 0,
            errors: [0; Fail::ALL.len()],
            examples: Vec::new(),
            established: 0,
            last_reply: None,
            hist: Histogram::new_with_bounds(1, HIST_MAX_NS, 3).map_err(io::Error::other)?,
        })
    }

    fn note(&mut self, kind: Fail, detail: impl FnOnce() -> String) {
        self.errors[kind as usize] += 1;
        if !self.examples.iter().any(|(k, _)| *k == kind) {
            let detail = detail();
            log::debug!("bench: {}: {detail}", kind.name());
            self.examples.push((kind, detail));
        }
    }

    fn merge(&mut self, other: Tally) -> io::Result<()> {
        self.ok += other.ok;
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors) {
            *mine += theirs;
        }
        for (kind, detail) in other.examples {
            if !self.examples.iter().any(|(k, _)| *k == kind) {
                self.examples.push((kind, detail));
            }
        }
        self.established += other.established;
        self.last_reply = self.last_reply.max(other.last_reply);
        self.hist.add(&other.hist).map_err(io::Error::other)
    }
}

// ---------------------------------------------------------------- workers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not opened yet.
    Pending,
    Connecting,
    /// Connected, waiting for the welcome line.
    Welcome,
    /// Welcome received, waiting for the start.
    Ready,
    Running,
    /// `exit` sent, waiting for the server to close.
    Closing,
    Done,
}

struct Conn {
    /// Number among all connections: sets its start time and its names.
    id: u64,
    state: State,
    /// When the current state began (for the connect, welcome and close timeouts).
    since: Instant,
    stream: Option<TcpStream>,
    rbuf: Box<[u8]>,
    rlen: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    /// Send times of the names awaiting their reply, oldest first.
    sent: VecDeque<Instant>,
    /// Number of the next name to send.
    next_seq: u64,
}

struct Worker {
    index: usize,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    poll: Poll,
    conns: Vec<Conn>,
    /// Connections before this index have been opened.
    next_start: usize,
    /// Setups in flight.
    setups: usize,
    /// Connections not yet `Done`.
    live: usize,
    started: bool,
    stop_at: Option<Instant>,
    stopped: bool,
    /// The interruption has been acted on.
    interrupted: bool,
    tally: Tally,
    /// Scratch for the name whose reply is being checked.
    name: Vec<u8>,
}

impl Worker {
    fn new(index: usize, poll: Poll, cfg: Arc<Config>, shared: Arc<Shared>) -> io::Result<Worker> {
        let now = Instant::now();
        let conns: Vec<Conn> = (index..cfg.connections)
            .step_by(cfg.threads)
            .map(|id| Conn {
                id: id as u64,
                state: State::Pending,
                since: now,
                stream: None,
                rbuf: Box::default(),
                rlen: 0,
                wbuf: Vec::new(),
                wpos: 0,
                sent: VecDeque::new(),
                next_seq: 0,
            })
            .collect();
        Ok(Worker {
            index,
            live: conns.len(),
            conns,
            name: Vec::with_capacity(cfg.size),
            cfg,
            shared,
            poll,
            next_start: 0,
            setups: 0,
            started: false,
            stop_at: None,
            stopped: false,
            interrupted: false,
            tally: Tally::new()?,
        })
    }

    fn stats(&self) -> &Stats {
        &self.shared.stats[self.index]
    }

    fn run(mut self) -> io::Result<Tally> {
        let result = self.event_loop();
        // Count every connection as settled even if the loop failed, so the
        // other workers are not kept waiting at the start barrier.
        self.stats().settled.store(self.conns.len() as u64, Relaxed);
        result.map(|()| self.tally)
    }

    fn event_loop(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_scan = Instant::now() + TICK;
        while self.live > 0 {
            let now = Instant::now();
            if !self.interrupted && self.shared.interrupted.load(Relaxed) {
                self.interrupt();
            }
            let next_due = self.start_due(now);
            if !self.started {
                if let Some(&start) = self.shared.start.get() {
                    self.go(start);
                }
            }
            if !self.stopped && self.stop_at.is_some_and(|t| now >= t) {
                self.stop();
            }
            if now >= next_scan {
                self.scan_timeouts(now);
                next_scan = now + TICK;
            }
            if self.live == 0 {
                break;
            }
            let mut wake = next_scan;
            if let Some(due) = next_due {
                wake = wake.min(due);
            }
            if let Some(stop) = self.stop_at.filter(|_| !self.stopped) {
                wake = wake.min(stop);
            }
            let timeout = wake.saturating_duration_since(Instant::now());
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                if ev.token() != WAKE {
                    self.on_event(ev.token().0, ev);
                }
            }
        }
        Ok(())
    }

    /// Opens the connections whose time has come, as far as the setup limit
    /// allows; returns when the next one is due if it is the time that holds it back.
    fn start_due(&mut self, now: Instant) -> Option<Instant> {
        while self.next_start < self.conns.len() && self.setups < self.cfg.setup_limit {
            let due = self.shared.t0
                + connect_offset(self.conns[self.next_start].id, self.cfg.connect_rate);
            if due > now {
                return Some(due);
            }
            self.next_start += 1;
            self.open(self.next_start - 1, now);
        }
        None
    }

    fn open(&mut self, i: usize, now: Instant) {
        self.setups += 1;
        let c = &mut self.conns[i];
        c.state = State::Connecting;
        c.since = now;
        let mut stream = match TcpStream::connect(self.cfg.addr) {
            Ok(s) => s,
            Err(e) => return self.fail(i, classify(&e, Stage::Connect), || e.to_string()),
        };
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("bench: TCP_NODELAY: {e}");
        }
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.fail(i, classify(&e, Stage::Connect), || {
                format!("registering with poll: {e}")
            });
        }
        let c = &mut self.conns[i];
        c.stream = Some(stream);
        c.rbuf = vec![0; self.cfg.read_cap].into_boxed_slice();
        c.wbuf = Vec::with_capacity(self.cfg.pipeline * (self.cfg.size + 1));
        c.sent = VecDeque::with_capacity(self.cfg.pipeline);
    }

    /// Every connection that has its welcome starts sending.
    fn go(&mut self, start: Instant) {
        self.started = true;
        self.stop_at = self.cfg.duration.map(|d| start + d);
        for i in 0..self.conns.len() {
            if self.conns[i].state == State::Ready {
                self.conns[i].state = State::Running;
                self.fill(i);
            }
        }
    }

    /// Ctrl-C: connections still being set up are dropped (not counted as failures),
    /// the others stop as at the end of the duration.
    fn interrupt(&mut self) {
        self.interrupted = true;
        let shared = Arc::clone(&self.shared);
        let stats = &shared.stats[self.index];
        for i in 0..self.conns.len() {
            match self.conns[i].state {
                State::Pending | State::Connecting | State::Welcome => {
                    stats.settled.fetch_add(1, Relaxed);
                    if self.conns[i].state != State::Pending {
                        self.setups -= 1;
                    }
                    self.finish(i);
                }
                State::Ready => self.close(i),
                _ => {}
            }
        }
        self.next_start = self.conns.len();
        self.stop();
    }

    /// Duration mode: the time is up; no more names, idle connections close.
    fn stop(&mut self) {
        self.stopped = true;
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.state == State::Running && c.sent.is_empty() {
                self.close(i);
            }
        }
    }

    fn scan_timeouts(&mut self, now: Instant) {
        let timeout = self.cfg.timeout;
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            let waited = now.saturating_duration_since(c.since);
            match c.state {
                State::Connecting if waited >= timeout => {
                    self.fail(i, Fail::ConnectTimeout, || {
                        format!("not connected after {timeout:?}")
                    });
                }
                State::Welcome if waited >= timeout => {
                    self.fail(i, Fail::WelcomeTimeout, || {
                        format!("no welcome line after {timeout:?}")
                    });
                }
                State::Running | State::Ready
                    if c.sent
                        .front()
                        .is_some_and(|&t| now.saturating_duration_since(t) >= timeout) =>
                {
                    self.fail(i, Fail::ReplyTimeout, || {
                        format!("no reply after {timeout:?}")
                    });
                }
                State::Closing if waited >= self.cfg.close_grace => self.finish(i),
                _ => {}
            }
        }
    }

    fn on_event(&mut self, i: usize, ev: &Event) {
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        if c.state == State::Connecting {
            let Some(stream) = c.stream.as_ref() else {
                return;
            };
            match connect_status(stream) {
                Ok(false) => return,
                Ok(true) => {
                    c.state = State::Welcome;
                    c.since = Instant::now();
                }
                Err(e) => return self.fail(i, classify(&e, Stage::Connect), || e.to_string()),
            }
        }
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.on_readable(i, ev.is_read_closed() || ev.is_error());
        }
        let c = &self.conns[i];
        if ev.is_writable() && c.state == State::Running && c.wpos < c.wbuf.len() && self.flush(i) {
            self.fill(i);
        }
    }

    /// Reads what has arrived and handles every complete line. `drain`: read
    /// until WouldBlock even after a short read (the peer closed or erred).
    fn on_readable(&mut self, i: usize, drain: bool) {
        loop {
            let c = &mut self.conns[i];
            let Some(stream) = c.stream.as_mut() else {
                return;
            };
            let space = c.rbuf.len() - c.rlen;
            if space == 0 {
                if c.state == State::Closing {
                    return self.finish(i);
                }
                let cap = c.rbuf.len();
                return self.fail(i, Fail::LineTooLong, || {
                    format!("a line longer than {cap} bytes")
                });
            }
            match stream.read(&mut c.rbuf[c.rlen..]) {
                Ok(0) => return self.on_eof(i),
                Ok(n) => {
                    c.rlen += n;
                    if let Err((kind, detail)) = self.take_lines(i, Instant::now()) {
                        return self.fail(i, kind, || detail);
                    }
                    // A short read emptied the socket: on the platforms mio's
                    // epoll/kqueue back-ends serve, new data raises a new event,
                    // so the read that would only say WouldBlock is skipped.
                    if n < space && !drain {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.on_io_error(i, &e),
            }
        }
        if self.conns[i].state == State::Running {
            self.fill(i);
        }
    }

    /// Handles the complete lines in the read buffer and keeps the rest.
    fn take_lines(&mut self, i: usize, now: Instant) -> Result<(), (Fail, String)> {
        let Worker {
            conns,
            tally,
            cfg,
            shared,
            index,
            setups,
            name,
            ..
        } = self;
        let stats = &shared.stats[*index];
        let c = &mut conns[i];
        let mut start = 0;
        let mut ok = 0;
        while let Some(len) = memchr::memchr(b'\n', &c.rbuf[start..c.rlen]) {
            let line = strip_cr(&c.rbuf[start..start + len]);
            start += len + 1;
            match c.state {
                State::Welcome => {
                    if line.starts_with(b"ERROR") {
                        return Err((Fail::ServerBusy, format!("welcome {:?}", lossy(line))));
                    }
                    c.state = State::Ready;
                    *setups -= 1;
                    tally.established += 1;
                    stats.established.fetch_add(1, Relaxed);
                    stats.settled.fetch_add(1, Relaxed);
                }
                State::Ready | State::Running => match c.sent.pop_front() {
                    Some(sent_at) => {
                        let seq = c.next_seq - c.sent.len() as u64 - 1;
                        name.clear();
                        write_name(name, c.id, seq, cfg.size);
                        if cfg.template.matches(line, name) {
                            ok += 1;
                            let ns = now.saturating_duration_since(sent_at).as_nanos();
                            tally
                                .hist
                                .saturating_record(u64::try_from(ns).unwrap_or(u64::MAX));
                        } else {
                            stats.errors.fetch_add(1, Relaxed);
                            tally.note(Fail::ReplyMismatch, || {
                                format!(
                                    "expected {:?}, got {:?}",
                                    lossy(&cfg.template.render(name)),
                                    lossy(line)
                                )
                            });
                        }
                    }
                    None => {
                        stats.errors.fetch_add(1, Relaxed);
                        tally.note(Fail::UnexpectedLine, || {
                            format!("{:?} with no name awaiting a reply", lossy(line))
                        });
                    }
                },
                // Closing: the farewell, or whatever else, is not checked.
                _ => {}
            }
        }
        c.rbuf.copy_within(start..c.rlen, 0);
        c.rlen -= start;
        if ok > 0 {
            tally.ok += ok;
            tally.last_reply = Some(now);
            stats.ok.fetch_add(ok, Relaxed);
        }
        Ok(())
    }

    /// Sends names until `--pipeline` are awaiting replies (all in one write), or
    /// starts closing when there is nothing left to send or await.
    fn fill(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.state != State::Running || c.wpos < c.wbuf.len() {
            return;
        }
        let room = (self.cfg.pipeline - c.sent.len()) as u64;
        let n = if self.stopped || room == 0 {
            0
        } else {
            claim(self.shared.budget.as_ref(), room)
        };
        if n == 0 {
            if c.sent.is_empty() {
                self.close(i);
            }
            return;
        }
        c.wbuf.clear();
        c.wpos = 0;
        for _ in 0..n {
            write_name(&mut c.wbuf, c.id, c.next_seq, self.cfg.size);
            c.wbuf.push(b'\n');
            c.next_seq += 1;
        }
        // `n` ≤ room ≤ `--pipeline`, a usize.
        c.sent.extend(iter::repeat_n(Instant::now(), n as usize));
        self.flush(i);
    }

    /// Writes what is pending; true when all of it went out.
    fn flush(&mut self, i: usize) -> bool {
        loop {
            let c = &mut self.conns[i];
            let Some(stream) = c.stream.as_mut() else {
                return false;
            };
            if c.wpos == c.wbuf.len() {
                c.wbuf.clear();
                c.wpos = 0;
                return true;
            }
            match stream.write(&c.wbuf[c.wpos..]) {
                Ok(0) => {
                    self.fail(i, Fail::Other, || "the socket accepted no bytes".into());
                    return false;
                }
                Ok(n) => c.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.on_io_error(i, &e);
                    return false;
                }
            }
        }
    }

    /// Says `exit` and waits (briefly) for the server to close: closing first
    /// would make the kernel answer the farewell with a reset.
    fn close(&mut self, i: usize) {
        let c = &mut self.conns[i];
        c.state = State::Closing;
        c.since = Instant::now();
        let said = c
            .stream
            .as_mut()
            .is_some_and(|s| matches!(s.write(b"exit\n"), Ok(5)));
        if !said {
            self.finish(i);
        }
    }

    fn on_eof(&mut self, i: usize) {
        if self.conns[i].state == State::Closing {
            self.finish(i);
        } else {
            self.fail(i, Fail::Eof, || "the server closed the connection".into());
        }
    }

    fn on_io_error(&mut self, i: usize, e: &io::Error) {
        if self.conns[i].state == State::Closing {
            self.finish(i);
        } else {
            self.fail(i, classify(e, Stage::Session), || e.to_string());
        }
    }

    /// Counts a failure and drops the connection.
    fn fail(&mut self, i: usize, kind: Fail, detail: impl FnOnce() -> String) {
        let state = self.conns[i].state;
        if state == State::Done {
            return;
        }
        self.tally.note(kind, detail);
        let stats = &self.shared.stats[self.index];
        stats.errors.fetch_add(1, Relaxed);
        if matches!(state, State::Pending | State::Connecting | State::Welcome) {
            stats.settled.fetch_add(1, Relaxed);
        }
        if matches!(state, State::Connecting | State::Welcome) {
            self.setups -= 1;
        }
        self.finish(i);
    }

    /// Drops the connection and its buffers.
    fn finish(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.state == State::Done {
            return;
        }
        if let Some(mut stream) = c.stream.take() {
            // Closing the socket removes it from the poll set anyway.
            let _ = self.poll.registry().deregister(&mut stream);
        }
        c.state = State::Done;
        c.rbuf = Box::default();
        c.rlen = 0;
        c.wbuf = Vec::new();
        c.wpos = 0;
        c.sent = VecDeque::new();
        self.live -= 1;
    }
}

/// Whether a non-blocking connect has completed (the check mio documents).
fn connect_status(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------- progress

/// The progress line on stderr: rewritten in place on a terminal, otherwise
/// one plain line every few seconds.
struct Progress {
    tty: bool,
    t0: Instant,
    next: Instant,
    last_ok: u64,
    last_at: Instant,
    shown: bool,
}

impl Progress {
    fn new(tty: bool, t0: Instant) -> Progress {
        Progress {
            tty,
            t0,
            next: t0 + Self::every(tty),
            last_ok: 0,
            last_at: t0,
            shown: false,
        }
    }

    fn every(tty: bool) -> Duration {
        if tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(3)
        }
    }

    fn update(
        &mut self,
        now: Instant,
        started: Option<Instant>,
        snap: &Snapshot,
        connections: usize,
    ) {
        if now < self.next {
            return;
        }
        self.next = now + Self::every(self.tty);
        let line = match started {
            None => setup_line(now - self.t0, snap, connections),
            Some(start) => {
                // Over the last interval, but not counting time spent connecting.
                let rate = per_sec(snap.ok - self.last_ok, now - self.last_at.max(start));
                run_line(now - start, rate, snap)
            }
        };
        self.last_ok = snap.ok;
        self.last_at = now;
        self.shown = true;
        // Progress is cosmetic: a stderr that cannot be written to must not stop the run.
        let mut err = io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    /// Clears the in-place line before the report.
    fn finish(&mut self) {
        if self.tty && self.shown {
            let _ = write!(io::stderr().lock(), "\r\x1b[2K");
        }
    }
}

fn setup_line(elapsed: Duration, snap: &Snapshot, connections: usize) -> String {
    format!(
        "bench {:.1}s: connecting {}/{} ({} up, {} failed)",
        elapsed.as_secs_f64(),
        group(snap.settled),
        group(connections as u64),
        group(snap.established),
        group(snap.settled - snap.established)
    )
}

fn run_line(elapsed: Duration, rate: f64, snap: &Snapshot) -> String {
    format!(
        "bench {:.1}s: {} msg/s, {} messages, {} errors",
        elapsed.as_secs_f64(),
        group(rate.round() as u64),
        group(snap.ok),
        group(snap.errors)
    )
}

fn per_sec(n: u64, d: Duration) -> f64 {
    let secs = d.as_secs_f64();
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// `n` with thousands separators.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

// ---------------------------------------------------------------- report

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    p99_9: f64,
    max: f64,
    mean: f64,
}

/// The percentiles of a histogram of nanoseconds; `None` when it is empty.
fn latency_summary(hist: &Histogram<u64>) -> Option<Latency> {
    if hist.is_empty() {
        return None;
    }
    let us = |ns: f64| (ns / 100.0).round() / 10.0;
    let q = |q: f64| us(hist.value_at_quantile(q) as f64);
    Some(Latency {
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        p99_9: q(0.999),
        max: us(hist.max() as f64),
        mean: us(hist.mean()),
    })
}

#[derive(Debug, Clone)]
struct Report {
    addr: SocketAddr,
    connections: usize,
    established: u64,
    threads: usize,
    pipeline: usize,
    size: usize,
    duration_s: Option<f64>,
    messages_target: Option<u64>,
    setup_s: f64,
    elapsed_s: f64,
    /// Verified replies.
    messages: u64,
    latency: Option<Latency>,
    /// Kinds with a non-zero count.
    errors: Vec<(&'static str, u64)>,
    /// The first detail of each kind.
    examples: Vec<(&'static str, String)>,
}

impl Report {
    fn messages_per_s(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.messages as f64 / self.elapsed_s
        } else {
            0.0
        }
    }

    fn errors_total(&self) -> u64 {
        self.errors.iter().map(|&(_, n)| n).sum()
    }

    fn mismatches(&self) -> u64 {
        self.errors
            .iter()
            .find(|(k, _)| *k == Fail::ReplyMismatch.name())
            .map_or(0, |&(_, n)| n)
    }

    fn ok(&self) -> bool {
        self.errors_total() == 0
    }

    fn to_json(&self) -> Value {
        let round = |x: f64, places: i32| {
            let f = 10f64.powi(places);
            (x * f).round() / f
        };
        let latency = self.latency.map_or(Value::Null, |l| {
            json!({
                "p50": l.p50, "p90": l.p90, "p99": l.p99, "p99_9": l.p99_9,
                "max": l.max, "mean": l.mean,
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
            .map(|(k, s)| ((*k).to_string(), json!(s)))
            .collect();
        json!({
            "addr": self.addr.to_string(),
            "connections": self.connections,
            "established": self.established,
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
            "errors": errors,
            "errors_total": self.errors_total(),
            "mismatches": self.mismatches(),
            "error_examples": examples,
            "ok": self.ok(),
        })
    }

    fn human(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            s,
            "bench {}: {} connections ({} established), {} threads, pipeline {}, {}-byte names",
            self.addr,
            group(self.connections as u64),
            group(self.established),
            self.threads,
            self.pipeline,
            self.size
        );
        let _ = writeln!(
            s,
            "  messages    {} in {:.2} s (setup {:.2} s): {} msg/s",
            group(self.messages),
            self.elapsed_s,
            self.setup_s,
            group(self.messages_per_s().round() as u64)
        );
        match self.latency {
            Some(l) => {
                let _ = writeln!(
                    s,
                    "  latency µs  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  (mean {:.1})",
                    l.p50, l.p90, l.p99, l.p99_9, l.max, l.mean
                );
            }
            None => s.push_str("  latency µs  (no replies)\n"),
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
            let _ = writeln!(s, "  first {kind}: {detail}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(conn: u64, seq: u64, size: usize) -> String {
        let mut v = Vec::new();
        write_name(&mut v, conn, seq, size);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn names_are_padded_or_cut_to_size() {
        assert_eq!(name(3, 42, 8), "abcd3x42");
        assert_eq!(name(3, 42, 4), "3x42");
        assert_eq!(name(3, 42, 3), "x42");
        assert_eq!(name(3, 42, 1), "2");
        assert_eq!(name(0, 0, 3), "0x0");
        assert_eq!(name(1, 2, 30), "abcdefghijklmnopqrstuvwxyza1x2");
        assert_eq!(name(u64::MAX, u64::MAX, 41).len(), 41);
    }

    proptest! {
        #[test]
        fn names_are_valid(conn in any::<u64>(), seq in any::<u64>(), size in 1usize..300) {
            let mut v = b"prefix".to_vec();
            write_name(&mut v, conn, seq, size);
            let n = &v[6..];
            prop_assert_eq!(n.len(), size);
            prop_assert!(n.last().unwrap().is_ascii_digit());
            prop_assert!(n.iter().all(|b| b.is_ascii_alphanumeric()));
            let mut next = Vec::new();
            write_name(&mut next, conn, seq.wrapping_add(1), size);
            prop_assert_ne!(n, &next[..]);
        }

        #[test]
        fn rendered_replies_match(t in "[^\r\n]{0,20}", name in "[a-z0-9]{1,20}") {
            let tpl = Template::parse(&t).unwrap();
            let reply = tpl.render(name.as_bytes());
            prop_assert_eq!(reply.len(), tpl.reply_len(name.len()));
            prop_assert!(tpl.matches(&reply, name.as_bytes()));
        }
    }

    #[test]
    fn template_checks_every_byte() {
        let t = Template::parse("Hello, {}!").unwrap();
        assert!(t.matches(b"Hello, bob!", b"bob"));
        assert!(!t.matches(b"Hello, bob", b"bob"));
        assert!(!t.matches(b"Hello, bob!!", b"bob"));
        assert!(!t.matches(b"Hello, bOb!", b"bob"));
        assert!(!t.matches(b"hello, bob!", b"bob"));
        assert!(!t.matches(b"", b"bob"));
        assert_eq!(t.render(b"bob"), b"Hello, bob!");

        let two = Template::parse("{}-{}").unwrap();
        assert!(two.matches(b"ab-ab", b"ab"));
        assert!(!two.matches(b"ab-ba", b"ab"));
        let none = Template::parse("OK").unwrap();
        assert!(none.matches(b"OK", b"anything"));
        assert!(!none.matches(b"OK anything", b"anything"));

        assert!(Template::parse("a\nb").is_err());
        assert!(Template::parse("a\r").is_err());
    }

    #[test]
    fn line_endings_are_stripped() {
        assert_eq!(strip_cr(b"Hello\r"), b"Hello");
        assert_eq!(strip_cr(b"Hello"), b"Hello");
        assert_eq!(strip_cr(b"\r"), b"");
        assert_eq!(strip_cr(b"a\r\r"), b"a\r");
    }

    #[test]
    fn connection_starts_are_spread_by_rate() {
        assert_eq!(connect_offset(5_000, 0), Duration::ZERO);
        assert_eq!(connect_offset(0, 2000), Duration::ZERO);
        assert_eq!(connect_offset(1, 2000), Duration::from_micros(500));
        assert_eq!(connect_offset(4000, 2000), Duration::from_secs(2));
        assert_eq!(connect_offset(3, 7), Duration::from_nanos(428_571_428));
        assert_eq!(connect_offset(u64::MAX, 1), Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn setups_are_shared_between_workers() {
        assert_eq!(setup_share(64, 1), 64);
        assert_eq!(setup_share(64, 3), 22);
        assert_eq!(setup_share(64, 200), 1);
        assert_eq!(setup_share(64, 0), 64);
    }

    #[test]
    fn budget_is_claimed_until_spent() {
        assert_eq!(claim(None, 7), 7);
        let b = AtomicU64::new(10);
        assert_eq!(claim(Some(&b), 4), 4);
        assert_eq!(claim(Some(&b), 4), 4);
        assert_eq!(claim(Some(&b), 4), 2);
        assert_eq!(claim(Some(&b), 4), 0);
        assert_eq!(b.load(Relaxed), 0);
    }

    #[test]
    fn errors_are_classified() {
        let e = |k| io::Error::from(k);
        assert_eq!(
            classify(&e(io::ErrorKind::ConnectionRefused), Stage::Connect),
            Fail::ConnectRefused
        );
        assert_eq!(
            classify(&e(io::ErrorKind::TimedOut), Stage::Connect),
            Fail::ConnectTimeout
        );
        assert_eq!(
            classify(&e(io::ErrorKind::ConnectionReset), Stage::Session),
            Fail::Reset
        );
        assert_eq!(
            classify(&e(io::ErrorKind::BrokenPipe), Stage::Session),
            Fail::Reset
        );
        assert_eq!(
            classify(&e(io::ErrorKind::ConnectionRefused), Stage::Session),
            Fail::Other
        );
        if cfg!(unix) {
            assert_eq!(
                classify(&io::Error::from_raw_os_error(24), Stage::Connect),
                Fail::TooManyOpenFiles
            );
        }
        for (i, f) in Fail::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i);
        }
    }

    #[test]
    fn no_connection_error_names_cause_and_fix() {
        let addr: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        let mut t = Tally::new().unwrap();
        t.note(Fail::ConnectRefused, || "refused".into());
        t.note(Fail::ConnectRefused, || "refused".into());
        t.note(Fail::Other, || "x".into());
        let e = no_connection_error(addr, Duration::from_secs(5), &t);
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(
            e.to_string(),
            "connection refused: is tcp-hello serve running on 127.0.0.1:9999?"
        );

        let mut t = Tally::new().unwrap();
        t.note(Fail::WelcomeTimeout, String::new);
        let e = no_connection_error(addr, Duration::from_secs(5), &t).to_string();
        assert!(e.contains("no welcome line came within 5 s"), "{e}");
    }

    #[test]
    fn percentiles_are_in_microseconds() {
        let mut t = Tally::new().unwrap();
        assert_eq!(latency_summary(&t.hist), None);
        for us in 1..=1000u64 {
            t.hist.record(us * 1000).unwrap();
        }
        let l = latency_summary(&t.hist).unwrap();
        assert!((l.p50 - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.p99 - 990.0).abs() < 1.0, "{l:?}");
        assert!((l.max - 1000.0).abs() < 1.0, "{l:?}");
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p99_9 && l.p99_9 <= l.max);
    }

    fn report() -> Report {
        Report {
            addr: "127.0.0.1:9999".parse().unwrap(),
            connections: 64,
            established: 64,
            threads: 2,
            pipeline: 1,
            size: 8,
            duration_s: Some(5.0),
            messages_target: None,
            setup_s: 0.012,
            elapsed_s: 2.0,
            messages: 1_000_000,
            latency: Some(Latency {
                p50: 30.0,
                p90: 40.0,
                p99: 50.0,
                p99_9: 60.0,
                max: 70.0,
                mean: 31.0,
            }),
            errors: Vec::new(),
            examples: Vec::new(),
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
        assert_eq!(j["latency_us"]["p99_9"], 60.0);
        assert_eq!(j["ok"], true);
        let text = r.human();
        assert!(text.contains("1,000,000 in 2.00 s"), "{text}");
        assert!(text.contains("500,000 msg/s"), "{text}");
        assert!(text.contains("errors      none"), "{text}");

        let mut bad = report();
        bad.errors = vec![("reply_mismatch", 2), ("eof", 1)];
        bad.examples = vec![("reply_mismatch", "expected \"a\", got \"b\"".into())];
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
    fn numbers_are_grouped() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn progress_lines() {
        let snap = Snapshot {
            ok: 12_345,
            errors: 1,
            settled: 10,
            established: 9,
        };
        assert_eq!(
            setup_line(Duration::from_millis(1500), &snap, 100),
            "bench 1.5s: connecting 10/100 (9 up, 1 failed)"
        );
        assert_eq!(
            run_line(Duration::from_secs(2), 4321.4, &snap),
            "bench 2.0s: 4,321 msg/s, 12,345 messages, 1 errors"
        );
        assert_eq!(per_sec(10, Duration::ZERO), 0.0);
        assert_eq!(per_sec(10, Duration::from_millis(500)), 20.0);
    }

    #[test]
    fn bad_arguments_are_refused() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            b: BenchArgs,
        }
        let cfg = |args: &[&str]| {
            let t = T::try_parse_from(iter::once("t").chain(args.iter().copied())).unwrap();
            Config::from_args(&t.b)
        };
        let c = cfg(&["--connect", "127.0.0.1:1", "-n", "3", "--threads", "8"]).unwrap();
        assert_eq!(c.threads, 3);
        assert_eq!(c.duration, Some(Duration::from_secs(5)));
        let c = cfg(&["--connect", "127.0.0.1:1", "-m", "10", "-s", "5000"]).unwrap();
        assert_eq!(c.duration, None);
        assert_eq!(c.read_cap, 5000 + "Hello, !".len() + 2);
        for bad in [
            &["-n", "0"][..],
            &["-p", "0"],
            &["-s", "0"],
            &["-m", "0"],
            &["--threads", "0"],
            &["--timeout", "0"],
            &["--timeout=-1"],
            &["-d", "NaN"],
            &["--expect", "a\nb"],
            &["-p", "1000000", "-s", "1000"],
        ] {
            let mut args = vec!["--connect", "127.0.0.1:1"];
            args.extend_from_slice(bad);
            let e = cfg(&args).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        let e = cfg(&["--connect", "no-port-here"]).unwrap_err().to_string();
        assert!(e.contains("cannot resolve --connect no-port-here"), "{e}");
    }
}
