//! `bench --udp`: load over datagrams. Each of `-n` sockets is connected to the server
//! (its own source port; the kernel drops what other senders send it) and keeps up to
//! `--pipeline` datagrams in flight, one name each, unique on the socket, so that
//! replies are matched to their datagram in whatever order they come, and a second
//! reply is told from a first. A datagram unanswered within `--timeout` counts as lost
//! and its slot goes to the next, so loss does not stop the load; at the end those still
//! in flight get the rest of their timeout. A wrong reply fails the run and counts a
//! datagram lost at once (the one it names, or the oldest), so that a wrong `--expect`
//! does not hold every slot for the timeout. Loss (datagrams sent less replies matched)
//! is reported, and fails the run only when nothing at all came back.
//!
//! Here: the run, start to report. `plan` checks the flags, `window` keeps one socket's
//! datagrams, `judge` matches a reply to its datagram, `worker` drives the sockets,
//! `tally` counts, `report` prints.

mod judge;
mod plan;
mod report;
pub(super) mod tally;
mod window;
mod worker;

use std::io::{self, IsTerminal};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use mio::Poll;
use nix::sys::signal::Signal;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::progress::Progress;
use super::report::{latency_summary, print as print_report, terminal_chart};
use super::state::{RunState, WorkerCounts};
use super::{COORDINATOR_TICK, Outcome, hgrm};
use crate::config::BenchConfig;
use crate::protocol::ConnectionValues;
use crate::signals::install_blocking;
use plan::UdpPlan;
use report::UdpReport;
use tally::{Tally, UdpFail};
use worker::{Reach, Sock, Worker};

/// Runs `bench --udp`: as [`super::run`], over datagrams.
pub(super) fn run(args: &BenchConfig) -> io::Result<Outcome> {
    let plan = Arc::new(UdpPlan::from_args(args)?);
    let hgrm_file = match &args.hgrm {
        Some(path) => Some((hgrm::open(path)?, path)),
        None => None,
    };
    let interrupted = on_ctrl_c()?;
    let t0 = Instant::now();
    let mut shares: Vec<Vec<Sock>> = (0..plan.base.threads).map(|_| Vec::new()).collect();
    for id in 0..plan.base.connections {
        let source = (plan.base.sources.as_ref()).map(|s| s.for_connection(id as u64));
        let socket = open(plan.addr, source)?;
        let values = if plan.base.template.shows_addresses() {
            // The server's `{peer}` is this socket; its `{local}`, the address sent to.
            let here = socket.local_addr()?;
            Some(Box::new(ConnectionValues::new(here, plan.addr, 0)))
        } else {
            None
        };
        // The plan checked that the template has a name not after a `{conn}`.
        let name_offset = (plan.base.template)
            .name_offset(values.as_deref())
            .unwrap_or(0);
        let sock = Sock::new(socket, id as u64, values, name_offset, &plan, t0);
        shares[id % plan.base.threads].push(sock);
    }
    let start = Instant::now();
    let shared = Arc::new(RunState {
        interrupted,
        t0: start,
        start: OnceLock::from(start),
        budget: plan.base.messages.map(AtomicU64::new),
        primed: AtomicBool::new(true),
        stats: (0..plan.base.threads)
            .map(|_| WorkerCounts::default())
            .collect(),
    });
    let reach = Arc::new(Reach::default());
    let mut handles = Vec::with_capacity(plan.base.threads);
    for (index, socks) in shares.into_iter().enumerate() {
        let worker = Worker::new(
            index,
            Poll::new()?,
            Arc::clone(&plan),
            Arc::clone(&shared),
            Arc::clone(&reach),
            socks,
            start,
        )?;
        let handle = thread::Builder::new()
            .name(format!("bench-udp-{index}"))
            .spawn(move || worker.run())?;
        handles.push(handle);
    }

    let mut progress = Progress::new(io::stderr().is_terminal(), start, false);
    while !handles.iter().all(|h| h.is_finished()) {
        thread::sleep(COORDINATOR_TICK);
        progress.update(
            Instant::now(),
            Some(start),
            &shared.snapshot(),
            plan.base.connections,
        );
    }
    progress.finish();
    let interrupted = shared.interrupted.load(Relaxed);
    super::say_if_interrupted(interrupted)?;
    let total = super::join_workers(handles, Tally::new()?, Tally::merge)?;
    let finished = Instant::now();
    if !interrupted && total.received() == 0 {
        return Err(nothing_came_back(&plan, &total));
    }

    let report = UdpReport {
        addr: plan.addr,
        sockets: plan.base.connections,
        threads: plan.base.threads,
        pipeline: plan.base.pipeline,
        size: plan.base.size,
        duration_s: plan.base.duration.map(|d| d.as_secs_f64()),
        messages_target: plan.base.messages,
        rate: plan.base.rate,
        timeout_s: (plan.base.timeout != Duration::MAX).then(|| plan.base.timeout.as_secs_f64()),
        // While datagrams went out, and up to the last reply that matched: the wait for
        // the lost ones does not count, the time loss held the window full does.
        elapsed_s: (total.last_reply.max(total.last_sent).unwrap_or(finished))
            .saturating_duration_since(start)
            .as_secs_f64(),
        sent: total.sent,
        replies: total.matched,
        lost: total.lost,
        duplicates: total.duplicates,
        late: total.late,
        latency: latency_summary(&total.hist),
        errors: (UdpFail::ALL.iter())
            .map(|&k| (k, total.count(k)))
            .filter(|&(_, n)| n > 0)
            .collect(),
        examples: total.examples,
        chart: terminal_chart(args.json, &total.hist),
    };
    print_report(args.json.then(|| report.to_json()), &report.human())?;
    if let Some((file, path)) = hgrm_file {
        let text = hgrm::percentile_distribution(
            &total.hist,
            hgrm::TICKS_PER_HALF_DISTANCE,
            hgrm::NS_PER_MS,
        );
        hgrm::write(file, path, &text)?;
    }
    Ok(if interrupted {
        Outcome::Interrupted
    } else if report.ok() {
        Outcome::Passed
    } else {
        Outcome::Failed
    })
}

