//! Integration tests of `tcp-hello serve` over real sockets.
//!
//! Every test starts its own server on port 0 and learns its address from the
//! `listening on ADDR` line; every socket has timeouts (see `common::Conn`). Nothing
//! sleeps to wait for the server to be ready: the tests read the lines they expect.
//! The few sleeps left are in tests about time passing (idle timeout, delay) or in a
//! bounded retry of "try again later".

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// Starts `tcp-hello serve --bind 127.0.0.1:0 <args>` with extra environment variables.
///
/// `Server::start_cmd` removes `RUST_LOG` from the command it runs, so the variables
/// are set by `env(1)`, which then execs the server (same pid, so signals still work).
fn start_env(env: &[(&str, &str)], args: &[&str]) -> Server {
    let mut cmd = Command::new("env");
    for (key, value) in env {
        cmd.arg(format!("{key}={value}"));
    }
    cmd.arg(bin())
        .arg("serve")
        .args(["--bind", "127.0.0.1:0"])
        .args(args);
    Server::start_cmd(&mut cmd, 1)
}

/// Connects and checks the default welcome line.
fn greeted(server: &Server) -> Conn {
    let mut c = server.connect();
    assert_eq!(c.text_line(), "Welcome!");
    c
}

/// Sends `exit` and checks that the farewell is the last thing the server sends.
fn say_exit(c: &mut Conn) {
    c.send("exit\n");
    assert_eq!(lossy(&c.rest()), "Bye!\r\n");
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Log lines (of `tcp-hello serve` stderr) that contain `needle`.
fn log_lines<'a>(logs: &'a str, needle: &str) -> Vec<&'a str> {
    logs.lines().filter(|l| l.contains(needle)).collect()
}

/// The level of an env_logger line such as `[2026-01-01T00:00:00.000Z INFO  tcp_hello] ...`.
fn level(line: &str) -> &str {
    line.split_whitespace().nth(1).unwrap_or("")
}

/// Runs a command to completion, killing it if it takes longer than `limit`.
/// Returns (exit code, stdout, stderr).
fn run_with_deadline(cmd: &mut Command, limit: Duration) -> (Option<i32>, String, String) {
    let done = run_tool(cmd, None, limit);
    (done.code, done.stdout, done.stderr)
}

/// Connects until the server stops saying "busy" (it says "try again later"), up to 5 s.
/// Returns the greeted connection and how many attempts were refused first.
fn connect_when_not_busy(server: &Server) -> (Conn, usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut refused = 0;
    loop {
        let mut c = server.connect();
        let first = c.text_line();
        if first == "Welcome!" {
            return (c, refused);
        }
        assert!(first.starts_with("ERROR server busy"), "{first:?}");
        refused += 1;
        assert!(
            Instant::now() < deadline,
            "still busy 5 s after a client left ({refused} attempts)"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------------
// Listening: --bind, announcements, IPv6, environment variables
// ---------------------------------------------------------------------------------

#[test]
fn port_zero_is_announced_as_the_real_address() {
    let server = Server::start(&[]);
    let addr = server.addr();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(
        addr.port(),
        0,
        "the announcement must carry the chosen port"
    );
    let mut c = greeted(&server);
    c.send("Alice\n");
    assert_eq!(c.text_line(), "Hello, Alice!");
    say_exit(&mut c);
}

#[test]
fn stdout_is_exactly_one_flushed_line_per_listener() {
    let mut child = KillOnDrop(
        Command::new(bin())
            .args(["serve", "--bind", "127.0.0.1:0", "--bind", "127.0.0.1:0"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server"),
    );
    let child = &mut child.0;
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = thread::spawn(move || {
        let mut all = Vec::new();
        let mut byte = [0u8; 1];
        // Byte by byte, so that each line is reported as soon as it is complete.
        while let Ok(1) = stdout.read(&mut byte) {
            all.push(byte[0]);
            if byte[0] == b'\n' {
                let _ = tx.send(all.clone());
            }
        }
        all
    });
    // Both lines arrive while the server runs: they were flushed.
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let so_far = rx.recv_timeout(IO_TIMEOUT).expect("announcement");
        let line = lossy(&so_far).lines().last().unwrap().to_string();
        let addr = line.strip_prefix("listening on ").expect(&line).to_string();
        addrs.push(addr.parse().expect("an address"));
    }
    for &addr in &addrs {
        let mut c = Conn::open(addr);
        assert_eq!(c.text_line(), "Welcome!");
        c.send("Alice\nexit\n");
        assert_eq!(lossy(&c.rest()), "Hello, Alice!\r\nBye!\r\n");
    }
    assert!(send_signal(child.id(), "TERM"), "kill -TERM");
    let deadline = Instant::now() + IO_TIMEOUT;
    while child.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < deadline, "server did not exit after TERM");
        thread::sleep(Duration::from_millis(10));
    }
    // Nothing else ever went to stdout.
    let all = lossy(&reader.join().unwrap());
    let expected: String = addrs
        .iter()
        .map(|a: &std::net::SocketAddr| format!("listening on {a}\n"))
        .collect();
    assert_eq!(all, expected);
}

#[test]
fn default_bind_address_is_127_0_0_1_9999() {
    // Not started for real on 9999 (another program or test may hold it); the help
    // text shows the default clap applies.
    let (code, out, _) = run_with_deadline(
        Command::new(bin()).args(["serve", "--help"]),
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(0));
    // No clap default: given only --tls-bind or --udp-bind, no plain listener may open.
    assert!(
        out.contains("Default 127.0.0.1:9999, unless only --tls-bind or --udp-bind is given"),
        "{out}"
    );
    assert!(out.contains("TCP_HELLO_BIND"), "{out}");
}

/// A script that stopped reading (or a full disk) must not stop the server: it warns,
/// and serves anyway.
#[test]
fn a_closed_stdout_is_warned_about_and_clients_are_still_served() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader); // every write to stdout now fails with EPIPE
    let mut child = KillOnDrop(
        clean_env(&mut Command::new(bin()))
            .args(["serve", "--bind", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server"),
    );
    let stderr = child.0.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut logs = Vec::new();
    while !logs.iter().any(|l: &String| l.contains("serving anyway")) {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => logs.push(line),
            Err(e) => panic!("no warning about stdout ({e}): {logs:?}"),
        }
    }
    let warning = logs.iter().find(|l| l.contains("serving anyway")).unwrap();
    assert_eq!(level(warning), "WARN", "{warning}");
    assert!(warning.contains("Broken pipe"), "{warning}");
    let addr: SocketAddr = logs
        .iter()
        .find_map(|l| l.split("listening on ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address logged: {logs:?}"));
    let mut c = Conn::open(addr);
    assert_eq!(c.text_line(), "Welcome!");
    c.send("still here\n");
    assert_eq!(c.text_line(), "Hello, still here!");
}

#[test]
fn two_binds_announce_two_lines_and_both_serve() {
    let server = Server::start_with_binds(&["--bind", "127.0.0.1:0", "--bind", "127.0.0.1:0"], 2);
    assert_eq!(server.addrs.len(), 2);
    assert_ne!(server.addrs[0], server.addrs[1]);
    for (i, &addr) in server.addrs.iter().enumerate() {
        let mut c = Conn::open(addr);
        assert_eq!(c.text_line(), "Welcome!");
        c.send(format!("listener{i}\n"));
        assert_eq!(c.text_line(), format!("Hello, listener{i}!"));
        say_exit(&mut c);
    }
}

#[test]
fn ipv6_loopback() {
    if let Err(e) = TcpListener::bind("[::1]:0") {
        eprintln!("SKIPPED ipv6_loopback: cannot bind [::1] on this machine ({e})");
        return;
    }
    let server = Server::start_with_binds(&["--bind", "[::1]:0"], 1);
    let addr = server.addr();
    assert!(addr.is_ipv6(), "{addr}");
    assert_eq!(addr.ip().to_string(), "::1");
    assert_ne!(addr.port(), 0);
    let mut c = greeted(&server);
    c.send("张三\n");
    assert_eq!(c.text_line(), "Hello, 张三!");
    say_exit(&mut c);
}

#[test]
fn a_host_name_binds_its_ipv4_address() {
    let server = Server::start_with_binds(&["--bind", "localhost:0"], 1);
    let addr = server.addr();
    assert_eq!(addr.ip().to_string(), "127.0.0.1", "{addr}");
    let mut c = greeted(&server);
    c.send("named\n");
    assert_eq!(c.text_line(), "Hello, named!");
    say_exit(&mut c);
}

/// Linux would read a negative backlog as its largest; it is refused instead.
#[test]
fn a_negative_backlog_is_a_usage_error() {
    let (code, out, err) = run_with_deadline(
        Command::new(bin()).args(["serve", "--bind", "127.0.0.1:0", "--backlog=-5"]),
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(2), "stderr {err:?}");
    assert_eq!(out, "");
    assert!(err.contains("--backlog"), "{err}");
}

#[test]
fn a_bad_bind_address_is_a_usage_error_saying_what_to_write() {
    for (bad, says) in [
        ("127.0.0.1:x", "HOST:PORT"),
        (":9999", "0.0.0.0:9999"),
        ("host:80:1", "brackets"),
        (
            "no-such-host.invalid:1",
            "cannot resolve no-such-host.invalid",
        ),
        (
            "8080",
            "looks like a port, not a host; write HOST:PORT, e.g. 127.0.0.1:8080",
        ),
        ("http://127.0.0.1:80", "a URL (http://) is not an address"),
        // Linux gives a bare "invalid argument" for a mapped address on an IPv6 listener.
        ("[::ffff:127.0.0.1]:7777", "write 127.0.0.1:7777"),
        // An address (::0.1.128.128) on port 9999, or port 8080 of ::1?
        ("::1:8080", "write [::1]:8080 for port 8080 of ::1"),
    ] {
        let (code, out, err) = run_with_deadline(
            Command::new(bin()).args(["serve", "--bind", bad]),
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(2), "{bad}: stderr {err:?}");
        assert_eq!(out, "", "{bad}: nothing may be announced");
        let first = err.lines().next().unwrap_or_default();
        assert!(first.contains(says), "{bad}: {err:?}");
    }
}

/// The same address twice is the user's mistake, not "another server running there".
#[test]
fn the_same_bind_address_twice_is_named_as_such() {
    let (code, out, err) = run_with_deadline(
        hello_cmd(
            "serve",
            &[
                "--bind",
                "127.0.0.1:7",
                "--bind",
                "[::1]:7",
                "--bind",
                "localhost:7",
            ],
        )
        .stdin(std::process::Stdio::null()),
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(out, "");
    assert!(err.contains("--bind 127.0.0.1:7 is given twice"), "{err}");
    assert!(!err.contains("another server"), "{err}");
}

/// Negative numbers reach each flag's own check, in every subcommand, instead of
/// clap's "unexpected argument '-1' found" (whose tip, `-- -1`, made -1 a name).
#[test]
fn negative_numbers_get_the_flag_s_own_message() {
    for (args, says) in [
        (&["serve", "--backlog", "-5"][..], "-5 is not in 0.."),
        (&["serve", "--idle-timeout", "-1"], "-1 is negative"),
        (&["serve", "--shutdown-timeout", "-3"], "-3 is negative"),
        (
            &["client", "--reply-timeout", "-1", "x"],
            "'--reply-timeout <SECS>': -1 is negative; give 0 (no timeout)",
        ),
        (
            &["client", "--connect-timeout", "-2", "x"],
            "'--connect-timeout <SECS>': -2 is negative",
        ),
        (
            &["bench", "--timeout", "-1"],
            "--timeout must be a number of seconds above 0, not -1",
        ),
        (&["bench", "-n", "-4"], "-4 is not a count; give 1 or more"),
    ] {
        let (code, _, err) = run_with_deadline(
            hello_cmd(args[0], &args[1..]).stdin(std::process::Stdio::null()),
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
    }
}

/// A bad value from a `TCP_HELLO_*` variable is reported under the variable's name,
/// and under the flag's when the flag gave it.
#[test]
fn a_bad_value_from_the_environment_names_the_variable() {
    for (var, value) in [
        ("TCP_HELLO_MAX_LINE", "0"),
        ("TCP_HELLO_IDLE_TIMEOUT", "-1"),
        ("TCP_HELLO_BIND", "nope:x"),
    ] {
        let (code, _, err) = run_with_deadline(
            hello_cmd("serve", &[]).env(var, value),
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(2), "{var}: {err}");
        assert!(err.contains(&format!("for {var} (for --")), "{var}: {err}");
    }
    // The client's and bench's variables too.
    for (sub, var, value) in [
        ("client", "TCP_HELLO_REPLY_TIMEOUT", "-1"),
        ("client", "TCP_HELLO_CONNECT", "a:b:c"),
        ("bench", "TCP_HELLO_CONNECT", "host:0"),
    ] {
        let (code, _, err) = run_with_deadline(
            hello_cmd(sub, &[])
                .env(var, value)
                .stdin(std::process::Stdio::null()),
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(2), "{sub} {var}: {err}");
        assert!(
            err.contains(&format!("for {var} (for --")),
            "{sub} {var}: {err}"
        );
    }
    let (code, _, err) = run_with_deadline(
        hello_cmd("serve", &["--max-line", "0"]).env("TCP_HELLO_MAX_LINE", "5"),
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("'--max-line <BYTES>'"), "{err}");
    assert!(!err.contains("TCP_HELLO_MAX_LINE"), "{err}");
}

/// A socket-activation environment that cannot be right fails at start-up with one
/// line and exit 2, whatever count `LISTEN_FDS` claims: a huge one must not be sized
/// into memory before a descriptor is looked at.
#[test]
fn a_listen_fds_that_cannot_be_right_is_one_line_and_exit_2() {
    for (fds, says) in [
        ("abc", "is not a number of sockets"),
        ("99999999999", "more sockets than this process can hold"),
    ] {
        // `$$` is the shell's process ID, and so the server's after `exec`.
        let script = format!("LISTEN_PID=$$ LISTEN_FDS={fds} exec \"$0\" serve");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script, bin()]).stdin(Stdio::null());
        let (code, out, err) = run_with_deadline(clean_env(&mut cmd), Duration::from_secs(20));
        assert_eq!(code, Some(2), "LISTEN_FDS={fds}: {err}");
        assert_eq!(out, "", "nothing is announced");
        assert_eq!(err.lines().count(), 1, "LISTEN_FDS={fds}: {err}");
        assert!(err.contains(says), "LISTEN_FDS={fds}: {err}");
    }
}

/// `--welcome ''` is an empty line in line framing; chunk framing has no empty message,
/// so an empty welcome (or reply) is refused at start-up rather than leaving clients
/// waiting for it.
#[test]
fn an_empty_welcome_is_an_empty_line_and_refused_in_chunk_framing() {
    let server = Server::start(&["--welcome", ""]);
    let mut c = server.connect();
    assert_eq!(c.line(), b"\r\n");
    c.send("Alice\n");
    assert_eq!(c.text_line(), "Hello, Alice!");
    for args in [&["--welcome", ""][..], &["--reply", ""]] {
        let mut all = vec!["--bind", "127.0.0.1:0", "--framing", "chunk"];
        all.extend_from_slice(args);
        let (code, out, err) = run_with_deadline(
            hello_cmd("serve", &all).stdin(std::process::Stdio::null()),
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(out, "", "nothing is announced");
        assert!(err.contains(&format!("an empty {}", args[0])), "{err}");
    }
}

#[test]
fn options_from_tcp_hello_environment_variables() {
    let mut cmd = Command::new(bin());
    cmd.arg("serve")
        .env("TCP_HELLO_BIND", "127.0.0.1:0")
        .env("TCP_HELLO_WELCOME", "Hi from env")
        .env("TCP_HELLO_REPLY", "Env says hi to {}")
        .env("TCP_HELLO_FAREWELL", "Env bye")
        .env("TCP_HELLO_MAX_LINE", "10");
    let server = Server::start_cmd(&mut cmd, 1);
    let mut c = server.connect();
    assert_eq!(c.text_line(), "Hi from env");
    c.send("Alice\n0123456789A\n");
    assert_eq!(c.text_line(), "Env says hi to Alice");
    assert_eq!(c.text_line(), "ERROR line too long (max 10 bytes), skipped");
    c.send("quit\n");
    assert_eq!(lossy(&c.rest()), "Env bye\r\n");
}

#[test]
fn command_line_wins_over_environment() {
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--welcome", "From CLI"])
        .env("TCP_HELLO_WELCOME", "From env");
    let server = Server::start_cmd(&mut cmd, 1);
    let mut c = server.connect();
    assert_eq!(c.text_line(), "From CLI");
}

#[test]
fn port_in_use_is_a_one_line_error_naming_the_address() {
    let first = Server::start(&[]);
    let addr = first.addr().to_string();
    let (code, out, err) = run_with_deadline(
        Command::new(bin()).args(["serve", "--bind", &addr]),
        Duration::from_secs(10),
    );
    assert!(
        matches!(code, Some(c) if c != 0),
        "exit code {code:?}, stderr {err:?}"
    );
    assert_eq!(out, "", "nothing may be announced");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.contains(&addr), "names the address: {err:?}");
    assert!(err.contains("in use"), "says why: {err:?}");
    assert!(err.contains("--bind"), "suggests a fix: {err:?}");
    // The first server is unharmed.
    let mut c = greeted(&first);
    c.send("still\n");
    assert_eq!(c.text_line(), "Hello, still!");
}

#[test]
fn small_backlog_still_serves_every_client() {
    // More connects at once than the queue holds: the kernel drops the extra SYNs and
    // the clients retry (after about 1 s), so every one is served in the end.
    let server = Server::start(&["--backlog", "1"]);
    let mut conns: Vec<Conn> = (0..4).map(|_| server.connect()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        assert_eq!(c.text_line(), "Welcome!");
        c.send(format!("c{i}\n"));
        assert_eq!(c.text_line(), format!("Hello, c{i}!"));
    }
}

// ---------------------------------------------------------------------------------
// The line protocol
// ---------------------------------------------------------------------------------

#[test]
fn pipelining_5000_lines_in_one_write() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    const N: usize = 5000;
    let mut batch = Vec::new();
    for i in 0..N {
        writeln!(batch, "name-{i}").unwrap();
    }
    batch.extend_from_slice(b"exit\n");
    // Write from another thread so that neither side can block the other.
    let mut writer = c.stream.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(&batch));
    for i in 0..N {
        assert_eq!(c.text_line(), format!("Hello, name-{i}!"), "reply {i}");
    }
    assert_eq!(lossy(&c.rest()), "Bye!\r\n");
    sender.join().unwrap().expect("send the batch");
}

