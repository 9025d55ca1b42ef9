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
//!   As in line framing a writer thread sends them while the main thread reads, so a
//!   notice the server sends while stdin is quiet (`ERROR idle ...`) is seen when it
//!   comes, not later as the answer to the next name.
//!   A name longer than [`CHUNK_MAX`] bytes cannot be one message and is refused.
//!   A welcome that ends with a line ending says the server probably frames lines: if a
//!   name (or `exit`) then goes unanswered until the reply timeout or the server's idle
//!   close, the message says to drop `--framing chunk`. The full reply timeout is still
//!   waited for, since a chunk server may end its welcome with a newline and be slow to
//!   answer, and a newline cannot be added to names (the tutorial's server would greet
//!   `Michael\n`).
//! - **`--raw`**: a byte pipe like nc: stdin to the socket unchanged, the socket to stdout
//!   unchanged, a half-close when stdin ends, exit when the server closes. The exit code
//!   still follows the table for tcp-hello's own notices: [`EXIT_BUSY`] when the first
//!   line the server sent (in chunk framing, its first read) is the busy notice,
//!   [`EXIT_TIMEOUT`] when the last line (or read) before the close is the idle notice,
//!   each with the line client's message, and then the rest of stdin is not sent;
//!   otherwise [`EXIT_OK`]. Only the first 256 bytes of those two lines are kept.
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
//! - A server line with control bytes (other than tab and CR) when no name sent had any
//!   is not a line of the protocol (a `--fault garbage` line is one): it is printed escaped, so that it cannot
//!   drive the terminal, the session goes on, and the exit code is [`EXIT_PROTOCOL`].
//! - `ERROR server busy` (or the per-address `ERROR too many connections from your
//!   address`) as the first line ends the session with [`EXIT_BUSY`].
//! - The server closing before its welcome, before answering every name sent, or before
//!   the input ended (`server shutting down`, a crash) is a protocol error; closing
//!   right after `ERROR idle ...` (no input for the server's idle timeout) is a timeout,
//!   whatever was still due: a name sent as the notice was on its way never reached it.
//! - The reply timeout only runs while something is due (the welcome, a reply, or the
//!   close after `exit`); a person thinking at the prompt never times out.
//!   In `--raw` mode it runs once stdin has ended.
//! - A reply timeout of 0 means "no timeout"; a connect timeout of 0 leaves it to the
//!   system. Either is at most [`MAX_TIMEOUT_SECS`](crate::config::MAX_TIMEOUT_SECS) (one year): longer is refused as a
//!   usage error, as it could only mean "forever", which 0 says.
//!
//! # TLS
//!
//! `--tls` (or `TCP_HELLO_TLS=1`) speaks TLS 1.2 or 1.3, with rustls, in every mode above.
//! The server's certificate must chain to a CA of `--tls-ca` (without it, to one of the
//! system's trust roots) and be valid for the host of `--connect`, or for
//! `--tls-server-name` (an IP address is checked against the certificate's IP
//! addresses). `--tls-cert` and `--tls-key` (both or neither) give a server that asks
//! for one this client's certificate. A TLS option without `--tls` is a usage error, as
//! is a TLS file that cannot be used (the message names it); both are read before
//! connecting.
//!
//! - The handshake is bounded by `--connect-timeout` (by `--reply-timeout` when that is
//!   0, and by nothing when both are): a server that accepts and says nothing cannot
//!   hold the client. Timing out is [`EXIT_TIMEOUT`].
//! - At the end of the input the last bytes (`exit`) and close_notify leave in one
//!   write, then the half-close as over TCP (none in chunk framing): a server that reads
//!   more than one record at a time then has the close_notify when it sees `exit`, and
//!   closes with nothing unread (a close with data unread would reset the connection).
//! - The server's close_notify is a clean close. A close without it is judged like any
//!   close: after everything expected it is tolerated (noted at debug level), before
//!   that it is the server closing early, [`EXIT_PROTOCOL`].
//! - Every other TLS failure is [`EXIT_TLS`], with its cause and fix: the server's
//!   certificate is not signed by a trusted CA, is not for the name, or is expired or
//!   not yet valid; the server requires a client certificate, or rejected this one; the
//!   server does not speak TLS (its plain-text answer is shown); an alert, or records
//!   rustls refuses.
//!
//! # Exit codes
//!
//! [`EXIT_OK`] 0, [`EXIT_LOCAL_IO`] 1, [`EXIT_USAGE`] 2, [`EXIT_CONNECT`] 3,
//! [`EXIT_TIMEOUT`] 4, [`EXIT_PROTOCOL`] 5, [`EXIT_BUSY`] 6, [`EXIT_TLS`] 7,
//! [`EXIT_LOST`] 8 (`--udp`: a name got no reply).
//!
//! # Modules
//!
//! - `connect`: resolving the target, trying each address in turn, and why none accepted;
//! - `failure`: why a session failed, with its exit code and its message;
//! - `tally`: what the server's lines are, classified and tallied against names sent
//!   (in `--raw` mode, only the first and the last);
//! - `wait`: how long a socket read may block, and which I/O errors are timeouts or resets;
//! - `lines`: splitting the server's byte stream into lines as it arrives;
//! - `names`: the names input (arguments or stdin), split as the server splits lines;
//! - `link`: the connection, plain TCP or TLS, split into a reading and a writing half;
//! - `tls`: the TLS set-up, the handshake, and how the two halves share one TLS
//!   connection;
//! - `tls_failure`: why TLS failed, and the message that says so;
//! - `session`: the line framing, chunk framing and `--raw` sessions;
//! - `udp`: `--udp`, names as datagrams with retries, and `--raw --udp`.
//!
//! [`CHUNK_MAX`]: crate::protocol::CHUNK_MAX

