//! `--max-lifetime`: a connection that old is told `server closing this connection,
//! reconnect` at a line boundary and closed gracefully, idle or busy. (Over TLS: in
//! `tls`.)

use std::time::{Duration, Instant};

use crate::common::*;

const NOTICE: &str = "server closing this connection, reconnect";

#[test]
fn an_idle_connection_is_told_to_reconnect_and_closed_at_its_lifetime() {
    let server = Server::start(&["--max-lifetime", "1", "--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    let opened = Instant::now();
    let mut conn = server.connect();
    assert_eq!(conn.text_line(), "Welcome!");
    // A name first, so that the close line is logged at info; then nothing: the read
    // timeout ends it, not a next line.
    conn.send("Ann\n");
    assert_eq!(conn.text_line(), "Hello, Ann!");
    assert_eq!(conn.text_line(), NOTICE);
    let after = opened.elapsed();
    assert!(conn.rest().is_empty(), "closed after the notice");
    // Drawn between 0.9 and 1 s; the rest is this machine's load.
    assert!(
        after >= Duration::from_millis(850) && after < Duration::from_secs(3),
        "closed after {after:?}"
    );
    drop(conn);
    assert!(
        eventually(IO_TIMEOUT, || {
            metrics_samples(metrics)
                .get("tcp_hello_closes_total{reason=\"max_lifetime\"}")
                .copied()
                == Some(1)
        }),
        "not counted as a max_lifetime close"
    );
    let logs = server.stop_and_logs();
    assert!(logs.contains("max lifetime reached"), "{logs}");
}

#[test]
fn a_busy_connection_gets_its_replies_then_the_notice_at_a_line_boundary() {
    let server = Server::start(&["--max-lifetime", "1"]);
    let opened = Instant::now();
    let mut conn = server.connect();
    assert_eq!(conn.text_line(), "Welcome!");
    let mut replies = 0;
    let notice_after = loop {
        conn.send(format!("n{replies}\n"));
        // The next line begun: whenever the notice comes, a partial line is pending.
        conn.send("x");
        let line = conn.text_line();
        if line == NOTICE {
            break opened.elapsed();
        }
        let prefix = if replies == 0 { "" } else { "x" };
        assert_eq!(line, format!("Hello, {prefix}n{replies}!"), "in order");
        replies += 1;
        assert!(opened.elapsed() < IO_TIMEOUT, "no notice");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(conn.rest().is_empty(), "nothing after the notice");
    assert!(replies >= 10, "only {replies} replies before the notice");
    assert!(
        notice_after >= Duration::from_millis(850) && notice_after < Duration::from_secs(3),
        "the notice after {notice_after:?}"
    );
}

#[test]
fn without_max_lifetime_a_connection_lives_on() {
    let server = Server::start(&["--idle-timeout", "0"]);
    let mut conn = server.connect();
    assert_eq!(conn.text_line(), "Welcome!");
    std::thread::sleep(Duration::from_millis(1500));
    conn.send("Ann\n");
    assert_eq!(conn.text_line(), "Hello, Ann!");
}

#[test]
fn bad_max_lifetimes_are_refused_at_start_up_naming_the_flag() {
    for (value, says) in [("-1", "negative"), ("1.5", "whole number")] {
        let done = run_tool(
            &mut hello_cmd("serve", &["--max-lifetime", value]),
            None,
            IO_TIMEOUT,
        );
        assert_eq!(done.code, Some(2), "{value}: {}", done.stderr);
        assert!(
            done.stderr.contains("--max-lifetime") && done.stderr.contains(says),
            "{value}: {}",
            done.stderr
        );
    }
}
