//! A worker: one `mio::Poll` driving its share of the connections.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::iter;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::ClientConnection;

use super::config::{Config, claim, connect_offset};
use super::fail::{Fail, Stage, classify, notice_kind};
use super::names::{lossy, strip_cr, write_name};
use super::source::connect_from;
use super::state::{Shared, Stats, Tally};
use super::tls;
use super::{TICK, WAKE};
use crate::protocol::ConnectionValues;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Not opened yet.
    Pending,
    Connecting,
    /// Connected, in the TLS handshake (`--tls`).
    Handshake,
    /// Connected (and through the handshake), waiting for the welcome line.
    Welcome,
    /// Welcome received, waiting for the start.
    Ready,
    Running,
    /// `exit` sent, waiting for the server to close.
    Closing,
    Done,
}

pub(super) struct Conn {
    /// Number among all connections: sets its start time and its names.
    pub(super) id: u64,
    pub(super) state: State,
    /// When the current state began (for the connect, handshake, welcome and close
    /// timeouts).
    pub(super) since: Instant,
    /// When the connect began: the handshake is timed from here.
    pub(super) opened: Instant,
    pub(super) stream: Option<TcpStream>,
    /// With `--tls`: the connection's TLS state, beside its socket.
    pub(super) tls: Option<Box<ClientConnection>>,
    /// The server's first bytes were looked at and can begin TLS.
    pub(super) peeked: bool,
    /// The handshake's time in ns and whether it resumed a session, counted once the
    /// welcome shows that the server took it.
    pub(super) handshake: Option<(u64, bool)>,
    pub(super) rbuf: Box<[u8]>,
    pub(super) rlen: usize,
    pub(super) wbuf: Vec<u8>,
    pub(super) wpos: usize,
    /// Send times of the names awaiting their reply, oldest first.
    pub(super) sent: VecDeque<Instant>,
    /// Number of the next name to send.
    pub(super) next_seq: u64,
    /// Its `{peer}` and `{local}`, when `--expect` shows them.
    pub(super) values: Option<Box<ConnectionValues>>,
}

pub(super) struct Worker {
    pub(super) index: usize,
    pub(super) cfg: Arc<Config>,
    pub(super) shared: Arc<Shared>,
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
    pub(super) tally: Tally,
    /// Scratch for the name whose reply is being checked.
    pub(super) name: Vec<u8>,
}

