//! The sessions, line framing, chunk framing and `--raw`, each until the server closes.

use std::io::{self, BufWriter, ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use super::failure::{ClosedWhen, Failure, Hint, Waiting};
use super::lines::{LineSplitter, has_control};
use super::link::{Link, ReadError, Reader, Received, Writer};
use super::names::{Names, write_escaped};
use super::tally::{Ends, Role, Tally};
use super::wait::{Wait, read_wait};
use super::{INPUT_BUF, READ_BUF, SessionConfig, WRITE_BUF, note};
use crate::protocol::{CHUNK_MAX, LogText, Request, TelnetFilter, chunk_message, classify};
use crate::sync::lock;

/// Milliseconds since `origin`, for the atomics the threads share.
fn millis(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What the writer thread tells the reader.
#[derive(Debug, Default)]
struct WriterStatus {
    /// Names handed to the socket (counted before their bytes can reach the server).
    sent: AtomicU64,
    /// The input ended and `exit` went (or is going) out.
    finished: AtomicBool,
    /// When bytes were last handed to the socket, in ms from the session's origin.
    last_tx: AtomicU64,
    /// Why the writer stopped the session (stdin failed, a name cannot be sent).
    failure: Mutex<Option<Failure>>,
    /// A send met the server's reset: the kernel reports a reset once, to whichever
    /// call comes first, and the reader then sees a plain close.
    reset: AtomicBool,
    /// A name sent held control bytes, so replies may hold them too (set before the
    /// name is counted as sent).
    controls: AtomicBool,
}

impl WriterStatus {
    fn touch(&self, origin: Instant) {
        self.last_tx.store(millis(origin), SeqCst);
    }

    fn sent(&self) -> u64 {
        self.sent.load(SeqCst)
    }

    fn finished(&self) -> bool {
        self.finished.load(SeqCst)
    }

    /// Whether control bytes in a server line are explained by a name sent.
    fn controls(&self) -> bool {
        self.controls.load(SeqCst)
    }

    /// Records why the writer stops, and wakes the reader to report it.
    fn fail(&self, failure: Failure, stream: &Writer) {
        *lock(&self.failure) = Some(failure);
        stream.abort();
    }

    /// How long the next read may block: `due` says whether something is awaited from
    /// the server, and the reply timeout runs from the latest activity either way.
    fn read_wait(
        &self,
        cfg: &SessionConfig,
        due: bool,
        last_rx: Duration,
        origin: Instant,
    ) -> Wait {
        let last_tx = Duration::from_millis(self.last_tx.load(SeqCst));
        read_wait(
            cfg.reply_timeout,
            due,
            last_rx.max(last_tx),
            origin.elapsed(),
        )
    }

    fn take_failure(&self) -> Option<Failure> {
        lock(&self.failure).take()
    }

    /// Notes a send's failure, if it was the server's reset.
    fn send_failed(&self, e: &io::Error) {
        if e.kind() == io::ErrorKind::ConnectionReset {
            self.reset.store(true, SeqCst);
        }
    }
}

/// Why the writer stopped early.
enum WriteStop {
    /// The session cannot go on; the reader reports it.
    Fail(Failure),
    /// The socket refused bytes, or the reader is gone: the reader tells why.
    Gone,
}

/// The writer thread of line framing: waits for the welcome, then sends every name,
/// flushing whenever the input has nothing complete buffered, then `exit` and a
/// half-close.
fn send_names(
    stream: Writer,
    mut names: Names,
    shared: &WriterStatus,
    origin: Instant,
    welcomed: mpsc::Receiver<()>,
    interactive: bool,
) {
    if welcomed.recv().is_err() {
        return; // The reader gave up before the welcome.
    }
    let mut out = BufWriter::with_capacity(WRITE_BUF, &stream);
    match pump_names(&mut out, &mut names, shared, origin, interactive) {
        Ok(()) => {
            // What is still buffered, `exit` at least, leaves with the close.
            let (_, last) = out.into_parts();
            let last = last.unwrap_or_else(|panicked| panicked.into_inner());
            // A failure shows in what the reader gets.
            if let Err(e) = stream.finish(&last, true) {
                shared.send_failed(&e);
            }
        }
        Err(WriteStop::Fail(failure)) => shared.fail(failure, &stream),
        Err(WriteStop::Gone) => {}
    }
}

/// Writes every name to `out`, flushing whenever the input may block, and `exit` last;
/// what is still buffered then is the caller's to send with the close.
fn pump_names(
    out: &mut BufWriter<&Writer>,
    names: &mut Names,
    shared: &WriterStatus,
    origin: Instant,
    interactive: bool,
) -> Result<(), WriteStop> {
    let socket = |e: io::Error| {
        shared.send_failed(&e);
        WriteStop::Gone
    };
    loop {
        if names.may_block() {
            out.flush().map_err(socket)?;
            shared.touch(origin);
        }
        let next = names.next();
        let Some((request, name)) = next.map_err(|e| WriteStop::Fail(Failure::Stdin(e)))? else {
            break;
        };
        match request {
            Request::Blank => {
                if interactive {
                    note("> ");
                }
            }
            Request::Exit => {
                // Marked before the bytes leave, so the reader cannot see the close first.
                shared.touch(origin);
                shared.finished.store(true, SeqCst);
                out.write_all(name).map_err(socket)?;
                return out.write_all(b"\n").map_err(socket);
            }
            Request::Name => {
                shared.touch(origin);
                if has_control(name) {
                    shared.controls.store(true, SeqCst);
                }
                shared.sent.fetch_add(1, SeqCst);
                write_escaped(out, name).map_err(socket)?;
                // A name that ends in CR needs CRLF: with LF alone the server would take
                // that CR for part of the line ending, and the name could turn blank.
                let end: &[u8] = if name.ends_with(b"\r") {
                    b"\r\n"
                } else {
                    b"\n"
                };
                out.write_all(end).map_err(socket)?;
            }
        }
    }
    if interactive {
        // After Ctrl-D the cursor sits after the prompt.
        note("\n");
    }
    shared.touch(origin);
    shared.finished.store(true, SeqCst);
    out.write_all(b"exit\n").map_err(socket)
}

/// Line framing: a writer thread pipelines the names while this thread prints every
/// line the server sends and keeps the tally, until the server closes.
pub(super) fn line_session(
    link: Link,
    cfg: &SessionConfig,
    names: Names,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let origin = Instant::now();
    let (welcome_tx, welcome_rx) = mpsc::channel();
    let mut welcome_tx = Some(welcome_tx);
    let interactive = cfg.interactive;
    let (mut stream, shared, _) = start_writer(link, move |writer, shared| {
        send_names(writer, names, shared, origin, welcome_rx, interactive);
    })?;

    let mut tally = Tally::default();
    let mut split = LineSplitter::default();
    let mut buf = vec![0u8; READ_BUF];
    let mut last_rx = Duration::ZERO;
    // The server asks for no telnet option, so there is never an answer to send.
    let (mut telnet, mut no_answers) = (TelnetFilter::default(), Vec::new());
    loop {
        out.flush().map_err(Failure::Stdout)?;
        let due = tally.due(shared.sent(), shared.finished());
        let wait = shared.read_wait(cfg, due.is_some(), last_rx, origin);
        if !stream.arm(wait)? {
            let partial = split.partial();
            let _ = out.write_all(if partial > 0 { b"\n" } else { b"" });
            let hint = if partial > 0 {
                Hint::Unended(partial)
            } else {
                Hint::None
            };
            return Err(timed_out(cfg, due, hint));
        }
        let n = match read_step(&mut stream, &mut buf, &mut tally)? {
            Some(Received::Bytes(n)) => n,
            Some(_) => continue,
            None => break,
        };
        last_rx = origin.elapsed();
        // The server speaks telnet: a 0xFF of a name comes back doubled.
        let n = telnet.filter(&mut buf[..n], &mut no_answers);
        let mut data = &buf[..n];
        while let Some(piece) = split.next(&mut data) {
            print_text(out, piece.text, &shared)?;
            if piece.end {
                on_line(&mut tally, &mut split, &shared, cfg, out, &mut welcome_tx)?;
            }
        }
    }
    if let Some(piece) = split.at_eof() {
        print_text(out, piece.text, &shared)?;
        if !tally.welcomed() {
            out.write_all(b"\n").map_err(Failure::Stdout)?;
            return Err(tally.unframed());
        }
        tally.cut = true;
        on_line(&mut tally, &mut split, &shared, cfg, out, &mut welcome_tx)?;
    }
    if let Some(failure) = shared.take_failure() {
        return Err(failure);
    }
    tally.reset |= shared.reset.load(SeqCst);
    tally.end(shared.sent(), shared.finished())
}

/// Splits `link` and starts the thread that sends to the server while this one reads:
/// `body`, with the writing half and the state both threads share. Returns the reading
/// half, that state, and the thread.
fn start_writer(
    link: Link,
    body: impl FnOnce(Writer, &WriterStatus) + Send + 'static,
) -> Result<(Reader, Arc<WriterStatus>, thread::JoinHandle<()>), Failure> {
    let Link { reader, writer } = link;
    let shared = Arc::new(WriterStatus::default());
    let writer_shared = Arc::clone(&shared);
    let thread = thread::Builder::new()
        .name("client-writer".into())
        .spawn(move || body(writer, &writer_shared))
        .map_err(Failure::Socket)?;
    Ok((reader, shared, thread))
}

/// One read of the server's lines or chunks: `Some(Received::Bytes)` to use, `Some(_)` to
/// look again, `None` when the server has closed or reset (noted in `tally`).
fn read_step(
    stream: &mut Reader,
    buf: &mut [u8],
    tally: &mut Tally,
) -> Result<Option<Received>, Failure> {
    match stream.read(buf) {
        Ok(Received::Closed) => Ok(None),
        Ok(got) => Ok(Some(got)),
        Err(ReadError::Reset(_)) => {
            tally.reset = true;
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The reply timeout passed while `due` was awaited.
fn timed_out(cfg: &SessionConfig, due: Option<Waiting>, hint: Hint) -> Failure {
    Failure::Timeout {
        secs: cfg.reply_timeout.map_or(0.0, |t| t.as_secs_f64()),
        waiting: due.unwrap_or(Waiting::Close),
        hint,
    }
}

/// Prints a piece of a server line: as it is, or escaped if it holds control bytes
/// that no name sent explains, which would drive the terminal.
fn print_text(out: &mut impl Write, text: &[u8], shared: &WriterStatus) -> Result<(), Failure> {
    if has_control(text) && !shared.controls() {
        write!(out, "{}", LogText(text)).map_err(Failure::Stdout)
    } else {
        out.write_all(text).map_err(Failure::Stdout)
    }
}

/// A line from the server has ended: finish it on stdout and account for it.
fn on_line(
    tally: &mut Tally,
    split: &mut LineSplitter,
    shared: &WriterStatus,
    cfg: &SessionConfig,
    out: &mut impl Write,
    welcome_tx: &mut Option<mpsc::Sender<()>>,
) -> Result<(), Failure> {
    out.write_all(b"\n").map_err(Failure::Stdout)?;
    let sent = shared.sent();
    // Replies carry the names' bytes: control bytes are the server's own only when no
    // name had any.
    if split.garbled() && !shared.controls() {
        tally.garbled();
    }
    let role = tally.line(split.head(), sent);
    if role == Role::Busy {
        return Err(Failure::Busy(
            String::from_utf8_lossy(split.head()).into_owned(),
        ));
    }
    split.clear();
    if role == Role::Welcome {
        if let Some(tx) = welcome_tx.take() {
            // The writer may be gone only if the process is ending.
            let _ = tx.send(());
        }
    }
    if cfg.interactive && !tally.closing() && tally.due(sent, shared.finished()).is_none() {
        out.flush().map_err(Failure::Stdout)?;
        note("> ");
    }
    Ok(())
}

/// The writer thread of chunk framing, in lockstep: waits for the welcome, then sends
/// each name alone and waits for the reader to see its answer before the next, as the
/// Python tutorial's server needs; then `exit`. `answered` carries the welcome and each
/// answer.
fn send_chunks(
    stream: Writer,
    mut names: Names,
    shared: &WriterStatus,
    origin: Instant,
    answered: mpsc::Receiver<()>,
    interactive: bool,
) {
    if answered.recv().is_err() {
        return; // The reader gave up before the welcome.
    }
    if let Err(WriteStop::Fail(failure)) =
        pump_chunks(&stream, &mut names, shared, origin, &answered, interactive)
    {
        shared.fail(failure, &stream);
    }
}

fn pump_chunks(
    stream: &Writer,
    names: &mut Names,
    shared: &WriterStatus,
    origin: Instant,
    answered: &mpsc::Receiver<()>,
    interactive: bool,
) -> Result<(), WriteStop> {
    let socket = |_: io::Error| WriteStop::Gone;
    let mut typed_exit = false;
    loop {
        let next = names.next();
        let Some((_, name)) = next.map_err(|e| WriteStop::Fail(Failure::Stdin(e)))? else {
            break;
        };
        // What the server will make of it: a chunk loses its trailing CR and LF there.
        let name = chunk_message(name);
        match classify(name) {
            Request::Blank => {
                if interactive {
                    note("> ");
                }
            }
            Request::Exit => {
                typed_exit = true;
                break;
            }
            Request::Name => {
                if name.len() > CHUNK_MAX {
                    return Err(WriteStop::Fail(Failure::NameTooLong(name.len())));
                }
                let mut wire = Vec::with_capacity(name.len() + 1);
                // Cannot fail: writing to a Vec.
                let _ = write_escaped(&mut wire, name);
                shared.touch(origin);
                shared.sent.fetch_add(1, SeqCst);
                (&*stream).write_all(&wire).map_err(socket)?;
                answered.recv().map_err(|_| WriteStop::Gone)?;
            }
        }
    }
    if interactive && !typed_exit {
        // After Ctrl-D the cursor sits after the prompt.
        note("\n");
    }
    // Sent as `exit`, whatever was typed (`EXIT`, ` quit `): the tutorial's server
    // closes on that exact message and would greet anything else. Marked before the
    // bytes leave, so that the reader cannot see the close first.
    shared.touch(origin);
    shared.finished.store(true, SeqCst);
    // No half-close, as ever in chunk framing.
    stream.finish(b"exit", false).map_err(socket)
}

/// Chunk framing: a writer thread sends the names in lockstep while this thread prints
/// every read from the socket as one message and keeps the tally, until the server
/// closes. Reading while the writer waits on stdin is what lets the server's own
/// notices (`ERROR idle ...`) be seen as notices, when they come, and not later as the
/// answer to the next name.
pub(super) fn chunk_session(
    link: Link,
    cfg: &SessionConfig,
    names: Names,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let origin = Instant::now();
    let (answered_tx, answered_rx) = mpsc::channel();
    let interactive = cfg.interactive;
    let (mut stream, shared, _) = start_writer(link, move |writer, shared| {
        send_chunks(writer, names, shared, origin, answered_rx, interactive);
    })?;

    let mut tally = Tally::default();
    let mut buf = vec![0u8; READ_BUF];
    let mut last_rx = Duration::ZERO;
    // The server asks for no telnet option, so there is never an answer to send.
    let (mut telnet, mut no_answers) = (TelnetFilter::default(), Vec::new());
    // The welcome ended with a line ending: the server may frame lines (see `Hint`).
    let mut ends_lines = false;
    loop {
        out.flush().map_err(Failure::Stdout)?;
        let due = tally.due(shared.sent(), shared.finished());
        let wait = shared.read_wait(cfg, due.is_some(), last_rx, origin);
        if !stream.arm(wait)? {
            let hint = match due {
                Some(Waiting::Replies(_) | Waiting::Close) if ends_lines => Hint::EndsLines,
                _ => Hint::None,
            };
            return Err(timed_out(cfg, due, hint));
        }
        let n = match read_step(&mut stream, &mut buf, &mut tally)? {
            Some(Received::Bytes(n)) => n,
            Some(_) => continue,
            None => break,
        };
        last_rx = origin.elapsed();
        // The server speaks telnet: a 0xFF of a name comes back doubled.
        let n = telnet.filter(&mut buf[..n], &mut no_answers);
        if n == 0 {
            continue; // Only part of an `IAC IAC`, whose second byte is yet to come.
        }
        let message = chunk_message(&buf[..n]);
        out.write_all(message).map_err(Failure::Stdout)?;
        out.write_all(b"\n").map_err(Failure::Stdout)?;
        let (sent, finished) = (shared.sent(), shared.finished());
        let role = tally.line(message, sent);
        match role {
            Role::Busy => {
                return Err(Failure::Busy(String::from_utf8_lossy(message).into_owned()));
            }
            Role::Welcome => ends_lines = buf[..n].ends_with(b"\n"),
            _ => {}
        }
        if cfg.interactive && !tally.closing() && tally.due(sent, finished).is_none() {
            out.flush().map_err(Failure::Stdout)?;
            note("> ");
        }
        if matches!(role, Role::Welcome | Role::Reply | Role::Refusal) {
            // The writer may be gone only if the session is ending.
            let _ = answered_tx.send(());
        }
    }
    if let Some(failure) = shared.take_failure() {
        return Err(failure);
    }
    let (sent, finished) = (shared.sent(), shared.finished());
    match tally.end(sent, finished) {
        Err(Failure::Closed(mut closed)) if closed.what == ClosedWhen::Idle && ends_lines => {
            // Idle while a name or `exit` was due: it never saw where that ended.
            if let Some(due) = tally.due(sent, finished) {
                closed.what = ClosedWhen::IdleEndsLines(due);
            }
            Err(Failure::Closed(closed))
        }
        verdict => verdict,
    }
}

/// `--raw`: stdin to the socket and the socket to stdout, unchanged; a half-close when
/// stdin ends; done when the server closes.
pub(super) fn raw_session(
    link: Link,
    cfg: &SessionConfig,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let origin = Instant::now();
    let (mut stream, shared, writer) = start_writer(link, move |writer, shared| {
        copy_stdin(writer, shared, origin);
    })?;
    let mut buf = vec![0u8; READ_BUF];
    let mut last_rx = Duration::ZERO;
    let mut ends = Ends::new(cfg.framing);
    loop {
        out.flush().map_err(Failure::Stdout)?;
        let finished = shared.finished();
        let wait = shared.read_wait(cfg, finished, last_rx, origin);
        if !stream.arm(wait)? {
            return Err(timed_out(cfg, Some(Waiting::Close), Hint::None));
        }
        match stream.read(&mut buf) {
            Ok(Received::Closed) => break,
            Ok(Received::Bytes(n)) => {
                last_rx = origin.elapsed();
                out.write_all(&buf[..n]).map_err(Failure::Stdout)?;
                ends.feed(&buf[..n]);
            }
            Ok(Received::Nothing) => {}
            Err(ReadError::Reset(e)) => {
                out.flush().map_err(Failure::Stdout)?;
                return ends.verdict(true).and(Err(Failure::Socket(e)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    out.flush().map_err(Failure::Stdout)?;
    // Busy or idle: the server closed for good, and would reset whatever came next.
    ends.verdict(false)?;
    // The server closed its sending side, which need not end ours: like `nc -N`, the
    // rest of stdin still goes out, until stdin ends or the server stops taking it.
    let _ = writer.join();
    if let Some(failure) = shared.take_failure() {
        return Err(failure);
    }
    Ok(())
}

/// The writer thread of `--raw`: every read from stdin goes out as it is.
fn copy_stdin(stream: Writer, shared: &WriterStatus, origin: Instant) {
    let mut stdin = io::stdin().lock();
    let mut buf = vec![0u8; INPUT_BUF];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                shared.fail(Failure::Stdin(e), &stream);
                return;
            }
        };
        shared.touch(origin);
        if (&stream).write_all(&buf[..n]).is_err() {
            return; // The server closed; the reader finishes.
        }
    }
    shared.touch(origin);
    shared.finished.store(true, SeqCst);
    // A failure shows in what the reader gets.
    let _ = stream.finish(b"", true);
}
