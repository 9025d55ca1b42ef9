//! Running a server as `tcp-hello serve` does: from a [`ServeConfig`] to listeners,
//! UDP sockets and metrics, serving until stopped.
//!
//! [`run`] is all of `tcp-hello serve`: besides serving it adopts the sockets systemd
//! passes (socket activation), installs the signal handlers, announces the addresses on
//! stdout and tells systemd it is ready. [`start`] is for a program or a test: the same
//! server without touching the process (no signal handlers, no stdout, no systemd), on
//! threads of its own, with its addresses and a handle that stops it.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::thread;

use anyhow::Context as _;
use log::{info, warn};

use crate::activation::{Inherited, Plan};
use crate::config::{DEFAULT_ADDR, ServeConfig};
use crate::connection::Context;
use crate::limits::{connection_limit, warn_of_address_space_limit};
use crate::protocol::{Machine, ReplyFormat, ReplyTemplate, Settings, TemplateField};
use crate::proxy::ProxyProtocol;
use crate::rules::{Action, LiveRules, Rule, Rules};
use crate::server::{Listening, NotReady, Server, ServerConfig, ShutdownHandle, StatsHandle};
use crate::signals::serve_signals;
use crate::tls::{Tls, TlsFiles};
use crate::trace::Trace;
use crate::udp::reply::Replies;
use crate::udp::{UdpConfig, UdpServer, UdpStats};

/// Runs `tcp-hello serve` until a signal stops it; bad configuration fails before
/// anything is served, with a message naming the value.
pub fn run(config: ServeConfig) -> anyhow::Result<()> {
    launch(config, Process::Own)?.serve().map(drop)
}

/// Starts a server on threads of its own, leaving the process alone: no signal
/// handlers, nothing on stdout, no systemd. Bad configuration fails before anything is
/// served, with the message [`run`] gives.
pub fn start(config: ServeConfig) -> anyhow::Result<Running> {
    let serving = launch(config, Process::Shared)?;
    let running = Running {
        listeners: serving.listeners.clone(),
        unix: serving.unix.clone(),
        udp: serving.udp_addrs.clone(),
        metrics: serving.metrics,
        handle: serving.server.shutdown_handle(),
        thread: thread::Builder::new()
            .name("serve".into())
            .spawn(move || serving.serve())
            .context("cannot start the server's thread")?,
    };
    Ok(running)
}

/// A server [`start`]ed: its addresses, and stopping it.
pub struct Running {
    listeners: Vec<Listening>,
    unix: Vec<PathBuf>,
    udp: Vec<SocketAddr>,
    metrics: Option<SocketAddr>,
    handle: ShutdownHandle,
    thread: thread::JoinHandle<anyhow::Result<usize>>,
}

impl Running {
    /// The TCP listeners' addresses (port 0 resolved): the plain ones, then the TLS ones.
    pub fn listeners(&self) -> &[Listening] {
        &self.listeners
    }

    /// The `unix:` listeners' paths.
    pub fn unix_paths(&self) -> &[PathBuf] {
        &self.unix
    }

    /// The UDP sockets' addresses (port 0 resolved).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp
    }

    /// Where the metrics are served, with [`ServeConfig::metrics`].
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// A handle that stops the server from any thread: at once with
    /// [`ShutdownHandle::shutdown`], or as SIGTERM does, after the drain delay, with
    /// [`ShutdownHandle::drain`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Stops the server gracefully and waits for it; returns how many connections
    /// were cut off after the shutdown timeout.
    pub fn stop(self) -> anyhow::Result<usize> {
        self.handle.shutdown();
        self.wait()
    }

    /// Waits until the server stops (through [`Running::shutdown_handle`]); returns how
    /// many connections were cut off after the shutdown timeout.
    pub fn wait(self) -> anyhow::Result<usize> {
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the server's thread panicked"))?
    }
}

/// Whether the server has the process to itself ([`run`]) or shares it ([`start`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Process {
    /// Socket activation, signal handlers, the announcement on stdout, systemd's ready.
    Own,
    /// None of those.
    Shared,
}

