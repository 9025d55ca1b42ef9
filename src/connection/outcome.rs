//! How a connection ended: its [`CloseReason`] and the [`Summary`] of what it did.

use std::io::{self, ErrorKind};

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client said `exit` or `quit`.
    Exit,
    /// The client closed (or half-closed) its side.
    ClientClosed,
    /// The client sent nothing for the idle timeout.
    Idle,
    /// The server is shutting down.
    Shutdown,
    /// The connection lived its `--max-lifetime`.
    Lifetime,
    /// Reading failed (reset, ...).
    ReadError(ErrorKind),
    /// Writing failed: the client is gone or does not read (write timeout).
    WriteError(ErrorKind),
    /// The client began a TLS handshake on a plain port.
    TlsOnPlainPort,
    /// The TLS handshake did not complete (the close line says why).
    Handshake,
    /// The client ended its TLS session with this fatal alert (after the handshake:
    /// `handshake_failure` from a client whose renegotiation was refused, ...).
    TlsAlert(rustls::AlertDescription),
    /// A fault (`--fault`) of this kind ended it.
    Fault(crate::fault::Kind),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::Exit => f.write_str("client said exit"),
            CloseReason::ClientClosed => f.write_str("client closed"),
            CloseReason::Idle => f.write_str("idle timeout"),
            CloseReason::Shutdown => f.write_str("server shutdown"),
            CloseReason::Lifetime => f.write_str("max lifetime reached"),
            CloseReason::ReadError(kind) => write!(f, "read error: {kind}"),
            CloseReason::WriteError(ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                f.write_str("write error: timed out, the client does not read its replies")
            }
            CloseReason::WriteError(kind) => write!(f, "write error: {kind}"),
            CloseReason::TlsOnPlainPort => f.write_str("a TLS handshake on a plain port"),
            CloseReason::Handshake => f.write_str("no TLS session"),
            CloseReason::TlsAlert(alert) => write!(f, "client sent the TLS alert {alert:?}"),
            CloseReason::Fault(kind) => write!(f, "fault: {}", kind.label()),
        }
    }
}

/// What happened on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Messages answered.
    pub replies: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Why it ended.
    pub reason: CloseReason,
}

impl Summary {
    /// Whether its close line belongs at debug, not info: nothing was received (a port
    /// scanner, a health check), or the client reset it, or spoke TLS to a plain port.
    pub fn is_quiet(&self) -> bool {
        self.bytes_in == 0
            || matches!(
                self.reason,
                CloseReason::ReadError(ErrorKind::ConnectionReset)
                    | CloseReason::WriteError(ErrorKind::ConnectionReset | ErrorKind::BrokenPipe)
                    | CloseReason::TlsOnPlainPort
            )
    }
}

/// Why a failed read ended the connection: a fatal alert from a TLS client (which the
/// TLS stream reports as invalid data carrying the rustls error) by its name, anything
/// else by its kind.
pub(super) fn read_failure(e: &io::Error) -> CloseReason {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(alert)) => CloseReason::TlsAlert(*alert),
        _ => CloseReason::ReadError(e.kind()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanners_resets_and_tls_on_a_plain_port_close_quietly() {
        let summary = |bytes_in, reason| Summary {
            replies: 0,
            bytes_in,
            bytes_out: 10,
            reason,
        };
        assert!(summary(0, CloseReason::Exit).is_quiet());
        assert!(summary(5, CloseReason::ReadError(ErrorKind::ConnectionReset)).is_quiet());
        assert!(summary(5, CloseReason::WriteError(ErrorKind::BrokenPipe)).is_quiet());
        assert!(summary(5, CloseReason::TlsOnPlainPort).is_quiet());
        assert!(!summary(5, CloseReason::Exit).is_quiet());
        assert!(!summary(5, CloseReason::Idle).is_quiet());
    }

    #[test]
    fn a_fatal_tls_alert_from_the_client_is_named_as_the_close_reason() {
        let alert = rustls::AlertDescription::HandshakeFailure;
        let e = io::Error::new(ErrorKind::InvalidData, rustls::Error::AlertReceived(alert));
        assert_eq!(read_failure(&e), CloseReason::TlsAlert(alert));
        assert_eq!(
            read_failure(&e).to_string(),
            "client sent the TLS alert HandshakeFailure"
        );
        let other = io::Error::new(ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert_eq!(
            read_failure(&other),
            CloseReason::ReadError(ErrorKind::InvalidData)
        );
        let reset = io::Error::from(ErrorKind::ConnectionReset);
        assert_eq!(
            read_failure(&reset),
            CloseReason::ReadError(ErrorKind::ConnectionReset)
        );
    }
}
