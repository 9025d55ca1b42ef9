//! Command-line interface: every subcommand's options, each also settable by a
//! `TCP_HELLO_*` environment variable, and their conversion, once, into the library's
//! typed configurations ([`tcp_hello::config`]), whose defaults `--help` shows.

use std::net::SocketAddr;

use std::ffi::OsString;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, Parser, Subcommand};

use tcp_hello::address::Listen;
use tcp_hello::config::{
    self, BenchConfig, ClientConfig, DEFAULT_ADDR, ServeConfig, TlsClientConfig,
};
use tcp_hello::protocol::{Framing, Mode, ReplyFormat};
use tcp_hello::trace::{TraceConfig, TraceTarget};

/// tcp-hello: a thread-per-connection TCP greeting and echo server, its client and its load generator.
#[derive(Debug, Parser)]
// The version line names the commit built from, when there is one (src/build.rs).
#[command(name = "tcp-hello", version = env!("TCP_HELLO_VERSION"), about, propagate_version = true)]
pub struct Cli {
    /// More log output (-v debug, -vv trace). `RUST_LOG` overrides both flags.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = "Logging")]
    pub verbose: u8,
    /// Less log output (-q warnings and errors only, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = "Logging")]
    pub quiet: u8,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: a welcome, `Hello, <name>!` for each line, `exit` to leave.
    Serve(Box<ServeArgs>),
    /// Talk to a server: names as arguments, lines from stdin, or an interactive session.
    Client(ClientArgs),
    /// Load-test a greeting server and report messages/s and latency percentiles.
    Bench(BenchArgs),
    /// Make a private CA, a server certificate and client certificates for TLS, without openssl.
    Cert(CertArgs),
    /// Print a shell's completion script to stdout, e.g. `tcp-hello completions bash >
    /// ~/.local/share/bash-completion/completions/tcp-hello`.
    Completions(CompletionsArgs),
    /// Print the man page (roff) to stdout: `tcp-hello man | man -l -`.
    Man,
}

