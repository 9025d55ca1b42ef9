//! `tcp-hello client` end to end: the client binary against the real server on port 0,
//! against fake servers made here with std sockets (silent, pipelining-only, closing
//! early), against the Python tutorial's chunk server (tests/fixtures), through a pty
//! (tests/fixtures/pty_session.py), and in `--raw` mode against `python3 -m http.server`.
use crate::common::*;

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tcp_hello::client::{EXIT_BUSY, EXIT_CONNECT, EXIT_PROTOCOL, EXIT_TIMEOUT, EXIT_USAGE};

/// No client run may take longer than this; a hang fails the test instead of CI.
const DEADLINE: Duration = Duration::from_secs(60);

/// `tcp-hello client ARGS` with none of the client's environment variables inherited.
fn client_cmd(args: &[&str]) -> Command {
    hello_cmd("client", args)
}

/// Waits for `child` to exit, killing it if it is still running at `limit`.
fn wait_deadline(child: &mut Child, limit: Duration) -> ExitStatus {
    wait_for_exit(child, limit).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("process did not exit within {limit:?}; killed");
    })
}

/// What the client's stdin gets.
enum Input {
    /// These bytes, then EOF.
    Bytes(Vec<u8>),
    /// Whatever this writes (on its own thread), then EOF.
    Writer(Box<dyn FnOnce(&mut ChildStdin) + Send>),
    /// Nothing, and no EOF until the client has exited.
    Held,
}

/// A finished client run.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let out: String = self.stdout.chars().take(2000).collect();
        write!(
            f,
            "exit {:?} after {:?}\n--- stdout ---\n{out}\n--- stderr ---\n{}",
            self.code, self.elapsed, self.stderr
        )
    }
}

/// Runs the client to completion (within [`DEADLINE`]) and collects its output.
fn run_client(args: &[&str], input: Input) -> Run {
    let started = Instant::now();
    let mut child = client_cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tcp-hello client");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut held = None;
    let feeder = match input {
        Input::Bytes(bytes) => Some(thread::spawn(move || {
            // The client may exit (e.g. on a failure) before reading everything.
            let _ = stdin.write_all(&bytes);
        })),
        Input::Writer(write) => Some(thread::spawn(move || write(&mut stdin))),
        Input::Held => {
            held = Some(stdin);
            None
        }
    };
    let stdout = collect(child.stdout.take().expect("stdout"));
    let stderr = collect(child.stderr.take().expect("stderr"));
    let status = wait_deadline(&mut child, DEADLINE);
    let elapsed = started.elapsed();
    drop(held);
    if let Some(feeder) = feeder {
        feeder.join().expect("stdin feeder");
    }
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout.recv().expect("stdout")).into_owned(),
        stderr: String::from_utf8_lossy(&stderr.recv().expect("stderr")).into_owned(),
        elapsed,
    }
}

/// Reads a pipe to its end on a thread.
fn collect(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        let _ = tx.send(all);
    });
    rx
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

/// A helper process (a Python fixture), killed on drop.
struct Helper {
    child: Child,
    /// Its first line of stdout, which announces where it listens.
    announcement: String,
}

impl Helper {
    fn start(cmd: &mut Command) -> Helper {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start helper (is python3 installed?)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so that the helper never blocks on a full pipe.
            for _ in lines {}
        });
        let announcement = rx.recv_timeout(IO_TIMEOUT).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("helper {cmd:?} did not announce its address");
        });
        Helper {
            child,
            announcement,
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tutorial's chunk server (tests/fixtures/tutorial_server.py) on a free port.
fn tutorial_server() -> (Helper, String) {
    let helper = Helper::start(Command::new("python3").arg(fixture("tutorial_server.py")));
    let addr = helper
        .announcement
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected announcement {:?}", helper.announcement))
        .to_string();
    (helper, addr)
}

/// A fake server on a free port: `serve` runs on its own thread with the one
/// connection it accepts; the test ends with the listener dropped.
fn fake_server(serve: impl FnOnce(TcpStream) + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
            serve(stream);
        }
    });
    addr
}

