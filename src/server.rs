//! Listeners, the accept loop, the connection limit and graceful shutdown.
//!
//! One thread accepts on each listener; every accepted connection gets a thread of its
//! own that runs [`connection::serve`]. The server keeps an `Arc` of every live stream
//! and its thread, so that shutdown can end their reads (a short read timeout, and a
//! signal that interrupts a blocked read): each connection then answers what it
//! already received, says `server shutting down`, and closes.

use slab::Slab;
use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use nix::sys::pthread::{Pthread, pthread_kill};
use nix::sys::signal::Signal;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::os::unix::thread::JoinHandleExt;

use crate::connection::{self, CloseReason, Context, Peer, Summary};
use crate::protocol::{Mode, Notice};

/// Stack reserved for each connection thread. Only the pages a thread touches cost
/// memory (two here: the thread control block and the frames); the reservation just
/// has to hold the deepest call chain with room to spare. 64 KiB measured no more
/// resident memory than 32 KiB, and less than 16 KiB (README, "Memory").
pub const CONNECTION_STACK: usize = 64 * 1024;

/// How long a closing connection waits for the client to close its side after the
/// server's last bytes, so that unread client data does not turn the close into a reset
/// that destroys the farewell in flight.
const LINGER: Duration = Duration::from_secs(2);

/// The read timeout every connection gets at shutdown: a read that finds nothing for
/// this long has read everything the client had sent.
const SHUTDOWN_READ_TIMEOUT: Duration = Duration::from_millis(1);

/// The signal that interrupts a connection thread's blocked read at shutdown, so that
/// the read starts again under [`SHUTDOWN_READ_TIMEOUT`]. SIGURG is ignored by default
/// and the kernel sends it only to processes that ask for TCP urgent data.
const WAKE_SIGNAL: Signal = Signal::SIGURG;

/// How the server runs, apart from the protocol's [`crate::protocol::Settings`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Addresses to listen on.
    pub bind: Vec<SocketAddr>,
    /// Listen backlog.
    pub backlog: i32,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Most connections from one IP address at once; 0 = no limit.
    pub max_per_source: usize,
    /// Read timeout set on every connection.
    pub idle_timeout: Option<Duration>,
    /// Write timeout set on every connection.
    pub write_timeout: Option<Duration>,
    /// How long shutdown waits for connections to finish.
    pub shutdown_timeout: Duration,
}

/// A bound server, ready to [`Server::run`].
pub struct Server {
    listeners: Vec<Arc<TcpListener>>,
    shared: Arc<Shared>,
    shutdown_timeout: Duration,
}

/// Stops a running [`Server`]; cheap to clone and send to another thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

struct Shared {
    ctx: Context,
    config: ServerConfig,
    listeners: Vec<Arc<TcpListener>>,
    registry: Mutex<Registry>,
    /// Signalled whenever a connection leaves the registry.
    left: Condvar,
    next_id: AtomicU64,
    busy_log: Mutex<RateLimit>,
}

#[derive(Default)]
struct Registry {
    /// Every live connection, in a slab: 24 bytes a slot with no spare buckets, where
    /// a hash map sized for the limit took 27 bytes a connection before the thread
    /// was kept too.
    live: Slab<Live>,
    /// Connections per client address, kept only with `--max-per-source`.
    per_source: HashMap<IpAddr, usize>,
    stopping: bool,
}

/// A live connection: its stream, shared so that shutdown can reach it, and its thread,
/// so that shutdown can interrupt the thread's blocked read.
struct Live {
    stream: Arc<TcpStream>,
    /// 0 until the accept loop has recorded it (glibc never uses 0 for a thread).
    thread: Pthread,
}

/// Binds one listening socket with an explicit backlog (std's `bind` uses 128, which a
/// burst of connects overflows). Options every connection needs are set here once:
/// Linux copies them to each accepted socket, which saves three system calls per
/// connection.
pub fn listen(addr: SocketAddr, config: &ServerConfig) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Replies leave in one write per batch, so Nagle's delay would only add latency.
    socket.set_tcp_nodelay(true)?;
    socket.set_read_timeout(config.idle_timeout)?;
    socket.set_write_timeout(config.write_timeout)?;
    // A restarted server must not wait for the old connections' TIME_WAIT to end.
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // So that `[::]:P` and `0.0.0.0:P` can both be bound, as separate listeners.
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(config.backlog)?;
    Ok(socket.into())
}