/// Options of `tcp-hello serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on in plain text; repeat for several (IPv6: `[::1]:9999`; port 0
    /// picks a free port; a host name binds its first IPv4 address; no port means 9999),
    /// or `unix:PATH` for a Unix stream socket (a stale socket file is replaced if nothing
    /// listens on it; the file is removed at exit). Default 127.0.0.1:9999, unless only
    /// --tls-bind or --udp-bind is given.
    #[arg(
        short,
        long = "bind",
        value_name = "ADDR",
        value_parser = tcp_hello::address::parse_listen,
        env = "TCP_HELLO_BIND",
        value_delimiter = ','
    )]
    pub bind: Vec<tcp_hello::address::Listen>,
    /// The mode of each `--bind unix:PATH` socket file, in octal: 660 lets the owner and
    /// the group connect (connecting needs write permission), 666 everyone. Default: as
    /// the umask leaves it (with the usual 022, the owner only).
    #[arg(
        long,
        value_name = "MODE",
        env = "TCP_HELLO_UNIX_MODE",
        value_parser = config::unix_mode
    )]
    pub unix_mode: Option<u32>,
    /// Address to listen on with TLS (needs --tls-cert and --tls-key); repeat for several.
    /// Given alone, no plain listener opens.
    #[arg(
        long = "tls-bind",
        value_name = "ADDR",
        value_parser = tcp_hello::address::parse_bind,
        env = "TCP_HELLO_TLS_BIND",
        value_delimiter = ','
    )]
    pub tls_bind: Vec<SocketAddr>,
    /// Address to answer UDP datagrams on (one datagram back per datagram, no welcome);
    /// repeat for several; IPv6 as `[::1]:9999`; port 0 picks a free port, announced as
    /// `listening on udp ADDR`. Given alone, no TCP listener opens.
    #[arg(
        long = "udp-bind",
        value_name = "ADDR",
        value_parser = tcp_hello::address::parse_bind,
        env = "TCP_HELLO_UDP_BIND",
        value_delimiter = ','
    )]
    pub udp_bind: Vec<SocketAddr>,
    /// Most UDP datagrams per second answered from one address (an IPv6 /64), bursts of
    /// as many; more are dropped and counted (0 = no limit).
    #[arg(
        long,
        value_name = "N",
        env = "TCP_HELLO_UDP_RATE",
        default_value_t = config::UDP_RATE,
        value_parser = whole_number::<u32>,
        allow_negative_numbers = true
    )]
    pub udp_rate: u32,
    /// With `--udp-bind`, also answer source ports below 1024, where services rather
    /// than clients send from (never 7, 13, 17, 19 and 37, which answer anything).
    #[arg(
        long,
        env = "TCP_HELLO_UDP_LOW_PORTS",
        action = clap::ArgAction::SetTrue,
        // The variable takes 1/0, yes/no, on/off and true/false.
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub udp_low_ports: bool,
    /// Serve Prometheus metrics over HTTP at `/metrics` on this address (port 0 picks a
    /// free port, announced on stdout as `metrics on ADDR`), with the probes `/healthz`
    /// (200 while the process runs) and `/readyz` (200 once listening, 503 while starting
    /// or draining). Off by default.
    #[arg(
        long = "metrics",
        value_name = "ADDR",
        value_parser = tcp_hello::address::parse_bind,
        env = "TCP_HELLO_METRICS"
    )]
    pub metrics: Option<SocketAddr>,
    /// The TLS certificate chain, leaf first (PEM); reloaded on SIGHUP.
    #[arg(long, value_name = "FILE", env = "TCP_HELLO_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1); reloaded on SIGHUP.
    #[arg(long, value_name = "FILE", env = "TCP_HELLO_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Mutual TLS: clients must present a certificate chained to this CA (PEM).
    #[arg(long, value_name = "FILE", env = "TCP_HELLO_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// An application protocol (ALPN) the server offers, in order of preference
    /// (repeatable); `{alpn}` shows the one agreed. Without it ALPN is not offered.
    #[arg(
        long,
        value_name = "PROTO",
        requires = "tls_cert",
        env = "TCP_HELLO_TLS_ALPN",
        value_delimiter = ','
    )]
    pub tls_alpn: Vec<String>,
    /// Longest a TLS handshake may take before the connection is closed, its writes
    /// included.
    #[arg(
        long,
        value_name = "SECS",
        env = "TCP_HELLO_TLS_HANDSHAKE_TIMEOUT",
        default_value_t = config::TLS_HANDSHAKE_TIMEOUT.as_secs(),
        value_parser = positive_number::<u64>,
        allow_negative_numbers = true
    )]
    pub tls_handshake_timeout: u64,
    /// Most TLS handshakes under way at once; one more ends the oldest (a real client's
    /// takes a round trip or two). Each holds at most 16 KiB of the client's bytes.
    #[arg(
        long,
        value_name = "N",
        env = "TCP_HELLO_TLS_MAX_HANDSHAKES",
        default_value_t = config::TLS_MAX_HANDSHAKES,
        value_parser = positive_number::<usize>,
        allow_negative_numbers = true
    )]
    pub tls_max_handshakes: usize,
    /// Most TLS handshakes under way at once from one client address; one more ends
    /// that address's oldest.
    #[arg(
        long,
        value_name = "N",
        env = "TCP_HELLO_TLS_MAX_HANDSHAKES_PER_SOURCE",
        default_value_t = config::TLS_MAX_HANDSHAKES_PER_SOURCE,
        value_parser = positive_number::<usize>,
        allow_negative_numbers = true
    )]
    pub tls_max_handshakes_per_source: usize,
    /// TCP keepalive: a connection silent for this long gets 3 probes SECS/3 apart (at
    /// least 1 s), so that a client whose machine vanished is dropped about 2×SECS after
    /// it last sent anything, even with --idle-timeout 0 (0 = off).
    #[arg(
        long,
        value_name = "SECS",
        env = "TCP_HELLO_KEEPALIVE",
        default_value_t = config::whole_secs(config::KEEPALIVE),
        value_parser = at_most::<{ tcp_hello::server::MAX_KEEPALIVE_SECS }>,
        allow_negative_numbers = true
    )]
    pub keepalive: u64,
    /// TCP_USER_TIMEOUT: drop a connection whose client leaves our data unacknowledged
    /// for this long (0 = the kernel's default, about 15 minutes of retransmissions).
    #[arg(
        long,
        value_name = "SECS",
        env = "TCP_HELLO_USER_TIMEOUT",
        default_value_t = config::whole_secs(config::USER_TIMEOUT),
        value_parser = at_most::<{ tcp_hello::server::MAX_USER_TIMEOUT_SECS }>,
        allow_negative_numbers = true
    )]
    pub user_timeout: u64,
    /// Finished connection threads kept parked for the next connections (and as many
    /// TLS handshake threads), each for up to 30 s: a new connection then skips
    /// starting a thread; a quarter of N TLS connections at most are served by their
    /// handshake's thread. 0 = every thread ends with its connection.
    #[arg(
        long,
        value_name = "N",
        env = "TCP_HELLO_THREAD_CACHE",
        default_value_t = config::THREAD_CACHE,
        value_parser = whole_number::<usize>,
        allow_negative_numbers = true
    )]
    pub thread_cache: usize,
    /// Greet clients, or echo their bytes back (RFC 862).
    #[arg(long, value_enum, env = "TCP_HELLO_MODE", default_value_t = config::MODE)]
    pub mode: Mode,
    /// Line-delimited messages, or one message per read with no line endings.
    #[arg(long, value_enum, env = "TCP_HELLO_FRAMING", default_value_t = config::FRAMING)]
    pub framing: Framing,
    /// The first thing a client receives; `{peer}`, `{local}`, `{host}`, `{pid}`, `{conn}`
    /// are replaced, and the connection's facts: `{tls_version}`, `{tls_cipher}`, `{sni}`,
    /// `{alpn}`, `{client_cn}`, `{proxied_by}` (empty without TLS or PROXY), `{age}`
    /// (seconds since connect); `{{` and `}}` are braces.
    #[arg(
        long,
        value_name = "TEMPLATE",
        env = "TCP_HELLO_WELCOME",
        default_value = config::WELCOME
    )]
    pub welcome: String,
    /// Reply template; every `{}` is replaced by the client's line, the other placeholders
    /// as in `--welcome`.
    #[arg(
        long,
        value_name = "TEMPLATE",
        env = "TCP_HELLO_REPLY",
        default_value = config::REPLY
    )]
    pub reply: String,
    /// `json`: every reply is one line of JSON with the name and the connection's facts
    /// (peer, local, host, pid, conn, TLS, PROXY, age), for scripts; instead of --reply.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = ReplyFormat::Text,
          conflicts_with = "reply", env = "TCP_HELLO_REPLY_FORMAT")]
    pub reply_format: ReplyFormat,
    /// Sent before closing when a client says `exit` or `quit`; empty sends nothing.
    /// Placeholders as in `--welcome`.
    #[arg(
        long,
        value_name = "TEMPLATE",
        env = "TCP_HELLO_FAREWELL",
        default_value = config::FAREWELL
    )]
    pub farewell: String,
    /// Most connections served at once; the next one gets `ERROR server busy` and is closed.
    /// Lowered, with a warning, to what the open-file limit and vm.max_map_count allow.
    #[arg(
        long,
        value_name = "N",
        env = "TCP_HELLO_MAX_CONNECTIONS",
        default_value_t = config::MAX_CONNECTIONS,
        value_parser = whole_number::<usize>,
        allow_negative_numbers = true
    )]
    pub max_connections: usize,
    /// Most connections from one client IP address at once, like xinetd's `per_source`
    /// (0 = no limit; an IPv6 address counts by its /64). Keeps one address's idle
    /// connections (slowloris) from taking every slot.
    #[arg(
        long,
        value_name = "N",
        env = "TCP_HELLO_MAX_PER_SOURCE",
        default_value_t = config::MAX_PER_SOURCE,
        value_parser = whole_number::<usize>,
        allow_negative_numbers = true
    )]
    pub max_per_source: usize,
    /// Let in only clients whose address matches an allow rule: an IP address or CIDR
    /// (e.g. 10.0.0.0/8 or 2001:db8::/32); repeat, or separate with commas. The most
    /// specific matching rule decides, deny at a tie.
    #[arg(
        long,
        value_name = "RULE",
        env = "TCP_HELLO_ALLOW",
        value_delimiter = ',',
        value_parser = tcp_hello::rules::parse_pattern
    )]
    pub allow: Vec<tcp_hello::rules::Pattern>,
    /// Refuse clients whose address matches: an IP address or CIDR; repeat, or separate
    /// with commas. Refused clients are closed before a byte is sent.
    #[arg(
        long,
        value_name = "RULE",
        env = "TCP_HELLO_DENY",
        value_delimiter = ',',
        value_parser = tcp_hello::rules::parse_pattern
    )]
    pub deny: Vec<tcp_hello::rules::Pattern>,
    /// Every connection, on every listener, must begin with a PROXY protocol header (v1
    /// or v2, as HAProxy's `send-proxy`/`send-proxy-v2` send): the client's address it
    /// names is the one logged, matched by --allow/--deny, counted by --max-per-source
    /// and shown by `{peer}`. Restrict who may send one with --proxy-from.
    #[arg(
        long,
        env = "TCP_HELLO_PROXY_PROTOCOL",
        action = clap::ArgAction::SetTrue,
        // The variable takes 1/0, yes/no, on/off and true/false.
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub proxy_protocol: bool,
    /// With --proxy-protocol, only peers matching a rule (IP address or CIDR, as
    /// --allow) may connect and send a header; others are closed before a byte. Without
    /// it, anyone who can reach the port can claim any address. Repeat, or separate
    /// with commas.
    #[arg(
        long,
        value_name = "RULE",
        env = "TCP_HELLO_PROXY_FROM",
        value_delimiter = ',',
        value_parser = tcp_hello::rules::parse_pattern,
        requires = "proxy_protocol"
    )]
    pub proxy_from: Vec<tcp_hello::rules::Pattern>,
    /// With --proxy-protocol, longest a connection may take to send its whole PROXY
    /// header before it is closed.
    #[arg(
        long,
        value_name = "SECS",
        env = "TCP_HELLO_PROXY_HEADER_TIMEOUT",
        default_value_t = config::PROXY_HEADER_TIMEOUT.as_secs(),
        value_parser = positive_number::<u64>,
        allow_negative_numbers = true
    )]
    pub proxy_header_timeout: u64,
    /// Allow rules read from a file, one a line, `#` starting a comment; repeatable. Given,
    /// it makes an allow list even if empty.
    #[arg(long, value_name = "FILE", env = "TCP_HELLO_ALLOW_FILE")]
    pub allow_file: Vec<std::path::PathBuf>,
    /// Deny rules read from a file, one a line, `#` starting a comment; repeatable.
    #[arg(long, value_name = "FILE", env = "TCP_HELLO_DENY_FILE")]
    pub deny_file: Vec<std::path::PathBuf>,
    /// Close a connection that sends nothing for this long, after a notice (0 = never).
    #[arg(
        long,
        value_name = "SECS",
        env = "TCP_HELLO_IDLE_TIMEOUT",
        default_value_t = config::whole_secs(config::IDLE_TIMEOUT),
        value_parser = whole_number::<u64>,
        allow_negative_numbers = true
    )]
    pub idle_timeout: u64,
    /// Close a connection whose client does not read its replies for this long (0 = never).
    #[arg(
        long,
        value_name = "SECS",
        env = "TCP_HELLO_WRITE_TIMEOUT",
        default_value_t = config::whole_secs(config::WRITE_TIMEOUT),
        value_parser = whole_number::<u64>,
        allow_negative_numbers = true
    )]
    pub write_timeout: u64,
    /// Longest line accepted, in bytes; a longer one gets an error line and is skipped.
    #[arg(long, value_name = "BYTES", env = "TCP_HELLO_MAX_LINE", default_value_t = config::MAX_LINE as u32,
          value_parser = clap::value_parser!(u32).range(1..=tcp_hello::protocol::MAX_LINE_LIMIT as i64),
        allow_negative_numbers = true
    )]
    pub max_line: u32,
    /// Wait this long before each reply, like the tutorial's `time.sleep(1)`.
    #[arg(long, value_name = "MS", env = "TCP_HELLO_DELAY",
        default_value_t = config::DELAY.as_millis() as u64,
        value_parser = whole_number::<u64>,
        allow_negative_numbers = true
    )]
    pub delay: u64,
    /// Misbehave on purpose, for testing clients and proxies: KIND[,key=value]...,
    /// repeatable. Kinds: reset, close, stall, blackhole, delay, trickle, garbage (UDP:
    /// drop, duplicate, delay); keys: p= (probability), after=welcome|N, when=, ms=, bytes=.
    /// In the environment, specs are separated by `;`.
    #[arg(
        long = "fault",
        value_name = "SPEC",
        env = "TCP_HELLO_FAULT",
        value_delimiter = ';'
    )]
    pub faults: Vec<String>,
    /// Seed of the faults' draws: the same seed and the same clients in order meet the
    /// same faults (default: from the clock, logged at start-up).
    #[arg(long, value_name = "N", env = "TCP_HELLO_FAULT_SEED")]
    pub fault_seed: Option<u64>,
    /// Listen backlog: connections the kernel queues before `accept` (capped by net.core.somaxconn).
    #[arg(
        long,
        value_name = "N",
        env = "TCP_HELLO_BACKLOG",
        default_value_t = config::BACKLOG,
        // Linux reads a negative backlog as the largest; say so rather than surprise.
        value_parser = clap::value_parser!(i32).range(0..)
    ,
        allow_negative_numbers = true
    )]
    pub backlog: i32,
    /// Set SO_REUSEPORT on every listener, so that several tcp-hello processes can listen on
    /// one port and the kernel spreads new connections among them.
    #[arg(
        long,
        env = "TCP_HELLO_REUSE_PORT",
        action = clap::ArgAction::SetTrue,
        // The variable takes 1/0, yes/no, on/off and true/false.
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub reuse_port: bool,
    /// On SIGINT/SIGTERM, how long connections get to finish before the process exits anyway.
    #[arg(
        long,
        value_name = "SECS",
        env = "TCP_HELLO_SHUTDOWN_TIMEOUT",
        default_value_t = config::SHUTDOWN_TIMEOUT.as_secs(),
        value_parser = whole_number::<u64>,
        allow_negative_numbers = true
    )]
    pub shutdown_timeout: u64,
    /// After `exit`, an idle timeout or shutdown, how long the server waits for the
    /// client to close its side after the server's last bytes (reading and discarding what
    /// the client still sends), so that those bytes cannot make the kernel reset the
    /// connection and destroy the farewell. 0 = close at once, as most servers do.
    #[arg(
        long,
        value_name = "SECS",
        env = "TCP_HELLO_LINGER",
        default_value_t = config::LINGER.as_secs(),
        value_parser = at_most::<3600>,
        allow_negative_numbers = true
    )]
    pub linger: u64,
    /// `json`: each log line is one JSON object, for log shippers: time, level, target,
    /// message, and the connection's fields (id, peer, local, duration, bytes_in,
    /// bytes_out, replies, reason). `RUST_LOG`, -v and -q choose the lines either way.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        env = "TCP_HELLO_LOG_FORMAT",
        default_value_t = LogFormat::Text,
        help_heading = "Logging"
    )]
    pub log_format: LogFormat,
    /// On the first SIGTERM or SIGINT, go on accepting and serving for this long with
    /// /readyz answering 503, so that load balancers (Kubernetes' endpoints, kube-proxy)
    /// stop sending clients before the listeners close; then shut down as usual. A second
    /// signal during the delay skips the rest of it. 0 = shut down at once.
    #[arg(
        long,
        value_name = "SECS",
        env = "TCP_HELLO_DRAIN_DELAY",
        default_value_t = config::DRAIN_DELAY.as_secs(),
        value_parser = drain_delay,
        allow_negative_numbers = true
    )]
    pub drain_delay: u64,
    /// With --metrics, /readyz answers 503 while the server holds --max-connections
    /// connections, so that a load balancer sends new clients to other replicas.
    #[arg(
        long,
        env = "TCP_HELLO_UNREADY_AT_MAX",
        action = clap::ArgAction::SetTrue,
        // The variable takes 1/0, yes/no, on/off and true/false.
        value_parser = clap::builder::BoolishValueParser::new(),
        requires = "metrics"
    )]
    pub unready_at_max: bool,
    /// Close a connection this old, at a line boundary, after the notice `server closing
    /// this connection, reconnect`, so that long-lived clients spread over new replicas.
    /// Each connection's lifetime is drawn between 0.9 and 1 times SECS, so that
    /// connections opened together do not all reconnect together. 0 = never.
    #[arg(
        long,
        value_name = "SECS",
        env = "TCP_HELLO_MAX_LIFETIME",
        default_value_t = 0,
        value_parser = whole_number::<u64>,
        allow_negative_numbers = true
    )]
    pub max_lifetime: u64,
    /// `--trace` and `--trace-bytes`.
    #[command(flatten)]
    pub trace_args: TraceArgs,
}

