//! End-to-end tests of `tcp-hello bench` against a real `tcp-hello serve`.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tcp-hello");
/// Longest wait for the server's `listening on` line.
const STARTUP: Duration = Duration::from_secs(10);
/// Longest run of one bench command before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// A child process, killed and reaped when dropped (also when a test panics).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tcp-hello` with no `TCP_HELLO_*` variables from the environment, so only
/// the arguments given decide what it does.
fn tcp_hello() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TCP_HELLO_") {
            cmd.env_remove(key);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// A running `tcp-hello serve` on a free loopback port.
struct Server {
    addr: String,
    _child: Guard,
}

fn start_server() -> Server {
    let mut child = Guard(
        tcp_hello()
            .args(["-q", "serve", "--bind", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start tcp-hello serve"),
    );
    let stdout = child.0.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        // Keep reading so that the server never blocks on a full pipe.
        for _ in lines {}
    });
    let line = match rx.recv_timeout(STARTUP) {
        Ok(Some(Ok(line))) => line,
        other => panic!("no `listening on` line from the server within {STARTUP:?}: {other:?}"),
    };
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"))
        .trim()
        .to_string();
    Server {
        addr,
        _child: child,
    }
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn read_all(mut from: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = from.read_to_string(&mut s);
        s
    })
}

/// Runs `tcp-hello bench ARGS` to the end (at most `RUN_LIMIT`).
fn bench(args: &[&str]) -> Run {
    let mut child = Guard(
        tcp_hello()
            .arg("bench")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start tcp-hello bench"),
    );
    let stdout = read_all(child.0.stdout.take().expect("stdout is piped"));
    let stderr = read_all(child.0.stderr.take().expect("stderr is piped"));
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("cannot wait for tcp-hello bench") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "tcp-hello bench {args:?} still running after {RUN_LIMIT:?}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// The JSON report of a run that should have succeeded.
fn report(run: &Run) -> Value {
    assert!(
        run.status.success(),
        "bench failed ({}): stdout {:?}, stderr {:?}",
        run.status,
        run.stdout,
        run.stderr
    );
    serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {:?}", run.stdout))
}

fn assert_clean(r: &Value, connections: u64) {
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["errors_total"], 0, "{r}");
    assert_eq!(r["errors"], serde_json::json!({}), "{r}");
    assert_eq!(r["mismatches"], 0, "{r}");
    assert_eq!(r["connections"], connections, "{r}");
    assert_eq!(r["established"], connections, "{r}");
    assert!(r["messages_per_s"].as_f64().is_some_and(|x| x > 0.0), "{r}");
    let lat = &r["latency_us"];
    let q: Vec<f64> = ["p50", "p90", "p99", "p99_9", "max"]
        .iter()
        .map(|k| {
            lat[k]
                .as_f64()
                .unwrap_or_else(|| panic!("latency_us.{k} missing: {r}"))
        })
        .collect();
    assert!(q[0] > 0.0, "{r}");
    assert!(
        q.windows(2).all(|w| w[0] <= w[1]),
        "percentiles out of order: {r}"
    );
}

#[test]
fn messages_mode_verifies_every_reply() {
    let server = start_server();
    let run = bench(&[
        "--connect",
        &server.addr,
        "--connections",
        "8",
        "--messages",
        "2000",
        "--json",
    ]);
    let r = report(&run);
    assert_clean(&r, 8);
    assert_eq!(r["messages"], 2000, "{r}");
    assert_eq!(r["messages_target"], 2000, "{r}");
    // With --json the human report goes to stderr.
    assert!(run.stderr.contains("msg/s"), "{}", run.stderr);
}

#[test]
fn pipelined_messages_are_all_verified() {
    let server = start_server();
    let run = bench(&[
        "--connect",
        &server.addr,
        "--connections",
        "8",
        "--messages",
        "20000",
        "--pipeline",
        "16",
        "--size",
        "24",
        "--json",
    ]);
    let r = report(&run);
    assert_clean(&r, 8);
    assert_eq!(r["messages"], 20000, "{r}");
    assert_eq!(r["pipeline"], 16, "{r}");
}

#[test]
fn duration_mode_prints_a_human_report() {
    let server = start_server();
    let run = bench(&["--connect", &server.addr, "-n", "4", "--duration", "1"]);
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    assert!(run.stdout.contains("msg/s"), "{}", run.stdout);
    assert!(
        run.stdout.contains("4 connections (4 established)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("errors      none"), "{}", run.stdout);
}

#[test]
fn wrong_replies_are_counted_as_mismatches() {
    let server = start_server();
    let run = bench(&[
        "--connect",
        &server.addr,
        "-n",
        "2",
        "--messages",
        "100",
        "--expect",
        "Hi, {}!",
        "--json",
    ]);
    assert!(
        !run.status.success(),
        "mismatches must fail the run: {}",
        run.stdout
    );
    let r: Value = serde_json::from_str(run.stdout.trim()).expect("one JSON object on stdout");
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["mismatches"], 100, "{r}");
    assert_eq!(r["errors"]["reply_mismatch"], 100, "{r}");
    assert_eq!(r["messages"], 0, "{r}");
    let example = r["error_examples"]["reply_mismatch"]
        .as_str()
        .unwrap_or_default();
    assert!(example.contains("expected \"Hi, "), "{r}");
}

#[test]
fn closed_port_names_the_cause_and_the_fix() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        listener.local_addr().expect("local addr").to_string()
    };
    let run = bench(&[
        "--connect",
        &addr,
        "-n",
        "4",
        "--messages",
        "10",
        "--timeout",
        "2",
    ]);
    assert!(!run.status.success(), "stdout {:?}", run.stdout);
    assert!(
        run.stderr
            .contains(&format!("is tcp-hello serve running on {addr}?")),
        "{}",
        run.stderr
    );
}
