//! The configuration checked and resolved, and how connections and messages are shared out.

use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::Duration;

use super::names::Template;
use super::source::check_sources;
use super::stream::Endpoint;
use super::tls::{self, TlsSetup};
use super::{
    CLOSE_GRACE, MAX_ALL_CONNECTIONS, MAX_BATCH_BYTES, MAX_CONNECTIONS, MAX_REPLY_BYTES, READ_BUF,
    SETUPS_IN_FLIGHT,
};
use crate::address::{SourceAddrs, Target, parse_connect};
use crate::config::{BENCH_EVERY, BenchConfig, BenchMode, TlsClientConfig};

/// [`BenchConfig`], checked and resolved.
#[derive(Debug)]
pub(super) struct Plan {
    /// The server.
    pub(super) server: Endpoint,
    /// `--source`: the local addresses to connect from; `None`: the kernel picks.
    pub(super) sources: Option<SourceAddrs>,
    pub(super) connections: usize,
    pub(super) mode: BenchMode,
    /// The open loop's names (in churn, connections) per second in total: `--rate`, or
    /// in hold `--connections` / `--every`. `None`: closed loop.
    pub(super) rate: Option<f64>,
    /// `--mode hold`: how often each connection sends a name.
    pub(super) every: Option<Duration>,
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

impl Plan {
    pub(super) fn from_args(a: &BenchConfig) -> io::Result<Plan> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
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
        if let Some(rate) = a.rate.filter(|r| !(*r > 0.0 && r.is_finite())) {
            return Err(invalid(format!(
                "--rate must be a number per second above 0, not {rate}: e.g. --rate 1000"
            )));
        }
        if a.every.is_some() && a.mode != BenchMode::Hold {
            return Err(invalid(
                "--every is for --mode hold: add --mode hold, or drop --every".into(),
            ));
        }
        if a.mode == BenchMode::Hold {
            if a.rate.is_some() {
                return Err(invalid(
                    "--rate is not for --mode hold, whose rate is --connections / --every: \
                     drop --rate"
                        .into(),
                ));
            }
            if a.messages.is_some() {
                return Err(invalid(
                    "--messages is not for --mode hold, which holds the connections for \
                     --duration: drop --messages"
                        .into(),
                ));
            }
        }
        if a.mode == BenchMode::Churn && a.pipeline != 1 {
            return Err(invalid(
                "--pipeline is not for --mode churn, which sends one name a connection: drop \
                 --pipeline"
                    .into(),
            ));
        }
        if a.timeout.is_zero() {
            return Err(invalid("--timeout must be above 0".into()));
        }
        if a.duration.is_zero() && a.messages.is_none() {
            return Err(invalid("--duration must be above 0".into()));
        }
        let timeout = a.timeout;
        let duration = match a.messages {
            Some(_) => None,
            None => Some(a.duration),
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
        let (server, tls) = match Target::parse(&a.connect).map_err(invalid)? {
            Target::Tcp(target) => {
                // Before resolving: a bad file is the user's to fix whatever the network
                // says.
                let tls = tls::setup(a, &target)?;
                let addr = resolve(&a.connect)?;
                if let Some(sources) = &a.source {
                    check_sources(sources, addr)?;
                }
                (Endpoint::Tcp(addr), tls)
            }
            Target::Unix(path) => {
                if a.tls != TlsClientConfig::default() || a.tls_resume {
                    return Err(invalid(format!(
                        "--tls and its options are for TCP: {} speaks plain text (serve \
                         has no TLS on a Unix socket); drop them",
                        a.connect.trim()
                    )));
                }
                if a.source.is_some() {
                    return Err(invalid(
                        "--source is for TCP: a Unix socket has no local address to choose; \
                         drop --source"
                            .into(),
                    ));
                }
                (Endpoint::Unix(path), None)
            }
        };
        let threads = a
            .threads
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, NonZeroUsize::get))
            .min(a.connections);
        let every = (a.mode == BenchMode::Hold).then(|| a.every.unwrap_or(BENCH_EVERY));
        let rate = match every {
            Some(every) => Some(a.connections as f64 / every.as_secs_f64()),
            None => a.rate,
        };
        // In churn every connection is always being set up: -n alone bounds them.
        let setup_limit = match a.mode {
            BenchMode::Churn => usize::MAX,
            _ => setup_share(SETUPS_IN_FLIGHT, threads),
        };
        Ok(Plan {
            server,
            sources: a.source.clone(),
            connections: a.connections,
            mode: a.mode,
            rate,
            every,
            threads,
            pipeline: a.pipeline,
            size: a.size,
            read_cap: READ_BUF.max(reply_len + 2),
            template,
            timeout,
            duration,
            messages: a.messages,
            connect_rate: a.connect_rate,
            setup_limit,
            close_grace: CLOSE_GRACE.min(timeout),
            tls,
        })
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
    fn modes_take_only_their_own_flags() {
        use crate::config::BenchConfig;
        let cfg = |change: &dyn Fn(&mut BenchConfig)| {
            let mut c = BenchConfig {
                connect: "127.0.0.1:1".into(),
                ..BenchConfig::default()
            };
            change(&mut c);
            Plan::from_args(&c).map_err(|e| {
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
                e.to_string()
            })
        };
        for (rate, shown) in [
            (0.0, "0"),
            (-1.0, "-1"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(
                cfg(&|c| c.rate = Some(rate)).unwrap_err(),
                format!(
                    "--rate must be a number per second above 0, not {shown}: e.g. --rate 1000"
                )
            );
        }
        assert_eq!(
            cfg(&|c| c.every = Some(Duration::from_secs(1))).unwrap_err(),
            "--every is for --mode hold: add --mode hold, or drop --every"
        );
        let hold = |c: &mut BenchConfig| c.mode = BenchMode::Hold;
        assert_eq!(
            cfg(&|c| {
                hold(c);
                c.rate = Some(10.0);
            })
            .unwrap_err(),
            "--rate is not for --mode hold, whose rate is --connections / --every: drop --rate"
        );
        assert_eq!(
            cfg(&|c| {
                hold(c);
                c.messages = Some(10);
            })
            .unwrap_err(),
            "--messages is not for --mode hold, which holds the connections for --duration: \
             drop --messages"
        );
        assert_eq!(
            cfg(&|c| {
                c.mode = BenchMode::Churn;
                c.pipeline = 2;
            })
            .unwrap_err(),
            "--pipeline is not for --mode churn, which sends one name a connection: drop \
             --pipeline"
        );
        // Hold's rate is the connections over --every, 1 s unless given.
        let p = cfg(&|c| {
            hold(c);
            c.connections = 20;
        })
        .unwrap();
        assert_eq!((p.rate, p.every), (Some(20.0), Some(BENCH_EVERY)));
        let p = cfg(&|c| {
            hold(c);
            c.connections = 20;
            c.every = Some(Duration::from_millis(200));
        })
        .unwrap();
        assert_eq!(p.rate, Some(100.0));
        let p = cfg(&|c| c.rate = Some(2.5)).unwrap();
        assert_eq!((p.rate, p.every), (Some(2.5), None));
        assert_eq!(cfg(&|_| {}).unwrap().rate, None);
        // Churn's connections are all setups at once.
        let p = cfg(&|c| c.mode = BenchMode::Churn).unwrap();
        assert_eq!(p.setup_limit, usize::MAX);
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
    fn bad_configurations_are_refused() {
        use crate::config::{BenchConfig, TlsClientConfig};
        // A configuration to `127.0.0.1:1`, changed by `change`, checked.
        let cfg = |change: &dyn Fn(&mut BenchConfig)| {
            let mut c = BenchConfig {
                connect: "127.0.0.1:1".into(),
                ..BenchConfig::default()
            };
            change(&mut c);
            Plan::from_args(&c)
        };
        let tls = |enabled: bool, f: &dyn Fn(&mut TlsClientConfig)| {
            let mut t = TlsClientConfig {
                enabled,
                ..TlsClientConfig::default()
            };
            f(&mut t);
            t
        };
        let c = cfg(&|c| {
            c.connections = 3;
            c.threads = Some(8);
        })
        .unwrap();
        assert_eq!(c.threads, 3);
        assert_eq!(c.duration, Some(Duration::from_secs(5)));
        let c = cfg(&|c| {
            c.timeout = Duration::MAX;
            c.duration = Duration::MAX;
        })
        .unwrap();
        assert_eq!(c.timeout, Duration::MAX);
        assert_eq!(c.duration, Some(Duration::MAX));
        assert_eq!(c.close_grace, CLOSE_GRACE);
        let c = cfg(&|c| {
            c.messages = Some(10);
            c.size = 5000;
        })
        .unwrap();
        assert_eq!(c.duration, None);
        assert_eq!(c.read_cap, 5000 + "Hello, !".len() + 2);
        let bad: [&dyn Fn(&mut BenchConfig); 16] = [
            &|c| c.connections = 0,
            &|c| c.pipeline = 0,
            &|c| c.size = 0,
            &|c| c.messages = Some(0),
            &|c| c.threads = Some(0),
            &|c| c.timeout = Duration::ZERO,
            &|c| c.duration = Duration::ZERO,
            &|c| c.expect = "a\nb".into(),
            &|c| {
                c.pipeline = 1_000_000;
                c.size = 1000;
            },
            &|c| c.connections = 65_536,
            &|c| c.connections = usize::MAX,
            &|c| {
                c.expect = "{}{}{}{}{}".into();
                c.size = 60_000_000;
            },
            &|c| c.tls = tls(false, &|t| t.ca = Some("ca.pem".into())),
            &|c| c.tls_resume = true,
            &|c| c.tls = tls(true, &|t| t.server_name = Some("not a name".into())),
            &|c| c.tls = tls(true, &|t| t.cert = Some("a.pem".into())),
        ];
        for (i, change) in bad.iter().enumerate() {
            let e = cfg(change).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "case {i}: {e}");
        }
        for bad in ["a:b:c", "host:x", "127.0.0.1:0"] {
            let e = cfg(&|c| c.connect = bad.into()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}");
            assert!(
                e.to_string().starts_with(&format!("--connect {bad}: ")),
                "{e}"
            );
            let e = resolve(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--connect {bad}: ")), "{e}");
        }
        let e = cfg(&|c| c.connect = "no-such-host.invalid:1".into())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot resolve --connect no-such-host.invalid:1"),
            "{e}"
        );
        assert_eq!(
            cfg(&|c| c.connect = "127.0.0.1".into()).unwrap().server,
            Endpoint::Tcp("127.0.0.1:9999".parse().unwrap())
        );
        assert_eq!(
            cfg(&|c| c.connect = "unix:/run/h.sock".into())
                .unwrap()
                .server,
            Endpoint::Unix("/run/h.sock".into())
        );
        for (unix, says) in [
            (
                BenchConfig {
                    tls: TlsClientConfig {
                        enabled: true,
                        ..TlsClientConfig::default()
                    },
                    ..BenchConfig::default()
                },
                "--tls and its options are for TCP",
            ),
            (
                BenchConfig {
                    source: Some(crate::address::parse_sources("127.0.0.2").unwrap()),
                    ..BenchConfig::default()
                },
                "--source is for TCP",
            ),
        ] {
            let unix = BenchConfig {
                connect: "unix:/run/h.sock".into(),
                ..unix
            };
            let e = Plan::from_args(&unix).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
        let e = cfg(&|c| c.connections = 18_446_744_073_709_551_615).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--connections 18446744073709551615 is more than one address can open to one \
             server (at most 65535, one per local port): e.g. --connections 10000, or more \
             addresses with --source"
        );
        let sources = |text: &str| Some(crate::address::parse_sources(text).unwrap());
        // Each --source address adds 65535, up to the open-file ceiling.
        let c = cfg(&|c| {
            c.source = sources("127.0.0.2-127.0.0.3");
            c.connections = 131_070;
        })
        .unwrap();
        assert_eq!(c.connections, 131_070);
        assert_eq!(c.sources.unwrap().len(), 2);
        let e = cfg(&|c| {
            c.source = sources("127.0.0.2-127.0.0.3");
            c.connections = 131_071;
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--connections 131071 is more than 2 source addresses can open to one server (at \
             most 131070, 65535 per address, one per local port): e.g. --connections 10000, \
             or more addresses with --source"
        );
        let e = cfg(&|c| {
            c.source = sources("127.0.0.1-127.0.0.100");
            c.connections = 2_000_000;
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("(at most 1048576, the most open files a process may have)"),
            "{e}"
        );
        let e = cfg(&|c| {
            c.connect = "[::1]:1".into();
            c.source = sources("127.0.0.2");
        })
        .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(
            e.to_string()
                .contains("give source addresses of the server's family")
        );
        let e = cfg(&|c| {
            c.expect = "{}{}{}{}{}".into();
            c.size = 60_000_000;
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--expect \"{}{}{}{}{}\" with --size 60000000 expects 300000000-byte replies, \
             more than 256 MiB: lower --size or use fewer {}"
        );
        let e = cfg(&|c| c.tls = tls(false, &|t| t.server_name = Some("x".into()))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--tls-server-name is for TLS, which is off: add --tls (or set TCP_HELLO_TLS=1)"
        );
        let e =
            cfg(&|c| c.tls = tls(true, &|t| t.ca = Some("/no/such/ca.pem".into()))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--tls-ca /no/such/ca.pem: no such file; check the path"
        );
        assert!(cfg(&|_| {}).unwrap().tls.is_none());
        let c = cfg(&|c| {
            c.connect = "localhost:1".into();
            c.tls = tls(true, &|_| {});
            c.tls_resume = true;
        })
        .unwrap();
        let tls_setup = c.tls.expect("--tls sets TLS up");
        assert_eq!(
            tls_setup.server_name,
            ServerName::try_from("localhost").unwrap()
        );
        assert!(tls_setup.resume);
        let c = cfg(&|c| {
            c.connect = "[::1]:1".into();
            c.tls = tls(true, &|t| t.server_name = Some("a.test".into()));
        })
        .unwrap();
        let tls_setup = c.tls.expect("--tls sets TLS up");
        assert_eq!(
            tls_setup.server_name,
            ServerName::try_from("a.test").unwrap()
        );
        assert!(!tls_setup.resume);
        // The largest --size still expects its reply.
        let c = cfg(&|c| {
            c.size = 67_108_863;
            c.messages = Some(1);
        })
        .unwrap();
        assert_eq!(c.read_cap, 67108863 + "Hello, !".len() + 2);
    }
}
