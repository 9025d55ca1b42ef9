//! The README stays true to the binary: every link inside it leads to a heading, every
//! `--flag` it names is one a subcommand takes (or one of another program it shows), and
//! the systemd units it shows are the ones the package installs.

use std::collections::HashSet;
use std::process::Command;

use crate::common::bin;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn anchors_are_computed_as_github_does() {
    assert_eq!(anchor("`tcp-hello serve`"), "tcp-hello-serve");
    assert_eq!(anchor("TLS and authentication"), "tls-and-authentication");
    assert_eq!(anchor("Where it runs"), "where-it-runs");
}

#[test]
fn every_link_within_the_readme_leads_to_a_heading() {
    let text = readme();
    let mut in_code = false;
    let mut headings = HashSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if !in_code && line.starts_with('#') {
            headings.insert(anchor(line.trim_start_matches('#')));
        }
    }
    let mut broken = Vec::new();
    for piece in text.split("](#").skip(1) {
        let target = &piece[..piece.find(')').unwrap()];
        if !headings.contains(target) {
            broken.push(target.to_string());
        }
    }
    assert!(broken.is_empty(), "links to no heading: {broken:?}");
}

/// Flags of other programs that the README shows (cargo, openssl, systemd, docker...).
const FOREIGN: &[&str] = &[
    "--path",
    "--locked",
    "--release",
    "--test",
    "--ignored",
    "--nocapture",
    "--test-threads",
    "--target",
    "--manifest-path",
    "--check",
    "--all-targets",
    "--fdname",
    "--pids-limit",
    "--now",
    "--system",
    "--no-create-home",
    "--shell",
];

#[test]
fn every_flag_the_readme_names_is_taken_by_a_subcommand() {
    let mut known: HashSet<String> = FOREIGN.iter().map(|s| s.to_string()).collect();
    for sub in ["serve", "client", "bench", "cert", "completions", "man"] {
        let out = Command::new(bin()).args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} --help failed");
        let help = String::from_utf8(out.stdout).unwrap();
        known.extend(flags(&help));
    }
    // The script behind the Performance section has flags of its own.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/compare");
    known.extend(flags(&std::fs::read_to_string(script).unwrap()));
    let unknown: Vec<String> = flags(&readme())
        .into_iter()
        .filter(|f| !known.contains(f))
        .collect();
    assert!(
        unknown.is_empty(),
        "flags the README names that no subcommand takes: {unknown:?}"
    );
}

/// Every `--name` in `text`: two dashes, then letters, digits and dashes, the first a letter.
fn flags(text: &str) -> HashSet<String> {
    let bytes = text.as_bytes();
    let mut found = HashSet::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("--") {
        let start = i + at;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'-');
        let mut end = start + 2;
        while end < bytes.len()
            && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'-' || bytes[end] == b'_')
        {
            end += 1;
        }
        let name = &text[start..end];
        if before_ok && name.len() > 2 && bytes[start + 2].is_ascii_lowercase() {
            found.insert(name.trim_end_matches('-').to_string());
        }
        i = end.max(start + 2);
    }
    found
}

#[test]
fn flags_are_found_where_the_text_names_them() {
    let found = flags("use --max-line 5, not ---x or a--b; (--tls-ca FILE) `--json`.");
    let mut found: Vec<_> = found.into_iter().collect();
    found.sort();
    assert_eq!(found, ["--json", "--max-line", "--tls-ca"]);
}

/// The unit the README shows under the line `# /usr/lib/systemd/system/NAME`: the
/// indented lines after it, up to the next such line or the end of the block.
fn unit_shown(readme: &str, name: &str) -> Option<String> {
    let header = format!("    # /usr/lib/systemd/system/{name}");
    let mut lines = readme.lines().skip_while(|l| *l != header).skip(1);
    let mut unit: Vec<&str> = lines
        .by_ref()
        .take_while(|l| {
            (l.is_empty() || l.starts_with("    ")) && !l.starts_with("    # /usr/lib/systemd/")
        })
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect();
    while unit.last().is_some_and(|l| l.is_empty()) {
        unit.pop();
    }
    (!unit.is_empty()).then(|| unit.join("\n") + "\n")
}

#[test]
fn the_systemd_units_the_readme_shows_are_the_ones_the_package_installs() {
    let text = readme();
    for name in ["tcp-hello.socket", "tcp-hello.service"] {
        let packaged = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/deb")
                .join(name),
        )
        .unwrap();
        let shown = unit_shown(&text, name).unwrap_or_else(|| {
            panic!("the README shows no unit under # /usr/lib/systemd/system/{name}")
        });
        assert_eq!(
            shown, packaged,
            "the README's {name} differs from src/deb/{name}: change both"
        );
    }
}

#[test]
fn a_unit_shown_ends_at_the_next_unit_or_the_end_of_its_block() {
    let text = "x\n\n    # /usr/lib/systemd/system/a.socket\n    [Socket]\n\n    B=1\n\n    \
                # /usr/lib/systemd/system/a.service\n    [Service]\n\nthen\n";
    assert_eq!(unit_shown(text, "a.socket").unwrap(), "[Socket]\n\nB=1\n");
    assert_eq!(unit_shown(text, "a.service").unwrap(), "[Service]\n");
    assert_eq!(unit_shown(text, "b.socket"), None);
}
