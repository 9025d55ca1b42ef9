//! Integration tests of `serve --log-format json`: whole sessions against the real binary
//! (plain, TLS, PROXY protocol, refusals, shutdown), every stderr line read back as JSON,
//! the connections' fields checked against what the test itself sent and received. And
//! the text format, unchanged without the flag.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tcp_hello::protocol::LogText;

use crate::common::tls::{HOSTILE_NAME, make_certs};
use crate::common::*;

const SECOND: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A name that would close the JSON string, add fields and end the line, if written
/// raw; and controls, which JSON must escape.
const HOSTILE: &str = "Eve\", \"id\":99, \"level\":\"ERROR\"} {\"x\":\"\\n\\\"\x1b[2J\x7f";

/// Every line of `logs` as a JSON object with the four fields every line has: fails
/// naming the first line that is not one.
fn json_lines(logs: &str) -> Vec<Value> {
    assert!(!logs.is_empty(), "nothing logged");
    assert!(logs.ends_with('\n'), "the last line is cut: {logs:?}");
    logs.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a line of JSON ({e}): {line:?}\n{logs}"));
            let time = v["time"]
                .as_str()
                .unwrap_or_else(|| panic!("no time: {line}"));
            // RFC 3339 in UTC, to the millisecond: 2026-01-01T00:00:00.000Z.
            assert!(
                time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
                "{line}"
            );
            for field in ["level", "target", "message"] {
                assert!(v[field].is_string(), "no {field}: {line}");
            }
            v
        })
        .collect()
}

/// The one line whose message starts with `start`.
fn the_line<'a>(lines: &'a [Value], start: &str) -> &'a Value {
    let found: Vec<&Value> = lines
        .iter()
        .filter(|v| v["message"].as_str().unwrap().starts_with(start))
        .collect();
    assert_eq!(found.len(), 1, "one line starting {start:?} in {lines:#?}");
    found[0]
}

/// The close line of the connection whose client is `peer`.
fn close_line<'a>(lines: &'a [Value], peer: &str) -> &'a Value {
    let found: Vec<&Value> = lines
        .iter()
        .filter(|v| v["message"].as_str().unwrap().contains(" closed: ") && v["peer"] == peer)
        .collect();
    assert_eq!(found.len(), 1, "one close line of {peer} in {lines:#?}");
    found[0]
}

/// Checks a close line's fields: what the test knows of the connection, and that its
/// message is the text format's close line with the same values.
#[allow(clippy::too_many_arguments)]
fn assert_close(
    line: &Value,
    local: SocketAddr,
    bytes_in: usize,
    bytes_out: usize,
    replies: u64,
    reason: &str,
    level: &str,
) {
    let id = line["id"].as_u64().unwrap_or_else(|| panic!("id: {line}"));
    assert_eq!(line["level"], level, "{line}");
    assert_eq!(line["target"], "tcp_hello::server::setup", "{line}");
    assert_eq!(line["local"], local.to_string(), "{line}");
    assert_eq!(line["bytes_in"], bytes_in as u64, "{line}");
    assert_eq!(line["bytes_out"], bytes_out as u64, "{line}");
    assert_eq!(line["replies"], replies, "{line}");
    assert_eq!(line["reason"], reason, "{line}");
    let duration = line["duration"]
        .as_f64()
        .unwrap_or_else(|| panic!("duration, a number: {line}"));
    assert!((0.0..60.0).contains(&duration), "{line}");
    let message = line["message"].as_str().unwrap();
    let text = format!(
        "conn {id} closed: {}{}, {duration:.3} s, {replies} {}, {bytes_in} bytes in, \
         {bytes_out} bytes out, {reason}",
        line["peer"].as_str().unwrap(),
        line["via"]
            .as_str()
            .map_or(String::new(), |via| format!(" (via {via})")),
        if replies == 1 { "reply" } else { "replies" },
    );
    assert!(message.starts_with(&text), "{message:?} is not {text:?}...");
}