impl Server {
    /// Binds every address in `config`, failing with the address in the message.
    pub fn bind(config: ServerConfig, mut ctx: Context) -> io::Result<Server> {
        // A handler, so that WAKE_SIGNAL interrupts a read instead of being discarded as
        // an ignored signal. It only sets a flag nobody reads.
        signal_hook::flag::register(
            signal_hook::consts::SIGURG,
            Arc::new(std::sync::atomic::AtomicBool::new(false)),
        )?;
        // The streams' write timeout comes from here, so the connections learn it here.
        ctx.write_timeout = config.write_timeout;
        let mut listeners = Vec::new();
        for &addr in &config.bind {
            let listener = listen(addr, &config)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            listeners.push(Arc::new(listener));
        }
        let shutdown_timeout = config.shutdown_timeout;
        let registry = Registry {
            // Sized once: growing by doubling would leave the smaller tables behind as
            // heap fragments, resident memory that held connections pay for.
            live: Slab::with_capacity(config.max_connections.min(1 << 16)),
            ..Registry::default()
        };
        let shared = Arc::new(Shared {
            ctx,
            config,
            listeners: listeners.clone(),
            registry: Mutex::new(registry),
            left: Condvar::new(),
            next_id: AtomicU64::new(1),
            busy_log: Mutex::new(RateLimit::new(Duration::from_secs(1))),
        });
        Ok(Server {
            listeners,
            shared,
            shutdown_timeout,
        })
    }

    /// The addresses actually bound (port 0 resolved), in `--bind` order.
    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.listeners.iter().map(|l| l.local_addr()).collect()
    }

    /// A handle that stops the server from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Accepts connections until shut down, then waits up to the shutdown timeout for
    /// connections to finish. Returns how many were still open when it gave up.
    pub fn run(self) -> io::Result<usize> {
        let mut acceptors = Vec::new();
        for listener in self.listeners.iter().skip(1) {
            let (listener, shared) = (Arc::clone(listener), Arc::clone(&self.shared));
            acceptors.push(
                thread::Builder::new()
                    .name("accept".into())
                    .spawn(move || shared.accept_loop(&listener))?,
            );
        }
        if let Some(first) = self.listeners.first() {
            self.shared.accept_loop(first);
        }
        for acceptor in acceptors {
            let _ = acceptor.join();
        }
        self.shared.report_suppressed_refusals(true);
        Ok(self.shared.wait_for_connections(self.shutdown_timeout))
    }
}

impl ShutdownHandle {
    /// Stops accepting and ends every connection's reading; idempotent.
    pub fn shutdown(&self) {
        let shared = &self.shared;
        let live: Vec<Arc<TcpStream>> = {
            let mut registry = shared.lock();
            if registry.stopping {
                return;
            }
            registry.stopping = true;
            shared.ctx.shutting_down.store(true, Ordering::Release);
            registry
                .live
                .iter()
                .map(|(_, live)| Arc::clone(&live.stream))
                .collect()
        };
        info!(
            "shutting down: {} connections to finish (up to {} s)",
            live.len(),
            shared.config.shutdown_timeout.as_secs()
        );
        for listener in &shared.listeners {
            // Makes a blocked `accept` return at once (Linux).
            let _ = SockRef::from(listener.as_ref()).shutdown(Shutdown::Both);
        }
        // Not `shutdown(Read)`: Linux answers data that arrives after it, once the FIN
        // has gone, with a reset that discards the replies still queued for the client.
        // A short read timeout ends reading once what was sent has been read, and the
        // signal makes a read already blocked start again under it.
        for stream in live {
            let _ = stream.set_read_timeout(Some(SHUTDOWN_READ_TIMEOUT));
        }
        shared.interrupt_reads();
    }

