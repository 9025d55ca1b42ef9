//! `--bind unix:PATH`: the protocol over a Unix stream socket with real clients (std's,
//! OpenBSD `nc -U`, Python's socket module), the socket file's life (its mode, a stale
//! one replaced, removal at exit), the limits and graceful shutdown TCP connections
//! have, and the start-up errors of what does not apply.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// A fresh directory of the test's own, and the socket path in it.
fn socket_path(what: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = temp_dir(what);
    let path = dir.path().join("hello.sock");
    (dir, path)
}

/// `unix:PATH`, as `--bind` and `--connect` take it.
fn unix_arg(path: &Path) -> String {
    format!("unix:{}", path.display())
}

/// `tcp-hello serve --bind unix:PATH ARGS`, once it has announced the socket.
fn serve_unix(path: &Path, args: &[&str]) -> Server {
    let bind = unix_arg(path);
    let mut all = vec!["--bind", bind.as_str()];
    all.extend_from_slice(args);
    let server = Server::start_with_binds(&all, 1);
    assert_eq!(server.announced, [format!("listening on {bind}")]);
    assert_eq!(server.unix, [path.to_path_buf()]);
    server
}

/// `tcp-hello serve ARGS` that must fail at start-up: its stderr, after checking that it
/// exits 2 and says nothing on stdout.
fn refused(args: &[&str]) -> String {
    let done = run_tool(&mut hello_cmd("serve", args), None, IO_TIMEOUT);
    assert_eq!(done.code, Some(2), "{args:?}: {}", done.stderr);
    assert_eq!(done.stdout, "", "{args:?}");
    done.stderr
}

/// A client of a Unix socket, with timeouts and a line reader.
pub struct UnixConn {
    pub stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl UnixConn {
    pub fn open(path: &Path) -> UnixConn {
        let stream = UnixStream::connect(path).expect("connect to the unix socket");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        UnixConn { stream, reader }
    }

    pub fn send(&mut self, bytes: &str) {
        self.stream.write_all(bytes.as_bytes()).expect("send");
    }

    /// The next line without its CRLF; panics if it has none.
    pub fn text_line(&mut self) -> String {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).expect("read line");
        let text = String::from_utf8_lossy(&line).into_owned();
        text.strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("line without CRLF: {text:?}"))
            .to_string()
    }

    /// Everything until the server closes.
    pub fn rest(&mut self) -> String {
        let mut all = Vec::new();
        self.reader.read_to_end(&mut all).expect("read to end");
        String::from_utf8_lossy(&all).into_owned()
    }
}

#[test]
fn greets_answers_and_says_bye_over_a_unix_socket() {
    let (_dir, path) = socket_path("unix-greet");
    let server = serve_unix(&path, &[]);
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket(), "{meta:?}");
    let mut c = UnixConn::open(&path);
    assert_eq!(c.text_line(), "Welcome!");
    // Two lines in one write, then exit: every line answered, in order.
    c.send("Ann\nBob\n");
    assert_eq!(c.text_line(), "Hello, Ann!");
    assert_eq!(c.text_line(), "Hello, Bob!");
    c.send("exit\n");
    assert_eq!(c.rest(), "Bye!\r\n");
    let logs = server.stop_and_logs();
    let uid = nix::unistd::getuid();
    let pid = std::process::id();
    assert!(
        logs.contains(&format!("conn 1 closed: uid={uid},pid={pid}, "))
            && logs.contains("2 replies, 13 bytes in, 42 bytes out, client said exit"),
        "{logs}"
    );
}

