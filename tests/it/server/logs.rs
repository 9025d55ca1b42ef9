//! Logs.

use super::*;

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
        ["1 reply", "11 bytes in", "31 bytes out", "client said exit"],
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
