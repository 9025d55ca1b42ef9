//! Integration tests of `serve --allow`, `--deny` and their files, and of SIGHUP reloading
//! the files, over real sockets.
//!
//! Linux routes all of 127.0.0.0/8 to the loopback interface, so a client bound to
//! 127.0.0.2 before it connects is a second address on the same machine. Every socket
//! has timeouts; nothing sleeps to wait for the server: the tests read what they expect.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crate::common::*;

/// Checks that a connection was refused without a byte.
fn refused_without_a_byte(mut stream: TcpStream) {
    let from = stream.local_addr().map_or(String::new(), |a| a.to_string());
    assert_closed_without_a_byte(&mut stream, &from);
}

const SECOND: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const THIRD: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// Long enough for a start-up on a loaded machine; a hang fails rather than blocks.
const START_LIMIT: Duration = Duration::from_secs(30);

/// Checks that `stream` is served: the welcome, then a greeting.
fn assert_served(stream: TcpStream) {
    let peer = stream.local_addr().unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("read the welcome");
    assert_eq!(line, "Welcome!\r\n", "{peer} should have been served");
    std::io::Write::write_all(&mut writer, b"Ann\n").expect("send a name");
    line.clear();
    reader.read_line(&mut line).expect("read the reply");
    assert_eq!(line, "Hello, Ann!\r\n", "{peer}");
}

/// The log lines that say a connection was refused.
fn refusals(logs: &str) -> Vec<&str> {
    logs.lines().filter(|l| l.contains("refused ")).collect()
}

/// The level of an env_logger line such as `[2026-01-01T00:00:00.000Z INFO  tcp_hello] ...`.
fn level(line: &str) -> &str {
    line.split_whitespace().nth(1).unwrap_or("")
}

/// A file of the test's own, in a directory removed when the test ends.
struct TempFile {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let dir = temp_dir("rules");
        let path = dir.path().join(name);
        std::fs::write(&path, contents).expect("write a rule file");
        TempFile { path, _dir: dir }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("a UTF-8 temporary path")
    }

    /// Replaces what the file says (before a SIGHUP: the server reads it only then).
    fn write(&self, contents: &str) {
        std::fs::write(&self.path, contents).expect("rewrite a rule file");
    }
}

/// Runs `serve` with `args` (and a clean environment plus `env`), expecting it to fail
/// at start-up: exit 2, nothing announced, one line on stderr, which is returned.
fn fails_to_start(env: &[(&str, &str)], args: &[&str]) -> String {
    let mut cmd = hello_cmd("serve", &["--bind", "127.0.0.1:0"]);
    cmd.args(args).envs(env.iter().copied());
    let done = run_tool(&mut cmd, None, START_LIMIT);
    assert_eq!(done.code, Some(2), "{done:?}");
    assert_eq!(done.stdout, "", "nothing may be announced: {done:?}");
    assert_eq!(done.stderr.trim_end().lines().count(), 1, "{done:?}");
    done.stderr
}

#[test]
fn deny_closes_that_address_without_a_byte_while_others_are_served() {
    let server = Server::start(&["--deny", "127.0.0.2"]);
    refused_without_a_byte(connect_from(SECOND, server.addr()));
    assert_served(connect_from(Ipv4Addr::LOCALHOST.into(), server.addr()));
    assert_served(connect_from(THIRD, server.addr()));
    let logs = server.stop_and_logs();
    let lines = refusals(&logs);
    assert_eq!(lines.len(), 1, "{logs}");
    assert!(
        lines[0].contains("refused 127.0.0.2:")
            && lines[0].ends_with(": address not allowed (--deny 127.0.0.2)"),
        "{logs}"
    );
    assert_eq!(level(lines[0]), "INFO", "{logs}");
    assert!(
        logs.contains(
            "address rules: 0 allow rules and 1 deny rule; an address no rule matches is let in"
        ),
        "{logs}"
    );
}

