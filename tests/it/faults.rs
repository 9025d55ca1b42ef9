//! `serve --fault`: for every fault, a client over a real socket observes exactly it;
//! probabilities over many connections, the seed's reproducibility, the metrics, and a
//! bad spec refused at start-up.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::{
    Conn, IO_TIMEOUT, Server, eventually, hello_cmd, metrics_addr, metrics_samples, run_tool,
};

/// How long a test waits to be sure that nothing arrives.
const QUIET: Duration = Duration::from_millis(700);

/// What one read on a fresh connection met.
#[derive(Debug, PartialEq)]
enum Met {
    Reset,
    Eof,
    Bytes(Vec<u8>),
    Nothing,
}

fn read_once(stream: &mut TcpStream) -> Met {
    let mut buf = [0u8; 4096];
    match stream.read(&mut buf) {
        Ok(0) => Met::Eof,
        Ok(n) => Met::Bytes(buf[..n].to_vec()),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Met::Reset,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Met::Nothing,
        Err(e) => panic!("unexpected read error: {e}"),
    }
}

fn open(addr: SocketAddr, read_timeout: Duration) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(read_timeout)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Reads until the connection ends: what arrived, and whether it ended in a reset.
fn until_end(stream: &mut TcpStream) -> (Vec<u8>, Met) {
    let mut got = Vec::new();
    loop {
        match read_once(stream) {
            Met::Bytes(b) => got.extend_from_slice(&b),
            end => return (got, end),
        }
    }
}

#[test]
fn reset_at_accept_resets_before_a_byte() {
    let server = Server::start(&["--fault", "reset"]);
    // A reset can come before the connect is seen to be done.
    match TcpStream::connect_timeout(&server.addr(), IO_TIMEOUT) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
        Ok(mut stream) => {
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            assert_eq!(until_end(&mut stream), (Vec::new(), Met::Reset));
        }
    }
    let logs = server.stop_and_logs();
    assert!(logs.contains("conn 1 fault: reset at accept"), "{logs}");
}

#[test]
fn reset_after_the_welcome_and_after_n_replies() {
    let server = Server::start(&["--fault", "reset,after=welcome"]);
    // On a loaded machine the reset can reach the client before its connect is seen to
    // be done, which then fails with it; every connection is struck, so try another.
    let mut stream = (0..10)
        .find_map(
            |_| match TcpStream::connect_timeout(&server.addr(), IO_TIMEOUT) {
                Err(e) if e.kind() == ErrorKind::ConnectionReset => None,
                connected => Some(connected.expect("connect")),
            },
        )
        .expect("a connect that completes before its reset");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(
        until_end(&mut stream),
        (b"Welcome!\r\n".to_vec(), Met::Reset)
    );

    let server = Server::start(&["--fault", "reset,after=2"]);
    let mut conn = server.connect();
    assert_eq!(conn.text_line(), "Welcome!");
    conn.send("Ann\n");
    assert_eq!(conn.text_line(), "Hello, Ann!");
    conn.send("Bob\n");
    assert_eq!(conn.text_line(), "Hello, Bob!");
    conn.send("Cid\n");
    let (rest, end) = until_end(&mut conn.stream);
    assert_eq!((rest, end), (Vec::new(), Met::Reset));
    let logs = server.stop_and_logs();
    assert!(
        logs.contains("conn 1 fault: reset after 2 replies"),
        "{logs}"
    );
}

