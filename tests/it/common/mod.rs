//! Shared by the integration tests: start the real binary on port 0, read the address
//! it announces, talk to it over real sockets with timeouts, stop it on drop.
#![allow(dead_code)]

pub mod tls;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// Every socket read or write in the tests gives up after this long.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to `server` from the source address `from` (any port), with timeouts.
pub fn connect_from(from: std::net::IpAddr, server: SocketAddr) -> TcpStream {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(server),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .expect("socket");
    socket
        .bind(&SocketAddr::new(from, 0).into())
        .unwrap_or_else(|e| panic!("bind the client to {from}: {e}"));
    socket
        .connect_timeout(&server.into(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect from {from} to {server}: {e}"));
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Checks that the server closed `stream` without sending a byte (EOF, or a reset);
/// `what` names the connection in the failure.
pub fn assert_closed_without_a_byte(stream: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
            ) => {}
        Ok(n) => panic!(
            "{what}: should be closed without a byte, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => panic!("{what}: should have been closed: {e}"),
    }
}

/// The address of a server started with `--metrics 127.0.0.1:0`: its next stdout line,
/// `metrics on ADDR`.
pub fn metrics_addr(server: &Server) -> SocketAddr {
    let line = server.stdout_line();
    line.strip_prefix("metrics on ")
        .unwrap_or_else(|| panic!("expected `metrics on ADDR`, got {line:?}"))
        .parse()
        .expect("metrics address")
}

/// The body of `GET /metrics` from a metrics listener at `addr`.
pub fn metrics_body(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to metrics");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read metrics");
    let (_, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    body.to_string()
}

/// `GET path` from a metrics listener at `addr` (`/healthz`, `/readyz`): the status
/// code and the body.
pub fn probe(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to metrics");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the answer");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_string())
}

/// The samples of `GET /metrics` at `addr`, by name with labels.
pub fn metrics_samples(addr: SocketAddr) -> std::collections::HashMap<String, u64> {
    metrics_body(addr)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("`name value`");
            (name.to_string(), value.parse().expect("a whole number"))
        })
        .collect()
}

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tcp-hello")
}

/// Removes `RUST_LOG` and every `TCP_HELLO_*` variable from what `cmd` inherits, so that
/// only its arguments decide what it does.
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TCP_HELLO_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG")
}

/// `tcp-hello SUBCOMMAND ARGS` with a clean environment (see [`clean_env`]).
pub fn hello_cmd(subcommand: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    clean_env(&mut cmd).arg(subcommand).args(args);
    cmd
}

/// A running `tcp-hello serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    /// Every address it announced, in order.
    pub addrs: Vec<SocketAddr>,
    /// The paths of the Unix sockets it announced (`listening on unix:PATH`), in order.
    pub unix: Vec<PathBuf>,
    /// The announcement lines themselves (`listening on udp ADDR`, ...), in order.
    pub announced: Vec<String>,
    /// Everything it logged so far; drained by a thread so that logging never blocks it.
    logs: Arc<Mutex<Vec<u8>>>,
    drain: Option<thread::JoinHandle<()>>,
    /// Its stdout lines after the `listening on` ones (e.g. `metrics on ADDR`).
    stdout: mpsc::Receiver<String>,
}

