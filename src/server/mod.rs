//! The server: listeners, one accept loop each, and one thread per connection running
//! [`connection::serve`](crate::connection::serve); the connection limits, and graceful
//! shutdown. A connection's whole life reads top to bottom in `lifecycle`.
//!
//! - this module: the configuration, the public API, and running the accept loops;
//! - `listener`: binding or adopting a listener, with the options connections inherit;
//! - `accept`: the accept loop, and its backoff when the system runs out of resources;
//! - `lifecycle`: ONE connection's life, top to bottom: admission, PROXY header, TLS
//!   handshake, `connection::serve`, graceful close;
//! - `admission`: address rules and limits: admit, or refuse;
//! - `registry`: the live connections (for shutdown and the limits), and TLS handshakes
//!   under way;
//! - `readiness`: the server's phase, and whether it is ready for new connections;
//! - `drain`: on a stop signal, not ready but still serving for `--drain-delay`;
//! - `shutdown`: stopping: ending every connection's reading, and waiting for them;
//! - `log_limit`: at most one log line a second for refusals and accept errors;
//! - `runtime`: the optimizations, behind one seam, each with a switch to turn it off:
//!   the thread cache, the TLS hand-off and its handshake seats, the closer;
//! - `unix`: `--bind unix:PATH` listeners, their socket files, and a Unix connection's
//!   life, in the same registry and runtime.

mod accept;
mod admission;
mod drain;
mod lifecycle;
mod listener;
mod log_limit;
mod readiness;
mod registry;
mod runtime;
mod shutdown;
mod unix;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use slab::Slab;

use crate::connection::Context;
use crate::metrics::{Counters, Snapshot};
use crate::tls::Tls;

pub use accept::AcceptBackoff;
pub use listener::{
    KEEPALIVE_PROBES, MAX_KEEPALIVE_SECS, MAX_USER_TIMEOUT_SECS, adopt, keepalive, listen,
};
pub use log_limit::LogLimit;
pub use readiness::{NotReady, Phase, readiness};
use registry::Registry;
use runtime::Runtime;
pub use runtime::{CONNECTION_STACK, PARKED_FOR, TLS_CONNECTION_STACK};

/// The log targets of the server's lines. `RUST_LOG` filters and log readers name them,
/// so each line keeps its target whichever file writes it.
mod log_target {
    /// Refusals, and the open line of a plain connection.
    pub(super) const ACCEPT: &str = "tcp_hello::server::accept";
    /// A connection's close line, and a TLS connection's open line.
    pub(super) const SETUP: &str = "tcp_hello::server::setup";
    /// What a PROXY header let in or kept out.
    pub(super) const PROXIED: &str = "tcp_hello::server::proxied";
    /// TLS handshakes ended for newer ones, and connection threads that panicked.
    pub(super) const REGISTRY: &str = "tcp_hello::server::registry";
}

/// How the server runs, apart from the protocol's [`crate::protocol::Settings`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Addresses to listen on, in plain text.
    pub bind: Vec<SocketAddr>,
    /// Addresses to listen on with TLS.
    pub tls_bind: Vec<SocketAddr>,
    /// Unix stream sockets to listen on, in plain text.
    pub unix_bind: Vec<PathBuf>,
    /// The mode of each Unix socket's file; `None`: as the umask leaves it.
    pub unix_mode: Option<u32>,
    /// The TLS configuration, with `tls_bind`.
    pub tls: Option<Arc<Tls>>,
    /// Listen backlog.
    pub backlog: i32,
    /// SO_REUSEPORT on every listener: several processes may listen on one port.
    pub reuse_port: bool,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Most connections from one IP address at once; 0 = no limit.
    pub max_per_source: usize,
    /// Which client addresses are let in (`--allow`, `--deny`); checked first. Shared
    /// with whoever reloads their files (SIGHUP): a reload applies to the next admission.
    pub rules: Arc<crate::rules::LiveRules>,
    /// `--proxy-protocol`: every connection begins with a PROXY header, read on its own
    /// thread, that names the client; the rules and `max_per_source` then apply to the
    /// address it names. `None`: no header is read.
    pub proxy: Option<crate::proxy::ProxyProtocol>,
    /// Read timeout set on every connection.
    pub idle_timeout: Option<Duration>,
    /// Write timeout set on every connection.
    pub write_timeout: Option<Duration>,
    /// How long shutdown waits for connections to finish.
    pub shutdown_timeout: Duration,
    /// How long a closing connection waits for the client to close too (`--linger`);
    /// zero: it closes at once.
    pub linger: Duration,
    /// How long [`ShutdownHandle::drain`] goes on serving, not ready, before shutdown.
    pub drain_delay: Duration,
    /// Not ready while `max_connections` are open (`--unready-at-max`).
    pub unready_at_max: bool,
    /// TCP keepalive: silence after which the first probe goes out (see [`keepalive`]);
    /// `None` = off.
    pub keepalive: Option<Duration>,
    /// `TCP_USER_TIMEOUT`: longest our data may go unacknowledged before the kernel drops
    /// the connection; `None` = the kernel's default (about 15 minutes of retransmission).
    pub user_timeout: Option<Duration>,
    /// Most finished connection threads kept parked for the next connections, for plain
    /// connections and as many again for TLS handshakes (see [`PARKED_FOR`]).
    pub thread_cache: usize,
    /// Most TLS handshakes under way at once; a new one ends the oldest.
    pub max_handshakes: usize,
    /// Most TLS handshakes under way at once from one client address; a new one ends
    /// the address's oldest.
    pub max_handshakes_per_source: usize,
    /// `--trace`: where every connection's bytes are dumped; `None` = off.
    pub trace: Option<Arc<crate::trace::Trace>>,
}

