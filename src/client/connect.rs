//! Connecting: resolving the target, trying each address in turn, and why none accepted;
//! or connecting to a Unix socket, and why it did not accept.

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use log::debug;

use super::failure::Failure;
use crate::address::HostPort;

/// The order in which to try the addresses a name resolves to: the resolver's order
/// (RFC 6724 preference), duplicates removed, IPv6 and IPv4 alternating from the
/// first one's family (RFC 8305), so that one broken family costs one timeout, not
/// one per address.
fn order_addrs(addrs: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut unique: Vec<SocketAddr> = Vec::new();
    for addr in addrs {
        if !unique.contains(&addr) {
            unique.push(addr);
        }
    }
    let Some(first) = unique.first() else {
        return unique;
    };
    let first_v6 = first.is_ipv6();
    let (mut lead, mut other): (Vec<SocketAddr>, Vec<SocketAddr>) =
        unique.iter().partition(|a| a.is_ipv6() == first_v6);
    lead.reverse();
    other.reverse();
    let mut ordered = Vec::with_capacity(unique.len());
    loop {
        match (lead.pop(), other.pop()) {
            (None, None) => break,
            (a, b) => ordered.extend(a.into_iter().chain(b)),
        }
    }
    ordered
}

/// One failed connection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Attempt {
    addr: SocketAddr,
    kind: ErrorKind,
    error: String,
}

/// Resolves the target and tries every address in turn.
pub(super) fn connect(
    target: &HostPort,
    timeout: Option<Duration>,
) -> Result<(TcpStream, SocketAddr), Failure> {
    let resolved = target.resolve().map_err(|e| Failure::Resolve {
        target: target.to_string(),
        error: e.to_string(),
    })?;
    let addrs = order_addrs(resolved);
    if addrs.is_empty() {
        return Err(Failure::Resolve {
            target: target.to_string(),
            error: "no addresses".into(),
        });
    }
    connect_addrs(&addrs, timeout).map_err(|attempts| Failure::Connect {
        target: target.to_string(),
        attempts,
        timeout,
    })
}

/// Tries each address in turn; the first connection wins.
fn connect_addrs(
    addrs: &[SocketAddr],
    timeout: Option<Duration>,
) -> Result<(TcpStream, SocketAddr), Vec<Attempt>> {
    let mut attempts = Vec::new();
    for &addr in addrs {
        debug!("connecting to {addr}");
        let result = match timeout {
            Some(t) => TcpStream::connect_timeout(&addr, t),
            None => TcpStream::connect(addr),
        };
        match result {
            Ok(stream) => return Ok((stream, addr)),
            Err(e) => {
                debug!("{addr}: {e}");
                attempts.push(Attempt {
                    addr,
                    kind: e.kind(),
                    error: e.to_string(),
                });
            }
        }
    }
    Err(attempts)
}

/// Connects to the Unix socket at `path`. No timeout is needed: a local connect is
/// taken or refused at once.
pub(super) fn connect_unix(path: &Path) -> Result<UnixStream, Failure> {
    debug!("connecting to unix:{}", path.display());
    UnixStream::connect(path).map_err(|error| Failure::UnixConnect {
        path: path.to_path_buf(),
        error,
    })
}

/// The message for a Unix socket that did not accept a connection: the cause, and the
/// fix.
pub(super) fn unix_connect_message(path: &Path, error: &io::Error) -> String {
    let shown = crate::address::unix_display(path);
    match error.kind() {
        ErrorKind::NotFound => format!(
            "no socket at {}: is tcp-hello serve running with --bind {shown}? Start it, or \
             give the socket's path with --connect",
            path.display()
        ),
        ErrorKind::ConnectionRefused => format!(
            "nothing listens on {} (a server left it behind): start tcp-hello serve --bind \
             {shown}, or give the socket's path with --connect",
            path.display()
        ),
        ErrorKind::PermissionDenied => format!(
            "permission denied connecting to {}: the socket's mode does not let this user \
             in (serve --unix-mode 660 lets its group in)",
            path.display()
        ),
        _ => format!("cannot connect to {shown}: {error}; check the path given with --connect"),
    }
}

