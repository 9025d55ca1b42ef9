//! Parsing the timeout options.

use std::time::Duration;

use super::failure::Failure;

/// The longest timeout accepted, one year: longer is no different from waiting forever,
/// and a bound keeps every deadline computed from it far from `Duration`'s limits.
pub const MAX_TIMEOUT_SECS: u64 = 365 * 24 * 60 * 60;

/// A timeout option in seconds: 0 means none (`zero` says what that does for this
/// flag); negative, not a number, or more than [`MAX_TIMEOUT_SECS`] is a usage error.
pub(super) fn timeout_arg(flag: &str, secs: f64, zero: &str) -> Result<Option<Duration>, Failure> {
    if secs == 0.0 {
        return Ok(None);
    }
    if secs > MAX_TIMEOUT_SECS as f64 {
        return Err(Failure::Usage(format!(
            "{flag} {secs}: at most {MAX_TIMEOUT_SECS} s (one year); give 0 if {zero}"
        )));
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if !d.is_zero() => Ok(Some(d)),
        _ => Err(Failure::Usage(format!(
            "{flag} {secs}: give a number of seconds, e.g. 5 or 0.5 (0 if {zero})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::EXIT_USAGE;

    #[test]
    fn timeouts_zero_means_none_and_nonsense_is_usage() {
        assert_eq!(timeout_arg("--x", 0.0, "z").ok(), Some(None));
        assert_eq!(
            timeout_arg("--x", 1.5, "z").ok(),
            Some(Some(Duration::from_millis(1500)))
        );
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e-12] {
            let e = timeout_arg("--x", bad, "z").unwrap_err();
            assert_eq!(e.code(), EXIT_USAGE, "{bad}");
        }
    }

    #[test]
    fn timeouts_past_a_year_are_refused_naming_the_flag() {
        let year = MAX_TIMEOUT_SECS as f64;
        assert_eq!(
            timeout_arg("--x", year, "z").ok(),
            Some(Some(Duration::from_secs(MAX_TIMEOUT_SECS)))
        );
        for huge in [year + 1.0, 1e19, 1.8e19, f64::MAX] {
            let e = timeout_arg("--reply-timeout", huge, "you want no timeout").unwrap_err();
            assert_eq!(e.code(), EXIT_USAGE, "{huge}");
            let m = e.message().unwrap();
            assert!(m.starts_with("--reply-timeout "), "{m}");
            assert!(
                m.contains("at most 31536000 s") && m.contains("give 0"),
                "{m}"
            );
        }
    }
}