/// The defaults of `tcp-hello serve` ([`crate::config`]); no address to listen on.
impl Default for ServerConfig {
    fn default() -> Self {
        use crate::config;
        ServerConfig {
            bind: Vec::new(),
            tls_bind: Vec::new(),
            unix_bind: Vec::new(),
            unix_mode: None,
            tls: None,
            backlog: config::BACKLOG,
            reuse_port: false,
            max_connections: config::MAX_CONNECTIONS,
            max_per_source: config::MAX_PER_SOURCE,
            rules: Arc::default(),
            proxy: None,
            idle_timeout: config::IDLE_TIMEOUT,
            write_timeout: config::WRITE_TIMEOUT,
            shutdown_timeout: config::SHUTDOWN_TIMEOUT,
            linger: config::LINGER,
            drain_delay: config::DRAIN_DELAY,
            unready_at_max: false,
            keepalive: config::KEEPALIVE,
            user_timeout: config::USER_TIMEOUT,
            thread_cache: config::THREAD_CACHE,
            max_handshakes: config::TLS_MAX_HANDSHAKES,
            max_handshakes_per_source: config::TLS_MAX_HANDSHAKES_PER_SOURCE,
            trace: None,
        }
    }
}

/// A listening address, and whether it speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listening {
    /// The address bound (port 0 resolved).
    pub addr: SocketAddr,
    /// Connections to it begin with a TLS handshake.
    pub tls: bool,
}

impl std::fmt::Display for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.tls {
            write!(f, "tls {}", self.addr)
        } else {
            write!(f, "{}", self.addr)
        }
    }
}

/// A bound server, ready to [`Server::run`].
pub struct Server {
    /// Every listener, and whether it speaks TLS.
    listeners: Vec<(Arc<TcpListener>, bool)>,
    /// Every `unix:` listener.
    unix: Vec<Arc<unix::Listener>>,
    state: Arc<ServerState>,
    shutdown_timeout: Duration,
}

/// Stops a running [`Server`]; cheap to clone and send to another thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    state: Arc<ServerState>,
}

/// Reads a running [`Server`]'s counters; cheap to clone and send to another thread.
#[derive(Clone)]
pub struct StatsHandle {
    state: Arc<ServerState>,
}

impl StatsHandle {
    /// Whether the server takes new connections (`/readyz`), or why not; the registry's
    /// lock is taken only with `--unready-at-max`.
    pub fn readiness(&self) -> Result<(), NotReady> {
        let state = &self.state;
        let phase = state.phase.get();
        let full_at = (state.config.unready_at_max && phase == Phase::Serving)
            .then_some(state.config.max_connections);
        let open = match full_at {
            Some(limit) => {
                let open = state.lock().live.len();
                if open < limit {
                    open
                } else {
                    // As admission does: places held by lingering closes whose clients
                    // have gone are given up first, so that readiness and admission agree.
                    state.runtime.sweep_lingering();
                    state.lock().live.len()
                }
            }
            None => 0,
        };
        readiness(phase, open, full_at)
    }

