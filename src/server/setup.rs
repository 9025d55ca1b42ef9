//! A connection's own thread: configures its socket, serves it, closes it gracefully,
//! and logs how it went.

use std::io::{self, ErrorKind, Read};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shared;
use super::registry::Registered;
use super::shutdown::SHUTDOWN_READ_TIMEOUT;
use crate::connection::{self, CloseReason, Peer, Summary};

/// How long a closing connection waits for the client to close its side after the
/// server's last bytes, so that unread client data does not turn the close into a reset
/// that destroys the farewell in flight.
const LINGER: Duration = Duration::from_secs(2);

impl Shared {
    pub(super) fn run_connection(
        &self,
        id: u64,
        slot: usize,
        stream: &Arc<TcpStream>,
        peer: SocketAddr,
    ) {
        // Leaves the registry however this function ends, a panic included, so that a
        // bug in one connection can neither leak its socket nor hold a slot for good.
        let _registered = Registered {
            shared: self,
            id,
            slot,
            peer,
        };
        let started = Instant::now();
        let summary = match self.configure(stream) {
            Ok(()) => connection::serve(&**stream, &self.ctx, Peer { id, addr: peer }),
            Err(e) => Summary {
                replies: 0,
                bytes_in: 0,
                bytes_out: 0,
                reason: CloseReason::ReadError(e.kind()),
            },
        };
        linger(stream, summary.reason);
        let quiet = summary.bytes_in == 0
            || matches!(
                summary.reason,
                CloseReason::ReadError(ErrorKind::ConnectionReset)
                    | CloseReason::WriteError(ErrorKind::ConnectionReset | ErrorKind::BrokenPipe)
            );
        let level = if quiet {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "conn {id} closed: {peer}, {:.3} s, {} replies, {} bytes in, {} bytes out, {}",
            started.elapsed().as_secs_f64(),
            summary.replies,
            summary.bytes_in,
            summary.bytes_out,
            summary.reason
        );
    }

    pub(super) fn configure(&self, stream: &TcpStream) -> io::Result<()> {
        if !cfg!(target_os = "linux") {
            // Elsewhere accepted sockets may not inherit the listener's options.
            stream.set_nodelay(true)?;
            stream.set_read_timeout(self.config.idle_timeout)?;
            stream.set_write_timeout(self.config.write_timeout)?;
        }
        if self.stopping() {
            // Shutdown began between admission and now; end reading like the others.
            stream.set_read_timeout(Some(SHUTDOWN_READ_TIMEOUT))?;
        }
        Ok(())
    }
}

/// Closes gracefully: after the server's last bytes, sends FIN and reads until the
/// client closes too (bounded by [`LINGER`]), so unread input cannot make the kernel
/// answer with a reset that discards the farewell the client has not read yet.
fn linger(stream: &TcpStream, reason: CloseReason) {
    if !matches!(
        reason,
        CloseReason::Exit | CloseReason::Idle | CloseReason::Shutdown
    ) {
        return;
    }
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut scratch = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Set each time: shutdown may have shortened the timeout meanwhile.
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*stream).read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}
