//! Integration tests of `serve --metrics`: the real binary, scraped over a plain socket.
//!
//! `common::Server` starts it and reads the `listening on` line; these tests read the
//! `metrics on ADDR` line that follows.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{IO_TIMEOUT, Server, connect_from, eventually, hello_cmd, metrics_addr};

const SECOND: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A running `tcp-hello serve --metrics`, killed when dropped.
struct Served {
    server: Server,
    addr: SocketAddr,
    metrics: SocketAddr,
}

impl Served {
    /// Starts `tcp-hello serve --bind 127.0.0.1:0 <args>`, where `cmd` may set the
    /// environment, and reads its `listening on` and `metrics on` lines.
    fn start(mut cmd: Command, args: &[&str]) -> Served {
        let server = Server::start_cmd(cmd.args(["--bind", "127.0.0.1:0"]).args(args), 1);
        let metrics = metrics_addr(&server);
        Served {
            addr: server.addr(),
            server,
            metrics,
        }
    }

    /// `GET path`: the status code and the body.
    fn get(&self, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect_timeout(&self.metrics, IO_TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read response");
        let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
        let status = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line in {head:?}"));
        (status, body.to_string())
    }

    /// The samples of one scrape of `/metrics`, by name with labels.
    fn scrape(&self) -> HashMap<String, u64> {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        samples(&body)
    }

    /// Stops the server with SIGTERM; its exit code and everything it logged.
    fn stop(self) -> (Option<i32>, String) {
        self.server.signal("TERM");
        self.server.wait(IO_TIMEOUT)
    }
}

/// `name{labels} value` lines, without the comments.
fn samples(body: &str) -> HashMap<String, u64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("`name value`");
            let value = value.parse().unwrap_or_else(|_| panic!("value of {l:?}"));
            (name.to_string(), value)
        })
        .collect()
}

fn value(samples: &HashMap<String, u64>, name: &str) -> u64 {
    *samples
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {samples:?}"))
}

/// Reads one line (to `\n`) byte by byte; the bytes read.
fn line(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut byte = [0u8];
    while out.last() != Some(&b'\n') {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => out.push(byte[0]),
            Err(e) => panic!("read a line: {e}"),
        }
    }
    out
}

/// Reads until the server closes; how many bytes came.
fn rest(stream: &mut TcpStream) -> usize {
    let mut all = Vec::new();
    match stream.read_to_end(&mut all) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("read to the end: {e}"),
    }
    all.len()
}