#[test]
fn names_as_arguments_the_tutorial_in_one_command() {
    let server = Server::start(&[]);
    let addr = server.addr().to_string();
    let run = run_client(
        &["--connect", &addr, "Michael", "Tracy", "Sarah"],
        Input::Bytes(vec![]),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stdout, "Welcome!\nHello, Michael!\nHello, Tracy!\nHello, Sarah!\nBye!\n",
        "{run:?}"
    );
    assert_eq!(run.stderr, "", "{run:?}");
}

#[test]
fn piped_stdin_is_silent_but_for_the_server() {
    let server = Server::start(&[]);
    let addr = server.addr().to_string();
    // Blank lines get no reply; CRLF and a last line without newline are fine.
    let input = b"Alice\n\n   \nBob\r\n\xe5\xbc\xa0\xe4\xb8\x89\nCarol".to_vec();
    let run = run_client(&["--connect", &addr], Input::Bytes(input));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        lines(&run.stdout),
        [
            "Welcome!",
            "Hello, Alice!",
            "Hello, Bob!",
            "Hello, 张三!",
            "Hello, Carol!",
            "Bye!"
        ],
        "{run:?}"
    );
    assert_eq!(run.stderr, "", "{run:?}");
}

#[test]
fn an_exit_line_ends_the_input() {
    let server = Server::start(&[]);
    let addr = server.addr().to_string();
    for exit in ["exit", "QUIT"] {
        let input = format!("Alice\n{exit}\nBob\n").into_bytes();
        let run = run_client(&["--connect", &addr], Input::Bytes(input));
        assert_eq!(run.code, Some(0), "{run:?}");
        assert_eq!(
            lines(&run.stdout),
            ["Welcome!", "Hello, Alice!", "Bye!"],
            "{run:?}"
        );
    }
}

#[test]
fn hundred_thousand_names_are_pipelined_and_answered_in_order() {
    const N: usize = 100_000;
    let server = Server::start(&[]);
    let addr = server.addr().to_string();
    let write = Box::new(|stdin: &mut ChildStdin| {
        let mut w = BufWriter::new(stdin);
        for i in 0..N {
            writeln!(w, "name{i}").expect("write stdin");
        }
        w.flush().expect("flush stdin");
    });
    let run = run_client(&["--connect", &addr], Input::Writer(write));
    assert_eq!(run.code, Some(0), "{run:?}");
    let got = lines(&run.stdout);
    assert_eq!(got.len(), N + 2, "{run:?}");
    assert_eq!(got[0], "Welcome!");
    for (i, line) in got[1..=N].iter().enumerate() {
        assert_eq!(*line, format!("Hello, name{i}!"), "reply {i}");
    }
    assert_eq!(got[N + 1], "Bye!");
    eprintln!("{N} names in {:?}", run.elapsed);
    // A round trip per name would still pass on loopback; the pipelining test below
    // proves pipelining. This bound catches a pathological slowdown.
    assert!(run.elapsed < Duration::from_secs(30), "{:?}", run.elapsed);
}

#[test]
fn names_are_sent_without_waiting_for_replies() {
    // This server answers nothing until it has received every name: a client that
    // waited for each reply before sending the next name would time out.
    const N: usize = 1000;
    let addr = fake_server(|stream| {
        let mut out = &stream;
        out.write_all(b"Welcome!\r\n").unwrap();
        let mut reader = BufReader::new(&stream);
        let mut names = Vec::new();
        let mut line = String::new();
        while names.len() < N {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                return;
            }
            names.push(line.trim_end().to_string());
        }
        let replies: String = names.iter().map(|n| format!("Hello, {n}!\r\n")).collect();
        out.write_all(replies.as_bytes()).unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "exit\n");
        out.write_all(b"Bye!\r\n").unwrap();
    });
    let input: String = (0..N).map(|i| format!("n{i}\n")).collect();
    let run = run_client(
        &["--connect", &addr.to_string(), "--reply-timeout", "5"],
        Input::Bytes(input.into_bytes()),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    let got = lines(&run.stdout);
    assert_eq!(got.len(), N + 2, "{run:?}");
    assert_eq!(got[N], format!("Hello, n{}!", N - 1));
}

