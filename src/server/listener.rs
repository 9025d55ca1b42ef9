//! Listening sockets: bound here, or adopted from whoever opened them (systemd), each
//! given the one set of options every accepted connection inherits from it.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{getsockopt, sockopt::AcceptConn};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use super::ServerConfig;

/// The longest `--keepalive` Linux takes (`TCP_KEEPIDLE` and `TCP_KEEPINTVL` stop at 32767 s).
pub const MAX_KEEPALIVE_SECS: u64 = 32_767;

/// The longest `--user-timeout` Linux takes: `TCP_USER_TIMEOUT` is a positive `int` of
/// milliseconds.
pub const MAX_USER_TIMEOUT_SECS: u64 = i32::MAX as u64 / 1000;

/// Keepalive probes sent, after the idle time, before a silent peer is declared gone.
pub const KEEPALIVE_PROBES: u32 = 3;

/// The keepalive of `--keepalive SECS`: after `idle` of silence, [`KEEPALIVE_PROBES`]
/// probes `idle / 3` whole seconds apart (at least 1); the connection is dropped one
/// interval after the last unanswered one, about `2 × idle` after the peer last sent.
pub fn keepalive(idle: Duration) -> socket2::TcpKeepalive {
    let params = socket2::TcpKeepalive::new().with_time(idle);
    // OpenBSD and others have no per-socket interval or count: theirs are system-wide.
    #[cfg(any(
        target_os = "linux",
        target_os = "macos",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "dragonfly"
    ))]
    let params = params
        // Whole seconds: what the kernel takes.
        .with_interval(Duration::from_secs((idle.as_secs() / 3).max(1)))
        .with_retries(KEEPALIVE_PROBES);
    params
}

/// Binds one listening socket with an explicit backlog (std's `bind` uses 128, which a
/// burst of connects overflows), with [`connection_options`].
pub fn listen(addr: SocketAddr, config: &ServerConfig) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    connection_options(&SockRef::from(&socket), config)?;
    // A restarted server must not wait for the old connections' TIME_WAIT to end.
    socket.set_reuse_address(true)?;
    if config.reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // So that `[::]:P` and `0.0.0.0:P` can both be bound, as separate listeners.
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(config.backlog)?;
    Ok(socket.into())
}

/// Prepares a listening socket opened by someone else (systemd's, inherited): gives it
/// the [`connection_options`] [`listen`] sets. Its address, backlog and SO_REUSEPORT stay
/// as its opener set them.
pub fn adopt(listener: TcpListener, config: &ServerConfig) -> io::Result<TcpListener> {
    let socket = SockRef::from(&listener);
    match getsockopt(&listener, AcceptConn) {
        Ok(true) => {}
        Ok(false) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is not a listening socket (a .socket unit needs Accept=no, the default)",
            ));
        }
        // macOS cannot say (ENOPROTOOPT): a socket that is not listening fails at its
        // first accept instead.
        Err(Errno::ENOPROTOOPT) => {}
        Err(e) => return Err(e.into()),
    }
    // The accept loop blocks in accept; `NonBlocking=yes` in a .socket unit would spin it.
    listener.set_nonblocking(false)?;
    connection_options(&socket, config)?;
    Ok(listener)
}

/// The options every connection needs, set once on its listener: Linux copies them to
/// each accepted socket, which saves three system calls per connection.
fn connection_options(socket: &SockRef<'_>, config: &ServerConfig) -> io::Result<()> {
    // Replies leave in one write per batch, so Nagle's delay would only add latency.
    socket.set_tcp_nodelay(true)?;
    socket.set_read_timeout(config.idle_timeout)?;
    socket.set_write_timeout(config.write_timeout)?;
    // Linux copies SO_KEEPALIVE, TCP_KEEPIDLE/INTVL/CNT and TCP_USER_TIMEOUT to accepted
    // sockets too (a test below reads them back from one).
    if let Some(idle) = config.keepalive {
        socket.set_tcp_keepalive(&keepalive(idle))?;
    }
    set_user_timeout(socket, config.user_timeout)
}

/// Sets `TCP_USER_TIMEOUT` when one is asked for.
#[cfg(target_os = "linux")]
fn set_user_timeout(socket: &Socket, timeout: Option<Duration>) -> io::Result<()> {
    match timeout {
        Some(t) => socket.set_tcp_user_timeout(Some(t)),
        None => Ok(()),
    }
}

/// `TCP_USER_TIMEOUT` is Linux's: elsewhere the kernel's retransmission limit stays, and
/// [`warn_of_unsupported_options`] says so once at start-up.
#[cfg(not(target_os = "linux"))]
fn set_user_timeout(_: &Socket, _: Option<Duration>) -> io::Result<()> {
    Ok(())
}

/// Warns, once, of options in `config` this system cannot apply, so that they are not
/// ignored silently.
pub(super) fn warn_of_unsupported_options(config: &ServerConfig) {
    if !cfg!(target_os = "linux") && config.user_timeout.is_some() {
        log::warn!("--user-timeout has no effect on this system (TCP_USER_TIMEOUT is Linux-only)");
    }
}

// Linux only: elsewhere accepted sockets need not inherit these options, and
// `TCP_USER_TIMEOUT` does not exist.
#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use super::*;
    use socket2::SockRef;
    use std::net::TcpStream;

    fn config(keepalive: Option<Duration>, user_timeout: Option<Duration>) -> ServerConfig {
        ServerConfig {
            bind: Vec::new(),
            tls_bind: Vec::new(),
            unix_bind: Vec::new(),
            unix_mode: None,
            tls: None,
            backlog: 8,
            reuse_port: false,
            max_connections: 4,
            max_per_source: 0,
            rules: Default::default(),
            proxy: None,
            idle_timeout: None,
            write_timeout: None,
            shutdown_timeout: Duration::from_secs(1),
            linger: Duration::from_secs(2),
            drain_delay: Duration::ZERO,
            unready_at_max: false,
            thread_cache: 0,
            max_handshakes: 4,
            max_handshakes_per_source: 4,
            trace: None,
            keepalive,
            user_timeout,
        }
    }

    /// Connects to a listener made by [`listen`] and returns the accepted socket.
    fn accepted(config: &ServerConfig) -> (TcpStream, TcpStream) {
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0)), config).unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        (stream, client)
    }

    #[test]
    fn accepted_sockets_inherit_keepalive_and_user_timeout_from_the_listener() {
        let config = config(Some(Duration::from_secs(30)), Some(Duration::from_secs(7)));
        let (stream, _client) = accepted(&config);
        let socket = SockRef::from(&stream);
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(10)
        );
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
        assert_eq!(
            socket.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn keepalive_and_user_timeout_stay_off_unless_asked_for() {
        let (stream, _client) = accepted(&config(None, None));
        let socket = SockRef::from(&stream);
        assert!(!socket.keepalive().unwrap());
        assert_eq!(socket.tcp_user_timeout().unwrap(), None);
    }

    #[test]
    fn short_keepalives_probe_at_least_a_second_apart() {
        let (stream, _client) = accepted(&config(Some(Duration::from_secs(1)), None));
        let socket = SockRef::from(&stream);
        assert_eq!(socket.tcp_keepalive_time().unwrap(), Duration::from_secs(1));
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(1)
        );
    }
}
