//! What a connection says: the answer to each message (reply, farewell, nothing),
//! the welcome, and the server's notices.

use std::sync::atomic::Ordering;

use log::debug;

use super::outcome::CloseReason;
use super::serve::{Connection, Step};
use super::transport::Transport;
use crate::fault::Point;
use crate::protocol::{self, LogText, Notice, Request};

impl<S: Transport> Connection<'_, '_, S> {
    /// Answers one complete line, `input[start..end]`. An exit word is one whatever
    /// `--max-line` is, up to `max_held` bytes with its blanks (longer lines are skipped
    /// as they stream, whatever they hold): a session can always be left.
    pub(super) fn line(&mut self, start: usize, end: usize) -> Step<Request> {
        let settings = &self.ctx.settings;
        let len = end - start;
        if len > settings.max_line
            && (len > settings.max_held()
                || protocol::classify(&self.buf.split().0[start..end]) != Request::Exit)
        {
            self.too_long()?;
            return Ok(Request::Name);
        }
        self.message(start, end)
    }

    /// Answers one message, `input[start..end]`, which is no longer than `max_message`
    /// unless it is an exit word.
    pub(super) fn message(&mut self, start: usize, end: usize) -> Step<Request> {
        let ctx = self.ctx;
        let settings = &ctx.settings;
        let (input, _) = self.buf.split();
        let request = protocol::classify(&input[start..end]);
        match request {
            Request::Blank => {}
            Request::Exit => {
                if !settings.farewell.is_empty() {
                    self.send(&settings.farewell, 0, 0)?;
                }
                self.flush_last()?;
            }
            Request::Name => {
                if self.fault().is_some() && self.fault_at_reply(start, end)? {
                    return Ok(request);
                }
                if log::log_enabled!(log::Level::Trace) {
                    let (input, _) = self.buf.split();
                    log::trace!("conn {}: name {}", self.id, LogText(&input[start..end]));
                }
                if !ctx.delay.is_zero() {
                    self.flush()?;
                    std::thread::sleep(ctx.delay);
                }
                self.send(&settings.reply, start, end)?;
                self.replies += 1;
                if !ctx.delay.is_zero() {
                    self.flush()?;
                }
            }
        }
        Ok(request)
    }

    pub(super) fn too_long(&mut self) -> Step<()> {
        debug!(
            "conn {}: line longer than {} bytes, skipped",
            self.id, self.ctx.settings.max_line
        );
        self.notice(Notice::LineTooLong)
    }

    /// The connection ended from the client's side, or the server's shutdown ended reading.
    pub(super) fn closed(&mut self) -> Step {
        if self.ctx.shutting_down.load(Ordering::Acquire) {
            self.notice(Notice::ShuttingDown)?;
            self.flush()?;
            return Ok(CloseReason::Shutdown);
        }
        self.flush()?;
        Ok(CloseReason::ClientClosed)
    }

    /// The read timeout: the idle timeout, or the end of the connection's life.
    pub(super) fn idle(&mut self) -> Step {
        if self.rare.is_some() {
            self.after_timeout()?;
        }
        let secs = self.ctx.idle_timeout.map_or(0, |t| t.as_secs());
        self.notice(Notice::Idle { secs })?;
        self.flush()?;
        Ok(CloseReason::Idle)
    }

    /// [`idle`](Self::idle) in echo mode, which sends no notice.
    pub(super) fn idle_echo(&mut self) -> Step {
        if self.rare.is_some() {
            self.after_timeout()?;
        }
        Ok(CloseReason::Idle)
    }

    /// Sends the welcome, unless the caller has.
    pub(super) fn welcome(&mut self) -> Step<()> {
        if self.fault().is_some() {
            self.fault_at(Point::Accept)?;
        }
        if !self.welcomed {
            self.send(&self.ctx.settings.welcome, 0, 0)?;
            self.flush()?;
        }
        if self.fault().is_some() {
            self.fault_at(Point::Welcome)?;
        }
        Ok(())
    }

    pub(super) fn notice(&mut self, notice: Notice) -> Step<()> {
        let text = self.ctx.settings.notice(notice);
        self.write_out(&text)
    }
}
