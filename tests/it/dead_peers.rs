//! Clients that vanish without a word: `--keepalive` and `--user-timeout` free their
//! connections. The client runs in a network namespace of the test's own, joined to the
//! host by a veth pair; a `blackhole` qdisc then swallows every packet one way, which
//! is what a machine that lost power or its network looks like: no FIN, no reset, no ACK.
//! Needs root, iproute2 (`ip`, `tc`) and python3; elsewhere each test says so and passes,
//! or fails under `CI=true` (see `common::cannot_run`).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{Conn, KillOnDrop, Server, cannot_run, eventually, require};

/// Longest any awaited event may take; far beyond what each needs, for a loaded machine.
const BOUND: Duration = Duration::from_secs(30);

/// Tells the namespaces of tests running at once in this process apart.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs `ip`/`tc` arguments; returns stderr on failure.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace with a veth pair to the host, removed when dropped.
struct Netns {
    name: String,
    /// The host side's interface (its peer, `vB`, is in the namespace).
    host_if: String,
    /// The host side's address, for the server to listen on.
    host_ip: String,
    /// The namespace side's address, the client's.
    peer_ip: String,
}

impl Netns {
    /// Makes the namespace and the link, or says why it cannot.
    fn make() -> Result<Netns, String> {
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // A /30 picked from the pid and the test, so that parallel runs do not clash.
        let k = (pid.wrapping_mul(4).wrapping_add(n)) % 16_384;
        let (third, base) = (k / 64, (k % 64) * 4);
        let ns = Netns {
            name: format!("thdp{pid}n{n}"),
            host_if: format!("thA{pid}n{n}"),
            host_ip: format!("10.213.{third}.{}", base + 1),
            peer_ip: format!("10.213.{third}.{}", base + 2),
        };
        run("ip", &["netns", "add", &ns.name])?;
        // From here on, Drop removes whatever was made.
        let ns_name = ns.name.clone();
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns_name, "ip"];
            all.extend_from_slice(args);
            run("ip", &all)
        };
        run(
            "ip",
            &[
                "link",
                "add",
                &ns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                "vB",
                "netns",
                &ns.name,
            ],
        )?;
        let host_cidr = format!("{}/30", ns.host_ip);
        let peer_cidr = format!("{}/30", ns.peer_ip);
        run("ip", &["addr", "add", &host_cidr, "dev", &ns.host_if])?;
        run("ip", &["link", "set", &ns.host_if, "up"])?;
        exec(&["addr", "add", &peer_cidr, "dev", "vB"])?;
        exec(&["link", "set", "vB", "up"])?;
        Ok(ns)
    }

    /// From now on every packet the host sends to the namespace is dropped, silently.
    fn drop_to_client(&self) {
        run(
            "tc",
            &["qdisc", "add", "dev", &self.host_if, "root", "blackhole"],
        )
        .expect("blackhole the host side");
    }

    /// From now on every packet the client sends is dropped, silently.
    fn drop_from_client(&self) {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.name,
                "tc",
                "qdisc",
                "add",
                "dev",
                "vB",
                "root",
                "blackhole",
            ],
        )
        .expect("blackhole the namespace side");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes both.
        let _ = run("ip", &["link", "del", &self.host_if]);
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Makes the namespace, or says why the test cannot run and returns `None`, for it to
/// skip; under `CI=true` fails it instead (see [`cannot_run`]), not being root included:
/// CI runs as root, and a run that is not would otherwise pass without these tests.
fn netns_or_skip() -> Option<Netns> {
    if !require("ip", "iproute2") || !require("tc", "iproute2") || !require("python3", "python3") {
        return None;
    }
    if crate::common::proc_status(std::process::id(), "Uid") != 0 {
        cannot_run("not root, needed to make a network namespace: run as root");
        return None;
    }
    match Netns::make() {
        Ok(ns) => Some(ns),
        Err(why) => {
            cannot_run(&format!("cannot make a network namespace here ({why})"));
            None
        }
    }
}

/// Connects from inside the namespace and reads the welcome; then, told `say NAME` on
/// stdin, sends the name and reads the reply, or told `send NAME`, only sends it; holds
/// the connection until killed.
const CLIENT: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
r = s.makefile("rb")
print("welcomed" if r.readline() else "closed", flush=True)
for line in sys.stdin:
    verb, name = line.split()
    s.sendall(name.encode() + b"\n")
    print(r.readline().decode().strip() if verb == "say" else "sent", flush=True)
"#;

/// A client in the namespace, killed when dropped.
struct NsClient {
    _child: KillOnDrop,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl NsClient {
    fn connect(ns: &Netns, server: SocketAddr) -> NsClient {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "python3", "-c", CLIENT])
            .arg(server.ip().to_string())
            .arg(server.port().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run python3 in the namespace");
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let client = NsClient {
            _child: KillOnDrop(child),
            stdin,
            lines,
        };
        client.expect("welcomed");
        client
    }

    fn expect(&self, what: &str) {
        let line = self
            .lines
            .recv_timeout(BOUND)
            .unwrap_or_else(|e| panic!("the namespace client did not say {what:?}: {e}"));
        assert_eq!(line, what);
    }

