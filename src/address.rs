//! Addresses on the command line: `serve --bind`, `client --connect` and
//! `bench --connect` all read `HOST:PORT` the same way, or `unix:PATH` for a Unix
//! socket; `bench --source` reads ranges of IP addresses.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// The default address for `serve --bind` and `client --connect`.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9999";

/// The port used when an address names none: the port of [`DEFAULT_ADDR`].
pub const DEFAULT_PORT: u16 = 9999;

/// A host (a name, or an IP address; IPv6 kept without brackets) and a port, as the
/// user wrote them, before any name is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// A host name or an IP address.
    pub host: String,
    /// The port; [`DEFAULT_PORT`] when none was written.
    pub port: u16,
}

impl HostPort {
    /// Parses `HOST:PORT`, `[IPV6]:PORT`, `HOST`, `[IPV6]` or a bare IPv6 address;
    /// the port defaults to [`DEFAULT_PORT`]. The error says what to write instead.
    pub fn parse(s: &str) -> Result<HostPort, String> {
        let s = s.trim();
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(format!(
                "a URL ({scheme}://) is not an address; write HOST:PORT, e.g. 127.0.0.1:9999"
            ));
        }
        let port_of = |p: &str| -> Result<u16, String> {
            p.parse::<u16>().map_err(|_| {
                format!(
                    "{p:?} is not a port number (0 to 65535); write HOST:PORT, e.g. 127.0.0.1:9999"
                )
            })
        };
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let Some((host, after)) = rest.split_once(']') else {
                return Err("missing `]`; write IPv6 addresses as [::1]:9999".into());
            };
            let port = match after {
                "" => DEFAULT_PORT,
                _ => match after.strip_prefix(':') {
                    Some(p) => port_of(p)?,
                    None => return Err("expected `:PORT` after `]`, e.g. [::1]:9999".into()),
                },
            };
            (host, port)
        } else if s.parse::<Ipv6Addr>().is_ok() {
            if let Some((prefix, last)) = s.rsplit_once(':') {
                // `::1:8080` is an address (::0.1.128.128), but who writes it means
                // [::1]:8080: ask which, rather than bind something nobody meant.
                let digits = !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit());
                if digits && prefix.parse::<Ipv6Addr>().is_ok() {
                    return Err(format!(
                        "{s} is ambiguous: write [{prefix}]:{last} for port {last} of {prefix}, or \
                         [{s}] for that address on port {DEFAULT_PORT}"
                    ));
                }
            }
            (s, DEFAULT_PORT)
        } else {
            match s.split_once(':') {
                None => (s, DEFAULT_PORT),
                Some((_, p)) if p.contains(':') => {
                    return Err("write IPv6 addresses in brackets, e.g. [::1]:9999".into());
                }
                Some((host, p)) => (host, port_of(p)?),
            }
        };
        if !host.is_empty() && host.bytes().all(|b| b.is_ascii_digit()) {
            // glibc would read `8080` as the IPv4 address 0.0.31.144.
            return Err(format!(
                "{host:?} looks like a port, not a host; write HOST:PORT, e.g. 127.0.0.1:{host}"
            ));
        }
        if host.is_empty() {
            return Err(
                "no host; write HOST:PORT, e.g. 127.0.0.1:9999 (0.0.0.0:9999 for every IPv4 interface)"
                    .into(),
            );
        }
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }

    /// The addresses the host resolves to, in the resolver's order (an IP address
    /// resolves to itself without a lookup).
    pub fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        Ok((self.host.as_str(), self.port).to_socket_addrs()?.collect())
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What `client --connect` and `bench --connect` reach: a host and port, or a Unix
/// socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `HOST:PORT` (see [`parse_connect`]).
    Tcp(HostPort),
    /// `unix:PATH` (see [`parse_unix_path`]).
    Unix(PathBuf),
}

impl Target {
    /// Reads `--connect`: `unix:PATH`, or `HOST:PORT` as [`parse_connect`] reads it,
    /// naming the flag in errors.
    pub fn parse(s: &str) -> Result<Target, String> {
        let s = s.trim();
        match s.strip_prefix(UNIX_PREFIX) {
            Some(path) => parse_unix_path(path)
                .map(Target::Unix)
                .map_err(|e| format!("--connect {s}: {e}")),
            None => parse_connect(s).map(Target::Tcp),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(target) => write!(f, "{target}"),
            Target::Unix(path) => write!(f, "{}", unix_display(path)),
        }
    }
}