/// How the server's log lines are written. The server's only: it is what runs unattended
/// and has its logs shipped, while the client and bench write their reports and errors to
/// a person on the same stderr as their few log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines as env_logger writes them: `[TIME LEVEL target] message`.
    Text,
    /// One JSON object a line, the record's fields as fields of their own.
    Json,
}

/// Options of `tcp-hello client`.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server address; a host name is resolved and every address tried in turn; or
    /// `unix:PATH`, a Unix socket (`serve --bind unix:PATH`).
    #[arg(short, long, value_name = "HOST:PORT", env = "TCP_HELLO_CONNECT", default_value = DEFAULT_ADDR,
          value_parser = connect_address)]
    pub connect: String,
    /// Names to send; without any, every line of stdin is a name.
    #[arg(value_name = "NAME")]
    pub names: Vec<std::ffi::OsString>,
    /// Give up connecting to one address after this many seconds (0 = wait as long as the system does).
    #[arg(
        long,
        value_name = "SECS",
        env = "TCP_HELLO_CONNECT_TIMEOUT",
        default_value_t = Timeout(config::CONNECT_TIMEOUT),
        allow_negative_numbers = true,
        value_parser = timeout
    )]
    pub connect_timeout: Timeout,
    /// Give up when the server sends nothing for this many seconds while a reply is due (0 = never).
    #[arg(
        long,
        value_name = "SECS",
        env = "TCP_HELLO_REPLY_TIMEOUT",
        default_value_t = Timeout(config::REPLY_TIMEOUT),
        allow_negative_numbers = true,
        value_parser = timeout
    )]
    pub reply_timeout: Timeout,
    /// The server's framing: `chunk` for servers that send no line endings (the Python tutorial's).
    #[arg(long, value_enum, env = "TCP_HELLO_FRAMING", default_value_t = config::FRAMING)]
    pub framing: Framing,
    /// A plain byte pipe like nc: stdin to the socket, the socket to stdout (with
    /// --udp: each line of stdin one datagram, each datagram received printed as it is).
    #[arg(long, conflicts_with = "names")]
    pub raw: bool,
    /// Speak UDP: each name is one datagram, answered by one datagram within
    /// --reply-timeout, sent again up to --retries times; a name left unanswered is
    /// exit 8.
    #[arg(long, conflicts_with = "tls")]
    pub udp: bool,
    /// With --udp, how many times a name is sent again when no reply comes; the sends
    /// share --reply-timeout, each waiting twice as long as the one before.
    #[arg(
        long,
        value_name = "N",
        default_value_t = config::RETRIES,
        requires = "udp",
        value_parser = clap::value_parser!(u32).range(0..=10),
        allow_negative_numbers = true
    )]
    pub retries: u32,
    /// TLS: `--tls` and its options.
    #[command(flatten)]
    pub tls_args: TlsClientArgs,
    /// `--trace` and `--trace-bytes`.
    #[command(flatten)]
    pub trace_args: TraceArgs,
}

