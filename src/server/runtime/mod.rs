//! The runtime: how connections get their threads and how they are closed, behind one
//! seam. [`super::lifecycle`] says what happens to a connection; this says on which
//! thread, and can be skipped on a first read. Each optimization here can be turned off
//! with its switch below, to measure what it brings:
//!
//! - [`THREAD_CACHE`]: finished connection threads park and serve the next connection
//!   (`thread_cache`), instead of one new thread per connection;
//! - [`TLS_HAND_OFF`]: a TLS connection runs its handshake on a thread with a deep stack,
//!   then is served by a thread with a plain connection's small stack (`handoff`);
//! - [`HANDSHAKE_SEATS`]: a few TLS connections at a time skip that hand-off and stay on
//!   their handshake's thread (`handoff`);
//! - [`CLOSER`]: a closed connection waits for its client's close (`--linger`) on one
//!   closer thread for all of them (`closer`), not on its own.
//!
//! Every call is static; the one dynamic call per connection is the job a thread runs
//! (a boxed closure).

mod closer;
mod handoff;
mod thread_cache;

use std::io;
use std::sync::Arc;

use nix::sys::pthread::Pthread;

pub(super) use closer::Lingering;
pub(super) use handoff::HandshakeSeat;
pub use thread_cache::PARKED_FOR;
use thread_cache::{Job, ThreadCache};

use super::ServerConfig;

/// Whether finished connection threads are kept for the next connections; off, every
/// connection starts a thread of its own (as `--thread-cache 0`).
const THREAD_CACHE: bool = true;
/// Whether a TLS connection's handshake thread hands it to a small-stack thread to be
/// served; off, every TLS connection is served on its handshake's thread.
const TLS_HAND_OFF: bool = true;
/// Whether a few TLS connections at a time are served on their handshake's thread
/// rather than handed off; off, every one is handed off.
const HANDSHAKE_SEATS: bool = true;
/// Whether one closer thread waits for every closed connection's client to close; off,
/// each connection's own thread waits for its client.
const CLOSER: bool = true;

/// Stack reserved for each connection thread. Only the pages a thread touches cost
/// memory (two here: the thread control block and the frames); the reservation just has
/// to hold the deepest call chain with room to spare. Smaller reservations saved no
/// resident memory (README, "Memory").
pub const CONNECTION_STACK: usize = 64 * 1024;

/// Stack reserved for each TLS connection thread. The handshake's public-key arithmetic
/// (ring's RSA signing above all) goes far deeper than serving: an RSA-2048 handshake
/// overflowed 64 KiB in a debug build, and a stack overflow aborts the whole process.
/// Only the pages the handshake touches become resident.
pub const TLS_CONNECTION_STACK: usize = 512 * 1024;

/// The threads connections run on, and the closer.
pub(super) struct Runtime {
    /// Threads that serve: plain connections, and TLS ones after their handshake.
    threads: Arc<ThreadCache>,
    /// Threads with the deep stack a TLS handshake needs.
    handshake_threads: Arc<ThreadCache>,
    /// TLS connections served by the thread that ran their handshake.
    seats: handoff::Seats,
    /// Closed connections waiting for their clients' close.
    closer: Arc<closer::Closer>,
}

impl Runtime {
    /// The runtime `config` asks for. Its closer thread starts now, before the server
    /// announces itself, so that it is among the idle threads.
    pub(super) fn start(config: &ServerConfig) -> io::Result<Runtime> {
        let cached = if THREAD_CACHE { config.thread_cache } else { 0 };
        let threads = ThreadCache::new(CONNECTION_STACK, cached);
        let deep = if config.tls.is_some() { cached } else { 0 };
        let handshake_threads = ThreadCache::new(TLS_CONNECTION_STACK, deep);
        let closer = Arc::new(closer::Closer::default());
        if CLOSER {
            closer.start(CONNECTION_STACK)?;
        }
        Ok(Runtime {
            threads,
            handshake_threads,
            seats: handoff::Seats::new(config.thread_cache),
            closer,
        })
    }

    /// Runs a new connection's `life` on a thread of its own, with the deep stack of a
    /// TLS handshake if `tls`; returns the thread, so that shutdown can interrupt its
    /// reads.
    pub(super) fn spawn(&self, tls: bool, life: Job) -> io::Result<Pthread> {
        let threads = if tls {
            &self.handshake_threads
        } else {
            &self.threads
        };
        threads.run(life)
    }

    /// After a TLS handshake: a seat if this connection is to be served by the thread
    /// that ran its handshake (held while it is served); `None` if it is to be handed
    /// off with [`Runtime::hand_off`].
    pub(super) fn handshake_seat(&self) -> Option<HandshakeSeat<'_>> {
        if !TLS_HAND_OFF {
            return Some(HandshakeSeat::unlimited());
        }
        if !HANDSHAKE_SEATS {
            return None;
        }
        self.seats.take()
    }

    /// Hands `connection` to a serving thread, which runs `serve(state, connection)`;
    /// returns that thread. If no thread can be started, this one serves, and `None` is
    /// returned.
    pub(super) fn hand_off<S, T>(
        &self,
        state: &Arc<S>,
        connection: T,
        serve: fn(&S, T),
    ) -> Option<Pthread>
    where
        S: Send + Sync + 'static,
        T: Send + 'static,
    {
        handoff::hand_off(&self.threads, state, connection, serve)
    }

    /// Takes a connection whose FIN is sent, to close once its client has closed too or
    /// its deadline has passed.
    pub(super) fn linger(&self, lingering: Lingering) {
        if CLOSER {
            self.closer.take(lingering);
        } else {
            closer::linger_here(lingering);
        }
    }

    /// Closes, now, the lingering connections whose clients have closed or whose
    /// deadline has passed: when `--max-connections` is reached, so that a place held by
    /// a client that has gone is not refused to the next one.
    pub(super) fn sweep_lingering(&self) {
        self.closer.sweep();
    }
}
