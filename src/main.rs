//! The `tcp-hello` binary: parses the command line, sets up logging, runs the
//! subcommand, and turns errors into one-line messages and exit codes.

#![forbid(unsafe_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use log::{info, warn};

use tcp_hello::activation::{Inherited, Plan};
use tcp_hello::bench::Outcome;
use tcp_hello::cli::{Cli, Command, ServeArgs};
use tcp_hello::connection::Context;
use tcp_hello::limits::{connection_limit, raise_fd_limit, warn_of_address_space_limit};
use tcp_hello::protocol::{Machine, ReplyTemplate, Settings, TemplateField};
use tcp_hello::proxy::ProxyProtocol;
use tcp_hello::rules::{Action, Rule, Rules};
use tcp_hello::server::{Listening, Server, ServerConfig};
use tcp_hello::signals::serve_signals;
use tcp_hello::tls::{Tls, TlsFiles};
use tcp_hello::udp::reply::Replies;
use tcp_hello::udp::{UdpConfig, UdpServer, UdpStats};

fn main() -> ExitCode {
    let cli = Cli::parse_args(std::env::args_os().collect());
    init_logging(cli.verbose, cli.quiet);
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Client(args) => Ok(tcp_hello::client::run(&args)),
        Command::Bench(args) => match raise_fd_limit().and_then(|_| tcp_hello::bench::run(&args)) {
            Ok(Outcome::Passed) => Ok(ExitCode::SUCCESS),
            Ok(Outcome::Failed) => Ok(ExitCode::from(1)),
            // As a shell reports a command ended by SIGINT: the run did not finish.
            Ok(Outcome::Interrupted) => Ok(ExitCode::from(130)),
            Err(e) => Err(e.into()),
        },
        Command::Cert(args) => cert(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tcp-hello: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `RUST_LOG` wins when set to something; otherwise info, moved by -v and -q. A set
/// but empty `RUST_LOG=` (common in unit files and `docker -e`) counts as unset: to
/// env_logger it would mean errors only, whatever -v or -q say.
fn init_logging(verbose: u8, quiet: u8) {
    let level = match i16::from(verbose) - i16::from(quiet) {
        ..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| !f.trim().is_empty())
        .unwrap_or_else(|| level.to_string());
    env_logger::Builder::from_env(env_logger::Env::new().write_style("RUST_LOG_STYLE"))
        .parse_filters(&filter)
        .format_timestamp_millis()
        .init();
}

fn serve(mut args: ServeArgs) -> anyhow::Result<ExitCode> {
    let inherited = inherited_sockets(&args)?;
    if inherited.is_none()
        && args.bind.is_empty()
        && args.tls_bind.is_empty()
        && args.udp_bind.is_empty()
    {
        args.bind.push(tcp_hello::cli::DEFAULT_ADDR.parse()?);
    }
    let tls_listeners = match &inherited {
        Some(sockets) => sockets.iter().any(|s| s.tls),
        None => !args.tls_bind.is_empty(),
    };
    let tls = tls_config(&args, tls_listeners)?;
    let all: Vec<_> = args.bind.iter().chain(&args.tls_bind).copied().collect();
    if let Some(twice) = tcp_hello::address::first_duplicate(&all) {
        anyhow::bail!(
            "--bind {twice} is given twice (names count by the address they resolve to): \
             give each listener an address of its own"
        );
    }
    if let Some(twice) = tcp_hello::address::first_duplicate(&args.udp_bind) {
        anyhow::bail!(
            "--udp-bind {twice} is given twice (names count by the address they resolve \
             to): give each UDP socket an address of its own"
        );
    }
    let rules = Rules::load(&args.allow, &args.deny, &args.allow_file, &args.deny_file)?;
    if rules.refuses_everyone() {
        warn!("address rules: {rules}");
    } else if !rules.is_empty() {
        info!("address rules: {rules}");
    }
    let proxy = proxy_protocol(&args);
    let machine = Machine::current();
    let template = |text: &str, field| ReplyTemplate::parse(text, field, &machine);
    let settings = Settings {
        mode: args.mode,
        framing: args.framing,
        welcome: template(&args.welcome, TemplateField::Welcome)?,
        reply: template(&args.reply, TemplateField::Reply)?,
        farewell: template(&args.farewell, TemplateField::Farewell)?,
        max_line: args.max_line as usize,
    };
    settings.check().map_err(anyhow::Error::msg)?;
    let udp_replies = if args.udp_bind.is_empty() {
        None
    } else {
        Some(Replies::new(&settings).map_err(anyhow::Error::msg)?)
    };
    let seconds = |s: u64| (s > 0).then(|| Duration::from_secs(s));
    let idle_timeout = seconds(args.idle_timeout);
    let ctx = Context::new(settings, idle_timeout, Duration::from_millis(args.delay));
    warn_of_address_space_limit();
    let config = ServerConfig {
        max_connections: connection_limit(
            args.max_connections,
            inherited.as_ref().map_or(all.len(), Vec::len),
        ),
        max_per_source: args.max_per_source,
        rules,
        proxy,
        bind: args.bind,
        tls_bind: args.tls_bind,
        tls: tls.clone(),
        backlog: args.backlog,
        reuse_port: args.reuse_port,
        idle_timeout,
        write_timeout: seconds(args.write_timeout),
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        linger: Duration::from_secs(args.linger),
        keepalive: seconds(args.keepalive),
        user_timeout: seconds(args.user_timeout),
        thread_cache: args.thread_cache,
        max_handshakes: args.tls_max_handshakes,
        max_handshakes_per_source: args.tls_max_handshakes_per_source,
    };
    let server = match &inherited {
        Some(sockets) => serve_inherited(sockets, config.clone(), ctx)?,
        None => bind(config.clone(), ctx)?,
    };
    let mut udp_sockets = Vec::with_capacity(args.udp_bind.len());
    for &addr in &args.udp_bind {
        let socket = tcp_hello::udp::bind(addr, args.reuse_port).map_err(|e| {
            bind_error(
                std::io::Error::new(e.kind(), format!("cannot bind udp {addr}: {e}")),
                "--udp-bind",
            )
        })?;
        udp_sockets.push(socket);
    }
    let udp_stats = Arc::new(UdpStats::default());
    let metrics = match args.metrics {
        Some(addr) => {
            let listener = tcp_hello::metrics::listen(addr)?;
            let local = listener.local_addr()?;
            let stats = server.stats();
            let udp_stats = (!udp_sockets.is_empty()).then(|| Arc::clone(&udp_stats));
            // The thread ends with the process: it holds nothing that needs closing.
            tcp_hello::metrics::spawn(listener, move || {
                let mut text = stats.snapshot().render();
                if let Some(udp) = &udp_stats {
                    text.push_str(&udp.render());
                }
                text
            })
            .context("cannot start the metrics thread")?;
            Some(local)
        }
        None => None,
    };
    // Before the announcement, so that a script may signal as soon as it has read it.
    // Every thread started before this blocks the signals (`spawn_blocking_stops`).
    serve_signals(server.shutdown_handle(), tls).context("cannot install signal handlers")?;
    let addrs = server.local_addrs()?;
    for addr in &addrs {
        info!(
            "listening on {addr} (max {} connections)",
            config.max_connections
        );
    }
    let udp_addrs = udp_sockets
        .iter()
        .map(std::net::UdpSocket::local_addr)
        .collect::<std::io::Result<Vec<_>>>()?;
    let udp = match udp_replies {
        Some(replies) => {
            let rate = match args.udp_rate {
                0 => "no rate limit".to_string(),
                n => format!("at most {n} datagrams/s per address"),
            };
            for addr in &udp_addrs {
                info!(
                    "listening on udp {addr} (replies at most {} bytes longer than the \
                     request; {rate})",
                    replies.fixed()
                );
            }
            let handle = server.shutdown_handle();
            let udp_config = UdpConfig {
                rate: args.udp_rate,
                rules: config.rules.clone(),
                peers: tcp_hello::udp::reply::PeerRules {
                    own_ports: Vec::new(),
                    low_ports: args.udp_low_ports,
                },
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
    if let Some(local) = metrics {
        info!("metrics on http://{local}/metrics");
    }
    // The announcement is for whoever started us; if they stopped reading, or stdout is
    // full, clients can still be served.
    if let Err(e) = announce(&addrs, &udp_addrs, metrics) {
        warn!("cannot write the listening addresses to stdout ({e}); serving anyway");
    }
    // A no-op unless systemd runs us as Type=notify (NOTIFY_SOCKET).
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        warn!("cannot tell systemd we are ready (READY=1): {e}");
    }
    // Without TCP listeners this returns at once, and the UDP threads hold the process
    // until a signal stops them.
    let left = server.run()?;
    if let Some(udp) = udp {
        let counts = udp.join();
        if udp_addrs.len() > 1 {
            info!("udp, every socket: {counts}");
        }
    }
    info!("stopped ({left} connections cut off)");
    Ok(ExitCode::SUCCESS)
}

/// `--proxy-protocol`, with its trusted proxies (`--proxy-from`) as an allow list.
/// Without any, says once what trusting every peer means.
fn proxy_protocol(args: &ServeArgs) -> Option<ProxyProtocol> {
    if !args.proxy_protocol {
        return None;
    }
    let trusted = args
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
            args.proxy_from
                .iter()
                .map(|p| p.written())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Some(ProxyProtocol {
        // Allow rules only: an allow list once there is one, else every peer is trusted.
        trusted: Rules::new(trusted, false),
        header_timeout: Duration::from_secs(args.proxy_header_timeout),
    })
}

/// The sockets systemd passed us (socket activation), if any; checks that the command
/// line does not also ask to bind.
fn inherited_sockets(args: &ServeArgs) -> anyhow::Result<Option<Vec<Inherited>>> {
    match tcp_hello::activation::plan_from_env()? {
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
            if !args.bind.is_empty() || !args.tls_bind.is_empty() {
                anyhow::bail!(
                    "--bind and --tls-bind (or TCP_HELLO_BIND, TCP_HELLO_TLS_BIND) cannot be \
                     used with sockets inherited from systemd (LISTEN_FDS): the .socket \
                     unit's ListenStream= says where to listen"
                );
            }
            if args.reuse_port {
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
    config: ServerConfig,
    ctx: Context,
) -> anyhow::Result<Server> {
    let listeners = tcp_hello::activation::take_listeners(sockets.len())?;
    let mut adopted = Vec::with_capacity(listeners.len());
    for (i, (listener, socket)) in listeners.into_iter().zip(sockets).enumerate() {
        let fd = 3 + i;
        let listener = tcp_hello::server::adopt(listener, &config)
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
    Ok(Server::with_listeners(adopted, config, ctx)?)
}

/// Binds `config`'s addresses, with a hint for the usual failures.
fn bind(config: ServerConfig, ctx: Context) -> anyhow::Result<Server> {
    Server::bind(config, ctx).map_err(|e| bind_error(e, "--bind"))
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
fn tls_config(args: &ServeArgs, tls_listeners: bool) -> anyhow::Result<Option<Arc<Tls>>> {
    if !tls_listeners {
        if args.tls_cert.is_some() || args.tls_key.is_some() || args.tls_client_ca.is_some() {
            anyhow::bail!(
                "--tls-cert, --tls-key and --tls-client-ca are for TLS listeners: add \
                 --tls-bind ADDR (e.g. --tls-bind 127.0.0.1:9443), or, with systemd's \
                 sockets, FileDescriptorName=tls in the .socket unit of the TLS one"
            );
        }
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        anyhow::bail!(
            "{} needs --tls-cert FILE and --tls-key FILE (`tcp-hello cert --out DIR` makes \
             a set)",
            if args.tls_bind.is_empty() {
                "the inherited socket named tls"
            } else {
                "--tls-bind"
            }
        );
    };
    let files = TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
        client_ca: args.tls_client_ca.clone(),
    };
    let timeout = Duration::from_secs(args.tls_handshake_timeout);
    Ok(Some(Arc::new(
        Tls::load(files, timeout).map_err(anyhow::Error::msg)?,
    )))
}

/// Writes one `listening on <address>` line per listener to stdout (`listening on tls
/// <address>` for a TLS one, `listening on udp <address>` for a UDP socket), then
/// `metrics on <address>` with `--metrics`, flushed, so that a script can read the port
/// chosen for port 0.
fn announce(
    addrs: &[Listening],
    udp: &[SocketAddr],
    metrics: Option<SocketAddr>,
) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    for addr in addrs {
        writeln!(stdout, "listening on {addr}")?;
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

/// `tcp-hello cert`: writes the files, names each on stdout, then the commands to try next.
fn cert(args: &tcp_hello::cli::CertArgs) -> anyhow::Result<ExitCode> {
    use tcp_hello::cert;
    let request = cert::Request {
        out: args.out.clone(),
        hosts: args.hosts.clone(),
        clients: args.clients.clone(),
    };
    let made = cert::make(&request)?;
    let mut stdout = std::io::stdout().lock();
    let mut report = || -> std::io::Result<()> {
        for path in &made.files {
            writeln!(stdout, "wrote {}", path.display())?;
        }
        write!(
            stdout,
            "{}",
            cert::next_steps(&request.out, &made.hosts, &request.clients)
        )?;
        stdout.flush()
    };
    report().context("the files were written, but stdout failed")?;
    Ok(ExitCode::SUCCESS)
}