/// The wire trace of `tcp-hello serve` and `tcp-hello client`.
#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// Dump every byte each way of every connection, as hex and text, with direction
    /// (`<` received, `>` sent), connection number and seconds since it began, to FILE
    /// (created or truncated) or, with `-`, to stderr. Over TLS, the plaintext.
    #[arg(long, value_name = "FILE|-", env = "TCP_HELLO_TRACE")]
    pub trace: Option<OsString>,
    /// With --trace, the most bytes traced per connection, both ways together; a line
    /// then says the connection's trace stops.
    #[arg(
        long,
        value_name = "N",
        default_value_t = tcp_hello::trace::TRACE_BYTES,
        requires = "trace",
        env = "TCP_HELLO_TRACE_BYTES",
        value_parser = positive_number::<usize>
    )]
    pub trace_bytes: usize,
}

impl TraceArgs {
    fn into_config(self) -> Option<TraceConfig> {
        let target = TraceTarget::parse(&self.trace?);
        Some(TraceConfig {
            target,
            bytes: self.trace_bytes,
        })
    }
}

/// The TLS options of `tcp-hello client` and `tcp-hello bench`. No `TCP_HELLO_*` variable
/// but `TCP_HELLO_TLS`: a `TCP_HELLO_TLS_CERT` shared with `serve` would make a client
/// present the server's certificate.
#[derive(Debug, Clone, Args)]
pub struct TlsClientArgs {
    /// Speak TLS 1.2 or 1.3 to the server, verifying its certificate.
    #[arg(
        long = "tls",
        id = "tls",
        env = "TCP_HELLO_TLS",
        action = clap::ArgAction::SetTrue,
        // The variable takes 1/0, yes/no, on/off and true/false.
        value_parser = clap::builder::BoolishValueParser::new(),
        help_heading = "TLS"
    )]
    pub enabled: bool,
    /// Trust the CA certificates in this PEM file for the server's certificate, instead of
    /// the system's trust roots (e.g. the `ca.pem` of `tcp-hello cert`).
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// This client's certificate (PEM, the chain from the leaf) for a server that asks
    /// for one (mutual TLS); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key", help_heading = "TLS")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert; needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert", help_heading = "TLS")]
    pub tls_key: Option<std::path::PathBuf>,
    /// The name the server's certificate must have (default: the host of --connect; an IP
    /// address must be in the certificate as an IP address).
    #[arg(long, value_name = "NAME", help_heading = "TLS")]
    pub tls_server_name: Option<String>,
    /// An application protocol (ALPN) to offer, in order of preference (repeatable),
    /// to test a server's or a proxy's ALPN routing.
    #[arg(long, value_name = "PROTO", help_heading = "TLS")]
    pub tls_alpn: Vec<String>,
}