    /// The counters now, the connections open (the registry's lock, held for a moment)
    /// and the process's threads.
    pub fn snapshot(&self) -> Snapshot {
        let open = self.state.lock().live.len();
        self.state
            .counters
            .snapshot(open, crate::metrics::threads())
    }
}

/// One running server's state, shared by its accept loops, its connection threads and
/// shutdown.
struct ServerState {
    ctx: Context,
    config: ServerConfig,
    /// For shutdown; emptied off Linux once the accept loops end (see [`Server::run`]).
    listeners: Mutex<Vec<Arc<TcpListener>>>,
    /// For shutdown, which removes their files.
    unix_listeners: Mutex<Vec<Arc<unix::Listener>>>,
    registry: Mutex<Registry>,
    /// Signalled whenever the last connection leaves the registry.
    left: Condvar,
    next_id: AtomicU64,
    /// The log rate limit of busy refusals and ended handshakes.
    busy_log: Mutex<LogLimit>,
    counters: Counters,
    /// The threads connections run on, and the closer.
    runtime: Runtime,
    /// Where the server is in its life, for `/readyz`.
    phase: readiness::PhaseCell,
    /// The drain delay, once a stop signal has come.
    drain: drain::Drain,
}

impl ShutdownHandle {
    /// Stops accepting and ends every connection's reading, a drain delay under way
    /// included; idempotent.
    pub fn shutdown(&self) {
        drain::cut_short(&self.state.drain);
        shutdown::stop(&self.state);
    }

    /// What a stop signal does: not ready from now on, still serving for the drain delay
    /// (see [`ServerConfig::drain_delay`]), then [`ShutdownHandle::shutdown`]'s stop.
    /// Only the first call does anything.
    pub fn drain(&self) {
        drain::begin(&self.state);
    }

    /// Ends a drain delay under way now, so that the shutdown begins; whether one was.
    pub fn skip_drain_delay(&self) -> bool {
        drain::cut_short(&self.state.drain)
    }

    /// Whether a drain delay is under way.
    pub fn in_drain_delay(&self) -> bool {
        drain::delaying(&self.state.drain)
    }

    /// The drain delay a stop signal begins.
    pub fn drain_delay(&self) -> Duration {
        self.state.config.drain_delay
    }

    /// How many connections are open now.
    pub fn connections(&self) -> usize {
        self.state.lock().live.len()
    }

    /// Whether the server has been told to stop (for the UDP threads, which look at it
    /// between datagrams).
    pub fn stopping(&self) -> bool {
        self.state.stopping()
    }
}

impl Server {
    /// Binds every address in `config`, failing with the address in the message.
    pub fn bind(config: ServerConfig, ctx: Context) -> io::Result<Server> {
        let mut listeners = Vec::new();
        let plain = config.bind.iter().map(|&a| (a, false));
        for (addr, tls) in plain.chain(config.tls_bind.iter().map(|&a| (a, true))) {
            let listener = listen(addr, &config)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            listeners.push((listener, tls));
        }
        let mut unix = Vec::with_capacity(config.unix_bind.len());
        for path in &config.unix_bind {
            let listener = unix::listen(path, config.unix_mode, config.backlog).map_err(|e| {
                let shown = crate::address::unix_display(path);
                io::Error::new(e.kind(), format!("--bind {shown}: {e}"))
            })?;
            unix.push(listener);
        }
        Server::new(listeners, unix, config, ctx)
    }

    /// A server on listeners already open (e.g. inherited, after [`adopt`]), each with
    /// whether it speaks TLS; `config`'s addresses are not bound.
    pub fn with_listeners(
        listeners: Vec<(TcpListener, bool)>,
        config: ServerConfig,
        ctx: Context,
    ) -> io::Result<Server> {
        Server::new(listeners, Vec::new(), config, ctx)
    }

