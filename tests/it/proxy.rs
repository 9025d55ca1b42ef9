//! Integration tests of `serve --proxy-protocol`: the real binary on port 0, headers
//! written by hand over real sockets (v1 text, v2 binary), with timeouts on every socket.
//!
//! Linux routes all of 127.0.0.0/8 to the loopback interface, so a client bound to
//! 127.0.0.2 before it connects is a second peer address on the same machine.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

const REPLY: &str = "Hello, {}! from {peer}";
const SECOND: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// The v2 signature every binary header begins with.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v1 (text) header claiming `client`, to port 9999 of a made-up server address.
fn v1(client: SocketAddr) -> Vec<u8> {
    let (family, server) = match client {
        SocketAddr::V4(_) => ("TCP4", "10.0.0.1"),
        SocketAddr::V6(_) => ("TCP6", "2001:db8::1"),
    };
    format!(
        "PROXY {family} {} {server} {} 9999\r\n",
        client.ip(),
        client.port()
    )
    .into_bytes()
}

/// A v2 (binary) `PROXY` header claiming `client`.
fn v2(client: SocketAddr) -> Vec<u8> {
    let mut addresses = Vec::new();
    let family = match client.ip() {
        IpAddr::V4(ip) => {
            addresses.extend_from_slice(&ip.octets());
            addresses.extend_from_slice(&[10, 0, 0, 1]);
            0x11
        }
        IpAddr::V6(ip) => {
            addresses.extend_from_slice(&ip.octets());
            addresses.extend_from_slice(
                &"2001:db8::1"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
            );
            0x21
        }
    };
    addresses.extend_from_slice(&client.port().to_be_bytes());
    addresses.extend_from_slice(&9999u16.to_be_bytes());
    v2_raw(0x21, family, &addresses)
}

/// A v2 `LOCAL` header, as HAProxy's health checks send.
fn v2_local() -> Vec<u8> {
    v2_raw(0x20, 0x00, &[])
}

