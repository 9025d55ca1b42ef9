//! Command-line arguments checked and resolved, and how connections and messages are shared out.

use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::Duration;

use super::names::Template;
use super::source::check_sources;
use super::tls::{self, TlsSetup};
use super::{
    CLOSE_GRACE, DEFAULT_SECS, MAX_ALL_CONNECTIONS, MAX_BATCH_BYTES, MAX_CONNECTIONS,
    MAX_REPLY_BYTES, READ_BUF, SETUPS_IN_FLIGHT,
};
use crate::address::SourceAddrs;
use crate::address::parse_connect;
use crate::cli::BenchArgs;

/// `BenchArgs`, checked and resolved.
#[derive(Debug)]
pub(super) struct Config {
    pub(super) addr: SocketAddr,
    /// `--source`: the local addresses to connect from; `None`: the kernel picks.
    pub(super) sources: Option<SourceAddrs>,
    pub(super) connections: usize,
    pub(super) threads: usize,
    pub(super) pipeline: usize,
    pub(super) size: usize,
    pub(super) template: Template,
    pub(super) timeout: Duration,
    /// `None` in messages mode.
    pub(super) duration: Option<Duration>,
    pub(super) messages: Option<u64>,
    pub(super) connect_rate: u64,
    /// Setups in flight per worker.
    pub(super) setup_limit: usize,
    pub(super) read_cap: usize,
    pub(super) close_grace: Duration,
    /// `--tls` and its options; `None` in plain text.
    pub(super) tls: Option<TlsSetup>,
}

impl Config {
    pub(super) fn from_args(a: &BenchArgs) -> io::Result<Config> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let secs = |flag, v, example| seconds(flag, v, example).map_err(invalid);
        if a.connections == 0 {
            return Err(invalid("--connections must be at least 1".into()));
        }
        let addresses = a.source.as_ref().map_or(1, SourceAddrs::len);
        let most = MAX_CONNECTIONS
            .saturating_mul(addresses)
            .min(MAX_ALL_CONNECTIONS);
        if a.connections > most {
            let from = match addresses {
                1 => "one address".to_string(),
                n => format!("{n} source addresses"),
            };
            let why = if most == MAX_ALL_CONNECTIONS {
                "the most open files a process may have".to_string()
            } else if addresses == 1 {
                "one per local port".to_string()
            } else {
                format!("{MAX_CONNECTIONS} per address, one per local port")
            };
            return Err(invalid(format!(
                "--connections {} is more than {from} can open to one server (at most \
                 {most}, {why}): e.g. --connections 10000, or more addresses with --source",
                a.connections
            )));
        }
        if a.pipeline == 0 {
            return Err(invalid("--pipeline must be at least 1".into()));
        }
        if a.size == 0 {
            return Err(invalid("--size must be at least 1 byte".into()));
        }
        if a.pipeline.saturating_mul(a.size.saturating_add(1)) > MAX_BATCH_BYTES {
            return Err(invalid(format!(
                "--pipeline {} with --size {} needs more than {} MiB per connection",
                a.pipeline,
                a.size,
                MAX_BATCH_BYTES >> 20
            )));
        }
        if a.messages == Some(0) {
            return Err(invalid("--messages must be at least 1".into()));
        }
        if a.threads == Some(0) {
            return Err(invalid("--threads must be at least 1".into()));
        }
        let timeout = secs("--timeout", a.timeout, "5")?;
        let duration = match a.messages {
            Some(_) => None,
            None => Some(secs(
                "--duration",
                a.duration.unwrap_or(DEFAULT_SECS),
                "10",
            )?),
        };
        let template = Template::parse(&a.expect).map_err(invalid)?;
        let reply_len = template.reply_len(a.size);
        if reply_len > MAX_REPLY_BYTES {
            return Err(invalid(format!(
                "--expect {:?} with --size {} expects {reply_len}-byte replies, more than {} \
                 MiB: lower --size or use fewer {{}}",
                a.expect,
                a.size,
                MAX_REPLY_BYTES >> 20
            )));
        }
        let target = parse_connect(&a.connect).map_err(invalid)?;
        // Before resolving: a bad file is the user's to fix whatever the network says.
        let tls = tls::setup(a, &target)?;
        let addr = resolve(&a.connect)?;
        if let Some(sources) = &a.source {
            check_sources(sources, addr)?;
        }
        let threads = a
            .threads
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, NonZeroUsize::get))
            .min(a.connections);
        Ok(Config {
            addr,
            sources: a.source.clone(),
            connections: a.connections,
            threads,
            pipeline: a.pipeline,
            size: a.size,
            read_cap: READ_BUF.max(reply_len + 2),
            template,
            timeout,
            duration,
            messages: a.messages,
            connect_rate: a.connect_rate,
            setup_limit: setup_share(SETUPS_IN_FLIGHT, threads),
            close_grace: CLOSE_GRACE.min(timeout),
            tls,
        })
    }
}

