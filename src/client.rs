//! `tcp-hello client`: the bundled client, for people and for scripts.
//!
//! # Modes
//!
//! - **Names as arguments** (`tcp-hello client Michael Tracy Sarah`): prints the welcome,
//!   sends each name, prints each reply, sends `exit`, waits for the server to close.
//! - **Names from stdin** (no NAME): every line of stdin is a name. When stdin is a
//!   terminal the session is interactive: a banner and a `> ` prompt on stderr, replies
//!   on stdout as they come, Ctrl-D or `exit` ends it. When stdin is a pipe nothing but
//!   the server's lines is printed, so `cat names.txt | tcp-hello client` is scriptable.
//!   Names are pipelined: a writer thread sends them as fast as the server takes them
//!   while the main thread prints the replies, and only one line of input is held in
//!   memory at a time.
//! - **`--framing chunk`**: for servers that send no line endings, such as the Python
//!   tutorial's. Every read from the socket is one message and is printed with a newline
//!   added; names go out without a newline, one at a time, each waiting for its reply.
//!   A name longer than [`CHUNK_MAX`] bytes cannot be one message and is refused.
//! - **`--raw`**: a byte pipe like nc: stdin to the socket unchanged, the socket to stdout
//!   unchanged, a half-close when stdin ends, exit when the server closes.
//!
//! # Output
//!
//! Everything the server sends goes to stdout as it arrives, `ERROR ...` notices
//! included, with CRLF line endings turned into LF (in `--raw` mode bytes are not
//! touched). Banners, prompts and diagnostics go to stderr; every diagnostic names
//! the cause and the fix.
//!
//! # Choices where the protocol leaves room
//!
//! - Blank lines (empty or whitespace only) are not sent: the server would not answer them.
//! - A line `exit` or `quit` (any case) ends the input: it is sent as typed, the rest of
//!   the input is ignored, and the session ends when the server closes.
//! - At the end of the input the client sends `exit` and reads until the server closes,
//!   printing whatever farewell it sends (none is required).
//! - Lines are split exactly as the server splits them (LF, CRLF, telnet's CR NUL), so the
//!   number of replies expected always matches the number the server sends; a 0xFF byte
//!   in a name is sent as telnet's `IAC IAC`, which the server reads as one 0xFF.
//! - An `ERROR ...` line where a reply is due (e.g. `ERROR line too long`) is that name's
//!   answer: it is printed, the session goes on, and the exit code is
//!   [`EXIT_PROTOCOL`] with a summary on stderr.
//! - `ERROR server busy` as the first line ends the session with [`EXIT_BUSY`].
//! - The server closing before its welcome, before answering every name sent, or before
//!   the input ended (`server shutting down`, a crash) is a protocol error; closing
//!   after `ERROR idle ...` (no input for the server's idle timeout) is a timeout.
//! - The reply timeout only runs while something is due (the welcome, a reply, or the
//!   close after `exit`); a person thinking at the prompt never times out.
//!   In `--raw` mode it runs once stdin has ended.
//! - Connect and reply timeouts of 0 mean "no timeout".
//!
//! # Exit codes
//!
//! [`EXIT_OK`] 0, [`EXIT_LOCAL_IO`] 1, [`EXIT_USAGE`] 2, [`EXIT_CONNECT`] 3,
//! [`EXIT_TIMEOUT`] 4, [`EXIT_PROTOCOL`] 5, [`EXIT_BUSY`] 6.

use std::fmt;
use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, IsTerminal, Read, Write};
use std::net::{Ipv6Addr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use log::debug;
use memchr::memchr;

use crate::cli::ClientArgs;
use crate::protocol::{
    CHUNK_MAX, Framing, Request, chunk_message, classify, find_line_end, partial_len,
};

/// Success: every name was answered and the server closed after `exit`
/// (`--raw`: the server closed).
pub const EXIT_OK: u8 = 0;
/// A local I/O failure: stdin could not be read or stdout could not be written
/// (a closed stdout pipe exits with this code silently).
pub const EXIT_LOCAL_IO: u8 = 1;
/// Bad command line (clap's code for usage errors too), e.g. an unparsable `--connect`.
pub const EXIT_USAGE: u8 = 2;
/// No connection was made: unknown host, connection refused, unreachable, or the
/// connect timeout passed for every address.
pub const EXIT_CONNECT: u8 = 3;
/// Connected, but the server sent nothing for `--reply-timeout` seconds while a reply
/// was due, or it closed the connection as idle.
pub const EXIT_TIMEOUT: u8 = 4;
/// The server broke the conversation: it closed or reset the connection before its
/// welcome, before answering every name or before the input ended, or it answered a
/// name with an `ERROR` line.
pub const EXIT_PROTOCOL: u8 = 5;
/// The server said `ERROR server busy` instead of its welcome: try again later.
pub const EXIT_BUSY: u8 = 6;

/// The port used when `--connect` names none: the port of [`crate::cli::DEFAULT_ADDR`].
pub const DEFAULT_PORT: u16 = 9999;

/// Bytes read from the socket at once.
const READ_BUF: usize = 64 * 1024;
/// Bytes of names queued before they are written to the socket.
const WRITE_BUF: usize = 64 * 1024;
/// Bytes of stdin read at once.
const INPUT_BUF: usize = 64 * 1024;
/// Bytes kept of each server line to classify it; notices are much shorter.
const HEAD: usize = 256;

/// Runs the client; prints its own errors on stderr and returns the exit code.
///
/// Meant for the binary's `main`: on failure it returns while the thread reading stdin
/// may still be blocked, which is harmless only because the process then exits.
pub fn run(args: &ClientArgs) -> ExitCode {
    match session(args) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(failure) => {
            if let Some(message) = failure.message() {
                let _ = writeln!(io::stderr(), "tcp-hello: {message}");
            }
            ExitCode::from(failure.code())
        }
    }
}

fn session(args: &ClientArgs) -> Result<(), Failure> {
    let (host, port) = parse_target(&args.connect).map_err(Failure::Usage)?;
    let target = Target { host, port };
    let connect_timeout = timeout_arg("--connect-timeout", args.connect_timeout)?;
    let reply_timeout = timeout_arg("--reply-timeout", args.reply_timeout)?;
    let interactive = !args.raw && args.names.is_empty() && io::stdin().is_terminal();
    let (stream, addr) = connect(&target, connect_timeout)?;
    debug!("connected to {addr}");
    // Names leave in batches (or one at a time, awaited), so Nagle's delay only adds latency.
    let _ = stream.set_nodelay(true);
    let cfg = Config {
        target,
        reply_timeout,
        interactive,
    };
    if interactive {
        let shown = cfg.target.to_string();
        let resolved = addr.to_string();
        let via = if shown == resolved {
            String::new()
        } else {
            format!(" ({resolved})")
        };
        note(&format!(
            "Connected to {shown}{via}. Type a name and press Enter; `exit` or Ctrl-D ends the session.\n"
        ));
    }
    let mut out = BufWriter::with_capacity(READ_BUF, io::stdout().lock());
    let result = if args.raw {
        raw_session(stream, &cfg, &mut out)
    } else {
        let input = Names::new(names_input(&args.names));
        match args.framing {
            Framing::Line => line_session(stream, &cfg, input, &mut out),
            Framing::Chunk => chunk_session(&stream, &cfg, input, &mut out),
        }
    };
    // A failure's message follows everything the server said.
    let flushed = out.flush().map_err(Failure::Stdout);
    result.and(flushed)
}