#[test]
fn peer_is_the_client_s_uid_and_pid_and_local_the_socket_s_path() {
    let (_dir, path) = socket_path("unix-peer");
    let server = serve_unix(
        &path,
        &[
            "--welcome",
            "Welcome {peer} to {local}",
            "--reply",
            "Hello, {}! #{conn} {peer}",
        ],
    );
    let uid = nix::unistd::getuid();
    let peer = format!("uid={uid},pid={}", std::process::id());
    let mut c = UnixConn::open(&path);
    assert_eq!(
        c.text_line(),
        format!("Welcome {peer} to {}", path.display())
    );
    c.send("Ann\n");
    assert_eq!(c.text_line(), format!("Hello, Ann! #1 {peer}"));
    drop(server);

    // As JSON, the same facts.
    let (_dir, path) = socket_path("unix-peer-json");
    let _server = serve_unix(&path, &["--reply-format", "json"]);
    let mut c = UnixConn::open(&path);
    assert_eq!(c.text_line(), "Welcome!");
    c.send("Ann\n");
    let reply: serde_json::Value = serde_json::from_str(&c.text_line()).expect("JSON");
    assert_eq!(reply["name"], "Ann");
    assert_eq!(reply["peer"], peer.as_str());
    assert_eq!(reply["local"], path.to_str().unwrap());
    assert_eq!(reply["tls_version"], "");
}

