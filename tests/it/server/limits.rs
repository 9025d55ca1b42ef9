//! Limits: connections, idle and write timeouts, isolation.

use super::*;

#[test]
fn busy_beyond_max_connections_and_a_slot_frees_when_a_client_leaves() {
    let server = Server::start(&["--max-connections", "2"]);
    let mut first = greeted(&server);
    let mut second = greeted(&server);
    let mut third = server.connect();
    // Even a client that talks first gets the notice (not a reset).
    third.send("Carol\n");
    assert_eq!(
        lossy(&third.rest()),
        "ERROR server busy (2 connections), try again later\r\n"
    );
    // The two admitted ones are unaffected.
    second.send("Second\n");
    assert_eq!(second.text_line(), "Hello, Second!");
    // One leaves; a new client is then served (retrying, as the notice says, while
    // the server notices the close).
    say_exit(&mut first);
    drop(first);
    let (mut fourth, refused) = connect_when_not_busy(&server);
    fourth.send("Fourth\n");
    assert_eq!(fourth.text_line(), "Hello, Fourth!");
    eprintln!("served after {refused} busy answers");
    // And it is full again.
    let mut fifth = server.connect();
    assert!(
        lossy(&fifth.rest()).starts_with("ERROR server busy (2 connections)"),
        "limit still enforced"
    );
}

/// `--max-connections 0` is a server that is always busy: a fixture for testing how a
/// client handles the busy line.
#[test]
fn max_connections_0_answers_every_client_with_the_busy_line() {
    let server = Server::start(&["--max-connections", "0"]);
    for _ in 0..3 {
        let mut c = server.connect();
        assert_eq!(
            lossy(&c.rest()),
            "ERROR server busy (0 connections), try again later\r\n"
        );
    }
}