/// The first Ctrl-C ends the run early with a report of what was measured (the flag
/// returned); a second one exits at once.
fn on_ctrl_c() -> io::Result<Arc<AtomicBool>> {
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
    Ok(interrupted)
}

/// A non-blocking UDP socket connected to `addr`, bound to `source` (any local address
/// when `None`) and a port the kernel picks.
fn open(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<mio::net::UdpSocket> {
    let named = |e: io::Error, what: &str| {
        let fix = if matches!(e.raw_os_error(), Some(23 | 24)) {
            ": raise the limit (ulimit -n) or lower --connections"
        } else {
            ""
        };
        io::Error::new(e.kind(), format!("{what} a UDP socket to {addr}: {e}{fix}"))
    };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| named(e, "opening"))?;
    if let Some(ip) = source {
        // `--source` was checked at start-up: a failure now is named with the address.
        socket
            .bind(&SockAddr::from(SocketAddr::new(ip, 0)))
            .map_err(|e| named(e, &format!("binding --source {ip} for")))?;
    }
    socket
        .connect(&SockAddr::from(addr))
        .map_err(|e| named(e, "connecting"))?;
    socket.set_nonblocking(true)?;
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}

/// The error when not one datagram came back: what the sockets were told, or else the
/// likely causes and their fixes.
fn nothing_came_back(plan: &UdpPlan, total: &Tally) -> io::Error {
    let addr = plan.addr;
    if total.count(UdpFail::PortUnreachable) > 0 {
        return io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "nothing listens on udp {addr} (ICMP port unreachable): is `tcp-hello serve \
                 --udp-bind {addr}` running? Or give the server's address with --connect"
            ),
        );
    }
    if let Some((_, detail)) = total.examples.iter().find(|(k, _)| *k == UdpFail::Other) {
        return io::Error::other(format!("no datagram could be sent to udp {addr}: {detail}"));
    }
    let within = if plan.base.timeout == Duration::MAX {
        String::new()
    } else {
        format!(" within {} s", plan.base.timeout.as_secs_f64())
    };
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "no reply to any of the {} {} sent to udp {addr}{within}: nothing may listen on \
             that UDP port (start the server with --udp-bind {addr}), or the server's \
             --udp-rate limit drops them (--udp-rate 0 lifts it)",
            super::progress::group(total.sent),
            crate::plural::noun(total.sent, "datagram", "datagrams"),
        ),
    )
}
