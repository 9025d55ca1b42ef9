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
use crate::tls;

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
        tls: bool,
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
        let failed = |e: io::Error| Summary {
            replies: 0,
            bytes_in: 0,
            bytes_out: 0,
            reason: CloseReason::ReadError(e.kind()),
        };
        let peer_id = Peer { id, addr: peer };
        // What the close line adds: who the client certificate says the client is, or
        // why there was no TLS session.
        let mut detail = String::new();
        let summary = match (self.configure(stream), &self.config.tls) {
            (Err(e), _) => failed(e),
            (Ok(()), Some(config)) if tls => {
                match tls::handshake(
                    stream,
                    config.current(),
                    config.handshake_timeout,
                    &self.ctx,
                ) {
                    Err(e) => {
                        detail = format!(": {e}");
                        Summary {
                            replies: 0,
                            bytes_in: 0,
                            bytes_out: 0,
                            reason: CloseReason::Handshake,
                        }
                    }
                    Ok((mut conn, session)) => match self.end_handshake(stream) {
                        Err(e) => failed(e),
                        Ok(()) => {
                            log::debug!(
                                "conn {id} open: {peer}, {}{}{}",
                                session.version,
                                if session.resumed { " resumed" } else { "" },
                                session
                                    .client
                                    .as_ref()
                                    .map_or(String::new(), |c| format!(", client {c}"))
                            );
                            if let Some(client) = &session.client {
                                detail = format!(", client {client}");
                            }
                            tls::serve(stream, &mut conn, &self.ctx, peer_id)
                        }
                    },
                }
            }
            (Ok(()), _) => connection::serve(&**stream, &self.ctx, peer_id),
        };
        linger(stream, summary.reason);
        let quiet = summary.bytes_in == 0
            || matches!(
                summary.reason,
                CloseReason::ReadError(ErrorKind::ConnectionReset)
                    | CloseReason::WriteError(ErrorKind::ConnectionReset | ErrorKind::BrokenPipe)
                    | CloseReason::TlsOnPlainPort
            );
        let level = if quiet {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "conn {id} closed: {peer}, {:.3} s, {} replies, {} bytes in, {} bytes out, {}{detail}",
            started.elapsed().as_secs_f64(),
            summary.replies,
            summary.bytes_in,
            summary.bytes_out,
            summary.reason
        );
    }

    /// After the handshake, which set its own read timeouts: the idle timeout again, or
    /// the shutdown's, if shutdown began meanwhile (set after the idle one, in the same
    /// order as shutdown sets the flag and then the timeout, so neither is lost).
    fn end_handshake(&self, stream: &TcpStream) -> io::Result<()> {
        stream.set_read_timeout(self.config.idle_timeout)?;
        if self.stopping() {
            stream.set_read_timeout(Some(SHUTDOWN_READ_TIMEOUT))?;
        }
        Ok(())
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
        // A failed handshake too: its alert, or the plain-text notice, must not be
        // destroyed by a reset over unread client bytes.
        CloseReason::Exit | CloseReason::Idle | CloseReason::Shutdown | CloseReason::Handshake
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