#[test]
fn connection_refused_names_cause_and_fix() {
    let dead = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = dead.local_addr().expect("local_addr").to_string();
    drop(dead);
    let run = run_client(&["--connect", &addr, "Alice"], Input::Bytes(vec![]));
    assert_eq!(run.code, Some(i32::from(EXIT_CONNECT)), "{run:?}");
    let expected = format!("connection refused: is tcp-hello serve running on {addr}?");
    assert!(run.stderr.contains(&expected), "{run:?}");
    assert_eq!(run.stdout, "", "{run:?}");
}

#[test]
fn connect_timeout_is_could_not_connect() {
    // A listener with a backlog of 0 that never accepts: once its queue is full the
    // kernel drops further SYNs, so a connect times out. (A non-routable address such
    // as 10.255.255.1 is refused at once in some sandboxes, so it cannot be relied on.)
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    listener
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .expect("bind");
    listener.listen(0).expect("listen");
    let addr = listener
        .local_addr()
        .expect("local_addr")
        .as_socket()
        .expect("inet");
    let mut fillers = Vec::new();
    let full =
        (0..16).any(
            |_| match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) => {
                    fillers.push(s);
                    false
                }
                Err(_) => true,
            },
        );
    assert!(full, "the listen queue never filled up");
    let run = run_client(
        &[
            "--connect",
            &addr.to_string(),
            "--connect-timeout",
            "1",
            "Alice",
        ],
        Input::Bytes(vec![]),
    );
    assert_eq!(run.code, Some(i32::from(EXIT_CONNECT)), "{run:?}");
    assert!(run.stderr.contains("timed out after 1 s"), "{run:?}");
    assert!(run.stderr.contains("--connect-timeout"), "{run:?}");
    assert!(run.elapsed >= Duration::from_millis(900), "{run:?}");
    assert!(run.elapsed < Duration::from_secs(10), "{run:?}");
}

#[test]
fn a_silent_server_times_out() {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let addr = fake_server(move |_stream| {
        // Holds the connection open, silent, until the test is over.
        let _ = release_rx.recv();
    });
    let run = run_client(
        &[
            "--connect",
            &addr.to_string(),
            "--reply-timeout",
            "1",
            "Alice",
        ],
        Input::Bytes(vec![]),
    );
    drop(release_tx);
    assert_eq!(run.code, Some(i32::from(EXIT_TIMEOUT)), "{run:?}");
    assert!(
        run.stderr
            .contains("nothing from the server for 1 s (waiting for its welcome)"),
        "{run:?}"
    );
    assert!(run.stderr.contains("--reply-timeout"), "{run:?}");
    assert!(run.elapsed < Duration::from_secs(10), "{run:?}");
}

#[test]
fn a_busy_server_is_its_own_failure() {
    let server = Server::start(&["--max-connections", "1"]);
    let mut first = server.connect();
    assert_eq!(first.text_line(), "Welcome!");
    let run = run_client(
        &["--connect", &server.addr().to_string(), "Alice"],
        Input::Bytes(vec![]),
    );
    assert_eq!(run.code, Some(i32::from(EXIT_BUSY)), "{run:?}");
    assert_eq!(
        lines(&run.stdout),
        ["ERROR server busy (1 connections), try again later"],
        "{run:?}"
    );
    assert!(run.stderr.contains("server busy"), "{run:?}");
    assert!(run.stderr.contains("try again later"), "{run:?}");
}

/// A server that never ends a line (chunk framing) and closes first: the failure names
/// the framing, not the server's log.
#[test]
fn a_server_that_never_ends_a_line_is_told_apart() {
    let server = Server::start(&["--framing", "chunk", "--idle-timeout", "1"]);
    let run = run_client(
        &["--connect", &server.addr().to_string(), "Al"],
        Input::Bytes(vec![]),
    );
    assert_eq!(run.code, Some(i32::from(EXIT_PROTOCOL)), "{run:?}");
    assert_eq!(
        lines(&run.stdout),
        ["Welcome!ERROR idle for 1 s, closing"],
        "{run:?}"
    );
    assert!(run.stderr.contains("without ever ending a line"), "{run:?}");
    assert!(run.stderr.contains("use --framing chunk"), "{run:?}");
}

