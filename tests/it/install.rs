//! What an install puts beside the binary works where it goes: the man page renders with
//! man, and each shell's completion script loads in that shell and completes.

use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// Long enough for a shell, man or rustc on a loaded machine; a hang still fails.
const LIMIT: Duration = Duration::from_secs(120);

/// The stdout of `tcp-hello ARGS`, which must succeed.
fn hello_output(args: &[&str]) -> String {
    let run = run_tool(&mut hello_cmd(args[0], &args[1..]), None, LIMIT);
    assert_eq!(run.code, Some(0), "tcp-hello {args:?}: {run:?}");
    run.stdout
}

#[test]
fn the_man_page_renders_with_man_and_names_every_subcommand_and_its_flags() {
    if !require("man", "man-db") {
        return;
    }
    let page = hello_output(&["man"]);
    let run = run_tool(
        Command::new("man")
            .args(["-l", "-"])
            .env("MANWIDTH", "80")
            .env("MANPAGER", "cat")
            .env("LC_ALL", "C.UTF-8"),
        Some(page.as_bytes()),
        LIMIT,
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    // groff's complaints about the roff, if any, go to stderr.
    assert_eq!(run.stderr, "", "{run:?}");
    let text = run.stdout;
    for section in [
        "NAME",
        "SYNOPSIS",
        "TCP-HELLO SERVE",
        "TCP-HELLO CLIENT",
        "TCP-HELLO BENCH",
        "TCP-HELLO CERT",
        "TCP-HELLO COMPLETIONS",
        "TCP-HELLO MAN",
    ] {
        assert!(
            text.lines().any(|l| l == section),
            "no section {section}:\n{text}"
        );
    }
    for shown in [
        "--max-line <BYTES>",
        "--tls-ca <FILE>",
        "--verbose",
        "TCP_HELLO_MAX_LINE",
        "tcp-hello client [OPTIONS] [NAME]...",
        env!("CARGO_PKG_VERSION"),
    ] {
        assert!(text.contains(shown), "{shown:?} is not shown:\n{text}");
    }
}

/// The words bash's completion for tcp-hello offers after `line` (the word under the
/// cursor is its last), from the script `tcp-hello completions bash` printed, found
/// as bash would, through `complete -p tcp-hello`.
fn bash_completes(line: &[&str]) -> Vec<String> {
    let script = hello_output(&["completions", "bash"]);
    // Quoted, so that an empty last word (completing after a space) is a word.
    let words: Vec<String> = line.iter().map(|w| format!("'{w}'")).collect();
    let words = words.join(" ");
    let driver = format!(
        r#"source /dev/stdin || exit 3
spec=$(complete -p tcp-hello) || exit 4
function=${{spec#*-F }}; function=${{function%% *}}
COMP_WORDS=({words}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE="${{COMP_WORDS[*]}}"; COMP_POINT=${{#COMP_LINE}}
"$function" tcp-hello "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}"
"#
    );
    let run = run_tool(
        Command::new("bash").args(["--norc", "--noprofile", "-c", &driver]),
        Some(script.as_bytes()),
        LIMIT,
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    run.stdout.lines().map(str::to_string).collect()
}

#[test]
fn the_bash_completion_script_loads_in_bash_and_completes_subcommands_and_flags() {
    if !require("bash", "bash") {
        return;
    }
    assert_eq!(bash_completes(&["tcp-hello", "se"]), ["serve"]);
    let flags = bash_completes(&["tcp-hello", "serve", "--max-l"]);
    assert_eq!(flags, ["--max-line"]);
    let shells = bash_completes(&["tcp-hello", "completions", ""]);
    assert!(
        ["bash", "zsh", "fish"]
            .iter()
            .all(|s| shells.iter().any(|w| w == s)),
        "{shells:?}"
    );
}

#[test]
fn the_fish_completion_script_loads_in_fish_and_completes_subcommands_and_flags() {
    if !require("fish", "fish") {
        return;
    }
    let script = hello_output(&["completions", "fish"]);
    // fish keeps history and variables under HOME: a home of the test's own.
    let home = temp_dir("fish");
    let run = run_tool(
        Command::new("fish")
            .args([
                "--no-config",
                "-c",
                "source; complete -C 'tcp-hello se'; complete -C 'tcp-hello serve --max-l'",
            ])
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_DATA_HOME", home.path().join("data")),
        Some(script.as_bytes()),
        LIMIT,
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    // Each completion is the word, a tab, and its description.
    let words: Vec<&str> = run
        .stdout
        .lines()
        .map(|l| l.split('\t').next().unwrap_or_default())
        .collect();
    assert_eq!(words, ["serve", "--max-line"], "{run:?}");
}

#[test]
fn the_zsh_completion_script_parses_and_registers_itself_for_tcp_hello() {
    if !require("zsh", "zsh") {
        return;
    }
    let script = hello_output(&["completions", "zsh"]);
    assert!(script.starts_with("#compdef tcp-hello\n"), "{script}");
    let dir = temp_dir("zsh");
    let file = dir.path().join("_tcp-hello");
    std::fs::write(&file, &script).unwrap();
    // compinit without its cache file (-D) or its check of directories' owners (-u).
    let run = run_tool(
        Command::new("zsh")
            .args([
                "-f",
                "-c",
                r#"autoload -U compinit && compinit -u -D && source "$1" && print -r -- "${_comps[tcp-hello]}""#,
                "zsh",
            ])
            .arg(&file)
            .env("HOME", dir.path()),
        None,
        LIMIT,
    );
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (Some(0), "_tcp-hello\n"),
        "{run:?}"
    );
}

#[test]
fn completions_for_an_unknown_shell_are_refused_naming_the_ones_there_are() {
    let run = run_tool(&mut hello_cmd("completions", &["powershell"]), None, LIMIT);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("invalid value 'powershell'")
            && run.stderr.contains("[possible values: bash, zsh, fish]"),
        "{run:?}"
    );
}