impl Server {
    /// Starts `tcp-hello serve --bind 127.0.0.1:0 <args>` and waits for its announcement.
    pub fn start(args: &[&str]) -> Server {
        let mut all = vec!["--bind", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Server::start_with_binds(&all, 1)
    }

    /// Starts `tcp-hello serve <args>` (which must bind `listeners` addresses itself).
    pub fn start_with_binds(args: &[&str], listeners: usize) -> Server {
        Server::start_cmd(Command::new(bin()).arg("serve").args(args), listeners)
    }

    /// Starts a prepared command (e.g. under `sh -c 'ulimit -n 64; exec ...'`).
    pub fn start_cmd(cmd: &mut Command, listeners: usize) -> Server {
        let mut child = clean_env(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcp-hello serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addrs = Vec::new();
        let mut unix = Vec::new();
        let mut announced = Vec::new();
        while announced.len() < listeners {
            let line = rx
                .recv_timeout(IO_TIMEOUT)
                .expect("server did not announce `listening on ADDR`");
            let addr = line
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("unexpected stdout line {line:?}"));
            // A TLS listener is announced as `listening on tls ADDR`, a UDP socket as
            // `listening on udp ADDR`.
            let addr = addr.strip_prefix("tls ").unwrap_or(addr);
            let addr = addr.strip_prefix("udp ").unwrap_or(addr);
            match addr.strip_prefix("unix:") {
                Some(path) => unix.push(PathBuf::from(path)),
                None => addrs.push(addr.parse().expect("announced address parses")),
            }
            announced.push(line);
        }
        let mut stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let drain = thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Server {
            child,
            addrs,
            unix,
            announced,
            logs,
            drain: Some(drain),
            stdout: rx,
        }
    }

    /// The next line the server writes to stdout after its announcements.
    pub fn stdout_line(&self) -> String {
        self.stdout
            .recv_timeout(IO_TIMEOUT)
            .expect("a line on the server's stdout")
    }

    /// The first announced address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// A new connection to the first address, with timeouts set.
    pub fn connect(&self) -> Conn {
        Conn::open(self.addr())
    }

    /// The process id, for signals and /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `INT`); see [`send_signal`].
    pub fn signal(&self, name: &str) {
        let pid = self.pid();
        assert!(send_signal(pid, name), "kill -{name} {pid} failed");
    }

    /// Waits for the process to exit, up to `limit`; returns its exit code and stderr.
    pub fn wait(mut self, limit: Duration) -> (Option<i32>, String) {
        let status = wait_for_exit(&mut self.child, limit)
            .unwrap_or_else(|| panic!("server did not exit within {limit:?}"));
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
        (status.code(), self.logs_so_far())
    }

    /// What the server has logged so far.
    pub fn logs_so_far(&self) -> String {
        String::from_utf8_lossy(&self.logs.lock().unwrap()).into_owned()
    }

    /// Stops the server and returns everything it logged.
    pub fn stop_and_logs(self) -> String {
        self.signal("TERM");
        self.wait(IO_TIMEOUT).1
    }

    /// Reads a /proc/PID/status field such as `Threads` or `VmRSS` (first number).
    pub fn proc_status(&self, field: &str) -> u64 {
        proc_status(self.pid(), field)
    }

    /// Number of open file descriptors of the server.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A /proc/PID/status field's first number (`Threads`, `VmRSS` in kB, ...).
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A client connection with read and write timeouts and a line reader.
pub struct Conn {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Conn { stream, reader }
    }

    /// A connection opened elsewhere, with timeouts set.
    pub fn from_stream(stream: TcpStream) -> Conn {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Conn { stream, reader }
    }

    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).expect("send");
    }

    /// The next line from the server, with its line ending.
    pub fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).expect("read line");
        line
    }

    /// The next line as text, without CRLF; panics if it does not end in CRLF.
    pub fn text_line(&mut self) -> String {
        let line = self.line();
        let text = String::from_utf8_lossy(&line).into_owned();
        text.strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("line without CRLF: {text:?}"))
            .to_string()
    }

    /// Everything until the server closes.
    pub fn rest(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        self.reader.read_to_end(&mut all).expect("read to end");
        all
    }

    /// Exactly `n` bytes.
    pub fn exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.reader.read_exact(&mut buf).expect("read exact");
        buf
    }

    /// Half-close: no more data from this side.
    pub fn finish_sending(&self) {
        self.stream
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown write");
    }
}

