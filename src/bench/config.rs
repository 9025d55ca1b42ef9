//! Command-line arguments checked and resolved, and how connections and messages are shared out.

use super::*;

/// `BenchArgs`, checked and resolved.
#[derive(Debug)]
pub(super) struct Config {
    pub(super) addr: SocketAddr,
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
}

impl Config {
    pub(super) fn from_args(a: &BenchArgs) -> io::Result<Config> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let secs = |flag: &str, v: f64| {
            Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    invalid(format!(
                        "{flag} must be a positive number of seconds, not {v}"
                    ))
                })
        };
        if a.connections == 0 {
            return Err(invalid("--connections must be at least 1".into()));
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
        let timeout = secs("--timeout", a.timeout)?;
        let duration = match a.messages {
            Some(_) => None,
            None => Some(secs("--duration", a.duration.unwrap_or(DEFAULT_SECS))?),
        };
        let template = Template::parse(&a.expect).map_err(invalid)?;
        let addr = resolve(&a.connect)?;
        let threads = a
            .threads
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, NonZeroUsize::get))
            .min(a.connections);
        Ok(Config {
            addr,
            connections: a.connections,
            threads,
            pipeline: a.pipeline,
            size: a.size,
            read_cap: READ_BUF.max(template.reply_len(a.size) + 2),
            template,
            timeout,
            duration,
            messages: a.messages,
            connect_rate: a.connect_rate,
            setup_limit: setup_share(SETUPS_IN_FLIGHT, threads),
            close_grace: CLOSE_GRACE.min(timeout),
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
        let cfg = |args: &[&str]| {
            let t = T::try_parse_from(iter::once("t").chain(args.iter().copied())).unwrap();
            Config::from_args(&t.b)
        };
        let c = cfg(&["--connect", "127.0.0.1:1", "-n", "3", "--threads", "8"]).unwrap();
        assert_eq!(c.threads, 3);
        assert_eq!(c.duration, Some(Duration::from_secs(5)));
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
                e.to_string().starts_with(&format!("--connect {bad}: ")),
                "{e}"
            );
        }
        let e = cfg(&["--connect", "no-such-host.invalid:1"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot resolve --connect no-such-host.invalid:1"),
            "{e}"
        );
        assert_eq!(cfg(&["--connect", "127.0.0.1"]).unwrap().addr.port(), 9999);
    }
}