#[test]
fn counts_sessions_closes_and_refusals() {
    let server = Served::start(
        hello_cmd("serve", &[]),
        &["--metrics", "127.0.0.1:0", "--deny", "127.0.0.2"],
    );
    let mut received = 0;
    // One says exit.
    let mut a = connect_from(Ipv4Addr::LOCALHOST.into(), server.addr);
    received += line(&mut a).len();
    a.write_all(b"hello\n").unwrap();
    received += line(&mut a).len();
    a.write_all(b"exit\n").unwrap();
    received += rest(&mut a);
    // One closes.
    let mut b = connect_from(Ipv4Addr::LOCALHOST.into(), server.addr);
    received += line(&mut b).len();
    b.write_all(b"hi\n").unwrap();
    received += line(&mut b).len();
    b.shutdown(std::net::Shutdown::Write).unwrap();
    received += rest(&mut b);
    // One is refused by the rules.
    let mut c = connect_from(SECOND, server.addr);
    assert_eq!(rest(&mut c), 0);

    let mut last = HashMap::new();
    let settled = eventually(IO_TIMEOUT, || {
        last = server.scrape();
        value(&last, "tcp_hello_connections_open") == 0
            && value(&last, "tcp_hello_closes_total{reason=\"client_closed\"}") == 1
    });
    assert!(settled, "{last:?}");
    let s = last;
    assert_eq!(value(&s, "tcp_hello_connections_total"), 2);
    assert_eq!(value(&s, "tcp_hello_refusals_total{reason=\"rule\"}"), 1);
    assert_eq!(value(&s, "tcp_hello_refusals_total{reason=\"busy\"}"), 0);
    assert_eq!(
        value(&s, "tcp_hello_refusals_total{reason=\"per_source\"}"),
        0
    );
    assert_eq!(
        value(&s, "tcp_hello_refusals_total{reason=\"proxy_header\"}"),
        0
    );
    assert_eq!(value(&s, "tcp_hello_closes_total{reason=\"exit\"}"), 1);
    for reason in [
        "idle",
        "shutdown",
        "read_error",
        "write_error",
        "tls_handshake",
        "tls_on_plain_port",
    ] {
        let name = format!("tcp_hello_closes_total{{reason=\"{reason}\"}}");
        assert_eq!(value(&s, &name), 0, "{name}");
    }
    assert_eq!(value(&s, "tcp_hello_replies_total"), 2);
    assert_eq!(
        value(&s, "tcp_hello_received_bytes_total"),
        (b"hello\nexit\n".len() + b"hi\n".len()) as u64
    );
    assert_eq!(value(&s, "tcp_hello_sent_bytes_total"), received as u64);
    assert_eq!(value(&s, "tcp_hello_accept_errors_total"), 0);
    assert_eq!(value(&s, "tcp_hello_tls_handshake_failures_total"), 0);
    assert!(value(&s, "tcp_hello_threads") >= 2, "{s:?}");

    let (code, logs) = server.stop();
    assert_eq!(code, Some(0), "{logs}");
    assert!(
        !logs.contains(" ERROR ") && !logs.contains(" WARN "),
        "shutdown with --metrics logged a problem:\n{logs}"
    );
    assert!(logs.contains("metrics on http://127.0.0.1:"), "{logs}");
}

#[test]
fn a_busy_refusal_and_the_open_gauge_from_the_environment_variable() {
    let mut cmd = hello_cmd("serve", &[]);
    cmd.env("TCP_HELLO_METRICS", "127.0.0.1:0");
    let server = Served::start(cmd, &["--max-connections", "1"]);
    let mut held = connect_from(Ipv4Addr::LOCALHOST.into(), server.addr);
    assert!(!line(&mut held).is_empty(), "the welcome");
    let mut refused = connect_from(Ipv4Addr::LOCALHOST.into(), server.addr);
    let notice = line(&mut refused);
    assert!(!notice.is_empty(), "a busy notice");
    let s = server.scrape();
    assert_eq!(value(&s, "tcp_hello_connections_open"), 1, "{s:?}");
    assert_eq!(value(&s, "tcp_hello_connections_total"), 1, "{s:?}");
    assert_eq!(value(&s, "tcp_hello_refusals_total{reason=\"busy\"}"), 1);
}

#[test]
fn only_metrics_is_served_and_names_follow_prometheus_conventions() {
    let server = Served::start(hello_cmd("serve", &[]), &["--metrics", "127.0.0.1:0"]);
    let (status, _) = server.get("/other");
    assert_eq!(status, 404);
    let (status, _) = server.get("/");
    assert_eq!(status, 404);
    let (status, body) = server.get("/metrics");
    assert_eq!(status, 200);
    let mut types = HashMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("`# TYPE name kind`");
            assert!(types.insert(name.to_string(), kind.to_string()).is_none());
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("`# HELP name text`");
            assert!(!help.is_empty(), "{name} has no help");
        }
    }
    for sample in samples(&body).keys() {
        let name = sample.split('{').next().unwrap();
        assert!(name.starts_with("tcp_hello_"), "{name}");
        assert!(
            name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{name}"
        );
        let kind = types
            .get(name)
            .unwrap_or_else(|| panic!("{name} has no TYPE"));
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name}: {kind}"
        );
        if let Some(labels) = sample.strip_prefix(name).filter(|l| !l.is_empty()) {
            assert!(
                labels.starts_with("{reason=\"") && labels.ends_with("\"}"),
                "{sample}"
            );
        }
    }
    for name in [
        "tcp_hello_connections_open",
        "tcp_hello_connections_total",
        "tcp_hello_refusals_total",
        "tcp_hello_closes_total",
        "tcp_hello_replies_total",
        "tcp_hello_received_bytes_total",
        "tcp_hello_sent_bytes_total",
        "tcp_hello_accept_errors_total",
        "tcp_hello_tls_handshake_failures_total",
        "tcp_hello_threads",
    ] {
        assert!(types.contains_key(name), "no {name} in\n{body}");
    }
}

