//! `--source`: connections opened from chosen local addresses.
//!
//! Without `--source`, mio opens the socket and the kernel picks the local address. With
//! it, socket2 makes the socket, binds it to (address, port 0) and starts the
//! non-blocking connect, and mio takes it over.

use std::net::IpAddr;

use nix::errno::Errno;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use std::io;
use std::net::SocketAddr;

use crate::address::SourceAddrs;
use mio::net::TcpStream;

/// A TCP socket for `family`'s addresses bound to (`ip`, port 0), not yet connected.
///
/// `IP_BIND_ADDRESS_NO_PORT` leaves the port to the connect: a bind to port 0 would
/// otherwise reserve a port for every destination at once, and one address would run
/// out after about 28,000 sockets whatever servers they go to. The option is Linux's:
/// elsewhere each bound socket holds its port from the bind.
fn bound(ip: IpAddr, family: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(family),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::socket::setsockopt(
        &socket,
        nix::sys::socket::sockopt::IpBindAddressNoPort,
        &true,
    ) {
        // Only an optimization: without it a bound socket holds its port from the bind.
        log::debug!("bench: IP_BIND_ADDRESS_NO_PORT: {e}");
    }
    socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    Ok(socket)
}

/// A non-blocking connect to `addr` from `source` (any local address when `None`),
/// for mio to drive.
pub(super) fn connect_from(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(ip) = source else {
        return TcpStream::connect(addr);
    };
    let socket = bound(ip, addr).map_err(|e| bind_error(ip, &e))?;
    socket.set_nonblocking(true)?;
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        // The connect goes on; its end shows as writable, as with mio's own connect.
        Err(e) if e.raw_os_error() == Some(Errno::EINPROGRESS as i32) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(std::net::TcpStream::from(socket)))
}

/// A failed bind to `ip`, named, with the fix when the address is not this machine's.
fn bind_error(ip: IpAddr, e: &io::Error) -> io::Error {
    let fix = match ip {
        _ if e.raw_os_error() != Some(Errno::EADDRNOTAVAIL as i32) => String::new(),
        // macOS and the BSDs have `ifconfig`, and only 127.0.0.1 on their loopback.
        IpAddr::V4(_) if !cfg!(target_os = "linux") => format!(
            "; {ip} is not an address of this machine: assign it to an interface (e.g. \
             ifconfig lo0 alias {ip})"
        ),
        IpAddr::V6(_) if !cfg!(target_os = "linux") => format!(
            "; {ip} is not an address of this machine: assign it to an interface (e.g. \
             ifconfig lo0 inet6 {ip} prefixlen 128 alias)"
        ),
        IpAddr::V4(_) => format!(
            "; {ip} is not an address of this machine: assign it to an interface (e.g. ip \
             addr add {ip}/32 dev lo), or use loopback addresses, 127.0.0.0/8 being all \
             local on Linux"
        ),
        // IPv6 has one loopback address, ::1.
        IpAddr::V6(_) => format!(
            "; {ip} is not an address of this machine: assign it to an interface (e.g. ip \
             addr add {ip}/128 dev lo)"
        ),
    };
    io::Error::new(
        e.kind(),
        format!("cannot bind to --source address {ip}: {e}{fix}"),
    )
}

/// Checks before the run that every `--source` address suits `addr` and can be bound,
/// so that a wrong one is one clear error rather than a failure per connection.
pub(super) fn check_sources(sources: &SourceAddrs, addr: SocketAddr) -> io::Result<()> {
    if sources.is_ipv4() != addr.is_ipv4() {
        let (ours, theirs) = if addr.is_ipv4() {
            ("IPv6", "IPv4")
        } else {
            ("IPv4", "IPv6")
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "--source {sources} is {ours} but --connect is the {theirs} address {addr}: \
                 give source addresses of the server's family"
            ),
        ));
    }
    for &ip in sources.addrs() {
        let bound = bound(ip, addr).map_err(|e| {
            let e = bind_error(ip, &e);
            io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
        })?;
        drop(bound);
    }
    Ok(())
}

// Linux only: they bind to 127.0.0.0/8 addresses other than 127.0.0.1, and read
// Linux's hint.
#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use super::*;
    use crate::address::parse_sources;
    use std::io::Read;
    use std::time::Duration;

    #[test]
    fn a_connection_comes_from_its_source_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let source: IpAddr = "127.0.0.7".parse().unwrap();
        let stream = connect_from(addr, Some(source)).unwrap();
        let (mut accepted, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), source);
        assert_ne!(peer.port(), 0);
        drop(stream);
        accepted
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(accepted.read(&mut [0; 1]).unwrap(), 0);
    }

    #[test]
    fn sources_are_checked_against_the_server_and_the_machine() {
        let v4: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        check_sources(&parse_sources("127.0.0.2-127.0.0.4").unwrap(), v4).unwrap();
        let e = check_sources(&parse_sources("127.0.0.2").unwrap(), v6).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            e.to_string(),
            "--source 127.0.0.2 is IPv4 but --connect is the IPv6 address [::1]:9: give \
             source addresses of the server's family"
        );
        // TEST-NET-3: documentation only, on no machine's interface.
        let e = check_sources(&parse_sources("203.0.113.7").unwrap(), v4).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = e.to_string();
        assert!(
            e.starts_with("cannot bind to --source address 203.0.113.7: "),
            "{e}"
        );
        assert!(e.contains("ip addr add 203.0.113.7/32 dev lo"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        if std::net::TcpListener::bind("[::1]:0").is_err() {
            return; // No IPv6 here.
        }
        // Documentation addresses (RFC 3849), with IPv6's own prefix length.
        let e = check_sources(&parse_sources("::1,2001:db8::7").unwrap(), v6)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cannot bind to --source address 2001:db8::7: "),
            "{e}"
        );
        assert!(
            e.ends_with("(e.g. ip addr add 2001:db8::7/128 dev lo)"),
            "{e}"
        );
    }
}