/// Options of `tcp-hello bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Server address to load.
    #[arg(short, long, value_name = "HOST:PORT", env = "TCP_HELLO_CONNECT", default_value = DEFAULT_ADDR,
          value_parser = bench_connect_address)]
    pub connect: String,
    /// Local addresses to connect from: an IP address, an inclusive range
    /// (127.0.0.1-127.0.0.8) or a comma-separated list; connection i binds to address
    /// i mod N, the kernel picks the port. One address reaches about 28,000 ports of one
    /// server port, so more connections need several. All of 127.0.0.0/8 is local on
    /// Linux; other addresses must be assigned to an interface.
    #[arg(long, value_name = "ADDRS", env = "TCP_HELLO_SOURCE",
          value_parser = tcp_hello::address::parse_sources)]
    pub source: Option<tcp_hello::address::SourceAddrs>,
    /// Connections held open at once (at most 65,535 per --source address).
    #[arg(short = 'n', long, value_name = "N", default_value_t = config::BENCH_CONNECTIONS,
        value_parser = positive_number::<usize>,
        allow_negative_numbers = true
    )]
    pub connections: usize,
    /// Run for this many seconds (the default, 5, unless --messages is given).
    #[arg(
        short,
        long,
        value_name = "SECS",
        conflicts_with = "messages",
        allow_negative_numbers = true
    )]
    pub duration: Option<f64>,
    /// Stop after this many replies in total instead of after a duration.
    #[arg(short, long, value_name = "N",
        value_parser = positive_number::<u64>,
        allow_negative_numbers = true
    )]
    pub messages: Option<u64>,
    /// Names in flight per connection.
    #[arg(short, long, value_name = "K", default_value_t = config::BENCH_PIPELINE,
        value_parser = positive_number::<usize>,
        allow_negative_numbers = true
    )]
    pub pipeline: usize,
    /// What each connection does.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = config::BenchMode::Pingpong)]
    pub mode: config::BenchMode,
    /// Open loop, as wrk2 -R: N names per second in total (with --mode churn, N new
    /// connections), spread evenly over the connections. Each name is due at its time
    /// whatever the server does, and its latency is timed from then, not from when it
    /// could go out; still at most --pipeline in flight per connection.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub rate: Option<f64>,
    /// With --mode hold: each connection sends one name every SECS seconds (default 1;
    /// fractions allowed), the first at a staggered point of the first interval.
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub every: Option<f64>,
    /// Bytes per name sent.
    #[arg(short, long, value_name = "BYTES", default_value_t = config::BENCH_SIZE,
        value_parser = positive_number::<usize>,
        allow_negative_numbers = true
    )]
    pub size: usize,
    /// New connections opened per second while ramping up (0 = as fast as possible).
    #[arg(long, value_name = "N", default_value_t = config::BENCH_CONNECT_RATE,
        value_parser = whole_number::<u64>,
        allow_negative_numbers = true
    )]
    pub connect_rate: u64,
    /// Worker threads driving the connections (default: the number of CPUs).
    #[arg(long, value_name = "N",
        value_parser = positive_number::<usize>,
        allow_negative_numbers = true
    )]
    pub threads: Option<usize>,
    /// Longest wait to connect, for the TLS handshake, for the welcome, and for each
    /// reply, before counting a timeout (`inf`: no limit) [default: 5; with --udp: 1, after
    /// which a datagram counts as lost]
    #[arg(long, value_name = "SECS", allow_negative_numbers = true)]
    pub timeout: Option<f64>,
    /// Reply template the server is expected to use, written as its `--reply`; `{}` is
    /// the name sent, `{conn}` any connection number.
    #[arg(long, value_name = "TEMPLATE", default_value = config::REPLY)]
    pub expect: String,
    /// Print the results as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write the reply latencies to FILE in HdrHistogram's percentile-distribution
    /// text format, in milliseconds, as wrk2 --latency prints it (plot it at
    /// hdrhistogram.github.io/HdrHistogram/plotFiles.html), and the setup phases beside
    /// it, named before FILE's extension: for lat.hgrm, lat.connect.hgrm,
    /// lat.first_reply.hgrm and with --tls lat.handshake.hgrm. Opened before the run.
    #[arg(long, value_name = "FILE", env = "TCP_HELLO_HGRM")]
    pub hgrm: Option<std::path::PathBuf>,
    /// TLS: `--tls` and its options (every scenario runs over it, and each connection's
    /// handshake is timed).
    #[command(flatten)]
    pub tls_args: TlsClientArgs,
    /// Resume TLS sessions: the connections share one session cache, the first one's full
    /// handshake fills it before the others start. Off: every handshake is a full one.
    #[arg(long, help_heading = "TLS")]
    pub tls_resume: bool,
    /// Load over UDP: each of -n sockets keeps --pipeline datagrams (one name each) in
    /// flight; one unanswered within --timeout counts as lost and the next takes its place.
    /// --messages counts datagrams sent, --rate datagrams per second; --source binds the
    /// sockets; --mode, --every, --tls* and --connect-rate do not apply.
    #[arg(long,
        conflicts_with_all = ["tls", "tls_ca", "tls_cert", "tls_key", "tls_server_name", "tls_alpn",
                              "tls_resume", "connect_rate", "mode", "every"])]
    pub udp: bool,
}

