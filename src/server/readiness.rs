//! Whether the server is ready for new connections, as `/readyz` says: the server's
//! phase, and the decision drawn from it, apart from the HTTP that tells it.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

/// Where the server is in its life, as far as readiness goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Set up, its listeners not yet open.
    Starting,
    /// Accepting and serving.
    Serving,
    /// A stop signal came: still accepting and serving for the drain delay, so that
    /// load balancers stop sending clients before the listeners close.
    Draining,
    /// Shutting down: no more accepts.
    Stopping,
}

/// The server's [`Phase`], shared by the threads that move it on and the metrics thread
/// that reads it. It only moves forward.
#[derive(Debug)]
pub(super) struct PhaseCell(AtomicU8);

impl PhaseCell {
    pub(super) fn new() -> PhaseCell {
        PhaseCell(AtomicU8::new(Phase::Starting as u8))
    }

    pub(super) fn get(&self) -> Phase {
        Self::phase(self.0.load(Ordering::Acquire))
    }

    /// Moves to `phase`, unless the server is past it already (a drain that began before
    /// the listeners were announced stays a drain); returns the phase it was in.
    pub(super) fn advance(&self, phase: Phase) -> Phase {
        Self::phase(self.0.fetch_max(phase as u8, Ordering::AcqRel))
    }

    fn phase(n: u8) -> Phase {
        match n {
            0 => Phase::Starting,
            1 => Phase::Serving,
            2 => Phase::Draining,
            _ => Phase::Stopping,
        }
    }
}

/// Why the server is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// Its listeners are not open yet.
    Starting,
    /// A stop signal came; it is draining.
    Draining,
    /// It is shutting down.
    Stopping,
    /// It holds as many connections as it may (`--unready-at-max`).
    Full {
        /// `--max-connections`.
        connections: usize,
    },
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotReady::Starting => f.write_str("starting"),
            NotReady::Draining => f.write_str("draining"),
            NotReady::Stopping => f.write_str("stopping"),
            NotReady::Full { connections } => {
                write!(f, "at --max-connections ({connections} connections)")
            }
        }
    }
}

/// Whether a server in `phase` holding `open` connections takes new ones; `full_at`:
/// with `--unready-at-max`, the limit at which it says it does not.
pub fn readiness(phase: Phase, open: usize, full_at: Option<usize>) -> Result<(), NotReady> {
    match phase {
        Phase::Starting => Err(NotReady::Starting),
        Phase::Draining => Err(NotReady::Draining),
        Phase::Stopping => Err(NotReady::Stopping),
        Phase::Serving => match full_at {
            Some(limit) if open >= limit => Err(NotReady::Full { connections: limit }),
            _ => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_while_serving_and_with_unready_at_max_below_the_limit() {
        assert_eq!(readiness(Phase::Serving, 5, None), Ok(()));
        assert_eq!(readiness(Phase::Serving, 1_000_000, None), Ok(()));
        assert_eq!(readiness(Phase::Serving, 1, Some(2)), Ok(()));
        assert_eq!(
            readiness(Phase::Serving, 2, Some(2)),
            Err(NotReady::Full { connections: 2 })
        );
        for (phase, why) in [
            (Phase::Starting, NotReady::Starting),
            (Phase::Draining, NotReady::Draining),
            (Phase::Stopping, NotReady::Stopping),
        ] {
            assert_eq!(readiness(phase, 0, None), Err(why));
            assert_eq!(readiness(phase, 0, Some(2)), Err(why));
        }
        assert_eq!(
            NotReady::Full { connections: 2 }.to_string(),
            "at --max-connections (2 connections)"
        );
    }

    #[test]
    fn the_phase_only_moves_forward() {
        let cell = PhaseCell::new();
        assert_eq!(cell.get(), Phase::Starting);
        assert_eq!(cell.advance(Phase::Draining), Phase::Starting);
        assert_eq!(cell.advance(Phase::Serving), Phase::Draining);
        assert_eq!(cell.get(), Phase::Draining);
        cell.advance(Phase::Stopping);
        assert_eq!(cell.get(), Phase::Stopping);
    }
}
