//! Serving one connection: the entry points, and the loops of line framing, chunk
//! framing and echo mode, each reading into the buffers and answering what arrived.

use std::io::{self, ErrorKind};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::buffers::{Buffers, SMALL_INPUT, SMALL_OUTPUT};
use super::context::{Context, Peer};
use super::outcome::{CloseReason, Summary, read_failure};
use super::transport::{Transport, write_within};
use crate::protocol::{
    self, ConnectionValues, Framing, Mode, Request, TelnetFilter, Who, chunk_message,
    find_line_end, partial_len,
};

/// The most a connection reads once shutdown has begun: more than the kernel can have
/// queued for it at that moment (Linux's largest receive buffer is 6 MiB by default).
pub const SHUTDOWN_READ_BUDGET: usize = 8 * 1024 * 1024;

/// The read timeout every connection gets at shutdown: a read that finds nothing for
/// this long has read everything the client had sent.
pub const SHUTDOWN_READ_TIMEOUT: Duration = Duration::from_millis(1);

/// Runs the protocol on `stream` until it ends. Never panics on any input; every
/// error ends up in the summary's reason.
pub fn serve<S: Transport>(stream: S, ctx: &Context, peer: Peer) -> Summary {
    serve_from(stream, ctx, peer.id, values_for(ctx, peer, None), None)
}

/// [`serve`] for a connection whose facts the templates show
/// ([`Settings::shows_who`](crate::protocol::Settings::shows_who)), after the caller
/// has sent `welcomed` bytes of welcome if it has.
pub fn serve_who<S: Transport>(
    stream: S,
    ctx: &Context,
    peer: Peer,
    who: Who,
    welcomed: Option<usize>,
) -> Summary {
    serve_from(
        stream,
        ctx,
        peer.id,
        values_for(ctx, peer, Some(who)),
        welcomed,
    )
}

/// [`serve`] for connection number `id`, whose peer and local end are not IP addresses
/// (a Unix socket's): `values` are what its templates show of it, made by the caller,
/// `None` when they show nothing of it.
pub fn serve_with_values<S: Transport>(
    stream: S,
    ctx: &Context,
    id: u64,
    values: Option<Box<ConnectionValues>>,
) -> Summary {
    serve_from(stream, ctx, id, values, None)
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
    serve_from(
        stream,
        ctx,
        peer.id,
        values_for(ctx, peer, None),
        Some(welcome_len),
    )
}