/// Refusals are logged at most once a second, and every one is counted: what a burst
/// left unreported is logged once its second has passed, or at shutdown.
#[test]
fn every_refusal_in_a_burst_is_counted_in_the_log() {
    let server = Server::start(&["--max-connections", "0"]);
    for _ in 0..50 {
        let mut c = server.connect();
        assert!(lossy(&c.rest()).starts_with("ERROR server busy"));
    }
    let logs = server.stop_and_logs();
    let lines = log_lines(&logs, "refused");
    let count = |line: &str, after: &str, before: &str| -> u64 {
        line.split(after)
            .nth(1)
            .and_then(|rest| rest.split(before).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let counted: u64 = lines
        .iter()
        .map(|l| {
            if l.contains("refused 127.0.0.1:") {
                1 + count(l, "(", " more refused")
            } else {
                count(l, "refused ", " more connections")
            }
        })
        .sum();
    assert_eq!(counted, 50, "{lines:#?}");
    assert!(lines.len() < 10, "not rate-limited: {lines:#?}");
    assert!(
        !logs.contains("(0 more refused"),
        "a first report has nothing to add: {logs}"
    );
}

#[test]
fn idle_connection_gets_a_notice_and_is_closed() {
    let server = Server::start(&["--idle-timeout", "1"]);
    let mut c = greeted(&server);
    let started = Instant::now();
    // Waiting for the notice is the point of this test: time has to pass.
    assert_eq!(lossy(&c.rest()), "ERROR idle for 1 s, closing\r\n");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
}

/// An address-space limit runs out long before memory does (glibc reserves 64 MiB per
/// malloc arena), and std cannot report running out while a thread starts; say so.
#[test]
fn an_address_space_limit_is_warned_about_at_start() {
    let command = format!(
        "ulimit -v 4000000 && exec {} serve --bind 127.0.0.1:0",
        bin()
    );
    let server = Server::start_cmd(Command::new("sh").args(["-c", &command]), 1);
    let mut c = greeted(&server);
    c.send("Ann\n");
    assert_eq!(c.text_line(), "Hello, Ann!");
    let logs = server.stop_and_logs();
    let warning = log_lines(&logs, "address-space limit");
    assert_eq!(warning.len(), 1, "{logs}");
    assert_eq!(level(warning[0]), "WARN", "{}", warning[0]);
    assert!(warning[0].contains("3906 MiB"), "{}", warning[0]);
    assert!(warning[0].contains("MALLOC_ARENA_MAX=2"), "{}", warning[0]);
}

/// Without a limit, nothing is said.
#[test]
fn no_address_space_warning_without_a_limit() {
    let server = Server::start(&[]);
    let logs = server.stop_and_logs();
    assert!(!logs.contains("address-space"), "{logs}");
}

/// Each connection thread takes 4 memory mappings, and past `vm.max_map_count` std
/// aborts the whole process while a thread starts: a larger limit is lowered to fit,
/// with a warning naming the cause and the fix.
#[test]
fn a_connection_limit_beyond_the_mapping_limit_is_lowered_to_fit() {
    let max_maps: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .expect("read max_map_count")
        .trim()
        .parse()
        .expect("a number");
    let server = Server::start(&["--max-connections", "100000000"]);
    let logs = server.stop_and_logs();
    let listening = log_lines(&logs, "listening on");
    let limit: usize = listening[0]
        .split("(max ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no limit announced: {logs}"));
    assert!(
        limit <= max_maps / 4,
        "{limit} connections would need more than {max_maps} mappings"
    );
    let lowered = log_lines(&logs, "lowered to");
    assert_eq!(lowered.len(), 1, "one warning: {logs}");
    assert_eq!(level(lowered[0]), "WARN", "{}", lowered[0]);
    assert!(
        lowered[0].contains(&format!("--max-connections 100000000 lowered to {limit}: ")),
        "{}",
        lowered[0]
    );
    // Every limit below 100,000,000 is named, each with the command that raises it.
    for named in [
        "kernel.pid_max is",
        "sysctl -w kernel.pid_max=",
        "kernel.threads-max is",
        "MiB of memory is available",
        "the open-file limit is",
    ] {
        assert!(lowered[0].contains(named), "{named}: {}", lowered[0]);
    }
    // Whichever limit is tighter is named first: on most machines the mappings (about
    // 16,000 connections by default), unless the open-file limit is lower still (or
    // vm.max_map_count has been raised).
    let first = lowered[0].split("; then").next().unwrap_or_default();
    if first.contains("vm.max_map_count") {
        assert!(
            lowered[0].contains(&format!("vm.max_map_count is {max_maps}")),
            "{}",
            lowered[0]
        );
        assert!(
            lowered[0].contains("sysctl -w vm.max_map_count="),
            "{}",
            lowered[0]
        );
        assert!(limit > (max_maps - 4096) / 4, "{limit}");
    } else {
        assert!(first.contains("open-file limit"), "{}", lowered[0]);
    }
}

/// The idle timeout is set on the listening socket, so that accepted sockets inherit
/// it, and Linux applies it to `accept` as well: a server nobody connects to for that
/// long must keep accepting quietly, not report an error.
#[test]
fn a_quiet_listener_outlasting_the_idle_timeout_is_not_an_error() {
    // At debug too: an accept that found no client within the timeout is not logged.
    let server = Server::start(&["--idle-timeout", "1", "-v"]);
    thread::sleep(Duration::from_millis(2500)); // time passing with no client is the point
    let mut c = greeted(&server);
    c.send("late\n");
    assert_eq!(c.text_line(), "Hello, late!");
    drop(c);
    let logs = server.stop_and_logs();
    assert!(!logs.contains("accept failed"), "logs: {logs}");
    assert!(!logs.contains("accept: "), "logs: {logs}");
    assert!(logs.contains("DEBUG"), "-v logs at debug: {logs}");
}

/// A connection that never sends anything (a scanner, a health check) and is closed as
/// idle logs nothing at the default level, and both its open and its close at debug:
/// the log never shows an open without its close.
#[test]
fn an_idle_close_logs_its_open_and_close_at_the_same_level() {
    for (args, expected) in [(&[][..], None), (&["-v"][..], Some("DEBUG"))] {
        let mut all = vec!["--idle-timeout", "1"];
        all.extend_from_slice(args);
        let server = Server::start(&all);
        let mut c = greeted(&server);
        assert_eq!(lossy(&c.rest()), "ERROR idle for 1 s, closing\r\n");
        drop(c);
        let logs = server.stop_and_logs();
        let opened = log_lines(&logs, "conn 1 open");
        let closed = log_lines(&logs, "conn 1 closed");
        match expected {
            None => assert!(opened.is_empty() && closed.is_empty(), "{logs}"),
            Some(want) => {
                assert_eq!((opened.len(), closed.len()), (1, 1), "{logs}");
                assert_eq!((level(opened[0]), level(closed[0])), (want, want), "{logs}");
            }
        }
    }
}

#[test]
fn activity_resets_the_idle_timeout() {
    let server = Server::start(&["--idle-timeout", "1"]);
    let mut c = greeted(&server);
    let started = Instant::now();
    for i in 0..4 {
        thread::sleep(Duration::from_millis(400)); // time passing is the point
        c.send(format!("n{i}\n"));
        assert_eq!(c.text_line(), format!("Hello, n{i}!"));
    }
    assert!(started.elapsed() > Duration::from_millis(1500));
    assert_eq!(lossy(&c.rest()), "ERROR idle for 1 s, closing\r\n");
}

/// A client sends names (1 MiB per write, until the server gives up on it) and never
/// reads a reply; meanwhile another client is served. Returns the server's logs.
fn write_timeout_scenario(framing: &str) -> String {
    let server = Server::start(&["--write-timeout", "1", "--framing", framing]);
    let chunk = framing == "chunk";
    // One exchange with the well-behaved client, in the server's framing.
    let hello = |c: &mut Conn, name: &str| {
        if chunk {
            c.send(name);
            assert_eq!(lossy(&c.exact(name.len() + 8)), format!("Hello, {name}!"));
        } else {
            c.send(format!("{name}\n"));
            assert_eq!(c.text_line(), format!("Hello, {name}!"));
        }
    };
    let mut stuck = server.connect();
    assert_eq!(stuck.exact(8), b"Welcome!");
    let mut writer = stuck.stream.try_clone().unwrap();
    let flood = thread::spawn(move || {
        let mut names = Vec::with_capacity(1 << 20);
        while names.len() < (1 << 20) {
            names.extend_from_slice(&[b'n'; 1023]);
            names.push(b'\n');
        }
        let mut sent = 0usize;
        loop {
            if let Err(e) = writer.write_all(&names) {
                return (sent, e);
            }
            sent += names.len();
            assert!(sent < 1 << 30, "the server never stopped reading");
        }
    });
    // Meanwhile another client is served.
    let mut other = server.connect();
    assert_eq!(other.exact(8), b"Welcome!");
    if !chunk {
        assert_eq!(other.exact(2), b"\r\n");
    }
    hello(&mut other, "Other");
    let started = Instant::now();
    let (sent, error) = flood.join().unwrap();
    assert!(sent >= 1 << 20, "sent {sent} bytes");
    // Closed by the server (with unread input, so a reset), not our own write timeout.
    assert!(
        matches!(
            error.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
        ),
        "the server should close the connection (got {error} after {:?}, {sent} bytes sent)",
        started.elapsed()
    );
    drop(stuck);
    // The other client is still served.
    hello(&mut other, "Again");
    drop(other);
    server.stop_and_logs()
}

#[test]
fn write_timeout_frees_a_client_that_never_reads() {
    let logs = write_timeout_scenario("line");
    let closed = log_lines(&logs, "conn 1 closed");
    assert_eq!(closed.len(), 1, "{logs}");
    assert!(closed[0].contains("write error"), "{}", closed[0]);
    // Once, not twice: a send that waited out the 1 s timeout having placed part of
    // the replies used to be followed by a second send that waited 1 s more.
    let lived = conn_1_lived(&logs);
    assert!(lived < 1.8, "closed after {lived} s with --write-timeout 1");
}

#[test]
fn write_timeout_frees_a_chunk_framed_client_that_never_reads() {
    let logs = write_timeout_scenario("chunk");
    let closed = log_lines(&logs, "conn 1 closed");
    assert_eq!(closed.len(), 1, "{logs}");
    assert!(closed[0].contains("write error"), "{}", closed[0]);
}

/// How long `conn 1` lived, from its close line.
fn conn_1_lived(logs: &str) -> f64 {
    let closed = log_lines(logs, "conn 1 closed");
    assert_eq!(closed.len(), 1, "{logs}");
    closed[0]
        .split(", ")
        .nth(1)
        .and_then(|d| d.strip_suffix(" s"))
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no duration: {}", closed[0]))
}

/// Echo mode writes back as it reads; a client that never reads is freed after the
/// write timeout, once (not once per partial send).
#[test]
fn write_timeout_frees_an_echo_client_that_never_reads() {
    let server = Server::start(&["--mode", "echo", "--write-timeout", "1"]);
    let stuck = server.connect();
    let mut writer = stuck.stream.try_clone().unwrap();
    let flood = thread::spawn(move || {
        let chunk = vec![b'e'; 1 << 16];
        let mut sent = 0usize;
        while writer.write_all(&chunk).is_ok() {
            sent += chunk.len();
            assert!(sent < 1 << 30, "the server never stopped reading");
        }
    });
    flood.join().unwrap();
    drop(stuck);
    let logs = server.stop_and_logs();
    assert!(
        log_lines(&logs, "conn 1 closed")[0].contains("write error"),
        "{logs}"
    );
    let lived = conn_1_lived(&logs);
    assert!(lived < 1.8, "closed after {lived} s with --write-timeout 1");
}

/// Telnet negotiations are answered from a buffer that a burst must not leave large:
/// an idle connection owns no heap buffer.
#[test]
fn a_burst_of_telnet_negotiations_leaves_no_buffer_behind() {
    let server = Server::start(&["-q"]);
    let before = server.proc_status("VmRSS");
    let burst: Vec<u8> = [0xFF, 0xFD, 0x01].repeat(21_000);
    let mut conns = Vec::new();
    for _ in 0..200 {
        let mut c = greeted(&server);
        c.send(&burst);
        // Every `IAC DO x` is refused with `IAC WONT x`: read them all.
        assert_eq!(c.exact(burst.len()), [0xFF, 0xFC, 0x01].repeat(21_000));
        conns.push(c);
    }
    let per_conn = (server.proc_status("VmRSS") - before) as f64 / 200.0;
    // 10 KiB is the thread; a kept 64 KiB answer buffer made it about 78 KiB.
    assert!(per_conn < 40.0, "{per_conn:.1} KiB per idle connection");
}

#[test]
fn a_reset_connection_does_not_touch_the_others() {
    let server = Server::start(&[]);
    let mut other = greeted(&server);
    let mut rude = greeted(&server);
    rude.send("Rude\npartial line");
    assert_eq!(rude.text_line(), "Hello, Rude!");
    // Close with RST (SO_LINGER 0) in the middle of a line.
    socket2::SockRef::from(&rude.stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(rude);
    other.send("Other\n");
    assert_eq!(other.text_line(), "Hello, Other!");
    let mut fresh = greeted(&server);
    fresh.send("Fresh\n");
    assert_eq!(fresh.text_line(), "Hello, Fresh!");
    say_exit(&mut fresh);
    say_exit(&mut other);
}

#[test]
fn a_failing_connection_releases_its_slot() {
    // Regression test: at 1e08f09 this session (`Alice\n`, then `Bob\n`) panicked the
    // connection thread, which then skipped `leave`: the socket was never closed, the
    // only slot was never released, and every later client was told "busy".
    let server = Server::start(&["--max-connections", "1"]);
    let mut c = greeted(&server);
    c.send("Alice\n");
    assert_eq!(c.text_line(), "Hello, Alice!");
    c.send("Bob\n");
    c.send("exit\n");
    c.stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut got = Vec::new();
    let ended = c.stream.read_to_end(&mut got);
    eprintln!("first client got {:?} ({ended:?})", lossy(&got));
    drop(c);
    // The client has left: its slot must be free again.
    let (mut next, _) = connect_when_not_busy(&server);
    next.send("Next\n");
    assert_eq!(next.text_line(), "Hello, Next!");
}