#[test]
fn pipelining_crlf_lines_of_varying_length() {
    // Reads end at arbitrary points of a CRLF stream (between CR and LF too), and
    // later reads are shorter than earlier ones (stale bytes behind the new end).
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    const N: usize = 5000;
    let mut batch = Vec::new();
    for i in 0..N {
        let name = "x".repeat(i % 37 + 1);
        write!(batch, "{i}{name}\r\n").unwrap();
    }
    batch.extend_from_slice(b"exit\r\n");
    let mut writer = c.stream.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(&batch));
    for i in 0..N {
        let name = "x".repeat(i % 37 + 1);
        assert_eq!(c.text_line(), format!("Hello, {i}{name}!"), "reply {i}");
    }
    assert_eq!(lossy(&c.rest()), "Bye!\r\n");
    sender.join().unwrap().expect("send the batch");
}

#[test]
fn interactive_session_with_a_shorter_second_name() {
    // The most ordinary session: one name, its reply, then a shorter name.
    // Regression test: at 1e08f09 the server found a phantom line `e` in the leftovers
    // of `Alice\n`, and the connection thread panicked: `Bob` was never answered and
    // the socket never closed.
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send("Alice\n");
    assert_eq!(c.text_line(), "Hello, Alice!");
    c.send("Bob\n");
    assert_eq!(c.text_line(), "Hello, Bob!");
    say_exit(&mut c);
}

#[test]
fn partial_line_completed_by_a_later_write() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send("Alice\n");
    assert_eq!(c.text_line(), "Hello, Alice!");
    // `Bo` lands where `Alice\n` was: the server must not see `Boice`.
    c.send("Bo");
    c.send("b\n");
    assert_eq!(c.text_line(), "Hello, Bob!");
    say_exit(&mut c);
}

#[test]
fn connections_never_see_each_others_bytes() {
    // Regression test: at 1e08f09 the line scanner read past the end of the received
    // bytes, into a pooled buffer still holding the previous connection's input, and
    // B was sent `Hello, bbb…A-secret-password A-secret-password…!`.
    let server = Server::start(&["--max-line", "65536"]);
    // A sends one long line: its connection borrows a large buffer pair from the
    // pool, fills it with A's bytes, and gives it back when it leaves.
    let mut a = greeted(&server);
    let secret = "A-secret-password ".repeat(3000);
    a.send(format!("{secret}\nexit\n"));
    assert_eq!(lossy(&a.rest()), format!("Hello, {secret}!\r\nBye!\r\n"));
    drop(a);
    // B sends one 1500-byte name: more than the small buffer, so B borrows the pair.
    let mut b = greeted(&server);
    let name = "b".repeat(1500);
    b.send(format!("{name}\nexit\n"));
    let got = lossy(&b.rest());
    assert!(!got.contains("secret"), "B was sent A's data: {got:?}");
    assert_eq!(got, format!("Hello, {name}!\r\nBye!\r\n"));
}

