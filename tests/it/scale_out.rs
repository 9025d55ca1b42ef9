//! Several processes on one port (`--reuse-port`), and sockets inherited from systemd
//! (socket activation, through `systemd-socket-activate`).

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn with_reuse_port_two_processes_share_a_port_and_both_serve() {
    let one = Server::start_with_binds(
        &["--bind", "127.0.0.1:0", "--reuse-port", "--welcome", "one"],
        1,
    );
    let bind = one.addr().to_string();
    let two = Server::start_with_binds(&["--bind", &bind, "--reuse-port", "--welcome", "two"], 1);
    assert_eq!(two.addr(), one.addr());
    let (mut ones, mut twos) = (0, 0);
    for _ in 0..40 {
        let mut conn = one.connect();
        match conn.text_line().as_str() {
            "one" => ones += 1,
            "two" => twos += 1,
            other => panic!("unexpected welcome {other:?}"),
        }
    }
    // The kernel spreads connections by a hash of their addresses: with 40 connections
    // the chance that one process gets none is 2^-39.
    assert!(ones > 0 && twos > 0, "one served {ones}, two served {twos}");
    drop(two);
    drop(one);
}

#[test]
fn without_reuse_port_a_second_server_on_the_port_fails_and_suggests_it() {
    let one = Server::start(&["--reuse-port"]);
    let out = hello_cmd("serve", &["--bind", &one.addr().to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run tcp-hello serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("is another server running there?") && stderr.contains("--reuse-port"),
        "stderr: {stderr}"
    );
}

/// Whether `systemd-socket-activate` is installed (see [`require`]).
fn have_activator() -> bool {
    require("systemd-socket-activate", "systemd")
}

/// `systemd-socket-activate` listening on a free port, running `tcp-hello serve` once
/// the first connection comes.
struct Activated {
    child: KillOnDrop,
    addr: SocketAddr,
    out: thread::JoinHandle<String>,
    err: thread::JoinHandle<String>,
}

impl Activated {
    /// Starts the activator with `activator_args` (e.g. `--fdname=tls`) and `tcp-hello
    /// serve serve_args`, and opens the first connection, which starts the server.
    fn start(activator_args: &[&str], serve_args: &[&str]) -> (Activated, TcpStream) {
        for _ in 0..5 {
            // A port free a moment ago; another test may take it meanwhile, hence retries.
            let addr = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("find a free port");
            let mut cmd = Command::new("systemd-socket-activate");
            clean_env(&mut cmd)
                .arg("-l")
                .arg(addr.to_string())
                .args(activator_args)
                .arg(bin())
                .arg("serve")
                .args(serve_args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = KillOnDrop(cmd.spawn().expect("run systemd-socket-activate"));
            let collect = |mut pipe: Box<dyn Read + Send>| {
                thread::spawn(move || {
                    let mut all = Vec::new();
                    let _ = pipe.read_to_end(&mut all);
                    String::from_utf8_lossy(&all).into_owned()
                })
            };
            let out = collect(Box::new(child.0.stdout.take().expect("stdout")));
            let err = collect(Box::new(child.0.stderr.take().expect("stderr")));
            let deadline = Instant::now() + IO_TIMEOUT;
            let connected = loop {
                if let Ok(stream) = TcpStream::connect(addr) {
                    break Some(stream);
                }
                // Exited: most likely another process took the port first.
                if child.0.try_wait().expect("try_wait").is_some() || Instant::now() > deadline {
                    break None;
                }
                thread::sleep(Duration::from_millis(20));
            };
            let Some(stream) = connected else {
                drop(child);
                eprintln!("activator on {addr} failed: {}", err.join().unwrap());
                continue;
            };
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
            let activated = Activated {
                child,
                addr,
                out,
                err,
            };
            return (activated, stream);
        }
        panic!("systemd-socket-activate could not listen on a free port in 5 tries");
    }

    /// Stops the server with SIGTERM if `term` (else waits for it to exit by itself); its
    /// exit code, stdout and stderr. Signal it only once it has served something: until
    /// it runs, the signal would end the activator.
    fn stop(mut self, term: bool) -> (Option<i32>, String, String) {
        if term {
            let _ = send_signal(self.child.0.id(), "TERM");
        }
        let status = wait_for_exit(&mut self.child.0, IO_TIMEOUT).expect("server did not stop");
        (
            status.code(),
            self.out.join().unwrap(),
            self.err.join().unwrap(),
        )
    }
}

#[test]
fn serves_on_a_socket_inherited_from_systemd() {
    if !have_activator() {
        return;
    }
    let (server, stream) = Activated::start(&[], &["--welcome", "activated"]);
    let addr = server.addr;
    let mut first = Conn::from_stream(stream);
    assert_eq!(first.text_line(), "activated");
    first.send("Ann\n");
    assert_eq!(first.text_line(), "Hello, Ann!");
    // A second connection, once the server runs, is accepted by it directly.
    let mut second = Conn::open(addr);
    assert_eq!(second.text_line(), "activated");
    drop((first, second));
    let (code, out, err) = server.stop(true);
    assert_eq!(code, Some(0), "stderr: {err}");
    assert_eq!(out, format!("listening on {addr}\n"));
    assert!(
        err.contains("using inherited socket fd 3") && err.contains(&addr.to_string()),
        "stderr: {err}"
    );
}

#[test]
fn an_inherited_socket_named_tls_speaks_tls_and_needs_a_certificate() {
    if !have_activator() {
        return;
    }
    let (server, _stream) = Activated::start(&["--fdname=tls"], &[]);
    let (code, _, err) = server.stop(false);
    assert_eq!(code, Some(2), "stderr: {err}");
    assert!(
        err.contains("the inherited socket named tls needs --tls-cert"),
        "stderr: {err}"
    );

    let certs = crate::common::tls::make_certs();
    let (cert, key) = (
        certs.server.cert.to_str().unwrap(),
        certs.server.key.to_str().unwrap(),
    );
    let (server, mut stream) =
        Activated::start(&["--fdname=tls"], &["--tls-cert", cert, "--tls-key", key]);
    let addr = server.addr;
    // A plain client gets no welcome: the server waits for a TLS ClientHello, then
    // closes on the handshake timeout or on what it reads.
    std::io::Write::write_all(&mut stream, b"hello\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    assert!(!got.starts_with(b"Welcome!"), "got {got:?}");
    let (code, out, err) = server.stop(true);
    assert_eq!(code, Some(0), "stderr: {err}");
    assert_eq!(out, format!("listening on tls {addr}\n"));
}

#[test]
fn bind_is_refused_with_inherited_sockets() {
    if !have_activator() {
        return;
    }
    let (server, _stream) = Activated::start(&[], &["--bind", "127.0.0.1:0"]);
    let (code, _, err) = server.stop(false);
    assert_eq!(code, Some(2), "stderr: {err}");
    assert!(
        err.contains("cannot be used with sockets inherited from systemd"),
        "stderr: {err}"
    );
}

#[test]
fn an_inherited_socket_takes_the_proxy_protocol() {
    if !have_activator() {
        return;
    }
    let (server, stream) = Activated::start(
        &[],
        &[
            "--proxy-protocol",
            "--proxy-from",
            "127.0.0.1",
            "--reply",
            "Hello, {}! from {peer}",
        ],
    );
    let addr = server.addr;
    // The connection that started the server, then one the server accepts itself.
    let mut first = Conn::from_stream(stream);
    first.send("PROXY TCP4 192.0.2.7 10.0.0.1 5555 9999\r\nAnn\n");
    assert_eq!(first.text_line(), "Welcome!");
    assert_eq!(first.text_line(), "Hello, Ann! from 192.0.2.7:5555");
    let mut second = Conn::open(addr);
    second.send("PROXY TCP6 2001:db8::7 2001:db8::1 6666 9999\r\nBob\n");
    assert_eq!(second.text_line(), "Welcome!");
    assert_eq!(second.text_line(), "Hello, Bob! from [2001:db8::7]:6666");
    drop((first, second));
    let (code, _, err) = server.stop(true);
    assert_eq!(code, Some(0), "stderr: {err}");
}

/// `servers` processes share one port (`--reuse-port`) and `benches` bench processes
/// hold `per_bench` connections each, bench `b` from its own range of 8 loopback source
/// addresses; every connection must be established and answered at least twice. Prints
/// the servers' memory per connection (their RSS above what they had idle).
fn hold_across_processes(servers: usize, benches: usize, per_bench: usize, secs: u32) {
    let total = benches * per_bench;
    // Room for the kernel's uneven spread of connections among the servers.
    let limit = (total / servers * 3 / 2 + 100).to_string();
    let first = Server::start(&["-q", "--reuse-port", "--max-connections", &limit]);
    let bind = first.addr().to_string();
    let mut all = vec![first];
    for _ in 1..servers {
        all.push(Server::start(&[
            "-q",
            "--reuse-port",
            "--bind",
            &bind,
            "--max-connections",
            &limit,
        ]));
    }
    let idle: u64 = all.iter().map(|s| s.proc_status("VmRSS")).sum();
    let mut runs: Vec<Running> = (0..benches)
        .map(|b| {
            let sources = format!("127.0.{}.1-127.0.{}.8", b + 1, b + 1);
            Running::start(
                &mut hello_cmd(
                    "bench",
                    &[
                        "-c",
                        &bind,
                        "--source",
                        &sources,
                        "-n",
                        &per_bench.to_string(),
                        "-d",
                        &secs.to_string(),
                        "--connect-rate",
                        "0",
                        "--timeout",
                        "60",
                        "--json",
                        "-q",
                    ],
                ),
                None,
            )
        })
        .collect();
    // Sampled while the benches run: once every connection is open, the servers hold
    // them all until the benches end.
    let mut peak = 0;
    let mut held = 0;
    let deadline = Instant::now() + Duration::from_secs(u64::from(secs) + 120);
    while Instant::now() < deadline && runs.iter_mut().any(|r| r.is_running()) {
        let open: usize = all.iter().map(|s| s.proc_status("Threads") as usize).sum();
        let rss: u64 = all.iter().map(|s| s.proc_status("VmRSS")).sum();
        if open >= held {
            held = open;
            peak = peak.max(rss);
        }
        thread::sleep(Duration::from_millis(200));
    }
    for (b, run) in runs.into_iter().enumerate() {
        let done = run.finish(Duration::from_secs(60));
        assert_eq!(done.code, Some(0), "bench {b}: {}", done.stderr);
        let r: serde_json::Value = serde_json::from_str(done.stdout.trim())
            .unwrap_or_else(|e| panic!("bench {b} report ({e}): {}", done.stdout));
        assert_eq!(r["established"], per_bench as u64, "bench {b}: {r}");
        assert_eq!(r["errors_total"], 0, "bench {b}: {r}");
        assert!(
            r["fewest_replies"].as_u64().unwrap_or(0) >= 2,
            "bench {b}: a connection answered fewer than twice: {r}"
        );
    }
    let per_conn = (peak.saturating_sub(idle)) as f64 / total as f64;
    eprintln!(
        "hold across processes: {total} connections over {servers} servers, every one \
         answered at least twice; servers' RSS {peak} kB at the peak ({idle} kB idle): \
         {per_conn:.2} KiB per connection"
    );
}

#[test]
fn hold_1000_across_two_servers_and_two_benches() {
    hold_across_processes(2, 2, 500, 3);
}

/// Needs `sysctl -w vm.max_map_count=262144 kernel.pid_max=4194304` (100,000 threads,
/// 17,000 connections a server), 20,000 open files a process, and about 5 GB of memory.
#[test]
#[ignore = "full size: cargo test --release --test it scale_out:: -- --ignored --nocapture"]
fn hold_100000_across_six_servers_and_six_benches() {
    hold_across_processes(6, 6, 16_667, 20);
}
