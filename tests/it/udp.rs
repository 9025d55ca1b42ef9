//! `serve --udp-bind` and `client --udp`: the datagram half, over real sockets. Every
//! socket has a timeout; no test sleeps for readiness (servers announce their ports).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{
    IO_TIMEOUT, KillOnDrop, Server, cannot_run, eventually, hello_cmd, metrics_addr, metrics_body,
    metrics_samples, require, run_tool,
};

/// A UDP server alone on IPv4 and IPv6, with `args`.
fn udp_server(args: &[&str]) -> Server {
    let mut all = vec!["--udp-bind", "127.0.0.1:0", "--udp-bind", "[::1]:0"];
    all.extend_from_slice(args);
    Server::start_with_binds(&all, 2)
}

/// A UDP socket on `local` with timeouts, connected to `server`.
fn client_socket(local: &str, server: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind(local).expect("bind a client socket");
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    socket.connect(server).unwrap();
    socket
}

fn local_for(server: SocketAddr) -> &'static str {
    if server.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    }
}

/// Sends `datagram` and returns the reply.
fn ask(socket: &UdpSocket, datagram: &[u8]) -> Vec<u8> {
    socket.send(datagram).unwrap();
    let mut buf = vec![0u8; 70_000];
    let n = socket.recv(&mut buf).expect("a reply");
    buf.truncate(n);
    buf
}

/// Nothing arrives on `socket` within a short while (the server dropped the datagram).
fn nothing_more(socket: &UdpSocket) {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 1024];
    if let Ok(n) = socket.recv(&mut buf) {
        panic!(
            "unexpected datagram {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
}

#[test]
fn greets_over_ipv4_and_ipv6_and_opens_no_tcp_listener_alone() {
    let server = udp_server(&[]);
    assert!(server.announced[0].starts_with("listening on udp 127.0.0.1:"));
    assert!(server.announced[1].starts_with("listening on udp [::1]:"));
    for &addr in &server.addrs {
        let socket = client_socket(local_for(addr), addr);
        assert_eq!(ask(&socket, b"Alice"), b"Hello, Alice!");
        assert_eq!(ask(&socket, b"Bob\n"), b"Hello, Bob!\n");
        assert_eq!(ask(&socket, b"Carol\r\n"), b"Hello, Carol!\r\n");
        // No session, so `exit` is a name like any other.
        assert_eq!(ask(&socket, b"exit"), b"Hello, exit!");
        // No TCP listener on the port (the default --bind does not apply).
        assert!(std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT).is_err());
    }
    let logs = server.stop_and_logs();
    assert!(
        logs.contains("4 datagrams received, 4 answered, 0 dropped"),
        "{logs}"
    );
    assert!(!logs.contains("datagrams received, 0 answered"), "{logs}");
}

#[test]
fn echoes_over_ipv4_and_ipv6() {
    let server = udp_server(&["--mode", "echo"]);
    for &addr in &server.addrs {
        let socket = client_socket(local_for(addr), addr);
        for datagram in [&b"Alice\r\n"[..], b"exit", b"\xff\x00 bytes", b"   "] {
            assert_eq!(ask(&socket, datagram), datagram);
        }
    }
}

#[test]
fn tcp_and_udp_serve_side_by_side() {
    let server =
        Server::start_with_binds(&["--bind", "127.0.0.1:0", "--udp-bind", "127.0.0.1:0"], 2);
    assert!(!server.announced[0].contains("udp"));
    assert!(server.announced[1].starts_with("listening on udp "));
    let mut conn = server.connect();
    assert_eq!(conn.text_line(), "Welcome!");
    conn.send("Alice\n");
    assert_eq!(conn.text_line(), "Hello, Alice!");
    let udp = server.addrs[1];
    let socket = client_socket(local_for(udp), udp);
    assert_eq!(ask(&socket, b"Bob"), b"Hello, Bob!");
}