#[test]
fn line_endings_lf_crlf_and_telnet_cr_nul() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send("lf\ncrlf\r\ncrnul\r\0a\rb\nnul\0inside\nexit\r\n");
    // Everything the server sends ends in CRLF (text_line checks it).
    assert_eq!(c.text_line(), "Hello, lf!");
    assert_eq!(c.text_line(), "Hello, crlf!");
    assert_eq!(c.text_line(), "Hello, crnul!");
    // A lone CR and a NUL without CR are data.
    assert_eq!(c.line(), b"Hello, a\rb!\r\n");
    assert_eq!(c.line(), b"Hello, nul\0inside!\r\n");
    assert_eq!(lossy(&c.rest()), "Bye!\r\n");
}

#[test]
fn utf8_and_invalid_bytes_pass_through_verbatim() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    let mut input = Vec::new();
    input.extend_from_slice("张三\n".as_bytes());
    input.extend_from_slice("Zoë 🦀\n".as_bytes());
    input.extend_from_slice(b"bad\xc3\x28\xfe\x80end\n");
    // 0xFF is telnet IAC: a literal 0xFF is sent doubled.
    input.extend_from_slice(b"lit\xff\xffbyte\n");
    input.extend_from_slice(b"exit\n");
    c.send(&input);
    assert_eq!(c.line(), "Hello, 张三!\r\n".as_bytes());
    assert_eq!(c.line(), "Hello, Zoë 🦀!\r\n".as_bytes());
    assert_eq!(c.line(), b"Hello, bad\xc3\x28\xfe\x80end!\r\n");
    // ... and comes back doubled in the reply.
    assert_eq!(c.line(), b"Hello, lit\xff\xffbyte!\r\n");
    assert_eq!(c.rest(), b"Bye!\r\n");
}

#[test]
fn telnet_commands_are_removed_and_options_refused() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    // Telnet's Ctrl-C (IAC IP, IAC DO TIMING-MARK) in the middle of a name, then
    // IAC WILL ECHO and a subnegotiation (IAC SB ... IAC SE).
    c.send(b"Bo\xff\xf4\xff\xfd\x06b\r\n");
    // The refusal (IAC WONT TIMING-MARK) comes first, then the reply without the commands.
    assert_eq!(c.exact(3), b"\xff\xfc\x06");
    assert_eq!(c.line(), b"Hello, Bob!\r\n");
    c.send(b"\xff\xfb\x01Carol\xff\xfa\x18\x01xterm\xff\xf0\r\nexit\r\n");
    assert_eq!(
        c.exact(3),
        b"\xff\xfe\x01",
        "IAC WILL ECHO gets IAC DONT ECHO"
    );
    assert_eq!(c.line(), b"Hello, Carol!\r\n");
    assert_eq!(c.rest(), b"Bye!\r\n");
}

#[test]
fn ctrl_c_on_its_own_line_gets_no_reply() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    // What telnet sends for Ctrl-C, then the next typed line.
    c.send(b"\xff\xf4\xff\xfd\x06");
    assert_eq!(c.exact(3), b"\xff\xfc\x06");
    c.send(b"\xff\xfb\x01");
    assert_eq!(
        c.exact(3),
        b"\xff\xfe\x01",
        "IAC WILL ECHO gets IAC DONT ECHO"
    );
    c.send(b"\xff\xfd\x03");
    assert_eq!(c.exact(3), b"\xff\xfc\x03", "IAC DO SGA gets IAC WONT SGA");
    // Refusals are not answered (no option negotiation loop).
    c.send(b"\xff\xfc\x01\xff\xfe\x03");
    c.send(b"\r\nDave\r\nexit\r\n");
    assert_eq!(c.line(), b"Hello, Dave!\r\n");
    assert_eq!(c.rest(), b"Bye!\r\n");
}

#[test]
fn blank_lines_get_no_reply() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send("\n\r\n   \n\t\r\n \r\0Alice\n\n\nexit\n");
    // Exactly one reply, then the farewell: nothing for the blanks.
    assert_eq!(lossy(&c.rest()), "Hello, Alice!\r\nBye!\r\n");
}

#[test]
fn exit_variants_end_the_session() {
    let server = Server::start(&[]);
    for word in ["exit", "QUIT", "  Exit  ", "quit\t", "eXiT\r"] {
        let mut c = greeted(&server);
        c.send(format!("{word}\n"));
        assert_eq!(lossy(&c.rest()), "Bye!\r\n", "{word:?}");
    }
    // Not exit: names that only contain the word.
    let mut c = greeted(&server);
    c.send("exits\nex it\nquit now\nexit\n");
    assert_eq!(
        lossy(&c.rest()),
        "Hello, exits!\r\nHello, ex it!\r\nHello, quit now!\r\nBye!\r\n"
    );
}

#[test]
fn lines_after_exit_are_ignored() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send("Alice\nexit\nBob\nCarol\n");
    assert_eq!(lossy(&c.rest()), "Hello, Alice!\r\nBye!\r\n");
}

#[test]
fn lines_after_exit_in_a_later_write_do_not_reset_the_farewell() {
    // The client keeps sending after `exit`; the farewell must still arrive whole
    // (the server lingers instead of resetting the connection on unread input).
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send("exit\n");
    let _ = c.stream.write_all(&[b'x'; 4096]);
    assert_eq!(lossy(&c.rest()), "Bye!\r\n");
}

#[test]
fn half_close_answers_a_final_unterminated_line() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send("Bob");
    c.finish_sending();
    assert_eq!(lossy(&c.rest()), "Hello, Bob!\r\n");

    // An unterminated `exit` still says goodbye.
    let mut c = greeted(&server);
    c.send("exit");
    c.finish_sending();
    assert_eq!(lossy(&c.rest()), "Bye!\r\n");

    // Earlier lines in the same write come first.
    let mut c = greeted(&server);
    c.send("Alice\nBob");
    c.finish_sending();
    assert_eq!(lossy(&c.rest()), "Hello, Alice!\r\nHello, Bob!\r\n");
}

#[test]
fn half_close_after_a_final_line_ending_in_cr() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send("Bob\r");
    c.finish_sending();
    assert_eq!(lossy(&c.rest()), "Hello, Bob!\r\n");
}

#[test]
fn half_close_after_earlier_writes() {
    // `printf 'Alice\n'; sleep; printf Bob` then EOF: the last line must be answered
    // (at 1e08f09 the leftovers of `Alice\n` made a phantom line and a panic).
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send("Alice\n");
    assert_eq!(c.text_line(), "Hello, Alice!");
    c.send("Bob");
    c.finish_sending();
    assert_eq!(lossy(&c.rest()), "Hello, Bob!\r\n");
}

#[test]
fn over_long_line_gets_an_error_and_the_connection_goes_on() {
    let server = Server::start(&["--max-line", "16"]);
    let mut c = greeted(&server);
    // Exactly 16 bytes is fine, with LF or CRLF; 17 is not.
    c.send("0123456789abcdef\n0123456789abcdef\r\n0123456789abcdefg\nBob\n");
    assert_eq!(c.text_line(), "Hello, 0123456789abcdef!");
    assert_eq!(c.text_line(), "Hello, 0123456789abcdef!");
    assert_eq!(c.text_line(), "ERROR line too long (max 16 bytes), skipped");
    assert_eq!(c.text_line(), "Hello, Bob!");
    // A long line arriving in pieces gets one error, however long it is.
    let mut long = vec![b'y'; 100_000];
    long.extend_from_slice(b"\nCarol\nexit\n");
    c.send(&long);
    assert_eq!(c.text_line(), "ERROR line too long (max 16 bytes), skipped");
    assert_eq!(c.text_line(), "Hello, Carol!");
    assert_eq!(lossy(&c.rest()), "Bye!\r\n");
}

/// An exit word ends the session whatever --max-line is, with blanks around it, in
/// both framings; other lines over the limit are still refused.
#[test]
fn exit_words_work_whatever_max_line_is() {
    for (max, exit) in [
        ("3", "exit"),
        ("3", "QUIT"),
        ("8", "   exit   "),
        ("1", "\tquit "),
    ] {
        let server = Server::start(&["--max-line", max]);
        let mut c = greeted(&server);
        c.send(format!("abcdefghi\n{exit}\nnever\n"));
        assert_eq!(
            c.text_line(),
            format!("ERROR line too long (max {max} bytes), skipped")
        );
        assert_eq!(lossy(&c.rest()), "Bye!\r\n", "--max-line {max}, {exit:?}");
    }
    // Also as a last line ended by a half-close.
    let server = Server::start(&["--max-line", "2"]);
    let mut c = greeted(&server);
    c.send("quit");
    c.finish_sending();
    assert_eq!(lossy(&c.rest()), "Bye!\r\n");
    // Chunk framing reads an exit word whole, not as `exi` then `t`.
    let server = Server::start(&["--framing", "chunk", "--max-line", "3"]);
    let mut c = server.connect();
    assert_eq!(c.exact(8), b"Welcome!");
    c.send("abcde");
    assert_eq!(lossy(&c.exact(21)), "Hello, abc!Hello, de!");
    c.send("exit");
    assert_eq!(lossy(&c.rest()), "Bye!");
}

/// A 0xFF byte of a name (sent as `IAC IAC`) comes back doubled: sent bare, a telnet
/// client would read `IAC WILL ECHO` in `Hello, a\xff\xfb\x01!`, negotiate, and hide what
/// its user types.
#[test]
fn a_0xff_in_a_reply_is_sent_doubled_as_telnet_requires() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send(b"a\xff\xff\xfb\x01\n");
    assert_eq!(c.line(), b"Hello, a\xff\xff\xfb\x01!\r\n");
    say_exit(&mut c);
    // In chunk framing too, and through a template with several `{}`.
    let server = Server::start(&["--framing", "chunk", "--reply", "{}-{}"]);
    let mut c = server.connect();
    assert_eq!(c.exact(8), b"Welcome!");
    c.send(b"\xff\xffz");
    assert_eq!(c.exact(7), b"\xff\xffz-\xff\xffz");
    // A reply longer than the output buffer goes out in pieces, escaped alike.
    let template = "{}".repeat(100);
    let server = Server::start(&["--max-line", "100000", "--reply", &template]);
    let mut c = greeted(&server);
    // A name of 2,000 bytes 0xFF, each sent as IAC IAC; each copy comes back the same.
    let doubled = vec![0xFF; 4000];
    c.send([&doubled[..], b"\n"].concat());
    let want: Vec<u8> = doubled.repeat(100);
    assert!(
        c.exact(want.len()) == want,
        "the long escaped reply differs"
    );
    assert_eq!(c.exact(2), b"\r\n");
}

