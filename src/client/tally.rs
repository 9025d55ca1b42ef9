//! What the server's lines are, classified by their text and tallied against names sent;
//! in `--raw` mode, only its first and last lines, for the exit code.

use memchr::{memchr, memrchr};

use super::HEAD;
use super::failure::{Closed, ClosedWhen, Failure, Waiting};
use crate::protocol::{Framing, chunk_message};

/// What a line (or chunk) from the server is, by its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    /// `ERROR server busy ...` or `ERROR too many connections from your address ...`:
    /// the server refused the connection.
    Busy,
    /// `ERROR idle ...`: the server is closing an idle connection.
    Idle,
    /// `server shutting down`, or `server closing this connection, reconnect`
    /// (`--max-lifetime`): the server closes on its own account.
    ShuttingDown,
    /// Any other `ERROR ...` line, e.g. `ERROR line too long`.
    Error,
    /// Anything else: a welcome, a reply, a farewell.
    Text,
}

/// How the server's refusal under `--max-per-source` begins.
pub(super) const PER_SOURCE_BUSY: &[u8] = b"ERROR too many connections from your address";

/// Classifies a server line (without its ending; only its start matters).
fn classify_line(line: &[u8]) -> LineKind {
    if line.starts_with(b"ERROR server busy") || line.starts_with(PER_SOURCE_BUSY) {
        LineKind::Busy
    } else if line.starts_with(b"ERROR idle") {
        LineKind::Idle
    } else if line == b"server shutting down"
        || line == b"server closing this connection, reconnect"
    {
        LineKind::ShuttingDown
    } else if line.starts_with(b"ERROR ") {
        LineKind::Error
    } else {
        LineKind::Text
    }
}

/// The part a server line plays in the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Welcome,
    Busy,
    /// The answer to a name.
    Reply,
    /// An `ERROR` line answering a name.
    Refusal,
    /// A notice of the server's own (idle, shutting down, an unexpected error).
    Notice,
    /// Nothing was due: the farewell, or a line the client cannot place.
    Extra,
}

/// What the client knows from the lines received, compared with the names sent.
#[derive(Debug, Default)]
pub(super) struct Tally {
    welcomed: bool,
    /// Names answered, by a reply or a refusal.
    answered: u64,
    refused: u64,
    first_refusal: Option<String>,
    /// The last notice.
    notice: Option<String>,
    /// What the latest line was, once welcomed.
    last: Option<LineKind>,
    /// The connection ended by a reset.
    pub(super) reset: bool,
    /// The latest line was a reply.
    last_reply: bool,
    /// The latest line was cut off by the close: it had no line ending.
    pub(super) cut: bool,
    /// Lines that were not text (control bytes), and the replies before the first.
    garbled: u64,
    garbled_after: u64,
}

impl Tally {
    /// Accounts for one line, given how many names had been sent when it arrived.
    pub(super) fn line(&mut self, line: &[u8], sent: u64) -> Role {
        let kind = classify_line(line);
        if !self.welcomed {
            if kind == LineKind::Busy {
                return Role::Busy;
            }
            self.welcomed = true;
            return Role::Welcome;
        }
        let due = self.answered < sent;
        // Even where a reply is due: the notice can cross a name on the wire, or (in
        // chunk framing) stand where a reply would.
        self.last = Some(kind);
        let role = self.role(kind, due, line);
        self.last_reply = role == Role::Reply;
        role
    }

    /// Notes that the line about to be accounted for holds control bytes: not a line of
    /// the protocol.
    pub(super) fn garbled(&mut self) {
        if self.garbled == 0 {
            self.garbled_after = self.replies();
        }
        self.garbled += 1;
    }