/// A server set up and announced, not yet accepting.
struct Serving {
    server: Server,
    udp: Option<UdpServer>,
    listeners: Vec<Listening>,
    unix: Vec<PathBuf>,
    udp_addrs: Vec<SocketAddr>,
    metrics: Option<SocketAddr>,
    /// The metrics thread, answering until the server has stopped.
    _responding: Option<crate::metrics::Responding>,
}

impl Serving {
    /// Accepts until stopped, then waits for the connections and the UDP threads;
    /// returns how many connections were cut off.
    fn serve(self) -> anyhow::Result<usize> {
        // Without TCP listeners this returns at once, and the UDP threads hold on
        // until the server is stopped.
        let left = self.server.run()?;
        if let Some(udp) = self.udp {
            let counts = udp.join();
            if self.udp_addrs.len() > 1 {
                info!("udp, every socket: {counts}");
            }
        }
        info!(
            cut_off = left;
            "stopped ({left} {} cut off)",
            crate::plural::noun(left as u64, "connection", "connections")
        );
        Ok(left)
    }
}

/// Everything up to accepting: checks, TLS, listeners, UDP, metrics and, with
/// [`Process::Own`], the signal handlers, the announcement and systemd's ready.
fn launch(mut config: ServeConfig, process: Process) -> anyhow::Result<Serving> {
    let inherited = match process {
        Process::Own => inherited_sockets(&config)?,
        Process::Shared => None,
    };
    // First, so that /readyz says the server is starting while it reads its files and
    // binds its listeners, rather than nothing answering.
    let pages = Arc::new(Pages::default());
    let metrics = match config.metrics {
        Some(addr) => {
            let listener = crate::metrics::listen(addr)?;
            let local = listener.local_addr()?;
            let responding = crate::metrics::spawn(listener, Arc::clone(&pages))
                .context("cannot start the metrics thread")?;
            info!("metrics on http://{local}/metrics, probes on /healthz and /readyz");
            Some((local, responding))
        }
        None => None,
    };
    if inherited.is_none()
        && config.bind.is_empty()
        && config.tls_bind.is_empty()
        && config.udp_bind.is_empty()
        && config.unix_bind.is_empty()
    {
        config.bind.push(DEFAULT_ADDR.parse()?);
    }
    let tls_listeners = match &inherited {
        Some(sockets) => sockets.iter().any(|s| s.tls),
        None => !config.tls_bind.is_empty(),
    };
    let tls = tls_config(&config, tls_listeners)?;
    let all: Vec<_> = config
        .bind
        .iter()
        .chain(&config.tls_bind)
        .copied()
        .collect();
    if let Some(twice) = crate::address::first_duplicate(&all) {
        anyhow::bail!(
            "--bind {twice} is given twice (names count by the address they resolve to): \
             give each listener an address of its own"
        );
    }
    if let Some(twice) = crate::address::first_duplicate(&config.udp_bind) {
        anyhow::bail!(
            "--udp-bind {twice} is given twice (names count by the address they resolve \
             to): give each UDP socket an address of its own"
        );
    }
    let rules = Arc::new(LiveRules::load(
        &config.allow,
        &config.deny,
        &config.allow_file,
        &config.deny_file,
    )?);
    let loaded = rules.current();
    let tcp_listeners = inherited.is_some() || !all.is_empty();
    unix_conflicts(&config, &loaded, tcp_listeners)?;
    if loaded.refuses_everyone() {
        warn!("address rules: {}", *loaded);
    } else if !loaded.is_empty() {
        info!("address rules: {}", *loaded);
    }
    drop(loaded);
    let proxy = proxy_protocol(&config);
    let machine = Machine::current();
    let template = |text: &str, field| ReplyTemplate::parse(text, field, &machine);
    let settings = Settings {
        mode: config.mode,
        framing: config.framing,
        welcome: template(&config.welcome, TemplateField::Welcome)?,
        reply: match config.reply_format {
            ReplyFormat::Text => template(&config.reply, TemplateField::Reply)?,
            ReplyFormat::Json => ReplyTemplate::json(&machine),
        },
        farewell: template(&config.farewell, TemplateField::Farewell)?,
        max_line: config.max_line,
    };
    settings.check().map_err(anyhow::Error::msg)?;
    let udp_replies = if config.udp_bind.is_empty() {
        None
    } else {
        Some(Replies::new(&settings).map_err(anyhow::Error::msg)?)
    };
    let idle_timeout = config.idle_timeout;
    let mut ctx = Context::new(settings, idle_timeout, config.delay);
    let faults = faults(&config);
    ctx.faults = faults.clone();
    ctx.max_lifetime = config.max_lifetime;
    // Before listening: a trace file that cannot be written fails the start.
    let trace = config.trace.as_ref().map(Trace::open).transpose()?;
    warn_of_address_space_limit();
    let server_config = ServerConfig {
        max_connections: connection_limit(
            config.max_connections,
            inherited.as_ref().map_or(all.len(), Vec::len) + config.unix_bind.len(),
        ),
        max_per_source: config.max_per_source,
        rules: Arc::clone(&rules),
        proxy,
        bind: config.bind,
        tls_bind: config.tls_bind,
        unix_bind: config.unix_bind,
        unix_mode: config.unix_mode,
        tls: tls.clone(),
        backlog: config.backlog,
        reuse_port: config.reuse_port,
        idle_timeout,
        write_timeout: config.write_timeout,
        shutdown_timeout: config.shutdown_timeout,
        linger: config.linger,
        drain_delay: config.drain_delay,
        unready_at_max: config.unready_at_max,
        keepalive: config.keepalive,
        user_timeout: config.user_timeout,
        thread_cache: config.thread_cache,
        max_handshakes: config.tls_max_handshakes,
        max_handshakes_per_source: config.tls_max_handshakes_per_source,
        trace,
    };
    let server = match &inherited {
        Some(sockets) => serve_inherited(sockets, server_config.clone(), ctx)?,
        None => bind(server_config.clone(), ctx)?,
    };
    let mut udp_sockets = Vec::with_capacity(config.udp_bind.len());
    for &addr in &config.udp_bind {
        let socket = crate::udp::bind(addr, config.reuse_port).map_err(|e| {
            bind_error(
                std::io::Error::new(e.kind(), format!("cannot bind udp {addr}: {e}")),
                "--udp-bind",
            )
        })?;
        udp_sockets.push(socket);
    }
    let udp_stats = Arc::new(UdpStats::default());
    // The only place it is set: it cannot have been set before.
    let _ = pages.0.set(Sources {
        server: server.stats(),
        udp: (!udp_sockets.is_empty()).then(|| Arc::clone(&udp_stats)),
        faults: faults.clone(),
    });
    // Before the announcement, so that a script may signal as soon as it has read it.
    // Every thread started before this blocks the signals (`spawn_blocking_stops`).
    if process == Process::Own {
        // Rules from flags alone never change: SIGHUP has none to reload.
        let reloadable = rules.has_files().then(|| Arc::clone(&rules));
        serve_signals(server.shutdown_handle(), tls, reloadable)
            .context("cannot install signal handlers")?;
    }
    let addrs = server.local_addrs()?;
    for addr in &addrs {
        info!(
            local:% = addr.addr, tls = addr.tls, max_connections = server_config.max_connections;
            "listening on {addr} (max {} connections)",
            server_config.max_connections
        );
    }
    let unix = server.unix_paths();
    for path in &unix {
        info!(
            "listening on {} (max {} connections{})",
            crate::address::unix_display(path),
            server_config.max_connections,
            server_config
                .unix_mode
                .map_or(String::new(), |m| format!(", mode {m:03o}"))
        );
    }
    let udp_addrs = udp_sockets
        .iter()
        .map(std::net::UdpSocket::local_addr)
        .collect::<std::io::Result<Vec<_>>>()?;
    let udp = match udp_replies {
        Some(replies) => {
            let rate = match config.udp_rate {
                0 => "no rate limit".to_string(),
                n => format!("at most {n} datagrams/s per address"),
            };
            for addr in &udp_addrs {
                info!(
                    local:% = addr, udp = true;
                    "listening on udp {addr} (replies at most {} bytes longer than the \
                     request; {rate})",
                    replies.fixed()
                );
            }
            let handle = server.shutdown_handle();
            let udp_config = UdpConfig {
                rate: config.udp_rate,
                rules: Arc::clone(&rules),
                peers: crate::udp::reply::PeerRules {
                    own_ports: Vec::new(),
                    low_ports: config.udp_low_ports,
                },
                faults: faults.clone(),
            };
            Some(
                UdpServer::spawn(
                    udp_sockets,
                    replies,
                    udp_config,
                    udp_stats,
                    Arc::new(move || handle.stopping()),
                )
                .context("cannot start the UDP threads")?,
            )
        }
        None => None,
    };
    let (metrics, responding) = metrics.unzip();
    server.mark_listening();
    if process == Process::Own {
        // The announcement is for whoever started us; if they stopped reading, or stdout
        // is full, clients can still be served.
        if let Err(e) = announce(&addrs, &unix, &udp_addrs, metrics) {
            warn!("cannot write the listening addresses to stdout ({e}); serving anyway");
        }
        // A no-op unless systemd runs us as Type=notify (NOTIFY_SOCKET).
        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
            warn!("cannot tell systemd we are ready (READY=1): {e}");
        }
    }
    Ok(Serving {
        server,
        udp,
        listeners: addrs,
        unix,
        udp_addrs,
        metrics,
        _responding: responding,
    })
}