/// Reads a `--connect` address (see [`HostPort::parse`]), naming the flag in errors;
/// port 0 is refused, as no server listens there.
pub fn parse_connect(s: &str) -> Result<HostPort, String> {
    let s = s.trim();
    check_connect(s).map_err(|e| format!("--connect {s}: {e}"))
}

/// Reads a `--connect` target as [`Target::parse`] does, with an error that does not
/// name the flag (for a clap value parser, whose error names it, or the variable).
pub fn check_target(s: &str) -> Result<Target, String> {
    match s.trim().strip_prefix(UNIX_PREFIX) {
        Some(path) => parse_unix_path(path).map(Target::Unix),
        None => check_connect(s).map(Target::Tcp),
    }
}

/// Reads a `--connect` address as [`parse_connect`] does, with an error that does not
/// name the flag (for a clap value parser, whose error names it, or the variable).
pub fn check_connect(s: &str) -> Result<HostPort, String> {
    let target = HostPort::parse(s)?;
    if target.port == 0 {
        return Err("port 0 is not a server's port; give the port the server announced".into());
    }
    Ok(target)
}

/// How a Unix socket's path is written where an address may be: `unix:PATH`.
pub const UNIX_PREFIX: &str = "unix:";

/// The longest path a Unix socket can have, in bytes: `sun_path` less its NUL.
pub const UNIX_PATH_MAX: usize = if cfg!(any(target_os = "linux", target_os = "android")) {
    107
} else {
    103
};

/// A `serve --bind` listener: an IP address and port, or a Unix socket's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `HOST:PORT`, resolved (see [`parse_bind`]).
    Tcp(SocketAddr),
    /// `unix:PATH` (see [`parse_unix_path`]).
    Unix(PathBuf),
}

/// Reads a `serve --bind` listener (a clap value parser): `unix:PATH`, or an address
/// as [`parse_bind`] reads it.
pub fn parse_listen(s: &str) -> Result<Listen, String> {
    match s.trim().strip_prefix(UNIX_PREFIX) {
        Some(path) => parse_unix_path(path).map(Listen::Unix),
        None => parse_bind(s).map(Listen::Tcp),
    }
}

/// The path of `unix:PATH` (the part after `unix:`; URL-style `unix:///run/x.sock` is
/// `/run/x.sock`): refused when empty, or longer than a socket address holds
/// ([`UNIX_PATH_MAX`]), saying what to write.
pub fn parse_unix_path(path: &str) -> Result<PathBuf, String> {
    let path = match path.strip_prefix("//") {
        Some(rest) if rest.starts_with('/') => rest,
        _ => path,
    };
    if path.is_empty() {
        return Err("no path after unix:; write unix:PATH, e.g. unix:/tmp/hello.sock".into());
    }
    if path.contains('\0') {
        return Err(format!(
            "{path:?} holds a NUL byte, which no path can: remove it"
        ));
    }
    let len = path.len();
    if len > UNIX_PATH_MAX || std::os::unix::net::SocketAddr::from_pathname(path).is_err() {
        return Err(format!(
            "{path} is {len} bytes long, and a Unix socket's path holds at most \
             {UNIX_PATH_MAX}: choose a shorter one, e.g. unix:/tmp/hello.sock"
        ));
    }
    Ok(PathBuf::from(path))
}

/// How a Unix socket's path is shown where an address would be: `unix:PATH`.
pub fn unix_display(path: &Path) -> String {
    format!("{UNIX_PREFIX}{}", path.display())
}

/// Reads a `--bind` address (a clap value parser). A host name binds one address:
/// the first IPv4 address it resolves to, else the first, as Go's `net.Listen` does,
/// so `localhost` works on machines without IPv6. `unix:PATH` is refused: only
/// `serve --bind` takes one ([`parse_listen`]).
pub fn parse_bind(s: &str) -> Result<SocketAddr, String> {
    if s.trim().starts_with(UNIX_PREFIX) {
        return Err(
            "a Unix socket (unix:PATH) is for --bind only: TLS, UDP and metrics \
                    listen on IP addresses, e.g. 127.0.0.1:9443"
                .into(),
        );
    }
    let target = HostPort::parse(s)?;
    let addrs = target.resolve().map_err(|e| {
        format!(
            "cannot resolve {}: {e}; check the host name, or use an IP address such as 127.0.0.1",
            target.host
        )
    })?;
    let addr = first_listen_addr(&addrs)
        .ok_or_else(|| format!("{} resolves to no address", target.host))?;
    refuse_mapped(addr)
}

