//! `--trace`: the server's and the client's hex dumps of every connection, read back
//! byte for byte by a parser of the format, which also fails on any line that is
//! neither a block's header, one of its rows, nor a connection's stop line.
use crate::common::tls::{make_certs, tls_server};
use crate::common::*;

use std::path::Path;
use std::process::Stdio;
use std::thread;
use std::time::Duration;

/// No run of the client may take longer than this.
const DEADLINE: Duration = Duration::from_secs(30);

/// One read or write, as the trace showed it.
#[derive(Debug)]
struct Block {
    conn: u64,
    /// `<` received, `>` sent.
    dir: char,
    len: usize,
    tls: bool,
    bytes: Vec<u8>,
}

/// A trace read back: its blocks in order, and its stop lines.
#[derive(Debug, Default)]
struct Trace {
    blocks: Vec<Block>,
    stops: Vec<String>,
}

impl Trace {
    /// Everything shown of connection `conn` in direction `dir`, joined.
    fn bytes(&self, conn: u64, dir: char) -> Vec<u8> {
        self.blocks
            .iter()
            .filter(|b| b.conn == conn && b.dir == dir)
            .flat_map(|b| b.bytes.clone())
            .collect()
    }
}

/// The text column's view of `bytes`.
fn shown(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b == b' ' || b.is_ascii_graphic() {
                char::from(b)
            } else {
                '.'
            }
        })
        .collect()
}

/// Parses a trace, skipping lines `other` accepts (the server's log lines, when the
/// trace shares stderr with them); panics on anything malformed, such as the rows of
/// two blocks interleaved.
fn parse(text: &str, other: impl Fn(&str) -> bool) -> Trace {
    let mut trace = Trace::default();
    // The block whose rows are due, and how many of its bytes are.
    let mut due = 0usize;
    for line in text.lines() {
        if let Some(row) = line.strip_prefix("  ") {
            let block = trace.blocks.last_mut().expect("a row before any header");
            assert!(due > 0, "a row no header announced: {line:?}\n{text}");
            let (offset, rest) = row.split_once("  ").expect("offset");
            let offset = usize::from_str_radix(offset, 16).expect("hex offset");
            assert_eq!(offset, block.bytes.len(), "row offset: {line:?}\n{text}");
            let (hex, column) = rest.split_once("  |").expect("text column");
            let bytes: Vec<u8> = hex
                .split_whitespace()
                .map(|h| u8::from_str_radix(h, 16).expect("hex byte"))
                .collect();
            assert!(!bytes.is_empty() && bytes.len() <= 16.min(due), "{line:?}");
            assert_eq!(column, format!("{}|", shown(&bytes)), "{line:?}");
            due -= bytes.len();
            block.bytes.extend(bytes);
            continue;
        }
        assert_eq!(due, 0, "rows missing before {line:?}\n{text}");
        if line.starts_with("conn ") && line.contains(": trace stops after ") {
            trace.stops.push(line.to_string());
            continue;
        }
        if let Some(header) = line.strip_prefix("conn ") {
            let words: Vec<&str> = header.split_whitespace().collect();
            assert!(words[1].starts_with('+'), "{line:?}");
            let len: usize = words[3].parse().expect("length");
            let first = header
                .split_once(", first ")
                .map(|(_, n)| n.split(' ').next().expect("n").parse().expect("shown"));
            due = first.unwrap_or(len);
            trace.blocks.push(Block {
                conn: words[0].parse().expect("conn"),
                dir: words[2].chars().next().expect("direction"),
                len,
                tls: header.ends_with(" (plaintext of TLS)"),
                bytes: Vec::new(),
            });
            continue;
        }
        assert!(other(line), "not a line of the trace: {line:?}\n{text}");
    }
    assert_eq!(due, 0, "rows missing at the end\n{text}");
    trace
}

/// The trace file, once `server` has logged `closes` close lines: the trace of a
/// connection is written before its close is logged.
fn trace_after_closes(server: &Server, closes: usize, path: &Path) -> Trace {
    assert!(
        eventually(IO_TIMEOUT, || server
            .logs_so_far()
            .matches(" closed: ")
            .count()
            >= closes),
        "{}",
        server.logs_so_far()
    );
    parse(&std::fs::read_to_string(path).expect("trace file"), |_| {
        false
    })
}