#[test]
fn empty_maximum_and_over_size_datagrams() {
    let server = udp_server(&["--max-line", "100"]);
    let addr = server.addrs[0];
    let socket = client_socket(local_for(addr), addr);
    // The empty one and the blank one get nothing: the next reply is the marker's.
    socket.send(b"").unwrap();
    socket.send(b" \t\n").unwrap();
    assert_eq!(ask(&socket, b"marker"), b"Hello, marker!");
    let max = vec![b'm'; 100];
    let reply = ask(&socket, &[&max[..], b"\r\n"].concat());
    assert_eq!(reply, [&b"Hello, "[..], &max, b"!\r\n"].concat());
    // One byte over: dropped, not cut to fit; far over too.
    socket.send(&[b'o'; 101]).unwrap();
    socket.send(&[b'o'; 60_000]).unwrap();
    assert_eq!(ask(&socket, b"after"), b"Hello, after!");
    nothing_more(&socket);
    let logs = server.stop_and_logs();
    assert!(
        logs.contains("7 datagrams received, 3 answered, 4 dropped (empty 2, too_long 2)"),
        "{logs}"
    );
}

#[test]
fn no_reply_exceeds_the_request_plus_the_announced_bound() {
    let template = "{peer} #{conn} {host}/{pid}: {}";
    let server = udp_server(&["--reply", template, "--max-line", "2000"]);
    // Logged just before the announcement, but read from stderr by another thread.
    assert!(crate::common::eventually(IO_TIMEOUT, || server
        .logs_so_far()
        .contains("replies at most ")));
    let logs = server.logs_so_far();
    let fixed: usize = logs
        .split("replies at most ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no bound announced: {logs}"));
    for &addr in &server.addrs {
        let socket = client_socket(local_for(addr), addr);
        for size in [1, 2, 10, 100, 1000, 2000] {
            let request = vec![b'a'; size];
            let reply = ask(&socket, &request);
            assert!(
                reply.len() <= size + fixed,
                "{size} bytes got {} back, bound {fixed}",
                reply.len()
            );
            assert!(reply.ends_with(&request));
        }
    }
}

#[test]
fn a_reply_template_that_multiplies_the_payload_is_refused() {
    let done = run_tool(
        &mut hello_cmd("serve", &["--udp-bind", "127.0.0.1:0", "--reply", "{} {}"]),
        None,
        IO_TIMEOUT,
    );
    assert_eq!(done.code, Some(2), "{done:?}");
    assert!(done.stderr.contains("use `{}` once"), "{done:?}");
}

