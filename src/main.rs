//! The `tcp-hello` binary: parses the command line, sets up logging, runs the
//! subcommand, and turns errors into one-line messages and exit codes.

#![forbid(unsafe_code)]

mod cli;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;

use cli::{Cli, Command};
use tcp_hello::bench::Outcome;
use tcp_hello::limits::raise_fd_limit;

fn main() -> ExitCode {
    let cli = Cli::parse_args(std::env::args_os().collect());
    init_logging(cli.verbose, cli.quiet);
    let result = match cli.command {
        Command::Serve(args) => args
            .into_config()
            .map_err(anyhow::Error::msg)
            .and_then(tcp_hello::serve::run)
            .map(|()| ExitCode::SUCCESS),
        Command::Client(args) => Ok(tcp_hello::client::run(&args.into_config())),
        Command::Bench(args) => bench(args),
        Command::Cert(args) => cert(args.into_request()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tcp-hello: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `RUST_LOG` wins when set to something; otherwise info, moved by -v and -q. A set
/// but empty `RUST_LOG=` (common in unit files and `docker -e`) counts as unset: to
/// env_logger it would mean errors only, whatever -v or -q say.
fn init_logging(verbose: u8, quiet: u8) {
    let level = match i16::from(verbose) - i16::from(quiet) {
        ..=-2 => "error",
        -1 => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| !f.trim().is_empty())
        .unwrap_or_else(|| level.to_string());
    env_logger::Builder::from_env(env_logger::Env::new().write_style("RUST_LOG_STYLE"))
        .parse_filters(&filter)
        .format_timestamp_millis()
        .init();
}

/// `tcp-hello bench`: its outcome as the exit status.
fn bench(args: cli::BenchArgs) -> anyhow::Result<ExitCode> {
    let config = args.into_config().map_err(anyhow::Error::msg)?;
    match raise_fd_limit().and_then(|_| tcp_hello::bench::run(&config))? {
        Outcome::Passed => Ok(ExitCode::SUCCESS),
        Outcome::Failed => Ok(ExitCode::from(1)),
        // As a shell reports a command ended by SIGINT: the run did not finish.
        Outcome::Interrupted => Ok(ExitCode::from(130)),
    }
}

/// `tcp-hello cert`: writes the files, names each on stdout, then the commands to try next.
fn cert(request: tcp_hello::cert::Request) -> anyhow::Result<ExitCode> {
    use tcp_hello::cert;
    let made = cert::make(&request)?;
    let mut stdout = std::io::stdout().lock();
    let mut report = || -> std::io::Result<()> {
        for path in &made.files {
            writeln!(stdout, "wrote {}", path.display())?;
        }
        write!(
            stdout,
            "{}",
            cert::next_steps(&request.out, &made.hosts, &request.clients)
        )?;
        stdout.flush()
    };
    report().context("the files were written, but stdout failed")?;
    Ok(ExitCode::SUCCESS)
}