#[test]
fn netcat_talks_to_a_unix_socket() {
    if !crate::interop::openbsd_nc() {
        return;
    }
    let (_dir, path) = socket_path("unix-nc");
    let _server = serve_unix(&path, &[]);
    // printf 'Alice\nexit\n' | nc -N -U PATH
    let done = run_tool(
        Command::new("nc").arg("-N").arg("-U").arg(&path),
        Some(b"Alice\nexit\n"),
        IO_TIMEOUT,
    );
    assert_eq!(
        done.stdout, "Welcome!\r\nHello, Alice!\r\nBye!\r\n",
        "stderr: {}",
        done.stderr
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
}

#[test]
fn python_s_socket_talks_to_a_unix_socket() {
    if !require("python3", "python3") {
        return;
    }
    let (_dir, path) = socket_path("unix-python");
    let _server = serve_unix(&path, &[]);
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(b"Grace\nexit\n")
got = b""
while True:
    b = s.recv(1024)
    if not b:
        break
    got += b
sys.stdout.write(got.decode())
"#;
    let done = run_tool(
        Command::new("python3").args(["-c", script]).arg(&path),
        None,
        IO_TIMEOUT,
    );
    assert_eq!(
        done.stdout, "Welcome!\r\nHello, Grace!\r\nBye!\r\n",
        "stderr: {}",
        done.stderr
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
}

/// `sh -c 'umask MASK; exec tcp-hello serve --bind unix:PATH ARGS'`, announced.
fn serve_under_umask(mask: &str, path: &Path, args: &[&str]) -> Server {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("umask {mask}; exec \"$0\" \"$@\""))
        .arg(bin())
        .args(["serve", "--bind", &unix_arg(path)])
        .args(args);
    Server::start_cmd(&mut cmd, 1)
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn the_socket_file_s_mode_follows_the_umask_unless_unix_mode_is_given() {
    let (_dir, path) = socket_path("unix-mode");
    let server = serve_under_umask("027", &path, &[]);
    assert_eq!(mode(&path), 0o750, "as the umask leaves it");
    drop(server);

    let (_dir, path) = socket_path("unix-mode-660");
    let server = serve_under_umask("077", &path, &["--unix-mode", "660"]);
    assert_eq!(mode(&path), 0o660, "--unix-mode wins over the umask");
    let mut c = UnixConn::open(&path);
    assert_eq!(c.text_line(), "Welcome!");
    let logs = server.stop_and_logs();
    assert!(
        logs.contains(", mode 660)"),
        "the start-up line says it: {logs}"
    );
}

#[test]
fn sigterm_removes_the_socket_file() {
    let (_dir, path) = socket_path("unix-remove");
    let server = serve_unix(&path, &[]);
    let mut c = UnixConn::open(&path);
    assert_eq!(c.text_line(), "Welcome!");
    c.send("exit\n");
    assert_eq!(c.rest(), "Bye!\r\n");
    server.signal("TERM");
    let (code, logs) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{logs}");
    assert!(!path.exists(), "the socket file is left behind: {logs}");
}

#[test]
fn a_stale_socket_file_is_replaced_and_said_so() {
    let (_dir, path) = socket_path("unix-stale");
    // What a killed server leaves: a socket file nothing listens on.
    drop(UnixListener::bind(&path).unwrap());
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket()
    );
    let server = serve_unix(&path, &[]);
    let mut c = UnixConn::open(&path);
    assert_eq!(c.text_line(), "Welcome!");
    let logs = server.stop_and_logs();
    let said = format!(
        "replaced the stale socket file {}: nothing listened on it",
        path.display()
    );
    assert!(logs.contains(&said), "{logs}");
}

#[test]
fn a_socket_another_server_listens_on_is_refused_and_left_alone() {
    let (_dir, path) = socket_path("unix-in-use");
    let _first = serve_unix(&path, &[]);
    let err = refused(&["--bind", &unix_arg(&path)]);
    assert_eq!(
        err.trim_end(),
        format!(
            "tcp-hello: --bind {}: another server is listening on {}: stop it, or choose \
             another path",
            unix_arg(&path),
            path.display()
        )
    );
    // The first one still serves, on its file.
    let mut c = UnixConn::open(&path);
    assert_eq!(c.text_line(), "Welcome!");
}

#[test]
fn a_path_that_is_a_regular_file_is_refused_and_left_alone() {
    let (_dir, path) = socket_path("unix-regular-file");
    std::fs::write(&path, "precious\n").unwrap();
    let err = refused(&["--bind", &unix_arg(&path)]);
    assert_eq!(
        err.trim_end(),
        format!(
            "tcp-hello: --bind {}: {} exists and is not a socket but a regular file: \
             remove it, or choose another path",
            unix_arg(&path),
            path.display()
        )
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious\n");
}

#[test]
fn bad_paths_and_what_does_not_apply_are_one_line_errors() {
    let (dir, path) = socket_path("unix-bad");
    let missing = dir.path().join("no-such-dir/hello.sock");
    let err = refused(&["--bind", &unix_arg(&missing)]);
    let parent = dir.path().join("no-such-dir");
    assert!(
        err.contains(&format!(
            "the directory {0} does not exist: create it (mkdir -p {0}), or choose another path",
            parent.display()
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let long = format!("unix:/tmp/{}", "x".repeat(120));
    let err = refused(&["--bind", &long]);
    assert!(
        err.contains("125 bytes long, and a Unix socket's path holds at most 107"),
        "{err}"
    );
    let err = refused(&["--bind", "unix:"]);
    assert!(err.contains("no path after unix:"), "{err}");
    let err = refused(&["--unix-mode", "999", "--bind", &unix_arg(&path)]);
    assert!(err.contains("999 is not an octal mode"), "{err}");
    let err = refused(&["--tls-bind", &unix_arg(&path)]);
    assert!(
        err.contains("a Unix socket (unix:PATH) is for --bind only"),
        "{err}"
    );
    // Library errors: one line each, and nothing is left behind.
    let one_line = |args: &[&str], says: &str| {
        let err = refused(args);
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(!path.exists(), "{args:?}");
    };
    let bind = unix_arg(&path);
    one_line(
        &["--unix-mode", "660"],
        "--unix-mode is for Unix sockets: add --bind unix:PATH, or drop --unix-mode",
    );
    one_line(
        &["--bind", &bind, "--proxy-protocol"],
        "--proxy-protocol cannot be used with --bind unix:",
    );
    one_line(
        &["--bind", &bind, "--allow", "10.0.0.0/8"],
        "--allow, --deny and --max-per-source are about IP addresses",
    );
    one_line(&["--bind", &bind, "--bind", &bind], "is given twice");
}

#[test]
fn tcp_and_unix_listeners_serve_side_by_side_and_rules_warn_that_they_are_for_tcp() {
    let (_dir, path) = socket_path("unix-and-tcp");
    let server = Server::start_with_binds(
        &[
            "--bind",
            "127.0.0.1:0",
            "--bind",
            &unix_arg(&path),
            "--allow",
            "127.0.0.1",
        ],
        2,
    );
    assert_eq!(server.unix, [path.to_path_buf()]);
    let mut tcp = server.connect();
    assert_eq!(tcp.text_line(), "Welcome!");
    let mut unix = UnixConn::open(&path);
    assert_eq!(unix.text_line(), "Welcome!");
    unix.send("Ann\n");
    assert_eq!(unix.text_line(), "Hello, Ann!");
    let logs = server.stop_and_logs();
    assert!(
        logs.contains("--allow, --deny and --max-per-source apply to the TCP listeners only"),
        "{logs}"
    );
}

#[test]
fn shutdown_tells_a_held_unix_connection_and_waits_for_it() {
    let (_dir, path) = socket_path("unix-shutdown");
    let server = serve_unix(&path, &[]);
    let mut c = UnixConn::open(&path);
    assert_eq!(c.text_line(), "Welcome!");
    c.send("Ann\n");
    assert_eq!(c.text_line(), "Hello, Ann!");
    server.signal("TERM");
    assert_eq!(c.text_line(), "server shutting down");
    assert_eq!(c.rest(), "", "closed after the notice");
    let (code, logs) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{logs}");
    assert!(
        logs.contains("shutting down: 1 connection to finish"),
        "{logs}"
    );
    assert!(logs.contains("1 reply, 4 bytes in"), "{logs}");
    assert!(!path.exists());
}

#[test]
fn max_connections_and_the_idle_timeout_apply_to_unix_connections() {
    let (_dir, path) = socket_path("unix-limits");
    let server = serve_unix(&path, &["--max-connections", "1", "--idle-timeout", "1"]);
    let mut held = UnixConn::open(&path);
    assert_eq!(held.text_line(), "Welcome!");
    let mut second = UnixConn::open(&path);
    assert_eq!(
        second.text_line(),
        "ERROR server busy (1 connections), try again later"
    );
    assert_eq!(second.rest(), "");
    // The held one goes idle and is closed; then there is room again.
    let started = Instant::now();
    assert_eq!(held.text_line(), "ERROR idle for 1 s, closing");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(held.rest(), "");
    // Closed, so that the server's linger ends at once.
    drop(held);
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let mut next = UnixConn::open(&path);
        let first = next.text_line();
        if first == "Welcome!" {
            break;
        }
        assert!(first.starts_with("ERROR server busy"), "{first}");
        assert!(Instant::now() < deadline, "still busy after the idle close");
        std::thread::sleep(Duration::from_millis(10));
    }
    let logs = server.stop_and_logs();
    assert!(logs.contains("refused uid="), "{logs}");
}

#[test]
fn metrics_count_unix_connections_as_tcp_ones() {
    let (_dir, path) = socket_path("unix-metrics");
    let server = serve_unix(
        &path,
        &["--metrics", "127.0.0.1:0", "--max-connections", "1"],
    );
    let metrics = metrics_addr(&server);
    let mut held = UnixConn::open(&path);
    assert_eq!(held.text_line(), "Welcome!");
    let mut busy = UnixConn::open(&path);
    assert!(busy.text_line().starts_with("ERROR server busy"));
    let samples = metrics_samples(metrics);
    let value = |s: &HashMap<String, u64>, name: &str| {
        *s.get(name).unwrap_or_else(|| panic!("no {name} in {s:?}"))
    };
    assert_eq!(value(&samples, "tcp_hello_connections_open"), 1);
    assert_eq!(value(&samples, "tcp_hello_connections_total"), 1);
    assert_eq!(
        value(&samples, "tcp_hello_refusals_total{reason=\"busy\"}"),
        1
    );
    held.send("Ann\nexit\n");
    assert_eq!(held.rest(), "Hello, Ann!\r\nBye!\r\n");
    let mut last = HashMap::new();
    let closed = eventually(IO_TIMEOUT, || {
        last = metrics_samples(metrics);
        value(&last, "tcp_hello_closes_total{reason=\"exit\"}") == 1
    });
    assert!(closed, "{last:?}");
    assert_eq!(value(&last, "tcp_hello_replies_total"), 1);
    assert_eq!(value(&last, "tcp_hello_received_bytes_total"), 9);
}

#[test]
fn the_bundled_client_talks_to_a_unix_socket() {
    let (_dir, path) = socket_path("unix-client");
    let _server = serve_unix(&path, &["--reply", "Hello, {}! ({peer})"]);
    let connect = unix_arg(&path);
    let peer = |pid: u32| format!("uid={},pid={pid}", nix::unistd::getuid());
    // Names as arguments.
    let running = Running::start(
        &mut hello_cmd("client", &["-c", &connect, "Ann", "Bob"]),
        None,
    );
    let pid = running.pid();
    let done = running.finish(IO_TIMEOUT);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_eq!(
        done.stdout,
        format!(
            "Welcome!\nHello, Ann! ({0})\nHello, Bob! ({0})\nBye!\n",
            peer(pid)
        )
    );
    // Names from a pipe, pipelined.
    let done = run_tool(
        &mut hello_cmd("client", &["--connect", &connect]),
        Some(b"Cy\nDee\n"),
        IO_TIMEOUT,
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let lines: Vec<&str> = done.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", done.stdout);
    assert!(lines[1].starts_with("Hello, Cy! (uid="), "{}", done.stdout);
    assert!(lines[2].starts_with("Hello, Dee! (uid="), "{}", done.stdout);
}

#[test]
fn the_client_says_why_a_unix_socket_did_not_answer() {
    let (_dir, path) = socket_path("unix-client-errors");
    let connect = unix_arg(&path);
    let client = |args: &[&str]| run_tool(&mut hello_cmd("client", args), None, IO_TIMEOUT);
    let done = client(&["-c", &connect, "Ann"]);
    assert_eq!(done.code, Some(3), "{}", done.stderr);
    assert_eq!(
        done.stderr.trim_end(),
        format!(
            "tcp-hello: no socket at {}: is tcp-hello serve running with --bind {connect}? \
             Start it, or give the socket's path with --connect",
            path.display()
        )
    );
    // What a killed server leaves behind.
    drop(UnixListener::bind(&path).unwrap());
    let done = client(&["-c", &connect, "Ann"]);
    assert_eq!(done.code, Some(3), "{}", done.stderr);
    assert!(
        done.stderr.starts_with(&format!(
            "tcp-hello: nothing listens on {} (a server left it behind)",
            path.display()
        )),
        "{}",
        done.stderr
    );
    for (args, says) in [
        (vec!["--tls"], "--tls and its options are for TCP"),
        (vec!["--udp"], "drop --udp"),
    ] {
        let mut all = vec!["-c", connect.as_str(), "Ann"];
        all.extend(args);
        let done = client(&all);
        assert_eq!(done.code, Some(2), "{all:?}: {}", done.stderr);
        assert!(done.stderr.contains(says), "{all:?}: {}", done.stderr);
        assert_eq!(done.stderr.lines().count(), 1, "{}", done.stderr);
    }
}

/// `tcp-hello bench --connect unix:PATH ARGS --json`, run to its end: its report, after
/// checking that it passed.
fn bench_json(path: &Path, args: &[&str]) -> serde_json::Value {
    let connect = unix_arg(path);
    let mut all = vec!["--connect", connect.as_str(), "--json"];
    all.extend_from_slice(args);
    let done = run_tool(&mut hello_cmd("bench", &all), None, Duration::from_secs(60));
    assert_eq!(done.code, Some(0), "{all:?}: {}", done.stderr);
    let report: serde_json::Value = serde_json::from_str(done.stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {}", done.stdout));
    assert_eq!(report["addr"], connect.as_str());
    assert_eq!(report["errors_total"], 0, "{report}");
    assert_eq!(report["mismatches"], 0, "{report}");
    report
}

#[test]
fn bench_over_a_unix_socket_reports_replies_in_pingpong_and_churn() {
    let (_dir, path) = socket_path("unix-bench");
    let server = serve_unix(&path, &["-q", "--reply", "Hello, {}! {peer} {local}"]);
    let expect = ["--expect", "Hello, {}! {peer} {local}"];
    let pingpong = bench_json(
        &path,
        &[&["-n", "4", "-p", "4", "-m", "2000"][..], &expect].concat(),
    );
    assert_eq!(pingpong["mode"], "pingpong");
    assert_eq!(pingpong["messages"], 2000, "{pingpong}");
    assert_eq!(pingpong["established"], 4, "{pingpong}");
    let churn = bench_json(
        &path,
        &[&["--mode", "churn", "-n", "2", "-m", "50"][..], &expect].concat(),
    );
    assert_eq!(churn["completed"], 50, "{churn}");
    assert_eq!(churn["messages"], 50, "{churn}");
    server.signal("TERM");
    let (code, logs) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{logs}");
}

#[test]
fn bench_says_why_a_unix_socket_cannot_be_loaded() {
    let (_dir, path) = socket_path("unix-bench-errors");
    let connect = unix_arg(&path);
    let bench = |args: &[&str]| {
        let mut all = vec!["--connect", connect.as_str(), "-n", "1", "-m", "1"];
        all.extend_from_slice(args);
        run_tool(&mut hello_cmd("bench", &all), None, IO_TIMEOUT)
    };
    let done = bench(&[]);
    assert_eq!(done.code, Some(2), "{}", done.stderr);
    assert!(
        done.stderr.contains(&format!(
            "connection refused: is tcp-hello serve running on {connect}?"
        )),
        "{}",
        done.stderr
    );
    for (args, says) in [
        (&["--tls"][..], "--tls and its options are for TCP"),
        (&["--source", "127.0.0.2"], "--source is for TCP"),
        (&["--udp"], "drop --udp"),
    ] {
        let done = bench(args);
        assert_eq!(done.code, Some(2), "{args:?}: {}", done.stderr);
        assert!(done.stderr.contains(says), "{args:?}: {}", done.stderr);
    }
}

/// `--log-format json`: a Unix connection's close line carries its fields as a TCP
/// one's does (the peer is its credentials).
#[test]
fn a_unix_connection_s_close_line_has_its_fields_in_json() {
    let (_dir, path) = socket_path("unix-json");
    let server = serve_unix(&path, &["--log-format", "json"]);
    let mut c = UnixConn::open(&path);
    assert_eq!(c.text_line(), "Welcome!");
    c.send("Ann\nexit\n");
    assert_eq!(c.text_line(), "Hello, Ann!");
    assert_eq!(c.rest(), "Bye!\r\n");
    let logs = server.stop_and_logs();
    let close: serde_json::Value = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .find(|v: &serde_json::Value| v["message"].as_str().is_some_and(|m| m.contains("closed")))
        .unwrap_or_else(|| panic!("no close line: {logs}"));
    let uid = nix::unistd::getuid();
    assert!(
        close["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with(&format!("uid={uid},"))),
        "{close}"
    );
    assert_eq!(close["replies"], 1, "{close}");
    assert_eq!(close["bytes_in"], 9, "{close}");
    assert_eq!(close["reason"], "client said exit", "{close}");
    assert!(
        close["duration"].is_number() && close["id"].is_number(),
        "{close}"
    );
}
