//! `tcp-hello client --tls` end to end, with certificates made at run time
//! (tests/it/common/tls.rs): against a greeting server written here with Python's `ssl`
//! (line and chunk framing, TLS 1.2 and 1.3, with and without close_notify, requiring a
//! client certificate), against `openssl s_server -rev` (TLS 1.2 and 1.3, mutual TLS),
//! and against the plain-text `tcp-hello serve`. Each TLS failure is exit 7 with its
//! own message; each bad file is exit 2, naming the file.
use crate::common::tls::{Certs, Pair, make_certs};
use crate::common::*;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use tcp_hello::client::{EXIT_PROTOCOL, EXIT_TIMEOUT, EXIT_TLS, EXIT_USAGE};

/// No client run may take longer than this; a hang fails the test instead of CI.
const DEADLINE: Duration = Duration::from_secs(60);

/// A greeting server over TLS, with Python's `ssl` (OpenSSL), for the tests to talk to:
/// `Welcome!`, `Hello, NAME!` for each line, `Bye!` and a close on `exit` or `quit`.
///
/// Usage: `python3 -c SCRIPT CERT KEY [OPTION]...`; it prints `listening on ADDR` once
/// it listens. Options: `--chunk` (no line endings: each read is a name, `exit` closes),
/// `--close-notify` (end each session with close_notify; otherwise the socket is just
/// closed), `--client-ca=FILE` (require a client certificate signed by it), `--tls1_2`
/// (TLS 1.2 at most), `--ipv6` (listen on ::1), `--drop-after-welcome` (close without
/// close_notify after the first read, answering nothing).
const PY_TLS_SERVER: &str = r#"
import socket, ssl, sys, threading

def main():
    cert, key, *opts = sys.argv[1:]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    for opt in opts:
        if opt.startswith('--client-ca='):
            ctx.load_verify_locations(opt.split('=', 1)[1])
            ctx.verify_mode = ssl.CERT_REQUIRED
        elif opt == '--tls1_2':
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if '--ipv6' in opts:
        listener = socket.socket(socket.AF_INET6)
        listener.bind(('::1', 0))
        shown = '[::1]'
    else:
        listener = socket.socket()
        listener.bind(('127.0.0.1', 0))
        shown = '127.0.0.1'
    listener.listen(16)
    print('listening on %s:%d' % (shown, listener.getsockname()[1]), flush=True)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=serve, args=(ctx, sock, opts), daemon=True).start()

def serve(ctx, sock, opts):
    sock.settimeout(30)
    try:
        tls = ctx.wrap_socket(sock, server_side=True)
    except (ssl.SSLError, OSError) as e:
        print('handshake: %s' % e, file=sys.stderr, flush=True)
        sock.close()
        return
    try:
        if '--chunk' in opts:
            chunks(tls)
        elif '--drop-after-welcome' in opts:
            tls.sendall(b'Welcome!\r\n')
            tls.recv(65536)
            return
        else:
            lines(tls)
        # Reads to the client's close_notify (or its end), so as to close with nothing
        # unread: a close with data unread resets the connection, which can lose what
        # was said last.
        while tls.recv(65536):
            pass
        if '--close-notify' in opts:
            tls = tls.unwrap()
    except (ssl.SSLError, OSError) as e:
        print('session: %s' % e, file=sys.stderr, flush=True)
    finally:
        tls.close()

def lines(tls):
    tls.sendall(b'Welcome!\r\n')
    rest = b''
    while True:
        data = tls.recv(65536)
        if not data:
            return
        *complete, rest = (rest + data).split(b'\n')
        out = []
        for line in complete:
            line = line.rstrip(b'\r')
            if not line.strip():
                continue
            if line.strip().lower() in (b'exit', b'quit'):
                out.append(b'Bye!\r\n')
                tls.sendall(b''.join(out))
                return
            out.append(b'Hello, ' + line + b'!\r\n')
        if out:
            tls.sendall(b''.join(out))

def chunks(tls):
    tls.sendall(b'Welcome!')
    while True:
        data = tls.recv(1024)
        if not data or data == b'exit':
            return
        tls.sendall(b'Hello, ' + data + b'!')