#[test]
fn a_scraper_that_sends_nothing_holds_up_no_client() {
    let server = Served::start(hello_cmd("serve", &[]), &["--metrics", "127.0.0.1:0"]);
    let _silent = TcpStream::connect(server.metrics).expect("connect to metrics");
    let mut client = connect_from(Ipv4Addr::LOCALHOST.into(), server.addr);
    let started = Instant::now();
    assert!(!line(&mut client).is_empty(), "the welcome");
    assert!(started.elapsed() < Duration::from_secs(1));
    // The silent scraper is given up on; the next scrape is answered.
    let (status, _) = server.get("/metrics");
    assert_eq!(status, 200);
}

/// A connection to the metrics listener, with timeouts.
fn metrics_conn(server: &Served) -> TcpStream {
    let stream = TcpStream::connect_timeout(&server.metrics, IO_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// A scraper that sends its request a byte at a time, each well within the time any one
/// read may wait, is closed at its deadline, and no scrape waits for it meanwhile.
#[test]
fn a_scraper_sending_a_byte_at_a_time_is_cut_off_and_delays_no_scrape() {
    let server = Served::start(hello_cmd("serve", &[]), &["--metrics", "127.0.0.1:0"]);
    let mut slow = metrics_conn(&server);
    let started = Instant::now();
    let mut writer = slow.try_clone().unwrap();
    // Ahead of the scrape in the listen queue; at this pace the 4,096-byte request
    // would take 20 minutes.
    let trickle = std::thread::spawn(move || {
        for byte in b"GET /metrics HTTP/1.1\r\nX: ".iter().chain(&[b'a'; 4096]) {
            if writer.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let (status, body) = server.get("/metrics");
    assert_eq!(status, 200, "{body}");
    // Closed at its deadline, while it still sends: no answer, or an empty read.
    let mut got = Vec::new();
    match slow.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the slow scraper was not closed: {e}"),
    }
    let took = started.elapsed();
    assert!(took < IO_TIMEOUT, "closed after {took:?}");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    trickle.join().unwrap();
}

/// More connections than the responder serves at once, all silent and ahead of a
/// scrape, delay it by nothing: the newest take the oldest's places, and each is
/// closed at its deadline.
#[test]
fn silent_connections_ahead_of_a_scrape_delay_it_by_nothing() {
    let server = Served::start(hello_cmd("serve", &[]), &["--metrics", "127.0.0.1:0"]);
    let mut silent: Vec<TcpStream> = (0..tcp_hello::metrics::MAX_SCRAPERS + 10)
        .map(|_| metrics_conn(&server))
        .collect();
    let started = Instant::now();
    let (status, body) = server.get("/metrics");
    assert_eq!(status, 200, "{body}");
    eprintln!(
        "a scrape behind {} silent connections: {:?}",
        silent.len(),
        started.elapsed()
    );
    for (i, conn) in silent.iter_mut().enumerate() {
        let mut got = Vec::new();
        match conn.read_to_end(&mut got) {
            Ok(_) => assert!(got.is_empty(), "silent {i} got an answer"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            Err(e) => panic!("silent {i} was not closed: {e}"),
        }
    }
}

#[test]
fn a_bad_metrics_address_fails_at_start_up() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    for (arg, says) in [
        ("nonsense:port", "--metrics"),
        (taken.as_str(), "cannot listen for metrics on"),
    ] {
        let out = hello_cmd("serve", &["--bind", "127.0.0.1:0", "--metrics", arg])
            .stdin(Stdio::null())
            .output()
            .expect("run tcp-hello serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{arg}: {stderr}");
        assert!(stderr.contains(says), "{arg}: {stderr}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening on"),
            "{arg}: announced before failing"
        );
    }
}
