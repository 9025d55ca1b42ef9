//! What tcp-hello guarantees under load, faults and hostile input, each promise a test
//! (README, "What we guarantee, and how we test it").
//!
//! `cargo test` runs every load test at a reduced size; the full sizes of the issue run with
//! `cargo test --release --test it reliability:: -- --ignored --nocapture --test-threads 1`.
//! Each test prints what it measured (connections, memory, lines, cycles).

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use tcp_hello::limits::tasks_of;

/// CPU seconds the process has used (user + system), from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

// ---------------------------------------------------------------- load

fn hold(n: usize) {
    let _fds = raise_fd_limit(n as u64 + 200);
    let limit = (n + 100).to_string();
    let server = Server::start(&["-q", "--max-connections", &limit]);
    let idle_rss = server.proc_status("VmRSS");
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = Lean::open(server.addr()).unwrap_or_else(|e| panic!("connect {i}: {e}"));
        assert_eq!(c.line().unwrap(), "Welcome!\r\n", "connection {i}");
        conns.push(c);
    }
    for round in 0..2 {
        for (i, c) in conns.iter_mut().enumerate() {
            c.send(&format!("n{i}r{round}\n")).unwrap();
        }
        for (i, c) in conns.iter_mut().enumerate() {
            assert_eq!(c.line().unwrap(), format!("Hello, n{i}r{round}!\r\n"));
        }
    }
    let rss = server.proc_status("VmRSS");
    let threads = server.proc_status("Threads") as usize;
    let fds = server.fd_count();
    let per_conn = (rss - idle_rss) as f64 / n as f64;
    eprintln!(
        "hold: {n} connections answered twice; server RSS {rss} kB ({idle_rss} kB idle), \
         {per_conn:.2} KiB per connection, {:.2} KiB per connection all included; \
         {threads} threads, {fds} fds",
        rss as f64 / n as f64
    );
    assert!(threads > n, "one thread per connection");
    assert!(
        fds < n + 16,
        "one file descriptor per connection, not {fds} for {n}"
    );
    // In a release build (the README's figure), a held connection costs the two stack
    // pages its thread touches and a little heap; a third page, touched by a frame
    // grown on the serving path, shows here. In a debug build frames are larger and
    // only a loose bound holds, which still catches an idle connection keeping a large
    // buffer.
    let bound = if cfg!(debug_assertions) { 48.0 } else { 10.5 };
    assert!(
        per_conn < bound,
        "memory per held connection: {per_conn:.2} KiB (at most {bound} KiB)"
    );
}

#[test]
fn hold_1000_connections() {
    hold(1000);
}

#[test]
#[ignore = "full size: cargo test --release --test it reliability:: -- --ignored"]
fn hold_10000_connections() {
    hold(10_000);
}

