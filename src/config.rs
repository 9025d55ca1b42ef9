//! The subcommands' configurations, typed and validated: what `serve`, `client` and
//! `bench` run with, whoever builds them (the command line, or a program using the
//! library), and every default in one place (the command line's `--help` shows these).
//!
//! `tcp-hello cert`'s request is [`crate::cert::Request`].

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::address::SourceAddrs;
use crate::protocol::{Framing, Mode, ReplyFormat};
use crate::rules::Pattern;

pub use crate::address::DEFAULT_ADDR;

/// `serve --welcome`.
pub const WELCOME: &str = "Welcome!";
/// `serve --reply`, and what `bench --expect` expects.
pub const REPLY: &str = "Hello, {}!";
/// `serve --farewell`.
pub const FAREWELL: &str = "Bye!";
/// `serve --mode`.
pub const MODE: Mode = Mode::Greet;
/// `serve --framing` and `client --framing`.
pub const FRAMING: Framing = Framing::Line;
/// `serve --udp-rate`: datagrams per second answered from one address.
pub const UDP_RATE: u32 = 1000;
/// `serve --tls-handshake-timeout`.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// `serve --tls-max-handshakes`.
pub const TLS_MAX_HANDSHAKES: usize = 1024;
/// `serve --tls-max-handshakes-per-source`.
pub const TLS_MAX_HANDSHAKES_PER_SOURCE: usize = 128;
/// `serve --keepalive`: off.
pub const KEEPALIVE: Option<Duration> = None;
/// `serve --user-timeout`: the kernel's.
pub const USER_TIMEOUT: Option<Duration> = None;
/// `serve --thread-cache`.
pub const THREAD_CACHE: usize = 64;
/// `serve --max-connections`.
pub const MAX_CONNECTIONS: usize = 10_000;
/// `serve --max-per-source`: no limit.
pub const MAX_PER_SOURCE: usize = 0;
/// `serve --proxy-header-timeout`.
pub const PROXY_HEADER_TIMEOUT: Duration = crate::proxy::DEFAULT_HEADER_TIMEOUT;
/// `serve --idle-timeout`.
pub const IDLE_TIMEOUT: Option<Duration> = Some(Duration::from_secs(300));
/// `serve --write-timeout`.
pub const WRITE_TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));
/// `serve --max-line`, in bytes.
pub const MAX_LINE: usize = 8192;
/// `serve --delay`.
pub const DELAY: Duration = Duration::ZERO;
/// `serve --backlog`.
pub const BACKLOG: i32 = 1024;
/// `serve --shutdown-timeout`.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// `serve --linger`.
pub const LINGER: Duration = Duration::from_secs(2);
/// `serve --drain-delay`: none, so a stop signal stops at once.
pub const DRAIN_DELAY: Duration = Duration::ZERO;
/// The longest `serve --drain-delay`, in seconds: longer is a typo, not a drain.
pub const MAX_DRAIN_DELAY_SECS: u64 = 3600;

/// `client --connect-timeout`.
pub const CONNECT_TIMEOUT: Option<Duration> = Some(Duration::from_secs(5));
/// `client --reply-timeout`.
pub const REPLY_TIMEOUT: Option<Duration> = Some(Duration::from_secs(10));
/// `client --retries` (with `--udp`).
pub const RETRIES: u32 = 3;

/// `bench --connections`.
pub const BENCH_CONNECTIONS: usize = 64;
/// `bench --duration`, unless `--messages` is given.
pub const BENCH_DURATION: Duration = Duration::from_secs(5);
/// `bench --pipeline`.
pub const BENCH_PIPELINE: usize = 1;
/// `bench --size`, in bytes.
pub const BENCH_SIZE: usize = 8;
/// `bench --connect-rate`, new connections per second.
pub const BENCH_CONNECT_RATE: u64 = 2000;
/// `bench --timeout`.
pub const BENCH_TIMEOUT: Duration = Duration::from_secs(5);
/// `bench --mode hold`: how often each connection sends a name.
pub const BENCH_EVERY: Duration = Duration::from_secs(1);

/// What `tcp-hello bench` has each connection do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BenchMode {
    /// Connections held open, each sending its next names as replies come (closed loop),
    /// or as they fall due with --rate.
    #[default]
    Pingpong,
    /// Each connection connects, reads the welcome, sends one name, says exit, waits for
    /// the close and connects again: connections per second (with --tls, handshakes).
    Churn,
    /// Connections held open for --duration, each sending one name every --every seconds.
    Hold,
}

