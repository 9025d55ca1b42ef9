//! Parsing the `--connect` target and the timeout options.

use std::time::Duration;

use super::failure::Failure;
use crate::address::HostPort;

/// Reads the `--connect` target (see [`HostPort::parse`]); port 0 is refused, as no
/// server listens there.
pub(super) fn parse_target(s: &str) -> Result<HostPort, String> {
    let target = HostPort::parse(s).map_err(|e| format!("--connect {}: {e}", s.trim()))?;
    if target.port == 0 {
        return Err(format!(
            "--connect {}: port 0 is not a server's port; give the port the server announced",
            s.trim()
        ));
    }
    Ok(target)
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
    fn targets_name_the_flag_and_refuse_port_0() {
        let t = parse_target("localhost:80").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("localhost", 80));
        assert!(
            parse_target("a:b:c")
                .unwrap_err()
                .starts_with("--connect a:b:c: ")
        );
        assert!(parse_target("host:0").unwrap_err().contains("port 0"));
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