/// The keys of a line, sorted.
fn keys(line: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = line
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

#[test]
fn a_whole_session_logs_one_json_object_a_line_with_the_connections_fields() {
    let certs = make_certs();
    let p = |path: &std::path::Path| path.display().to_string();
    let server = Server::start_with_binds(
        &[
            "--log-format",
            "json",
            "-vv",
            "--bind",
            "127.0.0.1:0",
            "--tls-bind",
            "127.0.0.1:0",
            "--tls-cert",
            &p(&certs.server.cert),
            "--tls-key",
            &p(&certs.server.key),
            "--tls-client-ca",
            &p(&certs.ca),
            "--deny",
            &SECOND.to_string(),
        ],
        2,
    );
    let (plain, tls) = (server.addrs[0], server.addrs[1]);
    assert_eq!(server.announced[1], format!("listening on tls {tls}"));

    // A plain connection: names, one of them hostile, and exit.
    let mut conn = server.connect();
    let peer = conn.stream.local_addr().unwrap().to_string();
    let sent = format!("Ann\n{HOSTILE}\nexit\n");
    conn.send(&sent);
    let mut received = Vec::new();
    for expected in [
        "Welcome!".to_string(),
        "Hello, Ann!".to_string(),
        format!("Hello, {HOSTILE}!"),
        "Bye!".to_string(),
    ] {
        let line = conn.line();
        assert_eq!(String::from_utf8_lossy(&line), format!("{expected}\r\n"));
        received.extend_from_slice(&line);
    }
    received.extend_from_slice(&conn.rest());
    drop(conn);

    // A TLS client whose certificate's name is hostile too.
    let client = run_tool(
        hello_cmd(
            "client",
            &[
                "--tls",
                "--connect",
                &tls.to_string(),
                "--tls-ca",
                &p(&certs.ca),
                "--tls-cert",
                &p(&certs.hostile_cn_client.cert),
                "--tls-key",
                &p(&certs.hostile_cn_client.key),
                "Bob",
            ],
        )
        .stdin(Stdio::null()),
        None,
        Duration::from_secs(20),
    );
    assert_eq!(client.code, Some(0), "{client:?}");
    assert!(client.stdout.contains("Hello, Bob!"), "{client:?}");

    // Plain text on the TLS port: no TLS session.
    let mut not_tls = Conn::open(tls);
    let not_tls_peer = not_tls.stream.local_addr().unwrap().to_string();
    not_tls.send("Carol\n");
    let told = not_tls.rest();
    assert!(String::from_utf8_lossy(&told).starts_with("ERROR this port speaks TLS"));

    // A client the address rules refuse.
    let mut refused = connect_from(SECOND, plain);
    let refused_peer = refused.local_addr().unwrap().to_string();
    assert_closed_without_a_byte(&mut refused, "a denied client");

    let (code, logs) = {
        server.signal("TERM");
        server.wait(IO_TIMEOUT)
    };
    assert_eq!(code, Some(0), "{logs}");
    let lines = json_lines(&logs);

    // The plain connection's lines: its open, its names, its close.
    let close = close_line(&lines, &peer);
    assert_close(
        close,
        plain,
        sent.len(),
        received.len(),
        2,
        "client said exit",
        "INFO",
    );
    assert_eq!(
        keys(close),
        [
            "bytes_in",
            "bytes_out",
            "duration",
            "id",
            "level",
            "local",
            "message",
            "peer",
            "reason",
            "replies",
            "target",
            "time"
        ],
        "{close}"
    );
    let id = close["id"].as_u64().unwrap();
    let open = the_line(&lines, &format!("conn {id} open: "));
    assert_eq!(open["id"], id);
    assert_eq!(open["peer"], peer);
    assert_eq!(open["level"], "DEBUG");
    // The hostile name: in its message, as the text format shows it, and no field more.
    let name = the_line(&lines, &format!("conn {id}: name Eve"));
    assert_eq!(
        name["message"],
        format!("conn {id}: name {}", LogText(HOSTILE.as_bytes()))
    );
    assert_eq!(keys(name), ["level", "message", "target", "time"], "{name}");
    assert_eq!(name["level"], "TRACE");

    // The TLS connection: its open line after the handshake, its close line with the
    // client certificate's name, escaped as in the text format.
    let hostile_cn = LogText(HOSTILE_NAME.as_bytes()).to_string();
    let tls_close: Vec<&Value> = lines
        .iter()
        .filter(|v| {
            v["client"] == hostile_cn.as_str()
                && v["message"].as_str().unwrap().contains(" closed: ")
        })
        .collect();
    assert_eq!(tls_close.len(), 1, "{logs}");
    let tls_close = tls_close[0];
    assert_eq!(tls_close["local"], tls.to_string(), "{tls_close}");
    assert_eq!(tls_close["replies"], 1, "{tls_close}");
    assert!(tls_close["bytes_in"].as_u64().unwrap() >= 4, "{tls_close}");
    let tls_id = tls_close["id"].as_u64().unwrap();
    let tls_open = the_line(&lines, &format!("conn {tls_id} open: "));
    assert_eq!(tls_open["peer"], tls_close["peer"]);
    assert_eq!(tls_open["client"], hostile_cn.as_str());
    assert!(
        tls_open["tls_version"]
            .as_str()
            .unwrap()
            .starts_with("TLSv1_"),
        "{tls_open}"
    );
    assert_eq!(tls_open["resumed"], false);

    // The failed handshake: why, as a field of its own.
    let failed = close_line(&lines, &not_tls_peer);
    assert_close(failed, tls, 0, 0, 0, "no TLS session", "DEBUG");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("plain text on a TLS port"), "{failed}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .ends_with(&format!(": {error}"))
    );

    // The refusal.
    let refusal = the_line(&lines, &format!("refused {refused_peer}: "));
    assert_eq!(refusal["peer"], refused_peer);
    assert_eq!(refusal["level"], "INFO");
    assert!(
        refusal["reason"]
            .as_str()
            .unwrap()
            .starts_with("address not allowed"),
        "{refusal}"
    );

    // The start and the end.
    for (addr, is_tls) in [(plain, false), (tls, true)] {
        let shown = if is_tls { "tls " } else { "" };
        let listening = the_line(&lines, &format!("listening on {shown}{addr} "));
        assert_eq!(listening["local"], addr.to_string());
        assert_eq!(listening["tls"], is_tls);
        assert_eq!(listening["max_connections"], 10000);
    }
    let stopping = the_line(&lines, "shutting down: ");
    assert!(stopping["connections"].is_u64(), "{stopping}");
    assert_eq!(the_line(&lines, "stopped (")["cut_off"], 0);
}