    /// What a line after the welcome is, counted.
    fn role(&mut self, kind: LineKind, due: bool, line: &[u8]) -> Role {
        let text = || String::from_utf8_lossy(line).into_owned();
        match kind {
            LineKind::Idle | LineKind::ShuttingDown | LineKind::Busy => {
                self.notice = Some(text());
                Role::Notice
            }
            LineKind::Error if due => {
                self.answered += 1;
                self.refused += 1;
                self.first_refusal.get_or_insert_with(text);
                Role::Refusal
            }
            LineKind::Error => {
                self.notice = Some(text());
                Role::Notice
            }
            LineKind::Text if due => {
                self.answered += 1;
                Role::Reply
            }
            LineKind::Text => Role::Extra,
        }
    }

    /// Whether something is due from the server.
    pub(super) fn due(&self, sent: u64, finished: bool) -> Option<Waiting> {
        if !self.welcomed {
            Some(Waiting::Welcome)
        } else if self.answered < sent {
            Some(Waiting::Replies(sent - self.answered))
        } else if finished {
            Some(Waiting::Close)
        } else {
            None
        }
    }

    /// Whether the latest line said the server is closing (idle, or shutting down).
    pub(super) fn closing(&self) -> bool {
        matches!(self.last, Some(LineKind::Idle | LineKind::ShuttingDown))
    }

    /// Whether the server has ended a line yet (its welcome).
    pub(super) fn welcomed(&self) -> bool {
        self.welcomed
    }

    /// The verdict when the server closed without ever ending a line.
    pub(super) fn unframed(&self) -> Failure {
        Failure::Closed(Closed {
            what: ClosedWhen::Unframed,
            notice: None,
            reset: self.reset,
            replies: 0,
        })
    }

    /// Replies received whole.
    fn replies(&self) -> u64 {
        let replies = self.answered - self.refused;
        if self.cut && self.last_reply {
            replies.saturating_sub(1)
        } else {
            replies
        }
    }

    /// The verdict once the server has closed: `sent` names were sent, and `finished`
    /// tells whether the input ended (`exit` was sent). A close right after the idle
    /// notice is an idle close, whatever was still due: the server stopped waiting for
    /// this client, and names sent since crossed the notice or never reached it.
    pub(super) fn end(&self, sent: u64, finished: bool) -> Result<(), Failure> {
        let notice = self.notice.clone();
        let closed = |what| {
            Err(Failure::Closed(Closed {
                what,
                notice: notice.clone(),
                reset: self.reset,
                replies: self.replies(),
            }))
        };
        if !self.welcomed {
            return closed(ClosedWhen::BeforeWelcome);
        }
        if self.cut && self.last_reply {
            return closed(ClosedWhen::MidReply);
        }
        if self.last == Some(LineKind::Idle) {
            return closed(ClosedWhen::Idle);
        }
        if self.answered < sent {
            return closed(ClosedWhen::Unanswered(sent - self.answered));
        }
        if !finished {
            return closed(ClosedWhen::InputOpen);
        }
        if self.garbled > 0 {
            return Err(Failure::Garbled {
                lines: self.garbled,
                after: self.garbled_after,
            });
        }
        if self.refused > 0 {
            return Err(Failure::Refused {
                count: self.refused,
                first: self.first_refusal.clone().unwrap_or_default(),
            });
        }
        Ok(())
    }
}

/// What `--raw` keeps of the server's bytes to give its exit code: the first [`HEAD`]
/// bytes of the first line and of the last one (in chunk framing, of the first and the
/// latest read), however much the server sends.
#[derive(Debug)]
pub(super) struct Ends {
    chunks: bool,
    first: Vec<u8>,
    /// The first line has ended (in chunk framing, the first read is done).
    first_done: bool,
    /// The line in progress (in chunk framing, the latest read).
    current: Vec<u8>,
    /// The latest line that ended.
    previous: Vec<u8>,
}

impl Ends {
    pub(super) fn new(framing: Framing) -> Self {
        Ends {
            chunks: framing == Framing::Chunk,
            first: Vec::with_capacity(HEAD),
            first_done: false,
            current: Vec::with_capacity(HEAD),
            previous: Vec::with_capacity(HEAD),
        }
    }

