//! Listening: --bind, announcements, IPv6, environment variables.

use super::*;

#[test]
fn port_zero_is_announced_as_the_real_address() {
    let server = Server::start(&[]);
    let addr = server.addr();
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(
        addr.port(),
        0,
        "the announcement must carry the chosen port"
    );
    let mut c = greeted(&server);
    c.send("Alice\n");
    assert_eq!(c.text_line(), "Hello, Alice!");
    say_exit(&mut c);
}

#[test]
fn stdout_is_exactly_one_flushed_line_per_listener() {
    let mut child = KillOnDrop(
        Command::new(bin())
            .args(["serve", "--bind", "127.0.0.1:0", "--bind", "127.0.0.1:0"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server"),
    );
    let child = &mut child.0;
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = thread::spawn(move || {
        let mut all = Vec::new();
        let mut byte = [0u8; 1];
        // Byte by byte, so that each line is reported as soon as it is complete.
        while let Ok(1) = stdout.read(&mut byte) {
            all.push(byte[0]);
            if byte[0] == b'\n' {
                let _ = tx.send(all.clone());
            }
        }
        all
    });
    // Both lines arrive while the server runs: they were flushed.
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let so_far = rx.recv_timeout(IO_TIMEOUT).expect("announcement");
        let line = lossy(&so_far).lines().last().unwrap().to_string();
        let addr = line.strip_prefix("listening on ").expect(&line).to_string();
        addrs.push(addr.parse().expect("an address"));
    }
    for &addr in &addrs {
        let mut c = Conn::open(addr);
        assert_eq!(c.text_line(), "Welcome!");
        c.send("Alice\nexit\n");
        assert_eq!(lossy(&c.rest()), "Hello, Alice!\r\nBye!\r\n");
    }
    assert!(send_signal(child.id(), "TERM"), "kill -TERM");
    assert!(
        wait_for_exit(child, IO_TIMEOUT).is_some(),
        "server did not exit after TERM"
    );
    // Nothing else ever went to stdout.
    let all = lossy(&reader.join().unwrap());
    let expected: String = addrs
        .iter()
        .map(|a: &std::net::SocketAddr| format!("listening on {a}\n"))
        .collect();
    assert_eq!(all, expected);
}

#[test]
fn default_bind_address_is_127_0_0_1_9999() {
    // Not started for real on 9999 (another program or test may hold it); the help
    // text shows the default clap applies.
    let (code, out, _) = run_with_deadline(
        Command::new(bin()).args(["serve", "--help"]),
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(0));
    // No clap default: given only --tls-bind or --udp-bind, no plain listener may open.
    assert!(
        out.contains("Default 127.0.0.1:9999, unless only --tls-bind or --udp-bind is given"),
        "{out}"
    );
    assert!(out.contains("TCP_HELLO_BIND"), "{out}");
}

/// A script that stopped reading (or a full disk) must not stop the server: it warns,
/// and serves anyway.
#[test]
fn a_closed_stdout_is_warned_about_and_clients_are_still_served() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader); // every write to stdout now fails with EPIPE
    let mut child = KillOnDrop(
        clean_env(&mut Command::new(bin()))
            .args(["serve", "--bind", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server"),
    );
    let stderr = child.0.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut logs = Vec::new();
    while !logs.iter().any(|l: &String| l.contains("serving anyway")) {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => logs.push(line),
            Err(e) => panic!("no warning about stdout ({e}): {logs:?}"),
        }
    }
    let warning = logs.iter().find(|l| l.contains("serving anyway")).unwrap();
    assert_eq!(level(warning), "WARN", "{warning}");
    assert!(warning.contains("Broken pipe"), "{warning}");
    let addr: SocketAddr = logs
        .iter()
        .find_map(|l| l.split("listening on ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address logged: {logs:?}"));
    let mut c = Conn::open(addr);
    assert_eq!(c.text_line(), "Welcome!");
    c.send("still here\n");
    assert_eq!(c.text_line(), "Hello, still here!");
}