/// The output buffer used to be sized for the largest possible reply: with a thousand
/// `{}` and a 16 MiB --max-line that was 32 GB, and the first long line aborted the
/// process. Replies larger than the buffer now go out in pieces.
#[test]
fn a_reply_larger_than_any_buffer_is_sent_in_pieces() {
    let template = "{}".repeat(1000) + "!";
    let server = Server::start(&["--max-line", "16777216", "--reply", &template]);
    let mut c = greeted(&server);
    let name = "ab".repeat(1000);
    c.send(format!("{name}\nBob\n"));
    let want = name.repeat(1000) + "!\r\n";
    assert!(
        lossy(&c.exact(want.len())) == want,
        "the 2 MB reply differs"
    );
    assert_eq!(c.text_line(), "Bob".repeat(1000) + "!");
    say_exit(&mut c);
    let mut other = greeted(&server);
    other.send("x\n");
    assert_eq!(other.text_line(), "x".repeat(1000) + "!");
}

#[test]
fn endless_line_keeps_memory_bounded() {
    let server = Server::start(&[]);
    let mut warm = greeted(&server);
    warm.send("warm\n");
    assert_eq!(warm.text_line(), "Hello, warm!");
    let before = server.proc_status("VmRSS");

    let mut c = greeted(&server);
    let chunk = vec![b'z'; 1 << 20];
    for _ in 0..64 {
        c.send(&chunk); // 64 MiB without a newline
    }
    c.send("\nBob\n");
    assert_eq!(
        c.text_line(),
        "ERROR line too long (max 8192 bytes), skipped"
    );
    assert_eq!(c.text_line(), "Hello, Bob!");
    let peak = server.proc_status("VmHWM");
    eprintln!("RSS before {before} kB, peak {peak} kB");
    assert!(
        peak < before + 8 * 1024,
        "peak RSS {peak} kB after a 64 MiB line, {before} kB before"
    );
    say_exit(&mut c);
}

// ---------------------------------------------------------------------------------
// Modes, framing, texts, delay
// ---------------------------------------------------------------------------------

#[test]
fn echo_mode_returns_every_byte_unchanged() {
    let server = Server::start(&["--mode", "echo"]);
    let mut c = server.connect();
    // No welcome: the first bytes back are the echo. 0xFF (IAC), NUL, CR, LF, and
    // `exit` are all just data.
    let all: Vec<u8> = (0..=255u8).collect();
    c.send(&all);
    assert_eq!(c.exact(256), all);
    c.send(b"exit\n\xff\xf4\xff\xfd\x06\0\r\n");
    assert_eq!(c.exact(13), b"exit\n\xff\xf4\xff\xfd\x06\0\r\n");
    // A megabyte, written while it is read back.
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    let mut writer = c.stream.try_clone().unwrap();
    let expected = big.clone();
    let sender = thread::spawn(move || writer.write_all(&big));
    assert!(
        c.exact(expected.len()) == expected,
        "1 MiB echoed unchanged"
    );
    sender.join().unwrap().expect("send");
    // Until the client closes; nothing else is ever sent.
    c.finish_sending();
    assert_eq!(c.rest(), b"");
}

#[test]
fn chunk_framing_serves_the_tutorial_client() {
    // The Python tutorial's client: recv the welcome, send `Michael` without a
    // newline, recv `Hello, Michael!`. Nothing carries a line ending.
    let server = Server::start(&["--framing", "chunk"]);
    let mut c = server.connect();
    assert_eq!(c.exact(8), b"Welcome!");
    c.send("Michael");
    assert_eq!(c.exact(15), b"Hello, Michael!");
    c.send("张三");
    assert_eq!(c.exact("Hello, 张三!".len()), "Hello, 张三!".as_bytes());
    c.send("exit");
    assert_eq!(c.rest(), b"Bye!");
}

/// In chunk framing a message is one read, and `--max-line` caps the read: a longer
/// message is answered in pieces, as the tutorial's `recv(N)` would, never refused.
#[test]
fn chunk_framing_answers_a_message_longer_than_max_line_in_pieces() {
    let server = Server::start(&["--framing", "chunk", "--max-line", "5"]);
    let mut c = server.connect();
    assert_eq!(c.exact(8), b"Welcome!");
    c.send("abcdefghij");
    let want = b"Hello, abcde!Hello, fghij!";
    assert_eq!(lossy(&c.exact(want.len())), lossy(want));
}

#[test]
fn custom_welcome_reply_and_farewell() {
    let server = Server::start(&[
        "--welcome",
        "Hi there",
        "--reply",
        "<{}> and again <{}>",
        "--farewell",
        "See you",
    ]);
    let mut c = server.connect();
    assert_eq!(c.text_line(), "Hi there");
    c.send("Ann\nexit\n");
    assert_eq!(c.text_line(), "<Ann> and again <Ann>");
    assert_eq!(lossy(&c.rest()), "See you\r\n");
}

/// The host name `{host}` stands for: the kernel's, as the server reads it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("read /proc/sys/kernel/hostname")
        .trim()
        .to_string()
}

#[test]
fn placeholders_say_which_backend_answered_and_to_whom() {
    let server = Server::start(&[
        "--welcome",
        "Welcome to {host} ({pid}), conn {conn} from {peer}",
        "--reply",
        "Hello, {}! from {host}:{pid} conn {conn} via {local} for {peer}",
        "--farewell",
        "Bye from {local}, {{conn}} {conn}",
    ]);
    let (host, pid, local) = (host_name(), server.pid(), server.addr());
    for conn in 1..=2 {
        let mut c = server.connect();
        let peer = c.stream.local_addr().unwrap();
        assert_eq!(
            c.text_line(),
            format!("Welcome to {host} ({pid}), conn {conn} from {peer}")
        );
        c.send("Ann\n张三\nexit\n");
        for name in ["Ann", "张三"] {
            assert_eq!(
                c.text_line(),
                format!("Hello, {name}! from {host}:{pid} conn {conn} via {local} for {peer}")
            );
        }
        assert_eq!(
            lossy(&c.rest()),
            format!("Bye from {local}, {{conn}} {conn}\r\n")
        );
    }
}

#[test]
fn placeholders_in_chunk_framing_and_0xff_still_doubled() {
    let server = Server::start(&[
        "--framing",
        "chunk",
        "--welcome",
        "{conn}@{host}",
        "--reply",
        "[{}|{peer}]",
        "--farewell",
        "{pid}",
    ]);
    let mut c = server.connect();
    let peer = c.stream.local_addr().unwrap();
    let welcome = format!("1@{}", host_name());
    assert_eq!(lossy(&c.exact(welcome.len())), welcome);
    c.send("Michael");
    let want = format!("[Michael|{peer}]");
    assert_eq!(lossy(&c.exact(want.len())), want);
    // IAC IAC is one 0xFF data byte, sent back doubled; the placeholder's text is not.
    c.send(b"a\xff\xffb");
    let mut want = b"[a\xff\xffb|".to_vec();
    want.extend_from_slice(format!("{peer}]").as_bytes());
    assert_eq!(c.exact(want.len()), want);
    c.send("exit");
    assert_eq!(lossy(&c.rest()), server.pid().to_string());
}

#[test]
fn a_reply_with_placeholders_larger_than_any_buffer_is_sent_in_pieces() {
    let template = "{}<{conn}{peer}>".repeat(1000) + "!";
    let server = Server::start(&["--max-line", "16777216", "--reply", &template]);
    let mut c = greeted(&server);
    let peer = c.stream.local_addr().unwrap();
    let name = "ab".repeat(1000);
    c.send(format!("{name}\nBob\n"));
    let want = format!("{name}<1{peer}>").repeat(1000) + "!\r\n";
    assert!(
        lossy(&c.exact(want.len())) == want,
        "the 2 MB reply differs"
    );
    assert_eq!(c.text_line(), format!("Bob<1{peer}>").repeat(1000) + "!");
    say_exit(&mut c);
}

#[test]
fn placeholders_show_ipv6_addresses_in_brackets() {
    if let Err(e) = TcpListener::bind("[::1]:0") {
        eprintln!("SKIPPED placeholders_show_ipv6_addresses_in_brackets: no [::1] ({e})");
        return;
    }
    let server = Server::start_with_binds(
        &["--bind", "[::1]:0", "--reply", "{}: {peer} -> {local}"],
        1,
    );
    let mut c = greeted(&server);
    let peer = c.stream.local_addr().unwrap();
    c.send("Ann\n");
    let line = c.text_line();
    assert_eq!(line, format!("Ann: {peer} -> {}", server.addr()));
    assert!(line.starts_with("Ann: [::1]:"), "{line}");
    say_exit(&mut c);
}

#[test]
fn an_unknown_placeholder_or_a_line_outside_reply_is_refused_at_start_up() {
    let cases: [(&[&str], &[&str]); 5] = [
        (&["--reply", "Hello, {nmae}!"], &["--reply", "{nmae}"]),
        (&["--welcome", "Hi {host} {port}"], &["--welcome", "{port}"]),
        (&["--farewell", "Bye {}"], &["--farewell", "{}", "--reply"]),
        (&["--welcome", "Hi {}"], &["--welcome", "{}", "--reply"]),
        (&["--reply", "Hello, {"], &["--reply", "lone {", "{{"]),
    ];
    for (args, says) in cases {
        let mut all = vec!["--bind", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let (code, out, err) = run_with_deadline(
            hello_cmd("serve", &all).stdin(Stdio::null()),
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}: nothing is announced");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        for word in says {
            assert!(err.contains(word), "{args:?}: {word} in {err}");
        }
        for known in ["{peer}", "{local}", "{host}", "{pid}", "{conn}"] {
            assert!(err.contains(known), "{args:?}: lists {known}: {err}");
        }
    }
}

#[test]
fn doubled_braces_are_sent_as_single_ones() {
    let server = Server::start(&["--welcome", "{{}} {{host}}", "--reply", "{{{}}}"]);
    let mut c = server.connect();
    assert_eq!(c.text_line(), "{} {host}");
    c.send("Ann\n");
    assert_eq!(c.text_line(), "{Ann}");
    say_exit(&mut c);
}

#[test]
fn empty_farewell_sends_nothing() {
    let server = Server::start(&["--farewell", ""]);
    let mut c = greeted(&server);
    c.send("Ann\nquit\n");
    assert_eq!(lossy(&c.rest()), "Hello, Ann!\r\n");
}

