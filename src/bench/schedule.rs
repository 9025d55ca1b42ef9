//! The open loop (`--rate`, `--mode hold`, churn's next connections): when each
//! connection's next name, or in churn its next connection, is due, and the worker's
//! timers that wake it then.
//!
//! A due time follows from the schedule alone, never from the server: the k-th name of
//! connection `id` is due at start + (k × connections + id) / rate, so the connections
//! take turns and the names of all of them come evenly spaced. A name that cannot go at
//! its time (its connection has `--pipeline` names awaiting replies) keeps that time,
//! goes as soon as a reply makes room, and its latency is timed from its due time:
//! wrk2's correction of coordinated omission, so a server that stalls shows the stall.
//!
//! The closed loop does not come here: its connections send when replies come.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use super::config::claim;
use super::conn::State;
use super::names::write_name;
use super::worker::Worker;

/// The schedule of a run with a rate: when each connection's k-th event is due.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pace {
    /// Events per second over all connections.
    per_s: f64,
    /// Connections sharing the rate.
    slots: u64,
    /// When event 0 of connection 0 is due.
    start: Instant,
    /// Nothing is due at or after this (`--duration`); `None`: no end.
    end: Option<Instant>,
}

impl Pace {
    pub(super) fn new(per_s: f64, slots: u64, start: Instant) -> Pace {
        Pace {
            per_s,
            slots,
            start,
            end: None,
        }
    }

    /// The schedule begins at `start` and ends at `end`.
    pub(super) fn begin(&mut self, start: Instant, end: Option<Instant>) {
        self.start = start;
        self.end = end;
    }

    /// When the `k`-th event (name, or churn's connection) of connection `id` is due;
    /// `None` when never: at or past the end, or past what the clock holds.
    pub(super) fn due(&self, id: u64, k: u64) -> Option<Instant> {
        // Exact as long as the turn is below 2^53: far more events than any run has.
        let turn = k as f64 * self.slots as f64 + id as f64;
        let offset = Duration::try_from_secs_f64(turn / self.per_s).ok()?;
        let at = self.start.checked_add(offset)?;
        match self.end {
            Some(end) if at >= end => None,
            _ => Some(at),
        }
    }
}

/// A worker's timers: which connection to look at when. At most one per connection
/// (its `timer` flag), so the heap holds at most one entry a connection.
#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Timers {
    pub(super) fn push(&mut self, at: Instant, i: usize) {
        self.heap.push(Reverse((at, i)));
    }

    /// The earliest time set.
    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// The connection of the earliest timer, if it is due by `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<usize> {
        if self.next()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse((_, i))| i)
    }
}

/// Wakes the worker's poll at its earliest timer to the microsecond: a poll timeout is
/// rounded up to whole milliseconds, which would send paced names up to a millisecond
/// late and add that to every latency. A `timerfd`, registered with the poll.
pub(super) struct Alarm {
    fd: TimerFd,
    /// The time it is set for.
    set_for: Option<Instant>,
}

impl Alarm {
    pub(super) fn new(registry: &Registry, token: Token) -> io::Result<Alarm> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        registry.register(
            &mut SourceFd(&fd.as_fd().as_raw_fd()),
            token,
            Interest::READABLE,
        )?;
        Ok(Alarm { fd, set_for: None })
    }

    /// Sets it for `at` (none: off), unless it is set for that already. Its expiries are
    /// never read: setting it again clears them, and the poll is edge-triggered.
    pub(super) fn set(&mut self, at: Option<Instant>, now: Instant) -> io::Result<()> {
        if at == self.set_for {
            return Ok(());
        }
        self.set_for = at;
        match at {
            None => self.fd.unset()?,
            Some(at) => {
                // A zero time would switch it off.
                let wait = at
                    .saturating_duration_since(now)
                    .max(Duration::from_nanos(1));
                self.fd.set(
                    Expiration::OneShot(TimeSpec::from_duration(wait)),
                    TimerSetTimeFlags::empty(),
                )?;
            }
        }
        Ok(())
    }
}

impl Worker {
    /// Sets connection `i`'s timer for `at`, unless it has one (which is earlier: its due
    /// times only move on; when that one fires the connection is looked at again).
    pub(super) fn wake_at(&mut self, i: usize, at: Instant) {
        let c = &mut self.conns[i];
        if !c.timer {
            c.timer = true;
            self.timers.push(at, i);
        }
    }

    /// Acts on every timer due by `now`: a paced connection sends what is due, a churn
    /// connection begins its next cycle.
    pub(super) fn fire_timers(&mut self, now: Instant) {
        while let Some(i) = self.timers.pop_due(now) {
            self.conns[i].timer = false;
            match self.conns[i].state {
                State::Running => self.fill(i),
                State::Pending => self.begin_cycle(i),
                _ => {}
            }
        }
    }