    /// Takes note of one read from the server.
    pub(super) fn feed(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.chunks {
            if !self.first_done {
                keep(&mut self.first, data);
                self.first_done = true;
            }
            self.current.clear();
            keep(&mut self.current, data);
            return;
        }
        if !self.first_done {
            let end = memchr(b'\n', data);
            keep(&mut self.first, &data[..end.unwrap_or(data.len())]);
            self.first_done = end.is_some();
        }
        // Only the last two line endings of a read matter: the line before the last one
        // is the latest that ended, and what follows it is the line in progress.
        let Some(last_end) = memrchr(b'\n', data) else {
            keep(&mut self.current, data);
            return;
        };
        let ended = &data[..last_end];
        match memrchr(b'\n', ended) {
            Some(start) => {
                self.previous.clear();
                keep(&mut self.previous, &ended[start + 1..]);
            }
            None => {
                keep(&mut self.current, ended);
                std::mem::swap(&mut self.previous, &mut self.current);
            }
        }
        self.current.clear();
        keep(&mut self.current, &data[last_end + 1..]);
    }

    /// The verdict once the server has closed (or reset) the connection: busy when its
    /// first line was the busy notice, an idle close when its last was the idle notice.
    pub(super) fn verdict(&self, reset: bool) -> Result<(), Failure> {
        let text = |head: &[u8]| String::from_utf8_lossy(chunk_message(head)).into_owned();
        if classify_line(&self.first) == LineKind::Busy {
            return Err(Failure::Busy(text(&self.first)));
        }
        let last = if self.current.is_empty() {
            &self.previous
        } else {
            &self.current
        };
        if classify_line(last) == LineKind::Idle {
            return Err(Failure::Closed(Closed {
                what: ClosedWhen::Idle,
                notice: Some(text(last)),
                reset,
                // Raw mode counts no replies; the idle message names none.
                replies: 0,
            }));
        }
        Ok(())
    }
}