#[test]
fn delay_waits_before_each_reply() {
    let server = Server::start(&["--delay", "300"]);
    let mut c = greeted(&server);
    let started = Instant::now();
    c.send("a\nb\n");
    assert_eq!(c.text_line(), "Hello, a!");
    let first = started.elapsed();
    assert_eq!(c.text_line(), "Hello, b!");
    let second = started.elapsed();
    assert!(
        first >= Duration::from_millis(280),
        "first reply after {first:?}"
    );
    assert!(
        second >= Duration::from_millis(580),
        "second reply after {second:?}"
    );
}

// ---------------------------------------------------------------------------------
// Limits: connections, idle and write timeouts, isolation
// ---------------------------------------------------------------------------------

#[test]
fn busy_beyond_max_connections_and_a_slot_frees_when_a_client_leaves() {
    let server = Server::start(&["--max-connections", "2"]);
    let mut first = greeted(&server);
    let mut second = greeted(&server);
    let mut third = server.connect();
    // Even a client that talks first gets the notice (not a reset).
    third.send("Carol\n");
    assert_eq!(
        lossy(&third.rest()),
        "ERROR server busy (2 connections), try again later\r\n"
    );
    // The two admitted ones are unaffected.
    second.send("Second\n");
    assert_eq!(second.text_line(), "Hello, Second!");
    // One leaves; a new client is then served (retrying, as the notice says, while
    // the server notices the close).
    say_exit(&mut first);
    drop(first);
    let (mut fourth, refused) = connect_when_not_busy(&server);
    fourth.send("Fourth\n");
    assert_eq!(fourth.text_line(), "Hello, Fourth!");
    eprintln!("served after {refused} busy answers");
    // And it is full again.
    let mut fifth = server.connect();
    assert!(
        lossy(&fifth.rest()).starts_with("ERROR server busy (2 connections)"),
        "limit still enforced"
    );
}

/// `--max-connections 0` is a server that is always busy: a fixture for testing how a
/// client handles the busy line.
#[test]
fn max_connections_0_answers_every_client_with_the_busy_line() {
    let server = Server::start(&["--max-connections", "0"]);
    for _ in 0..3 {
        let mut c = server.connect();
        assert_eq!(
            lossy(&c.rest()),
            "ERROR server busy (0 connections), try again later\r\n"
        );
    }
}

/// Refusals are logged at most once a second, and every one is counted: what a burst
/// left unreported is logged once its second has passed, or at shutdown.
#[test]
fn every_refusal_in_a_burst_is_counted_in_the_log() {
    let server = Server::start(&["--max-connections", "0"]);
    for _ in 0..50 {
        let mut c = server.connect();
        assert!(lossy(&c.rest()).starts_with("ERROR server busy"));
    }
    let logs = server.stop_and_logs();
    let lines = log_lines(&logs, "refused");
    let count = |line: &str, after: &str, before: &str| -> u64 {
        line.split(after)
            .nth(1)
            .and_then(|rest| rest.split(before).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let counted: u64 = lines
        .iter()
        .map(|l| {
            if l.contains("refused 127.0.0.1:") {
                1 + count(l, "(", " more refused")
            } else {
                count(l, "refused ", " more connections")
            }
        })
        .sum();
    assert_eq!(counted, 50, "{lines:#?}");
    assert!(lines.len() < 10, "not rate-limited: {lines:#?}");
    assert!(
        !logs.contains("(0 more refused"),
        "a first report has nothing to add: {logs}"
    );
}

#[test]
fn idle_connection_gets_a_notice_and_is_closed() {
    let server = Server::start(&["--idle-timeout", "1"]);
    let mut c = greeted(&server);
    let started = Instant::now();
    // Waiting for the notice is the point of this test: time has to pass.
    assert_eq!(lossy(&c.rest()), "ERROR idle for 1 s, closing\r\n");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
}

/// An address-space limit runs out long before memory does (glibc reserves 64 MiB per
/// malloc arena), and std cannot report running out while a thread starts; say so.
#[test]
fn an_address_space_limit_is_warned_about_at_start() {
    let command = format!(
        "ulimit -v 4000000 && exec {} serve --bind 127.0.0.1:0",
        bin()
    );
    let server = Server::start_cmd(Command::new("sh").args(["-c", &command]), 1);
    let mut c = greeted(&server);
    c.send("Ann\n");
    assert_eq!(c.text_line(), "Hello, Ann!");
    let logs = server.stop_and_logs();
    let warning = log_lines(&logs, "address-space limit");
    assert_eq!(warning.len(), 1, "{logs}");
    assert_eq!(level(warning[0]), "WARN", "{}", warning[0]);
    assert!(warning[0].contains("3906 MiB"), "{}", warning[0]);
    assert!(warning[0].contains("MALLOC_ARENA_MAX=2"), "{}", warning[0]);
}

/// Without a limit, nothing is said.
#[test]
fn no_address_space_warning_without_a_limit() {
    let server = Server::start(&[]);
    let logs = server.stop_and_logs();
    assert!(!logs.contains("address-space"), "{logs}");
}

/// Each connection thread takes 4 memory mappings, and past `vm.max_map_count` std
/// aborts the whole process while a thread starts: a larger limit is lowered to fit,
/// with a warning naming the cause and the fix.
#[test]
fn a_connection_limit_beyond_the_mapping_limit_is_lowered_to_fit() {
    let max_maps: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .expect("read max_map_count")
        .trim()
        .parse()
        .expect("a number");
    let server = Server::start(&["--max-connections", "100000000"]);
    let logs = server.stop_and_logs();
    let listening = log_lines(&logs, "listening on");
    let limit: usize = listening[0]
        .split("(max ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no limit announced: {logs}"));
    assert!(
        limit <= max_maps / 4,
        "{limit} connections would need more than {max_maps} mappings"
    );
    let lowered = log_lines(&logs, "lowered to");
    assert_eq!(lowered.len(), 1, "one warning: {logs}");
    assert_eq!(level(lowered[0]), "WARN", "{}", lowered[0]);
    assert!(
        lowered[0].contains(&format!("--max-connections 100000000 lowered to {limit}: ")),
        "{}",
        lowered[0]
    );
    // Every limit below 100,000,000 is named, each with the command that raises it.
    for named in [
        "kernel.pid_max is",
        "sysctl -w kernel.pid_max=",
        "kernel.threads-max is",
        "MiB of memory is available",
        "the open-file limit is",
    ] {
        assert!(lowered[0].contains(named), "{named}: {}", lowered[0]);
    }
    // Whichever limit is tighter is named first: on most machines the mappings (about
    // 16,000 connections by default), unless the open-file limit is lower still (or
    // vm.max_map_count has been raised).
    let first = lowered[0].split("; then").next().unwrap_or_default();
    if first.contains("vm.max_map_count") {
        assert!(
            lowered[0].contains(&format!("vm.max_map_count is {max_maps}")),
            "{}",
            lowered[0]
        );
        assert!(
            lowered[0].contains("sysctl -w vm.max_map_count="),
            "{}",
            lowered[0]
        );
        assert!(limit > (max_maps - 4096) / 4, "{limit}");
    } else {
        assert!(first.contains("open-file limit"), "{}", lowered[0]);
    }
}

/// The idle timeout is set on the listening socket, so that accepted sockets inherit
/// it, and Linux applies it to `accept` as well: a server nobody connects to for that
/// long must keep accepting quietly, not report an error.
#[test]
fn a_quiet_listener_outlasting_the_idle_timeout_is_not_an_error() {
    // At debug too: an accept that found no client within the timeout is not logged.
    let server = Server::start(&["--idle-timeout", "1", "-v"]);
    thread::sleep(Duration::from_millis(2500)); // time passing with no client is the point
    let mut c = greeted(&server);
    c.send("late\n");
    assert_eq!(c.text_line(), "Hello, late!");
    drop(c);
    let logs = server.stop_and_logs();
    assert!(!logs.contains("accept failed"), "logs: {logs}");
    assert!(!logs.contains("accept: "), "logs: {logs}");
    assert!(logs.contains("DEBUG"), "-v logs at debug: {logs}");
}

/// A connection that never sends anything (a scanner, a health check) and is closed as
/// idle logs nothing at the default level, and both its open and its close at debug:
/// the log never shows an open without its close.
#[test]
fn an_idle_close_logs_its_open_and_close_at_the_same_level() {
    for (args, expected) in [(&[][..], None), (&["-v"][..], Some("DEBUG"))] {
        let mut all = vec!["--idle-timeout", "1"];
        all.extend_from_slice(args);
        let server = Server::start(&all);
        let mut c = greeted(&server);
        assert_eq!(lossy(&c.rest()), "ERROR idle for 1 s, closing\r\n");
        drop(c);
        let logs = server.stop_and_logs();
        let opened = log_lines(&logs, "conn 1 open");
        let closed = log_lines(&logs, "conn 1 closed");
        match expected {
            None => assert!(opened.is_empty() && closed.is_empty(), "{logs}"),
            Some(want) => {
                assert_eq!((opened.len(), closed.len()), (1, 1), "{logs}");
                assert_eq!((level(opened[0]), level(closed[0])), (want, want), "{logs}");
            }
        }
    }
}

#[test]
fn activity_resets_the_idle_timeout() {
    let server = Server::start(&["--idle-timeout", "1"]);
    let mut c = greeted(&server);
    let started = Instant::now();
    for i in 0..4 {
        thread::sleep(Duration::from_millis(400)); // time passing is the point
        c.send(format!("n{i}\n"));
        assert_eq!(c.text_line(), format!("Hello, n{i}!"));
    }
    assert!(started.elapsed() > Duration::from_millis(1500));
    assert_eq!(lossy(&c.rest()), "ERROR idle for 1 s, closing\r\n");
}

/// A client sends names (1 MiB per write, until the server gives up on it) and never
/// reads a reply; meanwhile another client is served. Returns the server's logs.
fn write_timeout_scenario(framing: &str) -> String {
    let server = Server::start(&["--write-timeout", "1", "--framing", framing]);
    let chunk = framing == "chunk";
    // One exchange with the well-behaved client, in the server's framing.
    let hello = |c: &mut Conn, name: &str| {
        if chunk {
            c.send(name);
            assert_eq!(lossy(&c.exact(name.len() + 8)), format!("Hello, {name}!"));
        } else {
            c.send(format!("{name}\n"));
            assert_eq!(c.text_line(), format!("Hello, {name}!"));
        }
    };
    let mut stuck = server.connect();
    assert_eq!(stuck.exact(8), b"Welcome!");
    let mut writer = stuck.stream.try_clone().unwrap();
    let flood = thread::spawn(move || {
        let mut names = Vec::with_capacity(1 << 20);
        while names.len() < (1 << 20) {
            names.extend_from_slice(&[b'n'; 1023]);
            names.push(b'\n');
        }
        let mut sent = 0usize;
        loop {
            if let Err(e) = writer.write_all(&names) {
                return (sent, e);
            }
            sent += names.len();
            assert!(sent < 1 << 30, "the server never stopped reading");
        }
    });
    // Meanwhile another client is served.
    let mut other = server.connect();
    assert_eq!(other.exact(8), b"Welcome!");
    if !chunk {
        assert_eq!(other.exact(2), b"\r\n");
    }
    hello(&mut other, "Other");
    let started = Instant::now();
    let (sent, error) = flood.join().unwrap();
    assert!(sent >= 1 << 20, "sent {sent} bytes");
    // Closed by the server (with unread input, so a reset), not our own write timeout.
    assert!(
        matches!(
            error.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
        ),
        "the server should close the connection (got {error} after {:?}, {sent} bytes sent)",
        started.elapsed()
    );
    drop(stuck);
    // The other client is still served.
    hello(&mut other, "Again");
    drop(other);
    server.stop_and_logs()
}

#[test]
fn write_timeout_frees_a_client_that_never_reads() {
    let logs = write_timeout_scenario("line");
    let closed = log_lines(&logs, "conn 1 closed");
    assert_eq!(closed.len(), 1, "{logs}");
    assert!(closed[0].contains("write error"), "{}", closed[0]);
    // Once, not twice: a send that waited out the 1 s timeout having placed part of
    // the replies used to be followed by a second send that waited 1 s more.
    let lived = conn_1_lived(&logs);
    assert!(lived < 1.8, "closed after {lived} s with --write-timeout 1");
}

#[test]
fn write_timeout_frees_a_chunk_framed_client_that_never_reads() {
    let logs = write_timeout_scenario("chunk");
    let closed = log_lines(&logs, "conn 1 closed");
    assert_eq!(closed.len(), 1, "{logs}");
    assert!(closed[0].contains("write error"), "{}", closed[0]);
}

/// How long `conn 1` lived, from its close line.
fn conn_1_lived(logs: &str) -> f64 {
    let closed = log_lines(logs, "conn 1 closed");
    assert_eq!(closed.len(), 1, "{logs}");
    closed[0]
        .split(", ")
        .nth(1)
        .and_then(|d| d.strip_suffix(" s"))
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no duration: {}", closed[0]))
}

/// Echo mode writes back as it reads; a client that never reads is freed after the
/// write timeout, once (not once per partial send).
#[test]
fn write_timeout_frees_an_echo_client_that_never_reads() {
    let server = Server::start(&["--mode", "echo", "--write-timeout", "1"]);
    let stuck = server.connect();
    let mut writer = stuck.stream.try_clone().unwrap();
    let flood = thread::spawn(move || {
        let chunk = vec![b'e'; 1 << 16];
        let mut sent = 0usize;
        while writer.write_all(&chunk).is_ok() {
            sent += chunk.len();
            assert!(sent < 1 << 30, "the server never stopped reading");
        }
    });
    flood.join().unwrap();
    drop(stuck);
    let logs = server.stop_and_logs();
    assert!(
        log_lines(&logs, "conn 1 closed")[0].contains("write error"),
        "{logs}"
    );
    let lived = conn_1_lived(&logs);
    assert!(lived < 1.8, "closed after {lived} s with --write-timeout 1");
}

/// Telnet negotiations are answered from a buffer that a burst must not leave large:
/// an idle connection owns no heap buffer.
#[test]
fn a_burst_of_telnet_negotiations_leaves_no_buffer_behind() {
    let server = Server::start(&["-q"]);
    let before = server.proc_status("VmRSS");
    let burst: Vec<u8> = [0xFF, 0xFD, 0x01].repeat(21_000);
    let mut conns = Vec::new();
    for _ in 0..200 {
        let mut c = greeted(&server);
        c.send(&burst);
        // Every `IAC DO x` is refused with `IAC WONT x`: read them all.
        assert_eq!(c.exact(burst.len()), [0xFF, 0xFC, 0x01].repeat(21_000));
        conns.push(c);
    }
    let per_conn = (server.proc_status("VmRSS") - before) as f64 / 200.0;
    // 10 KiB is the thread; a kept 64 KiB answer buffer made it about 78 KiB.
    assert!(per_conn < 40.0, "{per_conn:.1} KiB per idle connection");
}

#[test]
fn a_reset_connection_does_not_touch_the_others() {
    let server = Server::start(&[]);
    let mut other = greeted(&server);
    let mut rude = greeted(&server);
    rude.send("Rude\npartial line");
    assert_eq!(rude.text_line(), "Hello, Rude!");
    // Close with RST (SO_LINGER 0) in the middle of a line.
    socket2::SockRef::from(&rude.stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(rude);
    other.send("Other\n");
    assert_eq!(other.text_line(), "Hello, Other!");
    let mut fresh = greeted(&server);
    fresh.send("Fresh\n");
    assert_eq!(fresh.text_line(), "Hello, Fresh!");
    say_exit(&mut fresh);
    say_exit(&mut other);
}

#[test]
fn a_failing_connection_releases_its_slot() {
    // Regression test: at 1e08f09 this session (`Alice\n`, then `Bob\n`) panicked the
    // connection thread, which then skipped `leave`: the socket was never closed, the
    // only slot was never released, and every later client was told "busy".
    let server = Server::start(&["--max-connections", "1"]);
    let mut c = greeted(&server);
    c.send("Alice\n");
    assert_eq!(c.text_line(), "Hello, Alice!");
    c.send("Bob\n");
    c.send("exit\n");
    c.stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut got = Vec::new();
    let ended = c.stream.read_to_end(&mut got);
    eprintln!("first client got {:?} ({ended:?})", lossy(&got));
    drop(c);
    // The client has left: its slot must be free again.
    let (mut next, _) = connect_when_not_busy(&server);
    next.send("Next\n");
    assert_eq!(next.text_line(), "Hello, Next!");
}

// ---------------------------------------------------------------------------------
// Signals and shutdown
// ---------------------------------------------------------------------------------

#[test]
fn sigterm_answers_received_lines_then_says_shutting_down_and_exits_0() {
    let server = Server::start(&["--delay", "200"]);
    let mut busy = greeted(&server);
    let mut idle = greeted(&server);
    // Five lines in one write; the first reply shows the server has them and is
    // working through the delays when the signal arrives.
    busy.send("a1\na2\na3\na4\na5\n");
    assert_eq!(busy.text_line(), "Hello, a1!");
    let signalled = Instant::now();
    server.signal("TERM");
    // The idle connection hears about it at once.
    assert_eq!(lossy(&idle.rest()), "server shutting down\r\n");
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "notice {:?} after the signal",
        signalled.elapsed()
    );
    // No new connections are accepted.
    match TcpStream::connect_timeout(&server.addr(), IO_TIMEOUT) {
        Err(_) => {}
        Ok(mut late) => {
            late.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut got = Vec::new();
            let _ = late.read_to_end(&mut got);
            assert!(
                got.is_empty(),
                "accepted after the signal: {:?}",
                lossy(&got)
            );
        }
    }
    // Every received line is answered, then the notice, then the close.
    assert_eq!(
        lossy(&busy.rest()),
        "Hello, a2!\r\nHello, a3!\r\nHello, a4!\r\nHello, a5!\r\nserver shutting down\r\n"
    );
    drop((busy, idle));
    let (code, logs) = server.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("stopped (0 connections cut off)"), "{logs}");
}