#[test]
fn two_binds_announce_two_lines_and_both_serve() {
    let server = Server::start_with_binds(&["--bind", "127.0.0.1:0", "--bind", "127.0.0.1:0"], 2);
    assert_eq!(server.addrs.len(), 2);
    assert_ne!(server.addrs[0], server.addrs[1]);
    for (i, &addr) in server.addrs.iter().enumerate() {
        let mut c = Conn::open(addr);
        assert_eq!(c.text_line(), "Welcome!");
        c.send(format!("listener{i}\n"));
        assert_eq!(c.text_line(), format!("Hello, listener{i}!"));
        say_exit(&mut c);
    }
}

#[test]
fn ipv6_loopback() {
    if let Err(e) = TcpListener::bind("[::1]:0") {
        eprintln!("SKIPPED ipv6_loopback: cannot bind [::1] on this machine ({e})");
        return;
    }
    let server = Server::start_with_binds(&["--bind", "[::1]:0"], 1);
    let addr = server.addr();
    assert!(addr.is_ipv6(), "{addr}");
    assert_eq!(addr.ip().to_string(), "::1");
    assert_ne!(addr.port(), 0);
    let mut c = greeted(&server);
    c.send("张三\n");
    assert_eq!(c.text_line(), "Hello, 张三!");
    say_exit(&mut c);
}

#[test]
fn a_host_name_binds_its_ipv4_address() {
    let server = Server::start_with_binds(&["--bind", "localhost:0"], 1);
    let addr = server.addr();
    assert_eq!(addr.ip().to_string(), "127.0.0.1", "{addr}");
    let mut c = greeted(&server);
    c.send("named\n");
    assert_eq!(c.text_line(), "Hello, named!");
    say_exit(&mut c);
}

/// Linux would read a negative backlog as its largest; it is refused instead.
#[test]
fn a_negative_backlog_is_a_usage_error() {
    let (code, out, err) = run_with_deadline(
        Command::new(bin()).args(["serve", "--bind", "127.0.0.1:0", "--backlog=-5"]),
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(2), "stderr {err:?}");
    assert_eq!(out, "");
    assert!(err.contains("--backlog"), "{err}");
}

#[test]
fn a_bad_bind_address_is_a_usage_error_saying_what_to_write() {
    for (bad, says) in [
        ("127.0.0.1:x", "HOST:PORT"),
        (":9999", "0.0.0.0:9999"),
        ("host:80:1", "brackets"),
        (
            "no-such-host.invalid:1",
            "cannot resolve no-such-host.invalid",
        ),
        (
            "8080",
            "looks like a port, not a host; write HOST:PORT, e.g. 127.0.0.1:8080",
        ),
        ("http://127.0.0.1:80", "a URL (http://) is not an address"),
        // Linux gives a bare "invalid argument" for a mapped address on an IPv6 listener.
        ("[::ffff:127.0.0.1]:7777", "write 127.0.0.1:7777"),
        // An address (::0.1.128.128) on port 9999, or port 8080 of ::1?
        ("::1:8080", "write [::1]:8080 for port 8080 of ::1"),
    ] {
        let (code, out, err) = run_with_deadline(
            Command::new(bin()).args(["serve", "--bind", bad]),
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(2), "{bad}: stderr {err:?}");
        assert_eq!(out, "", "{bad}: nothing may be announced");
        let first = err.lines().next().unwrap_or_default();
        assert!(first.contains(says), "{bad}: {err:?}");
    }
}

