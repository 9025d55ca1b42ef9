//! Integration tests of `tcp-hello serve` over real sockets.
//!
//! Every test starts its own server on port 0 and learns its address from the
//! `listening on ADDR` line; every socket has timeouts (see `common::Conn`). Nothing
//! sleeps to wait for the server to be ready: the tests read the lines they expect.
//! The few sleeps left are in tests about time passing (idle timeout, delay) or in a
//! bounded retry of "try again later".

mod limits;
mod listening;
mod logs;
mod modes;
mod protocol;
mod signals;
mod threads;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

// Helpers shared by the topics' modules.

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
