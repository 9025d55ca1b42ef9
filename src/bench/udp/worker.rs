//! A UDP worker: one `mio::Poll` over its share of the sockets. Each socket keeps its
//! window full (or, with `--rate`, sends each datagram when it is due and a slot is
//! free); every datagram received is judged (`judge`) and counted. One reused receive
//! buffer and one name buffer per worker: nothing is allocated per datagram.

use std::io::{self, ErrorKind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Instant;

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use super::judge::{Expected, Judged};
use super::plan::UdpPlan;
use super::tally::{Tally, UdpFail};
use super::window::{Verdict, Window};
use crate::bench::config::claim;
use crate::bench::names::write_name;
use crate::bench::schedule::Pace;
use crate::bench::state::RunState;
use crate::protocol::ConnectionValues;

/// One socket and its datagrams.
pub(in crate::bench) struct Sock {
    socket: UdpSocket,
    /// Its number among all sockets: in its names, and its place in the `--rate` schedule.
    id: u64,
    /// Its addresses, when `--expect` shows them.
    values: Option<Box<ConnectionValues>>,
    /// Where the name starts in its replies.
    name_offset: usize,
    window: Window,
    /// `--messages`: datagrams claimed from the budget and not yet sent.
    credit: u64,
    /// The last send would have blocked: wait until it is writable.
    blocked: bool,
    /// Something came back: a later ICMP error does not end the socket.
    heard: bool,
    /// Closed after an error; its datagrams in flight were counted lost.
    dead: bool,
}

impl Sock {
    pub(in crate::bench) fn new(
        socket: UdpSocket,
        id: u64,
        values: Option<Box<ConnectionValues>>,
        name_offset: usize,
        plan: &UdpPlan,
        now: Instant,
    ) -> Sock {
        Sock {
            socket,
            id,
            values,
            name_offset,
            window: Window::new(plan.base.pipeline, plan.history, now),
            credit: 0,
            blocked: false,
            heard: false,
            dead: false,
        }
    }
}

/// Whether anything answers at the server's address, as all sockets together know it.
#[derive(Debug, Default)]
pub(in crate::bench) struct Reach {
    /// Some socket received something.
    heard: AtomicBool,
    /// Some socket got an ICMP port unreachable before it received anything.
    refused: AtomicBool,
}

impl Reach {
    /// Nothing listens there: refused, and never answered.
    fn nobody(&self) -> bool {
        self.refused.load(Relaxed) && !self.heard.load(Relaxed)
    }
}

pub(in crate::bench) struct Worker {
    index: usize,
    plan: Arc<UdpPlan>,
    shared: Arc<RunState>,
    reach: Arc<Reach>,
    poll: Poll,
    socks: Vec<Sock>,
    /// Sockets not dead.
    live: usize,
    /// `--rate`: when each datagram is due.
    pace: Option<Pace>,
    stop_at: Option<Instant>,
    /// No more datagrams go out (the duration is over, or Ctrl-C); those in flight
    /// get the rest of their timeout.
    stopping: bool,
    tally: Tally,
    /// Receive buffer: one byte more than the longest expected reply, so that a longer
    /// one shows as such.
    buf: Box<[u8]>,
    /// Scratch for a name sent or checked.
    name: Vec<u8>,
}

impl Worker {
    pub(in crate::bench) fn new(
        index: usize,
        poll: Poll,
        plan: Arc<UdpPlan>,
        shared: Arc<RunState>,
        reach: Arc<Reach>,
        socks: Vec<Sock>,
        start: Instant,
    ) -> io::Result<Worker> {
        // A duration past what the clock holds means no end but Ctrl-C.
        let stop_at = plan.base.duration.and_then(|d| start.checked_add(d));
        let pace = plan.base.rate.map(|rate| {
            let mut pace = Pace::new(rate, plan.base.connections as u64, start);
            pace.begin(start, stop_at);
            pace
        });
        Ok(Worker {
            index,
            live: socks.len(),
            stop_at,
            pace,
            buf: vec![0; plan.recv_len].into_boxed_slice(),
            name: Vec::with_capacity(plan.base.size),
            plan,
            shared,
            reach,
            poll,
            socks,
            stopping: false,
            tally: Tally::new()?,
        })
    }

    pub(in crate::bench) fn run(mut self) -> io::Result<Tally> {
        self.event_loop().map(|()| self.tally)
    }

    fn event_loop(&mut self) -> io::Result<()> {
        for (i, s) in self.socks.iter_mut().enumerate() {
            self.poll.registry().register(
                &mut s.socket,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
        }
        let mut events = Events::with_capacity(1024);
        let tick = self.plan.tick;
        let mut next_scan = Instant::now() + tick;
        // Every socket is filled at the start and after each scan for timeouts; between
        // them, a socket is refilled when something came back or it became writable.
        // With --rate, every socket is looked at on every turn, for its schedule.
        let mut fill_all = true;
        loop {
            if self.reach.nobody() {
                // One ICMP port unreachable says it for all: the others need not wait.
                for s in &mut self.socks {
                    self.tally.lost += s.window.give_up();
                }
                return Ok(());
            }
            let now = Instant::now();
            if !self.stopping
                && (self.shared.interrupted.load(Relaxed) || self.stop_at.is_some_and(|t| now >= t))
            {
                self.stopping = true;
            }
            if now >= next_scan {
                self.expire(now);
                next_scan = now + tick;
                fill_all = true;
            }
            let mut wake = next_scan;
            if !self.stopping {
                if fill_all || self.pace.is_some() {
                    for i in 0..self.socks.len() {
                        if let Some(due) = self.fill(i) {
                            wake = wake.min(due);
                        }
                    }
                    fill_all = false;
                }
                if let Some(stop) = self.stop_at {
                    wake = wake.min(stop);
                }
            }
            if self.finished() {
                return Ok(());
            }
            let timeout = wake.saturating_duration_since(Instant::now());
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                let i = ev.token().0;
                if i >= self.socks.len() {
                    continue;
                }
                if ev.is_writable() {
                    self.socks[i].blocked = false;
                }
                if ev.is_readable() || ev.is_error() {
                    self.drain(i);
                }
                if !self.stopping {
                    self.fill(i);
                }
            }
        }
    }

    /// Nothing is in flight and nothing more will be sent.
    fn finished(&self) -> bool {
        if self.live == 0 {
            return true;
        }
        if self.socks.iter().any(|s| s.window.in_flight() > 0) {
            return false;
        }
        let spent = (self.shared.budget.as_ref()).is_some_and(|b| b.load(Relaxed) == 0)
            && self.socks.iter().all(|s| s.credit == 0 || s.dead);
        self.stopping || spent
    }

    /// Counts lost what waited `--timeout`, on every socket.
    fn expire(&mut self, now: Instant) {
        let timeout = self.plan.base.timeout;
        for s in &mut self.socks {
            self.tally.lost += s.window.expire(now, timeout);
        }
    }

    /// Sends what socket `i` may send now; with `--rate`, returns when its next
    /// datagram is due if that is what holds it back.
    fn fill(&mut self, i: usize) -> Option<Instant> {
        let failed = {
            let Worker {
                socks,
                plan,
                shared,
                tally,
                name,
                pace,
                ..
            } = self;
            let s = &mut socks[i];
            loop {
                if s.dead || s.blocked || !s.window.has_room() {
                    return None;
                }
                let seq = s.window.next_seq();
                let now = Instant::now();
                let from = match pace {
                    Some(pace) => {
                        // None: due at or after the end, never.
                        let due = pace.due(s.id, seq)?;
                        if due > now {
                            return Some(due);
                        }
                        due
                    }
                    None => now,
                };
                if shared.budget.is_some() && s.credit == 0 {
                    let room = (plan.base.pipeline - s.window.in_flight()) as u64;
                    s.credit = claim(shared.budget.as_ref(), room);
                    if s.credit == 0 {
                        return None;
                    }
                }
                name.clear();
                write_name(name, s.id, seq, plan.base.size);
                match s.socket.send(name) {
                    Ok(_) => {
                        tally.lost += s.window.commit(now, from);
                        tally.sent += 1;
                        tally.last_sent = Some(now);
                        s.credit = s.credit.saturating_sub(1);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => s.blocked = true,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => break e,
                }
            }
        };
        self.io_error(i, &failed, "send");
        None
    }

    /// Receives and judges every datagram waiting on socket `i`.
    fn drain(&mut self, i: usize) {
        let (mut matched, mut mismatched) = (0, 0);
        loop {
            match self.receive(i) {
                Ok(Some(Judged::Reply(Verdict::Match { .. }))) => matched += 1,
                Ok(Some(Judged::Mismatch { .. })) => mismatched += 1,
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.io_error(i, &e, "receive");
                    if self.socks[i].dead {
                        break;
                    }
                }
            }
        }
        let stats = &self.shared.stats[self.index];
        if matched > 0 {
            stats.ok.fetch_add(matched, Relaxed);
        }
        if mismatched > 0 {
            stats.errors.fetch_add(mismatched, Relaxed);
        }
    }

    /// Receives one datagram on socket `i`, judges and counts it; `None` when there is
    /// none (or the socket is closed).
    fn receive(&mut self, i: usize) -> io::Result<Option<Judged>> {
        let Worker {
            socks,
            plan,
            tally,
            buf,
            name,
            reach,
            ..
        } = self;
        let s = &mut socks[i];
        if s.dead {
            return Ok(None);
        }
        let n = match s.socket.recv(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        };
        let now = Instant::now();
        if !s.heard {
            s.heard = true;
            reach.heard.store(true, Relaxed);
        }
        let expected = Expected {
            template: &plan.base.template,
            conn: s.id,
            size: plan.base.size,
            name_offset: s.name_offset,
            values: s.values.as_deref(),
        };
        let reply = &buf[..n];
        let judged = expected.judge(reply, &mut s.window, name);
        match judged {
            Judged::Reply(Verdict::Match { from }) => {
                let ns = now.saturating_duration_since(from).as_nanos();
                tally
                    .hist
                    .saturating_record(u64::try_from(ns).unwrap_or(u64::MAX));
                tally.matched += 1;
                tally.last_reply = Some(now);
            }
            Judged::Reply(Verdict::Duplicate) => tally.duplicates += 1,
            // `judge` gives no unsent verdict: that is a mismatch.
            Judged::Reply(Verdict::Late | Verdict::Unsent) => tally.late += 1,
            Judged::Mismatch { seq } => {
                let window = &s.window;
                tally.note(UdpFail::ReplyMismatch, || {
                    expected.mismatch_detail(reply, seq, window)
                });
                tally.lost += s.window.lose(seq);
            }
        }
        Ok(Some(judged))
    }

    /// A send or receive of socket `i` failed. An ICMP error (a port unreachable shows as
    /// ECONNREFUSED) on a socket that has heard nothing yet ends it: nothing answers
    /// there. Later, it is counted and the socket goes on, as over a network that loses
    /// some datagrams.
    fn io_error(&mut self, i: usize, e: &io::Error, what: &str) {
        let addr = self.plan.addr;
        let (kind, detail) = if e.kind() == ErrorKind::ConnectionRefused {
            (
                UdpFail::PortUnreachable,
                format!("nothing listens on udp {addr} (ICMP port unreachable)"),
            )
        } else {
            (UdpFail::Other, format!("{what}: {e}"))
        };
        self.tally.note(kind, || detail);
        self.shared.stats[self.index].errors.fetch_add(1, Relaxed);
        let s = &mut self.socks[i];
        if s.heard {
            return;
        }
        if kind == UdpFail::PortUnreachable {
            self.reach.refused.store(true, Relaxed);
        }
        s.dead = true;
        self.tally.lost += s.window.give_up();
        self.live -= 1;
        if let Err(e) = self.poll.registry().deregister(&mut s.socket) {
            log::debug!("bench: deregistering a UDP socket: {e}");
        }
    }
}