/// What does not apply to `unix:` listeners, said at start-up in one line: the
/// `--unix-mode` of none; `--proxy-protocol`, refused (a proxy's header would be taken
/// for a name); address rules and `--max-per-source`, a warning that they are for the TCP
/// listeners, or refused when there is none (`tcp_listeners`) for them to apply to.
fn unix_conflicts(config: &ServeConfig, rules: &Rules, tcp_listeners: bool) -> anyhow::Result<()> {
    let Some(first) = config.unix_bind.first() else {
        if config.unix_mode.is_some() {
            anyhow::bail!(
                "--unix-mode is for Unix sockets: add --bind unix:PATH, or drop --unix-mode"
            );
        }
        return Ok(());
    };
    let shown = crate::address::unix_display(first);
    let paths = &config.unix_bind;
    let twice = (paths.iter().enumerate()).find(|&(i, p)| paths[..i].contains(p));
    if let Some((_, twice)) = twice {
        anyhow::bail!(
            "--bind {} is given twice: give each listener a path of its own",
            crate::address::unix_display(twice)
        );
    }
    if config.proxy_protocol {
        anyhow::bail!(
            "--proxy-protocol cannot be used with --bind {shown}: no PROXY header is read on \
             a Unix socket (a proxy's would be taken for a name); serve the Unix socket from \
             a server of its own"
        );
    }
    if !rules.is_empty() || config.max_per_source > 0 {
        if !tcp_listeners {
            anyhow::bail!(
                "--allow, --deny and --max-per-source are about IP addresses, and --bind \
                 {shown} has none: who may connect to it is its file's mode (--unix-mode); \
                 drop them, or add a TCP listener for them to apply to"
            );
        }
        warn!(
            "--allow, --deny and --max-per-source apply to the TCP listeners only: --bind \
             {shown} lets in every local user its file's mode allows (--unix-mode)"
        );
    }
    Ok(())
}

