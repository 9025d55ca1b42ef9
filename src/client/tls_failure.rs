//! Why TLS failed, and the one-line message with its cause and fix.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use rustls::pki_types::UnixTime;
use rustls::{AlertDescription, CertificateError, Error, InvalidMessage, PeerIncompatible};

use super::{EXIT_TIMEOUT, EXIT_TLS};

/// What the client knew of its TLS set-up, to say what to change when TLS fails.
#[derive(Debug)]
pub(super) struct TlsContext {
    /// The server, as `--connect` gave it.
    pub(super) target: String,
    /// The name the server's certificate must have.
    pub(super) server_name: String,
    /// The name came from `--tls-server-name`, not from `--connect`.
    pub(super) name_given: bool,
    /// `--tls-ca`.
    pub(super) ca: Option<PathBuf>,
    /// How many of the system's trust roots could be used (without `--tls-ca`).
    pub(super) system_roots: usize,
    /// `--tls-cert`.
    pub(super) cert: Option<PathBuf>,
    /// Set when the server asked for a client certificate.
    pub(super) asked: Arc<AtomicBool>,
}

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
            } => refused(error, *in_handshake, plain.as_deref(), ctx),
        }
    }
}

fn refused(error: &Error, in_handshake: bool, plain: Option<&str>, ctx: &TlsContext) -> String {
    match error {
        // The server's first bytes are not a TLS record: `Welcome!` is no content type.
        Error::InvalidMessage(
            InvalidMessage::InvalidContentType
            | InvalidMessage::UnknownProtocolVersion
            | InvalidMessage::MessageTooLarge
            | InvalidMessage::InvalidEmptyPayload,
        ) if in_handshake => {
            let said = plain.map_or(String::new(), |text| {
                format!(" (it answered in plain text: {text:?})")
            });
            format!(
                "the server does not speak TLS on that port{said}: drop --tls, or use the \
                 server's TLS port in --connect"
            )
        }
        Error::InvalidCertificate(error) => certificate(error, ctx),
        Error::AlertReceived(alert) => alert_message(*alert, ctx),
        Error::PeerIncompatible(
            PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
            | PeerIncompatible::SupportedVersionsExtensionRequired,
        ) => NO_VERSION.to_string(),
        Error::PeerIncompatible(what) => format!(
            "the server and this client have no TLS parameters in common ({what:?}): this \
             client speaks TLS 1.2 and 1.3 with ECDHE and AES-GCM or ChaCha20-Poly1305; see \
             the server's TLS settings"
        ),
        error if in_handshake => format!(
            "the TLS handshake with {} failed: {error}; see the server's log",
            ctx.target
        ),
        error => format!("TLS failed: {error}; see the server's log"),
    }
}

const NO_VERSION: &str = "the server speaks no TLS version this client does (TLS 1.2 and 1.3): \
                          upgrade the server's TLS, or its settings";

/// The server's certificate was refused.
fn certificate(error: &CertificateError, ctx: &TlsContext) -> String {
    let name = &ctx.server_name;
    match error {
        CertificateError::UnknownIssuer => match &ctx.ca {
            Some(ca) => format!(
                "the server's certificate is not signed by the CA in --tls-ca {} (unknown \
                 issuer): give --tls-ca the CA that signed it, e.g. the ca.pem that \
                 `tcp-hello cert` made with the server's certificate",
                ca.display()
            ),
            None if ctx.system_roots == 0 => "the server's certificate cannot be checked: this \
                 system has no usable trust roots (unknown issuer): give the server's CA with \
                 --tls-ca FILE, e.g. the ca.pem of `tcp-hello cert`"
                .to_string(),
            None => "the server's certificate is not signed by a CA this system trusts (unknown \
                     issuer): give the server's CA with --tls-ca FILE, e.g. the ca.pem of \
                     `tcp-hello cert`"
                .to_string(),
        },
        CertificateError::NotValidForNameContext { presented, .. } => {
            let names: Vec<String> = presented.iter().filter_map(|p| presented_name(p)).collect();
            wrong_name(name, &names, ctx.name_given)
        }
        CertificateError::NotValidForName => wrong_name(name, &[], ctx.name_given),
        CertificateError::ExpiredContext { time, not_after } => format!(
            "the server's certificate expired on {} (this machine's clock says {}): renew it \
             (e.g. with `tcp-hello cert`), or check this machine's clock",
            utc(*not_after),
            utc(*time)
        ),
        CertificateError::Expired => "the server's certificate has expired: renew it (e.g. with \
                                      `tcp-hello cert`), or check this machine's clock"
            .to_string(),
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "the server's certificate is not valid before {} (this machine's clock says {}): \
             check this machine's clock, or wait until then",
            utc(*not_before),
            utc(*time)
        ),
        CertificateError::NotValidYet => "the server's certificate is not valid yet: check this \
                                          machine's clock"
            .to_string(),
        CertificateError::Revoked => {
            "the server's certificate is revoked: the server needs a new one".to_string()
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "the server's certificate is not one for a TLS server (its extended key usage \
             lacks serverAuth): give the server a server certificate"
                .to_string()
        }
        error => format!(
            "the server's certificate cannot be used ({error}): check it, e.g. with `openssl \
             s_client -connect {}`",
            ctx.target
        ),
    }
}