fn serve_from<S: Transport>(
    stream: S,
    ctx: &Context,
    id: u64,
    values: Option<Box<ConnectionValues>>,
    welcomed: Option<usize>,
) -> Summary {
    let mut small_input = [0u8; SMALL_INPUT];
    let mut small_output = [0u8; SMALL_OUTPUT];
    let mut conn = Connection {
        stream,
        ctx,
        id,
        values,
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
        rare: None,
    };
    if let Some(faults) = &ctx.faults {
        conn.strike(faults);
    }
    if let Some(max) = ctx.max_lifetime {
        conn.begin_lifetime(max);
    }
    let reason = match (ctx.settings.mode, ctx.settings.framing) {
        (Mode::Echo, _) => conn.echo(),
        (Mode::Greet, Framing::Line) => conn.lines(),
        (Mode::Greet, Framing::Chunk) => conn.chunks(),
    };
    let reason = reason.unwrap_or_else(|failure| match failure {
        IoFailure::Write(e) => CloseReason::WriteError(e.kind()),
        IoFailure::Read(e) => read_failure(&e),
        IoFailure::Ended(reason) => reason,
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

/// The values a connection's templates show, formatted once; `None` (nothing to format,
/// nothing allocated) when they show none. Out of line: formatting runs deep into
/// `core::fmt`, below the frame that holds the buffers, and only for these templates.
#[inline(never)]
fn values_for(ctx: &Context, peer: Peer, who: Option<Who>) -> Option<Box<ConnectionValues>> {
    if !ctx.settings.shows_values() && who.is_none() {
        return None;
    }
    let values = ConnectionValues::new(peer.addr, peer.local, peer.id).with_who(who);
    Some(Box::new(values))
}

/// An I/O error, by the direction that failed.
pub(super) enum IoFailure {
    Read(io::Error),
    Write(io::Error),
    /// A fault (`--fault`) or the connection's end of life (`--max-lifetime`) ended the
    /// connection, for this reason.
    Ended(CloseReason),
}

pub(super) type Step<T = CloseReason> = Result<T, IoFailure>;

/// Where a read left the connection.
pub(super) enum Got {
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

pub(super) struct Connection<'c, 's, S> {
    pub(super) stream: S,
    pub(super) ctx: &'c Context,
    /// The connection's number, for the log.
    pub(super) id: u64,
    /// The templates' per-connection values, formatted once; `None` when no template
    /// shows one (see [`ConnectionValues::of`]).
    pub(super) values: Option<Box<ConnectionValues>>,
    pub(super) buf: Buffers<'s>,
    pub(super) telnet: TelnetFilter,
    /// Telnet refusals waiting to be queued for output; empty (unallocated) for non-telnet clients.
    pub(super) answers: Vec<u8>,
    /// The last read found the socket drained: the burst, if any, is over.
    pub(super) drained: bool,
    /// Shutting down, and a read has emptied what the client had sent: no more reads,
    /// or a client that keeps sending would keep the connection open.
    pub(super) read_all: bool,
    /// Bytes read since shutdown began.
    pub(super) read_after_stop: usize,
    /// The caller sent the welcome (see [`serve_welcomed`]).
    pub(super) welcomed: bool,
    pub(super) replies: u64,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    /// What only some connections carry; `None` almost always, and boxed, so that a
    /// connection's stack frame does not grow for it.
    pub(super) rare: Option<Box<Rare>>,
}

/// What a connection carries with `--fault` or `--max-lifetime`.
#[derive(Debug, Default)]
pub(super) struct Rare {
    /// The faults that struck it.
    pub(super) fault: Option<crate::fault::Struck>,
    /// Its end of life.
    pub(super) lifetime: Option<super::lifetime::Lifetime>,
}

impl<S: Transport> Connection<'_, '_, S> {
    /// What the templates show of this connection.
    pub(super) fn values(&self) -> &ConnectionValues {
        self.values.as_deref().unwrap_or(&ConnectionValues::NONE)
    }

    /// The faults that struck this connection (`--fault`), if any.
    pub(super) fn fault(&self) -> Option<&crate::fault::Struck> {
        self.rare.as_ref()?.fault.as_ref()
    }

    pub(super) fn fault_mut(&mut self) -> Option<&mut crate::fault::Struck> {
        self.rare.as_mut()?.fault.as_mut()
    }

    /// Line framing: the welcome, then one reply per line.
    fn lines(&mut self) -> Step {
        let ctx = self.ctx;
        // A longer partial line is skipped as it streams; up to this, it may yet be `exit`.
        let max_held = ctx.settings.max_held();
        self.welcome()?;
        // Set after an over-long line's notice: its bytes are dropped up to the next line end.
        let mut skipping = false;
        loop {
            if self.rare.is_some() {
                self.before_read()?;
            }
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
            if self.rare.is_some() {
                self.before_read()?;
            }
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
            if self.rare.is_some() {
                self.before_read()?;
            }
            (self.buf.start, self.buf.end) = (0, 0);
            let n = match self.read(false)? {
                Got::Bytes(n) => n,
                // No notices in echo mode: RFC 862 sends back what it receives, nothing else.
                Got::Stopped => return Ok(CloseReason::Shutdown),
                Got::Eof if self.ctx.shutting_down.load(Ordering::Acquire) => {
                    return Ok(CloseReason::Shutdown);
                }
                Got::Eof => return Ok(CloseReason::ClientClosed),
                Got::Idle => return self.idle_echo(),
                // Never from a read without telnet processing: echo echoes whatever comes.
                Got::TlsHello => return Ok(CloseReason::TlsOnPlainPort),
            };
            let (input, _) = self.buf.split();
            write_within(&mut self.stream, &input[..n], self.ctx.write_timeout, false)
                .map_err(IoFailure::Write)?;
            self.bytes_out += n as u64;
            self.settle();
        }
    }

    /// Reads once into the free end of the input buffer. Moves to the large buffers when
    /// a read fills the small ones (a burst), and marks the burst over when a read finds
    /// the socket drained. With `telnet`, removes telnet commands from what arrived and
    /// queues the refusals. Returns how many bytes were added.
    pub(super) fn read(&mut self, telnet: bool) -> Step<Got> {
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
                Err(e) => return Err(IoFailure::Read(e)),
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
    pub(super) fn settle(&mut self) {
        if self.drained {
            self.buf.shrink(&self.ctx.pool);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use super::*;
    use crate::protocol::{Machine, ReplyTemplate, Settings, TemplateField};

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

    impl Transport for Client {
        // No socket: its reads never wait.
        fn set_read_timeout(&self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }
    }

    fn client(input: &[u8]) -> Client {
        Client {
            input: std::io::Cursor::new(input.to_vec()),
            out: Vec::new(),
        }
    }

    /// Past its lifetime, a connection answers the complete lines it had received, then
    /// says why it closes (in echo mode, nothing: echo sends only what it receives).
    #[test]
    fn past_its_lifetime_a_connection_answers_what_came_then_is_told_to_reconnect() {
        let peer = Peer {
            id: 1,
            addr: "127.0.0.1:5000".parse().unwrap(),
            local: "127.0.0.1:9999".parse().unwrap(),
        };
        let mut ctx = Context::new(Settings::default(), None, Duration::ZERO);
        ctx.max_lifetime = Some(Duration::ZERO);
        let mut c = client(b"Ann\nBob\npart");
        let summary = serve(&mut c, &ctx, peer);
        assert_eq!(
            String::from_utf8_lossy(&c.out),
            "Welcome!\r\nHello, Ann!\r\nHello, Bob!\r\n\
             server closing this connection, reconnect\r\n"
        );
        assert_eq!(
            (summary.replies, summary.reason),
            (2, CloseReason::Lifetime)
        );
        let mut echo = Context::new(
            Settings {
                mode: Mode::Echo,
                ..Settings::default()
            },
            None,
            Duration::ZERO,
        );
        echo.max_lifetime = Some(Duration::ZERO);
        let mut c = client(b"abc");
        let summary = serve(&mut c, &echo, peer);
        assert_eq!(
            (&c.out[..], summary.reason),
            (&b"abc"[..], CloseReason::Lifetime)
        );
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
}