/// The same address twice is the user's mistake, not "another server running there".
#[test]
fn the_same_bind_address_twice_is_named_as_such() {
    let (code, out, err) = run_with_deadline(
        hello_cmd(
            "serve",
            &[
                "--bind",
                "127.0.0.1:7",
                "--bind",
                "[::1]:7",
                "--bind",
                "localhost:7",
            ],
        )
        .stdin(std::process::Stdio::null()),
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(out, "");
    assert!(err.contains("--bind 127.0.0.1:7 is given twice"), "{err}");
    assert!(!err.contains("another server"), "{err}");
}

/// Negative numbers reach each flag's own check, in every subcommand, instead of
/// clap's "unexpected argument '-1' found" (whose tip, `-- -1`, made -1 a name).
#[test]
fn negative_numbers_get_the_flag_s_own_message() {
    for (args, says) in [
        (&["serve", "--backlog", "-5"][..], "-5 is not in 0.."),
        (&["serve", "--idle-timeout", "-1"], "-1 is negative"),
        (&["serve", "--shutdown-timeout", "-3"], "-3 is negative"),
        (
            &["client", "--reply-timeout", "-1", "x"],
            "'--reply-timeout <SECS>': -1 is negative; give 0 (no timeout)",
        ),
        (
            &["client", "--connect-timeout", "-2", "x"],
            "'--connect-timeout <SECS>': -2 is negative",
        ),
        (
            &["bench", "--timeout", "-1"],
            "--timeout must be a number of seconds above 0, not -1",
        ),
        (&["bench", "-n", "-4"], "-4 is not a count; give 1 or more"),
    ] {
        let (code, _, err) = run_with_deadline(
            hello_cmd(args[0], &args[1..]).stdin(std::process::Stdio::null()),
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("unexpected argument"), "{args:?}: {err}");
    }
}

/// A bad value from a `TCP_HELLO_*` variable is reported under the variable's name,
/// and under the flag's when the flag gave it.
#[test]
fn a_bad_value_from_the_environment_names_the_variable() {
    for (var, value) in [
        ("TCP_HELLO_MAX_LINE", "0"),
        ("TCP_HELLO_IDLE_TIMEOUT", "-1"),
        ("TCP_HELLO_BIND", "nope:x"),
    ] {
        let (code, _, err) = run_with_deadline(
            hello_cmd("serve", &[]).env(var, value),
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(2), "{var}: {err}");
        assert!(err.contains(&format!("for {var} (for --")), "{var}: {err}");
    }
    // The client's and bench's variables too.
    for (sub, var, value) in [
        ("client", "TCP_HELLO_REPLY_TIMEOUT", "-1"),
        ("client", "TCP_HELLO_CONNECT", "a:b:c"),
        ("bench", "TCP_HELLO_CONNECT", "host:0"),
    ] {
        let (code, _, err) = run_with_deadline(
            hello_cmd(sub, &[])
                .env(var, value)
                .stdin(std::process::Stdio::null()),
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(2), "{sub} {var}: {err}");
        assert!(
            err.contains(&format!("for {var} (for --")),
            "{sub} {var}: {err}"
        );
    }
    let (code, _, err) = run_with_deadline(
        hello_cmd("serve", &["--max-line", "0"]).env("TCP_HELLO_MAX_LINE", "5"),
        Duration::from_secs(20),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("'--max-line <BYTES>'"), "{err}");
    assert!(!err.contains("TCP_HELLO_MAX_LINE"), "{err}");
}

/// A socket-activation environment that cannot be right fails at start-up with one
/// line and exit 2, whatever count `LISTEN_FDS` claims: a huge one must not be sized
/// into memory before a descriptor is looked at.
#[test]
fn a_listen_fds_that_cannot_be_right_is_one_line_and_exit_2() {
    for (fds, says) in [
        ("abc", "is not a number of sockets"),
        ("99999999999", "more sockets than this process can hold"),
    ] {
        // `$$` is the shell's process ID, and so the server's after `exec`.
        let script = format!("LISTEN_PID=$$ LISTEN_FDS={fds} exec \"$0\" serve");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script, bin()]).stdin(Stdio::null());
        let (code, out, err) = run_with_deadline(clean_env(&mut cmd), Duration::from_secs(20));
        assert_eq!(code, Some(2), "LISTEN_FDS={fds}: {err}");
        assert_eq!(out, "", "nothing is announced");
        assert_eq!(err.lines().count(), 1, "LISTEN_FDS={fds}: {err}");
        assert!(err.contains(says), "LISTEN_FDS={fds}: {err}");
    }
}

