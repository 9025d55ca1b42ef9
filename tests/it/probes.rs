//! `/healthz` and `/readyz` on the `--metrics` listener: alive while the process
//! answers; ready only once the listeners are open, and (with `--unready-at-max`) not at
//! the connection limit. Draining's readiness is in `drain`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;

use crate::common::*;

/// Lines from `pipe`, read on a thread of their own.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line from `lines` that contains `what`.
fn line_with(lines: &mpsc::Receiver<String>, what: &str) -> String {
    loop {
        let line = lines
            .recv_timeout(IO_TIMEOUT)
            .unwrap_or_else(|_| panic!("no line with {what:?}"));
        if line.contains(what) {
            return line;
        }
    }
}

/// The server reads its `--allow-file` before it binds its listeners; a FIFO in the
/// file's place holds it there, started but not listening, for as long as the test
/// likes. The metrics listener opens first: the probes answer meanwhile.
#[test]
fn readyz_is_503_until_the_listeners_are_open_and_healthz_200_throughout() {
    let dir = temp_dir("probes");
    let fifo = dir.path().join("allow");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let fifo_arg = fifo.display().to_string();
    let child = hello_cmd(
        "serve",
        &[
            "--bind",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--allow-file",
            &fifo_arg,
        ],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start tcp-hello serve");
    let mut child = KillOnDrop(child);
    let stdout = lines_of(child.0.stdout.take().expect("stdout"));
    let stderr = lines_of(child.0.stderr.take().expect("stderr"));
    // Logged as soon as it is bound, long before the announcement on stdout.
    let logged = line_with(&stderr, "metrics on http://");
    let metrics: SocketAddr = logged
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in {logged:?}"));

    assert_eq!(probe(metrics, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(
        probe(metrics, "/readyz"),
        (503, "not ready: starting\n".to_string())
    );
    assert_eq!(probe(metrics, "/metrics").0, 503);
    assert!(
        stdout.try_recv().is_err(),
        "announced before reading its rules"
    );

    // The rules arrive: the server goes on to listen.
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .expect("open the FIFO");
    writer.write_all(b"127.0.0.0/8\n").expect("write the rule");
    drop(writer);
    let announced = line_with(&stdout, "listening on ");
    let addr: SocketAddr = announced["listening on ".len()..].parse().unwrap();
    // Ready from the announcement on: whoever reads it may probe at once.
    assert_eq!(probe(metrics, "/readyz"), (200, "ok\n".to_string()));
    assert_eq!(probe(metrics, "/healthz"), (200, "ok\n".to_string()));
    let mut conn = Conn::open(addr);
    assert_eq!(conn.text_line(), "Welcome!");
    assert!(metrics_samples(metrics).contains_key("tcp_hello_connections_total"));
    drop(conn);
    assert!(send_signal(child.0.id(), "TERM"));
    let status = wait_for_exit(&mut child.0, IO_TIMEOUT).expect("the server exits");
    assert_eq!(status.code(), Some(0));
}

/// With `--unready-at-max`, `/readyz` is 503 while the server holds `--max-connections`
/// and 200 again once one has closed; without it, readiness ignores the limit.
#[test]
fn unready_at_max_turns_readyz_503_at_the_limit_and_back_below_it() {
    let server = Server::start(&[
        "--metrics",
        "127.0.0.1:0",
        "--max-connections",
        "2",
        "--unready-at-max",
    ]);
    let metrics = metrics_addr(&server);
    assert_eq!(probe(metrics, "/readyz").0, 200);
    let mut first = server.connect();
    assert_eq!(first.text_line(), "Welcome!");
    assert_eq!(probe(metrics, "/readyz").0, 200, "one of two");
    let mut second = server.connect();
    assert_eq!(second.text_line(), "Welcome!");
    assert_eq!(
        probe(metrics, "/readyz"),
        (
            503,
            "not ready: at --max-connections (2 connections)\n".to_string()
        )
    );
    assert_eq!(probe(metrics, "/healthz").0, 200);
    first.send("exit\n");
    assert_eq!(first.rest(), b"Bye!\r\n");
    drop(first);
    assert!(
        eventually(IO_TIMEOUT, || probe(metrics, "/readyz").0 == 200),
        "ready again below the limit"
    );
    drop(second);

    let plain = Server::start(&["--metrics", "127.0.0.1:0", "--max-connections", "1"]);
    let metrics = metrics_addr(&plain);
    let mut only = plain.connect();
    assert_eq!(only.text_line(), "Welcome!");
    assert_eq!(probe(metrics, "/readyz").0, 200, "without --unready-at-max");
}

#[test]
fn unready_at_max_without_metrics_is_refused_at_start_up() {
    let done = run_tool(
        &mut hello_cmd("serve", &["--unready-at-max"]),
        None,
        IO_TIMEOUT,
    );
    assert_eq!(done.code, Some(2), "{}", done.stderr);
    assert!(done.stderr.contains("--metrics"), "{}", done.stderr);
}

/// Probes are no news: answering them logs nothing at the default level.
#[test]
fn probes_leave_nothing_in_the_log() {
    let server = Server::start(&["--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    for _ in 0..5 {
        assert_eq!(probe(metrics, "/healthz").0, 200);
        assert_eq!(probe(metrics, "/readyz").0, 200);
    }
    assert_eq!(probe(metrics, "/nothing").0, 404);
    let logs = server.stop_and_logs();
    let (before_stop, _) = logs.split_once("signal").expect("the stop is logged");
    for line in before_stop
        .lines()
        .filter(|l| !l.contains("metrics on http://"))
    {
        assert!(
            !["healthz", "readyz", "GET", "metrics:", "/nothing"]
                .iter()
                .any(|word| line.contains(word)),
            "a probe was logged: {line}"
        );
    }
}