#[test]
fn an_allow_rule_alone_refuses_every_other_address() {
    let server = Server::start(&["--allow", "127.0.0.1"]);
    refused_without_a_byte(connect_from(SECOND, server.addr()));
    assert_served(connect_from(Ipv4Addr::LOCALHOST.into(), server.addr()));
    let logs = server.stop_and_logs();
    assert!(
        logs.contains(": address not allowed (no --allow rule matches)"),
        "{logs}"
    );
}

#[test]
fn the_longest_prefix_decides() {
    let server = Server::start(&["--allow", "127.0.0.0/8", "--deny", "127.0.0.2/32"]);
    refused_without_a_byte(connect_from(SECOND, server.addr()));
    assert_served(connect_from(Ipv4Addr::LOCALHOST.into(), server.addr()));
    assert_served(connect_from(THIRD, server.addr()));
    let logs = server.stop_and_logs();
    assert!(logs.contains("(--deny 127.0.0.2/32)"), "{logs}");

    // And the other way round: one address let in out of a denied network.
    let server = Server::start(&["--deny", "127.0.0.0/8", "--allow", "127.0.0.2"]);
    assert_served(connect_from(SECOND, server.addr()));
    refused_without_a_byte(connect_from(THIRD, server.addr()));
    let logs = server.stop_and_logs();
    assert!(logs.contains("(--deny 127.0.0.0/8)"), "{logs}");
}

#[test]
fn deny_wins_a_tie() {
    let server = Server::start(&["--allow", "127.0.0.2", "--deny", "127.0.0.2"]);
    refused_without_a_byte(connect_from(SECOND, server.addr()));
    let logs = server.stop_and_logs();
    assert!(
        logs.contains("address not allowed (--deny 127.0.0.2)"),
        "{logs}"
    );
}

#[test]
fn ipv6_rules_match_ipv6_clients_only() {
    if let Err(e) = TcpListener::bind("[::1]:0") {
        eprintln!("skipped: cannot bind [::1] ({e}); this machine has no IPv6 loopback");
        return;
    }
    let server = Server::start_with_binds(
        &[
            "--bind",
            "[::1]:0",
            "--bind",
            "127.0.0.1:0",
            "--deny",
            "::1",
        ],
        2,
    );
    let (v6, v4) = (server.addrs[0], server.addrs[1]);
    refused_without_a_byte(connect_from("::1".parse().unwrap(), v6));
    assert_served(connect_from(Ipv4Addr::LOCALHOST.into(), v4));
    let logs = server.stop_and_logs();
    assert!(
        logs.contains("refused [::1]:") && logs.contains("address not allowed (--deny ::1)"),
        "{logs}"
    );
}

#[test]
fn a_rule_file_with_comments_and_blank_lines_is_read() {
    let file = TempFile::new(
        "deny-good",
        "# scanners\n\n10.0.0.0/8   # a whole network\n\t127.0.0.2\r\n# end\n",
    );
    let server = Server::start(&["--deny-file", file.path()]);
    refused_without_a_byte(connect_from(SECOND, server.addr()));
    assert_served(connect_from(Ipv4Addr::LOCALHOST.into(), server.addr()));
    let logs = server.stop_and_logs();
    assert!(
        logs.contains(&format!(
            "address not allowed (--deny-file {}:4: 127.0.0.2)",
            file.path()
        )),
        "{logs}"
    );
}

#[test]
fn a_bad_line_in_a_rule_file_stops_the_start_naming_file_and_line() {
    let file = TempFile::new(
        "allow-bad",
        "# office\n127.0.0.1   # this machine\n10.0.0.300  # a typo\n\n",
    );
    let stderr = fails_to_start(&[], &["--allow-file", file.path()]);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "tcp-hello: {}:3: 10.0.0.300: not an IP address or CIDR (e.g. 10.0.0.0/8 or \
             2001:db8::/32)",
            file.path()
        )
    );
}

