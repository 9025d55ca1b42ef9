//! One connection's life, top to bottom, in the order it happens:
//!
//! 1. [`start`], on the accept loop: admission (address rules, limits), then a thread of
//!    its own;
//! 2. [`run`], on that thread: its socket's set-up, the PROXY header (with
//!    `--proxy-protocol`), then [`connection::serve`] for a plain connection, or
//!    [`handshake_then_serve`] for a TLS one, which serves it on this thread or hands it
//!    to another;
//! 3. [`close`]: the close line, then a graceful close, waiting for the client's close.
//!
//! Which thread runs each step, and who waits for the client's close, is the runtime's
//! business ([`super::runtime`]); the checks are admission's ([`super::admission`]).

use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::registry::{self, Registered};
use super::runtime::Lingering;
use super::shutdown::{SHUTDOWN_READ_TIMEOUT, restore_read_timeout};
use super::{ServerState, admission, log_target};
use crate::connection::{self, CloseReason, Peer, Summary, Traced};
use crate::fault::Kind;
use crate::json_log::{self, Optional};
use crate::protocol::{Facts, Who};
use crate::tls;
use crate::trace::{ConnTrace, Direction};

/// A connection just accepted, on the accept loop: admitted, then given a thread of its
/// own that runs the rest of its life ([`run`]); or refused, from here.
pub(super) fn start(state: &Arc<ServerState>, stream: TcpStream, peer: SocketAddr, tls: bool) {
    let Some(admitted) = admission::admit(state, stream, peer, tls) else {
        return;
    };
    let (id, slot, counted) = (admitted.id, admitted.slot, admitted.counted);
    let (shared, stream) = (Arc::clone(state), Arc::clone(&admitted.stream));
    let life = Box::new(move || run(&shared, id, slot, stream, peer, counted, tls));
    match state.runtime.spawn(tls, life) {
        Ok(thread) => registry::record_thread(state, slot, &admitted.stream, thread),
        Err(e) => admission::no_thread(state, admitted, peer, tls, &e),
    }
}

/// A connection's own thread: configures the socket, reads the PROXY header, serves the
/// connection (a TLS one after its handshake), closes it gracefully, and logs the close.
/// `counted`: the address whose `--max-per-source` count admission took a place in for
/// this connection, if any.
fn run(
    state: &Arc<ServerState>,
    id: u64,
    slot: usize,
    stream: Arc<TcpStream>,
    peer: SocketAddr,
    counted: Option<IpAddr>,
    tls: bool,
) {
    // Leaves the registry however the connection ends, a panic included, so that a bug
    // in one connection can neither leak its socket nor hold a slot for good.
    let mut registered = Registered {
        state: Arc::clone(state),
        id,
        slot,
        peer,
        counted,
        via: None,
    };
    let started = Instant::now();
    // Its socket.
    let configured = configure(state, &stream);
    // The PROXY header, with `--proxy-protocol`: first, before the TLS handshake, whose
    // bytes follow it.
    if configured.is_ok() {
        if let Some(proxy) = &state.config.proxy {
            if !admission::admit_proxied(state, &mut registered, &stream, proxy, tls) {
                return;
            }
        }
    }
    let local = configured.and_then(|()| local_address(state, &stream));
    // With `--trace`, the connection's own view of the trace.
    let trace = (state.config.trace.as_ref()).map(|t| Arc::new(t.connection(id, started, tls)));
    // The protocol: at once over plain TCP; over TLS after the handshake.
    let ending = match (local, &state.config.tls) {
        (Err(e), _) => failed(e),
        (Ok(local), Some(config)) if tls => {
            handshake_then_serve(state, registered, stream, config, started, local, trace);
            return;
        }
        (Ok(local), _) => {
            // The client's address read from `registered`, not copied out of it before:
            // a copy would stay in this frame, which the thread holds while it serves.
            let peer = Peer {
                id,
                addr: registered.peer,
                local,
            };
            let summary = match (&trace, state.ctx.settings.shows_who()) {
                (None, false) => connection::serve(&*stream, &state.ctx, peer),
                _ => serve_plain_extras(state, &stream, peer, registered.via, started, trace),
            };
            Ending {
                summary,
                detail: None,
            }
        }
    };
    // The close.
    close(state, registered, stream, started, ending);
}