/// Shutting down ends reading the way a client's EOF does, but a line the client has
/// not finished is not a received line: `Bo` is not the name `Bo`, and `exi` is not
/// `exit`.
#[test]
fn sigterm_does_not_answer_a_line_the_client_has_not_finished() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    let mut d = greeted(&server);
    c.send("Alice\nBo");
    assert_eq!(c.text_line(), "Hello, Alice!");
    d.send("Dan\nexi");
    assert_eq!(d.text_line(), "Hello, Dan!");
    server.signal("TERM");
    assert_eq!(lossy(&c.rest()), "server shutting down\r\n");
    assert_eq!(lossy(&d.rest()), "server shutting down\r\n");
}

/// A client socket with a small receive buffer (and send buffer, if given), so that
/// unread replies soon hold the server's writes; timeouts as for every test socket.
fn connect_with_small_buffers(server: &Server, recv: usize, send: Option<usize>) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(recv).unwrap();
    if let Some(send) = send {
        socket.set_send_buffer_size(send).unwrap();
    }
    socket
        .connect_timeout(&server.addr().into(), IO_TIMEOUT)
        .unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// A client that has not read its replies yet and sends one more line after the
/// signal still gets its replies and the notice, not a reset. Ending reads with
/// `shutdown(Read)` made Linux answer that late line, once the FIN had gone, with a
/// reset that discarded the replies still queued for the client (3,468 of 100,000
/// arrived, and no notice).
#[test]
fn sigterm_keeps_queued_replies_for_a_client_still_sending() {
    let server = Server::start(&[]);
    let mut stream = connect_with_small_buffers(&server, 32 * 1024, None);
    stream.write_all(&b"name\n".repeat(20_000)).unwrap();
    server.signal("TERM");
    let started = Instant::now();
    while !server.logs_so_far().contains("shutting down") {
        assert!(started.elapsed() < IO_TIMEOUT, "the signal was not handled");
        thread::sleep(Duration::from_millis(10));
    }
    // Not for readiness: lets the server send its notice and FIN before the late line.
    thread::sleep(Duration::from_millis(200));
    stream.write_all(b"late\n").unwrap();
    let mut got = Vec::new();
    stream
        .read_to_end(&mut got)
        .unwrap_or_else(|e| panic!("{e} after {} bytes", got.len()));
    let text = lossy(&got);
    let lines: Vec<&str> = text.split_terminator("\r\n").collect();
    let (notice, replies) = lines.split_last().expect("some lines");
    assert_eq!(*notice, "server shutting down");
    assert_eq!(replies[0], "Welcome!");
    assert!(replies.len() > 1, "no reply arrived");
    assert!(
        replies[1..].iter().all(|l| *l == "Hello, name!"),
        "every line answered is a reply, in order"
    );
}

/// A last line that the client's FIN ended before the signal is a finished line.
#[test]
fn sigterm_answers_a_last_line_ended_by_a_half_close() {
    let server = Server::start(&["--delay", "300"]);
    let mut c = greeted(&server);
    c.send("A\nBob");
    c.finish_sending();
    server.signal("TERM");
    assert_eq!(
        lossy(&c.rest()),
        "Hello, A!\r\nHello, Bob!\r\nserver shutting down\r\n"
    );
}

