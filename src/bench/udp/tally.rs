//! What a UDP worker counted, merged at the end; and the kinds of failure.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::bench::HIST_MAX_NS;
use crate::bench::fail::Fail;

/// What went wrong. Loss, duplicates and late replies are counted on their own: UDP
/// has them, and they fail nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::bench) enum UdpFail {
    /// An ICMP port unreachable came back (ECONNREFUSED): nothing listens on the port.
    PortUnreachable,
    /// A reply that is the reply `--expect` gives to no datagram sent.
    ReplyMismatch,
    /// Any other error of a send or a receive.
    Other,
}

impl UdpFail {
    /// Every kind, in `as usize` order.
    pub(in crate::bench) const ALL: [UdpFail; 3] = [
        UdpFail::PortUnreachable,
        UdpFail::ReplyMismatch,
        UdpFail::Other,
    ];

    /// The kind's name in the report and the `--json` keys; the TCP bench's where it
    /// has the same kind.
    pub(in crate::bench) fn name(self) -> &'static str {
        match self {
            UdpFail::PortUnreachable => "port_unreachable",
            UdpFail::ReplyMismatch => Fail::ReplyMismatch.name(),
            UdpFail::Other => Fail::Other.name(),
        }
    }

    /// What to do about it, when there is one thing to say.
    pub(in crate::bench) fn hint(self, addr: SocketAddr) -> Option<String> {
        match self {
            UdpFail::PortUnreachable => Some(format!(
                "is `tcp-hello serve --udp-bind {addr}` running? Or give the server's address \
                 with --connect"
            )),
            UdpFail::ReplyMismatch => Some(
                "check --expect against the server's --reply and --mode (echo: --expect '{}')"
                    .to_string(),
            ),
            UdpFail::Other => None,
        }
    }
}

/// One worker's counts.
pub(in crate::bench) struct Tally {
    /// Datagrams sent.
    pub(in crate::bench) sent: u64,
    /// Replies that were the first to their datagram and as expected.
    pub(in crate::bench) matched: u64,
    /// Datagrams counted lost: no reply within `--timeout` or by the end, or a wrong one.
    pub(in crate::bench) lost: u64,
    /// More replies to a datagram already answered.
    pub(in crate::bench) duplicates: u64,
    /// Replies to a datagram already counted lost.
    pub(in crate::bench) late: u64,
    pub(in crate::bench) errors: [u64; UdpFail::ALL.len()],
    /// The first detail of each kind.
    pub(in crate::bench) examples: Vec<(UdpFail, String)>,
    /// Reply latencies of the matches, in nanoseconds.
    pub(in crate::bench) hist: Histogram<u64>,
    pub(in crate::bench) last_reply: Option<Instant>,
    /// When the last datagram went out.
    pub(in crate::bench) last_sent: Option<Instant>,
}

impl Tally {
    pub(in crate::bench) fn new() -> io::Result<Tally> {
        Ok(Tally {
            sent: 0,
            matched: 0,
            lost: 0,
            duplicates: 0,
            late: 0,
            errors: [0; UdpFail::ALL.len()],
            examples: Vec::new(),
            hist: Histogram::new_with_bounds(1, HIST_MAX_NS, 3).map_err(io::Error::other)?,
            last_reply: None,
            last_sent: None,
        })
    }

    /// Datagrams received, whatever they were.
    pub(in crate::bench) fn received(&self) -> u64 {
        self.matched + self.duplicates + self.late + self.errors[UdpFail::ReplyMismatch as usize]
    }

    pub(in crate::bench) fn count(&self, kind: UdpFail) -> u64 {
        self.errors[kind as usize]
    }

    pub(in crate::bench) fn note(&mut self, kind: UdpFail, detail: impl FnOnce() -> String) {
        self.errors[kind as usize] += 1;
        if !self.examples.iter().any(|(k, _)| *k == kind) {
            let detail = detail();
            log::debug!("bench: {}: {detail}", kind.name());
            self.examples.push((kind, detail));
        }
    }

    pub(in crate::bench) fn merge(&mut self, other: Tally) -> io::Result<()> {
        self.sent += other.sent;
        self.matched += other.matched;
        self.lost += other.lost;
        self.duplicates += other.duplicates;
        self.late += other.late;
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors) {
            *mine += theirs;
        }
        for (kind, detail) in other.examples {
            if !self.examples.iter().any(|(k, _)| *k == kind) {
                self.examples.push((kind, detail));
            }
        }
        self.last_reply = self.last_reply.max(other.last_reply);
        self.last_sent = self.last_sent.max(other.last_sent);
        self.hist.add(&other.hist).map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_once_in_order() {
        for (i, kind) in UdpFail::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i);
        }
        let mut names: Vec<&str> = UdpFail::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, ["port_unreachable", "reply_mismatch", "other"]);
        names.dedup();
        assert_eq!(names.len(), UdpFail::ALL.len());
    }

    #[test]
    fn tallies_merge() {
        let mut a = Tally::new().unwrap();
        a.sent = 10;
        a.matched = 7;
        a.lost = 3;
        a.note(UdpFail::ReplyMismatch, || "first".into());
        a.hist.record(1000).unwrap();
        let mut b = Tally::new().unwrap();
        b.sent = 5;
        b.matched = 4;
        b.duplicates = 2;
        b.late = 1;
        b.note(UdpFail::ReplyMismatch, || "second".into());
        b.note(UdpFail::Other, || "send: x".into());
        b.hist.record(2000).unwrap();
        a.merge(b).unwrap();
        assert_eq!((a.sent, a.matched, a.lost), (15, 11, 3));
        assert_eq!((a.duplicates, a.late), (2, 1));
        assert_eq!(a.count(UdpFail::ReplyMismatch), 2);
        assert_eq!(a.received(), 11 + 2 + 1 + 2);
        assert_eq!(
            a.examples,
            [
                (UdpFail::ReplyMismatch, "first".to_string()),
                (UdpFail::Other, "send: x".to_string())
            ]
        );
        assert_eq!(a.hist.len(), 2);
    }
}