/// [`connection::serve`] for a plain connection traced (`--trace`) or whose facts a
/// template shows. Never inlined into [`run`], whose frame every plain connection's
/// thread touches: a held connection's stack then stays within two pages (checked by
/// `reliability::hold_10000_connections` in a release build).
#[inline(never)]
fn serve_plain_extras(
    state: &ServerState,
    stream: &TcpStream,
    peer: Peer,
    via: Option<SocketAddr>,
    started: Instant,
    trace: Option<Arc<ConnTrace>>,
) -> Summary {
    let who = state.ctx.settings.shows_who().then(|| {
        let facts = Facts {
            proxied_by: via,
            ..Facts::default()
        };
        Who::new(&facts, started)
    });
    let ctx = &state.ctx;
    match (trace, who) {
        (Some(trace), Some(who)) => {
            connection::serve_who(Traced::new(stream, &trace), ctx, peer, who, None)
        }
        (Some(trace), None) => connection::serve(Traced::new(stream, &trace), ctx, peer),
        (None, Some(who)) => connection::serve_who(stream, ctx, peer, who, None),
        (None, None) => connection::serve(stream, ctx, peer),
    }
}

/// A TLS connection's handshake, then its service, on this thread or handed to another
/// (see [`super::runtime`]); or, if the handshake fails, its close. Never inlined into
/// [`run`]: the handshake's result is over a kilobyte, and in that frame it made every
/// plain connection's thread touch one more stack page.
#[inline(never)]
fn handshake_then_serve(
    state: &Arc<ServerState>,
    registered: Registered,
    stream: Arc<TcpStream>,
    config: &tls::Tls,
    started: Instant,
    local: SocketAddr,
    trace: Option<Arc<ConnTrace>>,
) {
    // A welcome that shows the session's facts waits for the handshake's end.
    let welcome = if config.asks_client_certificate() || state.ctx.settings.welcome.shows_who() {
        Vec::new()
    } else {
        connection::welcome(
            &state.ctx,
            Peer {
                id: registered.id,
                addr: registered.peer,
                local,
            },
        )
    };
    let place = registry::begin_handshake(state, registered.id, registered.peer, &stream);
    let handshake = tls::handshake(
        &stream,
        config.current(),
        config.handshake_timeout,
        &state.ctx,
        &welcome,
    );
    // False if a newer handshake took the place, and closed the socket.
    let kept = place.give_up();
    match handshake {
        Ok((conn, session)) if kept => {
            log_tls_open(&registered, &session);
            if let (Some(trace), true) = (&trace, session.welcomed) {
                // Sent within the handshake, not through the transport the trace wraps.
                trace.record(Direction::Sent, &welcome);
            }
            let established = Established {
                registered,
                stream,
                conn: Box::new(conn),
                client: session.client,
                started,
                local,
                welcomed: session.welcomed.then_some(welcome.len()),
                trace,
            };
            match state.runtime.handshake_seat() {
                Some(_seat) => serve_tls(state, established),
                None => hand_off(state, established),
            }
        }
        failed => {
            state.counters.handshake_failed();
            let detail = Detail::NoSession(match failed {
                Err(e) if kept => e.to_string(),
                _ => "TLS handshake ended for a newer one (--tls-max-handshakes, \
                      --tls-max-handshakes-per-source)"
                    .to_string(),
            });
            let ending = Ending {
                summary: nothing(CloseReason::Handshake),
                detail: Some(Box::new(detail)),
            };
            close(state, registered, stream, started, ending);
        }
    }
}

/// A TLS connection's open line, at debug, after its handshake. Never inlined: its
/// fields would stay in the frame under a connection served on its handshake's thread.
#[inline(never)]
fn log_tls_open(registered: &Registered, session: &tls::Session) {
    log::debug!(
        target: log_target::SETUP,
        id = registered.id,
        peer:% = registered.peer,
        via = Optional(registered.via),
        tls_version:% = session.version,
        resumed = session.resumed,
        client = Optional(session.client.as_ref());
        "conn {} open: {}{}, {}{}{}",
        registered.id,
        registered.peer,
        Via(registered.via),
        session.version,
        if session.resumed { " resumed" } else { "" },
        session
            .client
            .as_ref()
            .map_or(String::new(), |c| format!(", client {c}"))
    );
}