    /// How many connections are open now.
    pub fn connections(&self) -> usize {
        self.shared.lock().live.len()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // The registry stays consistent even if a holder panicked: every update is one call.
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        self.ctx.shutting_down.load(Ordering::Acquire)
    }

    fn accept_loop(self: &Arc<Self>, listener: &TcpListener) {
        let mut backoff = AcceptBackoff::default();
        loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    backoff.succeeded();
                    self.report_suppressed_refusals(false);
                    self.admit(stream, peer);
                }
                Err(_) if self.stopping() => return,
                Err(e) => {
                    if let Some(pause) = backoff.failed(&e, Instant::now()) {
                        thread::sleep(pause);
                    }
                }
            }
        }
    }

    /// Registers a new connection and starts its thread, or refuses it.
    fn admit(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stream = Arc::new(stream);
        let slot = {
            let mut registry = self.lock();
            if registry.stopping {
                return;
            }
            if registry.live.len() >= self.config.max_connections {
                drop(registry);
                let connections = self.config.max_connections;
                self.refuse(
                    &stream,
                    peer,
                    Notice::Busy { connections },
                    "connection limit reached",
                );
                return;
            }
            let per_source = self.config.max_per_source;
            if per_source > 0 {
                let count = registry.per_source.entry(peer.ip()).or_insert(0);
                if *count >= per_source {
                    drop(registry);
                    let notice = Notice::BusySource { limit: per_source };
                    self.refuse(&stream, peer, notice, "per-address limit reached");
                    return;
                }
                *count += 1;
            }
            registry.live.insert(Live {
                stream: Arc::clone(&stream),
                thread: 0,
            })
        };
        // Logged here rather than on the connection's thread: formatting a log record
        // takes more stack than serving does, and every stack page a connection thread
        // touches stays resident for as long as the connection lives. At debug: the
        // close line says all there is to say, and a health check, which logs its close
        // at debug, must not leave an open line without its close at info.
        debug!("conn {id} open: {peer}");
        let (shared, conn_stream) = (Arc::clone(self), Arc::clone(&stream));
        let spawned = thread::Builder::new()
            .stack_size(CONNECTION_STACK)
            .spawn(move || shared.run_connection(id, slot, &conn_stream, peer));
        match spawned {
            Ok(handle) => {
                // Recorded only while the slot is still this connection's: the thread
                // may have finished already, and the slot gone to another connection.
                let thread = handle.as_pthread_t();
                drop(handle);
                let mut registry = self.lock();
                if let Some(live) = registry.live.get_mut(slot) {
                    if Arc::ptr_eq(&live.stream, &stream) {
                        live.thread = thread;
                    }
                }
            }
            Err(e) => {
                self.leave(slot, peer.ip());
                let connections = self.lock().live.len();
                let why = format!("cannot start a thread: {e}");
                self.refuse(&stream, peer, Notice::Busy { connections }, &why);
            }
        }
    }

    /// Interrupts every connection thread's blocked read (see [`WAKE_SIGNAL`]). Under
    /// the registry's lock: a thread leaves the registry before it ends, so no thread
    /// that has ended is signalled.
    fn interrupt_reads(&self) {
        let registry = self.lock();
        for (_, live) in registry.live.iter() {
            if live.thread != 0 {
                let _ = pthread_kill(live.thread, WAKE_SIGNAL);
            }
        }
    }

    /// Logs the refusals a burst left unreported: once their second has passed (`force`
    /// false), or at once (at shutdown).
    fn report_suppressed_refusals(&self, force: bool) {
        let mut log = self.busy_log.lock().unwrap_or_else(PoisonError::into_inner);
        let overdue = if force {
            log.flush()
        } else {
            log.overdue(Instant::now())
        };
        drop(log);
        if let Some(n) = overdue {
            warn!("refused {n} more connections since the last report");
        }
    }

    /// Tells a client the server is busy and closes, without a thread of its own.
    fn refuse(&self, stream: &TcpStream, peer: SocketAddr, notice: Notice, why: &str) {
        let suppressed = self
            .busy_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allow(Instant::now());
        match suppressed {
            Some(0) => warn!("refused {peer}: {why}"),
            Some(n) => warn!("refused {peer}: {why} ({n} more refused since the last report)"),
            None => {}
        }
        if self.ctx.settings.mode == Mode::Echo {
            return;
        }
        let notice = self.ctx.settings.notice(notice);
        let _ = stream.set_nonblocking(true);
        // Read what the client already sent, so that closing does not reset the
        // connection and destroy the notice before the client reads it.
        let mut scratch = [0u8; 1024];
        let _ = (&*stream).read(&mut scratch);
        let _ = (&*stream).write(&notice);
        let _ = stream.shutdown(Shutdown::Write);
    }

    fn run_connection(&self, id: u64, slot: usize, stream: &Arc<TcpStream>, peer: SocketAddr) {
        // Leaves the registry however this function ends, a panic included, so that a
        // bug in one connection can neither leak its socket nor hold a slot for good.
        let _registered = Registered {
            shared: self,
            id,
            slot,
            peer,
        };
        let started = Instant::now();
        let summary = match self.configure(stream) {
            Ok(()) => connection::serve(&**stream, &self.ctx, Peer { id, addr: peer }),
            Err(e) => Summary {
                replies: 0,
                bytes_in: 0,
                bytes_out: 0,
                reason: CloseReason::ReadError(e.kind()),
            },
        };
        linger(stream, summary.reason);
        let quiet = summary.bytes_in == 0
            || matches!(
                summary.reason,
                CloseReason::ReadError(ErrorKind::ConnectionReset)
                    | CloseReason::WriteError(ErrorKind::ConnectionReset | ErrorKind::BrokenPipe)
            );
        let level = if quiet {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "conn {id} closed: {peer}, {:.3} s, {} replies, {} bytes in, {} bytes out, {}",
            started.elapsed().as_secs_f64(),
            summary.replies,
            summary.bytes_in,
            summary.bytes_out,
            summary.reason
        );
    }

    fn configure(&self, stream: &TcpStream) -> io::Result<()> {
        if !cfg!(target_os = "linux") {
            // Elsewhere accepted sockets may not inherit the listener's options.
            stream.set_nodelay(true)?;
            stream.set_read_timeout(self.config.idle_timeout)?;
            stream.set_write_timeout(self.config.write_timeout)?;
        }
        if self.stopping() {
            // Shutdown began between admission and now; end reading like the others.
            stream.set_read_timeout(Some(SHUTDOWN_READ_TIMEOUT))?;
        }
        Ok(())
    }

    /// Gives up a connection's slot. Called exactly once per admitted connection (by
    /// its `Registered` guard, or by `admit` when its thread could not start): slots
    /// are reused, so a second call could free another connection's.
    fn leave(&self, slot: usize, source: IpAddr) {
        let mut registry = self.lock();
        if registry.live.try_remove(slot).is_none() {
            return;
        }
        if let Some(count) = registry.per_source.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                registry.per_source.remove(&source);
            }
        }
        if registry.live.is_empty() {
            self.left.notify_all();
        }
        drop(registry);
        // A burst of refusals at the limit is followed by connections leaving: report
        // what it left unreported without waiting for the next refusal.
        self.report_suppressed_refusals(false);
    }

    fn wait_for_connections(&self, timeout: Duration) -> usize {
        // A timeout past what the clock holds waits for as long as connections last.
        let deadline = Instant::now().checked_add(timeout);
        let mut registry = self.lock();
        while !registry.live.is_empty() {
            let now = Instant::now();
            let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(now));
            if left.is_zero() {
                break;
            }
            // Again now and then: a thread started just before shutdown may have begun
            // its read before its slot recorded the thread.
            drop(registry);
            self.interrupt_reads();
            registry = self.lock();
            let slice = left.min(Duration::from_millis(100));
            registry = self
                .left
                .wait_timeout_while(registry, slice, |r| !r.live.is_empty())
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let left = registry.live.len();
        if left > 0 {
            warn!(
                "{left} connections still open after {} s; exiting anyway",
                timeout.as_secs()
            );
        }
        left
    }
}

