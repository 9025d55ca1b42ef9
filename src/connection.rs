//! One connection's I/O: reads bytes, lets [`crate::protocol`] decide, writes replies.
//!
//! [`serve`] works over any `Read + Write` stream (a `TcpStream`, a TLS stream, a test
//! double) and learns everything else (peer, timeouts, shutdown) from its caller.
//! Replies to everything one read brought are sent in one write, and nothing is
//! allocated per line.

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::debug;

use crate::pool::{BigBuffers, BufferPool};
use crate::protocol::{
    self, ConnectionValues, Framing, LogText, Mode, Notice, Piece, ReplyTemplate, Request,
    Settings, TelnetFilter, chunk_message, find_line_end, partial_len,
};

/// Bytes of input kept on the thread's stack. Together with [`SMALL_OUTPUT`] it fits in
/// the stack pages every thread touches anyway (see the README's memory figures).
pub const SMALL_INPUT: usize = 512;
/// Bytes of output kept on the thread's stack.
pub const SMALL_OUTPUT: usize = 512;
/// The most a connection reads once shutdown has begun: more than the kernel can have
/// queued for it at that moment (Linux's largest receive buffer is 6 MiB by default).
pub const SHUTDOWN_READ_BUDGET: usize = 8 * 1024 * 1024;
/// The largest output buffer a busy connection borrows; larger replies are sent in pieces.
pub const OUTPUT_MAX: usize = 1024 * 1024;
/// Bytes of idle large buffers the pool keeps for the next burst: 64 pairs of the default
/// 64 KiB + 64 KiB. With a long `--max-line` the pairs are larger and fewer are kept.
pub const POOL_IDLE_BYTES: usize = 64 * 128 * 1024;

/// How many idle pairs of `pair_bytes` the pool keeps (none if one pair is over budget).
fn idle_pairs(pair_bytes: usize) -> usize {
    POOL_IDLE_BYTES / pair_bytes.max(1)
}

/// What every connection shares: settings, buffers, and the server's shutdown flag.
#[derive(Debug)]
pub struct Context {
    /// The protocol's settings.
    pub settings: Settings,
    /// Large buffers for bursts.
    pub pool: BufferPool,
    /// Set when the server is shutting down; reads then end once buffered input is used up.
    pub shutting_down: AtomicBool,
    /// The idle timeout the caller set on streams, for the notice; `None` if there is none.
    pub idle_timeout: Option<Duration>,
    /// Wait before each reply.
    pub delay: Duration,
    /// The write timeout the caller set on streams; `None` if there is none.
    pub write_timeout: Option<Duration>,
}

impl Context {
    /// A context whose buffer pool fits `settings`.
    pub fn new(settings: Settings, idle_timeout: Option<Duration>, delay: Duration) -> Self {
        let input = (64 * 1024).max(settings.max_message() + 1 + 16 * 1024);
        // Replies larger than this go out in pieces (see `send`), so a long
        // --max-line or a template with many `{}` does not grow every busy connection.
        let output = (64 * 1024).max(2 * settings.max_answer()).min(OUTPUT_MAX);
        Context {
            pool: BufferPool::new(input, output, idle_pairs(input + output)),
            settings,
            shutting_down: AtomicBool::new(false),
            idle_timeout,
            delay,
            write_timeout: None,
        }
    }
}

