//! Why a connection or a reply failed, and what to tell the user when nothing connected.

use std::io;
use std::time::Duration;

use super::state::WorkerResults;

/// What went wrong: why a connection failed, or (`reply_mismatch`, `unexpected_line`,
/// `name_too_long`, `server_error`) what was wrong with one line while the connection
/// went on. Each name says what happened; the README's bench section lists them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fail {
    /// The connect was refused: nothing listens on the port.
    ConnectRefused,
    /// The connect did not complete within `--timeout`.
    ConnectTimeout,
    /// No route to the host or its network.
    ConnectUnreachable,
    /// No local address or port was free for the connect.
    AddrUnavailable,
    /// The bench ran out of file descriptors.
    TooManyOpenFiles,
    /// The server's certificate is not signed by a CA the bench trusts (`--tls-ca`, or
    /// the system's roots).
    TlsUnknownIssuer,
    /// The server's certificate is not for the name checked (`--tls-server-name`, or
    /// the host of `--connect`).
    TlsBadName,
    /// The server's certificate has expired (or is not valid yet).
    TlsExpired,
    /// The server wants a client certificate and the bench gave none.
    TlsClientCertRequired,
    /// The server refused the bench's client certificate.
    TlsClientCertRefused,
    /// The server answered in something other than TLS (plain text).
    TlsNotTls,
    /// The TLS handshake was not done within `--timeout`.
    TlsTimeout,
    /// Any other TLS failure: no common version or cipher, an alert, a bad record.
    TlsOther,
    /// Connected, but no welcome line came within `--timeout`.
    WelcomeTimeout,
    /// The server said `ERROR server busy` (its `--max-connections`) and closes.
    ServerBusy,
    /// The server said `ERROR too many connections from your address` (its
    /// `--max-per-source`) and closes.
    PerSourceLimit,
    /// A name got no reply within `--timeout`.
    ReplyTimeout,
    /// A name got a reply other than `--expect` says.
    ReplyMismatch,
    /// A line came when no name was awaiting a reply.
    UnexpectedLine,
    /// The server answered a name with `ERROR line too long`: the name is longer than
    /// its `--max-line`.
    NameTooLong,
    /// The server sent a line longer than the bench's read buffer (the expected reply,
    /// and at least 4 KiB) without ending it.
    ReplyTooLong,
    /// The server said `ERROR idle ...`: it closes a connection that sent nothing for
    /// its `--idle-timeout`.
    IdleClosed,
    /// The server sent some other `ERROR` line, in place of the welcome or of a reply.
    ServerError,
    /// The server said `server shutting down` (and then closes).
    ServerShutdown,
    /// Churn: after `exit`, the server did not close the connection in time.
    CloseTimeout,
    /// The server closed the connection unasked.
    Eof,
    /// The connection was reset.
    Reset,
    /// Any other I/O error.
    Other,
}

impl Fail {
    /// Every kind, in `as usize` order.
    pub(super) const ALL: [Fail; 28] = [
        Fail::ConnectRefused,
        Fail::ConnectTimeout,
        Fail::ConnectUnreachable,
        Fail::AddrUnavailable,
        Fail::TooManyOpenFiles,
        Fail::TlsUnknownIssuer,
        Fail::TlsBadName,
        Fail::TlsExpired,
        Fail::TlsClientCertRequired,
        Fail::TlsClientCertRefused,
        Fail::TlsNotTls,
        Fail::TlsTimeout,
        Fail::TlsOther,
        Fail::WelcomeTimeout,
        Fail::ServerBusy,
        Fail::PerSourceLimit,
        Fail::ReplyTimeout,
        Fail::ReplyMismatch,
        Fail::UnexpectedLine,
        Fail::NameTooLong,
        Fail::ReplyTooLong,
        Fail::IdleClosed,
        Fail::ServerError,
        Fail::ServerShutdown,
        Fail::CloseTimeout,
        Fail::Eof,
        Fail::Reset,
        Fail::Other,
    ];