/// `v` seconds given with `flag`, as a duration. A value past what a `Duration` holds
/// (about 585 billion years, or `inf`) is `Duration::MAX`, which never comes: no
/// timeout, or no end but Ctrl-C. Zero, less than a nanosecond, negative or NaN is
/// refused with a message that gives `example` as a valid value.
pub(super) fn seconds(flag: &str, v: f64, example: &str) -> Result<Duration, String> {
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

/// The first address `--connect` resolves to (see [`parse_connect`]).
pub(super) fn resolve(connect: &str) -> io::Result<SocketAddr> {
    let target =
        parse_connect(connect).map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
    let addrs = target.resolve().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot resolve --connect {target}: {e}; check the host name, or use an IP address"
            ),
        )
    })?;
    addrs.first().copied().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("--connect {target} resolved to no address"),
        )
    })
}

/// Each worker's share of `total` setups in flight (at least one).
pub(super) fn setup_share(total: usize, threads: usize) -> usize {
    total.div_ceil(threads.max(1)).max(1)
}

/// When connection number `index` may start, counted from the beginning of the
/// run, for `rate` new connections per second (0 = no limit).
pub(super) fn connect_offset(index: u64, rate: u64) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    let nanos = u128::from(index) * 1_000_000_000 / u128::from(rate);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Takes up to `want` messages from the shared budget of messages mode (no
/// budget: duration mode, no limit); 0 once it is spent.
pub(super) fn claim(budget: Option<&AtomicU64>, want: u64) -> u64 {
    let Some(budget) = budget else { return want };
    match budget.fetch_update(Relaxed, Relaxed, |left| {
        (left > 0).then(|| left - left.min(want))
    }) {
        Ok(left) => left.min(want),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use std::iter;

    #[test]
    fn connection_starts_are_spread_by_rate() {
        assert_eq!(connect_offset(5_000, 0), Duration::ZERO);
        assert_eq!(connect_offset(0, 2000), Duration::ZERO);
        assert_eq!(connect_offset(1, 2000), Duration::from_micros(500));
        assert_eq!(connect_offset(4000, 2000), Duration::from_secs(2));
        assert_eq!(connect_offset(3, 7), Duration::from_nanos(428_571_428));
        assert_eq!(connect_offset(u64::MAX, 1), Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn seconds_saturate_or_are_refused_with_an_example() {
        assert_eq!(seconds("--timeout", 5.0, "5"), Ok(Duration::from_secs(5)));
        assert_eq!(
            seconds("--timeout", 0.25, "5"),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(seconds("--timeout", 1e-9, "5"), Ok(Duration::from_nanos(1)));
        for huge in [1e19, 1.8446744073709552e19, 1e300, f64::MAX, f64::INFINITY] {
            let d = seconds("--duration", huge, "10").unwrap();
            assert!(
                d >= Duration::from_secs(10_000_000_000_000_000_000),
                "{huge}"
            );
        }
        assert_eq!(seconds("--duration", 1e300, "10"), Ok(Duration::MAX));
        let refused = [
            (
                0.0,
                "--timeout must be a number of seconds above 0, not 0: e.g. --timeout 5",
            ),
            (
                -0.0,
                "--timeout must be a number of seconds above 0, not -0: e.g. --timeout 5",
            ),
            (
                -1.0,
                "--timeout must be a number of seconds above 0, not -1: e.g. --timeout 5",
            ),
            (
                f64::NAN,
                "--timeout must be a number of seconds above 0, not NaN: e.g. --timeout 5",
            ),
            (
                f64::NEG_INFINITY,
                "--timeout must be a number of seconds above 0, not -inf: e.g. --timeout 5",
            ),
            (
                -1e300,
                "--timeout must be a number of seconds above 0, not -1e300: e.g. --timeout 5",
            ),
            (
                1e-300,
                "--timeout 1e-300 is less than a nanosecond: give seconds, e.g. --timeout 5",
            ),
        ];
        for (v, message) in refused {
            assert_eq!(
                seconds("--timeout", v, "5"),
                Err(message.to_string()),
                "{v}"
            );
        }
    }

    #[test]
    fn setups_are_shared_between_workers() {
        assert_eq!(setup_share(64, 1), 64);
        assert_eq!(setup_share(64, 3), 22);
        assert_eq!(setup_share(64, 200), 1);
        assert_eq!(setup_share(64, 0), 64);
    }

    #[test]
    fn budget_is_claimed_until_spent() {
        assert_eq!(claim(None, 7), 7);
        let b = AtomicU64::new(10);
        assert_eq!(claim(Some(&b), 4), 4);
        assert_eq!(claim(Some(&b), 4), 4);
        assert_eq!(claim(Some(&b), 4), 2);
        assert_eq!(claim(Some(&b), 4), 0);
        assert_eq!(b.load(Relaxed), 0);
    }

    #[test]
    fn bad_arguments_are_refused() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            b: BenchArgs,
        }
        // Refused by the command line's parser (counts of 0) or by `from_args`.
        let cfg = |args: &[&str]| {
            let t = T::try_parse_from(iter::once("t").chain(args.iter().copied()))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            Config::from_args(&t.b)
        };
        let c = cfg(&["--connect", "127.0.0.1:1", "-n", "3", "--threads", "8"]).unwrap();
        assert_eq!(c.threads, 3);
        assert_eq!(c.duration, Some(Duration::from_secs(5)));
        let c = cfg(&[
            "--connect",
            "127.0.0.1:1",
            "--timeout",
            "1e300",
            "-d",
            "inf",
        ])
        .unwrap();
        assert_eq!(c.timeout, Duration::MAX);
        assert_eq!(c.duration, Some(Duration::MAX));
        assert_eq!(c.close_grace, CLOSE_GRACE);
        let c = cfg(&["--connect", "127.0.0.1:1", "-m", "10", "-s", "5000"]).unwrap();
        assert_eq!(c.duration, None);
        assert_eq!(c.read_cap, 5000 + "Hello, !".len() + 2);
        for bad in [
            &["-n", "0"][..],
            &["-p", "0"],
            &["-s", "0"],
            &["-m", "0"],
            &["--threads", "0"],
            &["--timeout", "0"],
            &["--timeout=-1"],
            &["-d", "NaN"],
            &["--expect", "a\nb"],
            &["-p", "1000000", "-s", "1000"],
            &["-n", "65536"],
            &["-n", "18446744073709551615"],
            &["--expect", "{}{}{}{}{}", "-s", "60000000"],
            &["--tls-ca", "ca.pem"],
            &["--tls-resume"],
            &["--tls", "--tls-ca", "/no/such/ca.pem"],
            &["--tls", "--tls-server-name", "not a name"],
            &["--tls", "--tls-cert", "a.pem"],
        ] {
            let mut args = vec!["--connect", "127.0.0.1:1"];
            args.extend_from_slice(bad);
            let e = cfg(&args).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        for bad in ["a:b:c", "host:x", "127.0.0.1:0"] {
            let e = cfg(&["--connect", bad]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}");
            assert!(
                e.to_string().contains(&format!(
                    "invalid value '{bad}' for '--connect <HOST:PORT>': "
                )),
                "{e}"
            );
            // Without the command line's parser, `from_args` names the flag itself.
            let e = resolve(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--connect {bad}: ")), "{e}");
        }
        let e = cfg(&["--connect", "no-such-host.invalid:1"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot resolve --connect no-such-host.invalid:1"),
            "{e}"
        );
        assert_eq!(cfg(&["--connect", "127.0.0.1"]).unwrap().addr.port(), 9999);
        let e = cfg(&["--connect", "127.0.0.1:1", "-n", "18446744073709551615"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--connections 18446744073709551615 is more than one address can open to one \
             server (at most 65535, one per local port): e.g. --connections 10000, or more \
             addresses with --source"
        );
        // Each --source address adds 65535, up to the open-file ceiling.
        let c = cfg(&[
            "--connect",
            "127.0.0.1:1",
            "--source",
            "127.0.0.2-127.0.0.3",
            "-n",
            "131070",
        ])
        .unwrap();
        assert_eq!(c.connections, 131_070);
        assert_eq!(c.sources.unwrap().len(), 2);
        let e = cfg(&[
            "--connect",
            "127.0.0.1:1",
            "--source",
            "127.0.0.2-127.0.0.3",
            "-n",
            "131071",
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--connections 131071 is more than 2 source addresses can open to one server (at \
             most 131070, 65535 per address, one per local port): e.g. --connections 10000, \
             or more addresses with --source"
        );
        let e = cfg(&[
            "--connect",
            "127.0.0.1:1",
            "--source",
            "127.0.0.1-127.0.0.100",
            "-n",
            "2000000",
        ])
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("(at most 1048576, the most open files a process may have)"),
            "{e}"
        );
        let e = cfg(&["--connect", "[::1]:1", "--source", "127.0.0.2"]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(
            e.to_string()
                .contains("give source addresses of the server's family")
        );
        let e = cfg(&[
            "--connect",
            "127.0.0.1:1",
            "--source",
            "127.0.0.2-127.0.0.1",
        ])
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(
            e.to_string()
                .contains("invalid value '127.0.0.2-127.0.0.1' for '--source <ADDRS>': "),
            "{e}"
        );
        let e = cfg(&[
            "--connect",
            "127.0.0.1:1",
            "--expect",
            "{}{}{}{}{}",
            "-s",
            "60000000",
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--expect \"{}{}{}{}{}\" with --size 60000000 expects 300000000-byte replies, \
             more than 256 MiB: lower --size or use fewer {}"
        );
        let e = cfg(&["--connect", "127.0.0.1:1", "--tls-server-name", "x"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--tls-server-name is for TLS, which is off: add --tls (or set TCP_HELLO_TLS=1)"
        );
        let e = cfg(&[
            "--connect",
            "127.0.0.1:1",
            "--tls",
            "--tls-ca",
            "/no/such/ca.pem",
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--tls-ca /no/such/ca.pem: no such file; check the path"
        );
        assert!(cfg(&["--connect", "127.0.0.1:1"]).unwrap().tls.is_none());
        let c = cfg(&["--connect", "localhost:1", "--tls", "--tls-resume"]).unwrap();
        let tls = c.tls.expect("--tls sets TLS up");
        assert_eq!(tls.server_name, ServerName::try_from("localhost").unwrap());
        assert!(tls.resume);
        let c = cfg(&[
            "--connect",
            "[::1]:1",
            "--tls",
            "--tls-server-name",
            "a.test",
        ])
        .unwrap();
        let tls = c.tls.expect("--tls sets TLS up");
        assert_eq!(tls.server_name, ServerName::try_from("a.test").unwrap());
        assert!(!tls.resume);
        // The largest --size still expects its reply.
        let c = cfg(&["--connect", "127.0.0.1:1", "-s", "67108863", "-m", "1"]).unwrap();
        assert_eq!(c.read_cap, 67108863 + "Hello, !".len() + 2);
    }
}
