//! Interoperability with HAProxy: two `serve --proxy-protocol` backends behind a real
//! HAProxy that sends them PROXY v2 headers and health-checks them (`tcp-check`).
//!
//! HAProxy does not announce that it is ready, so the test polls its port with a
//! deadline (`eventually`); the backends announce theirs. Clients bind their source to
//! 127.0.0.9 (all of 127.0.0.0/8 is loopback on Linux) so that the address the backends
//! see in the header is told apart from HAProxy's own, 127.0.0.1.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::common::*;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));

/// Long enough for HAProxy's start, checks and retries on a loaded machine.
const SETTLE: Duration = Duration::from_secs(30);

/// A backend: `serve --proxy-protocol --proxy-from 127.0.0.1 --metrics 127.0.0.1:0`.
struct Backend {
    server: Server,
    metrics: SocketAddr,
}

impl Backend {
    fn start() -> Backend {
        let server = Server::start(&[
            "--proxy-protocol",
            "--proxy-from",
            "127.0.0.1",
            "--reply",
            "Hello, {}! from {peer} via {pid}",
            "--metrics",
            "127.0.0.1:0",
        ]);
        let metrics = metrics_addr(&server);
        Backend { server, metrics }
    }

    /// A sample of its `/metrics`, by name with labels.
    fn metric(&self, name: &str) -> u64 {
        let samples = metrics_samples(self.metrics);
        *samples
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {samples:?}"))
    }
}

/// HAProxy's configuration: a TCP frontend on `port`, round robin over `backends`,
/// each sent the PROXY header of `send` (`send-proxy-v2`, or `send-proxy` for v1) and
/// checked for the welcome.
fn config(port: u16, backends: &[SocketAddr], send: &str) -> String {
    let mut cfg = format!(
        "global\n\
         \x20   maxconn 256\n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   timeout connect 2s\n\
         \x20   timeout client 30s\n\
         \x20   timeout server 30s\n\
         \x20   timeout check 2s\n\
         \x20   retries 3\n\
         \x20   option redispatch 1\n\
         frontend hello\n\
         \x20   bind 127.0.0.1:{port}\n\
         \x20   default_backend hellos\n\
         backend hellos\n\
         \x20   balance roundrobin\n\
         \x20   option tcp-check\n\
         \x20   tcp-check expect string Welcome!\n\
         \x20   default-server {send} check inter 300ms fall 2 rise 1\n"
    );
    for (i, addr) in backends.iter().enumerate() {
        cfg.push_str(&format!("    server hello{i} {addr}\n"));
    }
    cfg
}

/// A client from 127.0.0.9 through HAProxy: sends `name`, returns the reply line (or
/// why there was none).
fn greet(frontend: SocketAddr, name: &str) -> Result<(SocketAddr, String), String> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    socket
        .bind(&SocketAddr::new(CLIENT, 0).into())
        .map_err(|e| format!("bind {CLIENT}: {e}"))?;
    socket
        .connect_timeout(&frontend.into(), IO_TIMEOUT)
        .map_err(|e| format!("connect: {e}"))?;
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let me = stream.local_addr().unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    writer
        .write_all(format!("{name}\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Err(format!("closed after {lines:?}")),
            Ok(_) => lines.push(line.trim_end().to_string()),
            Err(e) => return Err(format!("read after {lines:?}: {e}")),
        }
    }
    if lines[0] != "Welcome!" {
        return Err(format!("no welcome: {lines:?}"));
    }
    Ok((me, lines.remove(1)))
}

