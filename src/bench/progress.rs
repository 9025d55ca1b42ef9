//! The progress line on stderr.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use super::state::Totals;

/// The progress line on stderr: rewritten in place on a terminal, otherwise
/// one plain line every few seconds.
pub(super) struct Progress {
    pub(super) tty: bool,
    pub(super) t0: Instant,
    pub(super) next: Instant,
    pub(super) last_ok: u64,
    pub(super) last_at: Instant,
    pub(super) shown: bool,
    /// `--mode churn`: connections completed are what counts.
    pub(super) churn: bool,
}

impl Progress {
    pub(super) fn new(tty: bool, t0: Instant, churn: bool) -> Progress {
        Progress {
            tty,
            t0,
            next: t0 + Self::every(tty),
            last_ok: 0,
            last_at: t0,
            shown: false,
            churn,
        }
    }

    pub(super) fn every(tty: bool) -> Duration {
        if tty {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(3)
        }
    }

    pub(super) fn update(
        &mut self,
        now: Instant,
        started: Option<Instant>,
        snap: &Totals,
        connections: usize,
    ) {
        if now < self.next {
            return;
        }
        self.next = now + Self::every(self.tty);
        let line = match started {
            None => setup_line(now - self.t0, snap, connections),
            Some(start) => {
                // Over the last interval, but not counting time spent connecting.
                let rate = per_sec(
                    self.count(snap) - self.last_ok,
                    now - self.last_at.max(start),
                );
                run_line(now - start, rate, snap, self.churn)
            }
        };
        self.last_ok = self.count(snap);
        self.last_at = now;
        self.shown = true;
        // Progress is cosmetic: a stderr that cannot be written to must not stop the run.
        let mut err = io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    /// What the rate counts: replies, or in churn connections completed.
    fn count(&self, snap: &Totals) -> u64 {
        if self.churn { snap.completed } else { snap.ok }
    }

    /// Clears the in-place line before the report.
    pub(super) fn finish(&mut self) {
        if self.tty && self.shown {
            let _ = write!(io::stderr().lock(), "\r\x1b[2K");
        }
    }
}

pub(super) fn setup_line(elapsed: Duration, snap: &Totals, connections: usize) -> String {
    format!(
        "bench {:.1}s: connecting {}/{} ({} up, {} failed)",
        elapsed.as_secs_f64(),
        group(snap.settled),
        group(connections as u64),
        group(snap.established),
        group(snap.settled - snap.established)
    )
}

pub(super) fn run_line(elapsed: Duration, rate: f64, snap: &Totals, churn: bool) -> String {
    let (per_s, count, what) = if churn {
        ("connections/s", snap.completed, "connections")
    } else {
        ("msg/s", snap.ok, "messages")
    };
    format!(
        "bench {:.1}s: {} {per_s}, {} {what}, {} errors",
        elapsed.as_secs_f64(),
        group(rate.round() as u64),
        group(count),
        group(snap.errors)
    )
}

pub(super) fn per_sec(n: u64, d: Duration) -> f64 {
    let secs = d.as_secs_f64();
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// `n` with thousands separators.
pub(super) fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn progress_lines() {
        let snap = Totals {
            ok: 12_345,
            errors: 1,
            settled: 10,
            established: 9,
            completed: 678,
        };
        assert_eq!(
            setup_line(Duration::from_millis(1500), &snap, 100),
            "bench 1.5s: connecting 10/100 (9 up, 1 failed)"
        );
        assert_eq!(
            run_line(Duration::from_secs(2), 4321.4, &snap, false),
            "bench 2.0s: 4,321 msg/s, 12,345 messages, 1 errors"
        );
        assert_eq!(
            run_line(Duration::from_secs(2), 339.0, &snap, true),
            "bench 2.0s: 339 connections/s, 678 connections, 1 errors"
        );
        assert_eq!(per_sec(10, Duration::ZERO), 0.0);
        assert_eq!(per_sec(10, Duration::from_millis(500)), 20.0);
    }
}