/// Refuses an IPv4-mapped IPv6 address (`[::ffff:127.0.0.1]:7777`): listeners on
/// IPv6 addresses are IPv6-only here (so that `[::]` and `0.0.0.0` can both be bound),
/// and Linux refuses to bind one to a mapped address with a bare "invalid argument".
fn refuse_mapped(addr: SocketAddr) -> Result<SocketAddr, String> {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => Err(format!(
                "{addr} is an IPv4 address written as IPv6 (IPv4-mapped), which an \
                 IPv6 listener cannot bind; write {v4}:{}",
                v6.port()
            )),
            None => Ok(addr),
        },
        SocketAddr::V4(_) => Ok(addr),
    }
}

/// The first address given twice (port 0 excepted: each one picks a port of its own).
pub fn first_duplicate(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    addrs
        .iter()
        .enumerate()
        .find(|&(i, a)| a.port() != 0 && addrs[..i].contains(a))
        .map(|(_, a)| *a)
}

/// The address a name binds: the first IPv4 one, else the first.
fn first_listen_addr(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
}

/// Most addresses `bench --source` takes: enough for 4 billion connections to one
/// server port, few enough to list them all.
pub const MAX_SOURCE_ADDRS: usize = 65_536;

/// The local addresses `bench --source` spreads its connections over, in the order
/// given: connection `i` binds to address `i mod N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceAddrs(Vec<IpAddr>);

impl SourceAddrs {
    /// Every address, in order (never empty, never more than [`MAX_SOURCE_ADDRS`],
    /// all of one family, none twice).
    pub fn addrs(&self) -> &[IpAddr] {
        &self.0
    }

    /// How many addresses there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a parsed list has at least one address.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The address connection number `i` binds to: number `i mod N`.
    pub fn for_connection(&self, i: u64) -> IpAddr {
        // The list is never empty, and `i % len` fits a usize because `len` does.
        self.0[(i % self.0.len() as u64) as usize]
    }

    /// Whether the addresses are IPv4 ones.
    pub fn is_ipv4(&self) -> bool {
        self.0.first().is_some_and(IpAddr::is_ipv4)
    }
}

impl fmt::Display for SourceAddrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [] => Ok(()),
            [one] => write!(f, "{one}"),
            [first, .., last] => write!(f, "{first} .. {last} ({} addresses)", self.0.len()),
        }
    }
}

/// Reads `bench --source`: an IP address (`127.0.0.2`), an inclusive range of one
/// family (`127.0.0.1-127.0.0.8`, `fd00::1-fd00::ff`), or a comma-separated list of
/// either, at most [`MAX_SOURCE_ADDRS`] addresses in all, all of one family, none given
/// twice. The error names the part that is wrong and what to write instead (a clap
/// value parser: its error names the flag and the whole value).
pub fn parse_sources(s: &str) -> Result<SourceAddrs, String> {
    let mut addrs: Vec<IpAddr> = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(
                "an empty address; give an IP address or a range, e.g. 127.0.0.1-127.0.0.8".into(),
            );
        }
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (source_ip(a)?, source_ip(b)?),
            None => {
                let ip = source_ip(part)?;
                (ip, ip)
            }
        };
        if first.is_ipv4() != last.is_ipv4() {
            return Err(format!(
                "{part} mixes IPv4 and IPv6; a range is of one family, e.g. 127.0.0.1-127.0.0.8"
            ));
        }
        let (lo, hi) = (ip_number(first), ip_number(last));
        if hi < lo {
            return Err(format!(
                "{part} is reversed; give the lower address first: {last}-{first}"
            ));
        }
        let room = MAX_SOURCE_ADDRS - addrs.len();
        if hi - lo >= room as u128 {
            return Err(format!(
                "{part} makes more than {MAX_SOURCE_ADDRS} addresses; give fewer, \
                 e.g. {first}-{}",
                ip_from_number(first, lo + room as u128 - 1)
            ));
        }
        if let Some(seen) = addrs.first() {
            if seen.is_ipv4() != first.is_ipv4() {
                return Err(format!(
                    "{part} is not of the same family as {seen}; give addresses of one family"
                ));
            }
        }
        for n in lo..=hi {
            addrs.push(ip_from_number(first, n));
        }
    }
    let mut sorted = addrs.clone();
    sorted.sort_unstable();
    if let Some(twice) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!(
            "{} is given twice; give each address once",
            twice[0]
        ));
    }
    Ok(SourceAddrs(addrs))
}