#[test]
fn a_missing_rule_file_stops_the_start_naming_file_and_cause() {
    let missing = std::env::temp_dir().join(format!(
        "tcp-hello-rules-{}-does-not-exist",
        std::process::id()
    ));
    let missing = missing.to_str().unwrap();
    let stderr = fails_to_start(&[], &["--deny-file", missing]);
    assert!(
        stderr.starts_with(&format!("tcp-hello: cannot read --deny-file {missing}: "))
            && stderr.contains("No such file or directory"),
        "{stderr}"
    );
}

#[test]
fn a_bad_rule_is_named_under_its_flag_or_its_variable() {
    let stderr = fails_to_start_clap(&[], &["--allow", "10.0.0.300"]);
    assert!(
        stderr.contains(
            "invalid value '10.0.0.300' for '--allow <RULE>': not an IP address or CIDR (e.g. \
             10.0.0.0/8 or 2001:db8::/32)"
        ),
        "{stderr}"
    );
    let stderr = fails_to_start_clap(&[("TCP_HELLO_DENY", "127.0.0.2,10.0.0.1/8")], &[]);
    assert!(
        stderr.contains(
            "invalid value '10.0.0.1/8' for TCP_HELLO_DENY (for --deny): host bits set past \
             the prefix; write 10.0.0.0/8 for the network, or 10.0.0.1 for the one address"
        ),
        "{stderr}"
    );
}

/// As [`fails_to_start`], for clap's usage errors (which add a line pointing to --help).
fn fails_to_start_clap(env: &[(&str, &str)], args: &[&str]) -> String {
    let mut cmd = hello_cmd("serve", &["--bind", "127.0.0.1:0"]);
    cmd.args(args).envs(env.iter().copied());
    let done = run_tool(&mut cmd, None, START_LIMIT);
    assert_eq!(done.code, Some(2), "{done:?}");
    assert_eq!(done.stdout, "", "nothing may be announced: {done:?}");
    done.stderr
}

#[test]
fn rules_from_the_environment_are_comma_separated() {
    // `Server::start_cmd` clears TCP_HELLO_* from what it runs, so env(1) sets them.
    let mut cmd = Command::new("env");
    cmd.arg("TCP_HELLO_DENY=127.0.0.3, 127.0.0.2")
        .arg(bin())
        .args(["serve", "--bind", "127.0.0.1:0"]);
    let server = Server::start_cmd(&mut cmd, 1);
    refused_without_a_byte(connect_from(SECOND, server.addr()));
    refused_without_a_byte(connect_from(THIRD, server.addr()));
    assert_served(connect_from(Ipv4Addr::LOCALHOST.into(), server.addr()));
}

