//! Build script: gives the binary its version line, `0.1.0 (commit abc1234)` when built
//! from a git checkout of this repository, the plain package version otherwise (a
//! source tarball, crates.io, no git installed), so that a build never fails for it.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/build.rs");
    let version = env("CARGO_PKG_VERSION");
    let line = match checkout(Path::new(&env("CARGO_MANIFEST_DIR"))) {
        Some(checkout) => {
            watch(&checkout);
            format!("{version} (commit {})", checkout.commit)
        }
        None => version,
    };
    println!("cargo:rustc-env=TCP_HELLO_VERSION={line}");
}

/// A variable cargo always sets for a build script; empty if it somehow is not.
fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

/// What the version line needs from the checkout being built.
struct Checkout {
    /// `git rev-parse --short HEAD`: the same abbreviation a user gets from git.
    commit: String,
    /// This worktree's own git directory (HEAD, logs/HEAD).
    git_dir: PathBuf,
    /// The directory shared by every worktree (refs, packed-refs).
    common_dir: PathBuf,
    /// The branch HEAD names (`refs/heads/main`), none when detached.
    branch: Option<String>,
}

/// The checkout `dir` is the top of, if git is installed and `dir` is one: a crate
/// unpacked inside some other repository (vendored, or cargo's own packaging under
/// target/) must not take that repository's commit.
fn checkout(dir: &Path) -> Option<Checkout> {
    let top = PathBuf::from(git(dir, &["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let commit = git(dir, &["rev-parse", "--short", "HEAD"])?;
    let absolute = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { dir.join(p) }
    };
    Some(Checkout {
        commit,
        git_dir: absolute(git(dir, &["rev-parse", "--git-dir"])?),
        common_dir: absolute(git(dir, &["rev-parse", "--git-common-dir"])?),
        branch: git(dir, &["symbolic-ref", "-q", "HEAD"]),
    })
}

/// The trimmed stdout of `git ARGS` run in `dir`, or none if git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Reruns this script when HEAD moves: a commit, a checkout, a reset. Only files that
/// exist are named, since cargo reruns a script on every build while a file it watches
/// is missing; and not the whole refs directory, which every other branch's commit
/// touches.
fn watch(checkout: &Checkout) {
    let mut files = vec![
        checkout.git_dir.join("HEAD"),
        // Appended to whenever HEAD moves, even when the branch's ref is packed.
        checkout.git_dir.join("logs/HEAD"),
        checkout.common_dir.join("packed-refs"),
    ];
    if let Some(branch) = &checkout.branch {
        files.push(checkout.common_dir.join(branch));
    }
    for file in files.iter().filter(|f| f.is_file()) {
        println!("cargo:rerun-if-changed={}", file.display());
    }
}