/// A connection's place in the registry, given up on drop.
struct Registered<'a> {
    shared: &'a Shared,
    id: u64,
    slot: usize,
    peer: SocketAddr,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            // Connection threads are unnamed (a name costs an allocation per
            // connection), so this line is what ties the panic message to a connection.
            error!(
                "conn {} closed: {}, its thread panicked (a bug: please report it)",
                self.id, self.peer
            );
        }
        self.shared.leave(self.slot, self.peer.ip());
    }
}

/// Closes gracefully: after the server's last bytes, sends FIN and reads until the
/// client closes too (bounded by [`LINGER`]), so unread input cannot make the kernel
/// answer with a reset that discards the farewell the client has not read yet.
fn linger(stream: &TcpStream, reason: CloseReason) {
    if !matches!(
        reason,
        CloseReason::Exit | CloseReason::Idle | CloseReason::Shutdown
    ) {
        return;
    }
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut scratch = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Set each time: shutdown may have shortened the timeout meanwhile.
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*stream).read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Log rate limiting: at most one report per period, counting what was suppressed.
#[derive(Debug)]
pub struct RateLimit {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// Allows one report per `period`.
    pub fn new(period: Duration) -> Self {
        RateLimit {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// What was suppressed, once a period has passed since the last report: the count
    /// a burst left behind that no later event reported.
    pub fn overdue(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if self.suppressed > 0 && now.duration_since(last) >= self.period => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
            _ => None,
        }
    }

    /// What was suppressed since the last report, reported now whatever the time.
    pub fn flush(&mut self) -> Option<u64> {
        (self.suppressed > 0).then(|| std::mem::take(&mut self.suppressed))
    }

    /// `Some(suppressed since the last report)` if a report is due now, else `None`.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// What the accept loop does after an error: retry at once for errors that concern only
/// one connection, back off exponentially (5 ms to 1 s) when the process or system is
/// out of a resource (EMFILE, ENFILE, ENOBUFS, ENOMEM), and log at most once a second.
#[derive(Debug)]
pub struct AcceptBackoff {
    pause: Duration,
    log: RateLimit,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff {
            pause: Duration::ZERO,
            log: RateLimit::new(Duration::from_secs(1)),
        }
    }
}

const MIN_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_secs(1);

impl AcceptBackoff {
    /// An accept succeeded: the next failure starts from the shortest pause, and errors
    /// the log left out are counted now.
    pub fn succeeded(&mut self) {
        self.pause = Duration::ZERO;
        if let Some(n) = self.log.flush() {
            warn!("accepting again; {n} more accept errors were not shown");
        }
    }

