//! Why a TLS connection to a server failed, as `tcp-hello client` and `tcp-hello bench`
//! both explain it: the kind of failure, and one line with its cause and its fix.
//!
//! The explanation matches rustls's typed errors ([`Error`], [`CertificateError`],
//! [`AlertDescription`]); the one piece of text read is the names a certificate
//! presents, which webpki hands over only as `Debug` strings.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use rustls::pki_types::UnixTime;
use rustls::{AlertDescription, CertificateError, Error, InvalidMessage, PeerIncompatible};

use crate::tls_client::ClientTls;

/// What a client knew of its TLS set-up, to say what to change when TLS fails.
#[derive(Debug)]
pub struct TlsContext {
    /// The server, as `--connect` gave it.
    pub target: String,
    /// The name the server's certificate must have.
    pub server_name: String,
    /// The name came from `--tls-server-name`, not from `--connect`.
    pub name_given: bool,
    /// `--tls-ca`.
    pub ca: Option<PathBuf>,
    /// How many of the system's trust roots could be used (without `--tls-ca`).
    pub system_roots: usize,
    /// `--tls-cert`.
    pub cert: Option<PathBuf>,
    /// Set when the server asked for a client certificate.
    pub asked: Arc<AtomicBool>,
}

impl TlsContext {
    /// The context of the set-up `tls` made from the flags, for the server `target`
    /// with the client certificate `cert` (`--tls-cert`).
    pub fn new(target: String, tls: &ClientTls, cert: Option<PathBuf>) -> TlsContext {
        TlsContext {
            target,
            server_name: tls.name.clone(),
            name_given: tls.name_given,
            ca: tls.ca.clone(),
            system_roots: tls.system_roots,
            cert,
            asked: Arc::clone(&tls.asked),
        }
    }
}

/// The kind of a TLS failure: what the bench counts, each with its own fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The server's certificate is not signed by a trusted CA.
    UnknownIssuer,
    /// The server's certificate is not for the name checked.
    BadName,
    /// The server's certificate has expired, or is not valid yet.
    Expired,
    /// The server wants a client certificate and got none it could use.
    ClientCertRequired,
    /// The server refused the client's certificate.
    ClientCertRefused,
    /// The server does not speak TLS.
    NotTls,
    /// Anything else.
    Other,
}

/// What rustls's `error` means, as a kind and one line with its cause and fix.
/// `in_handshake`: it came before the handshake was done (after it, nothing is plain
/// text); `plain`: the server's first bytes as text, when they read as text.
pub fn explain(
    error: &Error,
    in_handshake: bool,
    plain: Option<&str>,
    ctx: &TlsContext,
) -> (Kind, String) {
    match error {
        // The server's first bytes are not a TLS record: `Welcome!` is no content type.
        Error::InvalidMessage(
            InvalidMessage::InvalidContentType
            | InvalidMessage::UnknownProtocolVersion
            | InvalidMessage::MessageTooLarge
            | InvalidMessage::InvalidEmptyPayload,
        ) if in_handshake => (Kind::NotTls, not_tls(plain)),
        Error::InvalidCertificate(error) => certificate(error, ctx),
        Error::AlertReceived(alert) => alert_message(*alert, ctx),
        Error::PeerIncompatible(
            PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
            | PeerIncompatible::SupportedVersionsExtensionRequired,
        ) => (Kind::Other, NO_VERSION.to_string()),
        Error::PeerIncompatible(what) => (
            Kind::Other,
            format!(
                "the server and this client have no TLS parameters in common ({what:?}): this \
                 client speaks TLS 1.2 and 1.3 with ECDHE and AES-GCM or ChaCha20-Poly1305; \
                 see the server's TLS settings"
            ),
        ),
        error if in_handshake => (
            Kind::Other,
            format!(
                "the TLS handshake with {} failed: {error}; see the server's log",
                ctx.target
            ),
        ),
        error => (
            Kind::Other,
            format!("TLS failed: {error}; see the server's log"),
        ),
    }
}

/// The line for a server whose first bytes are not TLS; `plain` is what it said, when
/// that reads as text.
pub fn not_tls(plain: Option<&str>) -> String {
    let said = plain.map_or(String::new(), |text| {
        format!(" (it answered in plain text: {text:?})")
    });
    format!(
        "the server does not speak TLS on that port{said}: drop --tls, or use the server's \
         TLS port in --connect"
    )
}

/// A server's first bytes as text, when they are: up to the first line ending, every
/// byte printable ASCII.
pub fn plain_text(first: &[u8]) -> Option<String> {
    let line = first.split(|&b| b == b'\r' || b == b'\n').next()?;
    let printable = !line.is_empty() && line.iter().all(|b| (0x20..0x7f).contains(b));
    printable.then(|| String::from_utf8_lossy(line).into_owned())
}