/// What every session needs to know.
struct Config {
    target: Target,
    reply_timeout: Option<Duration>,
    interactive: bool,
}

/// Where to connect, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Writes to stderr; a closed stderr must not stop the session.
fn note(text: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// Splits `HOST:PORT`, `[IPV6]:PORT`, `HOST`, `[IPV6]` or a bare IPv6 address; the
/// port defaults to [`DEFAULT_PORT`].
fn parse_target(s: &str) -> Result<(String, u16), String> {
    let s = s.trim();
    let port_of = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(0) => Err(format!(
                "--connect {s}: port 0 is not a server's port; give the port the server announced"
            )),
            Ok(port) => Ok(port),
            Err(_) => Err(format!(
                "--connect {s}: {p:?} is not a port number; write HOST:PORT, e.g. 127.0.0.1:9999"
            )),
        }
    };
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!(
                "--connect {s}: missing `]`; write IPv6 addresses as [::1]:9999"
            ));
        };
        let port = match after {
            "" => DEFAULT_PORT,
            _ => match after.strip_prefix(':') {
                Some(p) => port_of(p)?,
                None => {
                    return Err(format!(
                        "--connect {s}: expected `:PORT` after `]`, e.g. [::1]:9999"
                    ));
                }
            },
        };
        (host, port)
    } else if s.parse::<Ipv6Addr>().is_ok() {
        (s, DEFAULT_PORT)
    } else {
        match s.matches(':').count() {
            0 => (s, DEFAULT_PORT),
            1 => {
                let (host, p) = s.split_once(':').unwrap_or((s, ""));
                (host, port_of(p)?)
            }
            _ => {
                return Err(format!(
                    "--connect {s}: write IPv6 addresses in brackets, e.g. [::1]:9999"
                ));
            }
        }
    };
    if host.is_empty() {
        return Err(format!(
            "--connect {s}: no host; write HOST:PORT, e.g. 127.0.0.1:9999"
        ));
    }
    Ok((host.to_string(), port))
}

/// A timeout option in seconds: 0 means none; negative or not a number is a usage error.
fn timeout_arg(flag: &str, secs: f64) -> Result<Option<Duration>, Failure> {
    if secs == 0.0 {
        return Ok(None);
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(Some(d)),
        _ => Err(Failure::Usage(format!(
            "{flag} {secs}: give a number of seconds, e.g. 5 or 0.5 (0 waits forever)"
        ))),
    }
}

/// The order in which to try the addresses a name resolves to: the resolver's order
/// (RFC 6724 preference), duplicates removed, IPv6 and IPv4 alternating from the
/// first one's family (RFC 8305), so that one broken family costs one timeout, not
/// one per address.
fn order_addrs(addrs: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut unique: Vec<SocketAddr> = Vec::new();
    for addr in addrs {
        if !unique.contains(&addr) {
            unique.push(addr);
        }
    }
    let Some(first) = unique.first() else {
        return unique;
    };
    let first_v6 = first.is_ipv6();
    let (mut lead, mut other): (Vec<SocketAddr>, Vec<SocketAddr>) =
        unique.iter().partition(|a| a.is_ipv6() == first_v6);
    lead.reverse();
    other.reverse();
    let mut ordered = Vec::with_capacity(unique.len());
    loop {
        match (lead.pop(), other.pop()) {
            (None, None) => break,
            (a, b) => ordered.extend(a.into_iter().chain(b)),
        }
    }
    ordered
}

/// One failed connection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attempt {
    addr: SocketAddr,
    kind: ErrorKind,
    error: String,
}

/// Resolves the target and tries every address in turn.
fn connect(target: &Target, timeout: Option<Duration>) -> Result<(TcpStream, SocketAddr), Failure> {
    let resolved = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| Failure::Resolve {
            target: target.to_string(),
            error: e.to_string(),
        })?;
    let addrs = order_addrs(resolved);
    if addrs.is_empty() {
        return Err(Failure::Resolve {
            target: target.to_string(),
            error: "no addresses".into(),
        });
    }
    connect_addrs(&addrs, timeout).map_err(|attempts| Failure::Connect {
        target: target.to_string(),
        attempts,
        timeout,
    })
}

/// Tries each address in turn; the first connection wins.
fn connect_addrs(
    addrs: &[SocketAddr],
    timeout: Option<Duration>,
) -> Result<(TcpStream, SocketAddr), Vec<Attempt>> {
    let mut attempts = Vec::new();
    for &addr in addrs {
        debug!("connecting to {addr}");
        let result = match timeout {
            Some(t) => TcpStream::connect_timeout(&addr, t),
            None => TcpStream::connect(addr),
        };
        match result {
            Ok(stream) => return Ok((stream, addr)),
            Err(e) => {
                debug!("{addr}: {e}");
                attempts.push(Attempt {
                    addr,
                    kind: e.kind(),
                    error: e.to_string(),
                });
            }
        }
    }
    Err(attempts)
}

/// The message for a target none of whose addresses accepted a connection: the most
/// telling cause first (refused, then timed out, then unreachable), then every attempt
/// when there were several.
fn connect_message(target: &str, attempts: &[Attempt], timeout: Option<Duration>) -> String {
    let has = |kinds: &[ErrorKind]| attempts.iter().any(|a| kinds.contains(&a.kind));
    let mut message = if has(&[ErrorKind::ConnectionRefused]) {
        format!(
            "connection refused: is tcp-hello serve running on {target}? \
             Start it with `tcp-hello serve`, or give the server's address with --connect"
        )
    } else if has(&[ErrorKind::TimedOut, ErrorKind::WouldBlock]) {
        let secs = timeout.map_or(String::new(), |t| format!(" after {} s", t.as_secs_f64()));
        format!(
            "connecting to {target} timed out{secs}: the host may be down, or a firewall \
             drops the connection; check the address, or raise --connect-timeout"
        )
    } else if has(&[ErrorKind::NetworkUnreachable, ErrorKind::HostUnreachable]) {
        format!("cannot reach {target}: no route to it; check the address and the network")
    } else {
        let why = attempts.first().map_or("no address", |a| a.error.as_str());
        format!("cannot connect to {target}: {why}; check the address given with --connect")
    };
    if attempts.len() > 1 {
        let tried: Vec<String> = attempts
            .iter()
            .map(|a| format!("{}: {}", a.addr, a.error))
            .collect();
        message.push_str(&format!(" (tried {})", tried.join("; ")));
    }
    message
}