main()
"#;

/// Drives `tcp-hello client --tls` through a pseudo-terminal, as a person would.
/// Usage: `python3 -c SCRIPT BINARY ADDR CA`; prints `ok` when the session went as
/// expected, else exits non-zero saying what was seen.
const PY_PTY_SESSION: &str = r#"
import os, pty, select, subprocess, sys, time

binary, addr, ca = sys.argv[1:4]
master, slave = pty.openpty()
env = {k: v for k, v in os.environ.items() if not k.startswith('TCP_HELLO_') and k != 'RUST_LOG'}
proc = subprocess.Popen(
    [binary, 'client', '--tls', '--tls-ca', ca, '--connect-timeout', '30', '--connect', addr],
    stdin=slave, stdout=slave, stderr=slave, close_fds=True, start_new_session=True, env=env)
os.close(slave)
seen = b''

def expect(text):
    global seen
    want = text.encode()
    deadline = time.monotonic() + 30
    while want not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([master], [], [], left)[0]:
            proc.kill()
            sys.exit('expected %r, saw %r' % (text, seen))
        try:
            data = os.read(master, 4096)
        except OSError:
            data = b''
        if not data:
            sys.exit('expected %r, saw %r and the end' % (text, seen))
        seen += data
    seen = seen[seen.index(want) + len(want):]

expect('over TLS 1.3. Type a name')
expect('> ')
os.write(master, b'Michael\n')
expect('Hello, Michael!')
expect('> ')
os.write(master, b'exit\n')
expect('Bye!')
try:
    code = proc.wait(timeout=30)
except subprocess.TimeoutExpired:
    proc.kill()
    sys.exit('the client did not exit')
if code != 0:
    sys.exit('exit %d after %r' % (code, seen))
print('ok')
"#;

/// A path as an argument.
fn p(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// Runs `tcp-hello client ARGS` with a clean environment (no system trust roots from
/// SSL_CERT_FILE or SSL_CERT_DIR unless `env` sets them).
fn client_env(args: &[&str], env: &[(&str, &Path)], stdin: Option<&[u8]>) -> Finished {
    let mut cmd = hello_cmd("client", args);
    cmd.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
    for (key, value) in env {
        cmd.env(key, value);
    }
    run_tool(&mut cmd, stdin, DEADLINE)
}

fn client(args: &[&str], stdin: Option<&[u8]>) -> Finished {
    client_env(args, &[], stdin)
}

/// The flags for a TLS run against `addr` trusting `ca`, with timeouts generous
/// enough for a loaded machine.
fn tls_to<'a>(addr: &'a str, ca: &'a Path) -> Vec<&'a str> {
    vec![
        "--tls",
        "--tls-ca",
        p(ca),
        "--connect-timeout",
        "30",
        "--reply-timeout",
        "30",
        "--connect",
        addr,
    ]
}

/// A process with an address, killed on drop; its stderr is kept to show on failure.
struct Peer {
    _child: KillOnDrop,
    addr: String,
    logs: Arc<Mutex<Vec<u8>>>,
}

impl Peer {
    fn logs(&self) -> String {
        String::from_utf8_lossy(&self.logs.lock().unwrap()).into_owned()
    }
}

/// Collects a pipe into a buffer on a thread.
fn drain(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&logs);
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    logs
}

/// Starts the Python TLS greeting server ([`PY_TLS_SERVER`]) with `pair` and `opts`,
/// and reads the address it announces.
fn py_server(pair: &Pair, opts: &[&str]) -> Peer {
    let mut child = KillOnDrop(
        Command::new("python3")
            .arg("-c")
            .arg(PY_TLS_SERVER)
            .arg(&pair.cert)
            .arg(&pair.key)
            .args(opts)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start python3"),
    );
    let logs = drain(child.0.stderr.take().expect("stderr"));
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let line = rx.recv_timeout(IO_TIMEOUT).unwrap_or_else(|_| {
        panic!(
            "the Python TLS server did not announce its address: {}",
            String::from_utf8_lossy(&logs.lock().unwrap())
        )
    });
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected announcement {line:?}"))
        .to_string();
    Peer {
        _child: child,
        addr,
        logs,
    }
}