/// Address refusals are logged at info, at most once a second, and every one is
/// counted: the rest of a burst in a count on the next report, or at shutdown.
#[test]
fn refusals_are_logged_at_info_rate_limited_and_counted() {
    const KNOCKS: u64 = 20;
    let server = Server::start(&["--deny", "127.0.0.2"]);
    for _ in 0..KNOCKS {
        refused_without_a_byte(connect_from(SECOND, server.addr()));
    }
    assert_served(connect_from(Ipv4Addr::LOCALHOST.into(), server.addr()));
    let logs = server.stop_and_logs();
    let lines = refusals(&logs);
    let number = |line: &str, after: &str, before: &str| -> u64 {
        line.split(after)
            .nth(1)
            .and_then(|rest| rest.split(before).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let counted: u64 = lines
        .iter()
        .map(|l| {
            if l.contains("refused 127.0.0.2:") {
                assert!(l.contains("address not allowed (--deny 127.0.0.2)"), "{l}");
                1 + number(l, "(--deny 127.0.0.2) (", " more refused")
            } else {
                assert!(l.contains("by address rules since the last report"), "{l}");
                number(l, "refused ", " more connections")
            }
        })
        .sum();
    assert_eq!(counted, KNOCKS, "{lines:#?}");
    // Twenty connects take far less than the ten seconds it would take to log each.
    assert!(lines.len() < 10, "not rate-limited: {lines:#?}");
    assert!(
        lines.iter().all(|l| level(l) == "INFO"),
        "address refusals are the rules at work, not warnings: {lines:#?}"
    );
}

/// Sends SIGHUP and waits for the `n`th log line that contains `what` (counted from the
/// start); returns that line.
fn sighup_and_wait(server: &Server, n: usize, what: &str) -> String {
    server.signal("HUP");
    let mut nth = None;
    assert!(
        eventually(IO_TIMEOUT, || {
            let logs = server.logs_so_far();
            nth = logs
                .lines()
                .filter(|l| l.contains(what))
                .nth(n - 1)
                .map(String::from);
            nth.is_some()
        }),
        "no {n}th line with {what:?}: {}",
        server.logs_so_far()
    );
    nth.unwrap_or_default()
}

/// How many log lines contain `what`.
fn log_count(logs: &str, what: &str) -> usize {
    logs.lines().filter(|l| l.contains(what)).count()
}

const RELOADED: &str = "address rules reloaded from ";
const NOT_RELOADED: &str = "address rules not reloaded";

/// A connection from `from` that has been welcomed, to go on talking over.
fn welcomed_from(from: IpAddr, server: SocketAddr) -> Conn {
    let mut conn = Conn::from_stream(connect_from(from, server));
    assert_eq!(
        conn.text_line(),
        "Welcome!",
        "{from} should have been served"
    );
    conn
}

/// `conn` is still served: a name gets its greeting.
fn still_answered(conn: &mut Conn, name: &str) {
    conn.send(format!("{name}\n"));
    assert_eq!(conn.text_line(), format!("Hello, {name}!"));
}

#[test]
fn sighup_reloads_a_deny_file_for_new_connections_while_open_ones_go_on() {
    let file = TempFile::new("deny-reload", "127.0.0.3\n");
    let server = Server::start(&["--deny-file", file.path()]);
    let mut open = welcomed_from(SECOND, server.addr());
    still_answered(&mut open, "Ann");

    file.write("127.0.0.3\n127.0.0.2   # now denied\n");
    let line = sighup_and_wait(&server, 1, RELOADED);
    assert!(
        line.ends_with(&format!(
            "signal 1 (SIGHUP): address rules reloaded from {}: 0 allow, 2 deny (was 0, 1; 1 \
             added, 0 removed); new connections follow them",
            file.path()
        )),
        "{line}"
    );
    assert_eq!(level(&line), "INFO", "{line}");
    // Admitted before the reload: served on, whatever the rules say now.
    still_answered(&mut open, "Bob");
    // A new connection from the same address is refused, by the line that denies it.
    refused_without_a_byte(connect_from(SECOND, server.addr()));
    assert_served(connect_from(Ipv4Addr::LOCALHOST.into(), server.addr()));
    still_answered(&mut open, "Cy");

    // Nothing changed: the reload says so.
    let line = sighup_and_wait(&server, 2, RELOADED);
    assert!(
        line.ends_with(&format!(
            "address rules reloaded from {}: unchanged, 0 allow, 2 deny",
            file.path()
        )),
        "{line}"
    );
    refused_without_a_byte(connect_from(SECOND, server.addr()));
    still_answered(&mut open, "Di");
    drop(open);
    let logs = server.stop_and_logs();
    assert!(
        logs.contains("refused 127.0.0.2:")
            && logs.contains(&format!(
                "address not allowed (--deny-file {}:2: 127.0.0.2)",
                file.path()
            )),
        "{logs}"
    );
}

#[test]
fn a_broken_rule_file_at_sighup_keeps_the_rules_in_force_and_names_file_and_line() {
    let file = TempFile::new("deny-broken", "127.0.0.3\n");
    let server = Server::start(&["--deny-file", file.path()]);
    // Its first line would deny 127.0.0.2: nothing of a broken file may be taken.
    file.write("127.0.0.2\n10.0.0.300   # a typo\n");
    let line = sighup_and_wait(&server, 1, NOT_RELOADED);
    assert!(
        line.ends_with(&format!(
            "signal 1 (SIGHUP): address rules not reloaded, the rules loaded before stay in \
             force: {}:2: 10.0.0.300: not an IP address or CIDR (e.g. 10.0.0.0/8 or \
             2001:db8::/32); fix the file and send SIGHUP again",
            file.path()
        )),
        "{line}"
    );
    assert_eq!(level(&line), "ERROR", "{line}");
    assert_served(connect_from(SECOND, server.addr()));
    refused_without_a_byte(connect_from(THIRD, server.addr()));

    // A file gone is refused the same way, naming it and why.
    std::fs::remove_file(&file.path).unwrap();
    let line = sighup_and_wait(&server, 2, NOT_RELOADED);
    assert!(
        line.contains(&format!(
            "stay in force: cannot read --deny-file {}: No such file or directory",
            file.path()
        )),
        "{line}"
    );
    assert_served(connect_from(SECOND, server.addr()));
    refused_without_a_byte(connect_from(THIRD, server.addr()));

    // Mended, the next SIGHUP takes it.
    file.write("127.0.0.2\n");
    let line = sighup_and_wait(&server, 1, RELOADED);
    assert!(
        line.contains("0 allow, 1 deny (was 0, 1; 1 added, 1 removed)"),
        "{line}"
    );
    refused_without_a_byte(connect_from(SECOND, server.addr()));
    assert_served(connect_from(THIRD, server.addr()));
    let logs = server.stop_and_logs();
    assert_eq!(log_count(&logs, NOT_RELOADED), 2, "{logs}");
}

/// Connects, is welcomed and greeted, then closes: one whole session, or why not.
fn one_session(server: SocketAddr) -> Result<(), String> {
    let fail = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let stream = TcpStream::connect_timeout(&server, IO_TIMEOUT).map_err(|e| fail("connect", e))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| fail("timeout", e))?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| fail("timeout", e))?;
    let mut writer = stream.try_clone().map_err(|e| fail("clone", e))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| fail("welcome", e))?;
    if line != "Welcome!\r\n" {
        return Err(format!("welcome: got {line:?}"));
    }
    writer.write_all(b"Ann\n").map_err(|e| fail("send", e))?;
    line.clear();
    reader.read_line(&mut line).map_err(|e| fail("reply", e))?;
    if line != "Hello, Ann!\r\n" {
        return Err(format!("reply: got {line:?}"));
    }
    Ok(())
}