/// Who is on the other end, for log lines and the templates' `{conn}`, `{peer}` and
/// `{local}`.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The server's number for this connection.
    pub id: u64,
    /// The client's address, as the caller knows it.
    pub addr: SocketAddr,
    /// The address the client reached (the accepted socket's local address) when a
    /// template shows it ([`Settings::shows_local`](crate::protocol::Settings::shows_local)),
    /// else the unspecified address: looking it up costs a system call per connection.
    pub local: SocketAddr,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client said `exit` or `quit`.
    Exit,
    /// The client closed (or half-closed) its side.
    ClientClosed,
    /// The client sent nothing for the idle timeout.
    Idle,
    /// The server is shutting down.
    Shutdown,
    /// Reading failed (reset, ...).
    ReadError(ErrorKind),
    /// Writing failed: the client is gone or does not read (write timeout).
    WriteError(ErrorKind),
    /// The client began a TLS handshake on a plain port.
    TlsOnPlainPort,
    /// The TLS handshake did not complete (the close line says why).
    Handshake,
    /// The client ended its TLS session with this fatal alert (after the handshake:
    /// `handshake_failure` from a client whose renegotiation was refused, ...).
    TlsAlert(rustls::AlertDescription),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Exit => f.write_str("client said exit"),
            CloseReason::ClientClosed => f.write_str("client closed"),
            CloseReason::Idle => f.write_str("idle timeout"),
            CloseReason::Shutdown => f.write_str("server shutdown"),
            CloseReason::ReadError(kind) => write!(f, "read error: {kind}"),
            CloseReason::WriteError(ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                f.write_str("write error: timed out, the client does not read its replies")
            }
            CloseReason::WriteError(kind) => write!(f, "write error: {kind}"),
            CloseReason::TlsOnPlainPort => f.write_str("a TLS handshake on a plain port"),
            CloseReason::Handshake => f.write_str("no TLS session"),
            CloseReason::TlsAlert(alert) => write!(f, "client sent the TLS alert {alert:?}"),
        }
    }
}

/// What happened on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Messages answered.
    pub replies: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Why it ended.
    pub reason: CloseReason,
}

/// What [`serve`] speaks over: bytes in, bytes out, and a way to write the last bytes.
pub trait Transport: Read + Write {
    /// Writes bytes after which only the close follows (the farewell). A TCP socket holds
    /// them back (`MSG_MORE`), so that they leave with the close's FIN in one segment:
    /// one packet, and one wake-up of the client, fewer per `exit`.
    fn write_last(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.write(bytes)
    }
}

impl Transport for &std::net::TcpStream {
    fn write_last(&mut self, bytes: &[u8]) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        {
            socket2::SockRef::from(*self).send_with_flags(bytes, libc::MSG_MORE)
        }
        #[cfg(not(target_os = "linux"))]
        self.write(bytes)
    }
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn write_last(&mut self, bytes: &[u8]) -> io::Result<usize> {
        (**self).write_last(bytes)
    }
}

/// Runs the protocol on `stream` until it ends. Never panics on any input; every
/// error ends up in the summary's reason.
pub fn serve<S: Transport>(stream: S, ctx: &Context, peer: Peer) -> Summary {
    serve_from(stream, ctx, peer, None)
}

/// The welcome [`serve`] begins with, rendered for `peer` (empty in echo mode), for a
/// caller that sends it ahead of the protocol: TLS sends it within the handshake.
pub fn welcome(ctx: &Context, peer: Peer) -> Vec<u8> {
    if matches!(ctx.settings.mode, Mode::Echo) {
        return Vec::new();
    }
    let values = ConnectionValues::new(peer.addr, peer.local, peer.id);
    let template = &ctx.settings.welcome;
    let eol = ctx.settings.eol();
    let mut out = vec![0; template.len_for(0, &values) + eol.len()];
    let n = template.render(&[], &values, &mut out);
    out.truncate(n);
    out.extend_from_slice(eol);
    out
}

/// [`serve`] after the caller has sent the [`welcome`], `welcome_len` bytes: the
/// protocol goes on from there.
pub fn serve_welcomed<S: Transport>(
    stream: S,
    ctx: &Context,
    peer: Peer,
    welcome_len: usize,
) -> Summary {
    serve_from(stream, ctx, peer, Some(welcome_len))
}