/// Starts `openssl s_server -rev` (each line comes back reversed) with `pair`, in
/// `version` (`-tls1_2` or `-tls1_3`), with `extra` flags, on a free port; ready once a
/// connection to it succeeds.
fn s_server(pair: &Pair, version: &str, extra: &[&str]) -> Peer {
    for _ in 0..5 {
        // Free when looked at; if another process takes it first, s_server exits and
        // another port is tried.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut child = KillOnDrop(
            Command::new("openssl")
                .args(["s_server", "-accept", &addr.to_string(), "-cert"])
                .arg(&pair.cert)
                .arg("-key")
                .arg(&pair.key)
                .args([version, "-rev"])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start openssl s_server"),
        );
        let logs = drain(child.0.stderr.take().expect("stderr"));
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&addr, IO_TIMEOUT).is_ok() {
                return Peer {
                    _child: child,
                    addr: addr.to_string(),
                    logs,
                };
            }
            if child.0.try_wait().expect("try_wait").is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "openssl s_server did not listen on {addr} within {IO_TIMEOUT:?}"
            );
            // Between connection attempts, bounded by the deadline.
            thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("openssl s_server could not listen on any of 5 free ports");
}

fn assert_failure(run: &Finished, code: u8, says: &[&str]) {
    assert_eq!(run.code, Some(i32::from(code)), "{run:?}");
    for text in says {
        assert!(run.stderr.contains(text), "expected {text:?} in {run:?}");
    }
    assert_eq!(
        run.stderr.trim_end().lines().count(),
        1,
        "one line of diagnostic: {run:?}"
    );
}

#[test]
fn line_framing_over_tls_1_3_and_1_2() {
    if !require("python3", "python3") {
        return;
    }
    let certs = make_certs();
    for opts in [&["--close-notify"][..], &["--close-notify", "--tls1_2"]] {
        let server = py_server(&certs.server, opts);
        let mut args = tls_to(&server.addr, &certs.ca);
        args.extend(["Michael", "Tracy", "Sarah"]);
        let run = client(&args, None);
        assert_eq!(run.code, Some(0), "{opts:?} {run:?}\n{}", server.logs());
        assert_eq!(
            run.stdout, "Welcome!\nHello, Michael!\nHello, Tracy!\nHello, Sarah!\nBye!\n",
            "{run:?}"
        );
        assert_eq!(run.stderr, "", "{run:?}");
    }
}

/// A server that just closes its socket after everything was said (no close_notify) is
/// tolerated, noted at debug level; one that does send it leaves nothing to note.
#[test]
fn a_close_without_close_notify_after_everything_is_tolerated() {
    if !require("python3", "python3") {
        return;
    }
    let certs = make_certs();
    for (opts, noted) in [(&[][..], true), (&["--close-notify"][..], false)] {
        let server = py_server(&certs.server, opts);
        let mut args = vec!["-v"];
        args.extend(tls_to(&server.addr, &certs.ca));
        args.push("Michael");
        let run = client(&args, None);
        assert_eq!(run.code, Some(0), "{run:?}\n{}", server.logs());
        assert_eq!(run.stdout, "Welcome!\nHello, Michael!\nBye!\n", "{run:?}");
        assert_eq!(
            run.stderr.contains("without a TLS close_notify"),
            noted,
            "{opts:?}: {run:?}"
        );
        assert!(run.stderr.contains("TLS 1.3 with"), "{run:?}");
    }
}

/// Closed mid-session without close_notify: today's "closed early", not a TLS failure.
#[test]
fn a_truncated_tls_session_is_closed_early() {
    if !require("python3", "python3") {
        return;
    }
    let certs = make_certs();
    let server = py_server(&certs.server, &["--drop-after-welcome"]);
    let mut args = tls_to(&server.addr, &certs.ca);
    args.extend(["a", "b"]);
    let run = client(&args, None);
    assert_failure(&run, EXIT_PROTOCOL, &["2 names unanswered"]);
    assert_eq!(run.stdout, "Welcome!\n", "{run:?}");
}

