//! `tcp-hello bench --udp` against `serve --udp-bind` and against UDP peers written
//! here that lose, duplicate, hold back or garble replies. Every socket has a timeout;
//! the peers stop when told, or after [`RUN_LIMIT`].

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// Longest run of one bench command before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Runs `tcp-hello bench --udp --connect ADDR ARGS` to the end (at most `RUN_LIMIT`).
fn bench_udp(addr: SocketAddr, args: &[&str]) -> Finished {
    let addr = addr.to_string();
    let mut all = vec!["--udp", "--connect", addr.as_str()];
    all.extend_from_slice(args);
    run_tool(&mut hello_cmd("bench", &all), None, RUN_LIMIT)
}

/// A UDP server alone on 127.0.0.1, with `args`.
fn udp_server(args: &[&str]) -> Server {
    let mut all = vec!["--udp-bind", "127.0.0.1:0"];
    all.extend_from_slice(args);
    Server::start_with_binds(&all, 1)
}

/// The JSON report of a run that ended with exit status `code`.
fn report(run: &Finished, code: i32) -> Value {
    assert!(
        run.code == Some(code),
        "bench ended with {:?}, not {code}: stdout {:?}, stderr {:?}",
        run.code,
        run.stdout,
        run.stderr
    );
    serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {:?}", run.stdout))
}