impl BenchMode {
    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            BenchMode::Pingpong => "pingpong",
            BenchMode::Churn => "churn",
            BenchMode::Hold => "hold",
        }
    }
}
/// `bench --udp --timeout`: a datagram unanswered by then counts as lost and its place
/// in the window goes to the next, so a long wait would slow the load after each loss.
pub const BENCH_UDP_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest client timeout accepted, one year: longer is no different from waiting
/// forever, and a bound keeps every deadline computed from it far from `Duration`'s
/// limits.
pub const MAX_TIMEOUT_SECS: u64 = 365 * 24 * 60 * 60;

/// Whole seconds of an optional duration, 0 for none: how the command line writes it.
pub const fn whole_secs(d: Option<Duration>) -> u64 {
    match d {
        Some(d) => d.as_secs(),
        None => 0,
    }
}

/// What `tcp-hello serve` runs with. `bind`, `tls_bind`, `udp_bind` and `unix_bind`
/// all empty means [`DEFAULT_ADDR`] in plain text.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// Addresses to listen on in plain text.
    pub bind: Vec<SocketAddr>,
    /// Addresses to listen on with TLS (needs `tls_cert` and `tls_key`).
    pub tls_bind: Vec<SocketAddr>,
    /// Addresses to answer UDP datagrams on.
    pub udp_bind: Vec<SocketAddr>,
    /// Unix stream sockets to listen on, in plain text (`--bind unix:PATH`).
    pub unix_bind: Vec<PathBuf>,
    /// The mode of each Unix socket's file; `None`: as the umask leaves it.
    pub unix_mode: Option<u32>,
    /// Most UDP datagrams per second answered from one address; 0 = no limit.
    pub udp_rate: u32,
    /// Also answer UDP source ports below 1024.
    pub udp_low_ports: bool,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// The TLS certificate chain, leaf first (PEM).
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: the CA clients' certificates must chain to (PEM).
    pub tls_client_ca: Option<PathBuf>,
    /// The application protocols (ALPN) offered, in order of preference.
    pub tls_alpn: Vec<String>,
    /// Longest a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// Most TLS handshakes under way at once.
    pub tls_max_handshakes: usize,
    /// Most TLS handshakes under way at once from one client address.
    pub tls_max_handshakes_per_source: usize,
    /// TCP keepalive's idle time; `None` = off.
    pub keepalive: Option<Duration>,
    /// `TCP_USER_TIMEOUT`; `None` = the kernel's.
    pub user_timeout: Option<Duration>,
    /// Finished connection threads kept parked for the next connections.
    pub thread_cache: usize,
    /// Greet, or echo.
    pub mode: Mode,
    /// Lines, or one message per read.
    pub framing: Framing,
    /// The welcome's template.
    pub welcome: String,
    /// The reply's template.
    pub reply: String,
    /// The reply's format: the template, or JSON.
    pub reply_format: ReplyFormat,
    /// The farewell's template; empty sends nothing.
    pub farewell: String,
    /// Most connections served at once (lowered to what the system allows).
    pub max_connections: usize,
    /// Most connections from one client address at once; 0 = no limit.
    pub max_per_source: usize,
    /// Allow rules.
    pub allow: Vec<Pattern>,
    /// Deny rules.
    pub deny: Vec<Pattern>,
    /// Every connection begins with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// With `proxy_protocol`, the only peers that may send a header; empty = any.
    pub proxy_from: Vec<Pattern>,
    /// Longest a connection may take to send its PROXY header.
    pub proxy_header_timeout: Duration,
    /// Files of allow rules.
    pub allow_file: Vec<PathBuf>,
    /// Files of deny rules.
    pub deny_file: Vec<PathBuf>,
    /// Close a connection that sends nothing for this long; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// Close a connection that does not read its replies for this long; `None` = never.
    pub write_timeout: Option<Duration>,
    /// Longest line accepted, in bytes.
    pub max_line: usize,
    /// Wait before each reply.
    pub delay: Duration,
    /// `--fault`: faults on demand ([`crate::fault`]).
    pub faults: Vec<crate::fault::Spec>,
    /// The faults' seed; `None`: from the clock.
    pub fault_seed: Option<u64>,
    /// Listen backlog.
    pub backlog: i32,
    /// SO_REUSEPORT on every listener.
    pub reuse_port: bool,
    /// How long connections get to finish at shutdown.
    pub shutdown_timeout: Duration,
    /// How long a closing connection waits for its client's close.
    pub linger: Duration,
    /// After a stop signal, how long the server goes on serving, not ready, before it
    /// shuts down (`--drain-delay`).
    pub drain_delay: Duration,
    /// `/readyz` answers 503 while the server holds `max_connections`.
    pub unready_at_max: bool,
    /// Connections are closed, with a notice, once this old (less a jitter of up to a
    /// tenth); `None` = never.
    pub max_lifetime: Option<Duration>,
    /// `--trace`: every connection's bytes, dumped; `None` = off.
    pub trace: Option<crate::trace::TraceConfig>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            bind: Vec::new(),
            tls_bind: Vec::new(),
            udp_bind: Vec::new(),
            unix_bind: Vec::new(),
            unix_mode: None,
            udp_rate: UDP_RATE,
            udp_low_ports: false,
            metrics: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_alpn: Vec::new(),
            tls_handshake_timeout: TLS_HANDSHAKE_TIMEOUT,
            tls_max_handshakes: TLS_MAX_HANDSHAKES,
            tls_max_handshakes_per_source: TLS_MAX_HANDSHAKES_PER_SOURCE,
            keepalive: KEEPALIVE,
            user_timeout: USER_TIMEOUT,
            thread_cache: THREAD_CACHE,
            mode: MODE,
            framing: FRAMING,
            welcome: WELCOME.to_string(),
            reply: REPLY.to_string(),
            reply_format: ReplyFormat::Text,
            farewell: FAREWELL.to_string(),
            max_connections: MAX_CONNECTIONS,
            max_per_source: MAX_PER_SOURCE,
            allow: Vec::new(),
            deny: Vec::new(),
            proxy_protocol: false,
            proxy_from: Vec::new(),
            proxy_header_timeout: PROXY_HEADER_TIMEOUT,
            allow_file: Vec::new(),
            deny_file: Vec::new(),
            idle_timeout: IDLE_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            max_line: MAX_LINE,
            delay: DELAY,
            faults: Vec::new(),
            fault_seed: None,
            backlog: BACKLOG,
            reuse_port: false,
            shutdown_timeout: SHUTDOWN_TIMEOUT,
            linger: LINGER,
            drain_delay: DRAIN_DELAY,
            unready_at_max: false,
            max_lifetime: None,
            trace: None,
        }
    }
}