/// Input with no newline cannot grow the client without bound: past the longest line
/// any server answers, it stops with a message saying so.
#[test]
fn a_line_longer_than_any_server_answers_stops_the_client() {
    let server = Server::start(&[]);
    let run = run_client(
        &["--connect", &server.addr().to_string()],
        Input::Bytes(vec![b'a'; 17 << 20]),
    );
    assert_eq!(run.code, Some(1), "{:?}", run.stderr);
    assert!(
        run.stderr.contains("longer than 16 MiB"),
        "{:?}",
        run.stderr
    );
}

/// Names given as arguments are bytes, as on stdin: they need not be UTF-8.
#[test]
fn a_name_argument_need_not_be_utf8() {
    use std::os::unix::ffi::OsStringExt;
    let server = Server::start(&[]);
    let mut cmd = client_cmd(&["--connect", &server.addr().to_string()]);
    cmd.arg(std::ffi::OsString::from_vec(b"\xfe(ab".to_vec()));
    let run = run_tool(&mut cmd, None, DEADLINE);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stdout, "Welcome!\nHello, \u{fffd}(ab!\nBye!\n",
        "{run:?}"
    );
}

/// A 0xFF byte in a name goes out as telnet's `IAC IAC` and comes back doubled in the
/// reply; the client prints the one byte the name had, in both framings.
#[test]
fn a_0xff_in_a_name_is_printed_as_one_byte() {
    use std::os::unix::ffi::OsStringExt;
    for framing in ["line", "chunk"] {
        let server = Server::start(&["--framing", framing]);
        let mut cmd = client_cmd(&[
            "--connect",
            &server.addr().to_string(),
            "--framing",
            framing,
        ]);
        cmd.arg(std::ffi::OsString::from_vec(b"a\xff\xfb\x01".to_vec()));
        let out = cmd.stdin(Stdio::null()).output().expect("run the client");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.stdout,
            b"Welcome!\nHello, a\xff\xfb\x01!\nBye!\n",
            "{framing}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// A name that is only a CR (from `\r\r\n`) is a name to the server too: the client
/// must not send it in a way that makes it blank, or it waits for a reply that never
/// comes.
#[test]
fn a_name_ending_in_cr_keeps_its_cr() {
    let server = Server::start(&["--farewell", ""]);
    let run = run_client(
        &["--connect", &server.addr().to_string()],
        Input::Bytes(b"Alice\n\r\r\nBob\n".to_vec()),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stdout, "Welcome!\nHello, Alice!\nHello, \r!\nHello, Bob!\n",
        "{run:?}"
    );
}

/// A refusal under `--max-per-source` is the same failure, with its own fix.
#[test]
fn a_per_address_refusal_is_a_busy_server_too() {
    let server = Server::start(&["--max-per-source", "1"]);
    let mut first = server.connect();
    assert_eq!(first.text_line(), "Welcome!");
    let run = run_client(
        &["--connect", &server.addr().to_string(), "Alice"],
        Input::Bytes(vec![]),
    );
    assert_eq!(run.code, Some(i32::from(EXIT_BUSY)), "{run:?}");
    assert_eq!(
        lines(&run.stdout),
        ["ERROR too many connections from your address (1), try again later"],
        "{run:?}"
    );
    assert!(run.stderr.contains("--max-per-source"), "{run:?}");
}

#[test]
fn a_name_too_long_is_printed_and_fails_the_run() {
    let server = Server::start(&["--max-line", "5"]);
    let addr = server.addr().to_string();
    let run = run_client(
        &["--connect", &addr, "Al", "Bartholomew", "Cy"],
        Input::Bytes(vec![]),
    );
    assert_eq!(run.code, Some(i32::from(EXIT_PROTOCOL)), "{run:?}");
    assert_eq!(
        lines(&run.stdout),
        [
            "Welcome!",
            "Hello, Al!",
            "ERROR line too long (max 5 bytes), skipped",
            "Hello, Cy!",
            "Bye!"
        ],
        "{run:?}"
    );
    assert!(run.stderr.contains("refused 1 name"), "{run:?}");
    assert!(run.stderr.contains("--max-line"), "{run:?}");
}

#[test]
fn a_server_closing_before_answering_is_a_protocol_error() {
    let addr = fake_server(|stream| {
        (&stream).write_all(b"Welcome!\r\n").unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        (&stream)
            .write_all(format!("Hello, {}!\r\n", line.trim()).as_bytes())
            .unwrap();
        // Reads whatever else came, so that the close is a FIN, not a reset.
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut rest = Vec::new();
        let _ = (&stream).read_to_end(&mut rest);
    });
    let run = run_client(
        &["--connect", &addr.to_string(), "a", "b", "c"],
        Input::Bytes(vec![]),
    );
    assert_eq!(run.code, Some(i32::from(EXIT_PROTOCOL)), "{run:?}");
    assert_eq!(lines(&run.stdout), ["Welcome!", "Hello, a!"], "{run:?}");
    assert!(run.stderr.contains("2 names unanswered"), "{run:?}");
}

#[test]
fn the_servers_idle_close_is_a_timeout() {
    let server = Server::start(&["--idle-timeout", "1"]);
    let run = run_client(&["--connect", &server.addr().to_string()], Input::Held);
    assert_eq!(run.code, Some(i32::from(EXIT_TIMEOUT)), "{run:?}");
    assert_eq!(
        lines(&run.stdout),
        ["Welcome!", "ERROR idle for 1 s, closing"],
        "{run:?}"
    );
    assert!(run.stderr.contains("--idle-timeout"), "{run:?}");
}

#[test]
fn host_names_and_ipv6_addresses_connect() {
    let server = Server::start(&[]);
    let target = format!("localhost:{}", server.addr().port());
    let run = run_client(&["--connect", &target, "Alice"], Input::Bytes(vec![]));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(lines(&run.stdout), ["Welcome!", "Hello, Alice!", "Bye!"]);

    let server = Server::start_with_binds(&["--bind", "[::1]:0"], 1);
    let target = format!("[::1]:{}", server.addr().port());
    let run = run_client(&["--connect", &target, "Bob"], Input::Bytes(vec![]));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(lines(&run.stdout), ["Welcome!", "Hello, Bob!", "Bye!"]);
}

#[test]
fn bad_addresses_are_usage_errors() {
    for bad in ["localhost:http", "a:b:c", "host:0"] {
        let run = run_client(&["--connect", bad, "x"], Input::Bytes(vec![]));
        assert_eq!(run.code, Some(i32::from(EXIT_USAGE)), "{bad}: {run:?}");
        assert!(run.stderr.contains(bad), "{run:?}");
    }
}

#[test]
fn a_closed_stdout_ends_the_client_quietly() {
    let server = Server::start(&[]);
    let mut child = client_cmd(&["--connect", &server.addr().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start client");
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = thread::spawn(move || {
        let mut w = BufWriter::new(&mut stdin);
        for i in 0..200_000 {
            if writeln!(w, "name{i}").is_err() {
                return;
            }
        }
    });
    let stderr = collect(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("first line");
    assert_eq!(first, "Welcome!\n");
    // The reader is gone, like `tcp-hello client | head -1`.
    let status = wait_deadline(&mut child, DEADLINE);
    feeder.join().expect("feeder");
    let stderr = String::from_utf8_lossy(&stderr.recv().expect("stderr")).into_owned();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr, "");
}

#[test]
fn interactive_session_through_a_pty() {
    if !require("python3", "python3") {
        return;
    }
    let server = Server::start(&[]);
    let mut child = Command::new("python3")
        .arg(fixture("pty_session.py"))
        .arg(bin())
        .arg(server.addr().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3 (is it installed?)");
    let stdout = collect(child.stdout.take().expect("stdout"));
    let stderr = collect(child.stderr.take().expect("stderr"));
    let status = wait_deadline(&mut child, DEADLINE);
    let stdout = String::from_utf8_lossy(&stdout.recv().expect("stdout")).into_owned();
    let stderr = String::from_utf8_lossy(&stderr.recv().expect("stderr")).into_owned();
    assert!(status.success(), "{status}\n{stdout}\n{stderr}");
    assert!(stdout.contains("names then Ctrl-D: ok"), "{stdout}");
    assert!(stdout.contains("typed exit: ok"), "{stdout}");
}

#[test]
fn chunk_framing_against_the_tutorials_python_server() {
    if !require("python3", "python3") {
        return;
    }
    let (_helper, addr) = tutorial_server();
    let run = run_client(
        &[
            "--framing",
            "chunk",
            "--connect",
            &addr,
            "Michael",
            "Tracy",
            "Sarah",
        ],
        Input::Bytes(vec![]),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stdout, "Welcome!\nHello, Michael!\nHello, Tracy!\nHello, Sarah!\n",
        "{run:?}"
    );
    assert_eq!(run.stderr, "", "{run:?}");
    // The server sleeps a second before each answer, the close after `exit` included.
    assert!(run.elapsed >= Duration::from_secs(4), "{run:?}");
}

/// The tutorial's server closes only on exactly `exit`: any exit word the client
/// recognises is sent that way.
#[test]
fn chunk_framing_sends_any_exit_word_as_exit() {
    if !require("python3", "python3") {
        return;
    }
    let (_helper, addr) = tutorial_server();
    let run = run_client(
        &["--framing", "chunk", "--connect", &addr],
        Input::Bytes(b"Michael\n  QUIT \n".to_vec()),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "Welcome!\nHello, Michael!\n", "{run:?}");
}

#[test]
fn line_framing_against_a_chunk_server_suggests_chunk_framing() {
    if !require("python3", "python3") {
        return;
    }
    let (_helper, addr) = tutorial_server();
    let run = run_client(
        &["--connect", &addr, "--reply-timeout", "1", "Michael"],
        Input::Bytes(vec![]),
    );
    assert_eq!(run.code, Some(i32::from(EXIT_TIMEOUT)), "{run:?}");
    assert_eq!(run.stdout, "Welcome!\n", "{run:?}");
    assert!(run.stderr.contains("--framing chunk"), "{run:?}");
}

/// Blank names are skipped, judged as the server will see them: in chunk framing it
/// strips a message's trailing CR and LF, so a name that is only a CR is blank there
/// too, and waiting for its reply would time out.
#[test]
fn chunk_framing_with_piped_stdin_against_our_chunk_server() {
    let server = Server::start(&["--framing", "chunk"]);
    let run = run_client(
        &[
            "--framing",
            "chunk",
            "--reply-timeout",
            "2",
            "--connect",
            &server.addr().to_string(),
        ],
        Input::Bytes(b"Alice\n\n\r\r\nBob\n".to_vec()),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stdout, "Welcome!\nHello, Alice!\nHello, Bob!\nBye!\n",
        "{run:?}"
    );
}

#[test]
fn raw_mode_is_a_byte_pipe() {
    let server = Server::start(&[]);
    let addr = server.addr().to_string();
    let run = run_client(
        &["--raw", "--connect", &addr],
        Input::Bytes(b"Alice\nexit\n".to_vec()),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stdout, "Welcome!\r\nHello, Alice!\r\nBye!\r\n",
        "{run:?}"
    );
    // Without `exit`, the half-close at the end of stdin ends the session.
    let run = run_client(
        &["--raw", "--connect", &addr],
        Input::Bytes(b"Bob\n".to_vec()),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "Welcome!\r\nHello, Bob!\r\n", "{run:?}");
}

/// Like `nc -N`: a server that half-closes first still gets the rest of stdin.
#[test]
fn raw_mode_keeps_sending_after_the_server_half_closes() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (closed_tx, closed_rx) = mpsc::channel();
    let peer = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        conn.write_all(b"hello\n").unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        closed_tx.send(()).unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        got
    });
    let write = Box::new(move |stdin: &mut ChildStdin| {
        let _ = stdin.write_all(b"first\n");
        let _ = closed_rx.recv_timeout(IO_TIMEOUT);
        // Not for readiness: gives the client time to see the FIN before the rest
        // arrives, which is what used to end it early.
        thread::sleep(Duration::from_millis(200));
        let _ = stdin.write_all(b"more\n");
    });
    let run = run_client(&["--raw", "--connect", &addr], Input::Writer(write));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "hello\n", "{run:?}");
    assert_eq!(
        String::from_utf8_lossy(&peer.join().unwrap()),
        "first\nmore\n"
    );
}

#[test]
fn raw_mode_fetches_a_web_page() {
    if !require("python3", "python3") {
        return;
    }
    let helper = Helper::start(
        Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(fixture("www"))
            .arg("0"),
    );
    // `Serving HTTP on 127.0.0.1 port 12345 (http://127.0.0.1:12345/) ...`
    let port = helper
        .announcement
        .split_once(" port ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected announcement {:?}", helper.announcement));
    let request = b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let run = run_client(
        &["--raw", "--connect", &format!("127.0.0.1:{port}")],
        Input::Bytes(request.to_vec()),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.starts_with("HTTP/1.0 200 OK\r\n"), "{run:?}");
    assert!(
        run.stdout
            .ends_with("\r\n\r\nHello from tcp-hello client --raw.\n"),
        "{run:?}"
    );
}

