//! What an install puts beside the binary works where it goes: the man page renders with
//! man, each shell's completion script loads in that shell and completes, and
//! `--version` names the commit built from (src/build.rs, also run here on its own).

use std::path::Path;
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
    let flags = bash_completes(&["tcp-hello", "serve", "--max-lin"]);
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
                "source; complete -C 'tcp-hello se'; complete -C 'tcp-hello serve --max-lin'",
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

/// `git ARGS` in `dir`: its trimmed stdout, or none if it failed.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let run = run_tool(
        Command::new("git").arg("-C").arg(dir).args(args),
        None,
        LIMIT,
    );
    (run.code == Some(0)).then(|| run.stdout.trim().to_string())
}

#[test]
fn version_names_the_commit_the_binary_was_built_from() {
    if !require("git", "git") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let top = git(root, &["rev-parse", "--show-toplevel"]);
    if top.is_none_or(|top| Path::new(&top).canonicalize().ok() != root.canonicalize().ok()) {
        cannot_run("the source is not a git checkout of its own");
        return;
    }
    let commit = git(root, &["rev-parse", "--short", "HEAD"]).expect("HEAD");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        hello_output(&["--version"]),
        format!("tcp-hello {version} (commit {commit})\n")
    );
    // Each subcommand's --version says the same.
    assert_eq!(
        hello_output(&["serve", "--version"]),
        format!("tcp-hello-serve {version} (commit {commit})\n")
    );
}

/// src/build.rs, compiled on its own, once per test that runs it.
struct BuildScript {
    dir: tempfile::TempDir,
}

/// What one run of the build script printed for cargo.
struct Printed {
    version: String,
    watched: Vec<String>,
}

impl BuildScript {
    fn compile() -> BuildScript {
        let dir = temp_dir("build-script");
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let run = run_tool(
            Command::new(rustc)
                .args(["--edition", "2024", "-o"])
                .arg(dir.path().join("build"))
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/src/build.rs")),
            None,
            Duration::from_secs(300),
        );
        assert_eq!(run.code, Some(0), "compile src/build.rs: {run:?}");
        BuildScript { dir }
    }

    /// Runs it as cargo would for a crate at `manifest_dir`, version 9.8.7, with `path`
    /// as PATH; git looks for a repository no further up than below `ceiling`.
    fn run(&self, manifest_dir: &Path, path: &std::ffi::OsStr, ceiling: &Path) -> Printed {
        let run = run_tool(
            Command::new(self.dir.path().join("build"))
                .env_clear()
                .env("PATH", path)
                .env("CARGO_PKG_VERSION", "9.8.7")
                .env("CARGO_MANIFEST_DIR", manifest_dir)
                .env("GIT_CEILING_DIRECTORIES", ceiling),
            None,
            LIMIT,
        );
        assert_eq!(run.code, Some(0), "{run:?}");
        let mut printed = Printed {
            version: String::new(),
            watched: Vec::new(),
        };
        for line in run.stdout.lines() {
            if let Some(v) = line.strip_prefix("cargo:rustc-env=TCP_HELLO_VERSION=") {
                printed.version = v.to_string();
            } else if let Some(file) = line.strip_prefix("cargo:rerun-if-changed=") {
                printed.watched.push(file.to_string());
            } else {
                panic!("unexpected line {line:?}: {run:?}");
            }
        }
        printed
    }
}

/// A new git repository at `dir` with one commit: its short hash.
fn repository_with_a_commit(dir: &Path) -> String {
    git(dir, &["init", "-q"]).expect("git init");
    git(
        dir,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "one",
        ],
    )
    .expect("git commit");
    git(dir, &["rev-parse", "--short", "HEAD"]).expect("HEAD")
}

#[test]
fn the_build_script_names_a_checkouts_commit_and_watches_only_files_that_exist() {
    if !require("git", "git") {
        return;
    }
    let script = BuildScript::compile();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dir = temp_dir("checkout");
    let root = dir.path().join("crate");
    std::fs::create_dir(&root).unwrap();
    let commit = repository_with_a_commit(&root);

    let printed = script.run(&root, &path, dir.path());
    assert_eq!(printed.version, format!("9.8.7 (commit {commit})"));
    // Cargo reruns a build script on every build while a file it watches is missing.
    for file in printed.watched.iter().filter(|f| *f != "src/build.rs") {
        assert!(Path::new(file).is_file(), "{file} is watched but missing");
    }
    let head = root.join(".git/HEAD");
    assert!(
        printed.watched.iter().any(|f| Path::new(f) == head),
        "HEAD is not watched: {:?}",
        printed.watched
    );
}

#[test]
fn the_build_script_gives_the_plain_version_without_git_or_a_checkout_of_its_own() {
    if !require("git", "git") {
        return;
    }
    let script = BuildScript::compile();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dir = temp_dir("no-checkout");
    let plain = dir.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let repository = dir.path().join("repository");
    let inside = repository.join("vendor/tcp-hello");
    std::fs::create_dir_all(&inside).unwrap();
    repository_with_a_commit(&repository);
    let no_programs = dir.path().join("empty-bin");
    std::fs::create_dir(&no_programs).unwrap();

    for (what, manifest_dir, path) in [
        ("not in a repository", &plain, path.as_os_str()),
        // A crate vendored in another project must not take that project's commit.
        ("inside another repository", &inside, path.as_os_str()),
        ("git not installed", &repository, no_programs.as_os_str()),
    ] {
        let printed = script.run(manifest_dir, path, dir.path());
        assert_eq!(printed.version, "9.8.7", "{what}");
        assert_eq!(printed.watched, ["src/build.rs"], "{what}");
    }
}
