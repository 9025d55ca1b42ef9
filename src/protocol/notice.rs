//! The lines the server sends on its own account (too long, idle, shutting down,
//! reconnect, busy).

use super::settings::Settings;

/// Lines the server sends on its own account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// A line was longer than `--max-line` and was skipped.
    LineTooLong,
    /// The client sent nothing for the idle timeout.
    Idle {
        /// The idle timeout, in seconds.
        secs: u64,
    },
    /// The server is stopping.
    ShuttingDown,
    /// The connection lived its `--max-lifetime`: the client should connect again (to
    /// another replica, maybe).
    Reconnect,
    /// The connection limit is reached, or no thread could be started.
    Busy {
        /// Connections the server holds: the limit, or fewer when it could not start
        /// another thread.
        connections: usize,
    },
    /// The client's address has as many connections as one address may have.
    BusySource {
        /// The per-address limit.
        limit: usize,
    },
}

impl Notice {
    pub(super) fn render(self, settings: &Settings) -> String {
        match self {
            Notice::LineTooLong => format!(
                "ERROR line too long (max {} bytes), skipped",
                settings.max_line
            ),
            Notice::Idle { secs } => format!("ERROR idle for {secs} s, closing"),
            Notice::ShuttingDown => "server shutting down".to_string(),
            Notice::Reconnect => "server closing this connection, reconnect".to_string(),
            Notice::Busy { connections } => {
                format!("ERROR server busy ({connections} connections), try again later")
            }
            Notice::BusySource { limit } => {
                format!("ERROR too many connections from your address ({limit}), try again later")
            }
        }
    }
}