/// `--welcome ''` is an empty line in line framing; chunk framing has no empty message,
/// so an empty welcome (or reply) is refused at start-up rather than leaving clients
/// waiting for it.
#[test]
fn an_empty_welcome_is_an_empty_line_and_refused_in_chunk_framing() {
    let server = Server::start(&["--welcome", ""]);
    let mut c = server.connect();
    assert_eq!(c.line(), b"\r\n");
    c.send("Alice\n");
    assert_eq!(c.text_line(), "Hello, Alice!");
    for args in [&["--welcome", ""][..], &["--reply", ""]] {
        let mut all = vec!["--bind", "127.0.0.1:0", "--framing", "chunk"];
        all.extend_from_slice(args);
        let (code, out, err) = run_with_deadline(
            hello_cmd("serve", &all).stdin(std::process::Stdio::null()),
            Duration::from_secs(20),
        );
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(out, "", "nothing is announced");
        assert!(err.contains(&format!("an empty {}", args[0])), "{err}");
    }
}

#[test]
fn options_from_tcp_hello_environment_variables() {
    let mut cmd = Command::new(bin());
    cmd.arg("serve")
        .env("TCP_HELLO_BIND", "127.0.0.1:0")
        .env("TCP_HELLO_WELCOME", "Hi from env")
        .env("TCP_HELLO_REPLY", "Env says hi to {}")
        .env("TCP_HELLO_FAREWELL", "Env bye")
        .env("TCP_HELLO_MAX_LINE", "10");
    let server = Server::start_cmd(&mut cmd, 1);
    let mut c = server.connect();
    assert_eq!(c.text_line(), "Hi from env");
    c.send("Alice\n0123456789A\n");
    assert_eq!(c.text_line(), "Env says hi to Alice");
    assert_eq!(c.text_line(), "ERROR line too long (max 10 bytes), skipped");
    c.send("quit\n");
    assert_eq!(lossy(&c.rest()), "Env bye\r\n");
}

#[test]
fn command_line_wins_over_environment() {
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--welcome", "From CLI"])
        .env("TCP_HELLO_WELCOME", "From env");
    let server = Server::start_cmd(&mut cmd, 1);
    let mut c = server.connect();
    assert_eq!(c.text_line(), "From CLI");
}

#[test]
fn port_in_use_is_a_one_line_error_naming_the_address() {
    let first = Server::start(&[]);
    let addr = first.addr().to_string();
    let (code, out, err) = run_with_deadline(
        Command::new(bin()).args(["serve", "--bind", &addr]),
        Duration::from_secs(10),
    );
    assert!(
        matches!(code, Some(c) if c != 0),
        "exit code {code:?}, stderr {err:?}"
    );
    assert_eq!(out, "", "nothing may be announced");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.contains(&addr), "names the address: {err:?}");
    assert!(err.contains("in use"), "says why: {err:?}");
    assert!(err.contains("--bind"), "suggests a fix: {err:?}");
    // The first server is unharmed.
    let mut c = greeted(&first);
    c.send("still\n");
    assert_eq!(c.text_line(), "Hello, still!");
}

#[test]
fn small_backlog_still_serves_every_client() {
    // More connects at once than the queue holds: the kernel drops the extra SYNs and
    // the clients retry (after about 1 s), so every one is served in the end.
    let server = Server::start(&["--backlog", "1"]);
    let mut conns: Vec<Conn> = (0..4).map(|_| server.connect()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        assert_eq!(c.text_line(), "Welcome!");
        c.send(format!("c{i}\n"));
        assert_eq!(c.text_line(), format!("Hello, c{i}!"));
    }
}