/// One end of a `--source` range: an IP address, IPv6 with or without brackets.
fn source_ip(s: &str) -> Result<IpAddr, String> {
    let s = s.trim();
    let bare = s
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse().map_err(|_| {
        format!(
            "{s:?} is not an IP address; give an address or a range, e.g. 127.0.0.1-127.0.0.8 \
             (no host names, no ports)"
        )
    })
}

/// An address as a number, for ranges (IPv4 in the low 32 bits).
fn ip_number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address numbered `n` in the family of `like` (`n` from [`ip_number`] of an
/// address of that family, or between two such).
fn ip_from_number(like: IpAddr, n: u128) -> IpAddr {
    match like {
        // Between two IPv4 addresses' numbers, so within 32 bits.
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(n as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> Result<(String, u16), String> {
        HostPort::parse(s).map(|t| (t.host, t.port))
    }

    #[test]
    fn a_target_is_a_host_and_port_or_a_unix_path() {
        assert_eq!(
            Target::parse("unix:/run/h.sock"),
            Ok(Target::Unix("/run/h.sock".into()))
        );
        assert_eq!(
            Target::parse("localhost:7"),
            Ok(Target::Tcp(HostPort {
                host: "localhost".into(),
                port: 7
            }))
        );
        assert_eq!(
            Target::parse("unix:").unwrap_err(),
            "--connect unix:: no path after unix:; write unix:PATH, e.g. unix:/tmp/hello.sock"
        );
        assert!(check_target("unix:").unwrap_err().starts_with("no path"));
        assert_eq!(
            Target::Unix("/run/h.sock".into()).to_string(),
            "unix:/run/h.sock"
        );
    }

    #[test]
    fn a_bind_is_an_address_or_unix_and_a_path() {
        assert_eq!(
            parse_listen("127.0.0.1:7"),
            Ok(Listen::Tcp("127.0.0.1:7".parse().unwrap()))
        );
        assert_eq!(
            parse_listen("unix:/run/h.sock"),
            Ok(Listen::Unix("/run/h.sock".into()))
        );
        assert_eq!(
            parse_listen(" unix:rel/h.sock "),
            Ok(Listen::Unix("rel/h.sock".into()))
        );
        // As Docker writes it.
        assert_eq!(
            parse_listen("unix:///run/h.sock"),
            Ok(Listen::Unix("/run/h.sock".into()))
        );
        let e = parse_listen("unix:").unwrap_err();
        assert!(e.contains("no path after unix:"), "{e}");
        let longest = format!("/{}", "x".repeat(UNIX_PATH_MAX - 1));
        assert_eq!(parse_unix_path(&longest), Ok(PathBuf::from(&longest)));
        let e = parse_unix_path(&format!("{longest}x")).unwrap_err();
        assert!(
            e.contains(&format!("{} bytes long", UNIX_PATH_MAX + 1))
                && e.contains("choose a shorter one"),
            "{e}"
        );
        assert!(parse_unix_path("a\0b").unwrap_err().contains("NUL"));
        // The other listeners take no Unix socket.
        let e = parse_bind("unix:/run/h.sock").unwrap_err();
        assert!(e.contains("is for --bind only"), "{e}");
        assert_eq!(unix_display(Path::new("/run/h.sock")), "unix:/run/h.sock");
    }

    #[test]
    fn default_port_matches_the_default_address() {
        assert_eq!(
            parsed(DEFAULT_ADDR),
            Ok(("127.0.0.1".to_string(), DEFAULT_PORT))
        );
    }

    #[test]
    fn addresses_parse_with_and_without_port() {
        let ok = |s: &str, host: &str, port: u16| {
            assert_eq!(parsed(s), Ok((host.to_string(), port)), "{s}");
        };
        ok("localhost:80", "localhost", 80);
        ok("localhost", "localhost", 9999);
        ok("host:0", "host", 0);
        ok("[::1]:8080", "::1", 8080);
        ok("[::1]", "::1", 9999);
        ok("::1", "::1", 9999);
        ok("fe80::1", "fe80::1", 9999);
        ok(" 10.0.0.1:7 ", "10.0.0.1", 7);
        for bad in [
            "host:x",
            ":80",
            "[::1",
            "[::1]80",
            "a:b:c",
            "host:70000",
            "",
        ] {
            assert!(parsed(bad).is_err(), "{bad}");
        }
        assert!(parsed("a:b:c").unwrap_err().contains("brackets"));
        assert!(parsed("8080").unwrap_err().contains("127.0.0.1:8080"));
        assert!(parsed("http://127.0.0.1:80").unwrap_err().contains("URL"));
        assert!(parsed(":80").unwrap_err().contains("0.0.0.0"));
    }

    #[test]
    fn an_ipv6_address_whose_last_group_looks_like_a_port_is_ambiguous() {
        let e = parsed("::1:8080").unwrap_err();
        assert!(e.contains("[::1]:8080") && e.contains("[::1:8080]"), "{e}");
        let e = parsed("fe80::1:22").unwrap_err();
        assert!(e.contains("[fe80::1]:22"), "{e}");
        // Brackets settle it; addresses whose start is no address are not ambiguous.
        assert_eq!(parsed("[::1:8080]"), Ok(("::1:8080".into(), 9999)));
        assert_eq!(parsed("2001:db8::1"), Ok(("2001:db8::1".into(), 9999)));
        assert_eq!(parsed("::1"), Ok(("::1".into(), 9999)));
        assert_eq!(parsed("fe80::abcd"), Ok(("fe80::abcd".into(), 9999)));
    }

    #[test]
    fn ipv4_mapped_bind_addresses_are_refused_with_the_ipv4_form() {
        let e = parse_bind("[::ffff:127.0.0.1]:7777").unwrap_err();
        assert!(e.contains("write 127.0.0.1:7777"), "{e}");
        assert!(parse_bind("[::1]:7777").is_ok());
    }

    #[test]
    fn duplicates_are_found_but_port_0_may_repeat() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            first_duplicate(&[a("127.0.0.1:7"), a("[::1]:7"), a("127.0.0.1:7")]),
            Some(a("127.0.0.1:7"))
        );
        assert_eq!(first_duplicate(&[a("127.0.0.1:0"), a("127.0.0.1:0")]), None);
        assert_eq!(first_duplicate(&[a("127.0.0.1:7"), a("127.0.0.1:8")]), None);
    }

    #[test]
    fn connect_addresses_name_the_flag_and_refuse_port_0() {
        let t = parse_connect("localhost:80").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("localhost", 80));
        assert!(
            parse_connect("a:b:c")
                .unwrap_err()
                .starts_with("--connect a:b:c: ")
        );
        assert!(parse_connect("host:0").unwrap_err().contains("port 0"));
    }

    #[test]
    fn ipv6_hosts_display_in_brackets() {
        let t = |host: &str| HostPort {
            host: host.into(),
            port: 1,
        };
        assert_eq!(t("::1").to_string(), "[::1]:1");
        assert_eq!(t("localhost").to_string(), "localhost:1");
    }

    #[test]
    fn ip_addresses_resolve_without_a_lookup() {
        let t = HostPort::parse("[::1]:5").unwrap();
        assert_eq!(t.resolve().unwrap(), vec!["[::1]:5".parse().unwrap()]);
    }

    #[test]
    fn a_name_binds_its_first_ipv4_address() {
        let v6: SocketAddr = "[::1]:1".parse().unwrap();
        let v4: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(first_listen_addr(&[v6, v4]), Some(v4));
        assert_eq!(first_listen_addr(&[v6]), Some(v6));
        assert_eq!(first_listen_addr(&[]), None);
    }

    #[test]
    fn bind_addresses_accept_literals_names_and_a_missing_port() {
        assert_eq!(parse_bind("0.0.0.0:0"), Ok("0.0.0.0:0".parse().unwrap()));
        assert_eq!(parse_bind("[::]:7"), Ok("[::]:7".parse().unwrap()));
        assert_eq!(
            parse_bind("127.0.0.1"),
            Ok("127.0.0.1:9999".parse().unwrap())
        );
        assert_eq!(
            parse_bind("localhost:7"),
            Ok("127.0.0.1:7".parse().unwrap())
        );
        let e = parse_bind("no-such-host.invalid:1").unwrap_err();
        assert!(e.contains("cannot resolve no-such-host.invalid"), "{e}");
    }

    #[test]
    fn source_ranges_parse_in_order() {
        let ips = |s: &str| -> Vec<String> {
            parse_sources(s)
                .unwrap()
                .addrs()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(ips("127.0.0.2"), ["127.0.0.2"]);
        assert_eq!(
            ips(" 127.0.0.2 - 127.0.0.4 "),
            ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        );
        assert_eq!(ips("127.0.0.5-127.0.0.5"), ["127.0.0.5"]);
        // Any inclusive range, across octets.
        assert_eq!(
            ips("10.0.0.254-10.0.1.1"),
            ["10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1"]
        );
        assert_eq!(
            ips("127.0.0.9,127.0.0.1-127.0.0.2"),
            ["127.0.0.9", "127.0.0.1", "127.0.0.2"]
        );
        assert_eq!(ips("::1"), ["::1"]);
        assert_eq!(ips("[fd00::fe]-[fd00::101]").len(), 4);
        assert_eq!(ips("fd00::ffff-fd00::1:0"), ["fd00::ffff", "fd00::1:0"]);
        let full = parse_sources("10.0.0.0-10.0.255.255").unwrap();
        assert_eq!(full.len(), MAX_SOURCE_ADDRS);
        assert!(full.is_ipv4() && !full.is_empty());
        assert_eq!(
            full.to_string(),
            "10.0.0.0 .. 10.0.255.255 (65536 addresses)"
        );
        let three = parse_sources("127.0.0.2-127.0.0.4").unwrap();
        let picked: Vec<String> = (0..7)
            .map(|i| three.for_connection(i).to_string())
            .collect();
        assert_eq!(
            picked,
            [
                "127.0.0.2",
                "127.0.0.3",
                "127.0.0.4",
                "127.0.0.2",
                "127.0.0.3",
                "127.0.0.4",
                "127.0.0.2"
            ]
        );
        assert_eq!(
            three.for_connection(u64::MAX).to_string(),
            "127.0.0.2" // u64::MAX = 3 × 6148914691236517205
        );
        assert!(!parse_sources("::1").unwrap().is_ipv4());
    }

    #[test]
    fn bad_source_ranges_say_what_to_write() {
        for (bad, says) in [
            (
                "127.0.0.8-127.0.0.1",
                "127.0.0.8-127.0.0.1 is reversed; give the lower address first: \
                 127.0.0.1-127.0.0.8",
            ),
            (
                "127.0.0.1-::1",
                "127.0.0.1-::1 mixes IPv4 and IPv6; a range is of one family",
            ),
            (
                "10.0.0.0-10.1.0.0",
                "10.0.0.0-10.1.0.0 makes more than 65536 addresses; give fewer, e.g. \
                 10.0.0.0-10.0.255.255",
            ),
            (
                "10.0.0.1,10.0.0.0-10.0.255.255",
                "10.0.0.0-10.0.255.255 makes more than 65536 addresses; give fewer, e.g. \
                 10.0.0.0-10.0.255.254",
            ),
            ("::-ffff::", "::-ffff:: makes more than 65536 addresses"),
            (
                "127.0.0.1,::1",
                "::1 is not of the same family as 127.0.0.1",
            ),
            ("127.0.0.1-127.0.0.3,127.0.0.2", "127.0.0.2 is given twice"),
            ("localhost", "\"localhost\" is not an IP address"),
            ("127.0.0.1:80", "\"127.0.0.1:80\" is not an IP address"),
            ("127.0.0.1-", "\"\" is not an IP address"),
            (
                "127.0.0.1-127.0.0.2-127.0.0.3",
                "\"127.0.0.2-127.0.0.3\" is not",
            ),
            ("", "an empty address"),
            ("127.0.0.1,", "an empty address"),
        ] {
            let e = parse_sources(bad).unwrap_err();
            assert!(e.starts_with(says), "{bad}: {e}");
            assert!(!e.contains('\n'), "{bad}: {e}");
        }
    }
}