fn serve_from<S: Transport>(
    stream: S,
    ctx: &Context,
    peer: Peer,
    welcomed: Option<usize>,
) -> Summary {
    let mut small_input = [0u8; SMALL_INPUT];
    let mut small_output = [0u8; SMALL_OUTPUT];
    let mut conn = Connection {
        stream,
        ctx,
        peer,
        values: ConnectionValues::new(peer.addr, peer.local, peer.id),
        buf: Buffers {
            small_input: &mut small_input,
            small_output: &mut small_output,
            big: None,
            start: 0,
            end: 0,
            out_len: 0,
        },
        telnet: TelnetFilter::default(),
        answers: Vec::new(),
        drained: true,
        read_all: false,
        read_after_stop: 0,
        welcomed: welcomed.is_some(),
        replies: 0,
        bytes_in: 0,
        bytes_out: welcomed.map_or(0, |n| n as u64),
    };
    let reason = match (ctx.settings.mode, ctx.settings.framing) {
        (Mode::Echo, _) => conn.echo(),
        (Mode::Greet, Framing::Line) => conn.lines(),
        (Mode::Greet, Framing::Chunk) => conn.chunks(),
    };
    let reason = reason.unwrap_or_else(|failure| match failure {
        Failure::Write(e) => CloseReason::WriteError(e.kind()),
        Failure::Read(e) => read_failure(&e),
    });
    if let Some(big) = conn.buf.big.take() {
        ctx.pool.give(big);
    }
    Summary {
        replies: conn.replies,
        bytes_in: conn.bytes_in,
        bytes_out: conn.bytes_out,
        reason,
    }
}

/// Why a failed read ended the connection: a fatal alert from a TLS client (which the
/// TLS stream reports as invalid data carrying the rustls error) by its name, anything
/// else by its kind.
fn read_failure(e: &io::Error) -> CloseReason {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(alert)) => CloseReason::TlsAlert(*alert),
        _ => CloseReason::ReadError(e.kind()),
    }
}

/// An I/O error, by the direction that failed.
enum Failure {
    Read(io::Error),
    Write(io::Error),
}

type Step<T = CloseReason> = Result<T, Failure>;

/// Where a read left the connection.
enum Got {
    Bytes(usize),
    /// The client closed its sending side.
    Eof,
    /// The server is shutting down and has read what the client had sent.
    Stopped,
    Idle,
    /// The client's first bytes begin a TLS handshake (with telnet processing only: a
    /// client that expected TLS here gets nothing it could misread).
    TlsHello,
}

/// Input and output buffers: small ones on the stack, a large pair from the pool
/// while a burst lasts.
struct Buffers<'s> {
    small_input: &'s mut [u8],
    small_output: &'s mut [u8],
    big: Option<BigBuffers>,
    /// Unprocessed input is `input()[start..end]`.
    start: usize,
    end: usize,
    /// Output waiting to be written is `output()[..out_len]`.
    out_len: usize,
}

impl Buffers<'_> {
    fn input(&mut self) -> &mut [u8] {
        match &mut self.big {
            Some(big) => &mut big.input,
            None => self.small_input,
        }
    }

    fn output(&mut self) -> &mut [u8] {
        match &mut self.big {
            Some(big) => &mut big.output,
            None => self.small_output,
        }
    }

    /// The input buffer, read-only, beside the output buffer, writable.
    fn split(&mut self) -> (&[u8], &mut [u8]) {
        match &mut self.big {
            Some(big) => (&big.input, &mut big.output),
            None => (self.small_input, self.small_output),
        }
    }

    fn is_big(&self) -> bool {
        self.big.is_some()
    }

    /// Moves to a large pair from the pool; pending bytes keep their offsets, so
    /// indices into the input stay valid.
    fn grow(&mut self, pool: &BufferPool) {
        if self.big.is_some() {
            return;
        }
        let mut big = pool.take();
        big.input[..self.end].copy_from_slice(&self.small_input[..self.end]);
        big.output[..self.out_len].copy_from_slice(&self.small_output[..self.out_len]);
        self.big = Some(big);
    }

    /// Goes back to the stack buffers, if what is pending fits there.
    fn shrink(&mut self, pool: &BufferPool) {
        if self.big.is_none() {
            return;
        }
        self.compact();
        if self.end > self.small_input.len() / 2 || self.out_len > self.small_output.len() {
            return;
        }
        if let Some(big) = self.big.take() {
            self.small_input[..self.end].copy_from_slice(&big.input[..self.end]);
            self.small_output[..self.out_len].copy_from_slice(&big.output[..self.out_len]);
            pool.give(big);
        }
    }

    /// Moves pending input to the front of the buffer.
    fn compact(&mut self) {
        let (start, end) = (self.start, self.end);
        if start > 0 {
            self.input().copy_within(start..end, 0);
            (self.start, self.end) = (0, end - start);
        }
    }
}