#[test]
fn close_before_after_and_in_the_middle_of_a_reply_sends_fin() {
    let server = Server::start(&["--fault", "close"]);
    let mut conn = server.connect();
    assert_eq!(conn.text_line(), "Welcome!");
    conn.send("Ann\n");
    assert_eq!(conn.rest(), b"", "EOF before the reply");

    let server = Server::start(&["--fault", "close,when=after-reply"]);
    let mut conn = server.connect();
    assert_eq!(conn.text_line(), "Welcome!");
    conn.send("Ann\n");
    assert_eq!(conn.rest(), b"Hello, Ann!\r\n");

    let server = Server::start(&["--fault", "close,when=mid-reply,after=1"]);
    let mut conn = server.connect();
    assert_eq!(conn.text_line(), "Welcome!");
    conn.send("Ann\n");
    assert_eq!(conn.text_line(), "Hello, Ann!");
    conn.send("Bob\n");
    let partial = conn.rest();
    let whole = b"Hello, Bob!\r\n";
    assert!(
        !partial.is_empty() && partial.len() < whole.len() && whole.starts_with(&partial),
        "a partial reply: {partial:?}"
    );
    let logs = server.stop_and_logs();
    assert!(
        logs.contains("conn 1 fault: close in the middle of a reply after 1 reply"),
        "{logs}"
    );
}

#[test]
fn stall_answers_nothing_stops_reading_and_ends_at_the_idle_timeout() {
    let server = Server::start(&["--fault", "stall", "--idle-timeout", "3"]);
    let mut stream = open(server.addr(), IO_TIMEOUT);
    let mut conn = Conn::from_stream(stream.try_clone().unwrap());
    assert_eq!(conn.text_line(), "Welcome!");
    conn.send("Ann\n");
    stream.set_read_timeout(Some(QUIET)).unwrap();
    assert_eq!(read_once(&mut stream), Met::Nothing, "no reply");
    // The server reads no more: the client's sends fill the buffers and block.
    stream.set_write_timeout(Some(QUIET)).unwrap();
    let chunk = [b'x'; 64 * 1024];
    let mut sent = 0usize;
    let blocked = loop {
        match stream.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break true;
            }
            Err(e) => panic!("send: {e}"),
        }
        if sent > 256 * 1024 * 1024 {
            break false;
        }
    };
    assert!(blocked, "the server kept reading: {sent} bytes taken");
    // The idle timeout still ends it.
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let (_, end) = until_end(&mut stream);
    assert!(matches!(end, Met::Eof | Met::Reset), "{end:?}");
}

#[test]
fn blackhole_never_sends_a_byte_and_shutdown_still_ends_it() {
    let server = Server::start(&["--fault", "blackhole"]);
    let mut stream = open(server.addr(), QUIET);
    assert_eq!(read_once(&mut stream), Met::Nothing, "no welcome");
    stream.write_all(b"Ann\nBob\n").unwrap();
    assert_eq!(read_once(&mut stream), Met::Nothing, "no reply");
    let started = Instant::now();
    server.signal("TERM");
    let (code, logs) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{logs}");
    assert!(started.elapsed() < Duration::from_secs(5), "{logs}");
    assert!(logs.contains("conn 1 fault: blackhole at accept"), "{logs}");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let (got, _) = until_end(&mut stream);
    assert_eq!(got, b"", "not a byte, even at shutdown");
}

#[test]
fn a_stalled_connection_ends_at_shutdown() {
    let server = Server::start(&["--fault", "stall,after=welcome"]);
    let mut conn = server.connect();
    assert_eq!(conn.text_line(), "Welcome!");
    conn.send("Ann\n");
    // The stall has begun once the server logged it.
    assert!(eventually(IO_TIMEOUT, || server
        .logs_so_far()
        .contains("fault: stall")));
    server.signal("TERM");
    let (code, logs) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("stopped (0 connections cut off)"), "{logs}");
}

#[test]
fn delay_holds_each_reply_at_least_its_milliseconds() {
    let server = Server::start(&["--fault", "delay,ms=300..400"]);
    let mut conn = server.connect();
    assert_eq!(conn.text_line(), "Welcome!");
    for name in ["Ann", "Bob"] {
        let asked = Instant::now();
        conn.send(format!("{name}\n"));
        assert_eq!(conn.text_line(), format!("Hello, {name}!"));
        assert!(asked.elapsed() >= Duration::from_millis(300), "{asked:?}");
    }
    let logs = server.stop_and_logs();
    assert!(logs.contains("conn 1 fault: delay 3"), "{logs}");
}

