//! Checking what the server sent: every complete line is the welcome, a reply compared
//! byte for byte with the one expected, or a notice that says why there is none.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::conn::State;
use super::fail::{Fail, notice_kind};
use super::names::{lossy, strip_cr, write_name};
use super::tls;
use super::worker::{Worker, nanos};

impl Worker {
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
            churn,
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
                    // In churn the connection's one name goes at once; the others wait
                    // for the start.
                    c.state = if *churn { State::Running } else { State::Ready };
                    *setups -= 1;
                    tally
                        .first_replies
                        .saturating_record(nanos(now.saturating_duration_since(c.opened)));
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
                        c.good = false;
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
                        c.good = false;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::iter;
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, OnceLock};
    use std::time::Duration;

    use mio::Poll;

    use crate::bench::config::Plan;
    use crate::bench::names::Template;
    use crate::bench::state::{RunState, WorkerCounts};
    use crate::bench::{CLOSE_GRACE, READ_BUF};
    use crate::protocol::{Notice, Settings};

    /// A worker with one connection in `state`, `awaiting` names sent (`--size 8`),
    /// and no socket: lines are put straight into its read buffer.
    fn worker(state: State, awaiting: u64, expect: &str) -> Worker {
        let template = Template::parse(expect).unwrap();
        let cfg = Plan {
            server: crate::bench::stream::Endpoint::Tcp("127.0.0.1:9".parse().unwrap()),
            sources: None,
            connections: 1,
            mode: crate::config::BenchMode::Pingpong,
            rate: None,
            every: None,
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
        let shared = RunState {
            interrupted: Arc::new(AtomicBool::new(false)),
            t0: Instant::now(),
            start: OnceLock::new(),
            budget: None,
            primed: AtomicBool::new(true),
            stats: vec![WorkerCounts::default()],
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