fn pipeline(conns: usize, lines: usize) {
    let _fds = raise_fd_limit(2 * conns as u64 + 200);
    let server = Server::start(&["-q"]);
    let started = Instant::now();
    thread::scope(|scope| {
        for c in 0..conns {
            let addr = server.addr();
            scope.spawn(move || {
                let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
                stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
                let writer = stream.try_clone().unwrap();
                let sender = thread::spawn(move || {
                    let mut out = BufWriter::with_capacity(64 * 1024, writer);
                    for i in 0..lines {
                        writeln!(out, "c{c}-{i}").unwrap();
                    }
                    out.flush().unwrap();
                });
                let mut reader = BufReader::with_capacity(64 * 1024, stream);
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                assert_eq!(line, "Welcome!\r\n");
                for i in 0..lines {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    let want = format!("Hello, c{c}-{i}!\r\n");
                    assert_eq!(line, want, "connection {c}, line {i}");
                }
                sender.join().unwrap();
                reader.get_ref().write_all(b"exit\n").unwrap();
                let mut rest = Vec::new();
                reader.read_to_end(&mut rest).unwrap();
                assert_eq!(rest, b"Bye!\r\n");
            });
        }
    });
    eprintln!(
        "pipeline: {} lines over {conns} connections, every reply in order and byte-exact, {:.2} s",
        conns * lines,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn pipeline_100k_lines_one_connection() {
    pipeline(1, 100_000);
}

#[test]
fn pipeline_100k_lines_100_connections() {
    pipeline(100, 1_000);
}

#[test]
#[ignore = "full size: cargo test --release --test it reliability:: -- --ignored"]
fn pipeline_1m_lines_one_connection() {
    pipeline(1, 1_000_000);
}

#[test]
#[ignore = "full size: cargo test --release --test it reliability:: -- --ignored"]
fn pipeline_1m_lines_100_connections() {
    pipeline(100, 10_000);
}

fn cycle(addr: SocketAddr, name: &str) -> std::io::Result<()> {
    let mut c = Lean::open(addr)?;
    let welcome = c.line()?;
    c.send(&format!("{name}\nexit\n"))?;
    let rest = c.rest()?;
    let want = format!("Hello, {name}!\r\nBye!\r\n");
    if welcome != "Welcome!\r\n" || rest != want.as_bytes() {
        return Err(std::io::Error::other(format!(
            "got {welcome:?} then {:?}",
            String::from_utf8_lossy(&rest)
        )));
    }
    Ok(())
}

fn cycles(total: usize, par: usize) {
    // Thread counts show connections freed: no thread may park for the next one.
    let server = Server::start(&["-q", "--thread-cache", "0"]);
    let idle_threads = server.proc_status("Threads");
    let idle_fds = server.fd_count();
    let started = Instant::now();
    let failures: Vec<String> = thread::scope(|scope| {
        let workers: Vec<_> = (0..par)
            .map(|w| {
                let addr = server.addr();
                scope.spawn(move || {
                    (0..total / par)
                        .filter_map(|i| cycle(addr, &format!("w{w}i{i}")).err())
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        failures.is_empty(),
        "{} of {total} cycles failed, first: {}",
        failures.len(),
        failures[0]
    );
    let back = eventually(Duration::from_secs(10), || {
        server.proc_status("Threads") == idle_threads && server.fd_count() == idle_fds
    });
    let (threads, fds) = (server.proc_status("Threads"), server.fd_count());
    eprintln!(
        "cycles: {total} connect/name/exit cycles ({par} at a time) in {elapsed:.2} s, 0 failures; \
         threads {idle_threads} -> {threads}, fds {idle_fds} -> {fds}"
    );
    assert!(
        back,
        "leak: threads {idle_threads} -> {threads}, fds {idle_fds} -> {fds}"
    );
}

#[test]
fn cycles_5000_leave_no_threads_or_fds_behind() {
    cycles(5_000, 4);
}

#[test]
#[ignore = "full size: cargo test --release --test it reliability:: -- --ignored"]
fn cycles_100000_leave_no_threads_or_fds_behind() {
    cycles(100_000, 8);
}

// ---------------------------------------------------------------- faults

#[test]
fn resets_half_closes_silent_and_unread_clients_are_freed_while_others_are_served() {
    // Thread counts show connections freed: no thread may park for the next one.
    let server = Server::start(&[
        "-q",
        "--idle-timeout",
        "1",
        "--write-timeout",
        "1",
        "--thread-cache",
        "0",
    ]);
    let idle_threads = server.proc_status("Threads");

    // Reset in the middle of a line.
    let mut reset = Lean::open(server.addr()).unwrap();
    reset.line().unwrap();
    reset.send("half a li").unwrap();
    socket2::SockRef::from(&reset.stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(reset);

    // Half-close with a last line.
    let mut half = Lean::open(server.addr()).unwrap();
    half.line().unwrap();
    half.send("Ann").unwrap();
    half.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(half.rest().unwrap(), b"Hello, Ann!\r\n");

    // Silent, like a client that vanished without FIN: freed by the idle timeout.
    let mut silent = Lean::open(server.addr()).unwrap();
    silent.line().unwrap();

    // Never reads: 8 MB of names, no reads; freed by the write timeout.
    let deaf = Lean::open(server.addr()).unwrap();
    let deaf_stream = deaf.stream.try_clone().unwrap();
    let flood = thread::spawn(move || {
        let chunk = "name\n".repeat(100_000);
        let mut s = deaf_stream;
        for _ in 0..16 {
            if s.write_all(chunk.as_bytes()).is_err() {
                return;
            }
        }
    });

    // Everyone else is served meanwhile.
    for i in 0..20 {
        cycle(server.addr(), &format!("other{i}")).unwrap();
    }
    assert_eq!(
        silent.line().unwrap(),
        "ERROR idle for 1 s, closing\r\n",
        "silent client gets the idle notice"
    );
    flood.join().unwrap();
    drop(deaf);
    let freed = eventually(Duration::from_secs(10), || {
        server.proc_status("Threads") == idle_threads
    });
    assert!(
        freed,
        "threads not freed: {} now, {idle_threads} idle",
        server.proc_status("Threads")
    );
}

#[test]
fn out_of_file_descriptors_refuses_cleanly_without_spinning_and_recovers() {
    let command = format!("ulimit -n 64 && exec {} serve --bind 127.0.0.1:0 -q", bin());
    let server = Server::start_cmd(Command::new("sh").args(["-c", &command]), 1);
    let (mut served, mut busy) = (Vec::new(), 0);
    for i in 0..200 {
        let mut c = Lean::open(server.addr()).unwrap_or_else(|e| panic!("connect {i}: {e}"));
        let first = c.line().unwrap_or_else(|e| panic!("client {i}: {e}"));
        if first == "Welcome!\r\n" {
            served.push(c);
        } else {
            assert!(
                first.starts_with("ERROR server busy ("),
                "client {i} got {first:?}"
            );
            busy += 1;
        }
    }
    let cpu_before = cpu_seconds(server.pid());
    let held_since = Instant::now();
    // Hold every slot for a second while a client knocks every 20 ms, as clients retrying
    // would: each is refused at once, and in between the server sleeps, not spins.
    let mut knocks = 0;
    while held_since.elapsed() < Duration::from_secs(1) {
        let mut c = Lean::open(server.addr()).unwrap();
        assert!(c.line().unwrap().starts_with("ERROR server busy"));
        knocks += 1;
        thread::sleep(Duration::from_millis(20));
    }
    let cpu = cpu_seconds(server.pid()) - cpu_before;
    eprintln!(
        "ulimit -n 64: {} served, {busy} refused with the busy line; then {knocks} more refused \
         in 1 s using {cpu:.2} s of CPU",
        served.len()
    );
    assert!(served.len() >= 16, "only {} served", served.len());
    assert!(cpu < 0.3, "server spins: {cpu:.2} s CPU in 1 s");
    for c in &mut served {
        c.send("exit\n").unwrap();
        c.rest().unwrap();
    }
    drop(served);
    // A connection's thread leaves the registry just after its client sees the close,
    // so the first slot may take a moment (longer on a loaded machine) to come free.
    let freed = eventually(Duration::from_secs(10), || {
        cycle(server.addr(), "first again").is_ok()
    });
    assert!(freed, "no slot came free after the clients left");
    for i in 0..200 {
        cycle(server.addr(), &format!("again{i}"))
            .unwrap_or_else(|e| panic!("after recovery, client {i}: {e}"));
    }
    let logs = server.stop_and_logs();
    assert!(logs.contains("lowered"), "limit warning missing: {logs}");
    assert!(
        logs.contains("refused 127.0.0.1:"),
        "refusals not logged: {logs}"
    );
    let reports = logs.matches("refused 127.0.0.1:").count();
    assert!(reports <= 5, "refusal logs are not rate-limited: {reports}");
}

#[test]
fn slowloris_idle_connections_cannot_lock_clients_out() {
    let _fds = raise_fd_limit(1200);
    // The idle timeout must outlast setting up 1,000 connections on a loaded machine
    // (3 CPU hogs on 2 cores took over 2 s), or slots free up before the limit is tested.
    let server = Server::start(&["-q", "--idle-timeout", "5", "--max-connections", "1000"]);
    let mut idle: Vec<Lean> = (0..1000)
        .map(|_| {
            let mut c = Lean::open(server.addr()).unwrap();
            c.line().unwrap();
            c
        })
        .collect();
    // At the limit a new client is told, not left hanging ...
    let mut late = Lean::open(server.addr()).unwrap();
    assert_eq!(
        late.line().unwrap(),
        "ERROR server busy (1000 connections), try again later\r\n"
    );
    // ... and once the idle timeout has passed, served.
    for c in &mut idle {
        assert_eq!(c.line().unwrap(), "ERROR idle for 5 s, closing\r\n");
    }
    let served = eventually(Duration::from_secs(10), || {
        cycle(server.addr(), "patient").is_ok()
    });
    assert!(served, "no client served after the idle timeout");
}

#[test]
fn per_source_limit_keeps_one_address_from_taking_every_slot() {
    let server = Server::start(&["-q", "--max-per-source", "50"]);
    let mut mine: Vec<Lean> = (0..50)
        .map(|_| {
            let mut c = Lean::open(server.addr()).unwrap();
            assert_eq!(c.line().unwrap(), "Welcome!\r\n");
            c
        })
        .collect();
    let mut one_more = Lean::open(server.addr()).unwrap();
    assert_eq!(
        one_more.line().unwrap(),
        "ERROR too many connections from your address (50), try again later\r\n"
    );
    // Another address (127.0.0.2 is loopback too) is still served.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.connect(&server.addr().into()).unwrap();
    let mut other = Lean {
        stream: socket.into(),
    };
    other.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(other.line().unwrap(), "Welcome!\r\n");
    // A slot of one's own frees when one of one's connections leaves.
    let mut leaving = mine.pop().unwrap();
    leaving.send("exit\n").unwrap();
    leaving.rest().unwrap();
    let served = eventually(Duration::from_secs(10), || {
        cycle(server.addr(), "back").is_ok()
    });
    assert!(served);
}

#[test]
fn sigterm_under_load_answers_every_line_received_then_exits_0() {
    let server = Server::start(&["-q"]);
    let (clients, lines) = (50, 2_000);
    let mut conns: Vec<Conn> = (0..clients).map(|_| server.connect()).collect();
    for (c, conn) in conns.iter_mut().enumerate() {
        assert_eq!(conn.text_line(), "Welcome!");
        let batch: String = (0..lines).map(|i| format!("c{c}-{i}\n")).collect();
        conn.send(batch);
    }
    // Every client has its first reply: the server is working through their batches.
    for (c, conn) in conns.iter_mut().enumerate() {
        assert_eq!(conn.text_line(), format!("Hello, c{c}-0!"));
    }
    server.signal("TERM");
    for (c, conn) in conns.iter_mut().enumerate() {
        for i in 1..lines {
            assert_eq!(conn.text_line(), format!("Hello, c{c}-{i}!"));
        }
        assert_eq!(conn.rest(), b"server shutting down\r\n");
    }
    let (code, logs) = server.wait(Duration::from_secs(15));
    assert_eq!(code, Some(0), "exit code; logs: {logs}");
}

/// SIGTERM with `n` connections held open (welcomed, answered once, idle): every one gets
/// the shutdown notice and then EOF, and the server exits 0. Reports how long the stop
/// took, from the signal to the exit, and bounds it by the shutdown timeout.
fn sigterm_with_held(n: usize) {
    let _fds = raise_fd_limit(n as u64 + 50);
    let limit = (n + 50).to_string();
    let server = Server::start(&["-q", "--max-connections", &limit]);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = Lean::open(server.addr()).unwrap_or_else(|e| panic!("connect {i}: {e}"));
        assert_eq!(c.line().unwrap(), "Welcome!\r\n", "connection {i}");
        c.send(&format!("n{i}\n")).unwrap();
        conns.push(c);
    }
    for (i, c) in conns.iter_mut().enumerate() {
        assert_eq!(c.line().unwrap(), format!("Hello, n{i}!\r\n"));
    }
    let started = Instant::now();
    server.signal("TERM");
    // As clients do: each reads to the end and closes, which ends the server's linger.
    for (i, mut c) in conns.into_iter().enumerate() {
        assert_eq!(
            c.rest().unwrap(),
            b"server shutting down\r\n",
            "connection {i}"
        );
    }
    let told = started.elapsed();
    let (code, logs) = server.wait(Duration::from_secs(30));
    let stopped = started.elapsed();
    assert_eq!(code, Some(0), "exit code; logs: {logs}");
    eprintln!(
        "sigterm: {n} held connections each told `server shutting down` within {:.3} s, \
         exit 0 after {:.3} s",
        told.as_secs_f64(),
        stopped.as_secs_f64()
    );
    // The shutdown timeout (10 s) is the promise; the figure is what the README reports.
    assert!(stopped < Duration::from_secs(10), "{stopped:?}");
}

#[test]
fn sigterm_with_1000_held_connections_tells_each_and_exits_0() {
    sigterm_with_held(1000);
}

/// Needs `sysctl -w vm.max_map_count=262144` (the server lowers its limit to about
/// 15,860 connections under the default) and 20,000 open files.
#[test]
#[ignore = "full size: cargo test --release --test it reliability:: -- --ignored"]
fn sigterm_with_19900_held_connections_tells_each_and_exits_0() {
    sigterm_with_held(19_900);
}

// ---------------------------------------------------------------- hostile input

fn huge_line(bytes: usize) {
    let server = Server::start(&["-q"]);
    let hwm_before = server.proc_status("VmHWM");
    let mut conn = server.connect();
    assert_eq!(conn.text_line(), "Welcome!");
    let writer = conn.stream.try_clone().unwrap();
    let started = Instant::now();
    let flood = thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 20];
        let mut w = writer;
        let mut sent = 0;
        while sent < bytes {
            let n = chunk.len().min(bytes - sent);
            w.write_all(&chunk[..n]).unwrap();
            sent += n;
        }
        w.write_all(b"\nBob\n").unwrap();
    });
    assert_eq!(
        conn.text_line(),
        "ERROR line too long (max 8192 bytes), skipped"
    );
    // Others are served while the line streams in.
    for i in 0..10 {
        cycle(server.addr(), &format!("meanwhile{i}")).unwrap();
    }
    flood.join().unwrap();
    assert_eq!(conn.text_line(), "Hello, Bob!");
    let hwm = server.proc_status("VmHWM");
    eprintln!(
        "huge line: {} MiB without a newline in {:.2} s; server peak RSS {hwm_before} kB -> {hwm} kB",
        bytes >> 20,
        started.elapsed().as_secs_f64()
    );
    assert!(
        hwm < hwm_before + 4 * 1024,
        "memory grew with the line: {hwm_before} kB -> {hwm} kB"
    );
}

#[test]
fn a_64_mib_line_keeps_memory_bounded() {
    huge_line(64 << 20);
}

#[test]
#[ignore = "full size: cargo test --release --test it reliability:: -- --ignored"]
fn a_1_gib_line_keeps_memory_bounded() {
    huge_line(1 << 30);
}

/// Thread creation fails here the way it does under a per-user process limit
/// (`ulimit -u`, like systemd's `TasksMax`): `clone` returns EAGAIN. The server starts
/// with room (its start-up check lowers `--max-connections` to the tasks the limit
/// leaves), and then other processes of its user take the tasks it counted on. Root is
/// exempt from that limit, so as root the server runs as `nobody`.
#[test]
fn failing_to_start_a_thread_refuses_cleanly_and_recovers() {
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    let uid: u32 = String::from_utf8_lossy(&uid.stdout).trim().parse().unwrap();
    if uid == 0 && !require("setpriv", "util-linux") {
        return;
    }
    let owner = if uid == 0 { 65534 } else { uid };
    let limit = tasks_of(owner) + 400;
    let as_owner = |script: String| {
        let mut c = if uid == 0 {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash"]);
            c
        } else {
            Command::new("bash")
        };
        c.arg("-c").arg(script);
        c
    };
    let serve = format!(
        "ulimit -u {limit} && exec {} serve --bind 127.0.0.1:0",
        bin()
    );
    let server = Server::start_cmd(&mut as_owner(serve), 1);
    // 300 tasks of the same user, which end by themselves if the test does not end them.
    let before = tasks_of(owner);
    let hog = as_owner(
        "trap 'kill $(jobs -p) 2>/dev/null; exit 0' TERM; \
         for i in $(seq 300); do sleep 60 & done; wait"
            .to_string(),
    )
    .stdin(Stdio::null())
    .spawn()
    .expect("start the task hog");
    let hog = KillOnDrop(hog);
    assert!(
        eventually(Duration::from_secs(20), || tasks_of(owner) >= before + 300),
        "the hog did not start its tasks"
    );
    let mut held = Vec::new();
    let refused = loop {
        assert!(held.len() < 1000, "thread creation never failed");
        let mut c = Lean::open(server.addr()).unwrap();
        let first = c.line().unwrap();
        if first != "Welcome!\r\n" {
            break first;
        }
        held.push(c);
    };
    // The number is how many connections the server holds, not the limit it never reached.
    assert_eq!(
        refused,
        format!(
            "ERROR server busy ({} connections), try again later\r\n",
            held.len()
        )
    );
    let served_before = held.len();
    drop(held.drain(..served_before.min(10)));
    let served = eventually(Duration::from_secs(10), || {
        cycle(server.addr(), "again").is_ok()
    });
    assert!(served, "not served after connections left");
    eprintln!(
        "thread limit: {served_before} connections served, then the busy line; served again \
         after 10 left"
    );
    drop(held);
    // Its trap ends the sleeps; a KILL would leave them to run out on their own.
    let mut hog = hog;
    send_signal(hog.0.id(), "TERM");
    wait_for_exit(&mut hog.0, Duration::from_secs(10));
    drop(hog);
    let logs = server.stop_and_logs();
    // The start-up check counted the user's tasks under `ulimit -u`.
    assert!(
        logs.contains(&format!("the per-user limit `ulimit -u` is {limit}")),
        "{logs}"
    );
    assert!(
        logs.contains("cannot start a thread"),
        "spawn failure not logged: {logs}"
    );
}

// ---------------------------------------------------------------- signals at start-up

/// Runs `tcp-hello ARGS` under strace, holding the process for `hold` right after the
/// kernel has installed its handler for `signal` (`SIGTERM`), before the program's own
/// code has returned from installing it, and sends `signal` then. Returns the exit code
/// and stderr, or `None` when strace cannot trace here (not installed, or ptrace not
/// permitted), after saying so.
fn signal_while_installing(args: &[&str], signal: &str, hold: Duration) -> Option<Finished> {
    let traced = |extra: &[&str], out: &std::path::Path| {
        let mut cmd = Command::new("strace");
        cmd.args(["-qq", "-e", "trace=rt_sigaction", "-o"])
            .arg(out)
            .args(extra)
            .arg("--")
            .arg(bin())
            .args(args);
        clean_env(&mut cmd);
        cmd
    };
    // A directory of its own: the tests that use this run at the same time.
    let dir = temp_dir(&format!("sig-{signal}"));
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    let installs = format!("rt_sigaction({signal}, {{sa_handler=0x");

    // First, which rt_sigaction call installs the handler: its index for strace's `when`.
    if !require("strace", "strace") {
        return None;
    }
    let probe = Running::start(&mut traced(&[], &first), None);
    let found = eventually(IO_TIMEOUT, || {
        std::fs::read_to_string(&first).is_ok_and(|t| t.contains(&installs))
    });
    if let Some(program) = traced_program(probe.pid()) {
        let _ = send_signal(program, "KILL");
    }
    let done = probe.finish(IO_TIMEOUT);
    let trace = std::fs::read_to_string(&first).unwrap_or_default();
    if !found {
        eprintln!(
            "SKIPPED: strace could not trace here: {}{trace}",
            done.stderr
        );
        return None;
    }
    let index = trace
        .lines()
        .filter(|l| l.starts_with("rt_sigaction("))
        .position(|l| l.starts_with(&installs))
        .expect("the install call is in the trace")
        + 1;

    // Then the same start, held inside that call; the signal arrives in the window.
    let inject = format!(
        "inject=rt_sigaction:delay_exit={}:when={index}",
        hold.as_micros()
    );
    let running = Running::start(&mut traced(&["-e", &inject], &second), None);
    assert!(
        eventually(IO_TIMEOUT, || {
            std::fs::read_to_string(&second).is_ok_and(|t| {
                t.lines()
                    .any(|l| l.starts_with(&installs) && l.contains("DELAYED"))
            })
        }),
        "strace never held the install call: {}",
        std::fs::read_to_string(&second).unwrap_or_default()
    );
    let program = traced_program(running.pid()).expect("the traced program");
    assert!(
        send_signal(program, &signal[3..]),
        "kill -{signal} {program}"
    );
    // strace reaps the program as soon as it ends.
    let gone = || !std::path::Path::new(&format!("/proc/{program}")).exists();
    let stopped = eventually(hold + IO_TIMEOUT, gone);
    if !stopped {
        let _ = send_signal(program, "KILL");
    }
    let done = running.finish(IO_TIMEOUT);
    assert!(
        stopped,
        "{signal} sent while the handler was being installed was lost: the program went on\n{}",
        done.stderr
    );
    Some(done)
}

/// The process strace runs (its only child).
fn traced_program(strace: u32) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// A supervisor that stops a service while it starts must see it stop: a SIGTERM that
/// arrives while the handler is being installed is delivered once it is installed, and
/// the server shuts down gracefully (it was swallowed before: the process went on).
#[test]
fn sigterm_while_the_server_installs_its_handler_stops_it() {
    let args = ["serve", "--bind", "127.0.0.1:0"];
    if let Some(done) = signal_while_installing(&args, "SIGTERM", Duration::from_secs(1)) {
        assert_eq!(done.code, Some(0), "{}", done.stderr);
        assert!(done.stderr.contains("stopped"), "{}", done.stderr);
    }
}

/// The same with each option that starts a thread of its own at start-up (`--metrics`,
/// UDP, TLS), and all of them: a thread that does not block the stop signals while the
/// handler is being installed takes the SIGTERM meant for it, and it is lost.
#[test]
fn sigterm_while_installing_stops_the_server_whatever_threads_it_starts() {
    let certs = crate::common::tls::make_certs();
    let (cert, key) = (
        certs.server.cert.display().to_string(),
        certs.server.key.display().to_string(),
    );
    let metrics = ["--metrics", "127.0.0.1:0"];
    let udp = ["--udp-bind", "127.0.0.1:0"];
    let tls = [
        "--tls-bind",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    let all: Vec<&str> = [&metrics[..], &udp, &tls].concat();
    for extra in [&metrics[..], &udp, &tls, &all] {
        let mut args = vec!["serve", "--bind", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        eprintln!("tcp-hello {}", args.join(" "));
        let Some(done) = signal_while_installing(&args, "SIGTERM", Duration::from_secs(1)) else {
            return;
        };
        assert_eq!(done.code, Some(0), "{args:?}: {}", done.stderr);
        assert!(done.stderr.contains("stopped"), "{args:?}: {}", done.stderr);
    }
}

/// The same for bench and Ctrl-C: the run ends at once instead of lasting its minute.
#[test]
fn sigint_while_bench_installs_its_handler_interrupts_it() {
    let server = Server::start(&["-q"]);
    let addr = server.addr().to_string();
    let args = ["bench", "--connect", &addr, "-n", "2", "--duration", "60"];
    if let Some(done) = signal_while_installing(&args, "SIGINT", Duration::from_secs(1)) {
        // Interrupted before its first connection, it says so and that nothing was measured.
        assert!(done.stderr.contains("interrupted"), "{}", done.stderr);
        assert!(
            matches!(done.code, Some(130 | 2)),
            "{:?}: {}",
            done.code,
            done.stderr
        );
    }
}