/// The TLS options of `client` and `bench`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsClientConfig {
    /// Speak TLS, verifying the server's certificate.
    pub enabled: bool,
    /// Trust these CA certificates (PEM) instead of the system's.
    pub ca: Option<PathBuf>,
    /// This client's certificate chain (PEM), for mutual TLS; with `key`.
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of `cert`.
    pub key: Option<PathBuf>,
    /// The name the server's certificate must have, instead of the host connected to.
    pub server_name: Option<String>,
    /// The application protocols (ALPN) offered, in order of preference; none: no ALPN.
    pub alpn: Vec<String>,
}

/// What `tcp-hello client` runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The server, `HOST:PORT`.
    pub connect: String,
    /// Names to send; empty: every line of stdin is one.
    pub names: Vec<OsString>,
    /// Give up connecting to one address after this long; `None` = the system's.
    pub connect_timeout: Option<Duration>,
    /// Give up when nothing comes for this long while a reply is due; `None` = never.
    pub reply_timeout: Option<Duration>,
    /// The server's framing.
    pub framing: Framing,
    /// A plain byte pipe.
    pub raw: bool,
    /// Speak UDP.
    pub udp: bool,
    /// With `udp`, how many times an unanswered name is sent again.
    pub retries: u32,
    /// TLS and its options.
    pub tls: TlsClientConfig,
    /// `--trace`: the connection's bytes, dumped; `None` = off.
    pub trace: Option<crate::trace::TraceConfig>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect: DEFAULT_ADDR.to_string(),
            names: Vec::new(),
            connect_timeout: CONNECT_TIMEOUT,
            reply_timeout: REPLY_TIMEOUT,
            framing: FRAMING,
            raw: false,
            udp: false,
            retries: RETRIES,
            tls: TlsClientConfig::default(),
            trace: None,
        }
    }
}