/// Appends to `head` what fits of `text` within [`HEAD`] bytes.
fn keep(head: &mut Vec<u8>, text: &[u8]) {
    let room = HEAD.saturating_sub(head.len());
    head.extend_from_slice(&text[..room.min(text.len())]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{EXIT_BUSY, EXIT_PROTOCOL, EXIT_TIMEOUT};

    #[test]
    fn server_lines_are_classified_by_their_start() {
        assert_eq!(
            classify_line(b"ERROR server busy (3 connections), try again later"),
            LineKind::Busy
        );
        assert_eq!(
            classify_line(b"ERROR too many connections from your address (1), try again later"),
            LineKind::Busy
        );
        assert_eq!(
            classify_line(b"ERROR idle for 300 s, closing"),
            LineKind::Idle
        );
        assert_eq!(
            classify_line(b"server shutting down"),
            LineKind::ShuttingDown
        );
        assert_eq!(
            classify_line(b"server closing this connection, reconnect"),
            LineKind::ShuttingDown
        );
        assert_eq!(
            classify_line(b"ERROR line too long (max 8 bytes), skipped"),
            LineKind::Error
        );
        for text in [
            &b"Welcome!"[..],
            b"Hello, ERROR x!",
            b"",
            b"ERRORS",
            b"Bye!",
        ] {
            assert_eq!(classify_line(text), LineKind::Text);
        }
    }

    #[test]
    fn tally_counts_replies_refusals_and_extras() {
        let mut t = Tally::default();
        assert_eq!(t.due(0, false), Some(Waiting::Welcome));
        assert_eq!(t.line(b"Welcome!", 0), Role::Welcome);
        assert_eq!(t.due(0, false), None);
        assert_eq!(t.due(3, false), Some(Waiting::Replies(3)));
        assert_eq!(t.line(b"Hello, a!", 3), Role::Reply);
        assert_eq!(
            t.line(b"ERROR line too long (max 1 bytes), skipped", 3),
            Role::Refusal
        );
        assert_eq!(t.line(b"Hello, c!", 3), Role::Reply);
        assert_eq!(t.due(3, true), Some(Waiting::Close));
        assert_eq!(t.line(b"Bye!", 3), Role::Extra);
        let e = t.end(3, true).unwrap_err();
        assert_eq!(e.code(), EXIT_PROTOCOL);
        assert!(e.message().unwrap().contains("--max-line"));
    }

    #[test]
    fn tally_busy_only_in_place_of_the_welcome() {
        let mut t = Tally::default();
        assert_eq!(
            t.line(b"ERROR server busy (1 connections), try again later", 0),
            Role::Busy
        );
        assert!(!t.welcomed);
        let mut t = Tally::default();
        t.line(b"Welcome!", 0);
        assert_eq!(t.line(b"ERROR server busy", 0), Role::Notice);
    }

    #[test]
    fn a_reply_cut_by_the_close_is_a_mid_reply_close_after_the_whole_ones() {
        let mut t = Tally::default();
        t.line(b"Welcome!", 0);
        assert_eq!(t.line(b"Hello, Ann!", 2), Role::Reply);
        // The close cut the next reply: the session hands it over as a line, cut.
        t.cut = true;
        assert_eq!(t.line(b"Hello, B", 2), Role::Reply);
        let Err(Failure::Closed(c)) = t.end(2, true) else {
            panic!("a close mid-reply is a failure");
        };
        assert_eq!((c.what, c.replies), (ClosedWhen::MidReply, 1));
        // A last line without a line ending that answers nothing (a farewell) is fine.
        let mut t = Tally::default();
        t.line(b"Welcome!", 0);
        t.line(b"Hello, Ann!", 1);
        t.cut = true;
        assert_eq!(t.line(b"Bye!", 1), Role::Extra);
        assert!(t.end(1, true).is_ok());
    }

    #[test]
    fn tally_verdicts() {
        let welcomed = || {
            let mut t = Tally::default();
            t.line(b"Welcome!", 0);
            t
        };
        assert!(welcomed().end(0, true).is_ok());
        let closed = |r: Result<(), Failure>| match r {
            Err(Failure::Closed(c)) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            closed(Tally::default().end(0, false)).what,
            ClosedWhen::BeforeWelcome
        );
        let mut t = welcomed();
        t.line(b"Hello, a!", 3);
        assert_eq!(t.line(b"server shutting down", 3), Role::Notice);
        let e = t.end(3, true);
        let c = closed(e);
        assert_eq!(c.what, ClosedWhen::Unanswered(2));
        assert_eq!(c.notice.as_deref(), Some("server shutting down"));
        assert_eq!(closed(welcomed().end(0, false)).what, ClosedWhen::InputOpen);
        let mut t = welcomed();
        t.line(b"ERROR idle for 5 s, closing", 0);
        let e = t.end(0, false).unwrap_err();
        assert_eq!(e.code(), EXIT_TIMEOUT);
        assert!(e.message().unwrap().contains("--idle-timeout"));
    }

    #[test]
    fn an_idle_notice_last_is_an_idle_close_whatever_was_due() {
        let idle = |sent, finished| {
            let mut t = Tally::default();
            t.line(b"Welcome!", 0);
            t.line(b"Hello, a!", 1);
            // Read where the reply to a second name was due: still the notice.
            assert_eq!(t.line(b"ERROR idle for 1 s, closing", sent), Role::Notice);
            t.end(sent, finished)
        };
        for (sent, finished) in [(1, false), (1, true), (2, false), (2, true)] {
            match idle(sent, finished) {
                Err(Failure::Closed(c)) => assert_eq!(c.what, ClosedWhen::Idle),
                other => panic!("{sent} {finished}: {other:?}"),
            }
        }
        // A line after the notice means it was not the last word.
        let mut t = Tally::default();
        t.line(b"Welcome!", 0);
        t.line(b"ERROR idle for 1 s, closing", 1);
        t.line(b"Hello, a!", 1);
        assert!(t.end(1, true).is_ok());
    }

    fn ends_of(framing: Framing, reads: &[&[u8]]) -> Ends {
        let mut ends = Ends::new(framing);
        for read in reads {
            ends.feed(read);
        }
        ends
    }

    fn code(ends: &Ends) -> Option<u8> {
        ends.verdict(false).err().map(|f| f.code())
    }

    #[test]
    fn raw_ends_find_the_busy_notice_first_and_the_idle_notice_last() {
        let busy = b"ERROR server busy (1 connections), try again later";
        let idle = b"ERROR idle for 1 s, closing";
        let line = |text: &[u8]| [text, b"\r\n"].concat();
        let cases: Vec<(Framing, Vec<Vec<u8>>, Option<u8>)> = vec![
            (Framing::Line, vec![line(busy)], Some(EXIT_BUSY)),
            // Split anywhere, even inside the CRLF.
            (
                Framing::Line,
                vec![
                    b"ERROR ser".to_vec(),
                    b"ver busy (1)\r".to_vec(),
                    b"\n".to_vec(),
                ],
                Some(EXIT_BUSY),
            ),
            (Framing::Chunk, vec![busy.to_vec()], Some(EXIT_BUSY)),
            // Busy only as the first line.
            (
                Framing::Line,
                vec![b"Welcome!\r\n".to_vec(), line(busy)],
                None,
            ),
            (
                Framing::Line,
                vec![b"Welcome!\r\nHello, a!\r\n".to_vec(), line(idle)],
                Some(EXIT_TIMEOUT),
            ),
            (
                Framing::Line,
                vec![[&b"Welcome!\r\nHello, a!\r\n"[..], &line(idle)].concat()],
                Some(EXIT_TIMEOUT),
            ),
            // Unended at the close, it is still the last line.
            (
                Framing::Line,
                vec![b"Welcome!\r\nERROR id".to_vec(), b"le for 1 s".to_vec()],
                Some(EXIT_TIMEOUT),
            ),
            (
                Framing::Chunk,
                vec![b"Welcome!".to_vec(), b"Hello, a!".to_vec(), idle.to_vec()],
                Some(EXIT_TIMEOUT),
            ),
            // Idle only as the last line.
            (
                Framing::Line,
                vec![line(idle), b"Welcome!\r\n".to_vec()],
                None,
            ),
            (
                Framing::Chunk,
                vec![b"Welcome!".to_vec(), idle.to_vec(), b"Bye!".to_vec()],
                None,
            ),
            (
                Framing::Line,
                vec![b"HTTP/1.0 200 OK\r\n\r\nhi\n".to_vec()],
                None,
            ),
            (Framing::Line, vec![], None),
        ];
        for (framing, reads, expected) in cases {
            let reads: Vec<&[u8]> = reads.iter().map(Vec::as_slice).collect();
            let ends = ends_of(framing, &reads);
            assert_eq!(code(&ends), expected, "{framing:?} {reads:?}");
        }
        let ends = ends_of(Framing::Line, &[&line(idle)]);
        let m = ends.verdict(false).unwrap_err().message().unwrap();
        assert!(m.contains("(it said: ERROR idle for 1 s, closing)"), "{m}");
        assert!(m.contains("--idle-timeout"), "{m}");
    }

    #[test]
    fn raw_ends_keep_only_heads() {
        let mut ends = Ends::new(Framing::Line);
        let long = vec![b'x'; 100 * HEAD];
        for _ in 0..10 {
            ends.feed(&long);
        }
        ends.feed(b"\n");
        ends.feed(&long);
        assert!(ends.first.len() <= HEAD && ends.current.len() <= HEAD);
        assert!(ends.previous.len() <= HEAD);
        let mut chunks = Ends::new(Framing::Chunk);
        chunks.feed(&long);
        chunks.feed(&long);
        assert!(chunks.first.len() <= HEAD && chunks.current.len() <= HEAD);
    }
}