/// Hands an established TLS connection to a thread with the small stack of a plain one
/// (see [`super::runtime`]), which serves it with [`serve_tls`]; if no thread can be
/// started, this one serves.
fn hand_off(state: &Arc<ServerState>, mut established: Established) {
    // What rustls queued after the handshake (the session tickets) leaves now, from this
    // thread, rather than with the serving thread's first write: freed here, its buffers
    // stay out of the serving thread's allocator cache, which a held connection keeps. A
    // failed send fails the serving thread's first write too.
    let _ = tls::send_queued(&established.stream, &mut established.conn);
    let slot = established.registered.slot;
    let stream = Arc::clone(&established.stream);
    if let Some(thread) = state.runtime.hand_off(state, established, serve_tls) {
        registry::record_hand_off(state, slot, &stream, thread);
    }
}

/// A TLS connection whose handshake is done, on its way to the thread that serves it.
struct Established {
    registered: Registered,
    stream: Arc<TcpStream>,
    conn: Box<rustls::ServerConnection>,
    client: Option<String>,
    started: Instant,
    /// The address the client reached.
    local: SocketAddr,
    /// The length of the welcome the handshake sent, if it did.
    welcomed: Option<usize>,
    /// With `--trace`, the connection's trace.
    trace: Option<Arc<ConnTrace>>,
}

/// The protocol over an established TLS connection, then its close.
fn serve_tls(state: &ServerState, established: Established) {
    let Established {
        registered,
        stream,
        mut conn,
        client,
        started,
        local,
        welcomed,
        trace,
    } = established;
    let peer = Peer {
        id: registered.id,
        addr: registered.peer,
        local,
    };
    let who = state.ctx.settings.shows_who().then(|| {
        let facts = Facts {
            proxied_by: registered.via,
            ..tls::facts(&conn, client.as_deref())
        };
        Who::new(&facts, started)
    });
    let ending = match restore_read_timeout(state, &stream) {
        Err(e) => failed(e),
        Ok(()) => Ending {
            summary: tls::serve(
                &stream,
                &mut conn,
                &state.ctx,
                peer,
                welcomed,
                who,
                trace.as_deref(),
            ),
            detail: client.map(|c| Box::new(Detail::Client(c))),
        },
    };
    close(state, registered, stream, started, ending);
}

/// What a connection's thread reports in its close line.
struct Ending {
    summary: Summary,
    /// What the close line adds, if anything: boxed, as it is rare and this is in the
    /// frame every plain connection's thread holds while it serves.
    detail: Option<Box<Detail>>,
}

/// What a close line adds to the reason, in its text and as a field of its own.
enum Detail {
    /// Who the client certificate says the client is (escaped: see [`tls::subject`]).
    Client(String),
    /// Why there was no TLS session.
    NoSession(String),
}

impl std::fmt::Display for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Detail::Client(client) => write!(f, ", client {client}"),
            Detail::NoSession(why) => write!(f, ": {why}"),
        }
    }
}

