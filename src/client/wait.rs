//! How long a socket read may block, and which I/O errors are timeouts or resets.

use std::io::{self, ErrorKind};
use std::os::fd::AsFd;
use std::time::Duration;

use super::failure::Failure;

/// What a socket read should wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// No reply timeout: block.
    Forever,
    /// Block at most this long, then look again.
    For(Duration),
    /// The reply timeout has passed.
    Expired,
}

/// How long the next read may block. `last` is the latest activity (bytes sent or
/// received, or the connection) and `now` the time, both measured from one origin.
/// While nothing is due the read wakes every `timeout` to look again; a read started
/// then ends before a deadline that starts later, so the deadline is kept exactly.
pub(super) fn read_wait(
    timeout: Option<Duration>,
    due: bool,
    last: Duration,
    now: Duration,
) -> Wait {
    let Some(timeout) = timeout else {
        return Wait::Forever;
    };
    if !due {
        return Wait::For(timeout);
    }
    // Saturates: a deadline past what a Duration holds is never reached.
    let Some(deadline) = last.checked_add(timeout) else {
        return Wait::For(timeout);
    };
    match deadline.checked_sub(now) {
        Some(left) if !left.is_zero() => Wait::For(left.max(Duration::from_millis(1))),
        _ => Wait::Expired,
    }
}

/// Sets the socket's read timeout for a [`Wait`]; false when it has expired.
pub(super) fn arm(stream: &impl AsFd, wait: Wait) -> Result<bool, Failure> {
    let timeout = match wait {
        Wait::Expired => return Ok(false),
        Wait::Forever => None,
        Wait::For(d) => Some(d),
    };
    let socket = socket2::SockRef::from(stream);
    socket.set_read_timeout(timeout).map_err(Failure::Socket)?;
    Ok(true)
}

pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

pub(super) fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_wait_runs_only_while_something_is_due() {
        let s = Duration::from_secs;
        assert_eq!(read_wait(None, true, s(0), s(100)), Wait::Forever);
        assert_eq!(
            read_wait(Some(s(10)), false, s(0), s(100)),
            Wait::For(s(10))
        );
        assert_eq!(read_wait(Some(s(10)), true, s(95), s(100)), Wait::For(s(5)));
        assert_eq!(read_wait(Some(s(10)), true, s(90), s(100)), Wait::Expired);
        assert_eq!(read_wait(Some(s(10)), true, s(80), s(100)), Wait::Expired);
    }

    #[test]
    fn read_wait_saturates_instead_of_overflowing() {
        let s = Duration::from_secs;
        assert_eq!(
            read_wait(Some(Duration::MAX), true, s(5), s(6)),
            Wait::For(Duration::MAX)
        );
        assert_eq!(
            read_wait(Some(Duration::MAX), true, Duration::ZERO, s(6)),
            Wait::For(Duration::MAX - s(6))
        );
        assert_eq!(
            read_wait(Some(Duration::MAX), false, Duration::MAX, s(6)),
            Wait::For(Duration::MAX)
        );
    }
}