/// A timeout past what a deadline can hold is refused up front, naming the flag, against
/// a live server and a dead port alike: never a panic.
#[test]
fn huge_timeouts_are_usage_errors_not_panics() {
    let server = Server::start(&[]);
    let live = server.addr().to_string();
    let dead = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = dead.local_addr().expect("local_addr").to_string();
    drop(dead);
    for flag in ["--reply-timeout", "--connect-timeout"] {
        for addr in [&live, &dead_addr] {
            let run = run_client(
                &["--connect", addr, flag, "1e19", "a"],
                Input::Bytes(vec![]),
            );
            assert_eq!(
                run.code,
                Some(i32::from(EXIT_USAGE)),
                "{flag} {addr}: {run:?}"
            );
            assert!(run.stderr.contains(&format!("'{flag} <SECS>'")), "{run:?}");
            assert!(run.stderr.contains("one year"), "{run:?}");
            assert!(!run.stderr.contains("panick"), "{run:?}");
        }
    }
    // The largest accepted works.
    let run = run_client(
        &[
            "--connect",
            &live,
            "--reply-timeout",
            "31536000",
            "--connect-timeout",
            "31536000",
            "a",
        ],
        Input::Bytes(vec![]),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        lines(&run.stdout),
        ["Welcome!", "Hello, a!", "Bye!"],
        "{run:?}"
    );
}