/// Sends signal `name` (`TERM`, `INT`, `KILL`) to process `pid` with kill(1), or with
/// the shell's builtin `kill` where procps is not installed; whether it was sent.
pub fn send_signal(pid: u32, name: &str) -> bool {
    let pid = pid.to_string();
    // Every test that stops a server signals it: on a machine without procps, the shell's
    // builtin (POSIX `kill -s`) lets them run rather than skip.
    let status = if on_path("kill") {
        Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
    } else {
        Command::new("sh")
            .args(["-c", r#"kill -s "$0" "$1""#, name, &pid])
            .status()
    }
    .expect("run kill");
    status.success()
}

/// Whether an executable file `program` is in a directory on PATH (where `Command::new`
/// looks); a shell builtin of that name does not count.
pub fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Whether the tests run under CI (`CI=true`, as `.ci/run` sets): then a test that cannot
/// run here fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Whether `program` is installed (on PATH); if not, says so with the Debian `package`
/// that has it, and the test should return (see [`cannot_run`]).
///
/// ```ignore
/// if !require("expect", "expect") { return; }
/// ```
pub fn require(program: &str, package: &str) -> bool {
    on_path(program)
        || cannot_run(&format!(
            "{program} is not installed: apt-get install {package}"
        ))
}

/// The calling test cannot run here, for the reason `why` (`"nc (OpenBSD netcat) is not
/// installed: apt-get install netcat-openbsd"`): prints one line `SKIPPED test: why` and
/// returns false, for the test to return and pass; under CI (see [`in_ci`]) fails the
/// test with `why` instead, so that CI runs every test or says why not.
pub fn cannot_run(why: &str) -> bool {
    let thread = thread::current();
    // libtest names each test's thread after the test.
    let test = thread.name().unwrap_or("a test");
    if in_ci() {
        panic!("{why} (CI=true: every test must run)");
    }
    // Straight to stderr, past libtest's capture of `eprintln!`, so that `cargo test`
    // shows what was skipped; in one write, so that it does not interleave with libtest's
    // lines.
    let line = format!("SKIPPED {test}: {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    false
}

/// A fresh, empty directory of the test's own under the system's temporary directory,
/// named after `what`; it and what it holds are removed when it is dropped, even by a
/// failing test.
pub fn temp_dir(what: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("tcp-hello-{what}-"))
        .tempdir()
        .expect("create a temporary directory")
}

/// A file under tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A child process killed (and reaped) when the test ends, even by a panic.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process run to its end by [`run_tool`].
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `cmd` with `stdin` (then closed; `None` gives it no stdin) and collects its
/// output; kills it and fails the test if it runs longer than `limit`.
pub fn run_tool(cmd: &mut Command, stdin: Option<&[u8]>, limit: Duration) -> Finished {
    Running::start(cmd, stdin).finish(limit)
}

/// A process started by [`Running::start`], its output being collected.
pub struct Running {
    child: KillOnDrop,
    what: String,
    started: Instant,
    feeder: Option<thread::JoinHandle<()>>,
    out: thread::JoinHandle<String>,
    err: thread::JoinHandle<String>,
}

impl Running {
    /// Starts `cmd` with `stdin` (then closed; `None` gives it no stdin), collecting
    /// stdout and stderr.
    pub fn start(cmd: &mut Command, stdin: Option<&[u8]>) -> Running {
        let started = Instant::now();
        let mut child = KillOnDrop(
            cmd.stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}")),
        );
        let feeder = stdin.map(|bytes| {
            let mut pipe = child.0.stdin.take().expect("stdin is piped");
            let bytes = bytes.to_vec();
            // A thread, so that a process that writes before it reads cannot deadlock the
            // test; the process may also exit before reading everything.
            thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            })
        });
        let collect = |mut pipe: Box<dyn Read + Send>| {
            thread::spawn(move || {
                let mut all = Vec::new();
                let _ = pipe.read_to_end(&mut all);
                String::from_utf8_lossy(&all).into_owned()
            })
        };
        let out = collect(Box::new(child.0.stdout.take().expect("stdout is piped")));
        let err = collect(Box::new(child.0.stderr.take().expect("stderr is piped")));
        Running {
            child,
            what: format!("{cmd:?}"),
            started,
            feeder,
            out,
            err,
        }
    }

    /// The process's ID, to send it a signal.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }

    /// Waits for the process to end; kills it and fails the test if it runs longer than
    /// `limit` in all.
    pub fn finish(mut self, limit: Duration) -> Finished {
        let left = limit.saturating_sub(self.started.elapsed());
        let Some(status) = wait_for_exit(&mut self.child.0, left) else {
            let _ = self.child.0.kill();
            let _ = self.child.0.wait();
            let (out, err) = (self.out.join().unwrap(), self.err.join().unwrap());
            panic!(
                "{} did not finish within {limit:?}; killed.\nstdout: {out}\nstderr: {err}",
                self.what
            );
        };
        if let Some(feeder) = self.feeder {
            let _ = feeder.join();
        }
        Finished {
            code: status.code(),
            stdout: self.out.join().unwrap(),
            stderr: self.err.join().unwrap(),
            elapsed: self.started.elapsed(),
        }
    }
}

/// Raises this process's open-file limit to the hard one and checks it allows `needed`;
/// hold what it returns while the files are open (see [`FdBudget`]).
#[must_use = "hold the budget while the files are open"]
pub fn raise_fd_limit(needed: u64) -> FdBudget {
    let budget = FdBudget::take();
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    assert!(
        limit >= needed,
        "this test needs {needed} open files but the hard limit is {limit}: raise it (ulimit -Hn)"
    );
    budget
}

/// The right to open thousands of files in this process: every test runs in one process,
/// which has one open-file limit, so tests that need most of it take turns.
pub struct FdBudget(std::sync::MutexGuard<'static, ()>);

impl FdBudget {
    pub fn take() -> FdBudget {
        static TURN: Mutex<()> = Mutex::new(());
        // A test that failed holding it changed nothing the next one relies on.
        FdBudget(TURN.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A connection that costs one file descriptor (no `try_clone`), for tests that hold
/// thousands of them; lines are read a read at a time, which is exact here because the
/// server sends nothing that was not asked for.
pub struct Lean {
    pub stream: TcpStream,
}

impl Lean {
    pub fn open(addr: SocketAddr) -> std::io::Result<Lean> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Lean { stream })
    }

    pub fn line(&mut self) -> std::io::Result<String> {
        let mut line = Vec::new();
        let mut byte = [0u8; 64];
        while !line.ends_with(b"\n") {
            let n = self.stream.read(&mut byte)?;
            if n == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            line.extend_from_slice(&byte[..n]);
        }
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    pub fn send(&mut self, text: &str) -> std::io::Result<()> {
        self.stream.write_all(text.as_bytes())
    }

    /// Reads until the server closes; returns everything it sent.
    pub fn rest(&mut self) -> std::io::Result<Vec<u8>> {
        let mut all = Vec::new();
        self.stream.read_to_end(&mut all)?;
        Ok(all)
    }
}

/// Waits up to `limit` for `child` to exit: its status, or `None` if it is still running
/// (the caller decides whether to kill it or fail).
pub fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let mut status = None;
    eventually(limit, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status
}

/// Polls `probe` until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if probe() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    probe()
}