/// Logs the close line and closes gracefully: after `exit`, an idle timeout, shutdown or
/// a failed handshake, sends FIN, then lets the connection linger until the client has
/// closed too (at most `--linger`), so that bytes the client still sends cannot turn the
/// close into a reset that destroys what it has not read yet. Never inlined: its log
/// record's fields would stay in the frame of every connection's thread (see
/// [`serve_plain_extras`]).
#[inline(never)]
fn close(
    state: &ServerState,
    registered: Registered,
    stream: Arc<TcpStream>,
    started: Instant,
    ending: Ending,
) {
    let Ending { summary, detail } = ending;
    state.counters.closed(&summary);
    let level = if summary.is_quiet() {
        log::Level::Debug
    } else {
        log::Level::Info
    };
    let elapsed = started.elapsed();
    let (client, error, added): (_, _, &dyn std::fmt::Display) = match detail.as_deref() {
        None => (None, None, &""),
        Some(d @ Detail::Client(client)) => (Some(client), None, d),
        Some(d @ Detail::NoSession(why)) => (None, Some(why), d),
    };
    log::log!(
        target: log_target::SETUP,
        level,
        id = registered.id,
        peer:% = registered.peer,
        via = Optional(registered.via),
        local:% = LocalOf(&stream),
        duration = json_log::seconds(elapsed),
        bytes_in = summary.bytes_in,
        bytes_out = summary.bytes_out,
        replies = summary.replies,
        reason:% = summary.reason,
        client = Optional(client),
        error = Optional(error);
        "conn {} closed: {}{}, {:.3} s, {} {}, {} bytes in, {} bytes out, {}{added}",
        registered.id,
        registered.peer,
        Via(registered.via),
        elapsed.as_secs_f64(),
        summary.replies,
        crate::plural::noun(summary.replies, "reply", "replies"),
        summary.bytes_in,
        summary.bytes_out,
        summary.reason
    );
    if summary.reason == CloseReason::Fault(Kind::Reset) {
        // `--fault reset`: the close sends RST, not FIN.
        let _ = socket2::SockRef::from(&*stream).set_linger(Some(Duration::ZERO));
        return;
    }
    let lingers = matches!(
        summary.reason,
        // A failed handshake too: its alert, or the plain-text notice, must not be
        // destroyed by a reset over unread client bytes.
        CloseReason::Exit
            | CloseReason::Idle
            | CloseReason::Shutdown
            | CloseReason::Lifetime
            | CloseReason::Handshake
            | CloseReason::Fault(Kind::Close)
    );
    if !lingers || stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    if state.config.linger.is_zero() {
        return;
    }
    // A linger past what the clock holds: closed now rather than never.
    let Some(deadline) = Instant::now().checked_add(state.config.linger) else {
        return;
    };
    // This thread moves on to other connections: shutdown must not signal it for this
    // one.
    registry::forget_thread(state, registered.slot, &stream);
    state.runtime.linger(Lingering {
        _registered: registered,
        stream,
        deadline,
    });
}

/// The address the client reached, looked up only if a template shows it.
fn local_address(state: &ServerState, stream: &TcpStream) -> io::Result<SocketAddr> {
    if state.ctx.settings.shows_local() {
        stream.local_addr()
    } else {
        Ok(SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

/// The socket's set-up on its own thread: on Linux it inherited its options from the
/// listener (see [`super::listener`]).
fn configure(state: &ServerState, stream: &TcpStream) -> io::Result<()> {
    if !cfg!(target_os = "linux") {
        // Elsewhere accepted sockets may not inherit the listener's options.
        stream.set_nodelay(true)?;
        stream.set_read_timeout(state.config.idle_timeout)?;
        stream.set_write_timeout(state.config.write_timeout)?;
        if let Some(idle) = state.config.keepalive {
            socket2::SockRef::from(stream).set_tcp_keepalive(&super::keepalive(idle))?;
        }
    }
    if state.stopping() {
        // Shutdown began between admission and now; end reading like the others.
        stream.set_read_timeout(Some(SHUTDOWN_READ_TIMEOUT))?;
    }
    Ok(())
}

/// How the close line names the proxy a connection came through: ` (via ADDR)`.
struct Via(Option<SocketAddr>);

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(proxy) => write!(f, " (via {proxy})"),
            None => Ok(()),
        }
    }
}

/// The address the client reached, for the close line's `local` field: looked up only
/// when a format writes the field (the text format does not); empty if the socket
/// cannot say.
struct LocalOf<'a>(&'a TcpStream);

impl std::fmt::Display for LocalOf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.local_addr() {
            Ok(local) => local.fmt(f),
            Err(_) => Ok(()),
        }
    }
}

/// A connection that ended before anything was exchanged.
fn nothing(reason: CloseReason) -> Summary {
    Summary {
        replies: 0,
        bytes_in: 0,
        bytes_out: 0,
        reason,
    }
}

/// A connection whose socket could not be set up.
fn failed(e: io::Error) -> Ending {
    Ending {
        summary: nothing(CloseReason::ReadError(e.kind())),
        detail: None,
    }
}
