//! A connection's output: replies rendered into the output buffer (or sent in pieces
//! when larger), and the buffer written to the transport.

use super::serve::{Connection, IoFailure, Step};
use super::transport::{Transport, write_within};
use crate::protocol::{self, ConnectionValues, Piece, ReplyTemplate};

impl<S: Transport> Connection<'_, '_, S> {
    /// Queues `template` rendered for the line `input[start..end]` (an empty range for
    /// the welcome and the farewell, which hold no `{}`), then the line ending.
    pub(super) fn send(&mut self, template: &ReplyTemplate, start: usize, end: usize) -> Step<()> {
        let eol = self.ctx.settings.eol();
        let (input, _) = self.buf.split();
        let line_len = template.line_len(&input[start..end]);
        if let Some(values) = &mut self.values {
            values.stamp_age(template);
        }
        let len = template.len_for(line_len, self.values()) + eol.len();
        if len <= self.ctx.pool.output_size() {
            self.reserve(len)?;
            let at = self.buf.out_len;
            let values = self.values.as_deref().unwrap_or(&ConnectionValues::NONE);
            let (input, output) = self.buf.split();
            let n = template.render(&input[start..end], values, &mut output[at..]);
            output[at + n..at + n + eol.len()].copy_from_slice(eol);
            self.buf.out_len = at + n + eol.len();
            return Ok(());
        }
        self.send_in_pieces(template, start, end)
    }

    /// A template with several `{}` times a long line: sent in pieces, so that no
    /// buffer has to be sized for the largest possible reply. Rare, and out of line so
    /// that [`send`](Self::send)'s frame, on every connection's stack, stays small.
    #[cold]
    #[inline(never)]
    fn send_in_pieces(&mut self, template: &ReplyTemplate, start: usize, end: usize) -> Step<()> {
        let values = self.values().clone();
        for piece in template.pieces() {
            match piece {
                Piece::Line => self.write_input_escaped(start, end)?,
                Piece::JsonLine => {
                    let (input, _) = self.buf.split();
                    let line = &input[start..end];
                    let mut json = vec![0; protocol::json_len(line)];
                    let n = protocol::json_escape(line, &mut json);
                    self.write_out(&json[..n])?;
                }
                other => self.write_out(values.text(other))?,
            }
        }
        self.write_out(self.ctx.settings.eol())
    }

    pub(super) fn room(&mut self) -> usize {
        self.buf.output().len() - self.buf.out_len
    }

    /// Makes room for `n` bytes of output (at most the large buffer's size): moves to
    /// the large buffers, or writes what is queued.
    pub(super) fn reserve(&mut self, n: usize) -> Step<()> {
        if self.room() >= n {
            return Ok(());
        }
        if !self.buf.is_big() {
            self.buf.grow(&self.ctx.pool);
            if self.room() >= n {
                return Ok(());
            }
        }
        self.flush()
    }

    /// Queues any number of bytes for output.
    pub(super) fn write_out(&mut self, mut bytes: &[u8]) -> Step<()> {
        let most = self.ctx.pool.output_size();
        while !bytes.is_empty() {
            self.reserve(bytes.len().min(most))?;
            let take = self.room().min(bytes.len());
            let at = self.buf.out_len;
            self.buf.output()[at..at + take].copy_from_slice(&bytes[..take]);
            self.buf.out_len += take;
            bytes = &bytes[take..];
        }
        Ok(())
    }

    /// Queues `input[start..end]` for output, through the output buffer a piece at a time.
    pub(super) fn write_input(&mut self, mut start: usize, end: usize) -> Step<()> {
        let most = self.ctx.pool.output_size();
        while start < end {
            // Growing or flushing leaves pending input where it is, so the indices hold.
            self.reserve((end - start).min(most))?;
            let take = self.room().min(end - start);
            let at = self.buf.out_len;
            let (input, output) = self.buf.split();
            output[at..at + take].copy_from_slice(&input[start..start + take]);
            self.buf.out_len += take;
            start += take;
        }
        Ok(())
    }

    /// Queues `input[start..end]` for output with every 0xFF doubled (see
    /// [`protocol::telnet_escape`]).
    pub(super) fn write_input_escaped(&mut self, mut start: usize, end: usize) -> Step<()> {
        while start < end {
            let (input, _) = self.buf.split();
            let Some(i) = memchr::memchr(protocol::IAC, &input[start..end]) else {
                return self.write_input(start, end);
            };
            self.write_input(start, start + i)?;
            self.write_out(&[protocol::IAC, protocol::IAC])?;
            start += i + 1;
        }
        Ok(())
    }

    /// Writes everything queued.
    pub(super) fn flush(&mut self) -> Step<()> {
        self.flush_as(false)
    }

    /// Sends what is queued, the last bytes of the connection (see
    /// [`Transport::write_last`]).
    pub(super) fn flush_last(&mut self) -> Step<()> {
        self.flush_as(true)
    }

    pub(super) fn flush_as(&mut self, last: bool) -> Step<()> {
        let n = self.buf.out_len;
        if n == 0 {
            return Ok(());
        }
        if let Some((bytes, pause)) = self.fault().and_then(|f| f.trickle) {
            return self.trickle(n, bytes, pause, last);
        }
        let write_timeout = self.ctx.write_timeout;
        let Connection { stream, buf, .. } = self;
        let (_, output) = buf.split();
        write_within(stream, &output[..n], write_timeout, last).map_err(IoFailure::Write)?;
        stream.flush().map_err(IoFailure::Write)?;
        self.buf.out_len = 0;
        self.bytes_out += n as u64;
        Ok(())
    }
}