/// Behind a proxy: the client its header names is the peer, the proxy the `via`; a
/// connection over `--max-connections` is refused with its reason.
#[test]
fn a_proxied_connection_and_a_busy_refusal_are_json_lines_with_their_fields() {
    let server = Server::start(&[
        "--log-format",
        "json",
        "-v",
        "--proxy-protocol",
        "--proxy-from",
        "127.0.0.1",
        "--max-connections",
        "1",
    ]);
    let header = "PROXY TCP4 192.0.2.7 10.0.0.1 5555 9999\r\n";
    let mut conn = server.connect();
    let via = conn.stream.local_addr().unwrap().to_string();
    conn.send(format!("{header}Alice\n"));
    let mut received = conn.line();
    assert_eq!(received, b"Welcome!\r\n");
    let reply = conn.line();
    assert_eq!(reply, b"Hello, Alice!\r\n");
    received.extend_from_slice(&reply);

    // The one place is taken: the next connection is told so, and closed.
    let mut busy = server.connect();
    let busy_peer = busy.stream.local_addr().unwrap().to_string();
    let told = busy.rest();
    assert!(
        String::from_utf8_lossy(&told).starts_with("ERROR server busy"),
        "{told:?}"
    );

    conn.send("exit\n");
    received.extend_from_slice(&conn.line());
    received.extend_from_slice(&conn.rest());
    drop(conn);
    let logs = server.stop_and_logs();
    let lines = json_lines(&logs);

    let close = close_line(&lines, "192.0.2.7:5555");
    assert_eq!(close["via"], via, "{close}");
    assert_close(
        close,
        server_addr(&lines),
        "Alice\nexit\n".len(),
        received.len(),
        1,
        "client said exit",
        "INFO",
    );
    let id = close["id"].as_u64().unwrap();
    let open = the_line(&lines, &format!("conn {id} open: "));
    assert_eq!(open["target"], "tcp_hello::server::proxied");
    assert_eq!(open["peer"], "192.0.2.7:5555");
    assert_eq!(open["via"], via);

    let refusal = the_line(&lines, &format!("refused {busy_peer}: "));
    assert_eq!(refusal["level"], "WARN");
    assert_eq!(refusal["peer"], busy_peer);
    assert_eq!(refusal["reason"], "connection limit reached");
}