/// A client that sends without pause while reading slowly never lets the server find
/// its input drained: reading after the signal has a budget, so shutdown still ends.
#[test]
fn sigterm_ends_a_client_that_never_stops_sending() {
    let server = Server::start(&["--shutdown-timeout", "20"]);
    let mut c = greeted(&server);
    let mut writer = c.stream.try_clone().unwrap();
    let flood = thread::spawn(move || {
        let chunk: Vec<u8> = (0..6000)
            .flat_map(|i| format!("name{i:06}\n").into_bytes())
            .collect();
        while writer.write_all(&chunk).is_ok() {}
    });
    let mut tail = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    let started = Instant::now();
    let mut signalled: Option<Instant> = None;
    loop {
        let n = c.stream.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 1024 {
            tail.drain(..tail.len() - 64);
        }
        // A second of steady traffic first: the buffers on both sides grow full.
        if signalled.is_none() && started.elapsed() > Duration::from_secs(1) {
            server.signal("TERM");
            signalled = Some(Instant::now());
        }
        // A slow reader (about 10 MB/s): the server's writes wait, and so do its reads,
        // so its input is never found drained.
        thread::sleep(Duration::from_millis(3));
    }
    let took = signalled.map(|t| t.elapsed()).unwrap_or_default();
    assert!(
        lossy(&tail).ends_with("server shutting down\r\n"),
        "no notice: {:?}",
        lossy(&tail)
    );
    let (code, logs) = server.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{logs}");
    assert!(
        took < Duration::from_secs(15),
        "the notice came {took:?} after the signal"
    );
    flood.join().unwrap();
}

/// Shutdown interrupts blocked writes too (SIGURG every 100 ms); that must not restart
/// the write timeout each time, or a client that never reads holds the process until
/// the shutdown timeout.
#[test]
fn write_timeout_still_frees_a_client_that_never_reads_during_shutdown() {
    let server = Server::start(&["--write-timeout", "3", "--shutdown-timeout", "20"]);
    let mut stuck = connect_with_small_buffers(&server, 4096, Some(16 * 1024));
    // Sends until the server stops taking input: by then its own writes wait for us.
    stuck
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let chunk = b"name\n".repeat(1000);
    let started = Instant::now();
    while stuck.write_all(&chunk).is_ok() {
        assert!(started.elapsed() < IO_TIMEOUT, "the server kept reading");
    }
    let signalled = Instant::now();
    server.signal("TERM");
    let (code, logs) = server.wait(Duration::from_secs(30));
    let took = signalled.elapsed();
    assert_eq!(code, Some(0), "{logs}");
    assert!(
        took < Duration::from_secs(8),
        "exited {took:?} after the signal: {logs}"
    );
    assert!(logs.contains("write error"), "{logs}");
    drop(stuck);
}

#[test]
fn sigterm_answers_lines_sent_in_a_later_write_before_the_signal() {
    let server = Server::start(&["--delay", "200"]);
    let mut c = greeted(&server);
    c.send("a1\na2\na3\n");
    assert_eq!(c.text_line(), "Hello, a1!");
    // Sent while the server sleeps before `a2`: still unread when the signal comes.
    c.send("b1\nb2\n");
    server.signal("TERM");
    assert_eq!(
        lossy(&c.rest()),
        "Hello, a2!\r\nHello, a3!\r\nHello, b1!\r\nHello, b2!\r\nserver shutting down\r\n"
    );
    drop(c);
    let (code, logs) = server.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{logs}");
}

#[test]
fn sigint_is_graceful_too() {
    let server = Server::start(&[]);
    let mut c = greeted(&server);
    c.send("Alice\n");
    assert_eq!(c.text_line(), "Hello, Alice!");
    server.signal("INT");
    assert_eq!(lossy(&c.rest()), "server shutting down\r\n");
    drop(c);
    let (code, logs) = server.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{logs}");
}

/// A shutdown timeout past what the clock holds means "wait as long as it takes", not a
/// panic at the first signal that loses every line received.
#[test]
fn a_huge_shutdown_timeout_waits_instead_of_crashing() {
    let server = Server::start(&[
        "--shutdown-timeout",
        "18446744073709551615",
        "--delay",
        "200",
    ]);
    let mut c = greeted(&server);
    c.send("a\nb\nc\nd\ne\n");
    assert_eq!(c.text_line(), "Hello, a!");
    server.signal("TERM");
    assert_eq!(
        lossy(&c.rest()),
        "Hello, b!\r\nHello, c!\r\nHello, d!\r\nHello, e!\r\nserver shutting down\r\n"
    );
    drop(c);
    let (code, logs) = server.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
}

/// SIGHUP (a closed terminal, or an operator used to nginx's reload) is logged and
/// ignored: the server goes on serving, and SIGTERM still stops it gracefully.
#[test]
fn sighup_is_logged_and_ignored() {
    let server = Server::start(&[]);
    let mut before = greeted(&server);
    server.signal("HUP");
    assert!(
        eventually(IO_TIMEOUT, || server.logs_so_far().contains("SIGHUP")),
        "{}",
        server.logs_so_far()
    );
    before.send("Alice\n");
    assert_eq!(before.text_line(), "Hello, Alice!");
    let mut after = greeted(&server);
    say_exit(&mut after);
    server.signal("TERM");
    assert_eq!(lossy(&before.rest()), "server shutting down\r\n");
    drop(before);
    let (code, logs) = server.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{logs}");
    assert_eq!(log_lines(&logs, "SIGHUP").len(), 1, "{logs}");
}

/// A TLS server whose certificate file is a FIFO by the time a SIGHUP makes it reload:
/// the reload hangs reading it until someone writes. Returns the server, the writing end
/// (held open, the reload waits for more), the path and the certificates, or `None`
/// without `mkfifo`.
fn tls_reload_hung_on_a_fifo() -> Option<(Server, std::fs::File, std::path::PathBuf, tls::Certs)> {
    use std::os::unix::fs::OpenOptionsExt;
    if !require("mkfifo", "coreutils") {
        return None;
    }
    let certs = tls::make_certs();
    let cert = certs.dir.join("live.pem");
    std::fs::copy(&certs.server.cert, &cert).unwrap();
    let server = Server::start_with_binds(
        &[
            "--tls-bind",
            "127.0.0.1:0",
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &certs.server.key.display().to_string(),
        ],
        1,
    );
    std::fs::remove_file(&cert).unwrap();
    let made = run_tool(
        Command::new("mkfifo").arg(&cert),
        None,
        Duration::from_secs(20),
    );
    assert_eq!(made.code, Some(0), "mkfifo: {}", made.stderr);
    server.signal("HUP");
    // A writer opens without waiting only once a reader has the FIFO open: the reload.
    let mut writer = None;
    assert!(
        eventually(IO_TIMEOUT, || {
            writer = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&cert)
                .ok();
            writer.is_some()
        }),
        "the reload never opened the FIFO: {}",
        server.logs_so_far()
    );
    Some((server, writer?, cert, certs))
}

/// A reload that hangs (a FIFO, a hung network mount) must not keep SIGTERM from
/// stopping the server: it runs off the thread that handles the signals.
#[test]
fn sigterm_stops_the_server_while_a_sighup_reload_hangs() {
    let Some((server, writer, _, _certs)) = tls_reload_hung_on_a_fifo() else {
        return;
    };
    server.signal("TERM");
    let (code, logs) = server.wait(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("stopped"), "{logs}");
    // Held until the server is gone: the reload was hung all along.
    drop(writer);
}

/// SIGHUPs that come while a reload hangs start no thread each: they make one more
/// reload after it, which reads the files as they are then.
#[test]
fn sighups_while_a_reload_hangs_make_one_more_reload_and_no_more_threads() {
    let Some((server, writer, cert, certs)) = tls_reload_hung_on_a_fifo() else {
        return;
    };
    let threads = server.proc_status("Threads");
    let waiting = || log_lines(&server.logs_so_far(), "still reading").len();
    for n in 1..=3 {
        server.signal("HUP");
        assert!(
            eventually(IO_TIMEOUT, || waiting() == n),
            "SIGHUP {n} while the reload hangs: {}",
            server.logs_so_far()
        );
    }
    assert_eq!(
        server.proc_status("Threads"),
        threads,
        "{}",
        server.logs_so_far()
    );
    // The real file back in the FIFO's place; the hung reload reads an empty FIFO and
    // fails, and the one after it reads the file.
    let fresh = certs.dir.join("fresh.pem");
    std::fs::copy(&certs.server.cert, &fresh).unwrap();
    std::fs::rename(&fresh, &cert).unwrap();
    drop(writer);
    assert!(
        eventually(IO_TIMEOUT, || server.logs_so_far().contains("reloaded")),
        "{}",
        server.logs_so_far()
    );
    let logs = server.stop_and_logs();
    assert_eq!(log_lines(&logs, "reload failed").len(), 1, "{logs}");
    assert!(logs.find("reload failed") < logs.find("reloaded"), "{logs}");
}

#[test]
fn shutdown_timeout_bounds_the_wait_for_slow_connections() {
    let server = Server::start(&["--delay", "20000", "--shutdown-timeout", "1"]);
    let mut slow = greeted(&server);
    let mut idle = greeted(&server);
    slow.send("slow\n");
    server.signal("TERM");
    let signalled = Instant::now();
    assert_eq!(lossy(&idle.rest()), "server shutting down\r\n");
    // As clients do on the server's close; one that stays would be waited for too, for
    // up to the 2 s the server gives a client to close after its last words.
    drop(idle);
    let (code, logs) = server.wait(Duration::from_secs(10));
    let took = signalled.elapsed();
    assert_eq!(code, Some(0), "{logs}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "exited {took:?} after the signal"
    );
    assert!(logs.contains("1 connections cut off"), "{logs}");
    drop(slow);
}

#[test]
fn a_second_signal_exits_at_once() {
    let server = Server::start(&["--delay", "20000", "--shutdown-timeout", "30"]);
    let mut slow = greeted(&server);
    let mut idle = greeted(&server);
    slow.send("slow\n");
    server.signal("TERM");
    // The idle connection's notice shows the first signal was handled.
    assert_eq!(lossy(&idle.rest()), "server shutting down\r\n");
    let again = Instant::now();
    server.signal("TERM");
    let (code, logs) = server.wait(Duration::from_secs(10));
    assert!(
        again.elapsed() < Duration::from_secs(3),
        "took {:?}",
        again.elapsed()
    );
    assert!(
        matches!(code, Some(c) if c != 0),
        "exit code {code:?}: {logs}"
    );
    drop(slow);
}

// ---------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------