fn wrong_name(name: &str, names: &[String], given: bool) -> String {
    let has = if names.is_empty() {
        String::new()
    } else {
        format!(" (it is for {})", names.join(", "))
    };
    let source = if given {
        ", the name given to --tls-server-name"
    } else {
        ""
    };
    let fix = match (names.is_empty(), given) {
        (true, _) => "give --tls-server-name the name it has",
        (false, true) => "give --tls-server-name one of those names",
        (false, false) => "connect with one of those names, or give --tls-server-name with one",
    };
    format!("the server's certificate is not valid for {name}{source}{has}: {fix}")
}

/// A name as webpki shows it (`DnsName("localhost")`, `IpAddress(127.0.0.1)`), as
/// people write it; `None` for kinds that are never a server's name.
fn presented_name(shown: &str) -> Option<String> {
    if let Some(dns) = shown
        .strip_prefix("DnsName(\"")
        .and_then(|s| s.strip_suffix("\")"))
    {
        return Some(dns.to_string());
    }
    let ip = shown.strip_prefix("IpAddress(")?.strip_suffix(')')?;
    Some(
        ip.parse::<IpAddr>()
            .map_or(ip.to_string(), |ip| ip.to_string()),
    )
}

/// An alert from the server.
fn alert_message(alert: AlertDescription, ctx: &TlsContext) -> String {
    use AlertDescription as A;
    let asked = ctx.asked.load(SeqCst);
    match (&ctx.cert, alert) {
        (None, A::CertificateRequired) | (None, A::HandshakeFailure) if asked => {
            "the server requires a client certificate: give --tls-cert and --tls-key, a \
             certificate signed by a CA the server trusts and its key"
                .to_string()
        }
        (None, A::CertificateRequired) => {
            "the server requires a client certificate: give --tls-cert and --tls-key".to_string()
        }
        (Some(cert), A::CertificateRequired) => format!(
            "the server requires a client certificate and could use none from --tls-cert {} \
             (it may not take that key's type): give a certificate it accepts",
            cert.display()
        ),
        (Some(cert), _) if asked && crate::tls_client::rejects_certificate(alert) => {
            let why = match alert {
                A::UnknownCA => "it does not trust the CA that signed it",
                A::CertificateExpired => "it has expired, or is not valid yet",
                A::CertificateRevoked => "it is revoked",
                A::AccessDenied => "it is valid, but not let in",
                _ => "it could not verify it",
            };
            format!(
                "the server rejected this client's certificate, --tls-cert {} ({alert:?}: \
                 {why}): give --tls-cert and --tls-key for a certificate signed by a CA the \
                 server trusts for clients",
                cert.display()
            )
        }
        (_, A::ProtocolVersion) => NO_VERSION.to_string(),
        (_, A::HandshakeFailure | A::InsufficientSecurity) => format!(
            "the server refused the TLS handshake ({alert:?}): it shares no cipher suite or key \
             exchange with this client (TLS 1.2 and 1.3 with ECDHE and AES-GCM or \
             ChaCha20-Poly1305), or wants what this client lacks; see the server's log"
        ),
        (_, A::UnrecognisedName) => format!(
            "the server has no certificate for the name {}: give the name it serves with \
             --tls-server-name",
            ctx.server_name
        ),
        (_, alert) => {
            format!("the server ended the TLS session with the alert {alert:?}: see its log")
        }
    }
}