#[test]
fn a_reply_template_that_adds_more_than_128_bytes_is_refused() {
    let long = format!("{}{{}}", "A".repeat(60_000));
    for (args, adds) in [
        (&["--reply", long.as_str()][..], 60_000),
        (&["--reply", "{peer} {local} {}"], 130),
    ] {
        let mut all = vec!["--udp-bind", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let done = run_tool(&mut hello_cmd("serve", &all), None, IO_TIMEOUT);
        assert_eq!(done.code, Some(2), "{done:?}");
        let says = format!("--reply adds up to {adds} bytes to a request");
        assert!(
            done.stderr.contains(&says) && done.stderr.contains("at most 128"),
            "{done:?}"
        );
        assert_eq!(done.stderr.lines().count(), 1, "{done:?}");
    }
    // Over TCP alone the template is not a UDP reply, and is served.
    let server = Server::start(&["--reply", &long]);
    let mut conn = server.connect();
    assert_eq!(conn.text_line(), "Welcome!");
    drop(server);
}

#[test]
fn the_server_s_own_port_is_never_answered() {
    let server = Server::start_with_binds(&["--udp-bind", "127.0.0.1:0"], 1);
    let addr = server.addrs[0];
    // The same port on another loopback address: what the server's own address, or
    // another server on that port (which would answer the reply), looks like.
    let twin = client_socket(&format!("127.0.0.2:{}", addr.port()), addr);
    twin.send(b"loop?").unwrap();
    let socket = client_socket("127.0.0.1:0", addr);
    // Handled in order on the server's one thread: once this is answered, so was that.
    assert_eq!(ask(&socket, b"marker"), b"Hello, marker!");
    nothing_more(&twin);
    let logs = server.stop_and_logs();
    assert!(logs.contains("1 dropped (loop 1)"), "{logs}");
}

#[test]
fn no_socket_answers_a_datagram_from_another_socket_s_port() {
    // Two sockets of one server, in the mode and with the rate that loop the longest.
    let args = [
        "--udp-bind",
        "127.0.0.1:0",
        "--udp-bind",
        "127.0.0.1:0",
        "--mode",
        "echo",
        "--udp-rate",
        "0",
    ];
    let server = Server::start_with_binds(&args, 2);
    let (first, second) = (server.addrs[0], server.addrs[1]);
    // The second socket's port on another loopback address stands for the second
    // socket (which would answer the reply, and so on).
    let twin = client_socket(&format!("127.0.0.2:{}", second.port()), first);
    twin.send(b"loop?").unwrap();
    let socket = client_socket("127.0.0.1:0", first);
    // Handled in order on the socket's one thread: once this is answered, so was that.
    assert_eq!(ask(&socket, b"marker"), b"marker");
    nothing_more(&twin);
    let logs = server.stop_and_logs();
    assert!(
        logs.contains(&format!(
            "udp {first} stopped: 2 datagrams received, 1 answered, 1 dropped (loop 1)"
        )),
        "{logs}"
    );
}

/// A raw IPv4 UDP socket, to send datagrams from any source port (the kernel writes
/// the IP header, from 127.0.0.1 on loopback); None, having said why (see
/// `cannot_run`), without the privilege to open one (CAP_NET_RAW: root).
fn forger() -> Option<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)) {
        Ok(raw) => {
            raw.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
            raw.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            Some(raw)
        }
        Err(e) => {
            cannot_run(&format!(
                "cannot open a raw socket to forge a source port ({e}): run as root"
            ));
            None
        }
    }
}

/// Sends `payload` to `to` from 127.0.0.1:`from_port`, whoever has that port.
fn forge(raw: &socket2::Socket, from_port: u16, to: SocketAddr, payload: &[u8]) {
    let mut datagram = Vec::with_capacity(8 + payload.len());
    datagram.extend_from_slice(&from_port.to_be_bytes());
    datagram.extend_from_slice(&to.port().to_be_bytes());
    datagram.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    // Checksum 0: none, which UDP over IPv4 allows.
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(payload);
    let mut ip = to;
    ip.set_port(0);
    raw.send_to(&datagram, &ip.into())
        .expect("send a forged datagram");
}

/// The total of the UDP samples named `name` on a metrics listener.
fn udp_metric(metrics: SocketAddr, name: &str) -> u64 {
    metrics_samples(metrics)
        .get(name)
        .copied()
        .unwrap_or_default()
}

#[test]
fn one_forged_datagram_between_two_servers_makes_one_reply() {
    let Some(raw) = forger() else { return };
    // Echo with no rate limit looped forever; two default servers, 1,024 times.
    for flags in [&["--mode", "echo", "--udp-rate", "0"][..], &[]] {
        let start = |metrics: bool| {
            let mut args = vec!["--udp-bind", "127.0.0.1:0"];
            if metrics {
                args.extend_from_slice(&["--metrics", "127.0.0.1:0"]);
            }
            args.extend_from_slice(flags);
            Server::start_with_binds(&args, 1)
        };
        let (a, b) = (start(false), start(true));
        let b_metrics = metrics_addr(&b);
        let (a_addr, b_addr) = (a.addrs[0], b.addrs[0]);
        // From B's address and port to A: A answers B, whose socket gets the reply.
        forge(&raw, b_addr.port(), a_addr, b"Alice\n");
        assert!(
            eventually(IO_TIMEOUT, || udp_metric(
                b_metrics,
                "tcp_hello_udp_datagrams_total"
            ) >= 1),
            "{flags:?}: B never got A's reply"
        );
        let (a_logs, b_logs) = (a.stop_and_logs(), b.stop_and_logs());
        assert!(
            a_logs.contains(&format!(
                "udp {a_addr} stopped: 1 datagram received, 1 answered, 0 dropped"
            )),
            "{flags:?}: A\n{a_logs}"
        );
        assert!(
            b_logs.contains(&format!(
                "udp {b_addr} stopped: 1 datagram received, 0 answered, 1 dropped (reply 1)"
            )),
            "{flags:?}: B\n{b_logs}"
        );
    }
}

