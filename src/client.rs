//! The bundled client (being written).
use std::process::ExitCode;

use crate::cli::ClientArgs;

/// Runs the client; prints its own errors.
pub fn run(_args: &ClientArgs) -> ExitCode {
    ExitCode::FAILURE
}