/// The message for a target none of whose addresses accepted a connection: the most
/// telling cause first (refused, then timed out, then unreachable), then every attempt
/// when there were several.
pub(super) fn connect_message(
    target: &str,
    attempts: &[Attempt],
    timeout: Option<Duration>,
) -> String {
    let has = |kinds: &[ErrorKind]| attempts.iter().any(|a| kinds.contains(&a.kind));
    let mut message = if has(&[ErrorKind::ConnectionRefused]) {
        format!(
            "connection refused: is tcp-hello serve running on {target}? \
             Start it with `tcp-hello serve`, or give the server's address with --connect"
        )
    } else if has(&[ErrorKind::TimedOut, ErrorKind::WouldBlock]) {
        let secs = timeout.map_or(String::new(), |t| format!(" after {} s", t.as_secs_f64()));
        format!(
            "connecting to {target} timed out{secs}: the host may be down, or a firewall \
             drops the connection; check the address, or raise --connect-timeout"
        )
    } else if has(&[ErrorKind::NetworkUnreachable, ErrorKind::HostUnreachable]) {
        format!("cannot reach {target}: no route to it; check the address and the network")
    } else {
        let why = attempts.first().map_or("no address", |a| a.error.as_str());
        format!("cannot connect to {target}: {why}; check the address given with --connect")
    };
    if attempts.len() > 1 {
        let tried: Vec<String> = attempts
            .iter()
            .map(|a| format!("{}: {}", a.addr, a.error))
            .collect();
        message.push_str(&format!(" (tried {})", tried.join("; ")));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener};

    fn v4(last: u8, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), port)
    }

    fn v6(last: u16, port: u16) -> SocketAddr {
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last)),
            port,
        )
    }

    #[test]
    fn addresses_alternate_families_from_the_first() {
        assert_eq!(
            order_addrs([v6(1, 1), v6(2, 1), v4(1, 1), v4(2, 1), v6(1, 1)]),
            [v6(1, 1), v4(1, 1), v6(2, 1), v4(2, 1)]
        );
        assert_eq!(
            order_addrs([v4(1, 1), v6(1, 1), v6(2, 1)]),
            [v4(1, 1), v6(1, 1), v6(2, 1)]
        );
        assert_eq!(order_addrs([v4(1, 1), v4(1, 1)]), [v4(1, 1)]);
        assert!(order_addrs([]).is_empty());
    }

    #[test]
    fn every_address_is_tried_in_turn() {
        let dead = TcpListener::bind("127.0.0.1:0").unwrap();
        let refused = dead.local_addr().unwrap();
        drop(dead);
        let live = TcpListener::bind("127.0.0.1:0").unwrap();
        let good = live.local_addr().unwrap();
        let (_, addr) = connect_addrs(&[refused, good], Some(Duration::from_secs(5))).unwrap();
        assert_eq!(addr, good);
        let attempts = connect_addrs(&[refused], Some(Duration::from_secs(5))).unwrap_err();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].kind, ErrorKind::ConnectionRefused);
    }

    #[test]
    fn unix_connect_messages_name_cause_and_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sock");
        let Err(Failure::UnixConnect { error, .. }) = connect_unix(&path) else {
            panic!("connected to nothing");
        };
        let m = unix_connect_message(&path, &error);
        assert!(
            m.starts_with(&format!(
                "no socket at {}: is tcp-hello serve",
                path.display()
            )),
            "{m}"
        );
        // A socket file nothing listens on.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let Err(Failure::UnixConnect { error, .. }) = connect_unix(&path) else {
            panic!("connected to a closed socket");
        };
        let m = unix_connect_message(&path, &error);
        assert!(m.starts_with("nothing listens on"), "{m}");
        let m = unix_connect_message(&path, &io::Error::from(ErrorKind::PermissionDenied));
        assert!(m.contains("--unix-mode 660"), "{m}");
    }

    #[test]
    fn connect_messages_name_cause_and_fix() {
        let attempt = |addr, kind| Attempt {
            addr,
            kind,
            error: io::Error::from(kind).to_string(),
        };
        let a = v4(1, 9999);
        let m = connect_message(
            "127.0.0.1:9999",
            &[attempt(a, ErrorKind::ConnectionRefused)],
            None,
        );
        assert!(
            m.starts_with("connection refused: is tcp-hello serve running on 127.0.0.1:9999?"),
            "{m}"
        );
        assert!(!m.contains("tried"));
        let m = connect_message(
            "h:1",
            &[attempt(a, ErrorKind::TimedOut)],
            Some(Duration::from_secs(2)),
        );
        assert!(
            m.contains("timed out after 2 s") && m.contains("--connect-timeout"),
            "{m}"
        );
        // Refused wins over a timeout, and every attempt is listed.
        let m = connect_message(
            "h:1",
            &[
                attempt(v6(1, 1), ErrorKind::TimedOut),
                attempt(a, ErrorKind::ConnectionRefused),
            ],
            None,
        );
        assert!(m.starts_with("connection refused"), "{m}");
        assert!(
            m.contains("[fd00::1]:1") && m.contains("10.0.0.1:9999"),
            "{m}"
        );
        let m = connect_message("h:1", &[attempt(a, ErrorKind::HostUnreachable)], None);
        assert!(m.contains("no route"), "{m}");
    }
}