/// `--proxy-protocol`, with its trusted proxies (`--proxy-from`) as an allow list.
/// Without any, says once what trusting every peer means.
fn proxy_protocol(config: &ServeConfig) -> Option<ProxyProtocol> {
    if !config.proxy_protocol {
        return None;
    }
    let trusted = config
        .proxy_from
        .iter()
        .map(|p| Rule::flag(Action::Allow, p.clone()))
        .collect::<Vec<_>>();
    if trusted.is_empty() {
        warn!(
            "--proxy-protocol without --proxy-from: anyone who can reach the port can claim \
             any client address (and so pass --allow/--deny and --max-per-source); restrict \
             who may send a PROXY header with --proxy-from (e.g. --proxy-from 10.0.0.5)"
        );
    } else {
        info!(
            "PROXY protocol headers trusted from {} (--proxy-from)",
            config
                .proxy_from
                .iter()
                .map(|p| p.written())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Some(ProxyProtocol {
        // Allow rules only: an allow list once there is one, else every peer is trusted.
        trusted: Rules::new(trusted, false),
        header_timeout: config.proxy_header_timeout,
    })
}

/// The sockets systemd passed us (socket activation), if any; checks that the command
/// line does not also ask to bind.
fn inherited_sockets(config: &ServeConfig) -> anyhow::Result<Option<Vec<Inherited>>> {
    match crate::activation::plan_from_env()? {
        Plan::NotActivated => Ok(None),
        Plan::NotOurs { pid } => {
            warn!(
                "LISTEN_FDS is set but LISTEN_PID is {} instead of our process id {}: \
                 those sockets are not ours (socket activation); binding as usual",
                pid.as_deref().map_or("unset".into(), |p| format!("{p:?}")),
                std::process::id()
            );
            Ok(None)
        }
        Plan::Sockets(sockets) => {
            if !config.bind.is_empty()
                || !config.tls_bind.is_empty()
                || !config.unix_bind.is_empty()
            {
                anyhow::bail!(
                    "--bind and --tls-bind (or TCP_HELLO_BIND, TCP_HELLO_TLS_BIND) cannot be \
                     used with sockets inherited from systemd (LISTEN_FDS): the .socket \
                     unit's ListenStream= says where to listen"
                );
            }
            if config.reuse_port {
                anyhow::bail!(
                    "--reuse-port cannot be used with sockets inherited from systemd \
                     (LISTEN_FDS): set ReusePort=yes in the .socket unit instead"
                );
            }
            Ok(Some(sockets))
        }
    }
}

/// A server on the inherited sockets, each given the options our own listeners get.
fn serve_inherited(
    sockets: &[Inherited],
    server_config: ServerConfig,
    ctx: Context,
) -> anyhow::Result<Server> {
    let listeners = crate::activation::take_listeners(sockets.len())?;
    let mut adopted = Vec::with_capacity(listeners.len());
    for (i, (listener, socket)) in listeners.into_iter().zip(sockets).enumerate() {
        let fd = 3 + i;
        let listener = crate::server::adopt(listener, &server_config)
            .with_context(|| format!("inherited socket fd {fd} (name {:?})", socket.name))?;
        info!(
            "using inherited socket fd {fd} (name {:?}) from systemd: {}",
            socket.name,
            Listening {
                addr: listener.local_addr()?,
                tls: socket.tls
            }
        );
        adopted.push((listener, socket.tls));
    }
    Ok(Server::with_listeners(adopted, server_config, ctx)?)
}

/// Binds `server_config`'s addresses, with a hint for the usual failures.
fn bind(server_config: ServerConfig, ctx: Context) -> anyhow::Result<Server> {
    Server::bind(server_config, ctx).map_err(|e| bind_error(e, "--bind"))
}

/// A failure to bind, with a hint for the usual causes; `flag` names the addresses.
fn bind_error(e: std::io::Error, flag: &str) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "; is another server running there? Pick another port with {flag}, or, to run \
             several servers on one port, start each with --reuse-port"
        ),
        std::io::ErrorKind::PermissionDenied => {
            "; ports below 1024 need root: use a higher port".to_string()
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "; that address is not on this machine: try 127.0.0.1 or 0.0.0.0".to_string()
        }
        _ => String::new(),
    };
    anyhow::anyhow!("{e}{hint}")
}