    /// An accept failed with `error`; returns how long to pause before the next one.
    pub fn failed(&mut self, error: &io::Error, now: Instant) -> Option<Duration> {
        if per_connection(error) {
            // The listener's receive timeout (the idle timeout, see `per_connection`)
            // ends an `accept` that found no client: nothing happened, nothing to log.
            if !is_timeout(error) {
                debug!("accept: {error}");
            }
            return None;
        }
        self.pause = (self.pause * 2).clamp(MIN_PAUSE, MAX_PAUSE);
        if let Some(suppressed) = self.log.allow(now) {
            error!(
                "accept failed: {error}{}; pausing accepts for {} ms{}",
                if is_fd_exhaustion(error) {
                    " (out of file descriptors: raise `ulimit -n` or lower --max-connections)"
                } else {
                    ""
                },
                self.pause.as_millis(),
                if suppressed > 0 {
                    format!(" ({suppressed} similar errors not shown)")
                } else {
                    String::new()
                }
            );
        }
        Some(self.pause)
    }
}

/// Errors after which the next accept can follow at once: the connection being
/// accepted was reset or aborted before `accept` returned, or no client came within
/// the listener's receive timeout. That timeout is the idle timeout, set on the
/// listener so that accepted sockets inherit it, and Linux applies it to `accept` too.
fn per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
            | ErrorKind::TimedOut
    ) || error.raw_os_error() == Some(71) // EPROTO
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