/// Options of `tcp-hello cert`.
#[derive(Debug, Clone, Args)]
pub struct CertArgs {
    /// Directory to write ca.pem, ca.key, server.pem, server.key and NAME.pem, NAME.key
    /// into; created (mode 0700) if missing. No file in it is ever overwritten.
    #[arg(long, value_name = "DIR")]
    pub out: std::path::PathBuf,
    /// A name or IP address the server certificate is for; repeat for several (the first
    /// is its common name).
    #[arg(long = "host", value_name = "NAME_OR_IP", default_values = tcp_hello::cert::DEFAULT_HOSTS)]
    pub hosts: Vec<String>,
    /// Also make a client certificate for mutual TLS, NAME.pem and NAME.key, with NAME as
    /// its common name; repeat for several.
    #[arg(long = "client", value_name = "NAME")]
    pub clients: Vec<String>,
}

/// Options of `tcp-hello completions`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells `tcp-hello completions` writes for: those whose scripts the tests load
/// and the package installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

impl ServeArgs {
    /// The typed configuration: seconds as durations, 0 as none where 0 means off; a bad
    /// `--fault` is refused in one line. `--log-format` is not in it: logging is the
    /// process's, set up before the server runs.
    pub fn into_config(self) -> Result<ServeConfig, String> {
        let seconds = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        let faults = self
            .faults
            .iter()
            .map(|spec| tcp_hello::fault::parse(spec))
            .collect::<Result<_, _>>()?;
        let (mut bind, mut unix_bind) = (Vec::new(), Vec::new());
        for listen in self.bind {
            match listen {
                Listen::Tcp(addr) => bind.push(addr),
                Listen::Unix(path) => unix_bind.push(path),
            }
        }
        Ok(ServeConfig {
            bind,
            unix_bind,
            unix_mode: self.unix_mode,
            tls_bind: self.tls_bind,
            udp_bind: self.udp_bind,
            udp_rate: self.udp_rate,
            udp_low_ports: self.udp_low_ports,
            metrics: self.metrics,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            tls_client_ca: self.tls_client_ca,
            tls_alpn: self.tls_alpn,
            tls_handshake_timeout: Duration::from_secs(self.tls_handshake_timeout),
            tls_max_handshakes: self.tls_max_handshakes,
            tls_max_handshakes_per_source: self.tls_max_handshakes_per_source,
            keepalive: seconds(self.keepalive),
            user_timeout: seconds(self.user_timeout),
            thread_cache: self.thread_cache,
            mode: self.mode,
            framing: self.framing,
            welcome: self.welcome,
            reply: self.reply,
            reply_format: self.reply_format,
            farewell: self.farewell,
            max_connections: self.max_connections,
            max_per_source: self.max_per_source,
            allow: self.allow,
            deny: self.deny,
            proxy_protocol: self.proxy_protocol,
            proxy_from: self.proxy_from,
            proxy_header_timeout: Duration::from_secs(self.proxy_header_timeout),
            allow_file: self.allow_file,
            deny_file: self.deny_file,
            idle_timeout: seconds(self.idle_timeout),
            write_timeout: seconds(self.write_timeout),
            max_line: self.max_line as usize,
            delay: Duration::from_millis(self.delay),
            faults,
            fault_seed: self.fault_seed,
            backlog: self.backlog,
            reuse_port: self.reuse_port,
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout),
            linger: Duration::from_secs(self.linger),
            drain_delay: Duration::from_secs(self.drain_delay),
            unready_at_max: self.unready_at_max,
            max_lifetime: seconds(self.max_lifetime),
            trace: self.trace_args.into_config(),
        })
    }
}

impl TlsClientArgs {
    fn into_config(self) -> TlsClientConfig {
        TlsClientConfig {
            enabled: self.enabled,
            ca: self.tls_ca,
            cert: self.tls_cert,
            key: self.tls_key,
            server_name: self.tls_server_name,
            alpn: self.tls_alpn,
        }
    }
}

impl ClientArgs {
    /// The typed configuration (the timeouts were checked as they were read).
    pub fn into_config(self) -> ClientConfig {
        ClientConfig {
            connect: self.connect,
            names: self.names,
            connect_timeout: self.connect_timeout.0,
            reply_timeout: self.reply_timeout.0,
            framing: self.framing,
            raw: self.raw,
            udp: self.udp,
            retries: self.retries,
            tls: self.tls_args.into_config(),
            trace: self.trace_args.into_config(),
        }
    }
}

