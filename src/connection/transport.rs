//! What a connection speaks over ([`Transport`]), and writing to it within the write
//! timeout.

use std::io::{self, ErrorKind, Read, Write};
use std::time::{Duration, Instant};

/// What [`serve`](super::serve) speaks over: bytes in, bytes out, and a way to write the
/// last bytes.
pub trait Transport: Read + Write {
    /// Writes bytes after which only the close follows (the farewell). A TCP socket holds
    /// them back (`MSG_MORE`), so that they leave with the close's FIN in one segment:
    /// one packet, and one wake-up of the client, fewer per `exit`.
    fn write_last(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.write(bytes)
    }

    /// Sets the socket's read timeout (`--max-lifetime` shortens it near a connection's
    /// end of life).
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

impl Transport for &std::net::TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        std::net::TcpStream::set_read_timeout(self, timeout)
    }

    fn write_last(&mut self, bytes: &[u8]) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        {
            socket2::SockRef::from(*self).send_with_flags(bytes, libc::MSG_MORE)
        }
        #[cfg(not(target_os = "linux"))]
        self.write(bytes)
    }
}

/// A Unix stream socket: its farewell is a plain write (there are no segments to save).
impl Transport for &std::os::unix::net::UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, timeout)
    }
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn write_last(&mut self, bytes: &[u8]) -> io::Result<usize> {
        (**self).write_last(bytes)
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        (**self).set_read_timeout(timeout)
    }
}

/// Writes all of `bytes`, failing with `TimedOut` once the client has taken nothing for
/// `timeout` (the write timeout set on the stream); `last`: they are the connection's
/// last (see [`Transport::write_last`]).
pub(super) fn write_within<W: Transport>(
    out: &mut W,
    bytes: &[u8],
    timeout: Option<Duration>,
    last: bool,
) -> io::Result<()> {
    let mut sent = 0;
    // Since when the client has taken nothing: one send's own timeout is not enough.
    // Linux ends a send that waited out the timeout with the part it placed, not an
    // error, and a signal (shutdown's) ends it early; either way the next send would
    // start the whole timeout again.
    let mut waiting_since = timeout.map(|_| Instant::now());
    let timed_out =
        |since: Option<Instant>| matches!((timeout, since), (Some(t), Some(s)) if s.elapsed() >= t);
    while sent < bytes.len() {
        let written = if last {
            out.write_last(&bytes[sent..])
        } else {
            out.write(&bytes[sent..])
        };
        match written {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(k) => {
                sent += k;
                if sent < bytes.len() && timed_out(waiting_since) {
                    return Err(ErrorKind::TimedOut.into());
                }
                waiting_since = timeout.map(|_| Instant::now());
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {
                if timed_out(waiting_since) {
                    return Err(ErrorKind::TimedOut.into());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