#[test]
fn service_and_low_source_ports_are_not_answered_unless_allowed() {
    let Some(raw) = forger() else { return };
    for (flags, summary) in [
        (
            &[][..],
            "3 datagrams received, 1 answered, 2 dropped (loop 1, low_port 1)",
        ),
        (
            &["--udp-low-ports"],
            "3 datagrams received, 2 answered, 1 dropped (loop 1)",
        ),
    ] {
        let mut args = vec!["--udp-bind", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        let server = Server::start_with_binds(&args, 1);
        let addr = server.addrs[0];
        // 17 is QOTD, answered by no one; 1000 is another service's port.
        forge(&raw, 17, addr, b"qotd?");
        forge(&raw, 1000, addr, b"service?");
        let socket = client_socket("127.0.0.1:0", addr);
        // Handled in order: once this is answered, so were those.
        assert_eq!(ask(&socket, b"marker"), b"Hello, marker!");
        let logs = server.stop_and_logs();
        assert!(logs.contains(summary), "{flags:?}\n{logs}");
    }
}

#[test]
fn rules_and_the_rate_limit_apply() {
    let server = Server::start_with_binds(
        &[
            "--udp-bind",
            "127.0.0.1:0",
            "--deny",
            "127.0.0.3",
            "--udp-rate",
            "1",
        ],
        1,
    );
    let addr = server.addrs[0];
    let denied = client_socket("127.0.0.3:0", addr);
    denied.send(b"denied").unwrap();
    let busy = client_socket("127.0.0.1:0", addr);
    for _ in 0..5 {
        busy.send(b"again").unwrap();
    }
    // Another address has a bucket of its own.
    let marker = client_socket("127.0.0.2:0", addr);
    assert_eq!(ask(&marker, b"marker"), b"Hello, marker!");
    nothing_more(&denied);
    busy.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let mut answered = 0;
    while busy.recv(&mut buf).is_ok() {
        answered += 1;
    }
    // A burst of 1, and perhaps a second token if the machine is very slow.
    assert!((1..=2).contains(&answered), "{answered} answered");
    let logs = server.stop_and_logs();
    assert!(logs.contains("rule 1"), "{logs}");
    assert!(logs.contains(&format!("rate {}", 5 - answered)), "{logs}");
}

#[test]
fn nc_u_talks_to_the_server() {
    if !require("nc", "netcat-openbsd") {
        return;
    }
    let server = Server::start_with_binds(&["--udp-bind", "127.0.0.1:0"], 1);
    let addr = server.addrs[0];
    let done = run_tool(
        Command::new("nc").args(["-u", "-w", "2", "127.0.0.1", &addr.port().to_string()]),
        Some(b"Alice\n"),
        IO_TIMEOUT * 2,
    );
    assert_eq!(done.stdout, "Hello, Alice!\n", "{done:?}");
}

#[test]
fn the_client_greets_over_ipv4_and_ipv6() {
    let server = udp_server(&[]);
    for addr in &server.addrs {
        let target = addr.to_string();
        let done = run_tool(
            &mut hello_cmd("client", &["--udp", "--connect", &target, "Alice", "Bob"]),
            None,
            IO_TIMEOUT,
        );
        assert_eq!(done.code, Some(0), "{done:?}");
        assert_eq!(done.stdout, "Hello, Alice!\nHello, Bob!\n");
        // Each line of stdin is a name; blank lines are not sent.
        let done = run_tool(
            &mut hello_cmd("client", &["--udp", "--connect", &target]),
            Some(b"Carol\n\nDave\r\n"),
            IO_TIMEOUT,
        );
        assert_eq!(done.code, Some(0), "{done:?}");
        assert_eq!(done.stdout, "Hello, Carol!\nHello, Dave!\n");
    }
}

#[test]
fn raw_over_udp_sends_stdin_lines_as_datagrams() {
    let server = Server::start_with_binds(&["--udp-bind", "127.0.0.1:0", "--mode", "echo"], 1);
    let target = server.addrs[0].to_string();
    let args = [
        "--udp",
        "--raw",
        "--connect",
        &target,
        "--reply-timeout",
        "1",
    ];
    let done = run_tool(
        &mut hello_cmd("client", &args),
        Some(b"one\ntwo\r\nthree"),
        IO_TIMEOUT,
    );
    assert_eq!(done.code, Some(0), "{done:?}");
    assert_eq!(done.stdout, "one\ntwo\r\nthree");
}

/// A tiny UDP server in Python: prints its port, then answers `Hi <datagram>`; `drop`
/// ignores the first datagram, `silent` never answers.
const PYTHON_SERVER: &str = r#"
import socket, sys
mode = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
seen = 0
while True:
    data, peer = s.recvfrom(65535)
    seen += 1
    if mode == "silent" or (mode == "drop" and seen == 1):
        continue
    s.sendto(b"Hi " + data, peer)
"#;

/// Starts [`PYTHON_SERVER`] in `mode`; returns it and its address.
fn python_server(mode: &str) -> Option<(KillOnDrop, SocketAddr)> {
    if !require("python3", "python3") {
        return None;
    }
    let mut child = KillOnDrop(
        Command::new("python3")
            .args(["-c", PYTHON_SERVER, mode])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3"),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("python announces its port");
    Some((child, SocketAddr::from(([127, 0, 0, 1], port))))
}

#[test]
fn the_client_talks_to_a_python_udp_server() {
    let Some((_python, addr)) = python_server("answer") else {
        return;
    };
    let done = run_tool(
        &mut hello_cmd(
            "client",
            &["--udp", "--connect", &addr.to_string(), "Alice"],
        ),
        None,
        IO_TIMEOUT,
    );
    assert_eq!(done.code, Some(0), "{done:?}");
    assert_eq!(done.stdout, "Hi Alice\n");
}

#[test]
fn a_lost_datagram_is_sent_again() {
    let Some((_python, addr)) = python_server("drop") else {
        return;
    };
    // 7 s over 3 sends: waits of 1, 2 and 4 s.
    let args = [
        "-v",
        "--udp",
        "--connect",
        &addr.to_string(),
        "--reply-timeout",
        "7",
        "--retries",
        "2",
        "Alice",
    ];
    let done = run_tool(&mut hello_cmd("client", &args), None, IO_TIMEOUT);
    assert_eq!(done.code, Some(0), "{done:?}");
    assert_eq!(done.stdout, "Hi Alice\n");
    assert!(done.stderr.contains("sending again"), "{done:?}");
}

#[test]
fn a_server_that_never_answers_is_loss_exit_8() {
    let Some((_python, addr)) = python_server("silent") else {
        return;
    };
    let args = [
        "--udp",
        "--connect",
        &addr.to_string(),
        "--reply-timeout",
        "0.6",
        "--retries",
        "1",
        "Alice",
        "Bob",
    ];
    let started = Instant::now();
    let done = run_tool(&mut hello_cmd("client", &args), None, IO_TIMEOUT);
    assert_eq!(done.code, Some(8), "{done:?}");
    assert!(started.elapsed() >= Duration::from_millis(1200), "{done:?}");
    assert_eq!(done.stdout, "");
    assert!(done.stderr.contains("no reply from udp"), "{done:?}");
    assert!(
        done.stderr.contains("2 of 2 names got no reply"),
        "{done:?}"
    );
}

#[test]
fn a_closed_port_is_exit_3() {
    // A port just freed: nothing listens there, so the kernel answers ICMP unreachable.
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("127.0.0.1:{port}");
    let args = [
        "--udp",
        "--connect",
        &target,
        "--reply-timeout",
        "5",
        "Alice",
    ];
    let done = run_tool(&mut hello_cmd("client", &args), None, IO_TIMEOUT);
    assert_eq!(done.code, Some(3), "{done:?}");
    assert!(done.stderr.contains("nothing listens on udp"), "{done:?}");
}

#[test]
fn sigterm_stops_a_udp_only_server_with_its_summary() {
    let server = udp_server(&[]);
    let addr = server.addrs[0];
    let socket = client_socket(local_for(addr), addr);
    assert_eq!(ask(&socket, b"Alice"), b"Hello, Alice!");
    server.signal("TERM");
    let (code, logs) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("1 datagram received, 1 answered"), "{logs}");
}

#[test]
fn a_udp_port_in_use_is_named_with_its_flag() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let done = run_tool(
        &mut hello_cmd("serve", &["--udp-bind", &addr]),
        None,
        IO_TIMEOUT,
    );
    assert_eq!(done.code, Some(2), "{done:?}");
    assert!(
        done.stderr.contains(&format!("cannot bind udp {addr}"))
            && done.stderr.contains("another port with --udp-bind"),
        "{done:?}"
    );
}

