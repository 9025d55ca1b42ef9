//! A worker: one `mio::Poll` driving its share of the connections through their
//! states (see `conn`); what they receive is checked in `replies`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::iter;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use mio::event::Event;
use mio::{Events, Interest, Poll, Token};

use super::config::{Plan, claim, connect_offset};
use super::conn::{Conn, State};
use super::fail::{Fail, Stage, classify};
use super::names::write_name;
use super::schedule::{Alarm, Pace, Timers};
use super::source::connect_from;
use super::state::{RunState, WorkerCounts, WorkerResults};
use super::stream::{Endpoint, Stream};
use super::tls;
use super::{ALARM, TICK, WAKE};
use crate::config::BenchMode;
use crate::protocol::ConnectionValues;

pub(super) struct Worker {
    pub(super) index: usize,
    pub(super) cfg: Arc<Plan>,
    pub(super) shared: Arc<RunState>,
    pub(super) poll: Poll,
    pub(super) conns: Vec<Conn>,
    /// Connections before this index have been opened.
    pub(super) next_start: usize,
    /// Setups in flight.
    pub(super) setups: usize,
    /// Connections not yet `Done`.
    pub(super) live: usize,
    pub(super) started: bool,
    pub(super) stop_at: Option<Instant>,
    pub(super) stopped: bool,
    /// The interruption has been acted on.
    pub(super) interrupted: bool,
    pub(super) tally: WorkerResults,
    /// Scratch for the name whose reply is being checked.
    pub(super) name: Vec<u8>,
    /// `--mode churn`.
    pub(super) churn: bool,
    /// Names (in churn, connections) go out on a schedule, not as replies come: churn,
    /// or a rate.
    pub(super) open_loop: bool,
    /// The schedule, with a rate.
    pub(super) pace: Option<Pace>,
    pub(super) timers: Timers,
    /// With a rate: wakes the poll at the next timer.
    pub(super) alarm: Option<Alarm>,
}

impl Worker {
    pub(super) fn new(
        index: usize,
        poll: Poll,
        cfg: Arc<Plan>,
        shared: Arc<RunState>,
    ) -> io::Result<Worker> {
        let now = Instant::now();
        let conns: Vec<Conn> = (index..cfg.connections)
            .step_by(cfg.threads)
            .map(|id| Conn {
                id: id as u64,
                state: State::Pending,
                since: now,
                opened: now,
                stream: None,
                tls: None,
                peeked: false,
                handshake: None,
                rbuf: Box::default(),
                rlen: 0,
                wbuf: Vec::new(),
                wpos: 0,
                sent: VecDeque::new(),
                next_seq: 0,
                cycles: 0,
                good: false,
                timer: false,
                values: None,
            })
            .collect();
        let churn = cfg.mode == BenchMode::Churn;
        let pace = cfg
            .rate
            .map(|rate| Pace::new(rate, cfg.connections as u64, shared.t0));
        let alarm = match pace {
            Some(_) => Some(Alarm::new(poll.registry(), ALARM)?),
            None => None,
        };
        Ok(Worker {
            index,
            live: conns.len(),
            conns,
            name: Vec::with_capacity(cfg.size),
            cfg,
            shared,
            poll,
            next_start: 0,
            setups: 0,
            started: false,
            stop_at: None,
            stopped: false,
            interrupted: false,
            tally: WorkerResults::new()?,
            churn,
            open_loop: churn || pace.is_some(),
            pace,
            timers: Timers::default(),
            alarm,
        })
    }

    pub(super) fn stats(&self) -> &WorkerCounts {
        &self.shared.stats[self.index]
    }

    pub(super) fn run(mut self) -> io::Result<WorkerResults> {
        let result = self.event_loop();
        // Count every connection as settled even if the loop failed, so the
        // other workers are not kept waiting at the start barrier.
        self.stats().settled.store(self.conns.len() as u64, Relaxed);
        result.map(|()| self.tally)
    }

