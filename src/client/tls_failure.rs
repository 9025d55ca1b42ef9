//! Why the client's TLS failed: its exit code, and its one-line message with cause and
//! fix (for what rustls refused, the explanation `client` and `bench` share).

use std::sync::Arc;

use rustls::Error;

use super::{EXIT_TIMEOUT, EXIT_TLS};
use crate::tls_failure::{TlsContext, explain};

/// Why TLS failed, with the set-up it failed with.
#[derive(Debug)]
pub(super) struct TlsFailure {
    pub(super) cause: TlsCause,
    pub(super) ctx: Arc<TlsContext>,
}

/// The cause of a TLS failure.
#[derive(Debug)]
pub(super) enum TlsCause {
    /// rustls refused to go on: the server's certificate, an alert from the server, or
    /// bytes that are not TLS.
    Refused {
        error: Error,
        /// It happened before the handshake was done.
        in_handshake: bool,
        /// The start of the server's first bytes, when they read as text.
        plain: Option<String>,
    },
    /// The server closed (or reset) the connection before the handshake was done.
    Closed { reset: bool },
    /// Nothing from the server for `secs` seconds, the handshake's limit, set by `flag`.
    Timeout { secs: f64, flag: &'static str },
}

impl TlsFailure {
    /// The exit code: a handshake that timed out is a timeout, like any wait for the
    /// server; anything else is a TLS failure.
    pub(super) fn code(&self) -> u8 {
        match self.cause {
            TlsCause::Timeout { .. } => EXIT_TIMEOUT,
            _ => EXIT_TLS,
        }
    }

    /// One line: the cause, then the fix.
    pub(super) fn message(&self) -> String {
        let ctx = &*self.ctx;
        let target = &ctx.target;
        match &self.cause {
            TlsCause::Timeout { secs, flag } => format!(
                "timed out: nothing from the server for {secs} s during the TLS handshake: is \
                 {target} a TLS server? (a plain-text server that waits for the client to speak \
                 first says nothing to TLS) Raise {flag} to wait longer"
            ),
            TlsCause::Closed { reset } => {
                let how = if *reset { "reset" } else { "closed" };
                format!(
                    "the server {how} the connection during the TLS handshake without saying \
                     why: is {target} the server's TLS port? See the server's log"
                )
            }
            TlsCause::Refused {
                error,
                in_handshake,
                plain,
            } => explain(error, *in_handshake, plain.as_deref(), ctx).1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    use rustls::InvalidMessage;

    fn ctx() -> Arc<TlsContext> {
        Arc::new(TlsContext {
            target: "localhost:9443".into(),
            server_name: "localhost".into(),
            name_given: false,
            ca: None,
            system_roots: 100,
            cert: None,
            asked: Arc::new(AtomicBool::new(false)),
        })
    }

    #[test]
    fn a_handshake_timeout_is_a_timeout_and_the_rest_tls() {
        let timeout = TlsFailure {
            cause: TlsCause::Timeout {
                secs: 5.0,
                flag: "--connect-timeout",
            },
            ctx: ctx(),
        };
        assert_eq!(timeout.code(), EXIT_TIMEOUT);
        let m = timeout.message();
        assert!(
            m.contains("for 5 s during the TLS handshake") && m.contains("Raise --connect-timeout"),
            "{m}"
        );
        let closed = TlsFailure {
            cause: TlsCause::Closed { reset: true },
            ctx: ctx(),
        };
        assert_eq!(closed.code(), EXIT_TLS);
        assert!(
            closed
                .message()
                .starts_with("the server reset the connection during the TLS handshake")
        );
    }

    #[test]
    fn a_refusal_says_what_the_shared_explanation_says() {
        let error = Error::InvalidMessage(InvalidMessage::InvalidContentType);
        let ctx = ctx();
        let refused = TlsFailure {
            cause: TlsCause::Refused {
                error: error.clone(),
                in_handshake: true,
                plain: Some("Welcome!".into()),
            },
            ctx: Arc::clone(&ctx),
        };
        assert_eq!(refused.code(), EXIT_TLS);
        assert_eq!(
            refused.message(),
            explain(&error, true, Some("Welcome!"), &ctx).1
        );
        assert!(refused.message().contains("\"Welcome!\""));
    }
}