fn count(r: &Value, key: &str) -> u64 {
    r[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing or not a count: {r}"))
}

/// A number the server logged as `... <what> N ...` when it stopped (0 if absent).
fn logged(logs: &str, what: &str) -> u64 {
    logs.rsplit(what)
        .next()
        .filter(|_| logs.contains(what))
        .and_then(|rest| {
            let digits: String = rest
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .unwrap_or(0)
}

#[test]
fn every_datagram_is_answered_by_a_server_without_a_rate_limit() {
    let server = udp_server(&["--udp-rate", "0"]);
    let run = bench_udp(
        server.addr(),
        &[
            "-n",
            "4",
            "-p",
            "16",
            "-m",
            "3000",
            "--timeout",
            "10",
            "--json",
        ],
    );
    let r = report(&run, 0);
    assert_eq!(r["mode"], "udp", "{r}");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(count(&r, "connections"), 4, "{r}");
    assert_eq!(count(&r, "sent"), 3000, "{r}");
    assert_eq!(count(&r, "messages"), 3000, "{r}");
    assert_eq!(count(&r, "lost"), 0, "{r}");
    assert_eq!(count(&r, "duplicates"), 0, "{r}");
    assert_eq!(count(&r, "late"), 0, "{r}");
    assert_eq!(count(&r, "errors_total"), 0, "{r}");
    assert_eq!(count(&r, "mismatches"), 0, "{r}");
    assert_eq!(r["lost_percent"], 0.0, "{r}");
    assert!(r["messages_per_s"].as_f64().is_some_and(|x| x > 0.0), "{r}");
    let latency = &r["latency_us"];
    assert_eq!(count(latency, "count"), 3000, "{r}");
    let q: Vec<f64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|k| {
            latency[k]
                .as_f64()
                .unwrap_or_else(|| panic!("latency_us.{k} missing: {r}"))
        })
        .collect();
    assert!(q.windows(2).all(|w| w[0] <= w[1]), "{r}");
    assert!(latency["mean"].as_f64().is_some(), "{r}");
    // The human report goes to stderr with --json.
    assert!(
        run.stderr
            .contains("3,000 sent, 3,000 replies, 0 lost (0.00%)"),
        "{}",
        run.stderr
    );
    let logs = server.stop_and_logs();
    assert!(
        logs.contains("3000 datagrams received, 3000 answered, 0 dropped"),
        "{logs}"
    );
}

#[test]
fn an_echo_server_and_a_duration_print_a_human_report() {
    let server = udp_server(&["--udp-rate", "0", "--mode", "echo"]);
    let run = bench_udp(
        server.addr(),
        &["-n", "1", "-d", "0.5", "--expect", "{}", "--threads", "1"],
    );
    assert!(run.code == Some(0), "{:?}: {}", run.code, run.stderr);
    assert!(
        run.stdout.starts_with(&format!(
            "bench udp {}: 1 socket, 1 thread, 1 in flight each, 8-byte names\n",
            server.addr()
        )),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(" lost (0.00%) in "), "{}", run.stdout);
    assert!(run.stdout.contains("errors      none"), "{}", run.stdout);
}

#[test]
fn the_servers_rate_limit_shows_as_loss_not_as_failure() {
    // The default --udp-rate, 1000 a second from one address, and more than that sent.
    let server = udp_server(&[]);
    let run = bench_udp(server.addr(), &["-n", "4", "-p", "16", "-d", "2", "--json"]);
    let r = report(&run, 0);
    assert_eq!(r["ok"], true, "{r}");
    let (sent, matched, lost, late) = (
        count(&r, "sent"),
        count(&r, "messages"),
        count(&r, "lost"),
        count(&r, "late"),
    );
    assert!(lost > 0 && matched > 0, "{r}");
    assert_eq!(sent, matched + lost, "{r}");
    assert!(r["lost_percent"].as_f64().is_some_and(|p| p > 0.0), "{r}");
    assert_eq!(count(&r, "errors_total"), 0, "{r}");
    assert!(run.stderr.contains("  lost: "), "{}", run.stderr);
    assert!(
        run.stderr.contains("--udp-rate 0 lifts it"),
        "{}",
        run.stderr
    );
    // What the server dropped for its rate is what was lost, but for replies that came
    // after their timeout (lost, then late).
    let logs = server.stop_and_logs();
    let dropped = logged(&logs, "rate ");
    assert!(dropped > 0, "{logs}");
    assert!(dropped <= lost && lost <= dropped + late, "{r}\n{logs}");
}

/// What a misbehaving peer did, counted by the peer.
#[derive(Default)]
struct PeerCounts {
    received: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    held: AtomicU64,
    replies: AtomicU64,
    /// The addresses datagrams came from.
    sources: std::sync::Mutex<std::collections::BTreeSet<std::net::IpAddr>>,
}

/// A UDP peer on 127.0.0.1 that answers `Hello, NAME!` (or, with `garble`, `Hello,
/// NAME?`), but of every datagram it receives drops the 3rd, 6th, ...; answers the 1st,
/// 6th, 11th, ... twice (unless dropped); and holds back the 2nd, 9th, 16th, ... until
/// it has answered the next one, or 20 ms have passed without one. Until `stop`.
fn misbehaving_peer(garble: bool) -> (SocketAddr, Arc<PeerCounts>, Arc<AtomicBool>) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the peer");
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    socket.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let addr = socket.local_addr().unwrap();
    let counts = Arc::new(PeerCounts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (c, s) = (Arc::clone(&counts), Arc::clone(&stop));
    thread::spawn(move || {
        let deadline = Instant::now() + RUN_LIMIT;
        let mut held: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
        let mut buf = [0u8; 2048];
        let send = |reply: &[u8], to: SocketAddr| {
            socket.send_to(reply, to).expect("the peer answers");
            c.replies.fetch_add(1, Ordering::Relaxed);
        };
        while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                for (reply, to) in held.drain(..) {
                    send(&reply, to);
                }
                continue;
            };
            let nth = c.received.fetch_add(1, Ordering::Relaxed) + 1;
            c.sources.lock().unwrap().insert(from.ip());
            let end = if garble { "?" } else { "!" };
            let reply = [b"Hello, ", &buf[..n], end.as_bytes()].concat();
            if nth % 3 == 0 {
                c.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if nth % 7 == 2 {
                c.held.fetch_add(1, Ordering::Relaxed);
                held.push((reply, from));
                continue;
            }
            send(&reply, from);
            if nth % 5 == 1 {
                c.duplicated.fetch_add(1, Ordering::Relaxed);
                send(&reply, from);
            }
            for (reply, to) in held.drain(..) {
                send(&reply, to);
            }
        }
    });
    (addr, counts, stop)
}

fn load(n: &AtomicU64) -> u64 {
    n.load(Ordering::Relaxed)
}

#[test]
fn loss_duplicates_and_reordering_are_counted_as_the_peer_did_them() {
    let (addr, peer, stop) = misbehaving_peer(false);
    // 16 slots in all, and a third of the datagrams dropped: the window fills with lost
    // ones, and only their timeouts free it for the rest.
    let run = bench_udp(
        addr,
        &[
            "-n",
            "2",
            "-p",
            "8",
            "-m",
            "120",
            "--timeout",
            "0.5",
            "--json",
        ],
    );
    stop.store(true, Ordering::Relaxed);
    let r = report(&run, 0);
    assert_eq!(r["ok"], true, "{r}");
    let (sent, matched, lost) = (count(&r, "sent"), count(&r, "messages"), count(&r, "lost"));
    let (duplicates, late) = (count(&r, "duplicates"), count(&r, "late"));
    assert_eq!(sent, 120, "{r}");
    assert_eq!(load(&peer.received), 120, "{r}");
    assert_eq!(load(&peer.dropped), 40, "{r}");
    assert!(load(&peer.duplicated) > 0 && load(&peer.held) > 0, "{r}");
    assert_eq!(matched + lost, sent, "{r}");
    // Every reply the peer sent is a match, a duplicate or a late one.
    assert_eq!(matched + duplicates + late, load(&peer.replies), "{r}");
    assert_eq!(count(&r, "mismatches"), 0, "{r}");
    if late == 0 {
        // Nothing came after its timeout (on a loaded machine something may).
        assert_eq!(lost, load(&peer.dropped), "{r}");
        assert_eq!(duplicates, load(&peer.duplicated), "{r}");
    } else {
        assert!(lost > load(&peer.dropped), "{r}");
    }
}

#[test]
fn source_binds_each_socket_to_an_address_in_turn() {
    let (addr, peer, stop) = misbehaving_peer(false);
    let run = bench_udp(
        addr,
        &[
            "--source",
            "127.0.0.2-127.0.0.4",
            "-n",
            "3",
            "-m",
            "30",
            "--timeout",
            "0.3",
            "--json",
        ],
    );
    stop.store(true, Ordering::Relaxed);
    let r = report(&run, 0);
    assert_eq!(count(&r, "sent"), 30, "{r}");
    let sources: Vec<String> = (peer.sources.lock().unwrap().iter())
        .map(|ip| ip.to_string())
        .collect();
    assert_eq!(sources, ["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
}

#[test]
fn a_wrong_reply_fails_the_run_and_names_the_mismatch() {
    let (addr, peer, stop) = misbehaving_peer(true);
    let run = bench_udp(
        addr,
        &[
            "-n",
            "1",
            "-p",
            "4",
            "-m",
            "12",
            "--timeout",
            "0.3",
            "--json",
        ],
    );
    stop.store(true, Ordering::Relaxed);
    let r = report(&run, 1);
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(count(&r, "messages"), 0, "{r}");
    assert_eq!(count(&r, "mismatches"), load(&peer.replies), "{r}");
    assert_eq!(r["errors"]["reply_mismatch"], r["mismatches"], "{r}");
    let example = r["error_examples"]["reply_mismatch"]
        .as_str()
        .unwrap_or_default();
    assert!(
        example.starts_with("expected \"Hello, abcde0x")
            && example.contains("!\", got \"Hello, abcde0x"),
        "{r}"
    );
    assert!(
        run.stderr.contains("first reply_mismatch: expected"),
        "{}",
        run.stderr
    );
}

#[test]
fn nothing_listening_is_one_clear_error_at_once() {
    let addr = {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a free port");
        socket.local_addr().unwrap()
    };
    // A run of an hour: it ends as soon as the sockets are refused, or the test fails.
    let run = bench_udp(addr, &["-n", "4", "-p", "16", "-d", "3600"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(
        run.stderr.trim(),
        format!(
            "tcp-hello: nothing listens on udp {addr} (ICMP port unreachable): is `tcp-hello \
             serve --udp-bind {addr}` running? Or give the server's address with --connect"
        ),
    );
    assert!(run.stdout.is_empty(), "{run:?}");
}

#[test]
fn flags_that_mean_nothing_over_udp_are_refused() {
    let refused: [&[&str]; 8] = [
        &["--tls"],
        &["--tls-ca", "ca.pem"],
        &["--tls-cert", "a.pem", "--tls-key", "a.key"],
        &["--tls-server-name", "a.test"],
        &["--tls-resume"],
        &["--connect-rate", "10"],
        &["--mode", "churn"],
        &["--every", "1"],
    ];
    for flags in refused {
        let mut args = vec!["--udp", "-m", "1"];
        args.extend_from_slice(flags);
        let run = run_tool(&mut hello_cmd("bench", &args), None, RUN_LIMIT);
        assert_eq!(run.code, Some(2), "{flags:?}: {run:?}");
        assert!(
            run.stderr
                .starts_with("error: the argument '--udp' cannot be used with")
                && run.stderr.contains(flags[0]),
            "{flags:?}: {}",
            run.stderr
        );
    }
    // Names that cannot be found in a reply are refused.
    let run = run_tool(
        &mut hello_cmd("bench", &["--udp", "--expect", "OK", "-m", "1"]),
        None,
        RUN_LIMIT,
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr
            .contains("--expect \"OK\" with --udp: replies are matched to their datagrams"),
        "{}",
        run.stderr
    );
}

#[test]
fn rate_sends_on_a_schedule() {
    let server = udp_server(&["--udp-rate", "0"]);
    let run = bench_udp(
        server.addr(),
        &["-n", "2", "-p", "16", "-d", "1", "--rate", "400", "--json"],
    );
    let r = report(&run, 0);
    assert_eq!(r["rate_target"], 400.0, "{r}");
    assert!(r["rate_reached"].as_f64().is_some(), "{r}");
    // At most what falls due in the second; a closed loop sends far more.
    let sent = count(&r, "sent");
    assert!(sent > 0 && sent <= 400, "{r}");
    assert_eq!(count(&r, "messages") + count(&r, "lost"), sent, "{r}");
}

#[test]
fn ctrl_c_ends_a_udp_run_early_with_a_report() {
    // At debug level the server logs each datagram: once one has come, the bench has
    // installed its Ctrl-C handler.
    let server = udp_server(&["-v", "--udp-rate", "0"]);
    let addr = server.addr().to_string();
    let running = Running::start(
        &mut hello_cmd(
            "bench",
            &[
                "--udp", "-c", &addr, "-n", "2", "--rate", "200", "-d", "50", "--json",
            ],
        ),
        None,
    );
    assert!(
        eventually(IO_TIMEOUT, || server
            .logs_so_far()
            .contains(" sent 8 bytes")),
        "no datagram came: {}",
        server.logs_so_far()
    );
    assert!(
        send_signal(running.pid(), "INT"),
        "kill -INT {}",
        running.pid()
    );
    let run = running.finish(RUN_LIMIT);
    let r = report(&run, 130);
    assert!(count(&r, "sent") > 0, "{r}");
    assert_eq!(count(&r, "errors_total"), 0, "{r}");
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
}

/// The README's UDP measurement: 4 sockets, 16 datagrams in flight each, 5 s against
/// a server without a rate limit. `cargo test --test it -- --ignored full_size_udp`
#[test]
#[ignore = "a full-size run: 5 s of load"]
fn full_size_udp_load_loses_nothing() {
    let server = udp_server(&["-q", "--udp-rate", "0"]);
    let run = bench_udp(server.addr(), &["-n", "4", "-p", "16", "-d", "5", "--json"]);
    let r = report(&run, 0);
    assert_eq!(count(&r, "lost"), 0, "{r}");
    assert_eq!(count(&r, "sent"), count(&r, "messages"), "{r}");
    eprintln!("{}", run.stderr);
}
