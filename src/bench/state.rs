//! Counters shared by the coordinating thread and the workers.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use hdrhistogram::Histogram;

use super::HIST_MAX_NS;
use super::fail::Fail;
use super::tls::TlsParams;

/// What the coordinating thread and the workers share.
#[derive(Debug)]
pub(super) struct RunState {
    /// Set by Ctrl-C: stop opening connections and sending names, then report.
    pub(super) interrupted: Arc<AtomicBool>,
    /// When the run began: connection start times count from here.
    pub(super) t0: Instant,
    /// When every connection had settled: sending starts, the measured interval begins.
    pub(super) start: OnceLock<Instant>,
    /// Messages mode: names not yet handed to a connection.
    pub(super) budget: Option<AtomicU64>,
    /// Connections other than the first may start: always, except with `--tls-resume`
    /// until the first has settled, so that its session is there to resume.
    pub(super) primed: AtomicBool,
    /// One per worker.
    pub(super) stats: Vec<WorkerCounts>,
}

/// Live counters of one worker, for the progress line and the start barrier.
// Aligned so that two workers' counters never share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(super) struct WorkerCounts {
    pub(super) ok: AtomicU64,
    pub(super) errors: AtomicU64,
    /// Connections whose setup ended, with their welcome or with a failure.
    pub(super) settled: AtomicU64,
    pub(super) established: AtomicU64,
    /// Churn: connections that went all the way.
    pub(super) completed: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Totals {
    pub(super) ok: u64,
    pub(super) errors: u64,
    pub(super) settled: u64,
    pub(super) established: u64,
    pub(super) completed: u64,
}

impl RunState {
    pub(super) fn snapshot(&self) -> Totals {
        self.stats.iter().fold(Totals::default(), |s, w| Totals {
            ok: s.ok + w.ok.load(Relaxed),
            errors: s.errors + w.errors.load(Relaxed),
            settled: s.settled + w.settled.load(Relaxed),
            established: s.established + w.established.load(Relaxed),
            completed: s.completed + w.completed.load(Relaxed),
        })
    }
}

/// A worker's results, merged at the end.
pub(super) struct WorkerResults {
    pub(super) ok: u64,
    pub(super) errors: [u64; Fail::ALL.len()],
    /// The first detail seen of each kind of failure.
    pub(super) examples: Vec<(Fail, String)>,
    pub(super) established: u64,
    /// The fewest verified replies one connection got, of those that lasted to the end.
    pub(super) fewest_replies: Option<u64>,
    pub(super) last_reply: Option<Instant>,
    /// Reply latencies in nanoseconds.
    pub(super) hist: Histogram<u64>,
    /// Connect times (from the connect call to the connection), in nanoseconds.
    pub(super) connects: Histogram<u64>,
    /// `--tls`: handshake times (from the connection to the handshake's end) in
    /// nanoseconds, of the connections that got their welcome.
    pub(super) handshakes: Histogram<u64>,
    /// Times to the welcome (from the connect call), in nanoseconds.
    pub(super) first_replies: Histogram<u64>,
    /// Churn: connections that went all the way, and when the last one did.
    pub(super) completed: u64,
    pub(super) last_completed: Option<Instant>,
    /// How many of those resumed a session.
    pub(super) resumed: u64,
    /// What the first of them agreed on.
    pub(super) tls_params: Option<TlsParams>,
}

impl WorkerResults {
    pub(super) fn new() -> io::Result<WorkerResults> {
        Ok(WorkerResults {
            ok: 0,
            errors: [0; Fail::ALL.len()],
            examples: Vec::new(),
            established: 0,
            fewest_replies: None,
            last_reply: None,
            hist: histogram()?,
            connects: histogram()?,
            handshakes: histogram()?,
            first_replies: histogram()?,
            completed: 0,
            last_completed: None,
            resumed: 0,
            tls_params: None,
        })
    }

    pub(super) fn note(&mut self, kind: Fail, detail: impl FnOnce() -> String) {
        self.errors[kind as usize] += 1;
        if !self.examples.iter().any(|(k, _)| *k == kind) {
            let detail = detail();
            log::debug!("bench: {}: {detail}", kind.name());
            self.examples.push((kind, detail));
        }
    }

    pub(super) fn merge(&mut self, other: WorkerResults) -> io::Result<()> {
        self.ok += other.ok;
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors) {
            *mine += theirs;
        }
        for (kind, detail) in other.examples {
            if !self.examples.iter().any(|(k, _)| *k == kind) {
                self.examples.push((kind, detail));
            }
        }
        self.established += other.established;
        self.fewest_replies = match (self.fewest_replies, other.fewest_replies) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_reply = self.last_reply.max(other.last_reply);
        self.completed += other.completed;
        self.last_completed = self.last_completed.max(other.last_completed);
        self.resumed += other.resumed;
        if self.tls_params.is_none() {
            self.tls_params = other.tls_params;
        }
        for (mine, theirs) in [
            (&mut self.hist, &other.hist),
            (&mut self.connects, &other.connects),
            (&mut self.handshakes, &other.handshakes),
            (&mut self.first_replies, &other.first_replies),
        ] {
            mine.add(theirs).map_err(io::Error::other)?;
        }
        Ok(())
    }
}

/// An empty histogram of nanoseconds, up to an hour, to 3 significant digits.
fn histogram() -> io::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).map_err(io::Error::other)
}