fn v2_raw(version_command: u8, family: u8, rest: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(version_command);
    h.push(family);
    h.extend_from_slice(&u16::try_from(rest.len()).unwrap().to_be_bytes());
    h.extend_from_slice(rest);
    h
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A running `serve --proxy-protocol --metrics 127.0.0.1:0 <args>`.
struct Proxied {
    server: Server,
    metrics: SocketAddr,
}

impl Proxied {
    fn start(args: &[&str]) -> Proxied {
        let mut all = vec![
            "--proxy-protocol",
            "--reply",
            REPLY,
            "--metrics",
            "127.0.0.1:0",
        ];
        all.extend_from_slice(args);
        Proxied::from(Server::start(&all))
    }

    /// A server started with `--metrics 127.0.0.1:0` among its arguments.
    fn from(server: Server) -> Proxied {
        let metrics = metrics_addr(&server);
        Proxied { server, metrics }
    }

    fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// One sample of `/metrics`, by its name with labels.
    fn metric(&self, name: &str) -> u64 {
        let samples = metrics_samples(self.metrics);
        *samples
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {samples:?}"))
    }

    fn refusals(&self, reason: &str) -> u64 {
        self.metric(&format!("tcp_hello_refusals_total{{reason=\"{reason}\"}}"))
    }
}

/// A connection that sends `header` and `then` in one write.
fn open(server: SocketAddr, header: &[u8], then: &[u8]) -> Conn {
    let mut conn = Conn::open(server);
    conn.send([header, then].concat());
    conn
}

/// Lines logged above debug level.
fn loud(logs: &str) -> Vec<&str> {
    logs.lines()
        .filter(|l| l.contains(" INFO ") || l.contains(" WARN ") || l.contains(" ERROR "))
        .collect()
}

#[test]
fn v1_and_v2_headers_name_the_client_in_peer_and_in_the_close_line() {
    let server = Proxied::start(&[]);
    let cases = [
        ("v1 TCP4", v1(addr("192.0.2.7:5555")), "192.0.2.7:5555"),
        (
            "v1 TCP6",
            v1(addr("[2001:db8::7]:5556")),
            "[2001:db8::7]:5556",
        ),
        (
            "v2 IPv4",
            v2(addr("198.51.100.8:6000")),
            "198.51.100.8:6000",
        ),
        (
            "v2 IPv6",
            v2(addr("[2001:db8::8]:6001")),
            "[2001:db8::8]:6001",
        ),
    ];
    for (what, header, client) in &cases {
        // The client's first line in the same write as the header: not a byte of it
        // may be taken for the header's.
        let mut conn = open(server.addr(), header, b"Alice\n");
        assert_eq!(conn.text_line(), "Welcome!", "{what}");
        assert_eq!(
            conn.text_line(),
            format!("Hello, Alice! from {client}"),
            "{what}"
        );
        conn.send("exit\n");
        assert_eq!(conn.text_line(), "Bye!", "{what}");
    }
    assert_eq!(server.metric("tcp_hello_connections_total"), 4);
    let logs = server.server.stop_and_logs();
    for (what, _, client) in &cases {
        let closed = format!("closed: {client} (via 127.0.0.1:");
        assert!(
            logs.lines()
                .any(|l| l.contains(" INFO ") && l.contains(&closed)),
            "{what}: no close line naming {client} at info in\n{logs}"
        );
    }
    assert!(
        logs.contains("--proxy-protocol without --proxy-from"),
        "the start-up warning:\n{logs}"
    );
}

#[test]
fn a_header_split_across_writes_and_the_bytes_after_it_are_read_exactly() {
    let server = Proxied::start(&[]);
    for (what, header, client) in [
        ("v1", v1(addr("192.0.2.7:5555")), "192.0.2.7:5555"),
        ("v2", v2(addr("198.51.100.8:6000")), "198.51.100.8:6000"),
    ] {
        let mut conn = Conn::open(server.addr());
        conn.stream.set_nodelay(true).unwrap();
        let (first, second) = header.split_at(header.len() / 2);
        conn.send(first);
        // Not waiting for the server: a pause so that the halves travel apart; the
        // test holds if they are joined.
        thread::sleep(Duration::from_millis(50));
        conn.send([second, b"Bob\nCarol\n".as_slice()].concat());
        assert_eq!(conn.text_line(), "Welcome!", "{what}");
        assert_eq!(conn.text_line(), format!("Hello, Bob! from {client}"));
        assert_eq!(conn.text_line(), format!("Hello, Carol! from {client}"));
    }
}

#[test]
fn a_local_header_is_served_as_its_socket_peer_and_a_health_check_stays_quiet() {
    let server = Proxied::start(&["--max-per-source", "1"]);
    // Two at once from one address: LOCAL connections are not counted for any.
    let mut first = open(server.addr(), &v2_local(), b"Ann\n");
    let mut second = open(server.addr(), b"PROXY UNKNOWN\r\n", b"Ann\n");
    for conn in [&mut first, &mut second] {
        let me = conn.stream.local_addr().unwrap();
        assert_eq!(conn.text_line(), "Welcome!");
        assert_eq!(conn.text_line(), format!("Hello, Ann! from {me}"));
    }
    drop((first, second));
    // A health check: the header, the welcome, and gone (HAProxy's tcp-check).
    for _ in 0..3 {
        let mut check = open(server.addr(), &v2_local(), b"");
        assert_eq!(check.text_line(), "Welcome!");
    }
    assert_eq!(server.refusals("per_source"), 0);
    let logs = server.server.stop_and_logs();
    let conn_lines: Vec<_> = loud(&logs)
        .into_iter()
        .filter(|l| l.contains("conn "))
        .collect();
    // The two served a reply, and say so at info; the health checks at debug only.
    assert_eq!(conn_lines.len(), 2, "{logs}");
}

#[test]
fn connections_without_a_usable_header_are_closed_counted_and_disturb_no_one() {
    let server = Proxied::start(&["--proxy-header-timeout", "1"]);
    let mut good = open(server.addr(), &v1(addr("192.0.2.7:5555")), b"");
    assert_eq!(good.text_line(), "Welcome!");
    let unix = v2_raw(0x21, 0x31, &[0u8; 216]);
    let bad: [(&str, &[u8]); 5] = [
        ("a plain line", b"Alice\n"),
        ("garbage", b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c"),
        ("an HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("a UNIX address", &unix),
        ("nothing (timeout)", b""),
    ];
    for (what, bytes) in bad {
        let started = Instant::now();
        let mut conn = Conn::open(server.addr());
        conn.send(bytes);
        assert_closed_without_a_byte(&mut conn.stream, what);
        assert!(started.elapsed() < Duration::from_secs(8), "{what}");
    }
    assert_eq!(server.refusals("proxy_header"), 5);
    assert_eq!(server.metric("tcp_hello_connections_total"), 1);
    good.send("Bob\n");
    assert_eq!(good.text_line(), "Hello, Bob! from 192.0.2.7:5555");
    drop(good);
    let logs = server.server.stop_and_logs();
    assert!(
        loud(&logs).iter().all(|l| !l.contains("refused")),
        "bad headers are logged at debug only:\n{logs}"
    );
}

#[test]
fn the_per_source_limit_counts_the_claimed_address() {
    let server = Proxied::start(&["--max-per-source", "1"]);
    let mut first = open(server.addr(), &v2(addr("192.0.2.7:1000")), b"");
    assert_eq!(first.text_line(), "Welcome!");
    // Same claimed address, same socket peer: refused with the busy notice.
    let mut second = open(server.addr(), &v1(addr("192.0.2.7:1001")), b"");
    assert_eq!(
        second.text_line(),
        "ERROR too many connections from your address (1), try again later"
    );
    // Another claimed address, from the same socket peer: served.
    let mut third = open(server.addr(), &v1(addr("192.0.2.8:1002")), b"Ann\n");
    assert_eq!(third.text_line(), "Welcome!");
    assert_eq!(third.text_line(), "Hello, Ann! from 192.0.2.8:1002");
    assert_eq!(server.refusals("per_source"), 1);
    // The place is given back to the address it was taken for.
    first.send("exit\n");
    assert_eq!(first.text_line(), "Bye!");
    drop(first);
    let again = eventually(Duration::from_secs(10), || {
        let mut conn = open(server.addr(), &v2(addr("192.0.2.7:1003")), b"");
        conn.text_line() == "Welcome!"
    });
    assert!(again, "192.0.2.7 still counted after its connection closed");
    let logs = server.server.stop_and_logs();
    assert!(
        logs.contains("refused 192.0.2.7:1001: per-address limit reached"),
        "{logs}"
    );
}

#[test]
fn the_per_source_limit_counts_a_mapped_address_as_ipv4_and_ipv6_by_its_64() {
    let server = Proxied::start(&["--max-per-source", "1"]);
    let busy = "ERROR too many connections from your address (1), try again later";
    let mut held = Vec::new();
    for (first, same) in [
        ("192.0.2.9:1000", "[::ffff:192.0.2.9]:1001"),
        ("[::ffff:198.51.100.9]:1000", "198.51.100.9:1001"),
        ("[2001:db8::1]:1000", "[2001:db8::ffff:2]:1001"),
    ] {
        let mut conn = open(server.addr(), &v2(addr(first)), b"");
        assert_eq!(conn.text_line(), "Welcome!", "{first}");
        held.push(conn);
        let mut refused = open(server.addr(), &v2(addr(same)), b"");
        assert_eq!(refused.text_line(), busy, "{same} after {first}");
    }
    // The next /64 is another source.
    let mut other = open(server.addr(), &v2(addr("[2001:db8:0:1::1]:1002")), b"");
    assert_eq!(other.text_line(), "Welcome!");
    assert_eq!(server.refusals("per_source"), 3);
    drop((held, other));
}

#[test]
fn the_address_rules_apply_to_the_claimed_address() {
    let server = Proxied::start(&["--deny", "192.0.2.0/24"]);
    let mut denied = open(server.addr(), &v1(addr("192.0.2.7:5555")), b"Ann\n");
    assert_closed_without_a_byte(&mut denied.stream, "a denied claimed address");
    let mut allowed = open(server.addr(), &v2(addr("198.51.100.1:5555")), b"Ann\n");
    assert_eq!(allowed.text_line(), "Welcome!");
    assert_eq!(allowed.text_line(), "Hello, Ann! from 198.51.100.1:5555");
    assert_eq!(server.refusals("rule"), 1);
    // A health check is not a client: no client rule applies to it.
    let mut check = open(server.addr(), &v2_local(), b"");
    assert_eq!(check.text_line(), "Welcome!");
    let logs = server.server.stop_and_logs();
    assert!(
        logs.lines().any(|l| l.contains(" INFO ")
            && l.contains("refused 192.0.2.7:5555: address not allowed (--deny 192.0.2.0/24)")),
        "{logs}"
    );
}

#[test]
fn an_untrusted_peer_is_refused_in_the_accept_loop() {
    let server = Proxied::start(&["--proxy-from", "127.0.0.2/32"]);
    let mut untrusted = connect_from(Ipv4Addr::LOCALHOST.into(), server.addr());
    untrusted
        .write_all(&[v1(addr("192.0.2.7:5555")), b"Ann\n".to_vec()].concat())
        .unwrap();
    assert_closed_without_a_byte(&mut untrusted, "a peer not in --proxy-from");
    let trusted = connect_from(SECOND, server.addr());
    let mut trusted = Conn::from_stream(trusted);
    trusted.send([v1(addr("192.0.2.7:5555")), b"Ann\n".to_vec()].concat());
    assert_eq!(trusted.text_line(), "Welcome!");
    assert_eq!(trusted.text_line(), "Hello, Ann! from 192.0.2.7:5555");
    assert_eq!(server.refusals("rule"), 1);
    // Refused before a thread: never admitted.
    assert_eq!(server.metric("tcp_hello_connections_total"), 1);
    let logs = server.server.stop_and_logs();
    let refusal = logs
        .lines()
        .find(|l| l.contains("refused 127.0.0.1:"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{logs}"));
    assert!(
        refusal.contains(" INFO  tcp_hello::server::accept]")
            && refusal.ends_with("not a trusted proxy (--proxy-from)"),
        "{refusal}"
    );
    assert!(!logs.contains("without --proxy-from"), "{logs}");
}

#[test]
fn a_tls_listener_reads_the_header_before_the_handshake() {
    let certs = crate::common::tls::make_certs();
    let (cert, key) = (
        certs.server.cert.display().to_string(),
        certs.server.key.display().to_string(),
    );
    let server = Server::start_with_binds(
        &[
            "--tls-bind",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--proxy-protocol",
            "--reply",
            REPLY,
        ],
        1,
    );
    let mut roots = rustls::RootCertStore::empty();
    for cert in tcp_hello::pem::certificates(&certs.ca).unwrap() {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = TcpStream::connect_timeout(&server.addr(), IO_TIMEOUT).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    sock.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    // The header, then the ClientHello right behind it.
    sock.write_all(&v2(addr("203.0.113.9:7000"))).unwrap();
    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, sock));
    let mut line = String::new();
    tls.read_line(&mut line).expect("the welcome over TLS");
    assert_eq!(line, "Welcome!\r\n");
    tls.get_mut().write_all(b"Ann\n").unwrap();
    line.clear();
    tls.read_line(&mut line).expect("the reply over TLS");
    assert_eq!(line, "Hello, Ann! from 203.0.113.9:7000\r\n");
    drop(tls);
    let logs = server.stop_and_logs();
    assert!(
        logs.contains("closed: 203.0.113.9:7000 (via 127.0.0.1:"),
        "{logs}"
    );
}

#[test]
fn proxy_from_without_proxy_protocol_is_a_usage_error() {
    let out = hello_cmd(
        "serve",
        &["--bind", "127.0.0.1:0", "--proxy-from", "10.0.0.1"],
    )
    .stdin(std::process::Stdio::null())
    .output()
    .expect("run tcp-hello serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--proxy-protocol"), "{stderr}");
    let out = hello_cmd("serve", &["--proxy-protocol", "--proxy-from", "10.0.0.1/8"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run tcp-hello serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--proxy-from") && stderr.contains("10.0.0.0/8"),
        "{stderr}"
    );
}

#[test]
fn shutdown_does_not_wait_for_a_header_that_does_not_come() {
    let server = Proxied::start(&["--proxy-header-timeout", "60"]);
    let mut silent = Conn::open(server.addr());
    let mut served = open(server.addr(), &v2(addr("192.0.2.7:5555")), b"");
    assert_eq!(served.text_line(), "Welcome!");
    // The silent connection is registered by now: its thread started before the
    // served one's, and both were accepted in order by the one accept loop.
    let started = Instant::now();
    server.server.signal("TERM");
    let (code, logs) = server.server.wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{logs}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}: {logs}",
        started.elapsed()
    );
    assert_closed_without_a_byte(&mut silent.stream, "a connection still without a header");
    assert!(logs.contains("stopped (0 connections cut off)"), "{logs}");
}

/// TLS handshakes under way count their source as `--max-per-source` does: a claimed
/// `::ffff:192.0.2.9` is `192.0.2.9`, so with one allowed the newer ends the older.
#[test]
fn tls_handshakes_per_source_count_a_mapped_address_as_ipv4() {
    // The first bytes of a ClientHello, and no more.
    const STALLED_HELLO: &[u8] = b"\x16\x03\x01\x00\xc8\x01";
    let certs = crate::common::tls::make_certs();
    let server = crate::common::tls::tls_server(
        &certs,
        &[
            "--proxy-protocol",
            "--tls-handshake-timeout",
            "60",
            "--tls-max-handshakes-per-source",
            "1",
        ],
    );
    let _v4 = open(server.addr(), &v2(addr("192.0.2.9:1000")), STALLED_HELLO);
    let _mapped = open(
        server.addr(),
        &v2(addr("[::ffff:192.0.2.9]:1001")),
        STALLED_HELLO,
    );
    assert!(
        eventually(IO_TIMEOUT, || server
            .logs_so_far()
            .contains("ended the TLS handshake of")),
        "{}",
        server.logs_so_far()
    );
}