/// Piped stdin over TLS: the writer thread and the reader share one TLS connection,
/// and many names in flight (far more than the sockets buffer) neither deadlock it nor
/// lose or reorder a reply.
#[test]
fn piped_names_are_pipelined_over_tls() {
    if !require("python3", "python3") {
        return;
    }
    let certs = make_certs();
    let server = py_server(&certs.server, &["--close-notify"]);
    let count = 50_000;
    let names: String = (0..count).map(|i| format!("name-{i:06}\n")).collect();
    let run = client(&tls_to(&server.addr, &certs.ca), Some(names.as_bytes()));
    assert_eq!(run.code, Some(0), "{run:?}\n{}", server.logs());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), count + 2, "{}", run.stderr);
    assert_eq!(lines[0], "Welcome!");
    for (i, line) in lines[1..=count].iter().enumerate() {
        assert_eq!(*line, format!("Hello, name-{i:06}!"));
    }
    assert_eq!(lines[count + 1], "Bye!");
    assert_eq!(run.stderr, "");
}

#[test]
fn chunk_framing_over_tls() {
    if !require("python3", "python3") {
        return;
    }
    let certs = make_certs();
    let server = py_server(&certs.server, &["--chunk"]);
    let mut args = tls_to(&server.addr, &certs.ca);
    args.extend(["--framing", "chunk", "Michael", "Tracy"]);
    let run = client(&args, None);
    assert_eq!(run.code, Some(0), "{run:?}\n{}", server.logs());
    assert_eq!(
        run.stdout, "Welcome!\nHello, Michael!\nHello, Tracy!\n",
        "{run:?}"
    );
    assert_eq!(run.stderr, "", "{run:?}");
}

#[test]
fn raw_mode_over_tls() {
    if !require("python3", "python3") {
        return;
    }
    let certs = make_certs();
    let server = py_server(&certs.server, &["--close-notify"]);
    let mut args = tls_to(&server.addr, &certs.ca);
    args.push("--raw");
    let run = client(&args, Some(b"Michael\nexit\n"));
    assert_eq!(run.code, Some(0), "{run:?}\n{}", server.logs());
    assert_eq!(
        run.stdout, "Welcome!\r\nHello, Michael!\r\nBye!\r\n",
        "{run:?}"
    );
    // Without `exit`, the end of stdin (close_notify and a half-close) ends it.
    let run = client(&args, Some(b"Tracy\n"));
    assert_eq!(run.code, Some(0), "{run:?}\n{}", server.logs());
    assert_eq!(run.stdout, "Welcome!\r\nHello, Tracy!\r\n", "{run:?}");
}

#[test]
fn interactive_session_over_tls_through_a_pty() {
    if !require("python3", "python3") {
        return;
    }
    let certs = make_certs();
    let server = py_server(&certs.server, &["--close-notify"]);
    let run = run_tool(
        clean_env(&mut Command::new("python3"))
            .arg("-c")
            .arg(PY_PTY_SESSION)
            .arg(bin())
            .arg(&server.addr)
            .arg(&certs.ca),
        None,
        DEADLINE,
    );
    assert_eq!(run.code, Some(0), "{run:?}\n{}", server.logs());
    assert_eq!(run.stdout.trim(), "ok", "{run:?}");
}

/// Without --tls-ca the system's trust roots are used, which SSL_CERT_FILE names.
#[test]
fn the_systems_trust_roots_are_used_without_tls_ca() {
    if !require("python3", "python3") {
        return;
    }
    let certs = make_certs();
    let server = py_server(&certs.server, &["--close-notify"]);
    let args = [
        "--tls",
        "--connect-timeout",
        "30",
        "--connect",
        &server.addr,
        "Michael",
    ];
    let run = client_env(&args, &[("SSL_CERT_FILE", certs.ca.as_path())], None);
    assert_eq!(run.code, Some(0), "{run:?}\n{}", server.logs());
    assert_eq!(run.stdout, "Welcome!\nHello, Michael!\nBye!\n", "{run:?}");
    // A server whose CA is not among them.
    let other = py_server(&certs.other_server, &[]);
    let args = [
        "--tls",
        "--connect-timeout",
        "30",
        "--connect",
        &other.addr,
        "x",
    ];
    let run = client_env(&args, &[("SSL_CERT_FILE", certs.ca.as_path())], None);
    assert_failure(
        &run,
        EXIT_TLS,
        &[
            "not signed by a CA this system trusts (unknown issuer)",
            "--tls-ca FILE",
        ],
    );
}

