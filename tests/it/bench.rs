//! End-to-end tests of `tcp-hello bench` against a real `tcp-hello serve`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

use serde_json::Value;

/// Longest run of one bench command before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Runs `tcp-hello bench ARGS` to the end (at most `RUN_LIMIT`).
fn bench(args: &[&str]) -> Finished {
    run_tool(&mut hello_cmd("bench", args), None, RUN_LIMIT)
}

/// Runs `tcp-hello bench --connect <a fresh server> ARGS`.
fn bench_fresh_server(args: &[&str]) -> Finished {
    bench_against(&[], args)
}

/// Runs `tcp-hello bench --connect <a fresh server started with SERVER_ARGS> ARGS`.
fn bench_against(server_args: &[&str], args: &[&str]) -> Finished {
    let mut serve = vec!["-q"];
    serve.extend_from_slice(server_args);
    let server = Server::start(&serve);
    bench_server(&server, args)
}

/// Runs `tcp-hello bench --connect <server> ARGS`.
fn bench_server(server: &Server, args: &[&str]) -> Finished {
    let addr = server.addr().to_string();
    let mut all = vec!["--connect", addr.as_str()];
    all.extend_from_slice(args);
    bench(&all)
}

/// The JSON report of a run that should have succeeded.
fn report(run: &Finished) -> Value {
    report_with_status(run, 0)
}

/// The JSON report of a run that should have ended with exit status `code`.
fn report_with_status(run: &Finished, code: i32) -> Value {
    assert!(
        run.code == Some(code),
        "bench failed ({:?}): stdout {:?}, stderr {:?}",
        run.code,
        run.stdout,
        run.stderr
    );
    serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {:?}", run.stdout))
}

fn assert_clean(r: &Value, connections: u64) {
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["errors_total"], 0, "{r}");
    assert_eq!(r["errors"], serde_json::json!({}), "{r}");
    assert_eq!(r["mismatches"], 0, "{r}");
    assert_eq!(r["connections"], connections, "{r}");
    assert_eq!(r["established"], connections, "{r}");
    // No connection got more than its share of all the replies. (With --messages one
    // connection may get none: the others may take all of them.)
    let fewest = r["fewest_replies"]
        .as_u64()
        .unwrap_or_else(|| panic!("fewest_replies missing: {r}"));
    assert!(
        fewest * connections <= r["messages"].as_u64().unwrap_or(0),
        "{r}"
    );
    assert!(r["messages_per_s"].as_f64().is_some_and(|x| x > 0.0), "{r}");
    let lat = &r["latency_us"];
    let q: Vec<f64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|k| {
            lat[k]
                .as_f64()
                .unwrap_or_else(|| panic!("latency_us.{k} missing: {r}"))
        })
        .collect();
    assert!(q[0] > 0.0, "{r}");
    assert!(
        q.windows(2).all(|w| w[0] <= w[1]),
        "percentiles out of order: {r}"
    );
}

#[test]
fn messages_mode_verifies_every_reply() {
    let run = bench_fresh_server(&["--connections", "8", "--messages", "2000", "--json"]);
    let r = report(&run);
    assert_clean(&r, 8);
    assert_eq!(r["messages"], 2000, "{r}");
    assert_eq!(r["messages_target"], 2000, "{r}");
    assert_eq!(r["mode"], "pingpong", "{r}");
    assert_eq!(r["latency_us"]["count"], 2000, "{r}");
    // Every connection's connect and first reply, each its own distribution.
    for key in ["connect_us", "first_reply_us"] {
        assert_eq!(r[key]["count"], 8, "{key}: {r}");
        assert!(
            r[key]["p50"].as_f64().is_some_and(|x| x > 0.0),
            "{key}: {r}"
        );
    }
    for key in ["handshake_us", "rate_target", "rate_reached", "completed"] {
        assert!(r.get(key).is_none(), "{key}: {r}");
    }
    // With --json the human report goes to stderr.
    assert!(run.stderr.contains("msg/s"), "{}", run.stderr);
    assert!(
        run.stderr.contains("\n    first reply          8 "),
        "{}",
        run.stderr
    );
}