#[test]
fn a_session_is_traced_in_order_both_ways_crlf_and_telnet_bytes_included() {
    let dir = temp_dir("trace");
    let path = dir.path().join("trace.txt");
    let server = Server::start(&["--trace", &path.display().to_string()]);
    let mut c = server.connect();
    assert_eq!(c.text_line(), "Welcome!");
    // IAC DO SGA, answered with IAC WONT SGA before the reply.
    let name = b"\xff\xfd\x03Alice\r\n";
    c.send(name);
    let mut got = c.exact(3);
    got.extend(c.line());
    assert_eq!(got, b"\xff\xfc\x03Hello, Alice!\r\n");
    c.send(b"exit\r\n");
    got.extend(c.rest());
    let trace = trace_after_closes(&server, 1, &path);
    let text = std::fs::read_to_string(&path).expect("trace file");
    assert_eq!(
        trace.bytes(1, '<'),
        b"\xff\xfd\x03Alice\r\nexit\r\n",
        "{text}"
    );
    assert_eq!(
        trace.bytes(1, '>'),
        [b"Welcome!\r\n".as_slice(), &got].concat(),
        "{text}"
    );
    // In order: the welcome, the name, its answer.
    let first = |dir: char, needle: &[u8]| {
        trace
            .blocks
            .iter()
            .position(|b| b.dir == dir && b.bytes.windows(needle.len()).any(|w| w == needle))
            .unwrap_or_else(|| panic!("no {dir} block with {needle:?}\n{text}"))
    };
    assert_eq!(first('>', b"Welcome!"), 0, "{text}");
    assert!(
        first('<', b"Alice") < first('>', b"Hello, Alice!"),
        "{text}"
    );
    assert!(
        text.contains("  0000  ff fd 03 41 6c 69 63 65 0d 0a  |...Alice..|\n"),
        "{text}"
    );
    assert!(trace.blocks.iter().all(|b| !b.tls && b.conn == 1), "{text}");
    assert!(trace.stops.is_empty(), "{text}");
}