impl BenchArgs {
    /// The typed configuration; a `--timeout` or `--duration` that is no usable number of
    /// seconds is refused, naming the flag.
    pub fn into_config(self) -> Result<BenchConfig, String> {
        let timeout = match self.timeout {
            Some(secs) => config::positive_seconds("--timeout", secs, "5")?,
            None if self.udp => config::BENCH_UDP_TIMEOUT,
            None => config::BENCH_TIMEOUT,
        };
        let duration = match self.duration {
            Some(secs) => config::positive_seconds("--duration", secs, "10")?,
            None => config::BENCH_DURATION,
        };
        let every = match self.every {
            Some(secs) => Some(config::positive_seconds("--every", secs, "1")?),
            None => None,
        };
        Ok(BenchConfig {
            connect: self.connect,
            source: self.source,
            connections: self.connections,
            duration,
            messages: self.messages,
            pipeline: self.pipeline,
            mode: self.mode,
            rate: self.rate,
            every,
            size: self.size,
            connect_rate: self.connect_rate,
            threads: self.threads,
            timeout,
            expect: self.expect,
            json: self.json,
            hgrm: self.hgrm,
            tls: self.tls_args.into_config(),
            tls_resume: self.tls_resume,
            udp: self.udp,
        })
    }
}

impl CertArgs {
    /// What `tcp-hello cert` is asked to make.
    pub fn into_request(self) -> tcp_hello::cert::Request {
        tcp_hello::cert::Request {
            out: self.out,
            hosts: self.hosts,
            clients: self.clients,
        }
    }
}

/// Checks a `--connect` address's form, `HOST:PORT` or `unix:PATH` (resolving it is the
/// subcommand's job).
fn connect_address(s: &str) -> Result<String, String> {
    tcp_hello::address::check_target(s.trim()).map(|_| s.trim().to_string())
}

/// `bench --connect`: as [`connect_address`], and a bare number gets a hint, since wrk's
/// and hey's `-c` is the number of connections, which here is `-n`.
fn bench_connect_address(s: &str) -> Result<String, String> {
    connect_address(s).map_err(|e| {
        let number = !s.trim().is_empty() && s.trim().bytes().all(|b| b.is_ascii_digit());
        if number {
            format!(
                "{e} (-c is --connect here; the number of connections is -n, e.g. -n {})",
                s.trim()
            )
        } else {
            e
        }
    })
}

/// A client timeout as the command line holds it: shown in seconds, 0 for none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeout(pub Option<Duration>);

impl Display for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.map_or(0.0, |d| d.as_secs_f64()))
    }
}

/// Reads a client timeout: [`config::client_timeout`], the one check of it.
fn timeout(s: &str) -> Result<Timeout, String> {
    config::client_timeout(s).map(Timeout)
}

/// Reads a whole number, 0 or more; a negative one is refused as such rather than as
/// "an invalid digit".
fn whole_number<T: FromStr>(s: &str) -> Result<T, String>
where
    T::Err: Display,
{
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("{t} is negative; give 0 or more"));
    }
    t.parse()
        .map_err(|e| format!("{e}; give a whole number, 0 or more"))
}

/// Reads a whole number of seconds from 0 to `MAX`, the most the kernel takes.
fn at_most<const MAX: u64>(s: &str) -> Result<u64, String> {
    let n = whole_number::<u64>(s)?;
    if n > MAX {
        return Err(format!(
            "{n} is more than {MAX}, the most the kernel takes; give 0 to {MAX}"
        ));
    }
    Ok(n)
}

/// Reads `--drain-delay`: whole seconds, at most [`config::MAX_DRAIN_DELAY_SECS`].
fn drain_delay(s: &str) -> Result<u64, String> {
    let n = whole_number::<u64>(s)?;
    let most = config::MAX_DRAIN_DELAY_SECS;
    if n > most {
        return Err(format!(
            "{n} s is longer than any load balancer takes to notice; give 0 to {most}"
        ));
    }
    Ok(n)
}

/// Reads a whole number, 1 or more, refusing 0 and negative ones as such.
fn positive_number<T: FromStr + PartialEq + From<u8>>(s: &str) -> Result<T, String>
where
    T::Err: Display,
{
    let t = s.trim();
    if t.starts_with('-') || t.parse::<T>().is_ok_and(|n| n == T::from(0)) {
        return Err(format!("{t} is not a count; give 1 or more"));
    }
    t.parse()
        .map_err(|e| format!("{e}; give a whole number, 1 or more"))
}

impl Cli {
    /// Parses `args` (the program name first), exiting with clap's usage error on a bad
    /// command line. A bad value that came from a `TCP_HELLO_*` variable, not from the
    /// command line, is reported under the variable's name: the flag's name would send
    /// the user looking in the wrong place.
    pub fn parse_args(args: Vec<OsString>) -> Cli {
        Cli::try_parse_from(&args).unwrap_or_else(|e| match from_environment(&e, &args) {
            Some(variable) => {
                let text = e.render().to_string();
                let flag = match e.get(ContextKind::InvalidArg) {
                    Some(ContextValue::String(flag)) => flag.clone(),
                    _ => String::new(),
                };
                let long = flag.split_whitespace().next().unwrap_or_default();
                eprint!(
                    "{}",
                    text.replacen(&format!("'{flag}'"), &format!("{variable} (for {long})"), 1)
                );
                std::process::exit(e.exit_code())
            }
            None => e.exit(),
        })
    }
}

