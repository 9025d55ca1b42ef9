//! `--mode churn`: each of the `--connections` slots loops through a connection's whole
//! life (connect, TLS handshake, welcome, one name, its reply, `exit`, the server's
//! close) and then begins the next one: at once, or when it is due with `--rate`.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::config::claim;
use super::conn::State;
use super::names::write_name;
use super::worker::Worker;

impl Worker {
    /// Begins slot `i`'s next connection, unless the run is over or the budget of
    /// `--messages` (connections, in churn) is spent.
    pub(super) fn begin_cycle(&mut self, i: usize) {
        if self.stopped || self.interrupted || claim(self.shared.budget.as_ref(), 1) == 0 {
            return self.finish(i);
        }
        let c = &mut self.conns[i];
        // A connection's name is numbered by the connection, sent or not.
        c.next_seq = c.cycles;
        c.cycles += 1;
        c.good = true;
        self.open(i, Instant::now());
    }

    /// `fill` in churn: the connection's one name once it has its welcome; `exit` once
    /// that has its reply.
    pub(super) fn fill_churn(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let records = c.tls.as_ref().is_some_and(|t| t.wants_write());
        if c.state != State::Running || c.wpos < c.wbuf.len() || records {
            return;
        }
        if c.next_seq < c.cycles && !self.interrupted {
            c.wbuf.clear();
            c.wpos = 0;
            write_name(&mut c.wbuf, c.id, c.next_seq, self.cfg.size);
            c.wbuf.push(b'\n');
            c.next_seq += 1;
            c.sent.push_back(Instant::now());
            self.flush(i);
        } else if c.sent.is_empty() {
            self.close(i);
        }
    }

    /// Slot `i`'s connection is over: closed by the server after `exit`
    /// (`by_server`), or failed (counted already). It counts as completed when it went
    /// all the way; then the slot's next connection begins, now or when it is due.
    pub(super) fn end_cycle(&mut self, i: usize, by_server: bool) {
        let c = &self.conns[i];
        let answered = c.next_seq == c.cycles && c.sent.is_empty();
        if by_server && c.good && answered {
            let now = Instant::now();
            self.tally.completed += 1;
            self.tally.last_completed = Some(now);
            self.shared.stats[self.index]
                .completed
                .fetch_add(1, Relaxed);
        }
        self.release(i);
        self.conns[i].state = State::Pending;
        if self.stopped || self.interrupted {
            return self.finish(i);
        }
        let at = match self.pace {
            Some(pace) => pace.due(self.conns[i].id, self.conns[i].cycles),
            None => Some(Instant::now()),
        };
        match at {
            // Through the timers, never at once: a connect that fails at once would
            // otherwise begin the next one inside this call, and so on.
            Some(at) => self.wake_at(i, at),
            None => self.finish(i),
        }
    }
}
