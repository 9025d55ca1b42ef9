//! `tcp-hello bench`: a load generator for the greeting protocol.
//!
//! `--threads` workers each drive a share of the connections with their own
//! `mio::Poll`: non-blocking sockets, one reused read buffer per connection, all
//! pipelined names of a connection in one write, one clock read per read or
//! write call. Connections are opened at a bounded rate with a bounded number of
//! setups (connect + welcome) in flight; once every connection has its welcome
//! or has failed, all of them start sending at the same instant, so the measured
//! interval is spent at full load. Every reply is checked byte for byte against
//! `--expect`. Names go as replies come (the closed loop), or with `--rate` and in
//! `--mode hold` when they are due (the open loop); `--mode churn` has each connection
//! slot connect, send one name and close, again and again, from the start.
//!
//! Here: the run, start to report. `config` checks the arguments, `names` makes
//! names and expected replies, `worker` drives connections, `schedule` is the open
//! loop, `churn` the churn mode, `tls` is `--tls` (set-up, a connection's TLS I/O, its
//! failures), `stream` a connection's socket (TCP or Unix, `--connect unix:PATH`),
//! `source` is `--source`, `state` holds the shared counters, `fail` names
//! failures, `progress` and `report` print, `hgrm` writes `--hgrm`. `udp` is `--udp`,
//! a run of its own over datagrams.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use mio::{Poll, Token, Waker};
use nix::sys::signal::Signal;

use crate::config::{BenchConfig, BenchMode};
use crate::signals::install_blocking;

mod churn;
mod config;
mod conn;
mod fail;
mod hgrm;
mod names;
mod progress;
mod replies;
mod report;
mod schedule;
mod source;
mod state;
mod stream;
mod tls;
mod udp;
mod worker;

use config::Plan;
use fail::{Fail, no_connection_error};
use progress::Progress;
use report::{HandshakeReport, Report, latency_summary, terminal_chart};
use state::{RunState, WorkerCounts, WorkerResults};
use worker::Worker;

/// Connection setups (connect + welcome) in flight at once over all workers:
/// few enough that a burst cannot overflow a 128-entry listen backlog.
const SETUPS_IN_FLIGHT: usize = 64;
/// Read buffer per connection, unless one expected reply needs more.
const READ_BUF: usize = 4096;
/// How often workers look for timed-out connections.
const TICK: Duration = Duration::from_millis(50);
/// How often the coordinating thread checks the start barrier and progress.
const COORDINATOR_TICK: Duration = Duration::from_millis(10);

/// With `--tls-resume`, how long the other connections wait, once the first has its
/// welcome, for a session to resume, from a server that may send none.
const SESSION_GRACE: Duration = Duration::from_secs(1);
/// Longest wait for the server to close a connection after `exit`.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Largest latency the histogram tells apart (an hour, in ns); larger ones are clamped.
const HIST_MAX_NS: u64 = 3_600_000_000_000;
/// Largest `--pipeline` × (`--size` + 1): the write buffer of one connection.
const MAX_BATCH_BYTES: usize = 64 << 20;
/// Largest expected reply to one name (`--expect` with `--size`): the read buffer of
/// one connection.
const MAX_REPLY_BYTES: usize = 256 << 20;
/// Largest `--connections` per local address: each needs its own local port, as all go
/// to one server address.
const MAX_CONNECTIONS: usize = 65_535;
/// Largest `--connections` with any `--source`: the usual most open files a process may
/// have (`fs.nr_open`), and a bound on the memory the connection list takes.
const MAX_ALL_CONNECTIONS: usize = 1 << 20;
/// Reserved for the worker's waker; connection tokens are indices into its list.
const WAKE: Token = Token(usize::MAX);
/// Reserved for the worker's alarm (see `schedule`).
const ALARM: Token = Token(usize::MAX - 1);

/// How a finished run went, for the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Ran to the end; every reply matched and nothing failed.
    Passed,
    /// Ran to the end with errors or mismatches.
    Failed,
    /// Ended early by Ctrl-C; the report covers the run so far.
    Interrupted,
}