/// Why a session failed; each maps to an exit code and a message with cause and fix.
#[derive(Debug)]
enum Failure {
    Usage(String),
    Resolve {
        target: String,
        error: String,
    },
    Connect {
        target: String,
        attempts: Vec<Attempt>,
        timeout: Option<Duration>,
    },
    /// Nothing arrived for the reply timeout while something was due.
    Timeout {
        secs: f64,
        waiting: Waiting,
        /// Bytes received of a line that never ended (line framing).
        partial: usize,
    },
    Busy(String),
    Closed(Closed),
    Refused {
        count: u64,
        first: String,
    },
    /// A name longer than one chunk-framed message can carry.
    NameTooLong(usize),
    Stdin(io::Error),
    Stdout(io::Error),
    /// The connection failed while reading, other than by a reset (which is `Closed`).
    Socket(io::Error),
}

/// What the client was waiting for when the reply timeout passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Welcome,
    Replies(u64),
    Close,
}

/// How the server ended a session too early.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Closed {
    what: ClosedWhen,
    /// The last notice the server sent before closing.
    notice: Option<String>,
    /// Reset rather than closed.
    reset: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClosedWhen {
    BeforeWelcome,
    Unanswered(u64),
    InputOpen,
    Idle,
}

impl Failure {
    /// The process exit code.
    fn code(&self) -> u8 {
        match self {
            Failure::Usage(_) | Failure::NameTooLong(_) => EXIT_USAGE,
            Failure::Resolve { .. } | Failure::Connect { .. } => EXIT_CONNECT,
            Failure::Timeout { .. } => EXIT_TIMEOUT,
            Failure::Closed(c) if c.what == ClosedWhen::Idle => EXIT_TIMEOUT,
            Failure::Busy(_) => EXIT_BUSY,
            Failure::Closed(_) | Failure::Refused { .. } | Failure::Socket(_) => EXIT_PROTOCOL,
            Failure::Stdin(_) | Failure::Stdout(_) => EXIT_LOCAL_IO,
        }
    }

    /// The line printed on stderr; `None` when silence is right (stdout closed by a reader
    /// that has seen enough, as `| head` does).
    fn message(&self) -> Option<String> {
        Some(match self {
            Failure::Usage(m) => m.clone(),
            Failure::Resolve { target, error } => format!(
                "cannot resolve {target}: {error}; check the host name, or use an IP address"
            ),
            Failure::Connect {
                target,
                attempts,
                timeout,
            } => connect_message(target, attempts, *timeout),
            Failure::Timeout {
                secs,
                waiting,
                partial,
            } => {
                let what = match waiting {
                    Waiting::Welcome => "waiting for its welcome".to_string(),
                    Waiting::Replies(1) => "1 name unanswered".to_string(),
                    Waiting::Replies(n) => format!("{n} names unanswered"),
                    Waiting::Close => "waiting for it to close the connection".to_string(),
                };
                let hint = if *partial > 0 {
                    format!(
                        "; it sent {partial} bytes with no line ending: for a server that ends \
                         nothing with a newline (like the Python tutorial's), use --framing chunk"
                    )
                } else {
                    "; is it a tcp-hello server, and is it overloaded? \
                     Raise --reply-timeout to wait longer"
                        .to_string()
                };
                format!("timed out: nothing from the server for {secs} s ({what}){hint}")
            }
            Failure::Busy(line) => format!(
                "server busy ({line}): try again later, or raise the server's --max-connections"
            ),
            Failure::Closed(closed) => closed_message(closed),
            Failure::Refused { count, first } => {
                let names = if *count == 1 { "name" } else { "names" };
                let fix = if first.starts_with("ERROR line too long") {
                    "shorten them, or raise the server's --max-line"
                } else {
                    "see the server's log"
                };
                format!("the server refused {count} {names} ({first}): {fix}")
            }
            Failure::NameTooLong(len) => format!(
                "a name of {len} bytes does not fit in one chunk-framed message (at most \
                 {CHUNK_MAX} bytes): shorten it, or use line framing"
            ),
            Failure::Stdin(e) => format!("cannot read stdin: {e}"),
            Failure::Stdout(e) if e.kind() == ErrorKind::BrokenPipe => return None,
            Failure::Stdout(e) => format!("cannot write to stdout: {e}"),
            Failure::Socket(e) => {
                format!("connection to the server failed: {e}; check the network and try again")
            }
        })
    }
}

fn closed_message(closed: &Closed) -> String {
    let how = if closed.reset { "reset" } else { "closed" };
    let said = closed
        .notice
        .as_ref()
        .map_or(String::new(), |n| format!(" (it said: {n})"));
    match closed.what {
        ClosedWhen::BeforeWelcome => format!(
            "the server {how} the connection before its welcome: is it a tcp-hello server? \
             Check --connect"
        ),
        ClosedWhen::Unanswered(n) => {
            let names = if n == 1 { "name" } else { "names" };
            format!(
                "the server {how} the connection with {n} {names} unanswered{said}: \
                 see the server's log, and send them again"
            )
        }
        ClosedWhen::InputOpen => format!(
            "the server {how} the connection before the input ended{said}: \
             see the server's log, and send the rest again"
        ),
        ClosedWhen::Idle => format!(
            "the server closed the connection because this client sent nothing for too long\
             {said}: send names sooner, or raise the server's --idle-timeout"
        ),
    }
}

/// What a line (or chunk) from the server is, by its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    /// `ERROR server busy ...`: the server refused the connection.
    Busy,
    /// `ERROR idle ...`: the server is closing an idle connection.
    Idle,
    /// `server shutting down`.
    ShuttingDown,
    /// Any other `ERROR ...` line, e.g. `ERROR line too long`.
    Error,
    /// Anything else: a welcome, a reply, a farewell.
    Text,
}

/// Classifies a server line (without its ending; only its start matters).
fn classify_line(line: &[u8]) -> LineKind {
    if line.starts_with(b"ERROR server busy") {
        LineKind::Busy
    } else if line.starts_with(b"ERROR idle") {
        LineKind::Idle
    } else if line == b"server shutting down" {
        LineKind::ShuttingDown
    } else if line.starts_with(b"ERROR ") {
        LineKind::Error
    } else {
        LineKind::Text
    }
}

/// The part a server line plays in the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Welcome,
    Busy,
    /// The answer to a name.
    Reply,
    /// An `ERROR` line answering a name.
    Refusal,
    /// A notice of the server's own (idle, shutting down, an unexpected error).
    Notice,
    /// Nothing was due: the farewell, or a line the client cannot place.
    Extra,
}

/// What the client knows from the lines received, compared with the names sent.
#[derive(Debug, Default)]
struct Tally {
    welcomed: bool,
    /// Names answered, by a reply or a refusal.
    answered: u64,
    refused: u64,
    first_refusal: Option<String>,
    /// The last notice, and whether it was the idle one.
    notice: Option<(LineKind, String)>,
    /// The connection ended by a reset.
    reset: bool,
}