    /// The kind's name in the report and the `--json` keys.
    pub(super) fn name(self) -> &'static str {
        match self {
            Fail::ConnectRefused => "connect_refused",
            Fail::ConnectTimeout => "connect_timeout",
            Fail::ConnectUnreachable => "connect_unreachable",
            Fail::AddrUnavailable => "addr_unavailable",
            Fail::TooManyOpenFiles => "too_many_open_files",
            Fail::TlsUnknownIssuer => "tls_unknown_issuer",
            Fail::TlsBadName => "tls_bad_name",
            Fail::TlsExpired => "tls_expired",
            Fail::TlsClientCertRequired => "tls_client_cert_required",
            Fail::TlsClientCertRefused => "tls_client_cert_refused",
            Fail::TlsNotTls => "tls_not_tls",
            Fail::TlsTimeout => "tls_timeout",
            Fail::TlsOther => "tls_other",
            Fail::WelcomeTimeout => "welcome_timeout",
            Fail::ServerBusy => "server_busy",
            Fail::PerSourceLimit => "per_source_limit",
            Fail::ReplyTimeout => "reply_timeout",
            Fail::ReplyMismatch => "reply_mismatch",
            Fail::UnexpectedLine => "unexpected_line",
            Fail::NameTooLong => "name_too_long",
            Fail::ReplyTooLong => "reply_too_long",
            Fail::IdleClosed => "idle_closed",
            Fail::ServerError => "server_error",
            Fail::ServerShutdown => "server_shutdown",
            Fail::CloseTimeout => "close_timeout",
            Fail::Eof => "eof",
            Fail::Reset => "reset",
            Fail::Other => "other",
        }
    }

    /// What to do about this kind of failure, when there is one thing to say. A TLS
    /// failure's example says its own fix (see [`crate::tls_failure`]), except a timeout.
    pub(super) fn hint(self) -> Option<&'static str> {
        Some(match self {
            Fail::AddrUnavailable => {
                "lower --connections, widen net.ipv4.ip_local_port_range, or connect from more \
                 local addresses with --source"
            }
            Fail::TooManyOpenFiles => "raise the limit (ulimit -n) or lower --connections",
            Fail::TlsTimeout => {
                "is --connect a TLS port? (a plain server that waits for the client to speak \
                 first looks like this) Raise --timeout for a slow server"
            }
            Fail::ServerBusy => "raise the server's --max-connections or lower --connections",
            Fail::PerSourceLimit => "raise the server's --max-per-source or lower --connections",
            Fail::ReplyTimeout => "raise --timeout, or lower --connections or --pipeline",
            Fail::NameTooLong => "lower --size or raise the server's --max-line",
            Fail::ReplyTooLong => "check --expect and --size against the server's replies",
            Fail::IdleClosed => {
                "raise the server's --idle-timeout, or --connect-rate so that setup ends sooner"
            }
            Fail::ServerError => "see the server's log",
            _ => return None,
        })
    }

    /// Whether the server closes the connection after sending this notice.
    pub(super) fn ends_connection(self) -> bool {
        matches!(
            self,
            Fail::ServerBusy | Fail::PerSourceLimit | Fail::IdleClosed | Fail::ServerShutdown
        )
    }
}