    /// `fill` in the open loop: sends the names that are due, up to `--pipeline`
    /// awaiting replies (all in one write), each timed from its due time; sets a timer for
    /// the next one while there is room for it; closes once the run is over and every
    /// name has its reply.
    pub(super) fn fill_paced(&mut self, i: usize) {
        let Some(pace) = self.pace else { return };
        let c = &mut self.conns[i];
        let records = c.tls.as_ref().is_some_and(|t| t.wants_write());
        if c.state != State::Running || c.wpos < c.wbuf.len() || records {
            return;
        }
        let room = self.cfg.pipeline - c.sent.len();
        let now = Instant::now();
        let mut due = 0;
        // When the first name not yet due is due, if there is room for it.
        let mut wake = None;
        // At the end, names due that could not go yet are not sent: the run is over.
        let mut over = self.stopped || self.interrupted;
        while !over && due < room {
            match pace.due(c.id, c.next_seq + due as u64) {
                Some(at) if at <= now => due += 1,
                Some(at) => {
                    wake = Some(at);
                    break;
                }
                None => over = true,
            }
        }
        let n = claim(self.shared.budget.as_ref(), due as u64) as usize;
        // Fewer than were due: the budget of --messages is spent.
        over |= n < due;
        if n > 0 {
            c.wbuf.clear();
            c.wpos = 0;
            for _ in 0..n {
                write_name(&mut c.wbuf, c.id, c.next_seq, self.cfg.size);
                c.wbuf.push(b'\n');
                // Due, so not `None`; the fallback cannot come.
                let at = pace.due(c.id, c.next_seq).unwrap_or(now);
                c.sent.push_back(at);
                c.next_seq += 1;
            }
            // The reply timeout counts from the last send, not from a due time that
            // may be long past.
            c.since = now;
        }
        if over {
            if self.conns[i].sent.is_empty() {
                return self.close(i);
            }
        } else if let Some(at) = wake {
            self.wake_at(i, at);
        }
        if n > 0 {
            self.flush(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_all_connections_take_turns_evenly() {
        let t0 = Instant::now();
        // 1,000 a second over 4 connections: each every 4 ms, one every 1 ms in all.
        let pace = Pace::new(1000.0, 4, t0);
        let at = |id, k| pace.due(id, k).unwrap() - t0;
        assert_eq!(at(0, 0), Duration::ZERO);
        assert_eq!(at(1, 0), Duration::from_millis(1));
        assert_eq!(at(3, 0), Duration::from_millis(3));
        assert_eq!(at(0, 1), Duration::from_millis(4));
        assert_eq!(at(2, 10), Duration::from_millis(42));
        // Hold: 20 connections, one name every 0.2 s each, is 100 a second; the first
        // names are spread over the first interval.
        let hold = Pace::new(20.0 / 0.2, 20, t0);
        let firsts: Vec<Duration> = (0..20).map(|id| hold.due(id, 0).unwrap() - t0).collect();
        assert!(
            firsts.iter().all(|d| *d < Duration::from_millis(200)),
            "{firsts:?}"
        );
        assert!(firsts.windows(2).all(|w| w[0] < w[1]), "{firsts:?}");
        assert_eq!(
            hold.due(7, 3).unwrap() - hold.due(7, 2).unwrap(),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn nothing_is_due_at_or_after_the_end() {
        let t0 = Instant::now();
        let mut pace = Pace::new(20.0 / 0.2, 20, t0);
        pace.begin(t0, Some(t0 + Duration::from_secs(1)));
        // Exactly five names a connection within one second.
        for id in 0..20 {
            let names = (0..).take_while(|&k| pace.due(id, k).is_some()).count();
            assert_eq!(names, 5, "connection {id}");
        }
        // A due time past what the clock holds never comes.
        let slow = Pace::new(1e-300, 1, t0);
        assert_eq!(slow.due(0, 1), None);
        assert_eq!(slow.due(0, 0), Some(t0));
    }

    #[test]
    fn timers_come_due_in_order() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut timers = Timers::default();
        assert_eq!(timers.next(), None);
        timers.push(ms(30), 3);
        timers.push(ms(10), 1);
        timers.push(ms(20), 2);
        assert_eq!(timers.next(), Some(ms(10)));
        assert_eq!(timers.pop_due(ms(5)), None);
        assert_eq!(timers.pop_due(ms(20)), Some(1));
        assert_eq!(timers.pop_due(ms(20)), Some(2));
        assert_eq!(timers.pop_due(ms(20)), None);
        assert_eq!(timers.next(), Some(ms(30)));
    }
}