/// The TLS configuration, read at start-up so that a bad file fails now, naming it.
/// `tls_listeners`: some listener speaks TLS (`--tls-bind`, or an inherited socket
/// named `tls`).
fn tls_config(config: &ServeConfig, tls_listeners: bool) -> anyhow::Result<Option<Arc<Tls>>> {
    if !tls_listeners {
        if config.tls_cert.is_some() || config.tls_key.is_some() || config.tls_client_ca.is_some() {
            anyhow::bail!(
                "--tls-cert, --tls-key and --tls-client-ca are for TLS listeners: add \
                 --tls-bind ADDR (e.g. --tls-bind 127.0.0.1:9443), or, with systemd's \
                 sockets, FileDescriptorName=tls in the .socket unit of the TLS one"
            );
        }
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        anyhow::bail!(
            "{} needs --tls-cert FILE and --tls-key FILE (`tcp-hello cert --out DIR` makes \
             a set)",
            if config.tls_bind.is_empty() {
                "the inherited socket named tls"
            } else {
                "--tls-bind"
            }
        );
    };
    let files = TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: config.tls_client_ca.clone(),
        alpn: config.tls_alpn.clone(),
    };
    let timeout = config.tls_handshake_timeout;
    Ok(Some(Arc::new(
        Tls::load(files, timeout).map_err(anyhow::Error::msg)?,
    )))
}

