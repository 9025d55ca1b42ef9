//! `--max-lifetime`: a connection's end of life, drawn with jitter, and the read timeout
//! that wakes it then if it is idle. A connection without one does no more than check
//! an `Option` before each read (the one `--fault` uses too); the rest is out of line,
//! so that the serving loop's frame, on every connection's stack, does not grow for it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::outcome::CloseReason;
use super::serve::{Connection, IoFailure, SHUTDOWN_READ_TIMEOUT, Step};
use super::transport::Transport;
use crate::protocol::{Mode, Notice};

/// The share of `--max-lifetime` a connection's lifetime may fall short of it by: each is
/// drawn uniformly between 0.9 and 1 times the maximum, so that connections opened
/// together (after a restart, or a scale-out) do not all reconnect together.
pub const JITTER: f64 = 0.1;

/// A connection's end of life.
#[derive(Debug)]
pub(super) struct Lifetime {
    /// When it is told to reconnect and closed.
    deadline: Instant,
    /// The read timeout set now is the time left rather than the idle timeout: a read
    /// that times out has reached the deadline.
    timing: bool,
    /// The deadline has passed and one last read, under the shutdown's short timeout, is
    /// taking what the client had sent by then, to be answered before the notice.
    ending: bool,
}

/// The lifetime of connection `id` under `--max-lifetime max`: between `max` less
/// [`JITTER`] and `max`, spread evenly over connection numbers and the same for the same
/// number, with no random source to seed or share.
pub fn drawn(max: Duration, id: u64) -> Duration {
    // SplitMix64's finalizer: consecutive numbers land far apart.
    let mut z = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // The top 53 bits, as a fraction in [0, 1).
    let fraction = (z >> 11) as f64 / (1u64 << 53) as f64;
    max.saturating_sub(max.mul_f64(JITTER * fraction))
}

/// The end of life of connection `id` starting now, under `--max-lifetime max`; `None`
/// past what the clock holds (never, then).
fn begin(max: Duration, id: u64) -> Option<Lifetime> {
    let deadline = Instant::now().checked_add(drawn(max, id))?;
    Some(Lifetime {
        deadline,
        timing: false,
        ending: false,
    })
}

impl<S: Transport> Connection<'_, '_, S> {
    /// Gives the connection its end of life, counted from now. Out of line: it runs
    /// once, and only with the option.
    #[cold]
    #[inline(never)]
    pub(super) fn begin_lifetime(&mut self, max: Duration) {
        if let Some(lifetime) = begin(max, self.id) {
            self.rare.get_or_insert_with(Box::default).lifetime = Some(lifetime);
        }
    }

    /// Before each read (called by the serving loops, not by `read`, whose frame and
    /// registers every connection's reads pay for): once the connection has lived its
    /// lifetime, one last read under the shutdown's short timeout, which takes what the
    /// client had sent by then (as shutdown does), then the end ([`expire`](Self::expire)).
    /// Before that, when less than the idle timeout is left, the time left as the read
    /// timeout, so that an idle connection is closed at its end of life rather than after
    /// its next line.
    #[cold]
    #[inline(never)]
    pub(super) fn before_read(&mut self) -> Step<()> {
        let idle = self.ctx.idle_timeout;
        let Some(lifetime) = self.rare.as_mut().and_then(|r| r.lifetime.as_mut()) else {
            return Ok(());
        };
        if lifetime.ending {
            return self.expire();
        }
        let left = lifetime.deadline.saturating_duration_since(Instant::now());
        let timeout = if left < SHUTDOWN_READ_TIMEOUT {
            lifetime.ending = true;
            Some(SHUTDOWN_READ_TIMEOUT)
        } else {
            let timing = idle.is_none_or(|idle| left < idle);
            if !timing && !lifetime.timing {
                return Ok(());
            }
            lifetime.timing = timing;
            if timing { Some(left) } else { idle }
        };
        self.stream
            .set_read_timeout(timeout)
            .map_err(IoFailure::Read)?;
        // Shutdown sets its short read timeout after its flag: seen here, the short one
        // may have been overwritten just now, and is set again.
        if self.ctx.shutting_down.load(Ordering::Acquire) {
            self.stream
                .set_read_timeout(Some(SHUTDOWN_READ_TIMEOUT))
                .map_err(IoFailure::Read)?;
        }
        Ok(())
    }

    /// After a read timed out (not at shutdown): the end, if it was the lifetime's
    /// timeout rather than the idle timeout; else the idle timeout's close goes on.
    #[cold]
    #[inline(never)]
    pub(super) fn after_timeout(&mut self) -> Step<()> {
        let lifetime = self.rare.as_ref().and_then(|r| r.lifetime.as_ref());
        if lifetime.is_some_and(|l| l.timing || l.ending || Instant::now() >= l.deadline) {
            return self.expire();
        }
        Ok(())
    }

    /// The connection has lived its lifetime: told to reconnect (except in echo mode,
    /// which sends only what it receives), at a line boundary since every complete line
    /// read so far is answered, and ended.
    fn expire(&mut self) -> Step<()> {
        if !matches!(self.ctx.settings.mode, Mode::Echo) {
            self.notice(Notice::Reconnect)?;
            self.flush()?;
        }
        Err(IoFailure::Ended(CloseReason::Lifetime))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_drawn_between_nine_tenths_and_all_of_the_maximum_evenly() {
        let max = Duration::from_secs(100);
        let draws: Vec<Duration> = (0..10_000).map(|id| drawn(max, id)).collect();
        let low = Duration::from_secs(90);
        assert!(draws.iter().all(|&d| low <= d && d <= max), "out of range");
        // Evenly: each tenth of the range holds about a tenth of the draws.
        let mut tenths = [0usize; 10];
        for d in &draws {
            let at = ((d.as_secs_f64() - 90.0) / 10.0 * 10.0) as usize;
            tenths[at.min(9)] += 1;
        }
        assert!(
            tenths.iter().all(|&n| (800..1200).contains(&n)),
            "{tenths:?}"
        );
        // The same number draws the same lifetime; neighbours draw different ones.
        assert_eq!(drawn(max, 7), drawn(max, 7));
        assert_ne!(drawn(max, 7), drawn(max, 8));
    }

    #[test]
    fn a_lifetime_past_the_clock_is_none_and_large_ones_do_not_overflow() {
        let huge = Duration::from_secs(u64::MAX);
        assert!(drawn(huge, 3) <= huge);
        assert!(begin(huge, 3).is_none());
        assert_eq!(drawn(Duration::ZERO, 3), Duration::ZERO);
        let one = drawn(Duration::from_secs(1), 1);
        assert!(one >= Duration::from_millis(900) && one <= Duration::from_secs(1));
    }
}