/// What a line the server sent on its own account says happened (the notices of
/// `tcp-hello serve`: README, "Lines the server sends on its own account"), or `None`
/// for any other line. `line` is without its line ending; only its start matters.
pub(super) fn notice_kind(line: &[u8]) -> Option<Fail> {
    if line == b"server shutting down" {
        Some(Fail::ServerShutdown)
    } else if !line.starts_with(b"ERROR") {
        None
    } else if line.starts_with(b"ERROR server busy") {
        Some(Fail::ServerBusy)
    } else if line.starts_with(b"ERROR too many connections from your address") {
        Some(Fail::PerSourceLimit)
    } else if line.starts_with(b"ERROR line too long") {
        Some(Fail::NameTooLong)
    } else if line.starts_with(b"ERROR idle") {
        Some(Fail::IdleClosed)
    } else {
        Some(Fail::ServerError)
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
pub(super) fn no_connection_error(
    addr: &impl std::fmt::Display,
    timeout: Duration,
    tally: &WorkerResults,
) -> io::Error {
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
            "no local address or port available: lower --connections, widen \
             net.ipv4.ip_local_port_range, or connect from more local addresses with --source"
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
        Some(Fail::PerSourceLimit) => (
            io::ErrorKind::Other,
            format!(
                "the server at {addr} refused every connection as one too many from this \
                 address{}: raise its --max-per-source or lower --connections",
                example(Fail::PerSourceLimit)
            ),
        ),
        Some(Fail::ServerError) => (
            io::ErrorKind::Other,
            format!(
                "{addr} answered every connection with an error instead of its welcome{}: \
                 see the server's log",
                example(Fail::ServerError)
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
                "no connection to {addr} could be set up: {}{}{}",
                f.name(),
                example(f),
                f.hint()
                    .map_or_else(String::new, |hint| format!("; {hint}"))
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
    use crate::bench::names::lossy;
    use crate::protocol::{Notice, Settings};

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

    /// The server's own notice text, without its line ending.
    fn server_says(notice: Notice, max_line: usize) -> Vec<u8> {
        let settings = Settings {
            max_line,
            ..Settings::default()
        };
        let mut line = settings.notice(notice);
        line.truncate(line.len() - settings.eol().len());
        line
    }

    #[test]
    fn the_servers_notices_are_classified_by_what_happened() {
        let cases = [
            (Notice::LineTooLong, Fail::NameTooLong),
            (Notice::Idle { secs: 300 }, Fail::IdleClosed),
            (Notice::ShuttingDown, Fail::ServerShutdown),
            (Notice::Busy { connections: 3 }, Fail::ServerBusy),
            (Notice::BusySource { limit: 1 }, Fail::PerSourceLimit),
        ];
        for (notice, kind) in cases {
            let line = server_says(notice, 4);
            assert_eq!(notice_kind(&line), Some(kind), "{}", lossy(&line));
        }
        assert_eq!(notice_kind(b"ERROR out of cheese"), Some(Fail::ServerError));
        for line in [
            &b"Hello, Bob!"[..],
            b"Welcome!",
            b"",
            b"server shutting down now",
        ] {
            assert_eq!(notice_kind(line), None, "{}", lossy(line));
        }
        // A name too long is that name's answer; the others close the connection.
        assert!(!Fail::NameTooLong.ends_connection());
        assert!(!Fail::ServerError.ends_connection());
        for kind in [
            Fail::ServerBusy,
            Fail::PerSourceLimit,
            Fail::IdleClosed,
            Fail::ServerShutdown,
        ] {
            assert!(kind.ends_connection(), "{kind:?}");
        }
        assert_eq!(
            Fail::NameTooLong.hint(),
            Some("lower --size or raise the server's --max-line")
        );
    }

    #[test]
    fn every_kind_is_named_once_and_documented() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("\n## `tcp-hello bench`")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("README has a tcp-hello bench section");
        let mut names: Vec<&str> = Fail::ALL.iter().map(|f| f.name()).collect();
        let udp = super::super::udp::tally::UdpFail::ALL.map(|f| f.name());
        for name in names.iter().chain(&udp) {
            assert!(
                section.contains(&format!("`{name}`")),
                "README's bench section does not name {name}"
            );
            let snake = name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            assert!(snake, "{name}");
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Fail::ALL.len());
    }

    #[test]
    fn no_connection_error_names_cause_and_fix() {
        let addr: std::net::SocketAddr = "127.0.0.1:9999".parse().unwrap();
        let mut t = WorkerResults::new().unwrap();
        t.note(Fail::ConnectRefused, || "refused".into());
        t.note(Fail::ConnectRefused, || "refused".into());
        t.note(Fail::Other, || "x".into());
        let e = no_connection_error(&addr, Duration::from_secs(5), &t);
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(
            e.to_string(),
            "connection refused: is tcp-hello serve running on 127.0.0.1:9999?"
        );

        let mut t = WorkerResults::new().unwrap();
        t.note(Fail::PerSourceLimit, || "\"ERROR too many\"".into());
        let e = no_connection_error(&addr, Duration::from_secs(5), &t).to_string();
        assert!(
            e.contains("(\"ERROR too many\"): raise its --max-per-source"),
            "{e}"
        );

        let mut t = WorkerResults::new().unwrap();
        t.note(Fail::WelcomeTimeout, String::new);
        let e = no_connection_error(&addr, Duration::from_secs(5), &t).to_string();
        assert!(e.contains("no welcome line came within 5 s"), "{e}");
    }
}
