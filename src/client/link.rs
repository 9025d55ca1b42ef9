//! The connection the sessions talk over, plain TCP, TLS or a Unix socket, split into a
//! reading half for the main thread and a writing half for the writer thread.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use socket2::SockRef;

use super::failure::Failure;
use super::tls::{Handshaken, TlsReader, TlsWriter, tls_halves};
use super::tls_failure::TlsFailure;
use super::wait::{Wait, arm, is_reset, is_timeout};
use crate::trace::{ConnTrace, Direction};

/// A connection, split: `reader` for the thread that reads, `writer` for the one that
/// sends.
pub(super) struct Link {
    pub(super) reader: Reader,
    pub(super) writer: Writer,
}

impl Link {
    /// A plain TCP connection; `trace`: with `--trace`, where both halves show what
    /// they move.
    pub(super) fn plain(stream: TcpStream, trace: Option<Arc<ConnTrace>>) -> io::Result<Link> {
        let writer = stream.try_clone()?;
        Ok(Link {
            reader: Reader {
                io: ReadHalf::Plain(stream),
                trace: trace.clone(),
            },
            writer: Writer {
                io: WriteHalf::Plain(writer),
                trace,
            },
        })
    }

    /// A Unix socket's connection; `trace` as [`Link::plain`]'s.
    pub(super) fn unix(stream: UnixStream, trace: Option<Arc<ConnTrace>>) -> io::Result<Link> {
        let writer = stream.try_clone()?;
        Ok(Link {
            reader: Reader {
                io: ReadHalf::Unix(stream),
                trace: trace.clone(),
            },
            writer: Writer {
                io: WriteHalf::Unix(writer),
                trace,
            },
        })
    }

    /// A TLS connection whose handshake is done; `trace` shows the plaintext.
    pub(super) fn tls(
        stream: TcpStream,
        done: Handshaken,
        trace: Option<Arc<ConnTrace>>,
    ) -> io::Result<Link> {
        let (reader, writer) = tls_halves(stream, done)?;
        Ok(Link {
            reader: Reader {
                io: ReadHalf::Tls(Box::new(reader)),
                trace: trace.clone(),
            },
            writer: Writer {
                io: WriteHalf::Tls(writer),
                trace,
            },
        })
    }
}

/// What one read from the server gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Received {
    /// This many bytes are in the buffer.
    Bytes(usize),
    /// The server closed its side (over TLS: with close_notify, or without it at a
    /// record's end, which the session's tally judges like any close).
    Closed,
    /// Nothing yet: the read's timeout passed, or only part of a TLS record came. Look
    /// at the deadline and read again.
    Nothing,
}

/// Why a read from the server failed.
#[derive(Debug)]
pub(super) enum ReadError {
    /// The server reset the connection.
    Reset(io::Error),
    /// The socket failed otherwise.
    Io(io::Error),
    /// TLS failed: an alert from the server, or records rustls refuses.
    Tls(TlsFailure),
}

impl From<ReadError> for Failure {
    fn from(e: ReadError) -> Failure {
        match e {
            ReadError::Reset(e) | ReadError::Io(e) => Failure::Socket(e),
            ReadError::Tls(t) => Failure::Tls(t),
        }
    }
}

/// Sorts a socket read's outcome.
pub(super) fn got(result: io::Result<usize>) -> Result<Received, ReadError> {
    match result {
        Ok(0) => Ok(Received::Closed),
        Ok(n) => Ok(Received::Bytes(n)),
        Err(e) if e.kind() == ErrorKind::Interrupted || is_timeout(&e) => Ok(Received::Nothing),
        Err(e) if is_reset(&e) => Err(ReadError::Reset(e)),
        Err(e) => Err(ReadError::Io(e)),
    }
}

/// The reading half.
pub(super) struct Reader {
    io: ReadHalf,
    trace: Option<Arc<ConnTrace>>,
}

enum ReadHalf {
    Plain(TcpStream),
    /// Boxed: it carries its buffer of ciphertext.
    Tls(Box<TlsReader>),
    Unix(UnixStream),
}

impl Reader {
    /// Sets how long the next read may block (see [`arm`]); false when the wait has
    /// expired.
    pub(super) fn arm(&self, wait: Wait) -> Result<bool, Failure> {
        match &self.io {
            ReadHalf::Plain(stream) => arm(stream, wait),
            ReadHalf::Tls(tls) => arm(tls.socket(), wait),
            ReadHalf::Unix(stream) => arm(stream, wait),
        }
    }

    /// Reads what the server sent next.
    pub(super) fn read(&mut self, buf: &mut [u8]) -> Result<Received, ReadError> {
        let received = match &mut self.io {
            ReadHalf::Plain(stream) => got(stream.read(buf)),
            ReadHalf::Tls(tls) => tls.read(buf),
            ReadHalf::Unix(stream) => got(stream.read(buf)),
        };
        if let (Some(trace), Ok(Received::Bytes(n))) = (&self.trace, &received) {
            trace.record(Direction::Received, &buf[..*n]);
        }
        received
    }
}

/// The writing half; `&Writer` is a [`Write`] (over TLS, of plaintext).
pub(super) struct Writer {
    io: WriteHalf,
    trace: Option<Arc<ConnTrace>>,
}

enum WriteHalf {
    Plain(TcpStream),
    Tls(TlsWriter),
    Unix(UnixStream),
}

impl WriteHalf {
    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            WriteHalf::Plain(stream) => (&*stream).write(buf),
            WriteHalf::Tls(tls) => tls.write(buf),
            WriteHalf::Unix(stream) => (&*stream).write(buf),
        }
    }
}

impl Writer {
    /// Sends `last`, the end of what this client sends, then a half-close if
    /// `half_close`. Over TLS close_notify goes in the same write as `last`: a server
    /// that reads more than one record at a time then has it when it sees `last` (an
    /// `exit`), and can close with nothing unread, which would reset the connection.
    pub(super) fn finish(&self, last: &[u8], half_close: bool) -> io::Result<()> {
        // Traced before it leaves (see `write`).
        if let Some(trace) = &self.trace {
            trace.record(Direction::Sent, last);
        }
        match &self.io {
            WriteHalf::Plain(stream) => (&*stream).write_all(last)?,
            WriteHalf::Tls(tls) => tls.finish(last)?,
            WriteHalf::Unix(stream) => (&*stream).write_all(last)?,
        }
        if half_close {
            self.socket().shutdown(Shutdown::Write)?;
        }
        Ok(())
    }

    /// Shuts the connection both ways, to wake the reader when the writer must stop the
    /// session.
    pub(super) fn abort(&self) {
        let _ = self.socket().shutdown(Shutdown::Both);
    }

    fn socket(&self) -> SockRef<'_> {
        match &self.io {
            WriteHalf::Plain(stream) => SockRef::from(stream),
            WriteHalf::Tls(tls) => SockRef::from(tls.socket()),
            WriteHalf::Unix(stream) => SockRef::from(stream),
        }
    }
}

impl Write for &Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(trace) = &self.trace else {
            return self.io.write(buf);
        };
        // Traced before it leaves, and then all of it sent: traced after, it could show
        // after the server's answer to it, which the reading thread traces, or not at
        // all, the process having ended once that answer came.
        trace.record(Direction::Sent, buf);
        let mut rest = buf;
        while !rest.is_empty() {
            match self.io.write(rest) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Both write through at once: nothing is held back here.
        Ok(())
    }
}
