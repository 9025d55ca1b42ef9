//! Log rate limiting: at most one line per period for a kind of event, with a count of
//! the ones left out, so that a flood of refusals or errors cannot flood the log.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// At most one report per period, counting what was suppressed.
#[derive(Debug)]
pub struct LogLimit {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// Allows one report per `period`.
    pub const fn new(period: Duration) -> Self {
        LogLimit {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// What was suppressed, once a period has passed since the last report: the count
    /// a burst left behind that no later event reported.
    pub fn overdue(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if self.suppressed > 0 && now.duration_since(last) >= self.period => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
            _ => None,
        }
    }

    /// What was suppressed since the last report, reported now whatever the time.
    pub fn flush(&mut self) -> Option<u64> {
        (self.suppressed > 0).then(|| std::mem::take(&mut self.suppressed))
    }

    /// `Some(suppressed since the last report)` if a report is due now, else `None`.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// What `log` suppressed and has not reported: once its period has passed (`force`
/// false), or at once.
pub(super) fn unreported(log: &Mutex<LogLimit>, force: bool) -> Option<u64> {
    let mut log = lock(log);
    if force {
        log.flush()
    } else {
        log.overdue(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_what_it_suppresses() {
        let t0 = Instant::now();
        let mut r = LogLimit::new(Duration::from_secs(1));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0 + Duration::from_millis(10)), None);
        assert_eq!(r.allow(t0 + Duration::from_millis(20)), None);
        assert_eq!(r.allow(t0 + Duration::from_millis(1001)), Some(2));
        assert_eq!(r.allow(t0 + Duration::from_millis(1002)), None);
    }

    #[test]
    fn rate_limit_reports_what_a_burst_left_once_its_period_passed() {
        let t0 = Instant::now();
        let mut r = LogLimit::new(Duration::from_secs(1));
        assert_eq!(r.overdue(t0), None);
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(
            r.overdue(t0 + Duration::from_secs(5)),
            None,
            "nothing suppressed"
        );
        for ms in 1..50 {
            assert_eq!(r.allow(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(r.overdue(t0 + Duration::from_millis(500)), None, "too soon");
        assert_eq!(r.overdue(t0 + Duration::from_millis(1000)), Some(49));
        assert_eq!(
            r.overdue(t0 + Duration::from_secs(9)),
            None,
            "reported once"
        );
        assert_eq!(r.allow(t0 + Duration::from_millis(1500)), None);
        assert_eq!(r.flush(), Some(1));
        assert_eq!(r.flush(), None);
    }
}
