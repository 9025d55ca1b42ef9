//! The connection the sessions talk over, split into a reading half for the main thread
//! and a writing half for the writer thread.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};

use super::failure::Failure;
use super::wait::{Wait, arm, is_reset, is_timeout};

/// A connection, split: `reader` for the thread that reads, `writer` for the one that
/// sends.
pub(super) struct Link {
    pub(super) reader: Reader,
    pub(super) writer: Writer,
}

impl Link {
    /// A plain TCP connection.
    pub(super) fn plain(stream: TcpStream) -> io::Result<Link> {
        let writer = stream.try_clone()?;
        Ok(Link {
            reader: Reader::Plain(stream),
            writer: Writer::Plain(writer),
        })
    }
}

/// What one read from the server gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Got {
    /// This many bytes are in the buffer.
    Bytes(usize),
    /// The server closed its side.
    Closed,
    /// Nothing yet: the read's timeout passed. Look at the deadline and read again.
    Nothing,
}

/// Why a read from the server failed.
#[derive(Debug)]
pub(super) enum ReadError {
    /// The server reset the connection.
    Reset(io::Error),
    /// The socket failed otherwise.
    Io(io::Error),
}

impl From<ReadError> for Failure {
    fn from(e: ReadError) -> Failure {
        match e {
            ReadError::Reset(e) | ReadError::Io(e) => Failure::Socket(e),
        }
    }
}

/// Sorts a socket read's outcome.
pub(super) fn got(result: io::Result<usize>) -> Result<Got, ReadError> {
    match result {
        Ok(0) => Ok(Got::Closed),
        Ok(n) => Ok(Got::Bytes(n)),
        Err(e) if e.kind() == ErrorKind::Interrupted || is_timeout(&e) => Ok(Got::Nothing),
        Err(e) if is_reset(&e) => Err(ReadError::Reset(e)),
        Err(e) => Err(ReadError::Io(e)),
    }
}

/// The reading half.
pub(super) enum Reader {
    Plain(TcpStream),
}

impl Reader {
    /// Sets how long the next read may block (see [`arm`]); false when the wait has
    /// expired.
    pub(super) fn arm(&self, wait: Wait) -> Result<bool, Failure> {
        match self {
            Reader::Plain(stream) => arm(stream, wait),
        }
    }

    /// Reads what the server sent next.
    pub(super) fn read(&mut self, buf: &mut [u8]) -> Result<Got, ReadError> {
        match self {
            Reader::Plain(stream) => got(stream.read(buf)),
        }
    }
}

/// The writing half; `&Writer` is a [`Write`].
pub(super) enum Writer {
    Plain(TcpStream),
}

impl Writer {
    /// Sends `last`, the end of what this client sends, then a half-close if
    /// `half_close`.
    pub(super) fn finish(&self, last: &[u8], half_close: bool) -> io::Result<()> {
        match self {
            Writer::Plain(stream) => (&*stream).write_all(last)?,
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

    fn socket(&self) -> &TcpStream {
        match self {
            Writer::Plain(stream) => stream,
        }
    }
}

impl Write for &Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Writer::Plain(stream) => (&*stream).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        // It writes through at once: nothing is held back here.
        Ok(())
    }
}
