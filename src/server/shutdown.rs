//! Stopping: no more accepts, and every connection's reading ended so that it answers
//! what it has received, says `server shutting down`, and closes; then the wait for
//! them. A connection thread blocked in `read` is woken by a signal ([`WAKE_SIGNAL`]).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use log::{info, warn};
use nix::sys::pthread::pthread_kill;
use nix::sys::signal::Signal;
use socket2::SockRef;

use super::ServerState;
use super::readiness::Phase;
use super::registry::Socket;

/// The read timeout every connection gets at shutdown (see
/// [`crate::connection::SHUTDOWN_READ_TIMEOUT`]).
pub(super) const SHUTDOWN_READ_TIMEOUT: Duration = crate::connection::SHUTDOWN_READ_TIMEOUT;

/// The signal that interrupts a connection thread's blocked read at shutdown, so that
/// the read starts again under [`SHUTDOWN_READ_TIMEOUT`]. SIGURG is ignored by default
/// and the kernel sends it only to processes that ask for TCP urgent data.
pub(super) const WAKE_SIGNAL: Signal = Signal::SIGURG;

/// Installs a handler for [`WAKE_SIGNAL`], so that it interrupts a read instead of being
/// discarded as an ignored signal. It only sets a flag nobody reads.
pub(super) fn install_wake_handler() -> io::Result<()> {
    signal_hook::flag::register(WAKE_SIGNAL as i32, Arc::new(AtomicBool::new(false))).map(drop)
}

/// Stops accepting and ends every connection's reading; idempotent.
pub(super) fn stop(state: &ServerState) {
    let live: Vec<Socket> = {
        let mut registry = state.lock();
        if registry.stopping {
            return;
        }
        registry.stopping = true;
        state.phase.advance(Phase::Stopping);
        state.ctx.shutting_down.store(true, Ordering::Release);
        registry
            .live
            .iter()
            .map(|(_, live)| live.stream.clone())
            .collect()
    };
    info!(
        connections = live.len();
        "shutting down: {} {} to finish (up to {} s)",
        live.len(),
        crate::plural::noun(live.len() as u64, "connection", "connections"),
        state.config.shutdown_timeout.as_secs()
    );
    // Not `shutdown(Read)`: Linux answers data that arrives after it, once the FIN has
    // gone, with a reset that discards the replies still queued for the client. A short
    // read timeout ends reading once what was sent has been read, and the signal makes a
    // read already blocked start again under it. Set before the listeners are shut: the
    // accept loops then go on to wait for the connections and signal their threads, and
    // a read the signal restarts must find the short timeout already there (else it
    // blocks again for the idle timeout).
    for stream in live {
        let _ = stream.set_read_timeout(Some(SHUTDOWN_READ_TIMEOUT));
    }
    for listener in crate::sync::lock(&state.listeners).iter() {
        // Makes a blocked `accept` return at once (Linux).
        let shut = SockRef::from(listener.as_ref()).shutdown(Shutdown::Both);
        // macOS (and some BSDs) refuse to shut a listener down (ENOTCONN), and their
        // `accept` ignores the receive timeout: a connection of our own wakes it instead.
        if shut.is_err() && !cfg!(target_os = "linux") {
            if let Err(e) = wake_accept(listener) {
                warn!("cannot wake the accept loop of a listener to stop it: {e}");
            }
        }
    }
    for listener in crate::sync::lock(&state.unix_listeners).iter() {
        listener.stop();
    }
    interrupt_reads(state, false);
}

/// Connects to `listener`, so that its blocked `accept` returns and the accept loop,
/// seeing the server stopping, ends. A listener on every address is reached over
/// loopback.
fn wake_accept(listener: &TcpListener) -> io::Result<()> {
    let mut addr = listener.local_addr()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    // Bounded: a full backlog leaves the SYN unanswered, but then `accept` has
    // connections to return anyway.
    TcpStream::connect_timeout(&addr, WAKE_CONNECT_TIMEOUT).map(drop)
}

/// Longest [`wake_accept`] waits for its connection.
const WAKE_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Interrupts connection threads' blocked reads (see [`WAKE_SIGNAL`]): those not
/// signalled yet, or with `again` every one. Once is enough for a read that runs under
/// the short shutdown timeout; `again` is for the few that set a timeout of their own (a
/// TLS handshake, a PROXY header) just as the first signal came. Under the registry's
/// lock: a thread leaves the registry before it ends or serves another connection, so no
/// other thread is signalled.
fn interrupt_reads(state: &ServerState, again: bool) {
    let mut registry = state.lock();
    for (_, live) in registry.live.iter_mut() {
        if live.thread != 0 && (again || !live.woken) {
            let _ = pthread_kill(live.thread, WAKE_SIGNAL);
            live.woken = true;
        }
    }
}

/// Waits up to `timeout` for every connection to finish; returns how many are left.
pub(super) fn wait_for_connections(state: &ServerState, timeout: Duration) -> usize {
    // A timeout past what the clock holds waits for as long as connections last.
    let deadline = Instant::now().checked_add(timeout);
    let mut registry = state.lock();
    let mut last_full_pass = Instant::now();
    while !registry.live.is_empty() {
        let now = Instant::now();
        let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(now));
        if left.is_zero() {
            break;
        }
        // Again now and then, for threads recorded since: one started just before
        // shutdown may have begun its read before its slot recorded it. And every thread
        // once a second (see `interrupt_reads`).
        drop(registry);
        let again = now.duration_since(last_full_pass) >= Duration::from_secs(1);
        if again {
            last_full_pass = now;
        }
        interrupt_reads(state, again);
        registry = state.lock();
        let slice = left.min(Duration::from_millis(100));
        registry = state
            .left
            .wait_timeout_while(registry, slice, |r| !r.live.is_empty())
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    let left = registry.live.len();
    if left > 0 {
        warn!(
            connections = left;
            "{left} connections still open after {} s; exiting anyway",
            timeout.as_secs()
        );
    }
    left
}

/// After the TLS handshake or the PROXY header, which set their own read timeouts: the
/// idle timeout again, or the shutdown's, if shutdown began meanwhile (set after the idle
/// one, in the same order as shutdown sets the flag and then the timeout, so neither is
/// lost).
pub(super) fn restore_read_timeout(state: &ServerState, stream: &TcpStream) -> io::Result<()> {
    stream.set_read_timeout(state.config.idle_timeout)?;
    if state.stopping() {
        stream.set_read_timeout(Some(SHUTDOWN_READ_TIMEOUT))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_connection_ends_a_blocked_accept_on_any_address() {
        for any in ["0.0.0.0:0", "[::]:0", "127.0.0.1:0"] {
            let Ok(listener) = TcpListener::bind(any) else {
                continue; // No IPv6 here.
            };
            let listener = Arc::new(listener);
            let accepting = Arc::clone(&listener);
            let accepted = std::thread::spawn(move || accepting.accept().map(drop));
            wake_accept(&listener).unwrap();
            accepted.join().unwrap().unwrap();
        }
    }
}
