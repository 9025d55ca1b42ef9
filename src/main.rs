//! The `tcp-hello` binary: parses the command line, sets up logging, runs the
//! subcommand, and turns errors into one-line messages and exit codes.

#![forbid(unsafe_code)]

mod cli;
mod cli_docs;

use std::io::Write;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;

use cli::{Cli, Command, LogFormat};
use tcp_hello::bench::Outcome;
use tcp_hello::limits::raise_fd_limit;

fn main() -> ExitCode {
    let cli = Cli::parse_args(std::env::args_os().collect());
    let format = match &cli.command {
        Command::Serve(args) => args.log_format,
        _ => LogFormat::Text,
    };
    init_logging(cli.verbose, cli.quiet, format);
    let result = match cli.command {
        Command::Serve(args) => args
            .into_config()
            .map_err(anyhow::Error::msg)
            .and_then(tcp_hello::serve::run)
            .map(|()| ExitCode::SUCCESS),
        Command::Client(args) => Ok(tcp_hello::client::run(&args.into_config())),
        Command::Bench(args) => bench(args),
        Command::Cert(args) => cert(args.into_request()),
        Command::Completions(args) => print(&cli_docs::completions(args.shell)),
        Command::Man => cli_docs::man_page()
            .context("cannot render the man page")
            .and_then(|page| print(&page)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            match format {
                LogFormat::Text => eprintln!("tcp-hello: {e:#}"),
                LogFormat::Json => json_error(&e),
            }
            ExitCode::from(2)
        }
    }
}

/// The error that ends the program, as a JSON line, so that a log shipper reads why the
/// server did not start. Written past `RUST_LOG`'s filter, as the text one is.
fn json_error(e: &anyhow::Error) {
    let mut line = Vec::new();
    let written = tcp_hello::json_log::write_line(
        &mut line,
        SystemTime::now(),
        &log::Record::builder()
            .level(log::Level::Error)
            .target("tcp_hello")
            .args(format_args!("{e:#}"))
            .build(),
    );
    match written {
        Ok(()) => drop(std::io::stderr().write_all(&line)),
        // Only a value that fails to format fails here: the text still goes out.
        Err(_) => eprintln!("tcp-hello: {e:#}"),
    }
}

/// `RUST_LOG` wins when set to something; otherwise info, moved by -v and -q. A set
/// but empty `RUST_LOG=` (common in unit files and `docker -e`) counts as unset: to
/// env_logger it would mean errors only, whatever -v or -q say. `format` changes how a
/// line is written, never which lines are.
fn init_logging(verbose: u8, quiet: u8, format: LogFormat) {
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
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::new().write_style("RUST_LOG_STYLE"));
    builder.parse_filters(&filter).format_timestamp_millis();
    if format == LogFormat::Json {
        builder
            .format(|out, record| tcp_hello::json_log::write_line(out, SystemTime::now(), record));
    }
    builder.init();
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

/// Writes a generated file (a completion script, the man page) to stdout.
fn print(bytes: &[u8]) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
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