    pub(super) fn event_loop(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_scan = Instant::now() + TICK;
        while self.live > 0 {
            let now = Instant::now();
            if !self.interrupted && self.shared.interrupted.load(Relaxed) {
                self.interrupt();
            }
            // Before opening: in churn the run starts at once, and its schedule with it.
            if !self.started {
                if let Some(&start) = self.shared.start.get() {
                    self.go(start);
                }
            }
            let next_due = self.start_due(now);
            self.fire_timers(now);
            if !self.stopped && self.stop_at.is_some_and(|t| now >= t) {
                self.stop();
            }
            if now >= next_scan {
                self.scan_timeouts(now);
                next_scan = now + TICK;
            }
            if self.live == 0 {
                break;
            }
            let mut wake = next_scan;
            if let Some(due) = next_due {
                wake = wake.min(due);
            }
            if let Some(stop) = self.stop_at.filter(|_| !self.stopped) {
                wake = wake.min(stop);
            }
            if let Some(at) = self.timers.next() {
                wake = wake.min(at);
            }
            if let Some(alarm) = &mut self.alarm {
                alarm.set(self.timers.next(), Instant::now())?;
            }
            let timeout = wake.saturating_duration_since(Instant::now());
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                // The waker and the alarm only end the poll.
                if ev.token() != WAKE && ev.token() != ALARM {
                    self.on_event(ev.token().0, ev);
                }
            }
        }
        Ok(())
    }

    /// Opens the connections whose time has come, as far as the setup limit
    /// allows; returns when the next one is due if it is the time that holds it back.
    pub(super) fn start_due(&mut self, now: Instant) -> Option<Instant> {
        while self.next_start < self.conns.len() && self.setups < self.cfg.setup_limit {
            let id = self.conns[self.next_start].id;
            if id != 0 && !self.shared.primed.load(Relaxed) {
                // --tls-resume: the first connection's session is not cached yet. The
                // coordinating thread wakes the workers once it is.
                return None;
            }
            let due = match self.pace.filter(|_| self.churn) {
                Some(pace) => match pace.due(id, 0) {
                    Some(due) => due,
                    None => {
                        // Its first connection would be due after the end.
                        self.next_start += 1;
                        self.finish(self.next_start - 1);
                        continue;
                    }
                },
                // A start past what the clock holds never comes, like a --duration
                // that long.
                None => self
                    .shared
                    .t0
                    .checked_add(connect_offset(id, self.cfg.connect_rate))?,
            };
            if due > now {
                return Some(due);
            }
            self.next_start += 1;
            if self.churn {
                self.begin_cycle(self.next_start - 1);
            } else {
                self.open(self.next_start - 1, now);
            }
        }
        None
    }

    pub(super) fn open(&mut self, i: usize, now: Instant) {
        self.setups += 1;
        let c = &mut self.conns[i];
        c.state = State::Connecting;
        c.since = now;
        c.opened = now;
        if let Some(setup) = &self.cfg.tls {
            match setup.connect() {
                Ok(tls) => c.tls = Some(tls),
                Err(e) => {
                    let (kind, detail) = setup.failure(&e, true);
                    return self.fail(i, kind, || detail);
                }
            }
        }
        let source = self.cfg.sources.as_ref().map(|s| s.for_connection(c.id));
        let connected = match &self.cfg.server {
            Endpoint::Tcp(addr) => connect_from(*addr, source).map(|stream| {
                if let Err(e) = stream.set_nodelay(true) {
                    log::debug!("bench: TCP_NODELAY: {e}");
                }
                Stream::Tcp(stream)
            }),
            Endpoint::Unix(path) => mio::net::UnixStream::connect(path).map(Stream::Unix),
        };
        let mut stream = match connected {
            Ok(s) => s,
            Err(e) => {
                let kind = match (&self.cfg.server, e.kind()) {
                    // No socket file: nothing listens there, as a refused TCP connect says.
                    (Endpoint::Unix(_), io::ErrorKind::NotFound) => Fail::ConnectRefused,
                    _ => classify(&e, Stage::Connect),
                };
                return self.fail(i, kind, || e.to_string());
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.fail(i, classify(&e, Stage::Connect), || {
                format!("registering with poll: {e}")
            });
        }
        let values = if self.cfg.template.shows_addresses() {
            // The server's `{peer}` is this end; its `{local}`, the address connected to.
            match (&stream, &self.cfg.server) {
                // The port is bound by the connect, though it is still in progress.
                (Stream::Tcp(tcp), Endpoint::Tcp(addr)) => match tcp.local_addr() {
                    Ok(here) => Some(Box::new(ConnectionValues::new(here, *addr, 0))),
                    Err(e) => {
                        return self.fail(i, classify(&e, Stage::Connect), || e.to_string());
                    }
                },
                // Over a Unix socket, this process's credentials and the socket's path.
                (_, Endpoint::Unix(path)) => {
                    let me = format!("uid={},pid={}", nix::unistd::getuid(), std::process::id());
                    let path = crate::protocol::LocalName::new(path);
                    Some(Box::new(ConnectionValues::unix(me, path, 0)))
                }
                (Stream::Unix(_), Endpoint::Tcp(_)) => None,
            }
        } else {
            None
        };
        let c = &mut self.conns[i];
        c.values = values;
        c.stream = Some(stream);
        // Churn's next connection reuses the buffers of the last.
        if c.rbuf.is_empty() {
            c.rbuf = vec![0; self.cfg.read_cap].into_boxed_slice();
            c.wbuf = Vec::with_capacity(self.cfg.pipeline * (self.cfg.size + 1));
            c.sent = VecDeque::with_capacity(self.cfg.pipeline);
        }
    }

    /// Every connection that has its welcome starts sending.
    pub(super) fn go(&mut self, start: Instant) {
        self.started = true;
        // A duration past what the clock can hold (`-d 1e19`) means no end but Ctrl-C.
        self.stop_at = self.cfg.duration.and_then(|d| start.checked_add(d));
        if let Some(pace) = &mut self.pace {
            pace.begin(start, self.stop_at);
        }
        for i in 0..self.conns.len() {
            if self.conns[i].state == State::Ready {
                self.conns[i].state = State::Running;
                self.fill(i);
            }
        }
    }

    /// Ctrl-C: connections still being set up are dropped (not counted as failures),
    /// the others stop as at the end of the duration.
    pub(super) fn interrupt(&mut self) {
        self.interrupted = true;
        let shared = Arc::clone(&self.shared);
        let stats = &shared.stats[self.index];
        for i in 0..self.conns.len() {
            match self.conns[i].state {
                State::Pending | State::Connecting | State::Handshake | State::Welcome => {
                    stats.settled.fetch_add(1, Relaxed);
                    if self.conns[i].state != State::Pending {
                        self.setups -= 1;
                    }
                    self.finish(i);
                }
                State::Ready => self.close(i),
                _ => {}
            }
        }
        self.next_start = self.conns.len();
        self.stop();
    }

    /// Duration mode: the time is up; no more names, idle connections close. In churn
    /// the connections under way go through, and no other begins.
    pub(super) fn stop(&mut self) {
        self.stopped = true;
        if self.churn {
            self.next_start = self.conns.len();
            for i in 0..self.conns.len() {
                if self.conns[i].state == State::Pending {
                    self.finish(i);
                }
            }
            return;
        }
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.state == State::Running && c.sent.is_empty() {
                self.close(i);
            }
        }
    }

    pub(super) fn scan_timeouts(&mut self, now: Instant) {
        let timeout = self.cfg.timeout;
        // Paced names hold their due times; the wait for a reply counts from the last send.
        let paced = self.pace.is_some() && !self.churn;
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            let waited = now.saturating_duration_since(c.since);
            let awaited = if paced {
                (!c.sent.is_empty()).then_some(c.since)
            } else {
                c.sent.front().copied()
            };
            match c.state {
                State::Connecting if waited >= timeout => {
                    self.fail(i, Fail::ConnectTimeout, || {
                        format!("not connected after {timeout:?}")
                    });
                }
                State::Handshake if waited >= timeout => {
                    self.fail(i, Fail::TlsTimeout, || {
                        format!("the TLS handshake was not done after {timeout:?}")
                    });
                }
                State::Welcome if waited >= timeout => {
                    self.fail(i, Fail::WelcomeTimeout, || {
                        format!("no welcome line after {timeout:?}")
                    });
                }
                State::Running | State::Ready
                    if awaited.is_some_and(|t| now.saturating_duration_since(t) >= timeout) =>
                {
                    self.fail(i, Fail::ReplyTimeout, || {
                        format!("no reply after {timeout:?}")
                    });
                }
                State::Closing if waited >= self.cfg.close_grace => {
                    if self.churn {
                        let grace = self.cfg.close_grace;
                        self.fail(i, Fail::CloseTimeout, || {
                            format!("the server did not close the connection {grace:?} after exit")
                        });
                    } else {
                        self.finish(i);
                    }
                }
                _ => {}
            }
        }
    }

    pub(super) fn on_event(&mut self, i: usize, ev: &Event) {
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        if c.state == State::Connecting {
            let Some(stream) = c.stream.as_ref() else {
                return;
            };
            match stream.connected() {
                Ok(false) => return,
                Ok(true) => {
                    c.state = if c.tls.is_some() {
                        State::Handshake
                    } else {
                        State::Welcome
                    };
                    let now = Instant::now();
                    c.since = now;
                    self.tally
                        .connects
                        .saturating_record(nanos(now.saturating_duration_since(c.opened)));
                }
                Err(e) => return self.fail(i, classify(&e, Stage::Connect), || e.to_string()),
            }
        }
        let drain = ev.is_read_closed() || ev.is_error();
        if self.conns[i].state == State::Handshake {
            // Any event may move a handshake on, whichever way it waits.
            if self.handshake(i) {
                // What came with the server's last handshake bytes is in rustls already.
                self.on_readable(i, drain);
            }
            return;
        }
        if ev.is_readable() || drain {
            self.on_readable(i, drain);
        }
        if ev.is_writable() {
            self.on_writable(i);
        }
    }

    /// Moves the TLS handshake on; true once it is done (the state is then `Welcome`).
    pub(super) fn handshake(&mut self, i: usize) -> bool {
        let Conn {
            stream,
            tls,
            peeked,
            ..
        } = &mut self.conns[i];
        let (Some(stream), Some(tls)) = (stream.as_mut(), tls.as_deref_mut()) else {
            return false;
        };
        match tls::handshake(stream, tls, peeked) {
            Ok(false) => false,
            Ok(true) => {
                let resumed = tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                let c = &mut self.conns[i];
                let now = Instant::now();
                // From the end of the connect, which `since` holds: the phases do not overlap.
                c.handshake = Some((nanos(now.saturating_duration_since(c.since)), resumed));
                c.state = State::Welcome;
                c.since = now;
                true
            }
            Err(e) => {
                self.on_io_error(i, &e);
                false
            }
        }
    }

    /// Sends what waits: the rest of the names (then the next batch), or TLS records
    /// rustls queued when the socket was full.
    pub(super) fn on_writable(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let records = c.tls.as_ref().is_some_and(|t| t.wants_write());
        if c.state == State::Running {
            if (c.wpos < c.wbuf.len() || records) && self.flush(i) {
                self.fill(i);
            }
        } else if records {
            let (Some(stream), Some(tls)) = (c.stream.as_mut(), c.tls.as_deref_mut()) else {
                return;
            };
            if let Err(e) = tls::send(stream, tls) {
                self.on_io_error(i, &e);
            }
        }
    }

    /// Reads what has arrived and handles every complete line. `drain`: read
    /// until WouldBlock even after a short read (the peer closed or erred).
    pub(super) fn on_readable(&mut self, i: usize, drain: bool) {
        loop {
            let c = &mut self.conns[i];
            let Some(stream) = c.stream.as_mut() else {
                return;
            };
            let space = c.rbuf.len() - c.rlen;
            if space == 0 {
                if c.state == State::Closing {
                    return self.closed(i, false);
                }
                let cap = c.rbuf.len();
                let detail = if c.state == State::Welcome {
                    format!("no line end in the first {cap} bytes of the welcome")
                } else {
                    let expected = self.cfg.template.reply_len(self.cfg.size);
                    format!(
                        "no line end in the first {cap} bytes of a reply, which should be \
                         {expected} bytes"
                    )
                };
                return self.fail(i, Fail::ReplyTooLong, || detail);
            }
            let buf = &mut c.rbuf[c.rlen..];
            let got = match c.tls.as_deref_mut() {
                None => stream.read(buf).map(|n| (n, n < space)),
                Some(tls) => tls::read(stream, tls, buf),
            };
            match got {
                Ok((0, _)) => return self.on_eof(i),
                Ok((n, drained)) => {
                    c.rlen += n;
                    if let Err((kind, detail)) = self.take_lines(i, Instant::now()) {
                        return self.fail(i, kind, || detail);
                    }
                    // A short read emptied the socket: on the platforms mio's
                    // epoll/kqueue back-ends serve, new data raises a new event,
                    // so the read that would only say WouldBlock is skipped.
                    if drained && !drain {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.on_io_error(i, &e),
            }
        }
        if self.conns[i].state == State::Running {
            self.fill(i);
        }
    }

    /// Sends names until `--pipeline` are awaiting replies (all in one write), or
    /// starts closing when there is nothing left to send or await.
    pub(super) fn fill(&mut self, i: usize) {
        if self.open_loop {
            return if self.churn {
                self.fill_churn(i)
            } else {
                self.fill_paced(i)
            };
        }
        let c = &mut self.conns[i];
        let records = c.tls.as_ref().is_some_and(|t| t.wants_write());
        if c.state != State::Running || c.wpos < c.wbuf.len() || records {
            return;
        }
        let room = (self.cfg.pipeline - c.sent.len()) as u64;
        let n = if self.stopped || room == 0 {
            0
        } else {
            claim(self.shared.budget.as_ref(), room)
        };
        if n == 0 {
            if c.sent.is_empty() {
                self.close(i);
            }
            return;
        }
        c.wbuf.clear();
        c.wpos = 0;
        for _ in 0..n {
            write_name(&mut c.wbuf, c.id, c.next_seq, self.cfg.size);
            c.wbuf.push(b'\n');
            c.next_seq += 1;
        }
        // `n` ≤ room ≤ `--pipeline`, a usize.
        c.sent.extend(iter::repeat_n(Instant::now(), n as usize));
        self.flush(i);
    }

    /// Writes what is pending; true when all of it went out (with `--tls`, every
    /// record too).
    pub(super) fn flush(&mut self, i: usize) -> bool {
        loop {
            let c = &mut self.conns[i];
            let Some(stream) = c.stream.as_mut() else {
                return false;
            };
            if let Some(tls) = c.tls.as_deref_mut() {
                match tls::write(stream, tls, &c.wbuf[c.wpos..]) {
                    Ok((n, all_out)) => {
                        c.wpos += n;
                        if !all_out {
                            return false;
                        }
                        if c.wpos == c.wbuf.len() {
                            c.wbuf.clear();
                            c.wpos = 0;
                            return true;
                        }
                        // rustls's queue is out and it has more to take.
                        continue;
                    }
                    Err(e) => {
                        self.on_io_error(i, &e);
                        return false;
                    }
                }
            }
            if c.wpos == c.wbuf.len() {
                c.wbuf.clear();
                c.wpos = 0;
                return true;
            }
            match stream.write(&c.wbuf[c.wpos..]) {
                Ok(0) => {
                    self.fail(i, Fail::Other, || "the socket accepted no bytes".into());
                    return false;
                }
                Ok(n) => c.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.on_io_error(i, &e);
                    return false;
                }
            }
        }
    }

    /// Says `exit` and waits (briefly) for the server to close: closing first
    /// would make the kernel answer the farewell with a reset.
    pub(super) fn close(&mut self, i: usize) {
        let c = &mut self.conns[i];
        // Every name before `next_seq` was sent; those still in `sent` await their reply.
        let replies = c.next_seq - c.sent.len() as u64;
        self.tally.fewest_replies = Some(
            self.tally
                .fewest_replies
                .map_or(replies, |f| f.min(replies)),
        );
        c.state = State::Closing;
        c.since = Instant::now();
        let said = match (c.stream.as_mut(), c.tls.as_deref_mut()) {
            (Some(s), None) => matches!(s.write(b"exit\n"), Ok(5)),
            // Records the socket did not take go out on the next writable event.
            (Some(s), Some(tls)) => matches!(tls::write(s, tls, b"exit\n"), Ok((5, _))),
            (None, _) => false,
        };
        if !said {
            self.closed(i, false);
        }
    }

    /// After `exit`: the server closed the connection (`by_server`), or the bench stops
    /// waiting.
    pub(super) fn closed(&mut self, i: usize, by_server: bool) {
        if self.churn {
            self.end_cycle(i, by_server);
        } else {
            self.finish(i);
        }
    }

    pub(super) fn on_eof(&mut self, i: usize) {
        if self.conns[i].state == State::Closing {
            self.closed(i, true);
        } else {
            self.fail(i, Fail::Eof, || "the server closed the connection".into());
        }
    }

    pub(super) fn on_io_error(&mut self, i: usize, e: &io::Error) {
        let state = self.conns[i].state;
        if state == State::Closing && !self.churn {
            return self.finish(i);
        }
        let (kind, detail) = match (&self.cfg.tls, tls::cause(e), tls::plain_text(e)) {
            (_, _, Some(said)) => (Fail::TlsNotTls, said.to_string()),
            (Some(setup), Some(cause), _) => setup.failure(cause, state == State::Handshake),
            _ => (classify(e, Stage::Session), e.to_string()),
        };
        self.fail(i, kind, || detail);
    }

    /// Counts a failure and drops the connection.
    pub(super) fn fail(&mut self, i: usize, kind: Fail, detail: impl FnOnce() -> String) {
        let state = self.conns[i].state;
        if state == State::Done {
            return;
        }
        self.tally.note(kind, detail);
        let stats = &self.shared.stats[self.index];
        stats.errors.fetch_add(1, Relaxed);
        let setup = matches!(
            state,
            State::Pending | State::Connecting | State::Handshake | State::Welcome
        );
        if setup {
            stats.settled.fetch_add(1, Relaxed);
        }
        if matches!(state, State::Connecting | State::Handshake | State::Welcome) {
            self.setups -= 1;
        }
        if !self.churn || self.interrupted {
            self.finish(i);
        } else if self.conns[i].cycles == 1 && setup {
            // As a connection of the other modes that fails to set up: a slot whose first
            // connection never got its welcome gives up, so that a server that is not
            // there ends the run at once.
            self.finish(i);
        } else {
            self.end_cycle(i, false);
        }
    }

    /// Closes the connection's socket and drops its TLS state; the buffers stay.
    pub(super) fn release(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if let Some(mut stream) = c.stream.take() {
            // Closing the socket removes it from the poll set anyway.
            let _ = self.poll.registry().deregister(&mut stream);
        }
        c.tls = None;
        c.peeked = false;
        c.handshake = None;
        c.values = None;
        c.rlen = 0;
        c.wbuf.clear();
        c.wpos = 0;
        c.sent.clear();
    }

    /// Drops the connection and its buffers, for good.
    pub(super) fn finish(&mut self, i: usize) {
        if self.conns[i].state == State::Done {
            return;
        }
        self.release(i);
        let c = &mut self.conns[i];
        c.state = State::Done;
        c.rbuf = Box::default();
        c.wbuf = Vec::new();
        c.sent = VecDeque::new();
        self.live -= 1;
    }
}

/// A duration in nanoseconds, as the histograms count them.
pub(super) fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