#[test]
fn pipelined_messages_are_all_verified() {
    let run = bench_fresh_server(&[
        "--connections",
        "8",
        "--messages",
        "20000",
        "--pipeline",
        "16",
        "--size",
        "24",
        "--json",
    ]);
    let r = report(&run);
    assert_clean(&r, 8);
    assert_eq!(r["messages"], 20000, "{r}");
    assert_eq!(r["pipeline"], 16, "{r}");
}

/// One connection on one thread is counted in the singular.
#[test]
fn the_report_counts_one_connection_and_one_thread_in_the_singular() {
    let run = bench_fresh_server(&["-n", "1", "-m", "3"]);
    assert!(run.code == Some(0), "{:?}: {}", run.code, run.stderr);
    assert!(
        run.stdout
            .contains("1 connection (1 established), 1 thread,"),
        "{}",
        run.stdout
    );
}

#[test]
fn duration_mode_prints_a_human_report() {
    let run = bench_fresh_server(&["-n", "4", "--duration", "1"]);
    assert!(run.code == Some(0), "{:?}: {}", run.code, run.stderr);
    assert!(run.stdout.contains("msg/s"), "{}", run.stdout);
    assert!(
        run.stdout.contains("4 connections (4 established)"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("errors      none"), "{}", run.stdout);
    // For a second, every connection is answered: the report says how often at least.
    let fewest: u64 = run
        .stdout
        .split(", at least ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.replace(',', "").parse().ok())
        .unwrap_or_else(|| panic!("no `at least N a connection`: {}", run.stdout));
    assert!(fewest >= 1, "{}", run.stdout);
}

#[test]
fn wrong_replies_are_counted_as_mismatches() {
    let run = bench_fresh_server(&[
        "-n",
        "2",
        "--messages",
        "100",
        "--expect",
        "Hi, {}!",
        "--json",
    ]);
    assert!(
        run.code != Some(0),
        "mismatches must fail the run: {}",
        run.stdout
    );
    let r: Value = serde_json::from_str(run.stdout.trim()).expect("one JSON object on stdout");
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["mismatches"], 100, "{r}");
    assert_eq!(r["errors"]["reply_mismatch"], 100, "{r}");
    assert_eq!(r["messages"], 0, "{r}");
    // The run lasted, even with no good reply to time it by.
    assert!(r["elapsed_s"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
    let example = r["error_examples"]["reply_mismatch"]
        .as_str()
        .unwrap_or_default();
    assert!(example.contains("expected \"Hi, "), "{r}");
}

#[test]
fn closed_port_names_the_cause_and_the_fix() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        listener.local_addr().expect("local addr").to_string()
    };
    let run = bench(&[
        "--connect",
        &addr,
        "-n",
        "4",
        "--messages",
        "10",
        "--timeout",
        "2",
    ]);
    assert!(run.code != Some(0), "stdout {:?}", run.stdout);
    assert!(
        run.stderr
            .contains(&format!("is tcp-hello serve running on {addr}?")),
        "{}",
        run.stderr
    );
}

#[test]
fn ctrl_c_ends_the_run_early_with_a_report() {
    // Logging at info, so the test can see the bench's connections arrive: by then the
    // bench has installed its Ctrl-C handler.
    let server = Server::start(&["-v"]);
    let running = bench_connected(&server, "50");
    let pid = running.pid();
    assert!(send_signal(pid, "INT"), "kill -INT {pid}");
    let run = running.finish(RUN_LIMIT);
    assert!(
        run.elapsed < Duration::from_secs(40),
        "not interrupted: {:?}",
        run.elapsed
    );
    // 130, as a shell reports an interrupted command: the run did not finish.
    let r = report_with_status(&run, 130);
    assert_eq!(r["errors_total"], 0, "{r}");
    assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
}

/// A server that shuts down mid-run says so to each connection, then closes: one
/// `server_shutdown` per connection, not a stray line and an EOF each.
#[test]
fn a_server_shutting_down_counts_once_per_connection() {
    let server = Server::start(&["-v"]);
    let running = bench_connected(&server, "50");
    server.signal("TERM");
    let run = running.finish(RUN_LIMIT);
    let r = report_with_status(&run, 1);
    assert_eq!(r["errors"]["server_shutdown"], 4, "{r}");
    assert_eq!(r["errors_total"], 4, "{r}");
}

/// Starts `bench -n 4 --duration DURATION --json` against `server` and returns once the
/// server has logged its 4 connections (by then the bench has its Ctrl-C handler).
fn bench_connected(server: &Server, duration: &str) -> Running {
    let started = std::time::Instant::now();
    let addr = server.addr().to_string();
    let mut cmd = hello_cmd(
        "bench",
        &[
            "--connect",
            &addr,
            "-n",
            "4",
            "--duration",
            duration,
            "--json",
        ],
    );
    let running = Running::start(&mut cmd, None);
    let mut seen = false;
    while !seen && started.elapsed() < RUN_LIMIT {
        // Opens are logged at debug (the servers here run with -v).
        seen = server.logs_so_far().matches(" open: ").count() >= 4;
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen, "the bench never connected");
    running
}

/// A duration past what the clock can hold runs until Ctrl-C instead of panicking.
#[test]
fn a_huge_duration_runs_until_ctrl_c() {
    let server = Server::start(&["-v"]);
    let running = bench_connected(&server, "1e19");
    let pid = running.pid();
    assert!(send_signal(pid, "INT"), "kill -INT {pid}");
    let run = running.finish(RUN_LIMIT);
    let r = report_with_status(&run, 130);
    assert_eq!(r["errors_total"], 0, "{r}");
}

/// The server's `ERROR line too long` answers a name: counted as `name_too_long` with the
/// server's line and the fix, not as a mismatch.
#[test]
fn a_name_longer_than_the_servers_max_line_is_name_too_long() {
    let server = Server::start(&["-q", "--max-line", "4"]);
    let run = bench_server(
        &server,
        &["-n", "2", "--messages", "10", "-s", "8", "--json"],
    );
    let r = report_with_status(&run, 1);
    assert_eq!(r["errors"], serde_json::json!({"name_too_long": 10}), "{r}");
    assert_eq!(r["mismatches"], 0, "{r}");
    assert_eq!(r["messages"], 0, "{r}");
    let example = r["error_examples"]["name_too_long"]
        .as_str()
        .unwrap_or_default();
    assert!(
        example.contains("\"ERROR line too long (max 4 bytes), skipped\" for the 8-byte name"),
        "{r}"
    );
    assert!(
        run.stderr
            .contains("; lower --size or raise the server's --max-line"),
        "{}",
        run.stderr
    );
    // A name of exactly --max-line bytes is answered.
    let run = bench_server(
        &server,
        &["-n", "2", "--messages", "10", "-s", "4", "--json"],
    );
    assert_clean(&report(&run), 2);
}

/// A connection refused at either of the server's limits says which limit.
#[test]
fn refusals_name_the_servers_limit() {
    for (server_args, kind) in [
        (["--max-connections", "1"], "server_busy"),
        (["--max-per-source", "1"], "per_source_limit"),
    ] {
        let run = bench_against(&server_args, &["-n", "2", "--messages", "10", "--json"]);
        let r = report_with_status(&run, 1);
        assert_eq!(r["errors"], serde_json::json!({kind: 1}), "{r}");
        assert_eq!(r["established"], 1, "{r}");
        assert_eq!(r["messages"], 10, "{r}");
        let example = r["error_examples"][kind].as_str().unwrap_or_default();
        assert!(example.contains("instead of the welcome"), "{r}");
    }
}

/// A connection the server closes as idle while the others connect counts once, as
/// `idle_closed`, not as an unexpected line and an EOF.
#[test]
fn a_connection_closed_as_idle_is_idle_closed() {
    // One connection a second: the first waits at least 3 s for the fourth, three times
    // the server's idle timeout.
    let run = bench_against(
        &["--idle-timeout", "1"],
        &[
            "-n",
            "4",
            "--connect-rate",
            "1",
            "--messages",
            "20",
            "--json",
        ],
    );
    let r = report_with_status(&run, 1);
    let idle = r["errors"]["idle_closed"].as_u64().unwrap_or(0);
    assert!(idle >= 1, "{r}");
    assert_eq!(r["errors_total"], idle, "{r}");
    let example = r["error_examples"]["idle_closed"]
        .as_str()
        .unwrap_or_default();
    assert!(example.contains("\"ERROR idle for 1 s, closing\""), "{r}");
}

/// A reply longer than anything `--expect` allows, with no end in sight, is
/// `reply_too_long`.
#[test]
fn an_endless_reply_is_reply_too_long() {
    let long_reply = format!("{}{{}}", "x".repeat(5000));
    let run = bench_against(
        &["--reply", &long_reply],
        &["-n", "1", "--messages", "1", "--json"],
    );
    let r = report_with_status(&run, 1);
    assert_eq!(r["errors"], serde_json::json!({"reply_too_long": 1}), "{r}");
    let example = r["error_examples"]["reply_too_long"]
        .as_str()
        .unwrap_or_default();
    assert!(
        example.contains("no line end in the first 4096 bytes of a reply"),
        "{r}"
    );
}

/// Timeouts and rates past what the clock holds are taken as "no limit", not a panic.
#[test]
fn huge_timeouts_and_connect_rates_run_normally() {
    let run = bench_fresh_server(&[
        "-n",
        "2",
        "--messages",
        "100",
        "--timeout",
        "1e300",
        "--connect-rate",
        "18446744073709551615",
        "--json",
    ]);
    assert_clean(&report(&run), 2);
}

/// A duration that cannot be one, or more connections than there are ports, is refused
/// before anything starts, in one line that names the flag and gives a valid value.
#[test]
fn impossible_values_are_refused_with_an_example() {
    for (args, message) in [
        (
            &["-n", "18446744073709551615"][..],
            "tcp-hello: --connections 18446744073709551615 is more than one address can open \
             to one server (at most 65535, one per local port): e.g. --connections 10000, or \
             more addresses with --source\n",
        ),
        (
            &["--timeout=-1"],
            "tcp-hello: --timeout must be a number of seconds above 0, not -1: e.g. --timeout 5\n",
        ),
        (
            &["--duration", "1e-300"],
            "tcp-hello: --duration 1e-300 is less than a nanosecond: give seconds, e.g. \
             --duration 10\n",
        ),
    ] {
        let mut all = vec!["--connect", "127.0.0.1:1"];
        all.extend_from_slice(args);
        let run = bench(&all);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr, message, "{args:?}");
        assert_eq!(run.stdout, "", "{args:?}");
    }
}