/// What `tcp-hello bench` runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchConfig {
    /// The server, `HOST:PORT`.
    pub connect: String,
    /// Local addresses to connect from; `None`: the kernel picks.
    pub source: Option<SourceAddrs>,
    /// Connections held open at once.
    pub connections: usize,
    /// How long to run, unless `messages` is given; `Duration::MAX` never ends.
    pub duration: Duration,
    /// Stop after this many replies instead of after `duration`.
    pub messages: Option<u64>,
    /// Names in flight per connection.
    pub pipeline: usize,
    /// What each connection does.
    pub mode: BenchMode,
    /// Open loop: names (in churn, connections) per second in total; `None`: closed loop.
    pub rate: Option<f64>,
    /// `--mode hold`: how often each connection sends a name; `None`: not given.
    pub every: Option<Duration>,
    /// Bytes per name.
    pub size: usize,
    /// New connections per second while ramping up; 0 = as fast as possible.
    pub connect_rate: u64,
    /// Worker threads; `None`: the number of CPUs.
    pub threads: Option<usize>,
    /// Longest wait for any one reply; `Duration::MAX` never times out.
    pub timeout: Duration,
    /// The reply template the server is expected to use.
    pub expect: String,
    /// The results as one JSON object on stdout.
    pub json: bool,
    /// Also write the latencies in HdrHistogram's text format here.
    pub hgrm: Option<PathBuf>,
    /// TLS and its options.
    pub tls: TlsClientConfig,
    /// Resume TLS sessions.
    pub tls_resume: bool,
    /// Datagrams instead of connections (`bench --udp`).
    pub udp: bool,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            connect: DEFAULT_ADDR.to_string(),
            source: None,
            connections: BENCH_CONNECTIONS,
            duration: BENCH_DURATION,
            messages: None,
            pipeline: BENCH_PIPELINE,
            mode: BenchMode::Pingpong,
            rate: None,
            every: None,
            size: BENCH_SIZE,
            connect_rate: BENCH_CONNECT_RATE,
            threads: None,
            timeout: BENCH_TIMEOUT,
            expect: REPLY.to_string(),
            json: false,
            hgrm: None,
            tls: TlsClientConfig::default(),
            tls_resume: false,
            udp: false,
        }
    }
}

/// `serve --unix-mode`: a Unix socket file's permission bits, from octal text (`660`,
/// `0660`); at most `777`, the bits a socket's mode has.
pub fn unix_mode(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 && !digits.is_empty() => Ok(mode),
        Ok(_) => Err(format!(
            "{t} has bits beyond 777 (setuid, setgid, sticky), which a socket does not use; \
             give three octal digits, e.g. 660"
        )),
        Err(_) => Err(format!(
            "{t} is not an octal mode; give three octal digits, e.g. 660 (owner and group \
             may connect) or 600 (the owner only)"
        )),
    }
}

/// A client timeout (`--connect-timeout`, `--reply-timeout`) read from its text: 0 is
/// none, else up to [`MAX_TIMEOUT_SECS`] (one year); anything else is refused saying
/// what to give.
pub fn client_timeout(text: &str) -> Result<Option<Duration>, String> {
    let max = MAX_TIMEOUT_SECS;
    let fix =
        format!("give 0 (no timeout) or a number of seconds up to {max} (one year), e.g. 5 or 0.5");
    match text.trim().parse::<f64>() {
        Ok(0.0) => Ok(None),
        Ok(secs) if secs < 0.0 => Err(format!("{text} is negative; {fix}")),
        Ok(secs) if secs > max as f64 => Err(format!("{text} is more than {max} s; {fix}")),
        Ok(secs) => match Duration::try_from_secs_f64(secs) {
            Ok(d) if !d.is_zero() => Ok(Some(d)),
            _ => Err(format!("{text} is not a usable number of seconds; {fix}")),
        },
        Err(_) => Err(format!("{text} is not a usable number of seconds; {fix}")),
    }
}

