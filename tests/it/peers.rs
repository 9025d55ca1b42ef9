//! `tests/peers/compare`, the script that runs the README's comparisons against the
//! reference servers of `tests/peers`: its pure parts (the script's doctests), and one
//! quick scenario end to end.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn compare() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/compare")
}

/// `compare` through python3 rather than its `#!`, so that a machine without python3
/// skips the test saying so.
fn compare_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(compare()).args(args);
    cmd
}

#[test]
fn compare_pure_parts_pass_their_doctests() {
    if !require("python3", "python3") {
        return;
    }
    let run = run_tool(
        &mut compare_cmd(&["--self-test"]),
        None,
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains(", 0 failed"), "{run:?}");
}

/// The figure in the second column of `server`'s row of the table under `### scenario:`.
fn first_figure(stdout: &str, scenario: &str, server: &str) -> Option<f64> {
    let table = stdout.split(&format!("### {scenario}:")).nth(1)?;
    let row = table
        .lines()
        .take_while(|l| !l.starts_with("###"))
        .find(|l| l.starts_with(&format!("| {server} |")))?;
    row.split('|').nth(2)?.trim().replace(',', "").parse().ok()
}

#[test]
#[ignore = "builds tcp-hello in release and the peers (crates.io dependencies), then runs \
            servers: cargo test --test it peers:: -- --ignored"]
fn compare_quick_pingpong_has_a_row_per_server() {
    if !require("python3", "python3") {
        return;
    }
    let servers = ["ours", "tokio", "naive"];
    let run = run_tool(
        &mut compare_cmd(&[
            "--quick",
            "--scenario",
            "pingpong-1",
            "--servers",
            &servers.join(","),
        ]),
        None,
        Duration::from_secs(1200),
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    for server in servers {
        let figure = first_figure(&run.stdout, "pingpong-1", server);
        assert!(
            figure.is_some_and(|f| f > 0.0),
            "{server}: msg/s {figure:?} in\n{}",
            run.stdout
        );
    }
}