const NO_VERSION: &str = "the server speaks no TLS version this client does (TLS 1.2 and 1.3): \
                          upgrade the server's TLS, or its settings";

/// The server's certificate was refused.
fn certificate(error: &CertificateError, ctx: &TlsContext) -> (Kind, String) {
    let name = &ctx.server_name;
    match error {
        CertificateError::UnknownIssuer => (
            Kind::UnknownIssuer,
            match &ctx.ca {
                Some(ca) => format!(
                    "the server's certificate is not signed by the CA in --tls-ca {} (unknown \
                     issuer): give --tls-ca the CA that signed it, e.g. the ca.pem that \
                     `tcp-hello cert` made with the server's certificate",
                    ca.display()
                ),
                None if ctx.system_roots == 0 => "the server's certificate cannot be checked: \
                     this system has no usable trust roots (unknown issuer): give the server's \
                     CA with --tls-ca FILE, e.g. the ca.pem of `tcp-hello cert`"
                    .to_string(),
                None => "the server's certificate is not signed by a CA this system trusts \
                         (unknown issuer): give the server's CA with --tls-ca FILE, e.g. the \
                         ca.pem of `tcp-hello cert`"
                    .to_string(),
            },
        ),
        CertificateError::NotValidForNameContext { presented, .. } => {
            let names: Vec<String> = presented.iter().filter_map(|p| presented_name(p)).collect();
            (Kind::BadName, wrong_name(name, &names, ctx.name_given))
        }
        CertificateError::NotValidForName => (Kind::BadName, wrong_name(name, &[], ctx.name_given)),
        CertificateError::ExpiredContext { time, not_after } => (
            Kind::Expired,
            format!(
                "the server's certificate expired on {} (this machine's clock says {}): renew \
                 it (e.g. with `tcp-hello cert`), or check this machine's clock",
                utc(*not_after),
                utc(*time)
            ),
        ),
        CertificateError::Expired => (
            Kind::Expired,
            "the server's certificate has expired: renew it (e.g. with `tcp-hello cert`), or \
             check this machine's clock"
                .to_string(),
        ),
        CertificateError::NotValidYetContext { time, not_before } => (
            Kind::Expired,
            format!(
                "the server's certificate is not valid before {} (this machine's clock says \
                 {}): check this machine's clock, or wait until then",
                utc(*not_before),
                utc(*time)
            ),
        ),
        CertificateError::NotValidYet => (
            Kind::Expired,
            "the server's certificate is not valid yet: check this machine's clock".to_string(),
        ),
        CertificateError::Revoked => (
            Kind::Other,
            "the server's certificate is revoked: the server needs a new one".to_string(),
        ),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => (
            Kind::Other,
            "the server's certificate is not one for a TLS server (its extended key usage \
             lacks serverAuth): give the server a server certificate"
                .to_string(),
        ),
        error => (
            Kind::Other,
            format!(
                "the server's certificate cannot be used ({error}): check it, e.g. with \
                 `openssl s_client -connect {}`",
                ctx.target
            ),
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

/// Whether an alert from the server is about the client's certificate (missing,
/// untrusted, expired, ...), as servers send them: TLS 1.3 servers refuse a client
/// certificate with one of these after the client's side of the handshake is done.
fn rejects_certificate(alert: AlertDescription) -> bool {
    use AlertDescription as A;
    matches!(
        alert,
        A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
            | A::DecryptError
            | A::HandshakeFailure
    )
}

/// An alert from the server. Only once the server has asked for a client certificate
/// is a refusal about that certificate.
fn alert_message(alert: AlertDescription, ctx: &TlsContext) -> (Kind, String) {
    use AlertDescription as A;
    let asked = ctx.asked.load(SeqCst);
    let refusal = asked && rejects_certificate(alert);
    match (&ctx.cert, alert) {
        (None, _) if refusal || (asked && alert == A::CertificateRequired) => (
            Kind::ClientCertRequired,
            "the server requires a client certificate: give --tls-cert and --tls-key, a \
             certificate signed by a CA the server trusts and its key"
                .to_string(),
        ),
        (None, A::CertificateRequired) => (
            Kind::ClientCertRequired,
            "the server requires a client certificate: give --tls-cert and --tls-key".to_string(),
        ),
        (Some(cert), A::CertificateRequired) => (
            Kind::ClientCertRequired,
            format!(
                "the server requires a client certificate and could use none from --tls-cert \
                 {} (it may not take that key's type): give a certificate it accepts",
                cert.display()
            ),
        ),
        (Some(cert), _) if refusal => {
            let why = match alert {
                A::UnknownCA => "it does not trust the CA that signed it",
                A::CertificateExpired => "it has expired, or is not valid yet",
                A::CertificateRevoked => "it is revoked",
                A::AccessDenied => "it is valid, but not let in",
                _ => "it could not verify it",
            };
            (
                Kind::ClientCertRefused,
                format!(
                    "the server rejected this client's certificate, --tls-cert {} ({alert:?}: \
                     {why}): give --tls-cert and --tls-key for a certificate signed by a CA \
                     the server trusts for clients",
                    cert.display()
                ),
            )
        }
        (_, A::ProtocolVersion) => (Kind::Other, NO_VERSION.to_string()),
        (_, A::HandshakeFailure | A::InsufficientSecurity) => (
            Kind::Other,
            format!(
                "the server refused the TLS handshake ({alert:?}): it shares no cipher suite \
                 or key exchange with this client (TLS 1.2 and 1.3 with ECDHE and AES-GCM or \
                 ChaCha20-Poly1305), or wants what this client lacks; see the server's log"
            ),
        ),
        (_, A::UnrecognisedName) => (
            Kind::Other,
            format!(
                "the server has no certificate for the name {}: give the name it serves with \
                 --tls-server-name",
                ctx.server_name
            ),
        ),
        (_, alert) => (
            Kind::Other,
            format!("the server ended the TLS session with the alert {alert:?}: see its log"),
        ),
    }
}

/// A time as `2001-01-01 00:00:00 UTC`; past what a calendar date holds (the year
/// 9999), as seconds since 1970.
fn utc(time: UnixTime) -> String {
    let secs = time.as_secs();
    i64::try_from(secs)
        .ok()
        .and_then(|secs| jiff::Timestamp::from_second(secs).ok())
        .map_or_else(
            || format!("{secs} s after 1970-01-01 UTC"),
            |at| at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use rustls::pki_types::ServerName;

    fn ctx(ca: Option<&str>, cert: Option<&str>, asked: bool) -> TlsContext {
        TlsContext {
            target: "localhost:9443".into(),
            server_name: "localhost".into(),
            name_given: false,
            ca: ca.map(PathBuf::from),
            system_roots: 100,
            cert: cert.map(PathBuf::from),
            asked: Arc::new(AtomicBool::new(asked)),
        }
    }

    /// The kind and the line of `error` in the handshake, checked to be one line.
    fn explained(error: Error, ctx: &TlsContext) -> (Kind, String) {
        let (kind, m) = explain(&error, true, Some("Welcome!"), ctx);
        assert!(!m.contains('\n'), "{m}");
        (kind, m)
    }

    fn message(error: Error, ctx: &TlsContext) -> String {
        explained(error, ctx).1
    }

    #[test]
    fn dates_are_shown_in_utc() {
        let at = |secs| utc(UnixTime::since_unix_epoch(Duration::from_secs(secs)));
        assert_eq!(at(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(at(978_307_200), "2001-01-01 00:00:00 UTC");
        assert_eq!(at(951_782_400 + 3661), "2000-02-29 01:01:01 UTC");
        assert_eq!(at(4_102_444_799), "2099-12-31 23:59:59 UTC");
        assert_eq!(at(u64::MAX), format!("{} s after 1970-01-01 UTC", u64::MAX));
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
    fn a_plain_text_answer_is_shown_up_to_its_line_ending() {
        assert_eq!(
            plain_text(b"Welcome!\r\nHello").as_deref(),
            Some("Welcome!")
        );
        assert_eq!(
            plain_text(b"ERROR server busy\n").as_deref(),
            Some("ERROR server busy")
        );
        assert_eq!(
            plain_text(b"HTTP/1.1 400 Bad Request\r\n").as_deref(),
            Some("HTTP/1.1 400 Bad Request")
        );
        assert_eq!(plain_text(b"\x15\x03\x03\x00\x02\x02\x28"), None);
        assert_eq!(plain_text(&[0x16, 3, 3, 0, 90]), None);
        assert_eq!(plain_text(b"\r\n"), None);
        assert_eq!(plain_text(b"caf\xc3\xa9\n"), None);
        assert_eq!(
            not_tls(None),
            "the server does not speak TLS on that port: drop --tls, or use the server's TLS \
             port in --connect"
        );
    }

    #[test]
    fn each_failure_names_its_fix() {
        let (kind, m) = explained(
            Error::InvalidMessage(InvalidMessage::InvalidContentType),
            &ctx(None, None, false),
        );
        assert_eq!(kind, Kind::NotTls);
        assert!(
            m.contains("does not speak TLS")
                && m.contains("\"Welcome!\"")
                && m.contains("drop --tls"),
            "{m}"
        );
        let (kind, m) = explained(
            CertificateError::UnknownIssuer.into(),
            &ctx(None, None, false),
        );
        assert_eq!(kind, Kind::UnknownIssuer);
        assert!(m.contains("--tls-ca FILE") && m.contains("ca.pem"), "{m}");
        let m = message(
            CertificateError::UnknownIssuer.into(),
            &ctx(Some("/x/ca.pem"), None, false),
        );
        assert!(m.contains("the CA in --tls-ca /x/ca.pem"), "{m}");
        let m = message(
            Error::AlertReceived(AlertDescription::HandshakeFailure),
            &ctx(None, None, true),
        );
        assert!(
            m.starts_with(
                "the server requires a client certificate: give --tls-cert and --tls-key"
            ),
            "{m}"
        );
        let m = message(
            Error::AlertReceived(AlertDescription::HandshakeFailure),
            &ctx(None, None, false),
        );
        assert!(m.contains("refused the TLS handshake"), "{m}");
        let m = message(
            Error::AlertReceived(AlertDescription::UnknownCA),
            &ctx(None, Some("/x/client.pem"), true),
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
            expected: ServerName::try_from("localhost").unwrap(),
            presented: vec![
                "DnsName(\"wrong.example\")".into(),
                "IpAddress(10.0.0.1)".into(),
            ],
        };
        let (kind, m) = explained(error.into(), &ctx(None, None, false));
        assert_eq!(kind, Kind::BadName);
        assert_eq!(
            m,
            "the server's certificate is not valid for localhost (it is for wrong.example, \
             10.0.0.1): connect with one of those names, or give --tls-server-name with one"
        );
    }

    #[test]
    fn certificate_failures_are_of_their_kind() {
        let kind = |e: CertificateError| explained(e.into(), &ctx(None, None, false)).0;
        let at = |days: u64| UnixTime::since_unix_epoch(Duration::from_secs(days * 86_400));
        let m = message(
            CertificateError::ExpiredContext {
                time: at(10),
                not_after: at(7),
            }
            .into(),
            &ctx(None, None, false),
        );
        assert!(
            m.starts_with(
                "the server's certificate expired on 1970-01-08 00:00:00 UTC (this machine's \
                 clock says 1970-01-11 00:00:00 UTC): renew it"
            ),
            "{m}"
        );
        assert_eq!(kind(CertificateError::Expired), Kind::Expired);
        assert_eq!(kind(CertificateError::NotValidYet), Kind::Expired);
        assert_eq!(kind(CertificateError::NotValidForName), Kind::BadName);
        assert_eq!(kind(CertificateError::BadSignature), Kind::Other);
        assert_eq!(kind(CertificateError::Revoked), Kind::Other);
        // After the handshake a bad record is not a plain-text server.
        let bad_record = Error::InvalidMessage(InvalidMessage::InvalidContentType);
        let (kind, m) = explain(&bad_record, false, None, &ctx(None, None, false));
        assert_eq!(kind, Kind::Other);
        assert!(m.starts_with("TLS failed: "), "{m}");
    }

    #[test]
    fn alerts_tell_a_missing_client_certificate_from_a_refused_one() {
        let kind = |ctx: &TlsContext, a| explain(&Error::AlertReceived(a), false, None, ctx).0;
        let without = ctx(None, None, false);
        assert_eq!(
            kind(&without, AlertDescription::CertificateRequired),
            Kind::ClientCertRequired
        );
        // A TLS 1.2 server, or another library, may say it less exactly.
        assert_eq!(
            kind(&without, AlertDescription::BadCertificate),
            Kind::Other
        );
        without.asked.store(true, SeqCst);
        assert_eq!(
            kind(&without, AlertDescription::BadCertificate),
            Kind::ClientCertRequired
        );
        let with = ctx(None, Some("alice.pem"), true);
        for a in [
            AlertDescription::UnknownCA,
            AlertDescription::BadCertificate,
            AlertDescription::UnsupportedCertificate,
            AlertDescription::AccessDenied,
        ] {
            assert_eq!(kind(&with, a), Kind::ClientCertRefused, "{a:?}");
        }
        assert_eq!(
            kind(&with, AlertDescription::CertificateRequired),
            Kind::ClientCertRequired
        );
        assert_eq!(kind(&with, AlertDescription::ProtocolVersion), Kind::Other);
    }
}