/// The host of --connect is the name checked: 127.0.0.1 and ::1 as IP addresses,
/// localhost as a DNS name.
#[test]
fn ip_addresses_and_host_names_are_checked_as_such() {
    if !require("python3", "python3") {
        return;
    }
    let certs = make_certs();
    let v4 = py_server(&certs.server, &["--close-notify"]);
    let port = v4.addr.rsplit_once(':').unwrap().1;
    let v6 = py_server(&certs.server, &["--close-notify", "--ipv6"]);
    let by_name = format!("localhost:{port}");
    for addr in [v4.addr.as_str(), by_name.as_str(), v6.addr.as_str()] {
        let mut args = tls_to(addr, &certs.ca);
        args.push("Michael");
        let run = client(&args, None);
        assert_eq!(run.code, Some(0), "{addr}: {run:?}");
        assert_eq!(run.stdout, "Welcome!\nHello, Michael!\nBye!\n", "{run:?}");
    }
}

#[test]
fn openssl_s_server_in_tls_1_2_and_1_3() {
    if !require("openssl", "openssl") {
        return;
    }
    let certs = make_certs();
    for (version, shown) in [("-tls1_2", "TLS 1.2"), ("-tls1_3", "TLS 1.3")] {
        let server = s_server(&certs.server, version, &[]);
        let mut args = vec!["-v"];
        args.extend(tls_to(&server.addr, &certs.ca));
        args.push("--raw");
        let run = client(&args, Some(b"Michael\nTracy\n"));
        assert_eq!(run.code, Some(0), "{version}: {run:?}\n{}", server.logs());
        assert_eq!(run.stdout, "leahciM\nycarT\n", "{version}: {run:?}");
        assert!(run.stderr.contains(&format!("{shown} with")), "{run:?}");
    }
}

/// `openssl s_server -Verify 1 -verify_return_error -CAfile ca.pem`: a client
/// certificate signed by that CA gets in; none, or one from another CA, is exit 7 with
/// a message that says which.
#[test]
fn mutual_tls_against_openssl_s_server() {
    if !require("openssl", "openssl") {
        return;
    }
    let certs = make_certs();
    let verify = [
        "-Verify",
        "1",
        "-verify_return_error",
        "-CAfile",
        p(&certs.ca),
    ];
    for version in ["-tls1_2", "-tls1_3"] {
        let server = s_server(&certs.server, version, &verify);
        let raw = |client_pair: Option<&Pair>| {
            let mut args = tls_to(&server.addr, &certs.ca);
            args.push("--raw");
            if let Some(pair) = client_pair {
                args.extend(["--tls-cert", p(&pair.cert), "--tls-key", p(&pair.key)]);
            }
            client(&args, Some(b"Michael\n"))
        };
        let run = raw(Some(&certs.client));
        assert_eq!(run.code, Some(0), "{version}: {run:?}\n{}", server.logs());
        assert_eq!(run.stdout, "leahciM\n", "{version}: {run:?}");
        let run = raw(None);
        assert_failure(
            &run,
            EXIT_TLS,
            &["the server requires a client certificate: give --tls-cert and --tls-key"],
        );
        let run = raw(Some(&certs.other_client));
        assert_failure(
            &run,
            EXIT_TLS,
            &[
                "the server rejected this client's certificate",
                p(&certs.other_client.cert),
            ],
        );
    }
}