/// `v` seconds given with `flag` (bench's `--timeout` and `--duration`), as a duration.
/// A value past what a `Duration` holds (about 585 billion years, or `inf`) is
/// `Duration::MAX`, which never comes: no timeout, or no end but Ctrl-C. Zero, less than
/// a nanosecond, negative or NaN is refused with a message that gives `example` as a
/// valid value.
pub fn positive_seconds(flag: &str, v: f64, example: &str) -> Result<Duration, String> {
    let shown = {
        let plain = v.to_string();
        if plain.len() > 16 {
            format!("{v:e}")
        } else {
            plain
        }
    };
    if v.is_nan() || v <= 0.0 {
        return Err(format!(
            "{flag} must be a number of seconds above 0, not {shown}: e.g. {flag} {example}"
        ));
    }
    match Duration::try_from_secs_f64(v) {
        Ok(d) if d.is_zero() => Err(format!(
            "{flag} {shown} is less than a nanosecond: give seconds, e.g. {flag} {example}"
        )),
        Ok(d) => Ok(d),
        // Positive, not NaN: only too large is left.
        Err(_) => Ok(Duration::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_timeouts_are_0_to_a_year() {
        assert_eq!(client_timeout("0"), Ok(None));
        assert_eq!(client_timeout("0.5"), Ok(Some(Duration::from_millis(500))));
        assert_eq!(
            client_timeout("31536000"),
            Ok(Some(Duration::from_secs(MAX_TIMEOUT_SECS)))
        );
        for (bad, says) in [
            ("-1", "negative"),
            ("1e19", "more than 31536000"),
            ("NaN", "not a usable"),
            ("inf", "more than 31536000"),
            ("1e-12", "not a usable"),
            ("x", "not a usable"),
        ] {
            let e = client_timeout(bad).unwrap_err();
            assert!(e.contains(says) && e.contains("one year"), "{bad}: {e}");
        }
    }

    #[test]
    fn positive_seconds_saturate_or_are_refused_with_an_example() {
        assert_eq!(
            positive_seconds("--timeout", 5.0, "5"),
            Ok(Duration::from_secs(5))
        );
        assert_eq!(
            positive_seconds("--timeout", 0.25, "5"),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            positive_seconds("--timeout", 1e-9, "5"),
            Ok(Duration::from_nanos(1))
        );
        for huge in [1e19, 1.8446744073709552e19, 1e300, f64::MAX, f64::INFINITY] {
            let d = positive_seconds("--duration", huge, "10").unwrap();
            assert!(
                d >= Duration::from_secs(10_000_000_000_000_000_000),
                "{huge}"
            );
        }
        assert_eq!(
            positive_seconds("--duration", 1e300, "10"),
            Ok(Duration::MAX)
        );
        let refused = [
            (0.0, "not 0: e.g. --timeout 5"),
            (-0.0, "not -0: e.g. --timeout 5"),
            (-1.0, "not -1: e.g. --timeout 5"),
            (f64::NAN, "not NaN: e.g. --timeout 5"),
            (f64::NEG_INFINITY, "not -inf: e.g. --timeout 5"),
            (-1e300, "not -1e300: e.g. --timeout 5"),
        ];
        for (v, end) in refused {
            assert_eq!(
                positive_seconds("--timeout", v, "5"),
                Err(format!(
                    "--timeout must be a number of seconds above 0, {end}"
                )),
                "{v}"
            );
        }
        assert_eq!(
            positive_seconds("--timeout", 1e-300, "5"),
            Err(
                "--timeout 1e-300 is less than a nanosecond: give seconds, e.g. --timeout 5"
                    .to_string()
            )
        );
    }

    #[test]
    fn unix_modes_are_octal_permission_bits() {
        assert_eq!(unix_mode("660"), Ok(0o660));
        assert_eq!(unix_mode("0600"), Ok(0o600));
        assert_eq!(unix_mode("0o777"), Ok(0o777));
        for (bad, says) in [
            ("999", "not an octal mode"),
            ("rw-rw----", "not an octal mode"),
            ("", "not an octal mode"),
            ("-1", "not an octal mode"),
            ("4755", "beyond 777"),
        ] {
            let e = unix_mode(bad).unwrap_err();
            assert!(e.contains(says) && e.contains("660"), "{bad}: {e}");
        }
    }

    #[test]
    fn whole_secs_writes_none_as_0() {
        assert_eq!(whole_secs(None), 0);
        assert_eq!(whole_secs(IDLE_TIMEOUT), 300);
    }
}
