//! The TLS hand-off: a TLS connection's handshake runs on a thread with a deep stack, and
//! the connection is then served by a thread with a plain connection's small stack, so
//! that the pages the handshake's cryptography touched (on its stack and in its
//! allocator cache) stay with a few handshake threads instead of staying resident for as
//! long as each connection lives. Each connection still has one thread at a time.
//!
//! The hand-off costs a wake-up of another thread per connection, so a few connections
//! at a time (the handshake seats) skip it and are served by their handshake's thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::pthread::Pthread;

use super::ThreadCache;
use crate::server::log_target;
use crate::sync::lock;

/// How many TLS connections may be served by the thread that ran their handshake at
/// once: a quarter of `--thread-cache`. Enough for the connections a busy server has open
/// at once when they are short; each seat a held connection takes keeps a deep thread
/// resident, and a parked handshake thread takes its place (README, "Memory").
fn handshake_seats(thread_cache: usize) -> usize {
    thread_cache / 4
}

/// The handshake seats: how many are taken, of how many.
pub(super) struct Seats {
    taken: AtomicUsize,
    limit: usize,
}

impl Seats {
    /// Seats for a thread cache of `thread_cache`.
    pub(super) fn new(thread_cache: usize) -> Seats {
        Seats {
            taken: AtomicUsize::new(0),
            limit: handshake_seats(thread_cache),
        }
    }

    /// A seat, if one is free.
    pub(super) fn take(&self) -> Option<HandshakeSeat<'_>> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .ok()
            .map(|_| HandshakeSeat(Some(&self.taken)))
    }
}

/// A TLS connection's place among those served by their handshake's thread, given back
/// however the connection ends.
pub(in crate::server) struct HandshakeSeat<'a>(Option<&'a AtomicUsize>);

impl HandshakeSeat<'_> {
    /// A seat that counts nothing: with the hand-off off, every connection has one.
    pub(super) fn unlimited() -> Self {
        HandshakeSeat(None)
    }
}

impl Drop for HandshakeSeat<'_> {
    fn drop(&mut self) {
        if let Some(taken) = self.0 {
            taken.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Runs `serve(state, connection)` on one of `threads`; returns that thread. If none can
/// be started, this thread serves, and `None` is returned.
pub(super) fn hand_off<S, T>(
    threads: &Arc<ThreadCache>,
    state: &Arc<S>,
    connection: T,
    serve: fn(&S, T),
) -> Option<Pthread>
where
    S: Send + Sync + 'static,
    T: Send + 'static,
{
    // Taken by whichever thread serves: the new one, or this one if it cannot start.
    let parcel = Arc::new(Mutex::new(Some(connection)));
    let (shared, handed) = (Arc::clone(state), Arc::clone(&parcel));
    let spawned = threads.run(Box::new(move || {
        let taken = lock(&handed).take();
        if let Some(connection) = taken {
            serve(&shared, connection);
        }
    }));
    match spawned {
        Ok(thread) => Some(thread),
        Err(e) => {
            log::debug!(
                target: log_target::SETUP,
                "cannot start a serving thread ({e}); serving on the handshake's"
            );
            let taken = lock(&parcel).take();
            if let Some(connection) = taken {
                serve(state, connection);
            }
            None
        }
    }
}