/// A Python server that requires a client certificate: every mode says so without
/// one, and works with one.
#[test]
fn a_server_that_wants_a_client_certificate() {
    if !require("python3", "python3") {
        return;
    }
    let certs = make_certs();
    let client_ca = format!("--client-ca={}", p(&certs.ca));
    let server = py_server(&certs.server, &["--close-notify", &client_ca]);
    for mode in [&["x"][..], &["--framing", "chunk", "x"], &["--raw"]] {
        let mut args = tls_to(&server.addr, &certs.ca);
        args.extend(mode);
        let run = client(&args, Some(b"x\n"));
        assert_failure(
            &run,
            EXIT_TLS,
            &["the server requires a client certificate: give --tls-cert and --tls-key"],
        );
    }
    let mut args = tls_to(&server.addr, &certs.ca);
    let pair = &certs.client;
    args.extend([
        "--tls-cert",
        p(&pair.cert),
        "--tls-key",
        p(&pair.key),
        "Michael",
    ]);
    let run = client(&args, None);
    assert_eq!(run.code, Some(0), "{run:?}\n{}", server.logs());
    assert_eq!(run.stdout, "Welcome!\nHello, Michael!\nBye!\n", "{run:?}");
}

#[test]
fn an_unknown_issuer_says_to_give_tls_ca() {
    if !require("python3", "python3") {
        return;
    }
    let certs = make_certs();
    let server = py_server(&certs.other_server, &[]);
    let mut args = tls_to(&server.addr, &certs.ca);
    args.push("x");
    let run = client(&args, None);
    assert_failure(
        &run,
        EXIT_TLS,
        &[
            &format!("not signed by the CA in --tls-ca {}", p(&certs.ca)),
            "unknown issuer",
            "ca.pem",
        ],
    );
    // With the right CA it works.
    let mut args = tls_to(&server.addr, &certs.other_ca);
    args.push("x");
    let run = client(&args, None);
    assert_eq!(run.code, Some(0), "{run:?}\n{}", server.logs());
}

#[test]
fn a_wrong_name_lists_the_certificates_names() {
    if !require("python3", "python3") {
        return;
    }
    let certs = make_certs();
    let server = py_server(&certs.wrong_name, &[]);
    let mut args = tls_to(&server.addr, &certs.ca);
    args.push("x");
    let run = client(&args, None);
    assert_failure(
        &run,
        EXIT_TLS,
        &[
            "not valid for 127.0.0.1 (it is for wrong.example)",
            "--tls-server-name",
        ],
    );
    let args = [&["--tls-server-name", "wrong.example"][..], &args].concat();
    let run = client(&args, None);
    assert_eq!(run.code, Some(0), "{run:?}\n{}", server.logs());
    assert_eq!(run.stdout, "Welcome!\nHello, x!\nBye!\n", "{run:?}");
}

#[test]
fn an_expired_certificate_says_when() {
    if !require("python3", "python3") {
        return;
    }
    let certs = make_certs();
    let server = py_server(&certs.expired, &[]);
    let mut args = tls_to(&server.addr, &certs.ca);
    args.push("x");
    let run = client(&args, None);
    assert_failure(
        &run,
        EXIT_TLS,
        &[
            "expired on 2001-01-01 00:00:00 UTC",
            "check this machine's clock",
        ],
    );
}

/// `--tls` against tcp-hello's plain-text server: its `Welcome!` is no TLS record.
#[test]
fn a_plain_text_server_is_told_apart() {
    let certs = make_certs();
    let server = Server::start(&[]);
    let addr = server.addr().to_string();
    for mode in [&["x"][..], &["--raw"]] {
        let mut args = tls_to(&addr, &certs.ca);
        args.extend(mode);
        let run = client(&args, Some(b""));
        assert_failure(
            &run,
            EXIT_TLS,
            &[
                "the server does not speak TLS on that port",
                "\"Welcome!\"",
                "drop --tls, or use the server's TLS port",
            ],
        );
    }
}

/// A server that accepts and says nothing cannot hold the handshake past
/// --connect-timeout.
#[test]
fn a_silent_server_times_the_handshake_out() {
    let certs = make_certs();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let holder = thread::spawn(move || {
        let accepted = listener.accept();
        // Holds the connection, silent, until the client has given up.
        let _ = done_rx.recv_timeout(DEADLINE);
        drop(accepted);
    });
    let args = [
        "--tls",
        "--tls-ca",
        p(&certs.ca),
        "--connect-timeout",
        "1",
        "--connect",
        &addr,
        "x",
    ];
    let run = client(&args, None);
    let _ = done_tx.send(());
    holder.join().unwrap();
    assert_failure(
        &run,
        EXIT_TIMEOUT,
        &[
            "nothing from the server for 1 s during the TLS handshake",
            "--connect-timeout",
        ],
    );
    assert!(run.elapsed < Duration::from_secs(30), "{run:?}");
}