    /// Sends a name and reads the reply.
    fn say(&mut self, name: &str) {
        self.tell(&format!("say {name}"));
        self.expect(&format!("Hello, {name}!"));
    }

    /// Sends a name without waiting for a reply.
    fn send(&mut self, name: &str) {
        self.tell(&format!("send {name}"));
        self.expect("sent");
    }

    fn tell(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").expect("tell the namespace client what to do");
        self.stdin.flush().expect("flush to the namespace client");
    }
}

/// The server on the host side of `ns` and on 127.0.0.1, with `args`.
fn server(ns: &Netns, args: &[&str]) -> Server {
    let bind = format!("{}:0", ns.host_ip);
    let mut all = vec!["--bind", &bind, "--bind", "127.0.0.1:0"];
    all.extend_from_slice(args);
    Server::start_with_binds(&all, 2)
}

/// While the dead connection is held: a client on the other listener is served.
fn others_are_served(server: &Server) {
    let mut conn = Conn::open(server.addrs[1]);
    assert_eq!(conn.text_line(), "Welcome!");
    conn.send("Ann\n");
    assert_eq!(conn.text_line(), "Hello, Ann!");
    conn.send("exit\n");
    assert_eq!(conn.text_line(), "Bye!");
}

/// The server's thread count once it has served a client on each listener (which the
/// announcement precedes: the accept threads start after it) and nothing changed for
/// half a second.
fn settled_threads(server: &Server) -> u64 {
    others_are_served(server);
    let mut last = server.proc_status("Threads");
    let settled = eventually(BOUND, || {
        thread::sleep(Duration::from_millis(500));
        let now = server.proc_status("Threads");
        std::mem::replace(&mut last, now) == now
    });
    assert!(settled, "the server's thread count did not settle");
    last
}

/// Waits for the close line of the connection from `peer`; returns the line and how
/// long it took from `since`.
fn close_line(server: &Server, peer: &str, since: Instant) -> (String, Duration) {
    let from = format!(" {peer}:");
    let mut found = None;
    let seen = eventually(BOUND, || {
        found = server
            .logs_so_far()
            .lines()
            .find(|l| l.contains(" closed: ") && l.contains(&from))
            .map(str::to_string);
        found.is_some()
    });
    let elapsed = since.elapsed();
    assert!(
        seen,
        "the vanished client's connection was not closed within {BOUND:?}; log:\n{}",
        server.logs_so_far()
    );
    (found.unwrap_or_default(), elapsed)
}

#[test]
fn keepalive_frees_the_thread_of_a_client_that_vanished() {
    let Some(ns) = netns_or_skip() else {
        return;
    };
    // Thread counts show connections freed: no thread may park for the next one.
    let server = server(
        &ns,
        &[
            "--idle-timeout",
            "0",
            "--keepalive",
            "1",
            "--thread-cache",
            "0",
        ],
    );
    let idle = settled_threads(&server);
    let mut client = NsClient::connect(&ns, server.addr());
    assert!(eventually(BOUND, || server.proc_status("Threads") == idle + 1));
    // A client that said something: one that never did is logged at debug level only.
    client.say("Bob");
    // Until the client's delayed ACK of the reply (at most 200 ms) is out: unacknowledged
    // data is retransmitted rather than probed, and that is --user-timeout's case.
    thread::sleep(Duration::from_secs(1));

    // The client's machine goes silent: not an ACK to the server's probes.
    ns.drop_from_client();
    let vanished = Instant::now();
    others_are_served(&server);
    let (line, took) = close_line(&server, &ns.peer_ip, vanished);
    println!("keepalive 1 s (3 probes 1 s apart): closed {took:.1?} after the client vanished");
    assert!(line.contains("read error: timed out"), "{line}");
    assert!(
        eventually(BOUND, || server.proc_status("Threads") == idle),
        "the connection's thread did not end"
    );
    drop(client);
}

#[test]
fn user_timeout_drops_a_client_that_stops_acknowledging() {
    let Some(ns) = netns_or_skip() else {
        return;
    };
    // Thread counts show connections freed: no thread may park for the next one.
    let server = server(
        &ns,
        &[
            "--idle-timeout",
            "0",
            "--user-timeout",
            "2",
            "--thread-cache",
            "0",
        ],
    );
    let idle = settled_threads(&server);
    let mut client = NsClient::connect(&ns, server.addr());
    assert!(eventually(BOUND, || server.proc_status("Threads") == idle + 1));

    // Nothing reaches the client any more; its name still reaches the server, whose
    // reply then goes unacknowledged (the kernel alone would retransmit it for about
    // 15 minutes).
    ns.drop_to_client();
    client.send("Bob");
    let sent = Instant::now();
    others_are_served(&server);
    let (line, took) = close_line(&server, &ns.peer_ip, sent);
    println!("user timeout 2 s: closed {took:.1?} after the unacknowledged reply");
    assert!(line.contains("read error: timed out"), "{line}");
    assert!(line.contains("1 reply,"), "{line}");
    assert!(
        eventually(BOUND, || server.proc_status("Threads") == idle),
        "the connection's thread did not end"
    );
    drop(client);
}