/// `--source`: connection i comes from address i mod N of the range, and none from the
/// address the kernel would have picked.
#[test]
fn connections_come_from_every_source_address_in_turn() {
    let server = Server::start(&["-v"]);
    let run = bench_server(
        &server,
        &[
            "--source",
            "127.0.0.2-127.0.0.4",
            "-n",
            "6",
            "--messages",
            "60",
            "--json",
        ],
    );
    assert_clean(&report(&run), 6);
    // Stopping the server waits for it to exit: every line it logged is in.
    let logs = server.stop_and_logs();
    let mut peers: Vec<String> = logs
        .lines()
        .filter_map(|l| l.split_once(" open: "))
        .map(|(_, peer)| {
            let addr: std::net::SocketAddr = peer.trim().parse().expect("PEER is IP:PORT");
            addr.ip().to_string()
        })
        .collect();
    peers.sort();
    assert_eq!(
        peers,
        [
            "127.0.0.2",
            "127.0.0.2",
            "127.0.0.3",
            "127.0.0.3",
            "127.0.0.4",
            "127.0.0.4"
        ],
        "{logs}"
    );
}

/// A reversed, mixed or oversized range is a usage error that names the value; so is an
/// address this machine does not have, with the fix.
#[test]
fn bad_source_addresses_are_usage_errors_naming_the_value() {
    for (source, says) in [
        ("127.0.0.4-127.0.0.2", "is reversed"),
        ("127.0.0.1-::1", "mixes IPv4 and IPv6"),
        ("10.0.0.0-10.2.0.0", "makes more than 65536 addresses"),
    ] {
        let run = bench(&["--connect", "127.0.0.1:1", "--source", source]);
        assert_eq!(run.code, Some(2), "{source}: {}", run.stderr);
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(
            first.contains(&format!(
                "invalid value '{source}' for '--source <ADDRS>': "
            )),
            "{source}: {}",
            run.stderr
        );
        assert!(first.contains(says), "{source}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{source}");
    }
    // From the environment, the error names the variable.
    let mut cmd = hello_cmd("bench", &["--connect", "127.0.0.1:1"]);
    cmd.env("TCP_HELLO_SOURCE", "127.0.0.9-127.0.0.1");
    let run = run_tool(&mut cmd, None, RUN_LIMIT);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("invalid value '127.0.0.9-127.0.0.1' for TCP_HELLO_SOURCE (for --source)"),
        "{}",
        run.stderr
    );
    // TEST-NET-3 (RFC 5737) is on no machine's interface.
    let run = bench(&["--connect", "127.0.0.1:1", "--source", "203.0.113.7"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.starts_with(
            "tcp-hello: cannot bind to --source address 203.0.113.7: Cannot assign requested \
             address (os error 99); 203.0.113.7 is not an address of this machine: assign it"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
}

/// `--hgrm FILE`: the latencies in HdrHistogram's percentile-distribution format, as wrk2
/// prints it, counting every reply the report counts.
#[test]
fn hgrm_writes_the_percentile_distribution() {
    let dir = temp_dir("hgrm");
    let path = dir.path().join("latency.hgrm");
    let path_arg = path.to_string_lossy().into_owned();
    // An existing file is replaced.
    std::fs::write(&path, "stale\n".repeat(10_000)).expect("write a stale file");
    let run = bench_fresh_server(&[
        "-n",
        "4",
        "--messages",
        "3000",
        "-p",
        "2",
        "--json",
        "--hgrm",
        &path_arg,
    ]);
    let r = report(&run);
    assert_clean(&r, 4);
    let text = std::fs::read_to_string(&path).expect("read the .hgrm file");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0], "       Value   Percentile   TotalCount 1/(1-Percentile)",
        "{text}"
    );
    assert_eq!(lines[1], "", "{text}");
    let rows: Vec<Vec<&str>> = lines[2..]
        .iter()
        .take_while(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(rows.len() >= 2, "{text}");
    assert!(rows.iter().all(|r| r.len() == 4), "{text}");
    let number = |s: &str| -> f64 { s.parse().unwrap_or_else(|_| panic!("{s:?}: {text}")) };
    let values: Vec<f64> = rows.iter().map(|r| number(r[0])).collect();
    let percentiles: Vec<f64> = rows.iter().map(|r| number(r[1])).collect();
    let counts: Vec<f64> = rows.iter().map(|r| number(r[2])).collect();
    assert!(*values.last().unwrap() > 0.0, "{text}");
    for column in [&values, &percentiles, &counts] {
        assert!(column.windows(2).all(|w| w[0] <= w[1]), "{text}");
    }
    assert_eq!(percentiles[0], 0.0, "{text}");
    assert_eq!(*percentiles.last().unwrap(), 1.0, "{text}");
    let last = rows.last().unwrap();
    assert_eq!(last[3], "inf", "{text}");
    let messages = r["messages"].as_u64().expect("messages");
    assert_eq!(messages, 3000, "{r}");
    assert_eq!(last[2], messages.to_string(), "{text}");
    // The footer, as HdrHistogram prints it.
    let footer = &lines[2 + rows.len()..];
    assert_eq!(footer.len(), 3, "{text}");
    assert!(footer[0].starts_with("#[Mean    = "), "{text}");
    assert!(footer[0].contains(", StdDeviation   = "), "{text}");
    assert!(footer[1].starts_with("#[Max     = "), "{text}");
    assert!(
        footer[1].ends_with(&format!(", Total count    = {messages:>12}]")),
        "{text}"
    );
    let max = number(
        footer[1]["#[Max     = ".len()..]
            .split(',')
            .next()
            .unwrap()
            .trim(),
    );
    assert_eq!(max, *values.last().unwrap(), "{text}");
    assert_eq!(
        footer[2], "#[Buckets =           32, SubBuckets     =         2048]",
        "{text}"
    );
    // The report's max, in µs, is the file's, in ms.
    let report_max = r["latency_us"]["max"].as_f64().expect("max");
    assert!((report_max / 1000.0 - max).abs() < 0.001, "{r}\n{text}");
    // The setup phases beside it, named before the extension; no handshakes without TLS.
    for phase in ["connect", "first_reply"] {
        let path = dir.path().join(format!("latency.{phase}.hgrm"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        assert!(
            text.contains(&format!(", Total count    = {:>12}]", 4)),
            "{phase}: {text}"
        );
        // The report's max, in µs, is the file's, in ms.
        let file_max = text
            .lines()
            .find_map(|l| l.strip_prefix("#[Max     = "))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{phase}: no max: {text}"));
        let max = r[format!("{phase}_us")]["max"].as_f64().expect("max");
        assert!(
            (max / 1000.0 - file_max).abs() < 0.001,
            "{phase}: {r}\n{text}"
        );
    }
    assert!(!dir.path().join("latency.handshake.hgrm").exists());
}

/// A `--hgrm` file that cannot be written stops the bench before it connects, naming it.
#[test]
fn an_unwritable_hgrm_file_fails_at_start_up() {
    let dir = temp_dir("hgrm-bad");
    let path = dir.path().join("no-such-dir").join("latency.hgrm");
    let path_arg = path.to_string_lossy().into_owned();
    // Nothing listens there: had the run started, it would say the connection was refused.
    let run = bench(&["--connect", "127.0.0.1:1", "--hgrm", &path_arg]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert_eq!(
        run.stderr,
        format!(
            "tcp-hello: --hgrm {path_arg}: cannot write to it: No such file or directory (os \
             error 2); check the path and its permissions\n"
        )
    );
    assert!(!path.exists());
}

/// What a greeting server written in the test does with a name (see [`Fixture`]).
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Answers it, except during one second in every two (counted from the fixture's
    /// start), when it holds the reply until that second ends.
    Stall,
    /// Closes the connection without an answer.
    CloseBeforeReply,
}

/// A greeting server in the test, a thread per connection: the welcome, then each name
/// as `behaviour` says; `exit` is answered with `Bye!` and a close. It stops accepting
/// when dropped.
struct Fixture {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Fixture {
    fn start(behaviour: Behaviour) -> Fixture {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a port");
        let addr = listener.local_addr().expect("local addr");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let t0 = Instant::now();
        let accept = thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                thread::spawn(move || serve_one(stream, behaviour, t0));
            }
        });
        Fixture {
            addr,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept; the loop then sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// One connection of a [`Fixture`]; any I/O error or timeout ends it.
fn serve_one(stream: TcpStream, behaviour: Behaviour, t0: Instant) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let mut writer = stream;
    if writer.write_all(b"Welcome!\r\n").is_err() {
        return;
    }
    for line in BufReader::new(reader).lines() {
        let Ok(line) = line else { return };
        let name = line.trim_end_matches('\r');
        if name == "exit" {
            let _ = writer.write_all(b"Bye!\r\n");
            return;
        }
        match behaviour {
            Behaviour::CloseBeforeReply => return,
            Behaviour::Stall => {
                let since = t0.elapsed();
                if since.as_secs() % 2 == 1 {
                    // The stall: the reply waits for the second to end.
                    thread::sleep(Duration::from_secs(since.as_secs() + 1) - since);
                }
            }
        }
        if writer
            .write_all(format!("Hello, {name}!\r\n").as_bytes())
            .is_err()
        {
            return;
        }
    }
}

/// `bench --connect ADDR ARGS`.
fn bench_at(addr: SocketAddr, args: &[&str]) -> Finished {
    let addr = addr.to_string();
    let mut all = vec!["--connect", addr.as_str()];
    all.extend_from_slice(args);
    bench(&all)
}

/// `--rate`: the names go out at the rate asked for, and the report says so.
#[test]
fn a_modest_rate_is_reached() {
    let run = bench_fresh_server(&["-n", "8", "-d", "2", "--rate", "2000", "--json"]);
    let r = report(&run);
    assert_clean(&r, 8);
    assert_eq!(r["rate_target"], 2000.0, "{r}");
    let reached = r["rate_reached"].as_f64().expect("rate_reached");
    assert!((1600.0..=2200.0).contains(&reached), "{r}");
    // Sent on the schedule, so no more than it holds: 2 s at 2,000 a second.
    let messages = r["messages"].as_u64().expect("messages");
    assert!((3200..=4000).contains(&messages), "{r}");
    assert!(
        run.stderr
            .contains("  rate        target 2,000 msg/s, reached "),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("; from due times)"), "{}", run.stderr);
}

/// A server that stalls for one second in every two: with --rate, the names that fell due
/// during a stall are timed from when they were due, so the stall shows in the
/// percentiles; the closed loop, which sends nothing while it waits, hides it.
#[test]
fn a_stalling_server_shows_in_the_latency_with_a_rate() {
    let fixture = Fixture::start(Behaviour::Stall);
    // Any 3 s hold at least one whole stall.
    let run = bench_at(
        fixture.addr,
        &["-n", "4", "-d", "3", "--rate", "200", "--json"],
    );
    let paced = report(&run);
    assert_eq!(paced["errors_total"], 0, "{paced}");
    let p99 = paced["latency_us"]["p99"].as_f64().expect("p99");
    assert!(p99 >= 500_000.0, "the stall is hidden: {paced}");
    // The names due in the first three quarters of a stall, a quarter of all or more,
    // waited a quarter of a second or more; timed from when they went out, they would not
    // have.
    let p90 = paced["latency_us"]["p90"].as_f64().expect("p90");
    assert!(p90 >= 250_000.0, "{paced}");

    let run = bench_at(fixture.addr, &["-n", "4", "-d", "2", "--json"]);
    let closed = report(&run);
    assert_eq!(closed["errors_total"], 0, "{closed}");
    let p50 = closed["latency_us"]["p50"].as_f64().expect("p50");
    assert!(p50 < 100_000.0, "{closed}");
}

/// A rate a server cannot keep up with (one connection, 50 ms a reply): the report says
/// it fell short, and by how much.
#[test]
fn a_rate_the_server_cannot_keep_up_with_is_reported_short() {
    let run = bench_against(
        &["--delay", "50"],
        &["-n", "1", "-d", "1", "--rate", "1000", "--json"],
    );
    let r = report(&run);
    let reached = r["rate_reached"].as_f64().expect("rate_reached");
    assert!(reached < 500.0, "{r}");
    // The names that could not go by the end are not sent after it.
    assert!(r["elapsed_s"].as_f64().unwrap_or(f64::MAX) < 5.0, "{r}");
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("  rate        "))
        .unwrap_or_else(|| panic!("no rate line: {}", run.stderr));
    let short: f64 = line
        .split(": ")
        .nth(1)
        .and_then(|rest| rest.split('%').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no shortfall: {line}"));
    let expected = (1.0 - reached / 1000.0) * 100.0;
    assert!((short - expected).abs() < 0.2, "{line} vs {r}");
    assert!(
        line.ends_with("% short; the server or this machine could not keep up"),
        "{line}"
    );
}

/// Churn: every connection goes through connect, welcome, one name, its reply, exit and
/// the server's close; --messages counts connections.
#[test]
fn churn_completes_every_connection() {
    let server = Server::start(&["-q"]);
    let run = bench_server(
        &server,
        &["--mode", "churn", "-n", "4", "-m", "200", "--json"],
    );
    let r = report(&run);
    assert_eq!(r["mode"], "churn", "{r}");
    assert_eq!(r["errors_total"], 0, "{r}");
    assert_eq!(r["completed"], 200, "{r}");
    assert_eq!(r["messages"], 200, "{r}");
    assert_eq!(r["established"], 200, "{r}");
    for key in ["latency_us", "connect_us", "first_reply_us"] {
        assert_eq!(r[key]["count"], 200, "{key}: {r}");
    }
    assert!(r.get("handshake_us").is_none(), "{r}");
    assert!(
        run.stderr.contains("  connections 200 completed in ")
            && run.stderr.contains("connections/s, 200 messages\n"),
        "{}",
        run.stderr
    );

    let run = bench_server(
        &server,
        &["--mode", "churn", "-n", "2", "-d", "0.5", "--json"],
    );
    let r = report(&run);
    assert_eq!(r["errors_total"], 0, "{r}");
    assert!(r["completed"].as_u64().is_some_and(|n| n > 0), "{r}");
    assert!(
        r["completed_per_s"].as_f64().is_some_and(|x| x > 0.0),
        "{r}"
    );
    assert_eq!(r["completed"], r["messages"], "{r}");
}

/// Churn with --rate: that many new connections a second, and no more.
#[test]
fn churn_with_a_rate_opens_connections_on_schedule() {
    let run = bench_fresh_server(&[
        "--mode", "churn", "-n", "2", "-d", "1", "--rate", "20", "--json",
    ]);
    let r = report(&run);
    assert_eq!(r["errors_total"], 0, "{r}");
    // 20 are due within the second; one whose slot is still busy with the last at the
    // end (a slow machine) does not begin.
    let completed = r["completed"].as_u64().unwrap_or(0);
    assert!((15..=20).contains(&completed), "{r}");
    assert_eq!(r["rate_target"], 20.0, "{r}");
}

/// A churn connection the server closes before the reply counts as that failure, and the
/// slot goes on to its next connection.
#[test]
fn churn_counts_a_close_before_the_reply() {
    let fixture = Fixture::start(Behaviour::CloseBeforeReply);
    let run = bench_at(
        fixture.addr,
        &["--mode", "churn", "-n", "2", "-m", "10", "--json"],
    );
    let r = report_with_status(&run, 1);
    assert_eq!(r["errors"], serde_json::json!({"eof": 10}), "{r}");
    assert_eq!(r["completed"], 0, "{r}");
    assert_eq!(r["established"], 10, "{r}");
}

/// Hold: every connection sends one name every --every seconds for the whole duration,
/// the first ones spread over the first interval.
#[test]
fn hold_sends_one_name_every_interval() {
    let run = bench_fresh_server(&[
        "--mode", "hold", "-n", "20", "--every", "0.2", "-d", "1", "--json",
    ]);
    let r = report(&run);
    assert_clean(&r, 20);
    assert_eq!(r["mode"], "hold", "{r}");
    assert_eq!(r["every_s"], 0.2, "{r}");
    assert_eq!(r["rate_target"], 100.0, "{r}");
    // Five names a connection are due within the second, and no more; one whose
    // connection still awaits the last reply at the end (a slow machine) does not go.
    let messages = r["messages"].as_u64().unwrap_or(0);
    assert!((90..=100).contains(&messages), "{r}");
    assert!(
        run.stderr.starts_with(&format!(
            "bench {}: 20 connections held for 1 s, every 0.2 s (20 established)",
            r["addr"].as_str().unwrap_or_default()
        )),
        "{}",
        run.stderr
    );
}

/// Held connections against a server that stalls one second in every two: their names
/// are timed from when they were due, so the stall shows, as with --rate.
#[test]
fn hold_against_a_stalling_server_shows_the_stall() {
    let fixture = Fixture::start(Behaviour::Stall);
    let run = bench_at(
        fixture.addr,
        &[
            "--mode", "hold", "-n", "10", "--every", "0.05", "-d", "3", "--json",
        ],
    );
    let r = report(&run);
    assert_eq!(r["errors_total"], 0, "{r}");
    let p99 = r["latency_us"]["p99"].as_f64().expect("p99");
    assert!(p99 >= 500_000.0, "the stall is hidden: {r}");
    // Timed from when they went out, only the names in flight as a stall began would have
    // waited; timed from when they were due, every name due in a stall's first three
    // quarters waited a quarter of a second or more.
    let p90 = r["latency_us"]["p90"].as_f64().expect("p90");
    assert!(p90 >= 250_000.0, "{r}");
}

/// The flags of one mode are refused in another, and a rate or an interval that is no
/// number above 0 is refused, in one line naming the flag.
#[test]
fn mode_flags_are_refused_where_they_mean_nothing() {
    for (args, message) in [
        (
            &["--every", "1"][..],
            "--every is for --mode hold: add --mode hold, or drop --every",
        ),
        (
            &["--mode", "hold", "--rate", "10"],
            "--rate is not for --mode hold, whose rate is --connections / --every: drop --rate",
        ),
        (
            &["--mode", "hold", "--every", "0"],
            "--every must be a number of seconds above 0, not 0: e.g. --every 1",
        ),
        (
            &["--rate", "0"],
            "--rate must be a number per second above 0, not 0: e.g. --rate 1000",
        ),
        (
            &["--rate", "-1"],
            "--rate must be a number per second above 0, not -1: e.g. --rate 1000",
        ),
        (
            &["--rate", "nan"],
            "--rate must be a number per second above 0, not NaN: e.g. --rate 1000",
        ),
        (
            &["--mode", "churn", "-p", "4"],
            "--pipeline is not for --mode churn, which sends one name a connection: drop \
             --pipeline",
        ),
    ] {
        let mut all = vec!["--connect", "127.0.0.1:1"];
        all.extend_from_slice(args);
        let run = bench(&all);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr, format!("tcp-hello: {message}\n"), "{args:?}");
        assert_eq!(run.stdout, "", "{args:?}");
    }
    let run = bench(&["--connect", "127.0.0.1:1", "--mode", "sometimes"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("invalid value 'sometimes' for '--mode <MODE>'")
            && run
                .stderr
                .contains("[possible values: pingpong, churn, hold]"),
        "{}",
        run.stderr
    );
}