/// Missing, unreadable or wrong files are usage errors naming the file, before any
/// connection is tried (the port here is closed).
#[test]
fn bad_tls_files_are_usage_errors_naming_the_file() {
    let certs = make_certs();
    let dir = temp_dir("tls-bad");
    let not_pem = dir.path().join("not-pem.txt");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let with = |extra: &[&str]| {
        let mut args = vec!["--tls", "--connect", &dead];
        args.extend(extra);
        args.push("x");
        client(&args, None)
    };
    let server = &certs.server;
    let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
        (
            vec!["--tls-ca", p(&missing)],
            vec![format!("--tls-ca {}: no such file", p(&missing))],
        ),
        (
            vec!["--tls-ca", p(&not_pem)],
            vec![format!("--tls-ca {}: no certificate found", p(&not_pem))],
        ),
        (
            vec!["--tls-cert", p(&not_pem), "--tls-key", p(&server.key)],
            vec![format!("--tls-cert {}: no certificate found", p(&not_pem))],
        ),
        (
            vec!["--tls-cert", p(&server.cert), "--tls-key", p(&not_pem)],
            vec![format!("--tls-key {}: no private key found", p(&not_pem))],
        ),
        (
            vec![
                "--tls-cert",
                p(&server.cert),
                "--tls-key",
                p(&certs.client.key),
            ],
            vec![format!(
                "--tls-key {}: not the key of the certificate in --tls-cert {}",
                p(&certs.client.key),
                p(&server.cert)
            )],
        ),
        (
            vec!["--tls-cert", p(&server.cert)],
            vec!["--tls-key".to_string()],
        ),
        (
            vec!["--tls-server-name", "not a name"],
            vec!["--tls-server-name \"not a name\" is neither a DNS name nor an IP address".into()],
        ),
    ];
    for (extra, says) in &cases {
        let run = with(extra);
        assert_eq!(run.code, Some(i32::from(EXIT_USAGE)), "{extra:?}: {run:?}");
        for text in says {
            assert!(run.stderr.contains(text.as_str()), "{text:?} in {run:?}");
        }
    }
    // A TLS option without --tls would be ignored: refused instead.
    let run = client(&["--tls-ca", p(&certs.ca), "--connect", &dead, "x"], None);
    assert_eq!(run.code, Some(i32::from(EXIT_USAGE)), "{run:?}");
    assert!(
        run.stderr
            .contains("--tls-ca is for TLS, which is off: add --tls"),
        "{run:?}"
    );
}

/// `TCP_HELLO_TLS` turns TLS on as --tls does, and takes 1/0 as well as true/false.
#[test]
fn tcp_hello_tls_turns_tls_on() {
    let certs = make_certs();
    let server = Server::start(&[]);
    let addr = server.addr().to_string();
    let args = ["--tls-ca", p(&certs.ca), "--connect", &addr, "x"];
    let mut cmd = hello_cmd("client", &args);
    cmd.env("TCP_HELLO_TLS", "1");
    let run = run_tool(&mut cmd, None, DEADLINE);
    // The plain-text server shows TLS was on.
    assert_failure(&run, EXIT_TLS, &["does not speak TLS"]);
    let mut cmd = hello_cmd("client", &["--connect", &addr, "x"]);
    cmd.env("TCP_HELLO_TLS", "0");
    let run = run_tool(&mut cmd, None, DEADLINE);
    assert_eq!(run.code, Some(0), "{run:?}");
}

/// The certificates are written where the tests expect them, keys for the owner only.
#[test]
fn test_certificates_are_made_at_run_time() {
    let certs: Certs = make_certs();
    for path in [&certs.ca, &certs.server.cert, &certs.client.key] {
        assert!(path.starts_with(&certs.dir), "{}", path.display());
        assert!(std::fs::metadata(path).is_ok(), "{}", path.display());
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&certs.server.key)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
    let dir = certs.dir.clone();
    drop(certs);
    assert!(!dir.exists());
}