impl Tally {
    /// Accounts for one line, given how many names had been sent when it arrived.
    fn line(&mut self, line: &[u8], sent: u64) -> Role {
        let kind = classify_line(line);
        let text = || String::from_utf8_lossy(line).into_owned();
        if !self.welcomed {
            if kind == LineKind::Busy {
                return Role::Busy;
            }
            self.welcomed = true;
            return Role::Welcome;
        }
        let due = self.answered < sent;
        match kind {
            LineKind::Idle | LineKind::ShuttingDown | LineKind::Busy => {
                self.notice = Some((kind, text()));
                Role::Notice
            }
            LineKind::Error if due => {
                self.answered += 1;
                self.refused += 1;
                self.first_refusal.get_or_insert_with(text);
                Role::Refusal
            }
            LineKind::Error => {
                self.notice = Some((kind, text()));
                Role::Notice
            }
            LineKind::Text if due => {
                self.answered += 1;
                Role::Reply
            }
            LineKind::Text => Role::Extra,
        }
    }

    /// Whether something is due from the server.
    fn due(&self, sent: u64, finished: bool) -> Option<Waiting> {
        if !self.welcomed {
            Some(Waiting::Welcome)
        } else if self.answered < sent {
            Some(Waiting::Replies(sent - self.answered))
        } else if finished {
            Some(Waiting::Close)
        } else {
            None
        }
    }

    /// The verdict once the server has closed: `sent` names were sent, and `finished`
    /// tells whether the input ended (`exit` was sent).
    fn end(&self, sent: u64, finished: bool) -> Result<(), Failure> {
        let notice = self.notice.as_ref().map(|(_, text)| text.clone());
        let closed = |what| {
            Err(Failure::Closed(Closed {
                what,
                notice: notice.clone(),
                reset: self.reset,
            }))
        };
        if !self.welcomed {
            return closed(ClosedWhen::BeforeWelcome);
        }
        if self.answered < sent {
            return closed(ClosedWhen::Unanswered(sent - self.answered));
        }
        if !finished {
            let idle = matches!(self.notice, Some((LineKind::Idle, _)));
            return closed(if idle {
                ClosedWhen::Idle
            } else {
                ClosedWhen::InputOpen
            });
        }
        if self.refused > 0 {
            return Err(Failure::Refused {
                count: self.refused,
                first: self.first_refusal.clone().unwrap_or_default(),
            });
        }
        Ok(())
    }
}

/// What a socket read should wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// No reply timeout: block.
    Forever,
    /// Block at most this long, then look again.
    For(Duration),
    /// The reply timeout has passed.
    Expired,
}

/// How long the next read may block. `last` is the latest activity (bytes sent or
/// received, or the connection) and `now` the time, both measured from one origin.
/// While nothing is due the read wakes every `timeout` to look again; a read started
/// then ends before a deadline that starts later, so the deadline is kept exactly.
fn read_wait(timeout: Option<Duration>, due: bool, last: Duration, now: Duration) -> Wait {
    let Some(timeout) = timeout else {
        return Wait::Forever;
    };
    if !due {
        return Wait::For(timeout);
    }
    match (last + timeout).checked_sub(now) {
        Some(left) if !left.is_zero() => Wait::For(left.max(Duration::from_millis(1))),
        _ => Wait::Expired,
    }
}

/// Sets the socket's read timeout for a [`Wait`]; false when it has expired.
fn arm(stream: &TcpStream, wait: Wait) -> Result<bool, Failure> {
    let timeout = match wait {
        Wait::Expired => return Ok(false),
        Wait::Forever => None,
        Wait::For(d) => Some(d),
    };
    stream.set_read_timeout(timeout).map_err(Failure::Socket)?;
    Ok(true)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

/// Splits the server's byte stream into lines as it arrives: each line's text is
/// handed out at once (so a long line is never held whole), without its CRLF or LF,
/// and the first [`HEAD`] bytes of the current line are kept to classify it.
#[derive(Debug, Default)]
struct LineSplitter {
    head: Vec<u8>,
    /// Bytes of the current line so far.
    len: usize,
    /// The last read ended in CR, not handed out yet: a CRLF's CR, or data.
    cr: bool,
}

/// A piece of a server line.
#[derive(Debug, PartialEq, Eq)]
struct Piece<'a> {
    /// Text to print.
    text: &'a [u8],
    /// The line ends after `text`.
    end: bool,
}

impl LineSplitter {
    /// Takes the next piece from the front of `data`; `None` when `data` is used up.
    fn next<'a>(&mut self, data: &mut &'a [u8]) -> Option<Piece<'a>> {
        if data.is_empty() {
            return None;
        }
        let piece = if self.cr {
            self.cr = false;
            if data[0] == b'\n' {
                *data = &data[1..];
                Piece {
                    text: b"",
                    end: true,
                }
            } else {
                Piece {
                    text: b"\r",
                    end: false,
                }
            }
        } else if let Some(i) = memchr(b'\n', data) {
            let line = &data[..i];
            *data = &data[i + 1..];
            Piece {
                text: line.strip_suffix(b"\r").unwrap_or(line),
                end: true,
            }
        } else {
            let mut text = *data;
            *data = &[];
            if let Some(t) = text.strip_suffix(b"\r") {
                text = t;
                self.cr = true;
            }
            Piece { text, end: false }
        };
        self.keep(piece.text);
        Some(piece)
    }

    /// At the end of the stream: a held CR, then the end of an unterminated line.
    fn at_eof(&mut self) -> Option<Piece<'static>> {
        if self.cr {
            self.cr = false;
            self.keep(b"\r");
            return Some(Piece {
                text: b"\r",
                end: true,
            });
        }
        (self.len > 0).then_some(Piece {
            text: b"",
            end: true,
        })
    }

    fn keep(&mut self, text: &[u8]) {
        let room = HEAD.saturating_sub(self.head.len());
        self.head.extend_from_slice(&text[..room.min(text.len())]);
        self.len += text.len();
    }

    /// The first bytes of the line that just ended (or is in progress).
    fn head(&self) -> &[u8] {
        &self.head
    }

    /// Bytes of the line in progress.
    fn partial(&self) -> usize {
        self.len + usize::from(self.cr)
    }

    /// Forgets the line that ended.
    fn clear(&mut self) {
        self.head.clear();
        self.len = 0;
    }
}

/// A source of input bytes (stdin, or the names given as arguments).
type Input = BufReader<Box<dyn Read + Send>>;

/// The input for names: the arguments, one per line, or stdin.
fn names_input(names: &[String]) -> Input {
    let source: Box<dyn Read + Send> = if names.is_empty() {
        Box::new(io::stdin())
    } else {
        let mut text = names.join("\n").into_bytes();
        text.push(b'\n');
        Box::new(io::Cursor::new(text))
    };
    BufReader::with_capacity(INPUT_BUF, source)
}

/// Names read from the input, split into messages exactly as the server splits lines.
struct Names {
    input: Input,
    /// One input line (up to LF), which may hold several messages (telnet's CR NUL).
    line: Vec<u8>,
    pos: usize,
}