fn is_fd_exhaustion(error: &io::Error) -> bool {
    // EMFILE (24) and ENFILE (23).
    matches!(error.raw_os_error(), Some(23 | 24))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_what_it_suppresses() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(Duration::from_secs(1));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0 + Duration::from_millis(10)), None);
        assert_eq!(r.allow(t0 + Duration::from_millis(20)), None);
        assert_eq!(r.allow(t0 + Duration::from_millis(1001)), Some(2));
        assert_eq!(r.allow(t0 + Duration::from_millis(1002)), None);
    }

    #[test]
    fn rate_limit_reports_what_a_burst_left_once_its_period_passed() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(Duration::from_secs(1));
        assert_eq!(r.overdue(t0), None);
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(
            r.overdue(t0 + Duration::from_secs(5)),
            None,
            "nothing suppressed"
        );
        for ms in 1..50 {
            assert_eq!(r.allow(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(r.overdue(t0 + Duration::from_millis(500)), None, "too soon");
        assert_eq!(r.overdue(t0 + Duration::from_millis(1000)), Some(49));
        assert_eq!(
            r.overdue(t0 + Duration::from_secs(9)),
            None,
            "reported once"
        );
        assert_eq!(r.allow(t0 + Duration::from_millis(1500)), None);
        assert_eq!(r.flush(), Some(1));
        assert_eq!(r.flush(), None);
    }

    #[test]
    fn a_connection_whose_thread_panics_leaves_the_registry() {
        let config = ServerConfig {
            bind: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            backlog: 8,
            max_connections: 4,
            max_per_source: 4,
            idle_timeout: None,
            write_timeout: None,
            shutdown_timeout: Duration::from_secs(1),
        };
        let ctx = Context::new(Default::default(), None, Duration::ZERO);
        let server = Server::bind(config, ctx).unwrap();
        let shared = Arc::clone(&server.shared);
        let listener = &server.listeners[0];
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, peer) = listener.accept().unwrap();
        let slot = {
            let mut registry = shared.lock();
            *registry.per_source.entry(peer.ip()).or_insert(0) += 1;
            registry.live.insert(Live {
                stream: Arc::new(stream),
                thread: 0,
            })
        };
        let holder = Arc::clone(&shared);
        let joined = thread::spawn(move || {
            let _registered = Registered {
                shared: &holder,
                id: 1,
                slot,
                peer,
            };
            panic!("deliberate panic while registered");
        })
        .join();
        assert!(joined.is_err(), "the thread should have panicked");
        let registry = shared.lock();
        assert!(registry.live.is_empty());
        assert!(registry.per_source.is_empty());
        drop(client);
    }

    #[test]
    fn accept_timeouts_and_aborted_connections_retry_at_once() {
        let mut b = AcceptBackoff::default();
        let now = Instant::now();
        for kind in [
            ErrorKind::WouldBlock,
            ErrorKind::TimedOut,
            ErrorKind::ConnectionAborted,
        ] {
            assert_eq!(b.failed(&io::Error::from(kind), now), None, "{kind:?}");
        }
    }

    #[test]
    fn backoff_doubles_to_a_ceiling_and_resets() {
        let mut b = AcceptBackoff::default();
        let emfile = io::Error::from_raw_os_error(24);
        let now = Instant::now();
        let pauses: Vec<_> = (0..12).map(|_| b.failed(&emfile, now).unwrap()).collect();
        assert_eq!(pauses[0], MIN_PAUSE);
        assert_eq!(pauses[1], MIN_PAUSE * 2);
        assert_eq!(*pauses.last().unwrap(), MAX_PAUSE);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        b.succeeded();
        assert_eq!(b.failed(&emfile, now), Some(MIN_PAUSE));
    }

    #[test]
    fn aborted_connections_are_retried_at_once() {
        let mut b = AcceptBackoff::default();
        let aborted = io::Error::from(ErrorKind::ConnectionAborted);
        assert_eq!(b.failed(&aborted, Instant::now()), None);
        assert_eq!(
            b.failed(&io::Error::from_raw_os_error(71), Instant::now()),
            None
        );
    }
}