impl Worker {
    pub(super) fn new(
        index: usize,
        poll: Poll,
        cfg: Arc<Config>,
        shared: Arc<Shared>,
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
                values: None,
            })
            .collect();
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
            tally: Tally::new()?,
        })
    }

    pub(super) fn stats(&self) -> &Stats {
        &self.shared.stats[self.index]
    }

    pub(super) fn run(mut self) -> io::Result<Tally> {
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
            let next_due = self.start_due(now);
            if !self.started {
                if let Some(&start) = self.shared.start.get() {
                    self.go(start);
                }
            }
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
            let timeout = wake.saturating_duration_since(Instant::now());
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for ev in events.iter() {
                if ev.token() != WAKE {
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
            let offset = connect_offset(id, self.cfg.connect_rate);
            // A start past what the clock holds never comes, like a --duration that long.
            let due = self.shared.t0.checked_add(offset)?;
            if due > now {
                return Some(due);
            }
            self.next_start += 1;
            self.open(self.next_start - 1, now);
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
        let mut stream = match connect_from(self.cfg.addr, source) {
            Ok(s) => s,
            Err(e) => return self.fail(i, classify(&e, Stage::Connect), || e.to_string()),
        };
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("bench: TCP_NODELAY: {e}");
        }
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
            // The port is bound by the connect, though it is still in progress.
            match stream.local_addr() {
                Ok(here) => Some(Box::new(ConnectionValues::new(here, self.cfg.addr, 0))),
                Err(e) => return self.fail(i, classify(&e, Stage::Connect), || e.to_string()),
            }
        } else {
            None
        };
        let c = &mut self.conns[i];
        c.values = values;
        c.stream = Some(stream);
        c.rbuf = vec![0; self.cfg.read_cap].into_boxed_slice();
        c.wbuf = Vec::with_capacity(self.cfg.pipeline * (self.cfg.size + 1));
        c.sent = VecDeque::with_capacity(self.cfg.pipeline);
    }

    /// Every connection that has its welcome starts sending.
    pub(super) fn go(&mut self, start: Instant) {
        self.started = true;
        // A duration past what the clock can hold (`-d 1e19`) means no end but Ctrl-C.
        self.stop_at = self.cfg.duration.and_then(|d| start.checked_add(d));
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

    /// Duration mode: the time is up; no more names, idle connections close.
    pub(super) fn stop(&mut self) {
        self.stopped = true;
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.state == State::Running && c.sent.is_empty() {
                self.close(i);
            }
        }
    }

    pub(super) fn scan_timeouts(&mut self, now: Instant) {
        let timeout = self.cfg.timeout;
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            let waited = now.saturating_duration_since(c.since);
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
                    if c.sent
                        .front()
                        .is_some_and(|&t| now.saturating_duration_since(t) >= timeout) =>
                {
                    self.fail(i, Fail::ReplyTimeout, || {
                        format!("no reply after {timeout:?}")
                    });
                }
                State::Closing if waited >= self.cfg.close_grace => self.finish(i),
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
            match connect_status(stream) {
                Ok(false) => return,
                Ok(true) => {
                    c.state = if c.tls.is_some() {
                        State::Handshake
                    } else {
                        State::Welcome
                    };
                    c.since = Instant::now();
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
                let ns = now.saturating_duration_since(c.opened).as_nanos();
                c.handshake = Some((u64::try_from(ns).unwrap_or(u64::MAX), resumed));
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
                    return self.finish(i);
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

    /// Handles the complete lines in the read buffer and keeps the rest.
    pub(super) fn take_lines(&mut self, i: usize, now: Instant) -> Result<(), (Fail, String)> {
        let Worker {
            conns,
            tally,
            cfg,
            shared,
            index,
            setups,
            name,
            ..
        } = self;
        let stats = &shared.stats[*index];
        let c = &mut conns[i];
        let mut start = 0;
        let mut ok = 0;
        let mut ended = None;
        while let Some(len) = memchr::memchr(b'\n', &c.rbuf[start..c.rlen]) {
            let line = strip_cr(&c.rbuf[start..start + len]);
            start += len + 1;
            if c.state == State::Closing {
                // The farewell, or whatever else, is not checked.
                continue;
            }
            let notice = notice_kind(line);
            if let Some(kind) = notice.filter(|k| k.ends_connection()) {
                // The server closes next: one failure for this connection, not a
                // mismatch and then an EOF.
                let unanswered = c.sent.len();
                let detail = if kind == Fail::ServerShutdown {
                    format!("the server is shutting down ({unanswered} names unanswered)")
                } else if c.state == State::Welcome {
                    format!("{:?} instead of the welcome", lossy(line))
                } else {
                    format!("{:?} ({unanswered} names unanswered)", lossy(line))
                };
                ended = Some((kind, detail));
                break;
            }
            match c.state {
                State::Welcome => {
                    if let Some(kind) = notice {
                        return Err((kind, format!("{:?} instead of the welcome", lossy(line))));
                    }
                    c.state = State::Ready;
                    *setups -= 1;
                    if let Some((ns, resumed)) = c.handshake.take() {
                        tally.handshakes.saturating_record(ns);
                        tally.resumed += u64::from(resumed);
                        if tally.tls_params.is_none() {
                            tally.tls_params = c.tls.as_deref().map(tls::params);
                        }
                    }
                    tally.established += 1;
                    stats.established.fetch_add(1, Relaxed);
                    stats.settled.fetch_add(1, Relaxed);
                }
                State::Ready | State::Running => match c.sent.pop_front() {
                    Some(sent_at) => {
                        let seq = c.next_seq - c.sent.len() as u64 - 1;
                        name.clear();
                        write_name(name, c.id, seq, cfg.size);
                        if cfg.template.matches(line, name, c.values.as_deref()) {
                            ok += 1;
                            let ns = now.saturating_duration_since(sent_at).as_nanos();
                            tally
                                .hist
                                .saturating_record(u64::try_from(ns).unwrap_or(u64::MAX));
                            continue;
                        }
                        stats.errors.fetch_add(1, Relaxed);
                        // An `ERROR` line in place of the reply says why there is none.
                        match notice {
                            Some(kind) => tally.note(kind, || {
                                format!(
                                    "{:?} for the {}-byte name {:?}",
                                    lossy(line),
                                    name.len(),
                                    lossy(name)
                                )
                            }),
                            None => tally.note(Fail::ReplyMismatch, || {
                                format!(
                                    "expected {:?}, got {:?}",
                                    lossy(&cfg.template.render(name, c.values.as_deref())),
                                    lossy(line)
                                )
                            }),
                        }
                    }
                    None => {
                        stats.errors.fetch_add(1, Relaxed);
                        // A name's refusal with no name sent is as unexpected as any line.
                        let kind = match notice {
                            Some(Fail::ServerError) => Fail::ServerError,
                            _ => Fail::UnexpectedLine,
                        };
                        tally.note(kind, || {
                            format!("{:?} with no name awaiting a reply", lossy(line))
                        });
                    }
                },
                _ => {}
            }
        }
        c.rbuf.copy_within(start..c.rlen, 0);
        c.rlen -= start;
        if ok > 0 {
            tally.ok += ok;
            tally.last_reply = Some(now);
            stats.ok.fetch_add(ok, Relaxed);
        }
        ended.map_or(Ok(()), Err)
    }

    /// Sends names until `--pipeline` are awaiting replies (all in one write), or
    /// starts closing when there is nothing left to send or await.
    pub(super) fn fill(&mut self, i: usize) {
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
            self.finish(i);
        }
    }

    pub(super) fn on_eof(&mut self, i: usize) {
        if self.conns[i].state == State::Closing {
            self.finish(i);
        } else {
            self.fail(i, Fail::Eof, || "the server closed the connection".into());
        }
    }

    pub(super) fn on_io_error(&mut self, i: usize, e: &io::Error) {
        let state = self.conns[i].state;
        if state == State::Closing {
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
        if matches!(
            state,
            State::Pending | State::Connecting | State::Handshake | State::Welcome
        ) {
            stats.settled.fetch_add(1, Relaxed);
        }
        if matches!(state, State::Connecting | State::Handshake | State::Welcome) {
            self.setups -= 1;
        }
        self.finish(i);
    }

    /// Drops the connection and its buffers.
    pub(super) fn finish(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.state == State::Done {
            return;
        }
        if let Some(mut stream) = c.stream.take() {
            // Closing the socket removes it from the poll set anyway.
            let _ = self.poll.registry().deregister(&mut stream);
        }
        c.state = State::Done;
        c.tls = None;
        c.handshake = None;
        c.rbuf = Box::default();
        c.rlen = 0;
        c.wbuf = Vec::new();
        c.wpos = 0;
        c.sent = VecDeque::new();
        self.live -= 1;
    }
}

/// Whether a non-blocking connect has completed (the check mio documents).
pub(super) fn connect_status(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use crate::bench::names::Template;
    use crate::bench::{CLOSE_GRACE, READ_BUF};
    use crate::protocol::{Notice, Settings};

    /// A worker with one connection in `state`, `awaiting` names sent (`--size 8`),
    /// and no socket: lines are put straight into its read buffer.
    fn worker(state: State, awaiting: u64, expect: &str) -> Worker {
        let template = Template::parse(expect).unwrap();
        let cfg = Config {
            addr: "127.0.0.1:9".parse().unwrap(),
            sources: None,
            connections: 1,
            threads: 1,
            pipeline: 8,
            size: 8,
            read_cap: READ_BUF,
            template,
            timeout: Duration::from_secs(5),
            duration: None,
            messages: None,
            connect_rate: 0,
            setup_limit: 1,
            close_grace: CLOSE_GRACE,
            tls: None,
        };
        let shared = Shared {
            interrupted: Arc::new(AtomicBool::new(false)),
            t0: Instant::now(),
            start: OnceLock::new(),
            budget: None,
            primed: AtomicBool::new(true),
            stats: vec![Stats::default()],
        };
        let poll = Poll::new().unwrap();
        let mut w = Worker::new(0, poll, Arc::new(cfg), Arc::new(shared)).unwrap();
        w.setups = usize::from(state == State::Welcome);
        let c = &mut w.conns[0];
        c.state = state;
        c.rbuf = vec![0; READ_BUF].into_boxed_slice();
        c.sent = iter::repeat_n(Instant::now(), awaiting as usize).collect();
        c.next_seq = awaiting;
        w
    }

    /// Hands `lines` (each ended with CRLF) to the worker as if just read.
    fn receive(w: &mut Worker, lines: &[&[u8]]) -> Result<(), (Fail, String)> {
        let c = &mut w.conns[0];
        for line in lines {
            for part in [*line, b"\r\n"] {
                c.rbuf[c.rlen..c.rlen + part.len()].copy_from_slice(part);
                c.rlen += part.len();
            }
        }
        w.take_lines(0, Instant::now())
    }

    /// The expected reply to name number `seq` of the test connection.
    fn reply(seq: u64) -> Vec<u8> {
        let mut name = Vec::new();
        write_name(&mut name, 0, seq, 8);
        Template::parse("Hello, {}!").unwrap().render(&name, None)
    }

    fn notice(n: Notice) -> Vec<u8> {
        let settings = Settings {
            max_line: 4,
            ..Settings::default()
        };
        let mut line = settings.notice(n);
        line.truncate(line.len() - 2);
        line
    }

    fn count(w: &Worker, kind: Fail) -> u64 {
        w.tally.errors[kind as usize]
    }

    fn example(w: &Worker, kind: Fail) -> &str {
        w.tally
            .examples
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or("", |(_, s)| s.as_str())
    }

    #[test]
    fn a_name_refused_as_too_long_is_not_a_mismatch() {
        let mut w = worker(State::Running, 4, "Hello, {}!");
        let too_long = notice(Notice::LineTooLong);
        let r = receive(
            &mut w,
            &[
                &reply(0),
                &too_long,
                b"Hi, abcde0x2!",
                b"ERROR out of cheese",
            ],
        );
        assert_eq!(r, Ok(()));
        assert_eq!(w.tally.ok, 1);
        assert_eq!(count(&w, Fail::NameTooLong), 1);
        assert_eq!(count(&w, Fail::ReplyMismatch), 1);
        assert_eq!(count(&w, Fail::ServerError), 1);
        assert_eq!(
            example(&w, Fail::NameTooLong),
            "\"ERROR line too long (max 4 bytes), skipped\" for the 8-byte name \"abcde0x1\""
        );
        // The connection goes on, as the server's session does.
        assert_eq!(w.conns[0].state, State::Running);
        assert!(w.conns[0].sent.is_empty());
        assert_eq!(w.stats().errors.load(Relaxed), 3);
    }

    #[test]
    fn notices_that_close_count_once_for_the_connection() {
        let cases = [
            (Notice::Idle { secs: 1 }, Fail::IdleClosed),
            (Notice::Busy { connections: 1 }, Fail::ServerBusy),
            (Notice::BusySource { limit: 1 }, Fail::PerSourceLimit),
            (Notice::ShuttingDown, Fail::ServerShutdown),
        ];
        for (n, kind) in cases {
            for (state, awaiting) in [(State::Running, 2), (State::Ready, 0)] {
                let mut w = worker(state, awaiting, "Hello, {}!");
                let line = notice(n);
                let (got, detail) = receive(&mut w, &[&reply(0), &line]).unwrap_err();
                assert_eq!(got, kind, "{state:?}: {detail}");
                assert!(detail.contains("names unanswered"), "{detail}");
                if kind != Fail::ServerShutdown {
                    assert!(detail.contains(&lossy(&line)), "{detail}");
                }
                // Nothing else was counted: the caller counts `got` and drops the connection.
                assert_eq!(w.tally.errors.iter().sum::<u64>(), u64::from(awaiting == 0));
                assert_eq!(count(&w, Fail::ReplyMismatch), 0);
            }
        }
    }

    #[test]
    fn a_notice_instead_of_the_welcome_says_which() {
        let cases = [
            (
                &notice(Notice::Busy { connections: 0 })[..],
                Fail::ServerBusy,
            ),
            (
                &notice(Notice::BusySource { limit: 1 }),
                Fail::PerSourceLimit,
            ),
            (&notice(Notice::ShuttingDown), Fail::ServerShutdown),
            (b"ERROR out of cheese", Fail::ServerError),
        ];
        for (line, kind) in cases {
            let mut w = worker(State::Welcome, 0, "Hello, {}!");
            let (got, detail) = receive(&mut w, &[line]).unwrap_err();
            assert_eq!(got, kind, "{detail}");
            assert_eq!(w.tally.established, 0);
        }
        let mut w = worker(State::Welcome, 0, "Hello, {}!");
        assert_eq!(receive(&mut w, &[b"Welcome!"]), Ok(()));
        assert_eq!(w.conns[0].state, State::Ready);
        assert_eq!(w.tally.established, 1);
    }

    #[test]
    fn stray_lines_are_unexpected_and_closing_lines_unchecked() {
        let mut w = worker(State::Running, 0, "Hello, {}!");
        let too_long = notice(Notice::LineTooLong);
        assert_eq!(receive(&mut w, &[b"Hello, x!", &too_long]), Ok(()));
        assert_eq!(count(&w, Fail::UnexpectedLine), 2);

        let mut w = worker(State::Closing, 3, "Hello, {}!");
        let busy = notice(Notice::Busy { connections: 1 });
        assert_eq!(receive(&mut w, &[b"Bye!", &busy, b"ERROR x"]), Ok(()));
        assert_eq!(w.tally.errors.iter().sum::<u64>(), 0);
    }

    #[test]
    fn an_expected_reply_is_never_taken_for_a_notice() {
        // `--expect 'ERROR {}'` against `serve --reply 'ERROR {}'`.
        let mut w = worker(State::Running, 1, "ERROR {}");
        let mut name = Vec::new();
        write_name(&mut name, 0, 0, 8);
        let line = [&b"ERROR "[..], &name].concat();
        assert_eq!(receive(&mut w, &[&line]), Ok(()));
        assert_eq!(w.tally.ok, 1);
        assert_eq!(w.tally.errors.iter().sum::<u64>(), 0);
    }
}
