//! The closer: where a finished connection waits for its client to close (`--linger`),
//! off the connection's thread.
//!
//! After the server's last bytes and its FIN, a connection is kept open until the client
//! closes too (or `--linger` passes), so that bytes the client still sends cannot make the
//! kernel reset the connection and destroy the farewell the client has not read yet. A
//! thread blocked in `read` for that FIN is woken by it, and the client pays for the
//! wake-up (README, "Connection rate"). Here one thread looks
//! at every lingering socket every [`LOOK_EVERY`], without blocking on any: a FIN wakes
//! nobody. The connection keeps its place in the registry until it is closed.

use std::io::{self, ErrorKind, Read};
use std::mem::MaybeUninit;
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use socket2::SockRef;

use crate::server::registry::Registered;
use crate::signals::spawn_blocking_stops;

/// How often the closer looks at the sockets it holds, while it holds any: a connection
/// keeps its place under `--max-connections` up to this long after its client closed.
pub(super) const LOOK_EVERY: Duration = Duration::from_millis(1);

/// A connection whose last bytes and FIN are sent, waiting for its client's close.
pub(in crate::server) struct Lingering {
    /// Its place in the registry, held for its `Drop`: given up (and the socket closed)
    /// when this is dropped.
    pub(in crate::server) _registered: Registered,
    pub(in crate::server) stream: Arc<TcpStream>,
    /// When it is closed whatever the client does.
    pub(in crate::server) deadline: Instant,
}

/// The connections waiting, and a signal for the closer's thread when it has none.
#[derive(Default)]
pub(super) struct Closer {
    lingering: Mutex<Vec<Lingering>>,
    arrived: Condvar,
}

impl Closer {
    /// Starts the closer's thread (`stack` bytes of stack). It starts before the server
    /// installs its signal handlers, so it blocks their signals (see
    /// [`spawn_blocking_stops`]); it never needs them.
    pub(super) fn start(self: &Arc<Self>, stack: usize) -> io::Result<()> {
        let closer = Arc::clone(self);
        let builder = thread::Builder::new()
            .name("closer".into())
            .stack_size(stack);
        // Never joined: it holds nothing once shutdown has waited for every connection,
        // and ends with the process.
        spawn_blocking_stops(builder, move || closer.run()).map(drop)
    }

    /// Takes a connection to close once its client has closed, or at its deadline.
    pub(super) fn take(&self, lingering: Lingering) {
        let mut waiting = self.lock();
        waiting.push(lingering);
        if waiting.len() == 1 {
            self.arrived.notify_one();
        }
    }

    /// Closes, now, the connections whose clients have closed or whose deadline has
    /// passed; returns how many. The closer's thread calls it every [`LOOK_EVERY`], and
    /// the accept loop when `--max-connections` is reached, so that a place held by a
    /// client that has gone is not refused to the next one.
    pub(super) fn sweep(&self) -> usize {
        let mut scratch = [MaybeUninit::<u8>::uninit(); 512];
        let now = Instant::now();
        // Looked at without the lock, so that connections being handed over meanwhile
        // (thousands at a shutdown) never wait for a look at thousands of sockets.
        let mut waiting = std::mem::take(&mut *self.lock());
        let mut done = Vec::new();
        let mut i = 0;
        while i < waiting.len() {
            let l = &waiting[i];
            if still_waiting(&l.stream, l.deadline, now, &mut scratch) {
                i += 1;
            } else {
                done.push(waiting.swap_remove(i));
            }
        }
        self.lock().append(&mut waiting);
        // Each gives up its registry place, under the registry's lock, and closes its
        // socket.
        done.len()
    }

    /// The closer's thread: sweeps while any connection waits. Runs for as long as the
    /// process.
    fn run(&self) {
        loop {
            {
                let mut waiting = self.lock();
                while waiting.is_empty() {
                    waiting = self
                        .arrived
                        .wait(waiting)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
            self.sweep();
            thread::sleep(LOOK_EVERY);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Lingering>> {
        crate::sync::lock(&self.lingering)
    }
}

/// Without the closer: waits on the connection's own thread for its client's close,
/// reading late bytes, until the deadline; then closes.
pub(super) fn linger_here(lingering: Lingering) {
    let mut scratch = [0u8; 512];
    loop {
        let left = lingering.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || lingering.stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*lingering.stream).read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Reads, without waiting, what the client sent on `stream` since the last look, and
/// says whether to keep waiting for its close: until it closes, or `deadline` passes.
fn still_waiting(
    stream: &TcpStream,
    deadline: Instant,
    now: Instant,
    scratch: &mut [MaybeUninit<u8>],
) -> bool {
    let socket = SockRef::from(stream);
    loop {
        match socket.recv_with_flags(scratch, libc::MSG_DONTWAIT) {
            // The client closed: so can we.
            Ok(0) => return false,
            // Late bytes, read so that they cannot turn the close into a reset.
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return now < deadline,
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    #[test]
    fn a_socket_waits_through_late_bytes_until_its_client_closes_or_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut scratch = [MaybeUninit::<u8>::uninit(); 512];
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        assert!(
            still_waiting(&server, later, now, &mut scratch),
            "nothing yet"
        );
        assert!(
            !still_waiting(&server, now, now, &mut scratch),
            "the deadline has passed"
        );
        client.write_all(&[b'x'; 4096]).unwrap();
        drop(client);
        // The late bytes and the FIN arrive; the look that reads the FIN ends the wait.
        let deadline = Instant::now() + Duration::from_secs(10);
        while still_waiting(&server, later, Instant::now(), &mut scratch) {
            assert!(
                Instant::now() < deadline,
                "the client's close was never seen"
            );
            thread::yield_now();
        }
    }
}