#[test]
fn metrics_count_udp_datagrams() {
    let server = Server::start_with_binds(
        &["--udp-bind", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
        1,
    );
    let metrics: SocketAddr = server
        .stdout_line()
        .strip_prefix("metrics on ")
        .expect("metrics announced")
        .parse()
        .unwrap();
    let addr = server.addrs[0];
    let socket = client_socket(local_for(addr), addr);
    assert_eq!(ask(&socket, b"Alice"), b"Hello, Alice!");
    socket.send(b"").unwrap();
    // Published once the socket is quiet for its poll (200 ms), or within a second.
    assert!(
        crate::common::eventually(IO_TIMEOUT, || {
            let body = metrics_body(metrics);
            body.contains("tcp_hello_udp_datagrams_total 2\n")
                && body.contains("tcp_hello_udp_replies_total 1\n")
                && body.contains("tcp_hello_udp_dropped_total{reason=\"empty\"} 1\n")
        }),
        "{}",
        metrics_body(metrics)
    );
    // The TCP counters are still there.
    assert!(metrics_body(metrics).contains("tcp_hello_connections_total 0\n"));
}

#[test]
fn retries_without_udp_is_a_usage_error() {
    let done = run_tool(
        &mut hello_cmd("client", &["--retries", "2", "Alice"]),
        None,
        IO_TIMEOUT,
    );
    assert_eq!(done.code, Some(2), "{done:?}");
    assert!(done.stderr.contains("--udp"), "{done:?}");
}

#[test]
fn the_environment_names_udp_sockets_too() {
    let mut cmd = Command::new(crate::common::bin());
    crate::common::clean_env(&mut cmd)
        .env("TCP_HELLO_UDP_BIND", "127.0.0.1:0")
        .arg("serve");
    let server = Server::start_cmd(&mut cmd, 1);
    assert!(server.announced[0].starts_with("listening on udp "));
    let addr = server.addrs[0];
    let socket = client_socket(local_for(addr), addr);
    assert_eq!(ask(&socket, b"env"), b"Hello, env!");
}