mod connect;
mod failure;
mod lines;
mod link;
mod names;
mod session;
mod tally;
mod tls;
mod tls_failure;
mod udp;
mod wait;

use std::io::{self, BufWriter, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::debug;

use crate::address::{HostPort, Target, unix_display};
use crate::config::ClientConfig;
use crate::protocol::Framing;
use crate::trace::Trace;

use connect::{connect, connect_unix};
use failure::Failure;
use link::Link;
use names::{Names, names_input};
use session::{chunk_session, line_session, raw_session};
use tls::tls_setup;

/// Success: every name was answered and the server closed after `exit`
/// (`--raw`: the server closed, with neither the busy nor the idle notice).
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
/// was due, or it closed the connection as idle (its last line was `ERROR idle ...`).
pub const EXIT_TIMEOUT: u8 = 4;
/// The server broke the conversation: it closed or reset the connection before its
/// welcome, before answering every name or before the input ended, or it answered a
/// name with an `ERROR` line (`--raw`: only a reset, or another failure of the connection).
pub const EXIT_PROTOCOL: u8 = 5;
/// The server said `ERROR server busy` (or, per address, `ERROR too many connections
/// from your address`) instead of its welcome, `--raw` included: try again later.
pub const EXIT_BUSY: u8 = 6;
/// `--tls` failed: the server's certificate is not trusted, not for the name connected
/// to, or out of date; the server wants a client certificate, or rejected this one; it
/// does not speak TLS; or another failure of the handshake or of TLS later. (A handshake
/// that gets no answer in time is [`EXIT_TIMEOUT`].)
pub const EXIT_TLS: u8 = 7;
/// `--udp`: a name got no reply after every retry (or, `--raw --udp`, fewer datagrams
/// came back than went out): UDP lost it, or nothing answers there.
pub const EXIT_LOST: u8 = 8;

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
pub fn run(config: &ClientConfig) -> ExitCode {
    if config.udp && config.trace.is_some() {
        let _ = writeln!(
            io::stderr(),
            "tcp-hello: --trace shows TCP connections; drop it with --udp"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    if config.udp
        && config
            .connect
            .trim()
            .starts_with(crate::address::UNIX_PREFIX)
    {
        let _ = writeln!(
            io::stderr(),
            "tcp-hello: --udp sends datagrams to HOST:PORT, and a unix: socket is a stream: \
             drop --udp"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    if config.udp {
        return match udp::session(config) {
            Ok(()) => ExitCode::from(EXIT_OK),
            Err(failure) => {
                if let Some(message) = failure.message() {
                    let _ = writeln!(io::stderr(), "tcp-hello: {message}");
                }
                ExitCode::from(failure.code())
            }
        };
    }
    match session(config) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(failure) => {
            if let Some(message) = failure.message() {
                let _ = writeln!(io::stderr(), "tcp-hello: {message}");
            }
            ExitCode::from(failure.code())
        }
    }
}

fn session(config: &ClientConfig) -> Result<(), Failure> {
    let target = Target::parse(&config.connect).map_err(Failure::Usage)?;
    let interactive = !config.raw && config.names.is_empty() && io::stdin().is_terminal();
    let trace = match &config.trace {
        Some(trace) => Some(Trace::open(trace).map_err(|e| Failure::Usage(e.to_string()))?),
        None => None,
    };
    let (link, connected) = match &target {
        Target::Tcp(target) => open_tcp(config, target, trace)?,
        Target::Unix(path) => open_unix(config, path, trace)?,
    };
    let cfg = SessionConfig {
        reply_timeout: config.reply_timeout,
        interactive,
        framing: config.framing,
    };
    if interactive {
        note(&format!(
            "Connected to {connected}. Type a name and press Enter; `exit` or Ctrl-D ends the session.\n"
        ));
    }
    let mut out = BufWriter::with_capacity(READ_BUF, io::stdout().lock());
    let result = if config.raw {
        raw_session(link, &cfg, &mut out)
    } else {
        let input = Names::new(names_input(&config.names));
        match config.framing {
            Framing::Line => line_session(link, &cfg, input, &mut out),
            Framing::Chunk => chunk_session(link, &cfg, input, &mut out),
        }
    };
    // A failure's message follows everything the server said.
    let flushed = out.flush().map_err(Failure::Stdout);
    result.and(flushed)
}

/// Connects to `target` over TCP, with the TLS handshake if asked: the link, and what
/// the interactive banner says it is connected to.
fn open_tcp(
    config: &ClientConfig,
    target: &HostPort,
    trace: Option<Arc<Trace>>,
) -> Result<(Link, String), Failure> {
    let connect_timeout = config.connect_timeout;
    let reply_timeout = config.reply_timeout;
    // Before connecting: a bad file is a usage error, whatever the server.
    let tls = tls_setup(&config.tls, target)?;
    let (stream, addr) = connect(target, connect_timeout)?;
    debug!("connected to {addr}");
    // The only connection: number 1, its time counted from the connect.
    let trace = trace.map(|t| Arc::new(t.connection(1, Instant::now(), tls.is_some())));
    // Names leave in batches (or one at a time, awaited), so Nagle's delay only adds latency.
    let _ = stream.set_nodelay(true);
    let (link, over) = match &tls {
        Some(tls) => {
            // A server that accepts and then says nothing must not hold the client forever.
            let limit = connect_timeout
                .map(|t| (t, "--connect-timeout"))
                .or(reply_timeout.map(|t| (t, "--reply-timeout")));
            let done = tls.handshake(&stream, limit)?;
            let over = format!(" over {}", done.version);
            (Link::tls(stream, done, trace), over)
        }
        None => (Link::plain(stream, trace), String::new()),
    };
    let link = link.map_err(Failure::Socket)?;
    let shown = target.to_string();
    let resolved = addr.to_string();
    let via = if shown == resolved {
        String::new()
    } else {
        format!(" ({resolved})")
    };
    Ok((link, format!("{shown}{via}{over}")))
}

/// Connects to the Unix socket at `path`, which speaks plain text only.
fn open_unix(
    config: &ClientConfig,
    path: &std::path::Path,
    trace: Option<Arc<Trace>>,
) -> Result<(Link, String), Failure> {
    if config.tls != crate::config::TlsClientConfig::default() {
        return Err(Failure::Usage(format!(
            "--tls and its options are for TCP: {} speaks plain text (serve has no TLS on \
             a Unix socket); drop them",
            unix_display(path)
        )));
    }
    let stream = connect_unix(path)?;
    let trace = trace.map(|t| Arc::new(t.connection(1, Instant::now(), false)));
    let link = Link::unix(stream, trace).map_err(Failure::Socket)?;
    Ok((link, unix_display(path)))
}

/// What every session needs to know.
struct SessionConfig {
    reply_timeout: Option<Duration>,
    interactive: bool,
    /// How the server frames its messages (in `--raw` mode, only to find its notices).
    framing: Framing,
}

/// Writes to stderr; a closed stderr must not stop the session.
fn note(text: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}