    /// A server on TCP `listeners` and `unix` ones, all open.
    fn new(
        listeners: Vec<(TcpListener, bool)>,
        unix: Vec<unix::Listener>,
        config: ServerConfig,
        mut ctx: Context,
    ) -> io::Result<Server> {
        shutdown::install_wake_handler()?;
        listener::warn_of_unsupported_options(&config);
        // The streams' write timeout comes from here, so the connections learn it here.
        ctx.write_timeout = config.write_timeout;
        let listeners: Vec<_> = listeners
            .into_iter()
            .map(|(l, tls)| (Arc::new(l), tls))
            .collect();
        let unix: Vec<_> = unix.into_iter().map(Arc::new).collect();
        let shutdown_timeout = config.shutdown_timeout;
        let registry = Registry {
            // Sized once: growing by doubling would leave the smaller tables behind as
            // heap fragments, resident memory that held connections pay for.
            live: Slab::with_capacity(config.max_connections.min(1 << 16)),
            ..Registry::default()
        };
        let runtime = Runtime::start(&config)?;
        let state = Arc::new(ServerState {
            runtime,
            ctx,
            config,
            listeners: Mutex::new(listeners.iter().map(|(l, _)| Arc::clone(l)).collect()),
            unix_listeners: Mutex::new(unix.clone()),
            registry: Mutex::new(registry),
            left: Condvar::new(),
            next_id: AtomicU64::new(1),
            busy_log: Mutex::new(LogLimit::new(Duration::from_secs(1))),
            counters: Counters::default(),
            phase: readiness::PhaseCell::new(),
            drain: drain::Drain::default(),
        });
        Ok(Server {
            listeners,
            unix,
            state,
            shutdown_timeout,
        })
    }

    /// The addresses actually bound (port 0 resolved): `--bind`'s, then `--tls-bind`'s.
    pub fn local_addrs(&self) -> io::Result<Vec<Listening>> {
        self.listeners
            .iter()
            .map(|(l, tls)| {
                Ok(Listening {
                    addr: l.local_addr()?,
                    tls: *tls,
                })
            })
            .collect()
    }

    /// The paths of the `unix:` listeners, in the order given.
    pub fn unix_paths(&self) -> Vec<PathBuf> {
        self.unix.iter().map(|l| l.path().to_path_buf()).collect()
    }

    /// Its listeners are open: from now on `/readyz` may say it is ready. Before the
    /// announcement, so that whoever reads it finds the server ready.
    pub fn mark_listening(&self) {
        self.state.phase.advance(Phase::Serving);
    }

    /// A handle that stops the server from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            state: Arc::clone(&self.state),
        }
    }

    /// What `--metrics` reads: the server's counters, from any thread.
    pub fn stats(&self) -> StatsHandle {
        StatsHandle {
            state: Arc::clone(&self.state),
        }
    }

    /// Accepts connections until shut down, then waits up to the shutdown timeout for
    /// connections to finish. Returns how many were still open when it gave up.
    pub fn run(self) -> io::Result<usize> {
        let mut acceptors = Vec::new();
        for listener in &self.unix {
            let (listener, state) = (Arc::clone(listener), Arc::clone(&self.state));
            acceptors.push(
                thread::Builder::new()
                    .name("accept".into())
                    .spawn(move || accept::accept_unix_loop(&state, &listener))?,
            );
        }
        for (listener, tls) in self.listeners.iter().skip(1) {
            let (listener, state, tls) = (Arc::clone(listener), Arc::clone(&self.state), *tls);
            acceptors.push(
                thread::Builder::new()
                    .name("accept".into())
                    .spawn(move || accept::accept_loop(&state, &listener, tls))?,
            );
        }
        if let Some((first, tls)) = self.listeners.first() {
            accept::accept_loop(&self.state, first, *tls);
        }
        for acceptor in acceptors {
            let _ = acceptor.join();
        }
        if !cfg!(target_os = "linux") {
            // A listener that could not be shut down still completes clients' handshakes:
            // closed now, it refuses them while the connections finish, as Linux does.
            crate::sync::lock(&self.state.listeners).clear();
            drop(self.listeners);
            crate::sync::lock(&self.state.unix_listeners).clear();
            drop(self.unix);
        }
        admission::report_suppressed_refusals(&self.state, true);
        Ok(shutdown::wait_for_connections(
            &self.state,
            self.shutdown_timeout,
        ))
    }
}

impl ServerState {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // The registry stays consistent even if a holder panicked: every update is one call.
        crate::sync::lock(&self.registry)
    }

    fn stopping(&self) -> bool {
        self.ctx.shutting_down.load(Ordering::Acquire)
    }
}