/// Sends `a`, stays quiet past the server's 1 s idle timeout, then sends `then` (if any)
/// and ends stdin: what a client gets from the server's idle close in that framing.
fn idle_close_run(framing: &str, then: Option<&'static str>, raw: bool) -> Run {
    let server = Server::start(&["--framing", framing, "--idle-timeout", "1"]);
    let write = Box::new(move |stdin: &mut ChildStdin| {
        let _ = stdin.write_all(b"a\n");
        let _ = stdin.flush();
        // Not for readiness: this is the quiet spell the server closes on, 1 s and margin.
        thread::sleep(Duration::from_millis(2500));
        if let Some(then) = then {
            let _ = stdin.write_all(then.as_bytes());
        }
    });
    let addr = server.addr().to_string();
    let mut args = vec!["--framing", framing, "--connect", &addr];
    if raw {
        args.push("--raw");
    }
    run_client(&args, Input::Writer(write))
}

fn assert_idle_close(run: &Run, expected_stdout: &str) {
    assert_eq!(run.code, Some(i32::from(EXIT_TIMEOUT)), "{run:?}");
    assert_eq!(run.stdout, expected_stdout, "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(
        run.stderr.contains("sent nothing for too long")
            && run.stderr.contains("raise the server's --idle-timeout"),
        "{run:?}"
    );
}

