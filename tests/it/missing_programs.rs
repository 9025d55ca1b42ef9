//! The tests' handling of programs a machine may not have ([`common::require`]): on a
//! developer's machine a test that needs one says what to install and passes; under
//! `CI=true` it fails. Each case runs in a child process of this test binary, with `CI`
//! set or not, so that the result does not depend on the environment of the run.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

const MISSING: &str = "tcp-hello-no-such-program";

/// [`needs_a_missing_program`]'s name in the test binary: the name libtest filters on
/// and gives the test's thread.
const CASE: &str = "missing_programs::needs_a_missing_program";

/// Not a test of its own: run by the tests below, in a child process.
#[test]
#[ignore = "run by the other tests here, with CI set or not"]
fn needs_a_missing_program() {
    assert!(require("sh", "dash"), "sh is on PATH");
    assert!(!require(MISSING, "no-such-package"));
    println!("returned");
}

/// Runs [`needs_a_missing_program`] in a child process, with `CI` set to `ci`.
fn run_case(ci: Option<&str>) -> Finished {
    let mut cmd = Command::new(std::env::current_exe().expect("this test binary"));
    cmd.args([
        CASE,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    match ci {
        Some(value) => cmd.env("CI", value),
        None => cmd.env_remove("CI"),
    };
    run_tool(&mut cmd, None, Duration::from_secs(60))
}

#[test]
fn a_missing_program_skips_the_test_saying_what_to_install() {
    for ci in [None, Some("false")] {
        let run = run_case(ci);
        assert_eq!(run.code, Some(0), "CI={ci:?}: {run:?}");
        assert!(run.stdout.contains("returned"), "CI={ci:?}: {run:?}");
        let skipped: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("SKIPPED"))
            .collect();
        assert_eq!(
            skipped,
            [format!(
                "SKIPPED {CASE}: {MISSING} is not installed: apt-get install \
                 no-such-package"
            )],
            "CI={ci:?}: {run:?}"
        );
    }
}

#[test]
fn under_ci_a_missing_program_fails_the_test() {
    for ci in ["true", "1"] {
        let run = run_case(Some(ci));
        assert_eq!(run.code, Some(101), "CI={ci}: {run:?}");
        assert!(!run.stdout.contains("returned"), "CI={ci}: {run:?}");
        assert!(
            run.stderr.contains(&format!(
                "{MISSING} is not installed: apt-get install no-such-package (CI=true: every \
                 test must run)"
            )),
            "CI={ci}: {run:?}"
        );
        assert!(!run.stderr.contains("SKIPPED"), "CI={ci}: {run:?}");
    }
}
