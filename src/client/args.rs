//! Parsing the `--connect` target and the timeout options.

use std::net::Ipv6Addr;
use std::time::Duration;

use super::DEFAULT_PORT;
use super::failure::Failure;

/// Splits `HOST:PORT`, `[IPV6]:PORT`, `HOST`, `[IPV6]` or a bare IPv6 address; the
/// port defaults to [`DEFAULT_PORT`].
pub(super) fn parse_target(s: &str) -> Result<(String, u16), String> {
    let s = s.trim();
    let port_of = |p: &str| -> Result<u16, String> {
        match p.parse::<u16>() {
            Ok(0) => Err(format!(
                "--connect {s}: port 0 is not a server's port; give the port the server announced"
            )),
            Ok(port) => Ok(port),
            Err(_) => Err(format!(
                "--connect {s}: {p:?} is not a port number; write HOST:PORT, e.g. 127.0.0.1:9999"
            )),
        }
    };
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!(
                "--connect {s}: missing `]`; write IPv6 addresses as [::1]:9999"
            ));
        };
        let port = match after {
            "" => DEFAULT_PORT,
            _ => match after.strip_prefix(':') {
                Some(p) => port_of(p)?,
                None => {
                    return Err(format!(
                        "--connect {s}: expected `:PORT` after `]`, e.g. [::1]:9999"
                    ));
                }
            },
        };
        (host, port)
    } else if s.parse::<Ipv6Addr>().is_ok() {
        (s, DEFAULT_PORT)
    } else {
        match s.matches(':').count() {
            0 => (s, DEFAULT_PORT),
            1 => {
                let (host, p) = s.split_once(':').unwrap_or((s, ""));
                (host, port_of(p)?)
            }
            _ => {
                return Err(format!(
                    "--connect {s}: write IPv6 addresses in brackets, e.g. [::1]:9999"
                ));
            }
        }
    };
    if host.is_empty() {
        return Err(format!(
            "--connect {s}: no host; write HOST:PORT, e.g. 127.0.0.1:9999"
        ));
    }
    Ok((host.to_string(), port))
}

/// A timeout option in seconds: 0 means none; negative or not a number is a usage error.
pub(super) fn timeout_arg(flag: &str, secs: f64) -> Result<Option<Duration>, Failure> {
    if secs == 0.0 {
        return Ok(None);
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(Some(d)),
        _ => Err(Failure::Usage(format!(
            "{flag} {secs}: give a number of seconds, e.g. 5 or 0.5 (0 waits forever)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::EXIT_USAGE;

    #[test]
    fn default_port_matches_the_default_address() {
        assert_eq!(
            parse_target(crate::cli::DEFAULT_ADDR),
            Ok(("127.0.0.1".to_string(), DEFAULT_PORT))
        );
    }

    #[test]
    fn targets_parse_with_and_without_port() {
        let ok = |s: &str, host: &str, port: u16| {
            assert_eq!(parse_target(s), Ok((host.to_string(), port)), "{s}");
        };
        ok("localhost:80", "localhost", 80);
        ok("localhost", "localhost", 9999);
        ok("[::1]:8080", "::1", 8080);
        ok("[::1]", "::1", 9999);
        ok("::1", "::1", 9999);
        ok("fe80::1", "fe80::1", 9999);
        ok(" 10.0.0.1:7 ", "10.0.0.1", 7);
        for bad in [
            "host:x",
            "host:0",
            ":80",
            "[::1",
            "[::1]80",
            "a:b:c",
            "host:70000",
            "",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
        assert!(parse_target("a:b:c").unwrap_err().contains("brackets"));
    }

    #[test]
    fn timeouts_zero_means_none_and_nonsense_is_usage() {
        assert_eq!(timeout_arg("--x", 0.0).ok(), Some(None));
        assert_eq!(
            timeout_arg("--x", 1.5).ok(),
            Some(Some(Duration::from_millis(1500)))
        );
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e-12] {
            let e = timeout_arg("--x", bad).unwrap_err();
            assert_eq!(e.code(), EXIT_USAGE, "{bad}");
        }
    }
}