/// The idle notice comes while the client waits on stdin: in chunk framing it must not
/// be taken for the answer to the next name, nor ignored when stdin then ends.
#[test]
fn an_idle_close_while_stdin_is_quiet_is_a_timeout_in_chunk_framing() {
    for then in [Some("b\n"), None] {
        let run = idle_close_run("chunk", then, false);
        assert_idle_close(&run, "Welcome!\nHello, a!\nERROR idle for 1 s, closing\n");
    }
}

#[test]
fn an_idle_close_while_stdin_is_quiet_is_a_timeout_in_line_framing() {
    for then in [Some("b\n"), None] {
        let run = idle_close_run("line", then, false);
        assert_idle_close(&run, "Welcome!\nHello, a!\nERROR idle for 1 s, closing\n");
    }
}

/// `--framing chunk` against a line server: its welcome ended with CRLF, so when the
/// name then goes unanswered the mistake is the framing, whichever of the reply timeout
/// or the server's idle close comes first.
#[test]
fn chunk_framing_against_a_line_server_says_to_drop_it() {
    let server = Server::start(&[]);
    let run = run_client(
        &[
            "--framing",
            "chunk",
            "--reply-timeout",
            "1",
            "--connect",
            &server.addr().to_string(),
            "Michael",
        ],
        Input::Bytes(vec![]),
    );
    assert_eq!(run.code, Some(i32::from(EXIT_TIMEOUT)), "{run:?}");
    assert_eq!(run.stdout, "Welcome!\n", "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(
        run.stderr.contains("its welcome ended with a line ending")
            && run.stderr.contains("frames lines")
            && run.stderr.contains("drop --framing chunk"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("overloaded"), "{run:?}");

    let server = Server::start(&["--idle-timeout", "1"]);
    let run = run_client(
        &[
            "--framing",
            "chunk",
            "--connect",
            &server.addr().to_string(),
            "Michael",
        ],
        Input::Bytes(vec![]),
    );
    assert_eq!(run.code, Some(i32::from(EXIT_TIMEOUT)), "{run:?}");
    assert_eq!(
        run.stdout, "Welcome!\nERROR idle for 1 s, closing\n",
        "{run:?}"
    );
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(
        run.stderr.contains("its welcome ended with a line ending")
            && run.stderr.contains("drop --framing chunk"),
        "{run:?}"
    );
    assert!(!run.stderr.contains("send names sooner"), "{run:?}");
}

/// A chunk server may end its welcome with a newline and still frame by reads: the
/// client must not give up on it for that, nor add newlines to names.
#[test]
fn chunk_framing_against_a_chunk_server_whose_welcome_ends_a_line() {
    let server = Server::start(&["--framing", "chunk", "--welcome", "Welcome!\r\n"]);
    let run = run_client(
        &[
            "--framing",
            "chunk",
            "--reply-timeout",
            "5",
            "--connect",
            &server.addr().to_string(),
            "Michael",
            "Tracy",
        ],
        Input::Bytes(vec![]),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stdout, "Welcome!\nHello, Michael!\nHello, Tracy!\nBye!\n",
        "{run:?}"
    );
    assert_eq!(run.stderr, "", "{run:?}");
}

/// `--raw` prints the busy notice unchanged, and exits as the table says for it: 6.
#[test]
fn raw_mode_exits_busy_when_the_server_is_busy() {
    for (server_args, framing, notice, fix) in [
        (
            &["--max-connections", "1"][..],
            "line",
            "ERROR server busy (1 connections), try again later\r\n",
            "--max-connections",
        ),
        (
            &["--max-connections", "1", "--framing", "chunk"][..],
            "chunk",
            "ERROR server busy (1 connections), try again later",
            "--max-connections",
        ),
        (
            &["--max-per-source", "1"][..],
            "line",
            "ERROR too many connections from your address (1), try again later\r\n",
            "--max-per-source",
        ),
    ] {
        let server = Server::start(server_args);
        let first = Conn::open(server.addr());
        let mut welcome = [0u8; 8];
        (&first.stream).read_exact(&mut welcome).expect("welcome");
        assert_eq!(&welcome, b"Welcome!");
        // Empty stdin: only a FIN goes out, which cannot make the server's close a reset.
        let run = run_client(
            &[
                "--raw",
                "--framing",
                framing,
                "--connect",
                &server.addr().to_string(),
            ],
            Input::Bytes(vec![]),
        );
        assert_eq!(run.code, Some(i32::from(EXIT_BUSY)), "{run:?}");
        assert_eq!(run.stdout, notice, "{run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
        assert!(
            run.stderr.contains("server busy (") && run.stderr.contains(fix),
            "{run:?}"
        );
    }
}

/// `--raw` prints the idle notice unchanged, and exits as the table says for it: 4.
#[test]
fn raw_mode_exits_timeout_when_the_server_closes_it_as_idle() {
    let run = idle_close_run("line", None, true);
    assert_idle_close(
        &run,
        "Welcome!\r\nHello, a!\r\nERROR idle for 1 s, closing\r\n",
    );
    let run = idle_close_run("chunk", Some("b\n"), true);
    assert_idle_close(&run, "Welcome!Hello, a!ERROR idle for 1 s, closing");
}