#[test]
fn over_tls_the_plaintext_is_traced_and_marked_by_server_and_client() {
    let certs = make_certs();
    let dir = temp_dir("trace");
    let path = dir.path().join("trace.txt");
    let server = tls_server(&certs, &["--trace", &path.display().to_string()]);
    let (addr, ca) = (server.addr().to_string(), certs.ca.display().to_string());
    let args = [
        "--tls", "--tls-ca", &ca, "-c", &addr, "--trace", "-", "Alice",
    ];
    let done = run_tool(
        hello_cmd("client", &args).stdin(Stdio::null()),
        None,
        DEADLINE,
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_eq!(done.stdout, "Welcome!\nHello, Alice!\nBye!\n");
    let client = parse(&done.stderr, |_| false);
    assert_eq!(client.bytes(1, '>'), b"Alice\nexit\n", "{}", done.stderr);
    assert_eq!(
        client.bytes(1, '<'),
        b"Welcome!\r\nHello, Alice!\r\nBye!\r\n",
        "{}",
        done.stderr
    );
    assert!(client.blocks.iter().all(|b| b.tls), "{}", done.stderr);
    let trace = trace_after_closes(&server, 1, &path);
    let text = std::fs::read_to_string(&path).expect("trace file");
    // The welcome left within the handshake, yet is traced first.
    assert_eq!(trace.blocks[0].bytes, b"Welcome!\r\n", "{text}");
    assert_eq!(trace.bytes(1, '<'), b"Alice\nexit\n", "{text}");
    assert_eq!(
        trace.bytes(1, '>'),
        b"Welcome!\r\nHello, Alice!\r\nBye!\r\n",
        "{text}"
    );
    assert!(trace.blocks.iter().all(|b| b.tls), "{text}");
}

#[test]
fn a_connection_s_trace_stops_at_trace_bytes_with_one_line() {
    let dir = temp_dir("trace");
    let path = dir.path().join("trace.txt");
    let trace_arg = path.display().to_string();
    let server = Server::start(&["--trace", &trace_arg, "--trace-bytes", "64"]);
    let mut c = server.connect();
    assert_eq!(c.text_line(), "Welcome!");
    let name = "n".repeat(100);
    c.send(format!("{name}\r\n"));
    assert_eq!(c.text_line(), format!("Hello, {name}!"));
    c.send(b"later\r\nexit\r\n");
    c.rest();
    let trace = trace_after_closes(&server, 1, &path);
    let text = std::fs::read_to_string(&path).expect("trace file");
    assert_eq!(
        trace.stops,
        ["conn 1: trace stops after 64 bytes"],
        "{text}"
    );
    assert!(
        text.ends_with("conn 1: trace stops after 64 bytes\n"),
        "{text}"
    );
    let shown: usize = trace.blocks.iter().map(|b| b.bytes.len()).sum();
    assert_eq!(shown, 64, "{text}");
    // The block the limit cut (the name's) says how long it was.
    let last = trace.blocks.last().expect("a block");
    assert_eq!(last.dir, '<', "{text}");
    assert!(last.bytes.len() < last.len, "{text}");
    assert!(!text.contains("later") && !text.contains("Hello"), "{text}");
}

#[test]
fn concurrent_connections_blocks_never_interleave() {
    let dir = temp_dir("trace");
    let path = dir.path().join("trace.txt");
    let trace_arg = path.display().to_string();
    let server = Server::start(&["--trace", &trace_arg, "--trace-bytes", "10000000"]);
    const LINES: usize = 300;
    let clients: Vec<_> = ["alpha", "bravo"]
        .into_iter()
        .map(|who| {
            let addr = server.addr();
            thread::spawn(move || {
                let mut c = Conn::open(addr);
                assert_eq!(c.text_line(), "Welcome!");
                let mut sent = Vec::new();
                for i in 0..LINES {
                    // Long enough that a block spans several rows.
                    let line = format!("{who}-{i}-{}\r\n", "x".repeat(40));
                    c.send(&line);
                    sent.extend_from_slice(line.as_bytes());
                    assert!(c.text_line().starts_with("Hello, "));
                }
                c.send(b"exit\r\n");
                c.rest();
                sent.extend_from_slice(b"exit\r\n");
                sent
            })
        })
        .collect();
    let sent: Vec<Vec<u8>> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    // `parse` fails on a row out of its block.
    let trace = trace_after_closes(&server, 2, &path);
    let mut received: Vec<Vec<u8>> = [1, 2].map(|conn| trace.bytes(conn, '<')).into();
    received.sort();
    let mut expected = sent;
    expected.sort();
    assert_eq!(received, expected);
    assert!(trace.blocks.len() >= 4 * LINES);
}

#[test]
fn the_client_s_trace_dash_goes_to_stderr_and_shows_what_it_sent() {
    let server = Server::start(&[]);
    let addr = server.addr().to_string();
    let done = run_tool(
        hello_cmd("client", &["-c", &addr, "--trace", "-"]).stdin(Stdio::piped()),
        Some(b"Bob\xff\nexit\n"),
        DEADLINE,
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_eq!(done.stdout, "Welcome!\nHello, Bob\u{FFFD}!\nBye!\n");
    let trace = parse(&done.stderr, |_| false);
    // A 0xFF in a name goes out as telnet's IAC IAC.
    assert_eq!(
        trace.bytes(1, '>'),
        b"Bob\xff\xff\nexit\n",
        "{}",
        done.stderr
    );
    assert_eq!(
        trace.bytes(1, '<'),
        // The reply repeats the name as it came, IAC IAC.
        b"Welcome!\r\nHello, Bob\xff\xff!\r\nBye!\r\n",
        "{}",
        done.stderr
    );
    assert!(done.stderr.starts_with("conn 1 +"), "{}", done.stderr);
    // What it sent shows before the answer to it.
    let sent = trace.blocks.iter().position(|b| b.dir == '>');
    let answer = (trace.blocks.iter()).position(|b| b.bytes.starts_with(b"Hello"));
    assert!(sent < answer, "{}", done.stderr);
}

#[test]
fn the_server_s_trace_dash_goes_to_stderr_among_the_logs() {
    let server = Server::start(&["--trace", "-"]);
    let mut c = server.connect();
    assert_eq!(c.text_line(), "Welcome!");
    c.send(b"Carol\r\nexit\r\n");
    c.rest();
    let logs = server.stop_and_logs();
    let is_log = |line: &str| line.starts_with('[');
    let trace = parse(&logs, is_log);
    assert_eq!(trace.bytes(1, '<'), b"Carol\r\nexit\r\n", "{logs}");
}

#[test]
fn a_trace_file_that_cannot_be_opened_fails_at_start_naming_it() {
    let dir = temp_dir("trace");
    let path = dir.path().join("no-such-dir").join("trace.txt");
    let path = path.display().to_string();
    for (sub, args) in [
        ("serve", vec!["--bind", "127.0.0.1:0", "--trace", &path]),
        ("client", vec!["--trace", &path, "Alice"]),
    ] {
        let done = run_tool(hello_cmd(sub, &args).stdin(Stdio::null()), None, DEADLINE);
        assert_eq!(done.code, Some(2), "{sub}: {}", done.stderr);
        assert!(
            done.stderr
                .contains(&format!("cannot open --trace {path}: ")),
            "{sub}: {}",
            done.stderr
        );
        assert!(done.stdout.is_empty(), "{sub}: {}", done.stdout);
    }
}

#[test]
fn trace_bytes_needs_trace_and_udp_clients_are_not_traced() {
    for args in [
        vec!["serve", "--trace-bytes", "10"],
        vec!["client", "--trace-bytes", "10", "A"],
        vec!["client", "--udp", "--trace", "-", "A"],
        vec!["serve", "--trace", "-", "--trace-bytes", "0"],
    ] {
        let done = run_tool(
            hello_cmd(args[0], &args[1..]).stdin(Stdio::null()),
            None,
            DEADLINE,
        );
        assert_eq!(done.code, Some(2), "{args:?}: {}", done.stderr);
    }
}
