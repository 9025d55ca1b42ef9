//! One Unix connection's life, top to bottom, as `super::super::lifecycle` tells a TCP
//! connection's:
//!
//! 1. [`start`], on the accept loop: admission (`--max-connections`), then a thread of
//!    its own;
//! 2. `run`, on that thread: its socket's timeouts, then
//!    [`connection::serve_with_values`];
//! 3. `close`: the close line, then a graceful close, waiting on this thread for the
//!    client's close.

use std::io::{self, ErrorKind, Read};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use super::{Credentials, Listener};
use crate::connection::{self, CloseReason, Summary, Traced};
use crate::fault::Kind;
use crate::protocol::{ConnectionValues, Facts, LocalName, Who};
use crate::server::shutdown::SHUTDOWN_READ_TIMEOUT;
use crate::server::{ServerState, admission, log_target, registry};

/// A connection just accepted on `listener`, on the accept loop: admitted, then given a
/// thread of its own that runs the rest of its life; or refused, from here.
pub(in crate::server) fn start(state: &Arc<ServerState>, stream: UnixStream, listener: &Listener) {
    let peer = Credentials::of(&stream);
    let Some(admitted) = admission::admit_unix(state, stream, peer) else {
        return;
    };
    let (id, slot) = (admitted.id, admitted.slot);
    let (shared, stream) = (Arc::clone(state), Arc::clone(&admitted.stream));
    let local = listener.name().clone();
    let life = Box::new(move || run(&shared, id, slot, stream, peer, local));
    match state.runtime.spawn(false, life) {
        Ok(thread) => registry::record_thread(state, slot, &admitted.stream, thread),
        Err(e) => admission::no_unix_thread(state, admitted, peer, &e),
    }
}

/// A connection's own thread: sets the socket's timeouts, serves the connection,
/// closes it gracefully, and logs the close.
fn run(
    state: &Arc<ServerState>,
    id: u64,
    slot: usize,
    stream: Arc<UnixStream>,
    peer: Credentials,
    local: LocalName,
) {
    // Leaves the registry however the connection ends, a panic included.
    let place = Place {
        state: Arc::clone(state),
        id,
        slot,
        peer,
    };
    let started = Instant::now();
    let summary = match configure(state, &stream) {
        Ok(()) => serve(state, &stream, id, peer, local, started),
        Err(e) => Summary {
            replies: 0,
            bytes_in: 0,
            bytes_out: 0,
            reason: CloseReason::ReadError(e.kind()),
        },
    };
    close(state, place, &stream, started, summary);
}

/// The socket's timeouts: an accepted Unix socket inherits none from its listener.
fn configure(state: &ServerState, stream: &UnixStream) -> io::Result<()> {
    stream.set_read_timeout(state.config.idle_timeout)?;
    stream.set_write_timeout(state.config.write_timeout)?;
    if state.stopping() {
        // Shutdown began meanwhile, and may have set its timeout before ours: again.
        stream.set_read_timeout(Some(SHUTDOWN_READ_TIMEOUT))?;
    }
    Ok(())
}

/// The protocol, with `{peer}` the client's credentials and `{local}` the socket's path.
fn serve(
    state: &ServerState,
    stream: &UnixStream,
    id: u64,
    peer: Credentials,
    local: LocalName,
    started: Instant,
) -> Summary {
    let ctx = &state.ctx;
    // No TLS and no PROXY header here: of the facts, only `{age}` shows anything.
    let who = ctx
        .settings
        .shows_who()
        .then(|| Who::new(&Facts::default(), started));
    let values = (ctx.settings.shows_values() || who.is_some())
        .then(|| Box::new(ConnectionValues::unix(peer, local, id).with_who(who)));
    match &state.config.trace {
        Some(trace) => {
            let trace = trace.connection(id, started, false);
            connection::serve_with_values(Traced::new(stream, &trace), ctx, id, values)
        }
        None => connection::serve_with_values(stream, ctx, id, values),
    }
}

/// Logs the close line and closes gracefully: after `exit`, an idle timeout or
/// shutdown, half-closes, then waits (at most `--linger`) for the client to close too,
/// reading what it still sends: a Unix socket closed with bytes unread makes the client's
/// next read fail (ECONNRESET) instead of ending.
fn close(
    state: &ServerState,
    place: Place,
    stream: &UnixStream,
    started: Instant,
    summary: Summary,
) {
    state.counters.closed(&summary);
    let level = if summary.is_quiet() {
        log::Level::Debug
    } else {
        log::Level::Info
    };
    let elapsed = started.elapsed();
    log::log!(
        target: log_target::SETUP,
        level,
        id = place.id,
        peer:% = place.peer,
        duration = crate::json_log::seconds(elapsed),
        bytes_in = summary.bytes_in,
        bytes_out = summary.bytes_out,
        replies = summary.replies,
        reason:% = summary.reason;
        "conn {} closed: {}, {:.3} s, {} {}, {} bytes in, {} bytes out, {}",
        place.id,
        place.peer,
        elapsed.as_secs_f64(),
        summary.replies,
        crate::plural::noun(summary.replies, "reply", "replies"),
        summary.bytes_in,
        summary.bytes_out,
        summary.reason
    );
    let lingers = matches!(
        summary.reason,
        CloseReason::Exit
            | CloseReason::Idle
            | CloseReason::Shutdown
            | CloseReason::Fault(Kind::Close)
    );
    // `--fault reset` closes at once: a Unix socket has no reset to send.
    if !lingers || stream.shutdown(Shutdown::Write).is_err() || state.config.linger.is_zero() {
        return;
    }
    let Some(deadline) = Instant::now().checked_add(state.config.linger) else {
        return;
    };
    let mut scratch = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*stream).read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// A Unix connection's place in the registry, given up on drop.
struct Place {
    state: Arc<ServerState>,
    id: u64,
    slot: usize,
    peer: Credentials,
}

impl Drop for Place {
    fn drop(&mut self) {
        if thread::panicking() {
            log::error!(
                target: log_target::REGISTRY,
                "conn {} closed: {}, its thread panicked (a bug: please report it)",
                self.id,
                self.peer
            );
        }
        registry::leave(&self.state, self.slot, None);
    }
}
