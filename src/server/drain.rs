//! Draining (`--drain-delay`): on a stop signal the server says it is not ready
//! (`/readyz`) and goes on accepting and serving for the delay, so that load balancers
//! (Kubernetes' endpoints controller and kube-proxy) stop sending clients before the
//! listeners close; then the usual shutdown ([`super::shutdown`]).

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::Instant;

use log::{info, warn};

use super::readiness::Phase;
use super::{ServerState, shutdown};

/// The drain delay under way, if any.
#[derive(Debug, Default)]
pub(super) struct Drain {
    /// The delay is running: the server has not begun to shut down yet.
    delaying: Mutex<bool>,
    /// Signalled when the delay is cut short.
    cut: Condvar,
}

/// Begins draining: not ready from now on; after the drain delay (at once without one),
/// shutdown. Only the first call does anything.
pub(super) fn begin(state: &Arc<ServerState>) {
    if state.phase.advance(Phase::Draining) >= Phase::Draining {
        return;
    }
    let delay = state.config.drain_delay;
    if delay.is_zero() {
        shutdown::stop(state);
        return;
    }
    *lock(&state.drain) = true;
    info!(
        "draining: /readyz answers 503; serving on for {} s, then shutting down",
        delay.as_secs()
    );
    let waiting = Arc::clone(state);
    let spawned = thread::Builder::new().name("drain".into()).spawn(move || {
        wait(&waiting.drain, Instant::now().checked_add(delay));
        shutdown::stop(&waiting);
    });
    if let Err(e) = spawned {
        warn!("cannot start a thread to time the drain delay ({e}); shutting down now");
        *lock(&state.drain) = false;
        shutdown::stop(state);
    }
}

/// Waits until `deadline` (for ever without one) or until the delay is cut short.
fn wait(drain: &Drain, deadline: Option<Instant>) {
    let mut delaying = lock(drain);
    while *delaying {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        delaying = match left {
            Some(left) if left.is_zero() => break,
            Some(left) => {
                drain
                    .cut
                    .wait_timeout(delaying, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => drain
                .cut
                .wait(delaying)
                .unwrap_or_else(PoisonError::into_inner),
        };
    }
    *delaying = false;
}

/// Ends the drain delay now, if it is running (the shutdown then begins); whether it was.
pub(super) fn cut_short(drain: &Drain) -> bool {
    let mut delaying = lock(drain);
    let was = *delaying;
    *delaying = false;
    drain.cut.notify_all();
    was
}

/// Whether the drain delay is running.
pub(super) fn delaying(drain: &Drain) -> bool {
    *lock(drain)
}

fn lock(drain: &Drain) -> std::sync::MutexGuard<'_, bool> {
    // One flag, assigned whole: consistent even after a panic elsewhere.
    crate::sync::lock(&drain.delaying)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_delay_ends_at_its_deadline_or_when_cut_short() {
        let drain = Arc::new(Drain::default());
        *lock(&drain) = true;
        let started = Instant::now();
        wait(&drain, Some(started + Duration::from_millis(50)));
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(!*lock(&drain));

        // Without a deadline only the cut ends it, whether it comes before the wait or in it.
        *lock(&drain) = true;
        assert!(delaying(&drain));
        let waiting = Arc::clone(&drain);
        let waiter = thread::spawn(move || wait(&waiting, None));
        assert!(cut_short(&drain));
        waiter.join().unwrap();
        assert!(!delaying(&drain));
        assert!(!cut_short(&drain), "nothing left to cut");
    }
}