#[test]
fn trickle_sends_replies_a_few_bytes_at_a_time() {
    let server = Server::start(&["--fault", "trickle,bytes=2,ms=100"]);
    let mut stream = open(server.addr(), IO_TIMEOUT);
    let started = Instant::now();
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    while pieces.concat().len() < b"Welcome!\r\n".len() {
        match read_once(&mut stream) {
            Met::Bytes(b) => pieces.push(b),
            other => panic!("{other:?} after {pieces:?}"),
        }
    }
    assert_eq!(pieces.concat(), b"Welcome!\r\n");
    // Five pieces, four pauses of 100 ms; reads may join pieces on a busy machine, but
    // not all of them.
    assert!(pieces.len() >= 2, "{pieces:?}");
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[test]
fn garbage_replaces_one_reply_and_the_connection_goes_on() {
    let server = Server::start(&["--fault", "garbage,after=1"]);
    let mut conn = server.connect();
    assert_eq!(conn.text_line(), "Welcome!");
    conn.send("Ann\n");
    assert_eq!(conn.text_line(), "Hello, Ann!");
    conn.send("Bob\n");
    let garbage = conn.line();
    assert!(
        garbage.contains(&0) && std::str::from_utf8(&garbage).is_err(),
        "{garbage:?}"
    );
    conn.send("Cid\n");
    assert_eq!(conn.text_line(), "Hello, Cid!");
}

/// Which of `n` connections, one after another, were reset at accept.
fn struck(server: &Server, n: usize) -> Vec<bool> {
    (0..n)
        .map(|_| {
            // A reset can come before the connect is seen to be done.
            let mut stream = match TcpStream::connect_timeout(&server.addr(), IO_TIMEOUT) {
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                connected => connected.expect("connect"),
            };
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            match read_once(&mut stream) {
                Met::Reset => true,
                Met::Bytes(b) if b == b"Welcome!\r\n" => false,
                other => panic!("{other:?}"),
            }
        })
        .collect()
}

#[test]
fn p_half_strikes_about_half_and_a_seed_repeats_the_same_connections() {
    let args = ["--fault", "reset,p=0.5", "--fault-seed", "42"];
    let first = struck(&Server::start(&args), 200);
    // 200 draws of p=0.5: standard deviation about 7; 30 is over 4 of them.
    let hits = first.iter().filter(|&&s| s).count();
    assert!((70..=130).contains(&hits), "{hits} of 200 struck");
    let again = struck(&Server::start(&args), 200);
    assert_eq!(first, again, "the same seed, the same connections");
    let other = struck(
        &Server::start(&["--fault", "reset,p=0.5", "--fault-seed", "43"]),
        200,
    );
    assert_ne!(first, other, "another seed, other connections");
}

#[test]
fn a_bad_spec_is_refused_in_one_line_with_exit_2() {
    let done = run_tool(
        &mut hello_cmd("serve", &["--bind", "127.0.0.1:0", "--fault", "resset"]),
        None,
        IO_TIMEOUT,
    );
    assert_eq!(done.code, Some(2), "{done:?}");
    assert_eq!(
        done.stderr,
        "tcp-hello: --fault resset: unknown fault \"resset\"; the faults are reset, close, \
         stall, blackhole, delay, trickle, garbage (UDP: drop, duplicate, delay)\n"
    );
    let done = run_tool(
        &mut hello_cmd("serve", &["--fault", "close,when=soon"]),
        None,
        IO_TIMEOUT,
    );
    assert_eq!(done.code, Some(2), "{done:?}");
    assert_eq!(done.stderr.lines().count(), 1, "{}", done.stderr);
    assert!(done.stderr.contains("when=soon"), "{}", done.stderr);
}

#[test]
fn struck_faults_are_counted_in_the_metrics() {
    let server = Server::start(&[
        "--fault",
        "reset,after=1",
        "--fault",
        "trickle,bytes=64,ms=1",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let metrics = metrics_addr(&server);
    for _ in 0..2 {
        let mut conn = server.connect();
        assert_eq!(conn.text_line(), "Welcome!");
        conn.send("Ann\nBob\n");
        assert_eq!(conn.text_line(), "Hello, Ann!");
        assert_eq!(until_end(&mut conn.stream).1, Met::Reset);
    }
    let samples = metrics_samples(metrics);
    assert_eq!(samples[r#"tcp_hello_faults_total{kind="reset"}"#], 2);
    assert_eq!(samples[r#"tcp_hello_faults_total{kind="trickle"}"#], 2);
    assert_eq!(samples[r#"tcp_hello_faults_total{kind="stall"}"#], 0);
    assert_eq!(samples[r#"tcp_hello_closes_total{reason="fault"}"#], 2);
}

#[test]
fn without_fault_the_metrics_have_no_fault_counts() {
    let server = Server::start(&["--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    let samples = metrics_samples(metrics);
    assert!(
        !samples
            .keys()
            .any(|k| k.starts_with("tcp_hello_faults_total"))
    );
}

/// A UDP server alone on 127.0.0.1, unlimited in rate, with `args`; its address.
fn udp_server(args: &[&str]) -> (Server, SocketAddr) {
    let mut all = vec!["--udp-bind", "127.0.0.1:0", "--udp-rate", "0"];
    all.extend_from_slice(args);
    let server = Server::start_with_binds(&all, 1);
    let udp = server.addr();
    (server, udp)
}

fn udp_socket(server: SocketAddr, read_timeout: Duration) -> std::net::UdpSocket {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.set_read_timeout(Some(read_timeout)).unwrap();
    socket.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    socket.connect(server).unwrap();
    socket
}

/// The datagrams that arrive until `QUIET` passes without one.
fn udp_replies(socket: &std::net::UdpSocket) -> Vec<Vec<u8>> {
    socket.set_read_timeout(Some(QUIET)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = socket.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    got
}

#[test]
fn udp_drop_with_p_drops_about_that_share_and_counts_each() {
    let (server, udp) = udp_server(&[
        "--fault",
        "drop,p=0.5",
        "--fault-seed",
        "7",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let metrics = metrics_addr(&server);
    let socket = udp_socket(udp, IO_TIMEOUT);
    let mut replies = Vec::new();
    // In rounds of 20, so that no burst outgrows the socket buffers.
    for round in 0..10 {
        for i in 0..20 {
            socket.send(format!("n{round}-{i}").as_bytes()).unwrap();
        }
        replies.extend(udp_replies(&socket));
    }
    // 200 draws of p=0.5: standard deviation about 7; 30 is over 4 of them.
    let dropped = 200 - replies.len();
    assert!((70..=130).contains(&dropped), "{dropped} of 200 dropped");
    let samples = metrics_samples(metrics);
    assert_eq!(
        samples[r#"tcp_hello_faults_total{kind="drop"}"#],
        dropped as u64
    );
    let logs = server.stop_and_logs();
    assert!(
        logs.contains(&format!("faults: {dropped} replies dropped")),
        "{logs}"
    );
}

#[test]
fn udp_duplicate_sends_each_reply_twice_and_delay_holds_it() {
    let (_server, udp) = udp_server(&["--fault", "duplicate"]);
    let socket = udp_socket(udp, IO_TIMEOUT);
    socket.send(b"Ann").unwrap();
    let replies = udp_replies(&socket);
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[0], replies[1]);
    assert!(String::from_utf8_lossy(&replies[0]).contains("Hello, Ann!"));

    let (_server, udp) = udp_server(&["--fault", "delay,ms=300"]);
    let socket = udp_socket(udp, IO_TIMEOUT);
    let asked = Instant::now();
    socket.send(b"Ann").unwrap();
    let mut buf = [0u8; 2048];
    let n = socket.recv(&mut buf).expect("a reply");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("Hello, Ann!"));
    assert!(asked.elapsed() >= Duration::from_millis(300));
}

/// `tcp-hello client --connect ADDR ARGS...` against `server`, run to its end.
fn client(server: &Server, args: &[&str]) -> crate::common::Finished {
    let addr = server.addr().to_string();
    let mut all = vec!["--connect", addr.as_str()];
    all.extend_from_slice(args);
    run_tool(&mut hello_cmd("client", &all), None, IO_TIMEOUT * 2)
}

#[test]
fn the_client_says_plainly_what_it_met_with_its_exit_codes() {
    use tcp_hello::client::{EXIT_PROTOCOL, EXIT_TIMEOUT};

    let server = Server::start(&["--fault", "reset,after=2"]);
    let run = client(&server, &["Ann", "Bob", "Cid"]);
    assert_eq!(run.code, Some(i32::from(EXIT_PROTOCOL)), "{run:?}");
    assert!(
        run.stderr
            .contains("connection reset by the server after 2 replies"),
        "{run:?}"
    );

    let server = Server::start(&["--fault", "close,when=mid-reply,after=1"]);
    let run = client(&server, &["Ann", "Bob"]);
    assert_eq!(run.code, Some(i32::from(EXIT_PROTOCOL)), "{run:?}");
    assert!(
        run.stderr
            .contains("the server closed the connection in the middle of a reply after 1 reply"),
        "{run:?}"
    );

    let server = Server::start(&["--fault", "close,after=1"]);
    let run = client(&server, &["Ann", "Bob"]);
    assert_eq!(run.code, Some(i32::from(EXIT_PROTOCOL)), "{run:?}");
    assert!(
        run.stderr
            .contains("the server closed the connection after 1 reply, with 1 name unanswered"),
        "{run:?}"
    );

    let server = Server::start(&["--fault", "garbage,after=1"]);
    let run = client(&server, &["Ann", "Bob", "Cid"]);
    assert_eq!(run.code, Some(i32::from(EXIT_PROTOCOL)), "{run:?}");
    assert!(
        run.stderr.contains(
            "the server sent 1 line with control bytes, not text (the first after 1 reply)"
        ),
        "{run:?}"
    );
    // Shown escaped, so that it cannot drive the terminal; the rest is served.
    assert!(run.stdout.contains("\\u{1b}[5m\\u{7f}#GARBAGE#"), "{run:?}");
    assert!(!run.stdout.contains('\u{1b}'), "{run:?}");
    assert!(run.stdout.contains("Hello, Cid!"), "{run:?}");

    let server = Server::start(&["--fault", "stall"]);
    let run = client(&server, &["--reply-timeout", "1", "Ann"]);
    assert_eq!(run.code, Some(i32::from(EXIT_TIMEOUT)), "{run:?}");
    assert!(run.stderr.contains("1 name unanswered"), "{run:?}");

    let server = Server::start(&["--fault", "blackhole"]);
    let run = client(&server, &["--reply-timeout", "1", "Ann"]);
    assert_eq!(run.code, Some(i32::from(EXIT_TIMEOUT)), "{run:?}");
    assert!(run.stderr.contains("waiting for its welcome"), "{run:?}");
}

/// What Python's socket module meets, one word per fault: another client's stack.
const PYTHON_CLIENT: &str = r#"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.settimeout(float(sys.argv[2]))
got = b""
try:
    got += s.recv(100)
    s.sendall(b"Ann\n")
    while True:
        b = s.recv(100)
        if not b:
            print("eof", repr(got)); break
        got += b
except ConnectionResetError:
    print("reset", repr(got))
except socket.timeout:
    print("timeout", repr(got))
"#;

#[test]
fn python_meets_a_reset_a_close_mid_reply_and_a_stall() {
    if !crate::common::require("python3", "python3") {
        return;
    }
    let cases = [
        ("reset,after=welcome", "reset b'Welcome!\\r\\n'"),
        ("close,when=mid-reply", "eof b'Welcome!\\r\\nHello,'"),
        ("stall", "timeout b'Welcome!\\r\\n'"),
    ];
    for (fault, wanted) in cases {
        let server = Server::start(&["--fault", fault]);
        let port = server.addr().port().to_string();
        let mut cmd = std::process::Command::new("python3");
        cmd.args(["-c", PYTHON_CLIENT, &port, "1"]);
        let done = run_tool(&mut cmd, None, IO_TIMEOUT);
        assert_eq!(done.stdout.trim(), wanted, "{fault}: {done:?}");
    }
}

/// Faults act on the protocol, under TLS as over plain TCP: a reset is a TCP reset
/// under the session, a close mid-reply cuts a record's plaintext, a delay holds the
/// reply. What the bundled client says is the same as without TLS.
#[test]
fn faults_strike_tls_connections_too() {
    use crate::common::tls::{make_certs, tls_server};
    use tcp_hello::client::EXIT_PROTOCOL;

    let certs = make_certs();
    let ca = certs.ca.to_str().expect("UTF-8 path").to_string();
    let tls_client = |server: &Server, names: &[&str]| {
        let addr = server.addr().to_string();
        let mut args = vec!["--tls", "--tls-ca", &ca, "--connect", &addr];
        args.extend_from_slice(names);
        let mut cmd = hello_cmd("client", &args);
        cmd.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
        run_tool(&mut cmd, None, IO_TIMEOUT * 2)
    };

    let server = tls_server(&certs, &["--fault", "reset,after=2"]);
    let run = tls_client(&server, &["Ann", "Bob", "Cid"]);
    assert_eq!(run.code, Some(i32::from(EXIT_PROTOCOL)), "{run:?}");
    assert!(
        run.stderr
            .contains("connection reset by the server after 2 replies"),
        "{run:?}"
    );
    assert!(run.stdout.contains("Hello, Bob!"), "{run:?}");

    let server = tls_server(&certs, &["--fault", "close,when=mid-reply,after=1"]);
    let run = tls_client(&server, &["Ann", "Bob"]);
    assert_eq!(run.code, Some(i32::from(EXIT_PROTOCOL)), "{run:?}");
    assert!(run.stderr.contains("in the middle of a reply"), "{run:?}");

    let server = tls_server(&certs, &["--fault", "delay,ms=300"]);
    let started = Instant::now();
    let run = tls_client(&server, &["Ann", "Bob"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("Hello, Bob!"), "{run:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "two replies, each held 300 ms: {:?}",
        started.elapsed()
    );
}

/// In a container the faults come from the environment, as every serve flag can:
/// `TCP_HELLO_FAULT`, specs separated by `;`.
#[test]
fn faults_can_come_from_the_environment() {
    let mut cmd = std::process::Command::new(crate::common::bin());
    cmd.args(["serve", "--bind", "127.0.0.1:0"])
        .env("TCP_HELLO_FAULT", "close,after=1;delay,ms=0")
        .env("TCP_HELLO_FAULT_SEED", "7");
    let server = Server::start_cmd(&mut cmd, 1);
    let mut stream = open(server.addr(), IO_TIMEOUT);
    stream.write_all(b"Ann\nBob\n").unwrap();
    let (got, met) = until_end(&mut stream);
    assert_eq!(got, b"Welcome!\r\nHello, Ann!\r\n", "{met:?}");
    assert!(matches!(met, Met::Eof), "{met:?}");
    let logs = server.stop_and_logs();
    assert!(
        logs.contains("faults on: 2 faults (--fault-seed 7)"),
        "{logs}"
    );
}