struct Connection<'c, 's, S> {
    stream: S,
    ctx: &'c Context,
    peer: Peer,
    /// The templates' per-connection values, formatted once.
    values: ConnectionValues,
    buf: Buffers<'s>,
    telnet: TelnetFilter,
    /// Telnet refusals waiting to be queued for output; empty (unallocated) for non-telnet clients.
    answers: Vec<u8>,
    /// The last read found the socket drained: the burst, if any, is over.
    drained: bool,
    /// Shutting down, and a read has emptied what the client had sent: no more reads,
    /// or a client that keeps sending would keep the connection open.
    read_all: bool,
    /// Bytes read since shutdown began.
    read_after_stop: usize,
    /// The caller sent the welcome (see [`serve_welcomed`]).
    welcomed: bool,
    replies: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl<S: Transport> Connection<'_, '_, S> {
    /// Line framing: the welcome, then one reply per line.
    fn lines(&mut self) -> Step {
        let ctx = self.ctx;
        // A longer partial line is skipped as it streams; up to this, it may yet be `exit`.
        let max_held = ctx.settings.max_held();
        self.welcome()?;
        // Set after an over-long line's notice: its bytes are dropped up to the next line end.
        let mut skipping = false;
        loop {
            let fresh = match self.read(true)? {
                Got::TlsHello => return Ok(CloseReason::TlsOnPlainPort),
                Got::Bytes(n) => n,
                // A line the client has not finished is not a received line.
                Got::Stopped => return self.closed(),
                Got::Eof => {
                    let (start, end) = (self.buf.start, self.buf.end);
                    if !skipping && start < end {
                        // A last line without a newline still counts (half-close, `printf Bob | nc -N`).
                        let content = start + partial_len(&self.buf.input()[start..end]);
                        self.buf.start = end;
                        if self.line(start, content)? == Request::Exit {
                            return Ok(CloseReason::Exit);
                        }
                    }
                    return self.closed();
                }
                Got::Idle => return self.idle(),
            };
            // Only the fresh bytes can hold a line end; a long partial line is searched once.
            let mut scan = self.buf.end - fresh;
            loop {
                let (start, end) = (self.buf.start, self.buf.end);
                let pending = &self.buf.split().0[..end];
                let Some((content, next)) = find_line_end(pending, start, scan) else {
                    break;
                };
                (self.buf.start, scan) = (next, next);
                if skipping {
                    skipping = false;
                } else if self.line(start, content)? == Request::Exit {
                    return Ok(CloseReason::Exit);
                }
            }
            let (start, end) = (self.buf.start, self.buf.end);
            let partial = partial_len(&self.buf.input()[start..end]);
            if skipping || partial > max_held {
                if !skipping {
                    self.too_long()?;
                    skipping = true;
                }
                // Keep only a trailing CR, which may begin the line ending.
                self.buf.start = start + partial;
            }
            self.flush()?;
            self.settle();
        }
    }

    /// Chunk framing: every read is one message, as in the Python tutorial. A read is
    /// at most `max_message` bytes, or [`protocol::EXIT_LINE_MAX`] when that is larger,
    /// so that an exit word always arrives whole; a longer read that is not one is
    /// answered in pieces of `max_message`, as separate reads would have been.
    fn chunks(&mut self) -> Step {
        let ctx = self.ctx;
        let piece = ctx.settings.max_message();
        self.welcome()?;
        loop {
            (self.buf.start, self.buf.end) = (0, 0);
            match self.read(true)? {
                Got::TlsHello => return Ok(CloseReason::TlsOnPlainPort),
                Got::Bytes(_) => {}
                Got::Eof | Got::Stopped => return self.closed(),
                Got::Idle => return self.idle(),
            }
            let end = self.buf.end;
            let whole = chunk_message(&self.buf.split().0[..end]).len();
            if protocol::classify(&self.buf.split().0[..whole]) == Request::Exit {
                self.message(0, whole)?;
                return Ok(CloseReason::Exit);
            }
            let mut start = 0;
            while start < end {
                let stop = (start + piece).min(end);
                let len = chunk_message(&self.buf.split().0[start..stop]).len();
                if self.message(start, start + len)? == Request::Exit {
                    return Ok(CloseReason::Exit);
                }
                start = stop;
            }
            self.flush()?;
            self.settle();
        }
    }

    /// Echo mode (RFC 862): every byte back, nothing else.
    fn echo(&mut self) -> Step {
        loop {
            (self.buf.start, self.buf.end) = (0, 0);
            let n = match self.read(false)? {
                Got::Bytes(n) => n,
                // No notices in echo mode: RFC 862 sends back what it receives, nothing else.
                Got::Stopped => return Ok(CloseReason::Shutdown),
                Got::Eof if self.ctx.shutting_down.load(Ordering::Acquire) => {
                    return Ok(CloseReason::Shutdown);
                }
                Got::Eof => return Ok(CloseReason::ClientClosed),
                Got::Idle => return Ok(CloseReason::Idle),
                // Never from a read without telnet processing: echo echoes whatever comes.
                Got::TlsHello => return Ok(CloseReason::TlsOnPlainPort),
            };
            let (input, _) = self.buf.split();
            write_within(&mut self.stream, &input[..n], self.ctx.write_timeout, false)
                .map_err(Failure::Write)?;
            self.bytes_out += n as u64;
            self.settle();
        }
    }

    /// Reads once into the free end of the input buffer. Moves to the large buffers when
    /// a read fills the small ones (a burst), and marks the burst over when a read finds
    /// the socket drained. With `telnet`, removes telnet commands from what arrived and
    /// queues the refusals. Returns how many bytes were added.
    fn read(&mut self, telnet: bool) -> Step<Got> {
        let ctx = self.ctx;
        if self.read_all {
            // One more look (the read timeout is a moment now): if the client has closed
            // its side too, its last line counts, as on any half-close.
            let mut probe = [0u8; 1];
            return Ok(match self.stream.read(&mut probe) {
                Ok(0) => Got::Eof,
                _ => Got::Stopped,
            });
        }
        self.buf.compact();
        if self.buf.end == self.buf.input().len() {
            self.buf.grow(&ctx.pool);
        }
        let limit = match (ctx.settings.mode, ctx.settings.framing) {
            (Mode::Greet, Framing::Chunk) => ctx.settings.max_held(),
            _ => usize::MAX,
        };
        let end = self.buf.end;
        let (n, offered) = loop {
            let input = self.buf.input();
            let room_end = end.saturating_add(limit).min(input.len());
            let room = &mut input[end..room_end];
            match self.stream.read(room) {
                Ok(0) => return Ok(Got::Eof),
                Ok(n) => break (n, room_end - end),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // The read timeout: EAGAIN, or WSAETIMEDOUT on Windows. Elsewhere ETIMEDOUT
                // means the connection died (keepalive, TCP_USER_TIMEOUT): a read error,
                // not an idle client, and there is no one left to send the notice to.
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock
                        || (cfg!(windows) && e.kind() == ErrorKind::TimedOut) =>
                {
                    // At shutdown the server shortens the read timeout to a moment: a
                    // read that finds nothing has read everything the client sent.
                    if ctx.shutting_down.load(Ordering::Acquire) {
                        return Ok(Got::Stopped);
                    }
                    return Ok(Got::Idle);
                }
                Err(e) => return Err(Failure::Read(e)),
            }
        };
        if telnet && self.bytes_in == 0 && protocol::looks_like_tls(&self.buf.input()[end..end + n])
        {
            return Ok(Got::TlsHello);
        }
        self.bytes_in += n as u64;
        let mut answers = std::mem::take(&mut self.answers);
        let kept = if telnet {
            self.telnet
                .filter(&mut self.buf.input()[end..end + n], &mut answers)
        } else {
            n
        };
        // Set before queueing output, which may move to the large buffers and copies the
        // input up to `end`.
        self.buf.end = end + kept;
        if !answers.is_empty() {
            self.write_out(&answers)?;
            answers.clear();
            // A burst of negotiations must not leave a large buffer behind: an idle
            // connection owns no heap buffer.
            if answers.capacity() > 64 {
                answers = Vec::new();
            }
        }
        self.answers = answers;
        self.drained = n < offered;
        if ctx.shutting_down.load(Ordering::Acquire) {
            // Read until nothing is left queued; a client that sends faster than it reads
            // its replies would never let that happen, hence the budget. What the kernel
            // held at the signal is at most its receive buffer, less than the budget.
            self.read_after_stop += n;
            self.read_all = self.drained || self.read_after_stop >= SHUTDOWN_READ_BUDGET;
        }
        if !self.drained && limit == usize::MAX {
            self.buf.grow(&ctx.pool);
        }
        Ok(Got::Bytes(kept))
    }

    /// After a burst, gives the large buffers back.
    fn settle(&mut self) {
        if self.drained {
            self.buf.shrink(&self.ctx.pool);
        }
    }

    /// Answers one complete line, `input[start..end]`. An exit word is one whatever
    /// `--max-line` is, up to `max_held` bytes with its blanks (longer lines are skipped
    /// as they stream, whatever they hold): a session can always be left.
    fn line(&mut self, start: usize, end: usize) -> Step<Request> {
        let settings = &self.ctx.settings;
        let len = end - start;
        if len > settings.max_line
            && (len > settings.max_held()
                || protocol::classify(&self.buf.split().0[start..end]) != Request::Exit)
        {
            self.too_long()?;
            return Ok(Request::Name);
        }
        self.message(start, end)
    }

    /// Answers one message, `input[start..end]`, which is no longer than `max_message`
    /// unless it is an exit word.
    fn message(&mut self, start: usize, end: usize) -> Step<Request> {
        let ctx = self.ctx;
        let settings = &ctx.settings;
        let (input, _) = self.buf.split();
        let request = protocol::classify(&input[start..end]);
        match request {
            Request::Blank => {}
            Request::Exit => {
                if !settings.farewell.is_empty() {
                    self.send(&settings.farewell, 0, 0)?;
                }
                self.flush_last()?;
            }
            Request::Name => {
                if log::log_enabled!(log::Level::Trace) {
                    let (input, _) = self.buf.split();
                    log::trace!(
                        "conn {}: name {}",
                        self.peer.id,
                        LogText(&input[start..end])
                    );
                }
                if !ctx.delay.is_zero() {
                    self.flush()?;
                    std::thread::sleep(ctx.delay);
                }
                self.send(&settings.reply, start, end)?;
                self.replies += 1;
                if !ctx.delay.is_zero() {
                    self.flush()?;
                }
            }
        }
        Ok(request)
    }

    fn too_long(&mut self) -> Step<()> {
        debug!(
            "conn {} ({}): line longer than {} bytes, skipped",
            self.peer.id, self.peer.addr, self.ctx.settings.max_line
        );
        self.notice(Notice::LineTooLong)
    }

    /// The connection ended from the client's side, or the server's shutdown ended reading.
    fn closed(&mut self) -> Step {
        if self.ctx.shutting_down.load(Ordering::Acquire) {
            self.notice(Notice::ShuttingDown)?;
            self.flush()?;
            return Ok(CloseReason::Shutdown);
        }
        self.flush()?;
        Ok(CloseReason::ClientClosed)
    }

    fn idle(&mut self) -> Step {
        let secs = self.ctx.idle_timeout.map_or(0, |t| t.as_secs());
        self.notice(Notice::Idle { secs })?;
        self.flush()?;
        Ok(CloseReason::Idle)
    }

    /// Sends the welcome, unless the caller has.
    fn welcome(&mut self) -> Step<()> {
        if self.welcomed {
            return Ok(());
        }
        self.send(&self.ctx.settings.welcome, 0, 0)?;
        self.flush()
    }

    fn notice(&mut self, notice: Notice) -> Step<()> {
        let text = self.ctx.settings.notice(notice);
        self.write_out(&text)
    }

    /// Queues `template` rendered for the line `input[start..end]` (an empty range for
    /// the welcome and the farewell, which hold no `{}`), then the line ending.
    fn send(&mut self, template: &ReplyTemplate, start: usize, end: usize) -> Step<()> {
        let eol = self.ctx.settings.eol();
        let (input, _) = self.buf.split();
        let line_len = protocol::telnet_len(&input[start..end]);
        let len = template.len_for(line_len, &self.values) + eol.len();
        if len <= self.ctx.pool.output_size() {
            self.reserve(len)?;
            let at = self.buf.out_len;
            let (input, output) = self.buf.split();
            let n = template.render(&input[start..end], &self.values, &mut output[at..]);
            output[at + n..at + n + eol.len()].copy_from_slice(eol);
            self.buf.out_len = at + n + eol.len();
            return Ok(());
        }
        // A template with several `{}` times a long line: sent in pieces, so that no
        // buffer has to be sized for the largest possible reply.
        let values = self.values;
        for piece in template.pieces() {
            match piece {
                Piece::Line => self.write_input_escaped(start, end)?,
                other => self.write_out(values.text(other))?,
            }
        }
        self.write_out(eol)
    }

    fn room(&mut self) -> usize {
        self.buf.output().len() - self.buf.out_len
    }

    /// Makes room for `n` bytes of output (at most the large buffer's size): moves to
    /// the large buffers, or writes what is queued.
    fn reserve(&mut self, n: usize) -> Step<()> {
        if self.room() >= n {
            return Ok(());
        }
        if !self.buf.is_big() {
            self.buf.grow(&self.ctx.pool);
            if self.room() >= n {
                return Ok(());
            }
        }
        self.flush()
    }

    /// Queues any number of bytes for output.
    fn write_out(&mut self, mut bytes: &[u8]) -> Step<()> {
        let most = self.ctx.pool.output_size();
        while !bytes.is_empty() {
            self.reserve(bytes.len().min(most))?;
            let take = self.room().min(bytes.len());
            let at = self.buf.out_len;
            self.buf.output()[at..at + take].copy_from_slice(&bytes[..take]);
            self.buf.out_len += take;
            bytes = &bytes[take..];
        }
        Ok(())
    }

    /// Queues `input[start..end]` for output, through the output buffer a piece at a time.
    fn write_input(&mut self, mut start: usize, end: usize) -> Step<()> {
        let most = self.ctx.pool.output_size();
        while start < end {
            // Growing or flushing leaves pending input where it is, so the indices hold.
            self.reserve((end - start).min(most))?;
            let take = self.room().min(end - start);
            let at = self.buf.out_len;
            let (input, output) = self.buf.split();
            output[at..at + take].copy_from_slice(&input[start..start + take]);
            self.buf.out_len += take;
            start += take;
        }
        Ok(())
    }

    /// Queues `input[start..end]` for output with every 0xFF doubled (see
    /// [`protocol::telnet_escape`]).
    fn write_input_escaped(&mut self, mut start: usize, end: usize) -> Step<()> {
        while start < end {
            let (input, _) = self.buf.split();
            let Some(i) = memchr::memchr(protocol::IAC, &input[start..end]) else {
                return self.write_input(start, end);
            };
            self.write_input(start, start + i)?;
            self.write_out(&[protocol::IAC, protocol::IAC])?;
            start += i + 1;
        }
        Ok(())
    }

    /// Writes everything queued.
    fn flush(&mut self) -> Step<()> {
        self.flush_as(false)
    }

    /// Sends what is queued, the last bytes of the connection (see
    /// [`Transport::write_last`]).
    fn flush_last(&mut self) -> Step<()> {
        self.flush_as(true)
    }

    fn flush_as(&mut self, last: bool) -> Step<()> {
        let n = self.buf.out_len;
        if n == 0 {
            return Ok(());
        }
        let write_timeout = self.ctx.write_timeout;
        let Connection { stream, buf, .. } = self;
        let (_, output) = buf.split();
        write_within(stream, &output[..n], write_timeout, last).map_err(Failure::Write)?;
        stream.flush().map_err(Failure::Write)?;
        self.buf.out_len = 0;
        self.bytes_out += n as u64;
        Ok(())
    }
}

/// Writes all of `bytes`, failing with `TimedOut` once the client has taken nothing for
/// `timeout` (the write timeout set on the stream); `last`: they are the connection's
/// last (see [`Transport::write_last`]).
fn write_within<W: Transport>(
    out: &mut W,
    bytes: &[u8],
    timeout: Option<Duration>,
    last: bool,
) -> io::Result<()> {
    let mut sent = 0;
    // Since when the client has taken nothing: one send's own timeout is not enough.
    // Linux ends a send that waited out the timeout with the part it placed, not an
    // error, and a signal (shutdown's) ends it early; either way the next send would
    // start the whole timeout again.
    let mut waiting_since = timeout.map(|_| Instant::now());
    let timed_out =
        |since: Option<Instant>| matches!((timeout, since), (Some(t), Some(s)) if s.elapsed() >= t);
    while sent < bytes.len() {
        let written = if last {
            out.write_last(&bytes[sent..])
        } else {
            out.write(&bytes[sent..])
        };
        match written {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(k) => {
                sent += k;
                if sent < bytes.len() && timed_out(waiting_since) {
                    return Err(ErrorKind::TimedOut.into());
                }
                waiting_since = timeout.map(|_| Instant::now());
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {
                if timed_out(waiting_since) {
                    return Err(ErrorKind::TimedOut.into());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Machine, TemplateField};

    /// A client that sends `input`, then closes; what the server writes is kept.
    struct Client {
        input: std::io::Cursor<Vec<u8>>,
        out: Vec<u8>,
    }

    impl Read for Client {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Client {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.out.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Transport for Client {}

    fn client(input: &[u8]) -> Client {
        Client {
            input: std::io::Cursor::new(input.to_vec()),
            out: Vec::new(),
        }
    }

    /// The welcome a caller sends ahead ([`welcome`]) is what `serve` would have sent,
    /// and `serve_welcomed` goes on after it, counting it.
    #[test]
    fn the_welcome_sent_ahead_is_the_one_serve_sends_and_serve_welcomed_goes_on_from_it() {
        let machine = Machine {
            host: "box".into(),
            pid: 7,
        };
        let settings = Settings {
            welcome: ReplyTemplate::parse(
                "Hi {peer} #{conn} on {host}",
                TemplateField::Welcome,
                &machine,
            )
            .unwrap(),
            ..Settings::default()
        };
        let ctx = Context::new(settings, None, Duration::ZERO);
        let peer = Peer {
            id: 42,
            addr: "127.0.0.1:5000".parse().unwrap(),
            local: "127.0.0.1:9999".parse().unwrap(),
        };
        let welcome = welcome(&ctx, peer);
        assert_eq!(welcome, b"Hi 127.0.0.1:5000 #42 on box\r\n");
        let mut whole = client(b"Ann\nexit\n");
        let summary = serve(&mut whole, &ctx, peer);
        let mut after = client(b"Ann\nexit\n");
        let rest = serve_welcomed(&mut after, &ctx, peer, welcome.len());
        assert_eq!([&welcome[..], &after.out[..]].concat(), whole.out);
        assert_eq!(rest, summary);
        let echo = Context::new(
            Settings {
                mode: Mode::Echo,
                ..Settings::default()
            },
            None,
            Duration::ZERO,
        );
        assert!(super::welcome(&echo, peer).is_empty());
    }

    #[test]
    fn a_fatal_tls_alert_from_the_client_is_named_as_the_close_reason() {
        let alert = rustls::AlertDescription::HandshakeFailure;
        let e = io::Error::new(ErrorKind::InvalidData, rustls::Error::AlertReceived(alert));
        assert_eq!(read_failure(&e), CloseReason::TlsAlert(alert));
        assert_eq!(
            read_failure(&e).to_string(),
            "client sent the TLS alert HandshakeFailure"
        );
        let other = io::Error::new(ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert_eq!(
            read_failure(&other),
            CloseReason::ReadError(ErrorKind::InvalidData)
        );
        let reset = io::Error::from(ErrorKind::ConnectionReset);
        assert_eq!(
            read_failure(&reset),
            CloseReason::ReadError(ErrorKind::ConnectionReset)
        );
    }

    #[test]
    fn the_pool_keeps_64_default_pairs_idle_and_no_oversized_ones() {
        assert_eq!(idle_pairs(128 * 1024), 64);
        assert_eq!(idle_pairs(48 << 20), 0);
        let settings = Settings {
            max_line: 16 << 20,
            ..Settings::default()
        };
        let ctx = Context::new(settings, None, Duration::ZERO);
        assert_eq!(ctx.pool.output_size(), OUTPUT_MAX);
        let ctx = Context::new(Settings::default(), None, Duration::ZERO);
        assert_eq!(ctx.pool.output_size(), 64 * 1024);
    }
}
