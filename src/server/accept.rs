//! The accept loop: takes each connection from its listener and starts its life (see
//! [`lifecycle`](super::lifecycle)); backs off when the system runs out of resources.

use std::io::{self, ErrorKind};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, warn};

use super::log_limit::LogLimit;
use super::{ServerState, admission, lifecycle, unix};

/// Accepts connections on `listener` until the server stops; `tls`: whether they begin
/// with a TLS handshake.
pub(super) fn accept_loop(state: &Arc<ServerState>, listener: &TcpListener, tls: bool) {
    accept_each(
        state,
        || listener.accept(),
        |(stream, peer)| {
            lifecycle::start(state, stream, peer, tls);
        },
    );
}

/// [`accept_loop`] for a `unix:` listener.
pub(super) fn accept_unix_loop(state: &Arc<ServerState>, listener: &unix::Listener) {
    accept_each(
        state,
        || listener.accept(),
        |stream| {
            unix::start(state, stream, listener);
        },
    );
}

/// Takes each connection `accept` gives to `start` until the server stops, backing off
/// when the system runs out of resources.
fn accept_each<C>(
    state: &ServerState,
    mut accept: impl FnMut() -> io::Result<C>,
    mut start: impl FnMut(C),
) {
    let mut backoff = AcceptBackoff::default();
    loop {
        match accept() {
            // Off Linux, shutdown wakes `accept` with a connection of its own
            // (`shutdown::wake_accept`); Linux fails the `accept` instead.
            Ok(_) if !cfg!(target_os = "linux") && state.stopping() => return,
            Ok(connection) => {
                backoff.succeeded();
                admission::report_suppressed_refusals(state, false);
                start(connection);
            }
            Err(_) if state.stopping() => return,
            Err(e) => {
                if !is_timeout(&e) {
                    state.counters.accept_failed();
                }
                if let Some(pause) = backoff.failed(&e, Instant::now()) {
                    thread::sleep(pause);
                }
            }
        }
    }
}

/// What the accept loop does after an error: retry at once for errors that concern only
/// one connection, back off exponentially (5 ms to 1 s) when the process or system is
/// out of a resource (EMFILE, ENFILE, ENOBUFS, ENOMEM), and log at most once a second.
#[derive(Debug)]
pub struct AcceptBackoff {
    pause: Duration,
    log: LogLimit,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff {
            pause: Duration::ZERO,
            log: LogLimit::new(Duration::from_secs(1)),
        }
    }
}

const MIN_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_secs(1);

impl AcceptBackoff {
    /// An accept succeeded: the next failure starts from the shortest pause, and errors
    /// the log left out are counted now.
    pub fn succeeded(&mut self) {
        self.pause = Duration::ZERO;
        if let Some(n) = self.log.flush() {
            warn!("accepting again; {n} more accept errors were not shown");
        }
    }

    /// An accept failed with `error`; returns how long to pause before the next one.
    pub fn failed(&mut self, error: &io::Error, now: Instant) -> Option<Duration> {
        if per_connection(error) {
            // The listener's receive timeout (the idle timeout, see `per_connection`)
            // ends an `accept` that found no client: nothing happened, nothing to log.
            if !is_timeout(error) {
                debug!("accept: {error}");
            }
            return None;
        }
        self.pause = (self.pause * 2).clamp(MIN_PAUSE, MAX_PAUSE);
        if let Some(suppressed) = self.log.allow(now) {
            error!(
                "accept failed: {error}{}; pausing accepts for {} ms{}",
                if is_fd_exhaustion(error) {
                    " (out of file descriptors: raise `ulimit -n` or lower --max-connections)"
                } else {
                    ""
                },
                self.pause.as_millis(),
                if suppressed > 0 {
                    format!(" ({suppressed} similar errors not shown)")
                } else {
                    String::new()
                }
            );
        }
        Some(self.pause)
    }
}

/// Errors after which the next accept can follow at once: the connection being
/// accepted was reset or aborted before `accept` returned, or no client came within
/// the listener's receive timeout. That timeout is the idle timeout, set on the
/// listener so that accepted sockets inherit it, and Linux applies it to `accept` too.
fn per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
            | ErrorKind::TimedOut
    ) || error.raw_os_error() == Some(libc::EPROTO)
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

fn is_fd_exhaustion(error: &io::Error) -> bool {
    // EMFILE (24) and ENFILE (23).
    matches!(error.raw_os_error(), Some(23 | 24))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_timeouts_and_aborted_connections_retry_at_once() {
        let mut b = AcceptBackoff::default();
        let now = Instant::now();
        for kind in [
            ErrorKind::WouldBlock,
            ErrorKind::TimedOut,
            ErrorKind::ConnectionAborted,
        ] {
            assert_eq!(b.failed(&io::Error::from(kind), now), None, "{kind:?}");
        }
    }

    #[test]
    fn backoff_doubles_to_a_ceiling_and_resets() {
        let mut b = AcceptBackoff::default();
        let emfile = io::Error::from_raw_os_error(24);
        let now = Instant::now();
        let pauses: Vec<_> = (0..12).map(|_| b.failed(&emfile, now).unwrap()).collect();
        assert_eq!(pauses[0], MIN_PAUSE);
        assert_eq!(pauses[1], MIN_PAUSE * 2);
        assert_eq!(*pauses.last().unwrap(), MAX_PAUSE);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        b.succeeded();
        assert_eq!(b.failed(&emfile, now), Some(MIN_PAUSE));
    }

    #[test]
    fn aborted_connections_are_retried_at_once() {
        let mut b = AcceptBackoff::default();
        let aborted = io::Error::from(ErrorKind::ConnectionAborted);
        assert_eq!(b.failed(&aborted, Instant::now()), None);
        assert_eq!(
            b.failed(&io::Error::from_raw_os_error(libc::EPROTO), Instant::now()),
            None
        );
    }
}