/// Clients from an allowed address connect and are greeted in a loop while SIGHUPs swap
/// the rules (a large file each time, so that each swap builds its tables): not one
/// connection fails, and one held open across every reload is answered after each.
#[test]
fn rules_reloaded_under_load_fail_no_allowed_connection() {
    const CLIENTS: usize = 3;
    const RELOADS: usize = 5;
    // Sessions between two reloads, so that every reload happens under load.
    const BETWEEN: u64 = 30;
    // Thousands of rules, none of them 127.0.0.1; every other version denies 127.0.0.2.
    let version = |i: usize| {
        let mut text = String::new();
        for n in 0..2_000u32 {
            let ip = Ipv4Addr::from(0x0a00_0000 + n * 7 + i as u32);
            text.push_str(&format!("{ip}\n"));
        }
        if i % 2 == 1 {
            text.push_str("127.0.0.2\n");
        }
        text
    };
    let file = TempFile::new("deny-load", &version(0));
    let server = Server::start(&["--deny-file", file.path()]);
    let addr = server.addr();
    let mut held = welcomed_from(SECOND, addr);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, served) = (Arc::clone(&stop), Arc::clone(&served));
            thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match one_session(addr) {
                        Ok(()) => {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.push(e),
                    }
                }
                failures
            })
        })
        .collect();
    for i in 1..=RELOADS {
        let at = served.load(Ordering::Relaxed);
        assert!(
            eventually(START_LIMIT, || served.load(Ordering::Relaxed)
                >= at + BETWEEN),
            "the clients stalled at {} sessions",
            served.load(Ordering::Relaxed)
        );
        file.write(&version(i));
        let line = sighup_and_wait(&server, i, RELOADED);
        assert!(line.contains("added"), "{line}");
        still_answered(&mut held, &format!("held{i}"));
    }
    // The last version denies 127.0.0.2 for new connections; the held one goes on.
    refused_without_a_byte(connect_from(SECOND, addr));
    let at = served.load(Ordering::Relaxed);
    assert!(
        eventually(START_LIMIT, || served.load(Ordering::Relaxed)
            >= at + BETWEEN),
        "the clients stalled after the reloads"
    );
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().expect("a client thread"))
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed: {failures:#?}",
        failures.len()
    );
    still_answered(&mut held, "last");
    drop(held);
    let logs = server.stop_and_logs();
    assert_eq!(log_count(&logs, RELOADED), RELOADS, "{logs}");
    assert_eq!(log_count(&logs, NOT_RELOADED), 0, "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
}

