//! Why a connection or a reply failed, and what to tell the user when nothing connected.

use super::*;

/// Why a connection failed, or (reply_mismatch, unexpected_line) why one reply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fail {
    ConnectRefused,
    ConnectTimeout,
    ConnectUnreachable,
    AddrUnavailable,
    TooManyOpenFiles,
    WelcomeTimeout,
    ServerBusy,
    ReplyTimeout,
    ReplyMismatch,
    UnexpectedLine,
    LineTooLong,
    /// The server said `server shutting down` (and then closes).
    ServerShutdown,
    Eof,
    Reset,
    Other,
}

impl Fail {
    /// Every kind, in `as usize` order.
    pub(super) const ALL: [Fail; 15] = [
        Fail::ConnectRefused,
        Fail::ConnectTimeout,
        Fail::ConnectUnreachable,
        Fail::AddrUnavailable,
        Fail::TooManyOpenFiles,
        Fail::WelcomeTimeout,
        Fail::ServerBusy,
        Fail::ReplyTimeout,
        Fail::ReplyMismatch,
        Fail::UnexpectedLine,
        Fail::LineTooLong,
        Fail::ServerShutdown,
        Fail::Eof,
        Fail::Reset,
        Fail::Other,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Fail::ConnectRefused => "connect_refused",
            Fail::ConnectTimeout => "connect_timeout",
            Fail::ConnectUnreachable => "connect_unreachable",
            Fail::AddrUnavailable => "addr_unavailable",
            Fail::TooManyOpenFiles => "too_many_open_files",
            Fail::WelcomeTimeout => "welcome_timeout",
            Fail::ServerBusy => "server_busy",
            Fail::ReplyTimeout => "reply_timeout",
            Fail::ReplyMismatch => "reply_mismatch",
            Fail::UnexpectedLine => "unexpected_line",
            Fail::LineTooLong => "line_too_long",
            Fail::ServerShutdown => "server_shutdown",
            Fail::Eof => "eof",
            Fail::Reset => "reset",
            Fail::Other => "other",
        }
    }
}

/// Where an I/O error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    Connect,
    Session,
}

pub(super) fn classify(e: &io::Error, stage: Stage) -> Fail {
    use io::ErrorKind as K;
    // EMFILE and ENFILE: the same numbers on Linux, the BSDs and macOS, and std
    // has no stable ErrorKind for them.
    if cfg!(unix) && matches!(e.raw_os_error(), Some(23 | 24)) {
        return Fail::TooManyOpenFiles;
    }
    match (e.kind(), stage) {
        (K::ConnectionRefused, Stage::Connect) => Fail::ConnectRefused,
        (K::TimedOut, Stage::Connect) => Fail::ConnectTimeout,
        (K::HostUnreachable | K::NetworkUnreachable, Stage::Connect) => Fail::ConnectUnreachable,
        (K::AddrNotAvailable, Stage::Connect) => Fail::AddrUnavailable,
        (K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe, _) => Fail::Reset,
        (K::UnexpectedEof, _) => Fail::Eof,
        _ => Fail::Other,
    }
}

