//! `--fault`: where the faults that struck a connection ([`crate::fault::Struck`]) act
//! on it. Each entry point is called only when the connection was struck, behind one
//! check of an `Option`: a server without `--fault` does no more than that.

use std::io::ErrorKind;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::outcome::CloseReason;
use super::serve::{Connection, IoFailure, Step};
use super::transport::{Transport, write_within};
use crate::fault::{CloseWhen, Faults, Kind, Once, Point};

/// How often a stalled connection looks for shutdown and its idle timeout.
const STALL_LOOK: Duration = Duration::from_millis(50);

/// What `garbage` sends instead of a reply: control bytes and invalid UTF-8, which no
/// reply template makes.
const GARBAGE: &[u8] = b"\x00\x1b[5m\x7f#GARBAGE#\xc3\x28\x01";

impl<S: Transport> Connection<'_, '_, S> {
    /// Draws the faults that strike this connection; trickling is announced now, as it
    /// strikes every write.
    pub(super) fn strike(&mut self, faults: &Faults) {
        if let Some(struck) = faults.strike(self.id) {
            self.rare.get_or_insert_with(Box::default).fault = Some(struck);
        }
        if let Some((bytes, pause)) = self.fault().and_then(|f| f.trickle) {
            log::info!(
                "conn {} fault: trickle, {bytes} {} every {} ms",
                self.id,
                crate::plural::noun(bytes as u64, "byte", "bytes"),
                pause.as_millis()
            );
            self.count(Kind::Trickle);
        }
    }

    /// The one-time fault due at `point` (accept, or right after the welcome), if any.
    pub(super) fn fault_at(&mut self, point: Point) -> Step<()> {
        let Some(once) = self.fault_mut().and_then(|f| f.at(point)) else {
            return Ok(());
        };
        self.announce(once, point);
        match once {
            Once::Reset => self.end(CloseReason::Fault(Kind::Reset)),
            Once::Close(_) => self.end(CloseReason::Fault(Kind::Close)),
            Once::Stall => self.stall(),
            Once::Blackhole => self.blackhole(),
            // Never due at accept or the welcome (the parser sees to it).
            Once::Garbage => Ok(()),
        }
    }

    /// Before the reply to a line: the delay drawn for it, then the one-time fault due
    /// after this many replies. True when the fault took the reply's place.
    pub(super) fn fault_at_reply(&mut self, start: usize, end: usize) -> Step<bool> {
        let point = Point::Replies(self.replies);
        let Some(struck) = self.fault_mut() else {
            return Ok(false);
        };
        if let Some(wait) = struck.delay() {
            log::info!(
                "conn {} fault: delay {} ms before reply {}",
                self.id,
                wait.as_millis(),
                self.replies + 1
            );
            self.count(Kind::Delay);
            self.flush()?;
            std::thread::sleep(wait);
        }
        let Some(struck) = self.fault_mut() else {
            return Ok(false);
        };
        let Some(once) = struck.at(point) else {
            return Ok(false);
        };
        self.announce(once, point);
        let reply = &self.ctx.settings.reply;
        match once {
            Once::Reset => self.end(CloseReason::Fault(Kind::Reset))?,
            Once::Stall => self.stall()?,
            Once::Blackhole => self.blackhole()?,
            Once::Close(CloseWhen::BeforeReply) => self.end(CloseReason::Fault(Kind::Close))?,
            Once::Close(CloseWhen::AfterReply) => {
                self.send(reply, start, end)?;
                self.replies += 1;
                self.end(CloseReason::Fault(Kind::Close))?;
            }
            Once::Close(CloseWhen::MidReply) => {
                let at = self.buf.out_len;
                self.send(reply, start, end)?;
                // At least one byte of the reply, never all of it.
                let len = self.buf.out_len.saturating_sub(at);
                self.buf.out_len = at + (len / 2).max(1).min(len.saturating_sub(1));
                self.end(CloseReason::Fault(Kind::Close))?;
            }
            Once::Garbage => {
                self.write_out(GARBAGE)?;
                self.write_out(self.ctx.settings.eol())?;
            }
        }
        Ok(true)
    }

    /// The log line and the count of a one-time fault.
    fn announce(&self, once: Once, point: Point) {
        log::info!("conn {} fault: {once} {point}", self.id);
        self.count(once.kind());
    }

    pub(super) fn count(&self, kind: Kind) {
        if let Some(faults) = &self.ctx.faults {
            faults.count(kind);
        }
    }

    /// Sends what is queued, then ends the connection for `reason`.
    fn end(&mut self, reason: CloseReason) -> Step<()> {
        self.flush()?;
        Err(IoFailure::Ended(reason))
    }

    /// Stops answering and reading, the connection kept open, so that the client's
    /// sends fill the buffers; ends at shutdown, or after the idle timeout.
    fn stall(&mut self) -> Step<()> {
        self.flush()?;
        let ctx = self.ctx;
        let deadline = ctx.idle_timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if ctx.shutting_down.load(Ordering::Acquire) {
                return Err(IoFailure::Ended(CloseReason::Shutdown));
            }
            let look = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left.min(STALL_LOOK),
                    _ => return Err(IoFailure::Ended(CloseReason::Idle)),
                },
                None => STALL_LOOK,
            };
            std::thread::sleep(look);
        }
    }

    /// Never sends a byte; reads and discards until the client closes, the idle
    /// timeout (the socket's read timeout) or shutdown.
    fn blackhole(&mut self) -> Step<()> {
        let ctx = self.ctx;
        let reason = loop {
            let Connection { stream, buf, .. } = self;
            match stream.read(buf.input()) {
                Ok(0) => break CloseReason::ClientClosed,
                Ok(n) => {
                    self.bytes_in += n as u64;
                    if ctx.shutting_down.load(Ordering::Acquire) {
                        break CloseReason::Shutdown;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock
                        || (cfg!(windows) && e.kind() == ErrorKind::TimedOut) =>
                {
                    break if ctx.shutting_down.load(Ordering::Acquire) {
                        CloseReason::Shutdown
                    } else {
                        CloseReason::Idle
                    };
                }
                Err(e) => return Err(IoFailure::Read(e)),
            }
        };
        // Nothing queued to send: the welcome never went.
        self.buf.out_len = 0;
        Err(IoFailure::Ended(reason))
    }

    /// Writes `output[..n]` `bytes` at a time, `pause` apart (`trickle`).
    pub(super) fn trickle(
        &mut self,
        n: usize,
        bytes: usize,
        pause: Duration,
        last: bool,
    ) -> Step<()> {
        let write_timeout = self.ctx.write_timeout;
        let Connection { stream, buf, .. } = self;
        let (_, output) = buf.split();
        let mut sent = 0;
        while sent < n {
            if sent > 0 {
                std::thread::sleep(pause);
            }
            let piece = &output[sent..(sent + bytes).min(n)];
            write_within(stream, piece, write_timeout, last).map_err(IoFailure::Write)?;
            stream.flush().map_err(IoFailure::Write)?;
            sent += piece.len();
        }
        self.buf.out_len = 0;
        self.bytes_out += n as u64;
        Ok(())
    }
}