/// The pid a reply names, checking the rest of it: `Hello, NAME! from PEER via PID`.
fn replying_pid(name: &str, me: SocketAddr, reply: &str) -> u32 {
    let prefix = format!("Hello, {name}! from {me} via ");
    reply
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("expected {prefix:?}PID, got {reply:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("no pid in {reply:?}"))
}

fn warnings(logs: &str) -> Vec<&str> {
    logs.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect()
}

/// HAProxy in the foreground (`-db`) with the configuration of [`config`] written to
/// `dir`, its log in `dir/haproxy.log`, once it accepts on its frontend's address. The
/// port is one the kernel gave out and took back: if another process takes it first,
/// HAProxy exits, and the next try takes another.
fn start_haproxy(
    dir: &std::path::Path,
    backends: &[SocketAddr],
    send: &str,
) -> (KillOnDrop, SocketAddr) {
    let cfg = dir.join("haproxy.cfg");
    let log = dir.join("haproxy.log");
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let frontend = SocketAddr::from(([127, 0, 0, 1], port));
        std::fs::write(&cfg, config(port, backends, send)).expect("write haproxy.cfg");
        let mut haproxy = KillOnDrop(
            Command::new("haproxy")
                .arg("-db")
                .arg("-f")
                .arg(&cfg)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("create haproxy.log"))
                .spawn()
                .expect("start haproxy"),
        );
        let mut exited = false;
        let ready = eventually(SETTLE, || {
            exited = haproxy.0.try_wait().expect("try_wait").is_some();
            exited || TcpStream::connect_timeout(&frontend, Duration::from_millis(500)).is_ok()
        });
        // Accepting, and still running: the port is HAProxy's, not a passer-by's.
        if ready && !exited && haproxy.0.try_wait().expect("try_wait").is_none() {
            return (haproxy, frontend);
        }
        eprintln!(
            "haproxy on {frontend} did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    panic!("haproxy could not listen on a free port in 5 tries");
}

#[test]
fn haproxy_sends_proxy_v2_and_health_checks_and_fails_over() {
    if !require("haproxy", "haproxy") {
        return;
    }
    let backends = [Backend::start(), Backend::start()];
    let pids: BTreeSet<u32> = backends.iter().map(|b| b.server.pid()).collect();
    let dir = temp_dir("haproxy");
    let addrs: Vec<_> = backends.iter().map(|b| b.server.addr()).collect();
    let log = dir.path().join("haproxy.log");
    let haproxy_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let (haproxy, frontend) = start_haproxy(dir.path(), &addrs, "send-proxy-v2");
    // Both backends have passed a health check: served a LOCAL header and its welcome.
    assert!(
        eventually(SETTLE, || backends
            .iter()
            .all(|b| b.metric("tcp_hello_connections_total") >= 2)),
        "no health checks reached the backends:\n{}",
        haproxy_log()
    );

    let clients = 10;
    let mut seen = BTreeSet::new();
    for i in 0..clients {
        let name = format!("client{i}");
        let (me, reply) = greet(frontend, &name)
            .unwrap_or_else(|e| panic!("{name}: {e}\nhaproxy:\n{}", haproxy_log()));
        seen.insert(replying_pid(&name, me, &reply));
    }
    assert_eq!(seen, pids, "round robin should reach both backends");
    // Replies are counted when their connection closes; health checks send no line.
    let replied = || {
        backends
            .iter()
            .map(|b| b.metric("tcp_hello_replies_total"))
            .sum::<u64>()
    };
    assert!(
        eventually(SETTLE, || replied() == clients),
        "the backends counted {} replies for {clients} clients",
        replied()
    );
    for backend in &backends {
        let logs = backend.server.logs_so_far();
        assert!(
            logs.lines()
                .any(|l| l.contains(" INFO ") && l.contains("closed: 127.0.0.9:")),
            "no close line naming 127.0.0.9 in\n{logs}"
        );
    }

    // One backend dies: every new client is served by the other, once HAProxy has
    // retried elsewhere or its checks have marked the dead one down.
    let [dead, alive] = backends;
    dead.server.signal("KILL");
    // Reaped, so that its listening socket is gone: a dying process's socket still
    // completes connections in the kernel, which HAProxy would then see closed, too late
    // to retry elsewhere (it retries only connections that fail).
    let (_, dead_logs) = dead.server.wait(IO_TIMEOUT);
    let alive_pid = alive.server.pid();
    assert!(
        eventually(SETTLE, || greet(frontend, "first").is_ok()),
        "no client served after a backend died:\n{}",
        haproxy_log()
    );
    for i in 0..10 {
        let name = format!("after{i}");
        let (me, reply) = greet(frontend, &name)
            .unwrap_or_else(|e| panic!("{name}: {e}\nhaproxy:\n{}", haproxy_log()));
        assert_eq!(replying_pid(&name, me, &reply), alive_pid);
    }
    drop(haproxy);
    let alive_logs = alive.server.stop_and_logs();
    for logs in [&dead_logs, &alive_logs] {
        assert!(
            warnings(logs).is_empty(),
            "health checks and proxied clients should leave no warning:\n{logs}"
        );
    }
}

#[test]
fn haproxy_sends_proxy_v1_too() {
    if !require("haproxy", "haproxy") {
        return;
    }
    let backend = Backend::start();
    let dir = temp_dir("haproxy-v1");
    let log = dir.path().join("haproxy.log");
    let (haproxy, frontend) = start_haproxy(dir.path(), &[backend.server.addr()], "send-proxy");
    for i in 0..3 {
        let name = format!("v1client{i}");
        let (me, reply) = greet(frontend, &name).unwrap_or_else(|e| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("{name}: {e}\nhaproxy:\n{log}")
        });
        assert_eq!(replying_pid(&name, me, &reply), backend.server.pid());
    }
    // v1 health checks are served too: some came, and no header was refused.
    assert!(
        eventually(SETTLE, || backend.metric("tcp_hello_connections_total")
            >= 6),
        "no health checks reached the backend"
    );
    assert_eq!(
        backend.metric("tcp_hello_refusals_total{reason=\"proxy_header\"}"),
        0
    );
    drop(haproxy);
    let logs = backend.server.stop_and_logs();
    assert!(warnings(&logs).is_empty(), "{logs}");
}