/// The error `run` returns when not one connection got as far as its welcome:
/// the most frequent failure, with what to do about it.
pub(super) fn no_connection_error(addr: SocketAddr, timeout: Duration, tally: &Tally) -> io::Error {
    let top = Fail::ALL
        .iter()
        .copied()
        .filter(|&f| tally.errors[f as usize] > 0)
        .max_by_key(|&f| tally.errors[f as usize]);
    let example = |f: Fail| {
        tally
            .examples
            .iter()
            .find(|(k, _)| *k == f)
            .map_or_else(String::new, |(_, s)| format!(" ({s})"))
    };
    let secs = timeout.as_secs_f64();
    let (kind, msg) = match top {
        Some(Fail::ConnectRefused) => (
            io::ErrorKind::ConnectionRefused,
            format!("connection refused: is tcp-hello serve running on {addr}?"),
        ),
        Some(Fail::ConnectTimeout) => (
            io::ErrorKind::TimedOut,
            format!(
                "connecting to {addr} timed out after {secs} s: is the host up, the port open \
                 (firewall?) and the server accepting? (--timeout sets the wait)"
            ),
        ),
        Some(Fail::ConnectUnreachable) => (
            io::ErrorKind::HostUnreachable,
            format!(
                "{addr} is unreachable: check the address and the network{}",
                example(Fail::ConnectUnreachable)
            ),
        ),
        Some(Fail::AddrUnavailable) => (
            io::ErrorKind::AddrNotAvailable,
            "no local address or port available: lower --connections or widen \
             net.ipv4.ip_local_port_range"
                .to_string(),
        ),
        Some(Fail::TooManyOpenFiles) => (
            io::ErrorKind::Other,
            "too many open files: raise the limit (ulimit -n) or lower --connections".to_string(),
        ),
        Some(Fail::WelcomeTimeout) => (
            io::ErrorKind::TimedOut,
            format!(
                "connected to {addr} but no welcome line came within {secs} s: is it a tcp-hello \
                 server in greet mode (not echo, not chunk framing)? (--timeout sets the wait)"
            ),
        ),
        Some(Fail::ServerBusy) => (
            io::ErrorKind::Other,
            format!(
                "the server at {addr} refused every connection{}: raise its --max-connections or \
                 lower --connections",
                example(Fail::ServerBusy)
            ),
        ),
        Some(Fail::Eof | Fail::Reset) => (
            io::ErrorKind::ConnectionAborted,
            format!(
                "{addr} closed every connection before its welcome line: is it a tcp-hello server, \
                 and not already at its --max-connections?"
            ),
        ),
        Some(f) => (
            io::ErrorKind::Other,
            format!(
                "no connection to {addr} could be set up: {}{}",
                f.name(),
                example(f)
            ),
        ),
        None => (
            io::ErrorKind::Other,
            format!("no connection to {addr} could be set up"),
        ),
    };
    io::Error::new(kind, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified() {
        let e = |k| io::Error::from(k);
        assert_eq!(
            classify(&e(io::ErrorKind::ConnectionRefused), Stage::Connect),
            Fail::ConnectRefused
        );
        assert_eq!(
            classify(&e(io::ErrorKind::TimedOut), Stage::Connect),
            Fail::ConnectTimeout
        );
        assert_eq!(
            classify(&e(io::ErrorKind::ConnectionReset), Stage::Session),
            Fail::Reset
        );
        assert_eq!(
            classify(&e(io::ErrorKind::BrokenPipe), Stage::Session),
            Fail::Reset
        );
        assert_eq!(
            classify(&e(io::ErrorKind::ConnectionRefused), Stage::Session),
            Fail::Other
        );
        if cfg!(unix) {
            assert_eq!(
                classify(&io::Error::from_raw_os_error(24), Stage::Connect),
                Fail::TooManyOpenFiles
            );
        }
        for (i, f) in Fail::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i);
        }
    }

    #[test]
    fn no_connection_error_names_cause_and_fix() {
        let addr: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        let mut t = Tally::new().unwrap();
        t.note(Fail::ConnectRefused, || "refused".into());
        t.note(Fail::ConnectRefused, || "refused".into());
        t.note(Fail::Other, || "x".into());
        let e = no_connection_error(addr, Duration::from_secs(5), &t);
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(
            e.to_string(),
            "connection refused: is tcp-hello serve running on 127.0.0.1:9999?"
        );

        let mut t = Tally::new().unwrap();
        t.note(Fail::WelcomeTimeout, String::new);
        let e = no_connection_error(addr, Duration::from_secs(5), &t).to_string();
        assert!(e.contains("no welcome line came within 5 s"), "{e}");
    }
}