#[test]
fn logs_one_line_when_a_connection_opens_and_one_when_it_closes() {
    let server = start_env(&[("RUST_LOG", "debug")], &[]);
    let mut c = greeted(&server);
    let local = c.stream.local_addr().unwrap();
    c.send("Alice\nexit\n");
    assert_eq!(lossy(&c.rest()), "Hello, Alice!\r\nBye!\r\n");
    drop(c);
    let logs = server.stop_and_logs();
    let opened = log_lines(&logs, "conn 1 open");
    assert_eq!(opened.len(), 1, "{logs}");
    // The open at debug (a health check must not leave an open without its close at
    // info), the close of a connection that said something at info.
    assert_eq!(level(opened[0]), "DEBUG", "{}", opened[0]);
    assert!(
        opened[0].ends_with(&format!("conn 1 open: {local}")),
        "{}",
        opened[0]
    );
    let closed = log_lines(&logs, "conn 1 closed");
    assert_eq!(closed.len(), 1, "{logs}");
    assert_eq!(level(closed[0]), "INFO", "{}", closed[0]);
    // Duration, replies, bytes both ways (11 in: `Alice\nexit\n`; 10 + 15 + 6 out), why.
    let line = closed[0];
    let detail = line.split("conn 1 closed: ").nth(1).unwrap();
    let fields: Vec<&str> = detail.split(", ").collect();
    assert_eq!(fields.len(), 6, "{line}");
    assert_eq!(fields[0], local.to_string());
    let secs = fields[1].strip_suffix(" s").expect("duration in s");
    secs.parse::<f64>().expect("duration is a number");
    assert_eq!(
        &fields[2..],
        [
            "1 replies",
            "11 bytes in",
            "31 bytes out",
            "client said exit"
        ],
        "{line}"
    );
    // No trace of the name at info.
    assert!(!logs.contains("Alice"), "{logs}");
}

#[test]
fn client_text_in_logs_is_escaped() {
    let server = start_env(&[("RUST_LOG", "trace")], &[]);
    let mut c = greeted(&server);
    let forged = "[2026-01-01T00:00:00.000Z INFO  tcp_hello::server] conn 99 closed: forged";
    let mut input = Vec::new();
    // A newline cannot be part of a name, but CR, escapes and other controls can.
    input.extend_from_slice(format!("evil\r{forged}\n").as_bytes());
    input.extend_from_slice(b"\x1b[2K\x1b[1G\x1b[31mred\x1b[0m\n");
    input.extend_from_slice("bs\x08\x08\x08nel\u{85}vt\x0bff\x0c\n".as_bytes());
    input.extend_from_slice(b"bad\xc3\x28\xfe\x80\n");
    input.extend_from_slice(b"back\\slash\n");
    input.extend_from_slice(b"exit\n");
    c.send(&input);
    // Replies are verbatim.
    assert_eq!(c.line(), format!("Hello, evil\r{forged}!\r\n").into_bytes());
    assert_eq!(c.line(), b"Hello, \x1b[2K\x1b[1G\x1b[31mred\x1b[0m!\r\n");
    c.line();
    c.line();
    c.line();
    assert_eq!(c.rest(), b"Bye!\r\n");
    drop(c);
    let logs = server.stop_and_logs();
    assert!(
        logs.contains("conn 1: name evil\\r[2026-01-01T00:00:00.000Z INFO  tcp_hello::server] conn 99 closed: forged"),
        "{logs}"
    );
    assert!(
        logs.contains("conn 1: name \\u{1b}[2K\\u{1b}[1G\\u{1b}[31mred\\u{1b}[0m"),
        "{logs}"
    );
    assert!(
        logs.contains("conn 1: name bs\\u{8}\\u{8}\\u{8}nel\\u{85}vt\\u{b}ff\\u{c}"),
        "{logs}"
    );
    assert!(logs.contains("conn 1: name bad\\xc3(\\xfe\\x80"), "{logs}");
    assert!(logs.contains("conn 1: name back\\\\slash"), "{logs}");
    // No raw control character anywhere, and every line is a real log line.
    for bad in ['\r', '\x1b', '\x08', '\x0b', '\x0c', '\u{85}'] {
        assert!(!logs.contains(bad), "raw {bad:?} in the logs: {logs:?}");
    }
    for line in logs.lines() {
        assert!(line.starts_with("[20"), "not a log line: {line:?}");
    }
    // The forged text appears once, inside the real trace line of the name.
    let forged_lines = log_lines(&logs, "conn 99 closed");
    assert_eq!(forged_lines.len(), 1, "{logs}");
    assert!(
        forged_lines[0].contains("] conn 1: name evil\\r[2026"),
        "{}",
        forged_lines[0]
    );
}

#[test]
fn a_silent_connection_logs_its_close_at_debug() {
    // A health check: connect, close, never send a byte.
    let check = |server: &Server| {
        let probe = server.connect();
        drop(probe);
        // A normal session after it: accepted later, so the probe is served first.
        let mut c = greeted(server);
        c.send("Alice\nexit\n");
        assert_eq!(lossy(&c.rest()), "Hello, Alice!\r\nBye!\r\n");
    };
    let server = start_env(&[("RUST_LOG", "debug")], &[]);
    check(&server);
    let logs = server.stop_and_logs();
    let closed = log_lines(&logs, "conn 1 closed");
    assert_eq!(closed.len(), 1, "{logs}");
    assert_eq!(level(closed[0]), "DEBUG", "{}", closed[0]);
    let closed = log_lines(&logs, "conn 2 closed");
    assert_eq!(level(closed[0]), "INFO", "{}", closed[0]);

    // At the default level the probe's close is not logged at all.
    let server = Server::start(&[]);
    check(&server);
    let logs = server.stop_and_logs();
    assert!(log_lines(&logs, "conn 1 closed").is_empty(), "{logs}");
    assert_eq!(log_lines(&logs, "conn 2 closed").len(), 1, "{logs}");
}

/// `RUST_LOG=` set but empty (a unit file's `Environment=RUST_LOG=`, `docker -e RUST_LOG=`)
/// counts as unset: info by default, moved by -v and -q.
#[test]
fn an_empty_rust_log_counts_as_unset() {
    let session = |server: &Server| {
        let mut c = greeted(server);
        say_exit(&mut c);
    };
    let server = start_env(&[("RUST_LOG", "")], &[]);
    session(&server);
    let logs = server.stop_and_logs();
    assert_eq!(log_lines(&logs, "] listening on").len(), 1, "{logs}");
    assert_eq!(log_lines(&logs, "conn 1 closed").len(), 1, "{logs}");
    assert!(!logs.contains("DEBUG"), "{logs}");
    let server = start_env(&[("RUST_LOG", "")], &["-v"]);
    session(&server);
    let logs = server.stop_and_logs();
    assert_eq!(log_lines(&logs, "conn 1 open").len(), 1, "{logs}");
    assert_eq!(level(log_lines(&logs, "conn 1 open")[0]), "DEBUG", "{logs}");
}

#[test]
fn verbosity_flags_and_rust_log() {
    let session = |server: &Server| {
        let mut c = greeted(server);
        c.send("Alice\nexit\n");
        assert_eq!(lossy(&c.rest()), "Hello, Alice!\r\nBye!\r\n");
    };
    // Default (no RUST_LOG): info.
    let server = Server::start(&[]);
    session(&server);
    let logs = server.stop_and_logs();
    assert_eq!(log_lines(&logs, "conn 1 closed").len(), 1, "{logs}");
    assert!(log_lines(&logs, "conn 1 open").is_empty(), "{logs}");
    assert!(!logs.contains("DEBUG") && !logs.contains("TRACE"), "{logs}");
    // -q: warnings and errors only.
    let server = Server::start(&["-q"]);
    session(&server);
    let logs = server.stop_and_logs();
    for line in logs.lines() {
        assert!(matches!(level(line), "WARN" | "ERROR"), "-q: {line}");
    }
    assert!(log_lines(&logs, "conn 1").is_empty(), "{logs}");
    // -vv: trace, which includes the names.
    let server = Server::start(&["-vv"]);
    session(&server);
    let logs = server.stop_and_logs();
    assert!(logs.contains("conn 1: name Alice"), "{logs}");
    // RUST_LOG wins over -q, and module filters work.
    let server = start_env(&[("RUST_LOG", "tcp_hello::server=info")], &["-q"]);
    session(&server);
    let logs = server.stop_and_logs();
    assert_eq!(log_lines(&logs, "conn 1 closed").len(), 1, "{logs}");
    assert!(
        !logs.contains("] listening on"),
        "the tcp_hello module's lines are filtered out: {logs}"
    );
}

/// Runs `clients` connections at once to their end, and returns the server's thread
/// count while they were all open.
fn served_at_once(server: &Server, clients: usize) -> u64 {
    let mut open: Vec<Conn> = (0..clients).map(|_| greeted(server)).collect();
    // Each connection's thread wrote its welcome, so each one exists now.
    let threads = server.proc_status("Threads");
    for c in &mut open {
        say_exit(c);
    }
    threads
}

#[test]
fn finished_connection_threads_park_for_the_next_connections_up_to_the_cache_size() {
    let server = Server::start(&["--thread-cache", "2"]);
    let all_open = served_at_once(&server, 5);
    assert!(
        eventually(IO_TIMEOUT, || server.proc_status("Threads") == all_open - 3),
        "two of the five threads should stay parked: {} threads, {all_open} with all open",
        server.proc_status("Threads")
    );
    // The next connections run on the parked threads: no thread starts.
    let mut next: Vec<Conn> = (0..2).map(|_| greeted(&server)).collect();
    assert_eq!(server.proc_status("Threads"), all_open - 3);
    for c in &mut next {
        say_exit(c);
    }
}

#[test]
fn a_thread_cache_of_zero_ends_every_thread_with_its_connection() {
    let server = Server::start(&["--thread-cache", "0"]);
    let all_open = served_at_once(&server, 5);
    assert!(
        eventually(IO_TIMEOUT, || server.proc_status("Threads") == all_open - 5),
        "{} threads, {all_open} with five open",
        server.proc_status("Threads")
    );
}

/// The connection's socket stays open on the server while the client keeps its end, for
/// at most `--linger`: at once closed with `--linger 0`, still open with `--linger 30`.
#[test]
fn linger_bounds_how_long_a_closing_connection_waits_for_the_client() {
    let (quick, patient) = (
        Server::start(&["--linger", "0"]),
        Server::start(&["--linger", "30"]),
    );
    let idle = (quick.fd_count(), patient.fd_count());
    let mut held = Vec::new();
    for server in [&quick, &patient] {
        let mut c = greeted(server);
        c.send("exit\n");
        assert_eq!(lossy(&c.rest()), "Bye!\r\n");
        // The client keeps its end open: no FIN from it.
        held.push(c);
    }
    assert!(
        eventually(Duration::from_millis(1500), || quick.fd_count() == idle.0),
        "--linger 0 kept the socket open"
    );
    assert_eq!(
        patient.fd_count(),
        idle.1 + 1,
        "--linger 30 closed before the client did"
    );
    drop(held);
    assert!(eventually(IO_TIMEOUT, || patient.fd_count() == idle.1));
}