impl Names {
    fn new(input: Input) -> Self {
        Names {
            input,
            line: Vec::new(),
            pos: 0,
        }
    }

    /// Whether the next [`Names::next`] may block: no complete line is buffered.
    fn may_block(&self) -> bool {
        self.pos >= self.line.len() && memchr(b'\n', self.input.buffer()).is_none()
    }

    /// The next message and what it asks for; `None` at the end of the input.
    fn next(&mut self) -> io::Result<Option<(Request, &[u8])>> {
        if self.pos >= self.line.len() {
            self.line.clear();
            self.pos = 0;
            if self.input.read_until(b'\n', &mut self.line)? == 0 {
                return Ok(None);
            }
        }
        let start = self.pos;
        let (end, next) = find_line_end(&self.line, start, start)
            .unwrap_or_else(|| (start + partial_len(&self.line[start..]), self.line.len()));
        self.pos = next;
        let message = &self.line[start..end];
        Ok(Some((classify(message), message)))
    }
}

/// Writes a name with every 0xFF doubled (telnet's IAC IAC), which the server reads as
/// one 0xFF byte instead of the start of a telnet command.
fn write_escaped(out: &mut impl Write, mut name: &[u8]) -> io::Result<()> {
    while let Some(i) = memchr(0xFF, name) {
        out.write_all(&name[..=i])?;
        out.write_all(&[0xFF])?;
        name = &name[i + 1..];
    }
    out.write_all(name)
}