/// A time as `2001-01-01 00:00:00 UTC`.
fn utc(time: UnixTime) -> String {
    let secs = time.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ctx(ca: Option<&str>, cert: Option<&str>, asked: bool) -> Arc<TlsContext> {
        Arc::new(TlsContext {
            target: "localhost:9443".into(),
            server_name: "localhost".into(),
            name_given: false,
            ca: ca.map(PathBuf::from),
            system_roots: 100,
            cert: cert.map(PathBuf::from),
            asked: Arc::new(AtomicBool::new(asked)),
        })
    }

    fn message(error: Error, ctx: Arc<TlsContext>) -> String {
        let m = TlsFailure {
            cause: TlsCause::Refused {
                error,
                in_handshake: true,
                plain: Some("Welcome!".into()),
            },
            ctx,
        }
        .message();
        assert!(!m.contains('\n'), "{m}");
        m
    }

    #[test]
    fn a_handshake_timeout_is_a_timeout_and_the_rest_tls() {
        let timeout = TlsFailure {
            cause: TlsCause::Timeout {
                secs: 5.0,
                flag: "--connect-timeout",
            },
            ctx: ctx(None, None, false),
        };
        assert_eq!(timeout.code(), EXIT_TIMEOUT);
        let m = timeout.message();
        assert!(
            m.contains("for 5 s during the TLS handshake") && m.contains("Raise --connect-timeout"),
            "{m}"
        );
        let closed = TlsFailure {
            cause: TlsCause::Closed { reset: true },
            ctx: ctx(None, None, false),
        };
        assert_eq!(closed.code(), EXIT_TLS);
        assert!(
            closed
                .message()
                .starts_with("the server reset the connection during the TLS handshake")
        );
    }

    #[test]
    fn dates_are_shown_in_utc() {
        let at = |secs| utc(UnixTime::since_unix_epoch(Duration::from_secs(secs)));
        assert_eq!(at(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(at(978_307_200), "2001-01-01 00:00:00 UTC");
        assert_eq!(at(951_782_400 + 3661), "2000-02-29 01:01:01 UTC");
        assert_eq!(at(4_102_444_799), "2099-12-31 23:59:59 UTC");
    }

    #[test]
    fn presented_names_read_as_people_write_them() {
        assert_eq!(
            presented_name("DnsName(\"localhost\")").as_deref(),
            Some("localhost")
        );
        assert_eq!(
            presented_name("IpAddress(127.0.0.1)").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(presented_name("IpAddress(::1)").as_deref(), Some("::1"));
        assert_eq!(presented_name("DirectoryName"), None);
    }

    #[test]
    fn each_failure_names_its_fix() {
        let m = message(
            Error::InvalidMessage(InvalidMessage::InvalidContentType),
            ctx(None, None, false),
        );
        assert!(
            m.contains("does not speak TLS")
                && m.contains("\"Welcome!\"")
                && m.contains("drop --tls"),
            "{m}"
        );
        let m = message(
            CertificateError::UnknownIssuer.into(),
            ctx(None, None, false),
        );
        assert!(m.contains("--tls-ca FILE") && m.contains("ca.pem"), "{m}");
        let m = message(
            CertificateError::UnknownIssuer.into(),
            ctx(Some("/x/ca.pem"), None, false),
        );
        assert!(m.contains("the CA in --tls-ca /x/ca.pem"), "{m}");
        let m = message(
            Error::AlertReceived(AlertDescription::HandshakeFailure),
            ctx(None, None, true),
        );
        assert!(
            m.starts_with(
                "the server requires a client certificate: give --tls-cert and --tls-key"
            ),
            "{m}"
        );
        let m = message(
            Error::AlertReceived(AlertDescription::HandshakeFailure),
            ctx(None, None, false),
        );
        assert!(m.contains("refused the TLS handshake"), "{m}");
        let m = message(
            Error::AlertReceived(AlertDescription::UnknownCA),
            ctx(None, Some("/x/client.pem"), true),
        );
        assert!(
            m.contains("rejected this client's certificate, --tls-cert /x/client.pem")
                && m.contains("does not trust the CA"),
            "{m}"
        );
    }

    #[test]
    fn a_wrong_name_lists_the_names_the_certificate_has() {
        let error = CertificateError::NotValidForNameContext {
            expected: rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            presented: vec![
                "DnsName(\"wrong.example\")".into(),
                "IpAddress(10.0.0.1)".into(),
            ],
        };
        let m = message(error.into(), ctx(None, None, false));
        assert_eq!(
            m,
            "the server's certificate is not valid for localhost (it is for wrong.example, \
             10.0.0.1): connect with one of those names, or give --tls-server-name with one"
        );
    }
}