/// The address the server listens on, from its listening line.
fn server_addr(lines: &[Value]) -> SocketAddr {
    the_line(lines, "listening on ")["local"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Without the flag, the lines are env_logger's, and nothing of the fields is appended.
#[test]
fn the_text_format_is_unchanged_and_carries_no_fields() {
    let server = Server::start(&["--deny", &SECOND.to_string()]);
    let mut conn = server.connect();
    let peer = conn.stream.local_addr().unwrap();
    conn.send("Ann\nexit\n");
    let out = conn.rest();
    drop(conn);
    let mut refused = connect_from(SECOND, server.addr());
    let refused_peer = refused.local_addr().unwrap();
    assert_closed_without_a_byte(&mut refused, "a denied client");
    let logs = server.stop_and_logs();
    let close = logs
        .lines()
        .find(|l| l.contains(" closed: "))
        .unwrap_or_else(|| panic!("no close line in {logs}"));
    let (head, message) = close.split_once("] ").unwrap();
    assert!(head.starts_with('[') && head.ends_with(" INFO  tcp_hello::server::setup"));
    let (start, rest) = message.split_once(", ").unwrap();
    assert_eq!(start, format!("conn 1 closed: {peer}"));
    let (_seconds, rest) = rest.split_once(" s, ").unwrap();
    assert_eq!(
        rest,
        format!(
            "1 reply, 9 bytes in, {} bytes out, client said exit",
            out.len()
        )
    );
    let refusal = logs
        .lines()
        .find(|l| l.contains(" refused "))
        .unwrap_or_else(|| panic!("no refusal in {logs}"));
    assert!(
        refusal.ends_with(&format!(
            "INFO  tcp_hello::server::accept] refused {refused_peer}: address not allowed (--deny {SECOND})"
        )),
        "{refusal}"
    );
}

#[test]
fn an_unknown_log_format_is_refused_with_the_ones_there_are() {
    for (args, variable) in [(&["--log-format", "xml"][..], None), (&[][..], Some("xml"))] {
        let mut cmd = hello_cmd("serve", args);
        if let Some(value) = variable {
            cmd.env("TCP_HELLO_LOG_FORMAT", value);
        }
        let out = run_tool(&mut cmd, None, Duration::from_secs(20));
        assert_eq!(out.code, Some(2), "{out:?}");
        assert!(
            out.stderr.contains("[possible values: text, json]"),
            "{out:?}"
        );
        let named = if variable.is_some() {
            "TCP_HELLO_LOG_FORMAT"
        } else {
            "--log-format"
        };
        assert!(out.stderr.contains(named), "{out:?}");
    }
}

/// The error that keeps the server from starting is a JSON line too.
#[test]
fn a_start_up_error_is_a_json_line() {
    let dir = temp_dir("json-log");
    let missing = dir.path().join("no-such-rules");
    let out = run_tool(
        hello_cmd(
            "serve",
            &[
                "--log-format",
                "json",
                "--bind",
                "127.0.0.1:0",
                "--allow-file",
                &missing.display().to_string(),
            ],
        )
        .stdin(Stdio::null()),
        None,
        Duration::from_secs(20),
    );
    assert_eq!(out.code, Some(2), "{out:?}");
    let lines = json_lines(&out.stderr);
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR", "{out:?}");
    assert!(
        last["message"].as_str().unwrap().contains("no-such-rules"),
        "{out:?}"
    );
}
