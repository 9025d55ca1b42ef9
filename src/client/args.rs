//! Parsing the timeout options.

use std::time::Duration;

use super::failure::Failure;

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
