//! A [`Transport`] whose every read and write is traced (`--trace`); the connection is
//! wrapped in one only when tracing is on.

use std::io::{self, Read, Write};

use super::transport::Transport;
use crate::trace::{ConnTrace, Direction};

/// `inner`, with what it reads and writes shown in `trace`.
pub struct Traced<'t, S> {
    inner: S,
    trace: &'t ConnTrace,
}

impl<'t, S: Transport> Traced<'t, S> {
    pub fn new(inner: S, trace: &'t ConnTrace) -> Self {
        Traced { inner, trace }
    }
}

impl<S: Transport> Read for Traced<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.trace.record(Direction::Received, &buf[..n]);
        Ok(n)
    }
}

impl<S: Transport> Write for Traced<'_, S> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(bytes)?;
        self.trace.record(Direction::Sent, &bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<S: Transport> Transport for Traced<'_, S> {
    fn write_last(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.inner.write_last(bytes)?;
        self.trace.record(Direction::Sent, &bytes[..n]);
        Ok(n)
    }

    fn set_read_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        self.inner.set_read_timeout(timeout)
    }
}