/// Milliseconds since `origin`, for the atomics the threads share.
fn millis(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What the writer thread tells the reader.
#[derive(Debug, Default)]
struct Shared {
    /// Names handed to the socket (counted before their bytes can reach the server).
    sent: AtomicU64,
    /// The input ended and `exit` went (or is going) out.
    finished: AtomicBool,
    /// When bytes were last handed to the socket, in ms from the session's origin.
    last_tx: AtomicU64,
    /// Reading stdin failed.
    stdin_error: Mutex<Option<io::Error>>,
}

impl Shared {
    fn touch(&self, origin: Instant) {
        self.last_tx.store(millis(origin), SeqCst);
    }

    fn sent(&self) -> u64 {
        self.sent.load(SeqCst)
    }

    fn finished(&self) -> bool {
        self.finished.load(SeqCst)
    }

    fn set_stdin_error(&self, e: io::Error) {
        *self
            .stdin_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(e);
    }

    fn take_stdin_error(&self) -> Option<io::Error> {
        self.stdin_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Why the writer stopped early.
enum WriteStop {
    Stdin(io::Error),
    /// The socket refused bytes: the server is gone; the reader tells why.
    Socket,
}

/// The writer thread of line framing: waits for the welcome, then sends every name,
/// flushing whenever the input has nothing complete buffered, then `exit` and a
/// half-close.
fn send_names(
    stream: TcpStream,
    mut names: Names,
    shared: &Shared,
    origin: Instant,
    welcomed: mpsc::Receiver<()>,
    interactive: bool,
) {
    if welcomed.recv().is_err() {
        return; // The reader gave up before the welcome.
    }
    let mut out = BufWriter::with_capacity(WRITE_BUF, &stream);
    match pump_names(&mut out, &mut names, shared, origin, interactive) {
        Ok(()) => {
            let _ = stream.shutdown(Shutdown::Write);
        }
        Err(WriteStop::Stdin(e)) => {
            shared.set_stdin_error(e);
            // Wakes the reader, which reports the error.
            let _ = stream.shutdown(Shutdown::Both);
        }
        Err(WriteStop::Socket) => {}
    }
}

fn pump_names(
    out: &mut BufWriter<&TcpStream>,
    names: &mut Names,
    shared: &Shared,
    origin: Instant,
    interactive: bool,
) -> Result<(), WriteStop> {
    let socket = |_: io::Error| WriteStop::Socket;
    loop {
        if names.may_block() {
            out.flush().map_err(socket)?;
            shared.touch(origin);
        }
        let Some((request, name)) = names.next().map_err(WriteStop::Stdin)? else {
            break;
        };
        match request {
            Request::Blank => {
                if interactive {
                    note("> ");
                }
            }
            Request::Exit => {
                // Marked before the bytes leave, so the reader cannot see the close first.
                shared.touch(origin);
                shared.finished.store(true, SeqCst);
                out.write_all(name).map_err(socket)?;
                out.write_all(b"\n").map_err(socket)?;
                return out.flush().map_err(socket);
            }
            Request::Name => {
                shared.touch(origin);
                shared.sent.fetch_add(1, SeqCst);
                write_escaped(out, name).map_err(socket)?;
                out.write_all(b"\n").map_err(socket)?;
            }
        }
    }
    if interactive {
        // After Ctrl-D the cursor sits after the prompt.
        note("\n");
    }
    shared.touch(origin);
    shared.finished.store(true, SeqCst);
    out.write_all(b"exit\n").map_err(socket)?;
    out.flush().map_err(socket)
}

/// Line framing: a writer thread pipelines the names while this thread prints every
/// line the server sends and keeps the tally, until the server closes.
fn line_session(
    stream: TcpStream,
    cfg: &Config,
    names: Names,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let origin = Instant::now();
    let shared = Arc::new(Shared::default());
    let (welcome_tx, welcome_rx) = mpsc::channel();
    let mut welcome_tx = Some(welcome_tx);
    let writer_stream = stream.try_clone().map_err(Failure::Socket)?;
    let writer_shared = Arc::clone(&shared);
    let interactive = cfg.interactive;
    thread::Builder::new()
        .name("client-writer".into())
        .spawn(move || {
            send_names(
                writer_stream,
                names,
                &writer_shared,
                origin,
                welcome_rx,
                interactive,
            );
        })
        .map_err(Failure::Socket)?;

    let mut tally = Tally::default();
    let mut split = LineSplitter::default();
    let mut buf = vec![0u8; READ_BUF];
    let mut last_rx = Duration::ZERO;
    loop {
        out.flush().map_err(Failure::Stdout)?;
        let due = tally.due(shared.sent(), shared.finished());
        let last_tx = Duration::from_millis(shared.last_tx.load(SeqCst));
        let wait = read_wait(
            cfg.reply_timeout,
            due.is_some(),
            last_rx.max(last_tx),
            origin.elapsed(),
        );
        if !arm(&stream, wait)? {
            let _ = out.write_all(if split.partial() > 0 { b"\n" } else { b"" });
            return Err(Failure::Timeout {
                secs: cfg.reply_timeout.map_or(0.0, |t| t.as_secs_f64()),
                waiting: due.unwrap_or(Waiting::Close),
                partial: split.partial(),
            });
        }
        let n = match (&stream).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted || is_timeout(&e) => continue,
            Err(e) if is_reset(&e) => {
                tally.reset = true;
                break;
            }
            Err(e) => return Err(Failure::Socket(e)),
        };
        last_rx = origin.elapsed();
        let mut data = &buf[..n];
        while let Some(piece) = split.next(&mut data) {
            out.write_all(piece.text).map_err(Failure::Stdout)?;
            if piece.end {
                on_line(&mut tally, &mut split, &shared, cfg, out, &mut welcome_tx)?;
            }
        }
    }
    if let Some(piece) = split.at_eof() {
        out.write_all(piece.text).map_err(Failure::Stdout)?;
        on_line(&mut tally, &mut split, &shared, cfg, out, &mut welcome_tx)?;
    }
    if let Some(e) = shared.take_stdin_error() {
        return Err(Failure::Stdin(e));
    }
    tally.end(shared.sent(), shared.finished())
}

/// A line from the server has ended: finish it on stdout and account for it.
fn on_line(
    tally: &mut Tally,
    split: &mut LineSplitter,
    shared: &Shared,
    cfg: &Config,
    out: &mut impl Write,
    welcome_tx: &mut Option<mpsc::Sender<()>>,
) -> Result<(), Failure> {
    out.write_all(b"\n").map_err(Failure::Stdout)?;
    let sent = shared.sent();
    let role = tally.line(split.head(), sent);
    if role == Role::Busy {
        return Err(Failure::Busy(
            String::from_utf8_lossy(split.head()).into_owned(),
        ));
    }
    split.clear();
    if role == Role::Welcome {
        if let Some(tx) = welcome_tx.take() {
            // The writer may be gone only if the process is ending.
            let _ = tx.send(());
        }
    }
    if cfg.interactive && tally.due(sent, shared.finished()).is_none() {
        out.flush().map_err(Failure::Stdout)?;
        note("> ");
    }
    Ok(())
}

/// Chunk framing, in lockstep: each name is sent alone and its reply awaited, as the
/// Python tutorial's server needs.
fn chunk_session(
    stream: &TcpStream,
    cfg: &Config,
    mut names: Names,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let mut tally = Tally::default();
    let mut buf = vec![0u8; READ_BUF];
    let mut sent = 0u64;
    let mut print = |tally: &mut Tally, message: &[u8], sent: u64| -> Result<Role, Failure> {
        let message = chunk_message(message);
        out.write_all(message).map_err(Failure::Stdout)?;
        out.write_all(b"\n").map_err(Failure::Stdout)?;
        out.flush().map_err(Failure::Stdout)?;
        match tally.line(message, sent) {
            Role::Busy => Err(Failure::Busy(String::from_utf8_lossy(message).into_owned())),
            role => Ok(role),
        }
    };
    let Some(n) = read_chunk(stream, &mut buf, cfg, Waiting::Welcome, &mut tally)? else {
        return tally.end(0, false);
    };
    print(&mut tally, &buf[..n], 0)?;
    let mut exited = false;
    loop {
        if cfg.interactive {
            note("> ");
        }
        let next = names.next().map_err(Failure::Stdin)?;
        let Some((request, name)) = next else { break };
        match request {
            Request::Blank => continue,
            Request::Exit => {
                send_all(stream, name, &mut tally)?;
                exited = true;
                break;
            }
            Request::Name => {
                if name.len() > CHUNK_MAX {
                    return Err(Failure::NameTooLong(name.len()));
                }
                let mut wire = Vec::with_capacity(name.len() + 1);
                // Cannot fail: writing to a Vec.
                let _ = write_escaped(&mut wire, name);
                send_all(stream, &wire, &mut tally)?;
                sent += 1;
                match read_chunk(stream, &mut buf, cfg, Waiting::Replies(1), &mut tally)? {
                    Some(n) => {
                        print(&mut tally, &buf[..n], sent)?;
                    }
                    None => return tally.end(sent, false),
                }
            }
        }
    }
    if !exited {
        if cfg.interactive {
            note("\n");
        }
        send_all(stream, b"exit", &mut tally)?;
    }
    while let Some(n) = read_chunk(stream, &mut buf, cfg, Waiting::Close, &mut tally)? {
        print(&mut tally, &buf[..n], sent)?;
    }
    tally.end(sent, true)
}

/// Sends one chunk-framed message; a server that is gone shows up at the next read.
fn send_all(stream: &TcpStream, bytes: &[u8], tally: &mut Tally) -> Result<(), Failure> {
    match (&*stream).write_all(bytes) {
        Ok(()) => Ok(()),
        Err(e) if is_reset(&e) => {
            tally.reset = true;
            Ok(())
        }
        Err(e) => Err(Failure::Socket(e)),
    }
}

/// Reads one chunk-framed message within the reply timeout; `None` when the server closed.
fn read_chunk(
    stream: &TcpStream,
    buf: &mut [u8],
    cfg: &Config,
    waiting: Waiting,
    tally: &mut Tally,
) -> Result<Option<usize>, Failure> {
    let start = Instant::now();
    loop {
        let wait = read_wait(cfg.reply_timeout, true, Duration::ZERO, start.elapsed());
        if !arm(stream, wait)? {
            return Err(Failure::Timeout {
                secs: cfg.reply_timeout.map_or(0.0, |t| t.as_secs_f64()),
                waiting,
                partial: 0,
            });
        }
        match (&*stream).read(buf) {
            Ok(0) => return Ok(None),
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == ErrorKind::Interrupted || is_timeout(&e) => continue,
            Err(e) if is_reset(&e) => {
                tally.reset = true;
                return Ok(None);
            }
            Err(e) => return Err(Failure::Socket(e)),
        }
    }
}

/// `--raw`: stdin to the socket and the socket to stdout, unchanged; a half-close when
/// stdin ends; done when the server closes.
fn raw_session(stream: TcpStream, cfg: &Config, out: &mut impl Write) -> Result<(), Failure> {
    let origin = Instant::now();
    let shared = Arc::new(Shared::default());
    let writer_stream = stream.try_clone().map_err(Failure::Socket)?;
    let writer_shared = Arc::clone(&shared);
    thread::Builder::new()
        .name("client-writer".into())
        .spawn(move || copy_stdin(writer_stream, &writer_shared, origin))
        .map_err(Failure::Socket)?;
    let mut buf = vec![0u8; READ_BUF];
    let mut last_rx = Duration::ZERO;
    loop {
        out.flush().map_err(Failure::Stdout)?;
        let finished = shared.finished();
        let last_tx = Duration::from_millis(shared.last_tx.load(SeqCst));
        let wait = read_wait(
            cfg.reply_timeout,
            finished,
            last_rx.max(last_tx),
            origin.elapsed(),
        );
        if !arm(&stream, wait)? {
            return Err(Failure::Timeout {
                secs: cfg.reply_timeout.map_or(0.0, |t| t.as_secs_f64()),
                waiting: Waiting::Close,
                partial: 0,
            });
        }
        match (&stream).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                last_rx = origin.elapsed();
                out.write_all(&buf[..n]).map_err(Failure::Stdout)?;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted || is_timeout(&e) => {}
            Err(e) => return Err(Failure::Socket(e)),
        }
    }
    if let Some(e) = shared.take_stdin_error() {
        return Err(Failure::Stdin(e));
    }
    Ok(())
}

/// The writer thread of `--raw`: every read from stdin goes out as it is.
fn copy_stdin(stream: TcpStream, shared: &Shared, origin: Instant) {
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0u8; INPUT_BUF];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                shared.set_stdin_error(e);
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        };
        shared.touch(origin);
        if (&stream).write_all(&buf[..n]).is_err() {
            return; // The server closed; the reader finishes.
        }
    }
    shared.touch(origin);
    shared.finished.store(true, SeqCst);
    let _ = stream.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, TcpListener};

    fn v4(last: u8, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), port)
    }

    fn v6(last: u16, port: u16) -> SocketAddr {
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last)),
            port,
        )
    }

    #[test]
    fn default_port_matches_the_default_address() {
        assert_eq!(
            parse_target(crate::cli::DEFAULT_ADDR),
            Ok(("127.0.0.1".to_string(), DEFAULT_PORT))
        );
    }

    #[test]
    fn targets_parse_with_and_without_port() {
        let ok = |s: &str, host: &str, port: u16| {
            assert_eq!(parse_target(s), Ok((host.to_string(), port)), "{s}");
        };
        ok("localhost:80", "localhost", 80);
        ok("localhost", "localhost", 9999);
        ok("[::1]:8080", "::1", 8080);
        ok("[::1]", "::1", 9999);
        ok("::1", "::1", 9999);
        ok("fe80::1", "fe80::1", 9999);
        ok(" 10.0.0.1:7 ", "10.0.0.1", 7);
        for bad in [
            "host:x",
            "host:0",
            ":80",
            "[::1",
            "[::1]80",
            "a:b:c",
            "host:70000",
            "",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
        assert!(parse_target("a:b:c").unwrap_err().contains("brackets"));
    }

    #[test]
    fn targets_display_ipv6_in_brackets() {
        let t = |host: &str| Target {
            host: host.into(),
            port: 1,
        };
        assert_eq!(t("::1").to_string(), "[::1]:1");
        assert_eq!(t("localhost").to_string(), "localhost:1");
    }

    #[test]
    fn timeouts_zero_means_none_and_nonsense_is_usage() {
        assert_eq!(timeout_arg("--x", 0.0).ok(), Some(None));
        assert_eq!(
            timeout_arg("--x", 1.5).ok(),
            Some(Some(Duration::from_millis(1500)))
        );
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e-12] {
            let e = timeout_arg("--x", bad).unwrap_err();
            assert_eq!(e.code(), EXIT_USAGE, "{bad}");
        }
    }

    #[test]
    fn addresses_alternate_families_from_the_first() {
        assert_eq!(
            order_addrs([v6(1, 1), v6(2, 1), v4(1, 1), v4(2, 1), v6(1, 1)]),
            [v6(1, 1), v4(1, 1), v6(2, 1), v4(2, 1)]
        );
        assert_eq!(
            order_addrs([v4(1, 1), v6(1, 1), v6(2, 1)]),
            [v4(1, 1), v6(1, 1), v6(2, 1)]
        );
        assert_eq!(order_addrs([v4(1, 1), v4(1, 1)]), [v4(1, 1)]);
        assert!(order_addrs([]).is_empty());
    }

    #[test]
    fn every_address_is_tried_in_turn() {
        let dead = TcpListener::bind("127.0.0.1:0").unwrap();
        let refused = dead.local_addr().unwrap();
        drop(dead);
        let live = TcpListener::bind("127.0.0.1:0").unwrap();
        let good = live.local_addr().unwrap();
        let (_, addr) = connect_addrs(&[refused, good], Some(Duration::from_secs(5))).unwrap();
        assert_eq!(addr, good);
        let attempts = connect_addrs(&[refused], Some(Duration::from_secs(5))).unwrap_err();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].kind, ErrorKind::ConnectionRefused);
    }

    #[test]
    fn connect_messages_name_cause_and_fix() {
        let attempt = |addr, kind| Attempt {
            addr,
            kind,
            error: io::Error::from(kind).to_string(),
        };
        let a = v4(1, 9999);
        let m = connect_message(
            "127.0.0.1:9999",
            &[attempt(a, ErrorKind::ConnectionRefused)],
            None,
        );
        assert!(
            m.starts_with("connection refused: is tcp-hello serve running on 127.0.0.1:9999?"),
            "{m}"
        );
        assert!(!m.contains("tried"));
        let m = connect_message(
            "h:1",
            &[attempt(a, ErrorKind::TimedOut)],
            Some(Duration::from_secs(2)),
        );
        assert!(
            m.contains("timed out after 2 s") && m.contains("--connect-timeout"),
            "{m}"
        );
        // Refused wins over a timeout, and every attempt is listed.
        let m = connect_message(
            "h:1",
            &[
                attempt(v6(1, 1), ErrorKind::TimedOut),
                attempt(a, ErrorKind::ConnectionRefused),
            ],
            None,
        );
        assert!(m.starts_with("connection refused"), "{m}");
        assert!(
            m.contains("[fd00::1]:1") && m.contains("10.0.0.1:9999"),
            "{m}"
        );
        let m = connect_message("h:1", &[attempt(a, ErrorKind::HostUnreachable)], None);
        assert!(m.contains("no route"), "{m}");
    }

    #[test]
    fn server_lines_are_classified_by_their_start() {
        assert_eq!(
            classify_line(b"ERROR server busy (3 connections), try again later"),
            LineKind::Busy
        );
        assert_eq!(
            classify_line(b"ERROR idle for 300 s, closing"),
            LineKind::Idle
        );
        assert_eq!(
            classify_line(b"server shutting down"),
            LineKind::ShuttingDown
        );
        assert_eq!(
            classify_line(b"ERROR line too long (max 8 bytes), skipped"),
            LineKind::Error
        );
        for text in [
            &b"Welcome!"[..],
            b"Hello, ERROR x!",
            b"",
            b"ERRORS",
            b"Bye!",
        ] {
            assert_eq!(classify_line(text), LineKind::Text);
        }
    }

    #[test]
    fn tally_counts_replies_refusals_and_extras() {
        let mut t = Tally::default();
        assert_eq!(t.due(0, false), Some(Waiting::Welcome));
        assert_eq!(t.line(b"Welcome!", 0), Role::Welcome);
        assert_eq!(t.due(0, false), None);
        assert_eq!(t.due(3, false), Some(Waiting::Replies(3)));
        assert_eq!(t.line(b"Hello, a!", 3), Role::Reply);
        assert_eq!(
            t.line(b"ERROR line too long (max 1 bytes), skipped", 3),
            Role::Refusal
        );
        assert_eq!(t.line(b"Hello, c!", 3), Role::Reply);
        assert_eq!(t.due(3, true), Some(Waiting::Close));
        assert_eq!(t.line(b"Bye!", 3), Role::Extra);
        let e = t.end(3, true).unwrap_err();
        assert_eq!(e.code(), EXIT_PROTOCOL);
        assert!(e.message().unwrap().contains("--max-line"));
    }

    #[test]
    fn tally_busy_only_in_place_of_the_welcome() {
        let mut t = Tally::default();
        assert_eq!(
            t.line(b"ERROR server busy (1 connections), try again later", 0),
            Role::Busy
        );
        assert!(!t.welcomed);
        let mut t = Tally::default();
        t.line(b"Welcome!", 0);
        assert_eq!(t.line(b"ERROR server busy", 0), Role::Notice);
    }

    #[test]
    fn tally_verdicts() {
        let welcomed = || {
            let mut t = Tally::default();
            t.line(b"Welcome!", 0);
            t
        };
        assert!(welcomed().end(0, true).is_ok());
        let closed = |r: Result<(), Failure>| match r {
            Err(Failure::Closed(c)) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            closed(Tally::default().end(0, false)).what,
            ClosedWhen::BeforeWelcome
        );
        let mut t = welcomed();
        t.line(b"Hello, a!", 3);
        assert_eq!(t.line(b"server shutting down", 3), Role::Notice);
        let e = t.end(3, true);
        let c = closed(e);
        assert_eq!(c.what, ClosedWhen::Unanswered(2));
        assert_eq!(c.notice.as_deref(), Some("server shutting down"));
        assert_eq!(closed(welcomed().end(0, false)).what, ClosedWhen::InputOpen);
        let mut t = welcomed();
        t.line(b"ERROR idle for 5 s, closing", 0);
        let e = t.end(0, false).unwrap_err();
        assert_eq!(e.code(), EXIT_TIMEOUT);
        assert!(e.message().unwrap().contains("--idle-timeout"));
    }

    #[test]
    fn failures_map_to_distinct_codes() {
        let codes = [
            Failure::Usage(String::new()).code(),
            Failure::Connect {
                target: String::new(),
                attempts: vec![],
                timeout: None,
            }
            .code(),
            Failure::Timeout {
                secs: 1.0,
                waiting: Waiting::Welcome,
                partial: 0,
            }
            .code(),
            Failure::Closed(Closed {
                what: ClosedWhen::InputOpen,
                notice: None,
                reset: false,
            })
            .code(),
            Failure::Busy(String::new()).code(),
            Failure::Stdin(io::Error::other("x")).code(),
        ];
        assert_eq!(
            codes,
            [
                EXIT_USAGE,
                EXIT_CONNECT,
                EXIT_TIMEOUT,
                EXIT_PROTOCOL,
                EXIT_BUSY,
                EXIT_LOCAL_IO
            ]
        );
        assert_eq!(
            Failure::Stdout(io::Error::from(ErrorKind::BrokenPipe)).message(),
            None
        );
    }

    #[test]
    fn timeout_message_hints_chunk_framing_for_unended_lines() {
        let m = |partial| {
            Failure::Timeout {
                secs: 1.0,
                waiting: Waiting::Welcome,
                partial,
            }
            .message()
            .unwrap()
        };
        assert!(m(8).contains("--framing chunk"), "{}", m(8));
        assert!(m(0).contains("--reply-timeout"), "{}", m(0));
    }

    #[test]
    fn read_wait_runs_only_while_something_is_due() {
        let s = Duration::from_secs;
        assert_eq!(read_wait(None, true, s(0), s(100)), Wait::Forever);
        assert_eq!(
            read_wait(Some(s(10)), false, s(0), s(100)),
            Wait::For(s(10))
        );
        assert_eq!(read_wait(Some(s(10)), true, s(95), s(100)), Wait::For(s(5)));
        assert_eq!(read_wait(Some(s(10)), true, s(90), s(100)), Wait::Expired);
        assert_eq!(read_wait(Some(s(10)), true, s(80), s(100)), Wait::Expired);
    }

    fn split_all(chunks: &[&[u8]]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut s = LineSplitter::default();
        let (mut out, mut lines) = (Vec::new(), Vec::new());
        for chunk in chunks {
            let mut data = *chunk;
            while let Some(p) = s.next(&mut data) {
                out.extend_from_slice(p.text);
                if p.end {
                    out.push(b'\n');
                    lines.push(s.head().to_vec());
                    s.clear();
                }
            }
        }
        if let Some(p) = s.at_eof() {
            out.extend_from_slice(p.text);
            out.push(b'\n');
            lines.push(s.head().to_vec());
        }
        (out, lines)
    }

    #[test]
    fn splitter_turns_crlf_into_lf_across_reads() {
        let (out, lines) = split_all(&[b"Welcome!\r", b"\nHello, a!\r\nHel", b"lo, b!\n"]);
        assert_eq!(out, b"Welcome!\nHello, a!\nHello, b!\n");
        assert_eq!(lines, [&b"Welcome!"[..], b"Hello, a!", b"Hello, b!"]);
        // A CR not before LF is data; an unterminated last line still counts.
        let (out, lines) = split_all(&[b"a\r", b"b\r\n", b"tail\r"]);
        assert_eq!(out, b"a\rb\ntail\r\n");
        assert_eq!(lines, [&b"a\rb"[..], b"tail\r"]);
        let (out, lines) = split_all(&[b"", b"\n"]);
        assert_eq!((out, lines), (b"\n".to_vec(), vec![vec![]]));
    }

    #[test]
    fn splitter_keeps_only_the_head_of_long_lines() {
        let long = vec![b'x'; 10 * HEAD];
        let mut s = LineSplitter::default();
        let mut data = &long[..];
        while s.next(&mut data).is_some() {}
        assert_eq!(s.head().len(), HEAD);
        assert_eq!(s.partial(), long.len());
    }

    fn names_of(input: &[u8]) -> Vec<(Request, Vec<u8>)> {
        let source: Box<dyn Read + Send> = Box::new(io::Cursor::new(input.to_vec()));
        let mut names = Names::new(BufReader::new(source));
        let mut all = Vec::new();
        while let Some((r, n)) = names.next().unwrap() {
            all.push((r, n.to_vec()));
        }
        all
    }

    #[test]
    fn names_split_like_the_server() {
        use Request::*;
        assert_eq!(
            names_of(b"Alice\n\nBob\r\n  \na\r\0b\nexit\nCarol"),
            [
                (Name, b"Alice".to_vec()),
                (Blank, b"".to_vec()),
                (Name, b"Bob".to_vec()),
                (Blank, b"  ".to_vec()),
                (Name, b"a".to_vec()),
                (Name, b"b".to_vec()),
                (Exit, b"exit".to_vec()),
                (Name, b"Carol".to_vec()),
            ]
        );
        assert_eq!(names_of(b"x\r"), [(Name, b"x".to_vec())]);
        assert!(names_of(b"").is_empty());
    }

    #[test]
    fn iac_bytes_are_doubled() {
        let mut out = Vec::new();
        write_escaped(&mut out, b"a\xffb\xff").unwrap();
        assert_eq!(out, b"a\xff\xffb\xff\xff");
        out.clear();
        write_escaped(&mut out, "张三".as_bytes()).unwrap();
        assert_eq!(out, "张三".as_bytes());
    }
}
