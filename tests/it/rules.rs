//! Integration tests of `serve --allow`, `--deny` and their files, over real sockets.
//!
//! Linux routes all of 127.0.0.0/8 to the loopback interface, so a client bound to
//! 127.0.0.2 before it connects is a second address on the same machine. Every socket
//! has timeouts; nothing sleeps to wait for the server: the tests read what they expect.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
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