/// Runs the benchmark described by `args`, prints progress and the report, and says
/// how it went.
///
/// Progress goes to stderr. The report goes to stdout, or with `--json` one JSON
/// object goes to stdout and the human report to stderr. It is an error when no
/// connection at all could be set up; the message names the likely cause and fix.
pub fn run(args: &BenchConfig) -> io::Result<Outcome> {
    if args.udp {
        return udp::run(args);
    }
    let cfg = Arc::new(Plan::from_args(args)?);
    let churn = cfg.mode == BenchMode::Churn;
    // Every file is opened before the run, so that one that cannot be written stops it
    // at once.
    let hgrm_files = match &args.hgrm {
        Some(path) => hgrm::Phase::ALL
            .iter()
            .filter(|p| cfg.tls.is_some() || **p != hgrm::Phase::Handshake)
            .map(|&p| {
                let path = p.path(path);
                hgrm::open(&path).map(|file| (p, file, path))
            })
            .collect::<io::Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    // The first Ctrl-C ends the run early with a report of what was measured; a second
    // one exits at once.
    let interrupted = Arc::new(AtomicBool::new(false));
    // Blocked while installing, so that a Ctrl-C in between is not lost.
    install_blocking(&[Signal::SIGINT], || {
        signal_hook::flag::register_conditional_shutdown(
            signal_hook::consts::SIGINT,
            130,
            Arc::clone(&interrupted),
        )?;
        signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&interrupted))
    })?;
    let t0 = Instant::now();
    let shared = Arc::new(RunState {
        interrupted,
        t0,
        // Churn has no start barrier: the run is its connections' setups.
        start: if churn {
            OnceLock::from(t0)
        } else {
            OnceLock::new()
        },
        budget: cfg.messages.map(AtomicU64::new),
        primed: AtomicBool::new(!cfg.tls.as_ref().is_some_and(|t| t.resume)),
        stats: (0..cfg.threads).map(|_| WorkerCounts::default()).collect(),
    });

    let mut wakers = Vec::with_capacity(cfg.threads);
    let mut handles = Vec::with_capacity(cfg.threads);
    for index in 0..cfg.threads {
        let poll = Poll::new()?;
        wakers.push(Waker::new(poll.registry(), WAKE)?);
        let worker = Worker::new(index, poll, Arc::clone(&cfg), Arc::clone(&shared))?;
        let handle = thread::Builder::new()
            .name(format!("bench-{index}"))
            .spawn(move || worker.run())?;
        handles.push(handle);
    }

    let mut progress = Progress::new(io::stderr().is_terminal(), t0, churn);
    let mut started = shared.start.get().copied();
    let mut first_settled = None;
    while !handles.iter().all(|h| h.is_finished()) {
        thread::sleep(COORDINATOR_TICK);
        let now = Instant::now();
        let snap = shared.snapshot();
        if !shared.primed.load(Relaxed) && snap.settled > 0 {
            // --tls-resume: the others go once the first connection's session is cached,
            // or, from a server that sends none, after a grace period.
            let settled = *first_settled.get_or_insert(now);
            let cached = cfg
                .tls
                .as_ref()
                .and_then(|t| t.sessions.as_ref())
                .is_none_or(|s| s.has_one());
            if cached || now.duration_since(settled) >= SESSION_GRACE {
                shared.primed.store(true, Relaxed);
                wake_all(&wakers);
            }
        }
        if started.is_none() && snap.settled >= cfg.connections as u64 {
            started = Some(now);
            // Workers also look at `start` on every tick, so a failed wake only delays them.
            let _ = shared.start.set(now);
            wake_all(&wakers);
        }
        progress.update(now, started, &snap, cfg.connections);
    }
    progress.finish();
    say_if_interrupted(shared.interrupted.load(Relaxed))?;
    let total = join_workers(handles, WorkerResults::new()?, WorkerResults::merge)?;
    let finished = Instant::now();
    if total.established == 0 {
        return Err(no_connection_error(&cfg.server, cfg.timeout, &total));
    }

    let start = started.unwrap_or(t0);
    // Up to the last good reply (in churn, the last connection through), so that closing
    // does not count; a run without one lasted until the workers stopped.
    let last = if churn {
        total.last_completed
    } else {
        total.last_reply
    };
    let report = Report {
        addr: cfg.server.to_string(),
        mode: cfg.mode,
        connections: cfg.connections,
        established: total.established,
        // Every churn connection sends one name.
        fewest_replies: total.fewest_replies.filter(|_| !churn),
        threads: cfg.threads,
        pipeline: cfg.pipeline,
        size: cfg.size,
        duration_s: cfg.duration.map(|d| d.as_secs_f64()),
        messages_target: cfg.messages,
        every_s: cfg.every.map(|d| d.as_secs_f64()),
        rate_target: cfg.rate,
        setup_s: start.duration_since(t0).as_secs_f64(),
        elapsed_s: last
            .unwrap_or(finished)
            .saturating_duration_since(start)
            .as_secs_f64(),
        messages: total.ok,
        completed: total.completed,
        latency: latency_summary(&total.hist),
        connect: latency_summary(&total.connects),
        first_reply: latency_summary(&total.first_replies),
        handshake: cfg.tls.as_ref().map(|_| HandshakeReport {
            count: total.handshakes.len(),
            resumed: total.resumed,
            latency: latency_summary(&total.handshakes),
            params: total.tls_params.clone(),
        }),
        errors: Fail::ALL
            .iter()
            .map(|&f| (f.name(), total.errors[f as usize]))
            .filter(|&(_, n)| n > 0)
            .collect(),
        examples: total.examples,
        chart: terminal_chart(args.json, &total.hist),
    };
    report::print(args.json.then(|| report.to_json()), &report.human())?;
    for (phase, file, path) in hgrm_files {
        let hist = match phase {
            hgrm::Phase::Reply => &total.hist,
            hgrm::Phase::Connect => &total.connects,
            hgrm::Phase::Handshake => &total.handshakes,
            hgrm::Phase::FirstReply => &total.first_replies,
        };
        let text =
            hgrm::percentile_distribution(hist, hgrm::TICKS_PER_HALF_DISTANCE, hgrm::NS_PER_MS);
        hgrm::write(file, &path, &text)?;
    }
    Ok(if shared.interrupted.load(Relaxed) {
        Outcome::Interrupted
    } else if report.ok() {
        Outcome::Passed
    } else {
        Outcome::Failed
    })
}

/// With Ctrl-C, says that the report covers the run so far.
fn say_if_interrupted(interrupted: bool) -> io::Result<()> {
    if interrupted {
        writeln!(
            io::stderr().lock(),
            "bench: interrupted; the report covers the run so far"
        )?;
    }
    Ok(())
}

/// Waits for every worker and merges their results into `total`.
fn join_workers<T>(
    handles: Vec<thread::JoinHandle<io::Result<T>>>,
    mut total: T,
    merge: impl Fn(&mut T, T) -> io::Result<()>,
) -> io::Result<T> {
    for handle in handles {
        let results = handle
            .join()
            .map_err(|_| io::Error::other("a bench worker thread panicked"))??;
        merge(&mut total, results)?;
    }
    Ok(total)
}

/// Wakes every worker from its poll; they also look on every tick, so a failed wake
/// only delays one.
fn wake_all(wakers: &[Waker]) {
    for waker in wakers {
        if let Err(e) = waker.wake() {
            log::debug!("waking a bench worker: {e}");
        }
    }
}