/// Writes one `listening on <address>` line per listener to stdout (`listening on tls
/// <address>` for a TLS one, `listening on unix:<path>` for a Unix socket, `listening
/// on udp <address>` for a UDP socket), then
/// `metrics on <address>` with `--metrics`, flushed, so that a script can read the port
/// chosen for port 0.
fn announce(
    addrs: &[Listening],
    unix: &[PathBuf],
    udp: &[SocketAddr],
    metrics: Option<SocketAddr>,
) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    for addr in addrs {
        writeln!(stdout, "listening on {addr}")?;
    }
    for path in unix {
        writeln!(
            stdout,
            "listening on {}",
            crate::address::unix_display(path)
        )?;
    }
    for addr in udp {
        writeln!(stdout, "listening on udp {addr}")?;
    }
    // After the listeners: scripts that read N `listening on` lines are not thrown off.
    if let Some(addr) = metrics {
        writeln!(stdout, "metrics on {addr}")?;
    }
    stdout.flush()
}

/// `--fault`: the faults and their seed (from the clock unless `--fault-seed`), logged
/// so that a run can be repeated; `None` without `--fault`.
fn faults(config: &ServeConfig) -> Option<Arc<crate::fault::Faults>> {
    let seed = config.fault_seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let faults = crate::fault::Faults::new(config.faults.clone(), seed)?;
    info!(
        "faults on: {} {} (--fault-seed {seed})",
        config.faults.len(),
        crate::plural::noun(config.faults.len() as u64, "fault", "faults")
    );
    Some(Arc::new(faults))
}

/// What `--metrics` serves: nothing but "starting" until the server is set up, then its
/// counters and readiness.
#[derive(Default)]
struct Pages(OnceLock<Sources>);

/// Where the metrics pages come from, once the server is set up.
struct Sources {
    server: StatsHandle,
    udp: Option<Arc<UdpStats>>,
    faults: Option<Arc<crate::fault::Faults>>,
}

impl crate::metrics::Pages for Arc<Pages> {
    fn metrics(&self) -> Result<String, String> {
        let Some(sources) = self.0.get() else {
            return Err(NotReady::Starting.to_string());
        };
        let mut text = sources.server.snapshot().render();
        if let Some(udp) = &sources.udp {
            text.push_str(&udp.render());
        }
        if let Some(faults) = &sources.faults {
            text.push_str(&faults.render());
        }
        Ok(text)
    }

    fn ready(&self) -> Result<(), String> {
        match self.0.get() {
            None => Err(NotReady::Starting.to_string()),
            Some(sources) => sources.server.readiness().map_err(|why| why.to_string()),
        }
    }
}