/// The `TCP_HELLO_*` variable a bad value came from: the error is about a value, the
/// flag it was for has a variable that is set, and the flag is not on the command line.
fn from_environment(e: &clap::Error, args: &[OsString]) -> Option<String> {
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(flag)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = flag.split_whitespace().next()?.strip_prefix("--")?;
    let command = Cli::command();
    let arg = command
        .get_subcommands()
        .flat_map(|sub| sub.get_arguments())
        .find(|a| a.get_long() == Some(long))?;
    let variable = arg.get_env()?.to_str()?.to_string();
    std::env::var_os(&variable)?;
    let short = arg.get_short().map(|c| format!("-{c}"));
    let given = args.iter().skip(1).any(|a| {
        let a = a.to_string_lossy();
        let a = a.as_ref();
        a == format!("--{long}")
            || a.starts_with(&format!("--{long}="))
            || short.as_deref().is_some_and(|s| a.starts_with(s))
    });
    (!given).then_some(variable)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `tcp-hello SUB ARGS...` without the process's `TCP_HELLO_*` variables
    /// mattering for the flags given.
    fn parsed(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("tcp-hello").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    /// The README promises it: every serve flag has its `TCP_HELLO_` variable.
    #[test]
    fn every_serve_flag_can_be_set_from_the_environment() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let serve = cli.find_subcommand("serve").expect("serve exists");
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version") {
                continue;
            }
            let wanted = format!("TCP_HELLO_{}", long.to_uppercase().replace('-', "_"));
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            assert_eq!(env.as_deref(), Some(wanted.as_str()), "--{long}");
        }
    }

    #[test]
    fn bench_c_with_a_number_says_that_connections_are_n() {
        let e = Cli::try_parse_from(["tcp-hello", "bench", "-c", "100"]).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("\"100\" looks like a port"), "{e}");
        assert!(
            e.contains("the number of connections is -n, e.g. -n 100"),
            "{e}"
        );
        // An address-like mistake gets no hint about -n.
        let e = Cli::try_parse_from(["tcp-hello", "bench", "-c", "host:x"]).unwrap_err();
        assert!(!e.to_string().contains("-n"), "{e}");
    }

    #[test]
    fn client_timeouts_are_read_once_into_durations() {
        let Command::Client(args) =
            parsed(&["client", "--reply-timeout", "0.5", "--connect-timeout", "0"])
        else {
            panic!("not client");
        };
        let config = args.into_config();
        assert_eq!(config.reply_timeout, Some(Duration::from_millis(500)));
        assert_eq!(config.connect_timeout, None);
        let e = Cli::try_parse_from(["tcp-hello", "client", "--reply-timeout", "-1"]).unwrap_err();
        assert!(e.to_string().contains("-1 is negative"), "{e}");
        assert_eq!(Timeout(config::CONNECT_TIMEOUT).to_string(), "5");
        assert_eq!(Timeout(None).to_string(), "0");
    }

    #[test]
    fn bench_seconds_become_durations_or_are_refused_naming_the_flag() {
        let bench = |args: &[&str]| {
            let mut all = vec!["bench"];
            all.extend_from_slice(args);
            let Command::Bench(args) = parsed(&all) else {
                panic!("not bench");
            };
            args.into_config()
        };
        let c = bench(&["-d", "inf", "--timeout", "0.25"]).unwrap();
        assert_eq!(c.duration, Duration::MAX);
        assert_eq!(c.timeout, Duration::from_millis(250));
        assert_eq!(bench(&[]).unwrap().duration, config::BENCH_DURATION);
        assert_eq!(
            bench(&["--timeout", "0"]).unwrap_err(),
            "--timeout must be a number of seconds above 0, not 0: e.g. --timeout 5"
        );
        assert_eq!(
            bench(&["-d", "NaN"]).unwrap_err(),
            "--duration must be a number of seconds above 0, not NaN: e.g. --duration 10"
        );
        let c = bench(&["--mode", "hold", "--every", "0.2"]).unwrap();
        assert_eq!(c.every, Some(Duration::from_millis(200)));
        assert_eq!(c.mode, config::BenchMode::Hold);
        assert_eq!(
            bench(&["--every", "0"]).unwrap_err(),
            "--every must be a number of seconds above 0, not 0: e.g. --every 1"
        );
        assert_eq!(bench(&["--rate", "1e3"]).unwrap().rate, Some(1000.0));
        // Over UDP a datagram unanswered by the timeout is lost: a shorter default.
        assert_eq!(bench(&[]).unwrap().timeout, config::BENCH_TIMEOUT);
        assert_eq!(
            bench(&["--udp"]).unwrap().timeout,
            config::BENCH_UDP_TIMEOUT
        );
        assert_eq!(
            bench(&["--udp", "--timeout", "3"]).unwrap().timeout,
            Duration::from_secs(3)
        );
    }

    /// The library's defaults are the command line's: nothing given, nothing differs.
    #[test]
    fn defaults_are_the_configs_defaults() {
        // Only when no TCP_HELLO_* variable sets a flag behind the test's back.
        if std::env::vars().any(|(k, _)| k.starts_with("TCP_HELLO_")) {
            return;
        }
        let Command::Serve(args) = parsed(&["serve"]) else {
            panic!("not serve");
        };
        assert_eq!(args.into_config(), Ok(ServeConfig::default()));
        let Command::Client(args) = parsed(&["client"]) else {
            panic!("not client");
        };
        assert_eq!(args.into_config(), ClientConfig::default());
        let Command::Bench(args) = parsed(&["bench"]) else {
            panic!("not bench");
        };
        assert_eq!(args.into_config().unwrap(), BenchConfig::default());
    }

    #[test]
    fn whole_numbers_refuse_negatives_as_such() {
        assert_eq!(whole_number::<u64>("30"), Ok(30));
        assert_eq!(whole_number::<usize>(" 0 "), Ok(0));
        let e = whole_number::<u64>("-1").unwrap_err();
        assert!(e.contains("negative") && e.contains("0 or more"), "{e}");
        let e = whole_number::<u64>("1.5").unwrap_err();
        assert!(e.contains("whole number"), "{e}");
        let e = whole_number::<u64>("18446744073709551616").unwrap_err();
        assert!(e.contains("too large"), "{e}");
        assert_eq!(positive_number::<usize>("4"), Ok(4));
        for bad in ["0", "-4"] {
            let e = positive_number::<usize>(bad).unwrap_err();
            assert!(e.contains("1 or more"), "{e}");
        }
    }

    #[test]
    fn kernel_limited_seconds_are_refused_past_the_limit() {
        assert_eq!(at_most::<32767>("32767"), Ok(32767));
        assert_eq!(at_most::<32767>("0"), Ok(0));
        let e = at_most::<32767>("32768").unwrap_err();
        assert!(e.contains("give 0 to 32767"), "{e}");
        let e = at_most::<32767>("-1").unwrap_err();
        assert!(e.contains("negative"), "{e}");
    }

    #[test]
    fn help_groups_the_logging_flags_after_the_subcommand_s_own() {
        let mut command = Cli::command();
        command.build();
        let help = command
            .find_subcommand_mut("serve")
            .unwrap()
            .render_long_help()
            .to_string();
        let (bind, mode, verbose) = (
            help.find("--bind").unwrap(),
            help.find("--mode").unwrap(),
            help.find("--verbose").unwrap(),
        );
        assert!(bind < mode && mode < verbose, "{help}");
        assert!(help.contains("Logging:"), "{help}");
    }
}
