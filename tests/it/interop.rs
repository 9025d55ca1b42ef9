//! `tcp-hello serve` against real tools: OpenBSD netcat, telnet (driven by expect) and
//! the Python tutorial's socket client.
//!
//! A test whose tool is missing says which Debian package to install and passes, or
//! fails under `CI=true` (see `common::require`). Every external process runs under a
//! deadline and is killed when it expires.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;

/// How long any external tool may run.
const TOOL_DEADLINE: Duration = Duration::from_secs(30);

/// OpenBSD netcat, if installed (see [`require`]): the traditional one has no `-N` and
/// behaves differently at EOF.
pub fn openbsd_nc() -> bool {
    let install = "apt-get install netcat-openbsd";
    if !on_path("nc") {
        return cannot_run(&format!("nc (OpenBSD netcat) is not installed: {install}"));
    }
    let (_, _, help) = run(Command::new("nc").arg("-h"), None);
    help.contains("OpenBSD netcat")
        || cannot_run(&format!(
            "nc (OpenBSD netcat) is not installed, the nc here is another one: {install}"
        ))
}

/// Runs `cmd` with `stdin` (then closed) under [`TOOL_DEADLINE`], killing it if it
/// runs over. Returns (exit code, stdout, stderr).
fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> (Option<i32>, String, String) {
    let done = run_tool(cmd, stdin, TOOL_DEADLINE);
    (done.code, done.stdout, done.stderr)
}

/// The server's `conn N closed` log line, after stopping it.
fn closed_line(server: Server, id: u64) -> String {
    let logs = server.stop_and_logs();
    let needle = format!("conn {id} closed: ");
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains(&needle)).collect();
    assert_eq!(lines.len(), 1, "{logs}");
    lines[0].to_string()
}

#[test]
fn netcat_session_with_exit() {
    if !openbsd_nc() {
        return;
    }
    let server = Server::start(&[]);
    let port = server.addr().port().to_string();
    let started = Instant::now();
    // printf 'Alice\nexit\n' | nc -N 127.0.0.1 PORT
    let (code, out, err) = run(
        Command::new("nc").args(["-N", "127.0.0.1", &port]),
        Some(b"Alice\nexit\n"),
    );
    assert_eq!(
        out, "Welcome!\r\nHello, Alice!\r\nBye!\r\n",
        "stderr: {err}"
    );
    assert_eq!(code, Some(0), "stderr: {err}");
    // nc ends because the server closes, not because -q 5 runs out.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "nc took {:?}",
        started.elapsed()
    );
    let closed = closed_line(server, 1);
    assert!(closed.ends_with("client said exit"), "{closed}");
}

#[test]
fn netcat_with_crlf_line_endings() {
    if !openbsd_nc() {
        return;
    }
    let server = Server::start(&[]);
    let port = server.addr().port().to_string();
    // nc -C sends CRLF for every LF. -q 1: Debian's nc waits that long after stdin's
    // EOF whatever the server does (so `-q 5` always takes 5 s; the README uses `-N`).
    let (code, out, err) = run(
        Command::new("nc").args(["-C", "-q", "1", "127.0.0.1", &port]),
        Some("张三\n\nQUIT\n".as_bytes()),
    );
    assert_eq!(out, "Welcome!\r\nHello, 张三!\r\nBye!\r\n", "stderr: {err}");
    assert_eq!(code, Some(0), "stderr: {err}");
}

#[test]
fn netcat_half_close_gets_the_last_line_answered() {
    if !openbsd_nc() {
        return;
    }
    let server = Server::start(&[]);
    let port = server.addr().port().to_string();
    // printf Bob | nc -N 127.0.0.1 PORT: no newline, then shutdown(SHUT_WR) at EOF.
    let (code, out, err) = run(
        Command::new("nc").args(["-N", "127.0.0.1", &port]),
        Some(b"Bob"),
    );
    assert_eq!(out, "Welcome!\r\nHello, Bob!\r\n", "stderr: {err}");
    assert_eq!(code, Some(0), "stderr: {err}");
    let closed = closed_line(server, 1);
    assert!(
        closed.ends_with("1 reply, 3 bytes in, 23 bytes out, client closed"),
        "{closed}"
    );
}

#[test]
fn telnet_session_with_ctrl_c() {
    if !require("expect", "expect") || !require("telnet", "telnet") {
        return;
    }
    let server = Server::start(&["-vv"]);
    let port = server.addr().port().to_string();
    let script = fixture("telnet_session.exp");
    let (code, out, err) = run(
        Command::new("expect")
            .arg(&script)
            .args([&port, "Alice", "Bob"]),
        None,
    );
    let logs = server.stop_and_logs();
    let context = format!("transcript:\n{out}\nexpect stderr: {err}\nserver log:\n{logs}");
    assert_eq!(code, Some(0), "telnet session failed.\n{context}");
    assert!(
        out.contains("Connection closed by foreign host."),
        "{context}"
    );
    // The only telnet command the server ever sent is the refusal of the timing mark.
    let received: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("RCVD"))
        .map(str::trim)
        .collect();
    assert_eq!(received, ["RCVD WONT TIMING MARK"], "{context}");
    // The Ctrl-C really went over the wire: 5 bytes of IAC IP, IAC DO TIMING-MARK in
    // (7 + 5 + 5 + 6 = 23 with `Alice\r\n`, `Bob\r\n`, `exit\r\n`), and the server's
    // 3-byte IAC WONT TIMING-MARK out (10 + 15 + 3 + 13 + 6 = 47); no echo of them.
    assert!(
        logs.contains("conn 1 closed: ")
            && logs.contains("2 replies, 23 bytes in, 47 bytes out, client said exit"),
        "{context}"
    );
}

#[test]
fn python_tutorial_client_against_chunk_framing() {
    if !require("python3", "python3") {
        return;
    }
    let server = Server::start(&["--framing", "chunk"]);
    let port = server.addr().port().to_string();
    let (code, out, err) = run(
        Command::new("python3")
            .arg(fixture("server_tutorial_client.py"))
            .arg(&port),
        None,
    );
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    assert_eq!(out, "Welcome!\nHello, Michael!\n", "stderr: {err}");
    let closed = closed_line(server, 1);
    assert!(
        closed.ends_with("1 reply, 7 bytes in, 23 bytes out, client closed"),
        "{closed}"
    );
}