/// UDP answers by the same rules: a reload applies from the next datagram.
#[test]
fn sighup_reloaded_rules_apply_to_the_next_datagram() {
    let file = TempFile::new("deny-udp", "127.0.0.3\n");
    let server = Server::start_with_binds(
        &["--udp-bind", "127.0.0.1:0", "--deny-file", file.path()],
        1,
    );
    let addr = server.addrs[0];
    let socket = |from: IpAddr| {
        let s = UdpSocket::bind(SocketAddr::new(from, 0)).expect("bind a UDP client");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.connect(addr).unwrap();
        s
    };
    let ask = |s: &UdpSocket, what: &str| -> Option<String> {
        s.send(what.as_bytes()).unwrap();
        let mut buf = [0u8; 256];
        s.recv(&mut buf)
            .ok()
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let (second, local) = (socket(SECOND), socket(Ipv4Addr::LOCALHOST.into()));
    assert_eq!(ask(&second, "Ann").as_deref(), Some("Hello, Ann!"));
    file.write("127.0.0.2\n");
    sighup_and_wait(&server, 1, RELOADED);
    second.send(b"Bob").unwrap();
    // Datagrams are judged in the order they come: once this one is answered, Bob's was
    // dropped rather than late.
    assert_eq!(ask(&local, "marker").as_deref(), Some("Hello, marker!"));
    second
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 256];
    assert!(
        second.recv(&mut buf).is_err(),
        "answered after its address was denied"
    );
    let logs = server.stop_and_logs();
    assert!(logs.contains("rule 1"), "{logs}");
}

/// With TLS too, one SIGHUP reloads both, each on its own: a broken key keeps the old
/// certificate, and the new rules are in force all the same.
#[test]
fn a_broken_tls_key_at_sighup_does_not_keep_new_rules_out() {
    let certs = crate::common::tls::make_certs();
    let key = certs.dir.join("live-key.pem");
    std::fs::copy(&certs.server.key, &key).unwrap();
    let file = TempFile::new("deny-tls", "127.0.0.3\n");
    let (cert, key_arg) = (
        certs.server.cert.display().to_string(),
        key.display().to_string(),
    );
    let server = Server::start_with_binds(
        &[
            "--bind",
            "127.0.0.1:0",
            "--tls-bind",
            "127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key_arg,
            "--deny-file",
            file.path(),
        ],
        2,
    );
    std::fs::write(&key, "not a key\n").unwrap();
    file.write("127.0.0.2\n");
    sighup_and_wait(&server, 1, RELOADED);
    refused_without_a_byte(connect_from(SECOND, server.addr()));
    assert_served(connect_from(THIRD, server.addr()));
    let logs = server.stop_and_logs();
    assert!(
        logs.contains("reload failed") && logs.contains(&key_arg),
        "{logs}"
    );
}
