//! `--tls`: the client configuration (trust roots, client certificate, server name,
//! session cache), a connection's TLS I/O over its non-blocking socket, and what a
//! failed handshake is called.
//!
//! A connection's [`ClientConnection`] sits beside its socket and is driven by the
//! worker's event loop: on every event the worker hands rustls what the socket has
//! (`read_tls`, `process_new_packets`) until the socket would block, takes the plaintext
//! from `reader()`, gives `writer()` the names, and writes the records rustls made
//! (`write_tls`) until they are all out or the socket would block. The socket is
//! registered for both readable and writable events from the start (edge-triggered),
//! so records left queued go out on the next writable edge without re-registering.

use super::stream::Stream;
use std::fmt;
use std::io::{self, Read};

use rustls::NamedGroup;
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12ClientSessionValue,
    Tls13ClientSessionValue,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use std::sync::atomic::{AtomicBool, Ordering};

use std::sync::Arc;

use super::fail::Fail;
use crate::address::HostPort;
use crate::config::BenchConfig;
use crate::tls_failure::{self, Kind, TlsContext};

/// The first byte of a TLS record a server may send first: a handshake record, or an
/// alert (a refusal of the ClientHello).
const FIRST_RECORDS: [u8; 2] = [0x16, 0x15];
/// How much of a server's first bytes is kept to show what it said instead of TLS.
const PEEK: usize = 64;

/// Everything a TLS connection needs, read from the command line before the run.
#[derive(Debug)]
pub(super) struct TlsSetup {
    /// Shared by every connection of every worker: with `--tls-resume`, so is its
    /// session cache.
    pub(super) config: Arc<ClientConfig>,
    /// The name the server's certificate must have.
    pub(super) server_name: ServerName<'static>,
    /// `--tls-resume`.
    pub(super) resume: bool,
    /// With `--tls-resume`, the shared session cache, which says when it has a session.
    pub(super) sessions: Option<Arc<WatchedSessions>>,
    /// What the set-up was, to explain a failure.
    ctx: TlsContext,
}

/// `--tls` and its options read: `None` without `--tls`. A file that cannot be used,
/// a name that cannot be checked, or a TLS option without `--tls`, is an
/// `InvalidInput` error of one line that names the flag and the file.
pub(super) fn setup(args: &BenchConfig, target: &HostPort) -> io::Result<Option<TlsSetup>> {
    let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    let tls = &args.tls;
    if !tls.enabled {
        let resume = [("--tls-resume", args.tls_resume)];
        return match crate::tls_client::options_without_tls(tls, &resume) {
            Some(message) => Err(invalid(message)),
            None => Ok(None),
        };
    }
    let made = crate::tls_client::client_tls(tls, &target.host).map_err(invalid)?;
    let ctx = TlsContext::new(target.to_string(), &made, tls.cert.clone());
    let mut config = made.config;
    let sessions = if args.tls_resume {
        let sessions = Arc::new(WatchedSessions::default());
        config.resumption = Resumption::store(Arc::clone(&sessions) as _);
        Some(sessions)
    } else {
        // rustls keeps sessions by default; without them every handshake is a full one,
        // which is what a load test of handshakes usually means.
        config.resumption = Resumption::disabled();
        None
    };
    Ok(Some(TlsSetup {
        config: Arc::new(config),
        server_name: made.server_name,
        resume: args.tls_resume,
        sessions,
        ctx,
    }))
}

/// rustls's in-memory session cache (as many sessions as rustls keeps by default),
/// noting when a session to resume has arrived: in TLS 1.3 the tickets come after the
/// handshake, possibly after the welcome, so a finished handshake does not yet mean a
/// session to resume.
#[derive(Debug)]
pub(super) struct WatchedSessions {
    cache: ClientSessionMemoryCache,
    stored: AtomicBool,
}

impl Default for WatchedSessions {
    fn default() -> Self {
        WatchedSessions {
            cache: ClientSessionMemoryCache::new(256),
            stored: AtomicBool::new(false),
        }
    }
}

impl WatchedSessions {
    /// A session (a TLS 1.3 ticket, a TLS 1.2 session) has been stored.
    pub(super) fn has_one(&self) -> bool {
        self.stored.load(Ordering::Acquire)
    }
}

impl ClientSessionStore for WatchedSessions {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.cache.set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.cache.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.cache.set_tls12_session(server_name, value);
        self.stored.store(true, Ordering::Release);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.cache.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.cache.remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.cache.insert_tls13_ticket(server_name, value);
        self.stored.store(true, Ordering::Release);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.cache.take_tls13_ticket(server_name)
    }
}

impl TlsSetup {
    /// A new connection's TLS state; its ClientHello is ready to send.
    pub(super) fn connect(&self) -> Result<Box<ClientConnection>, rustls::Error> {
        ClientConnection::new(Arc::clone(&self.config), self.server_name.clone()).map(Box::new)
    }

    /// The kind and the example of a failure whose cause is `e`. `in_handshake`: before
    /// the handshake was done (after it, an alert refuses the client's certificate in
    /// TLS 1.3, but nothing is plain text).
    pub(super) fn failure(&self, e: &rustls::Error, in_handshake: bool) -> (Fail, String) {
        let (kind, example) = tls_failure::explain(e, in_handshake, None, &self.ctx);
        (fail_kind(kind), example)
    }
}

/// The bench's kind of a TLS failure.
fn fail_kind(kind: Kind) -> Fail {
    match kind {
        Kind::UnknownIssuer => Fail::TlsUnknownIssuer,
        Kind::BadName => Fail::TlsBadName,
        Kind::Expired => Fail::TlsExpired,
        Kind::ClientCertRequired => Fail::TlsClientCertRequired,
        Kind::ClientCertRefused => Fail::TlsClientCertRefused,
        Kind::NotTls => Fail::TlsNotTls,
        Kind::Other => Fail::TlsOther,
    }
}

/// What a handshake agreed on, as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TlsParams {
    /// `TLSv1_3`, `TLSv1_2`.
    pub(super) version: String,
    /// `TLS13_AES_256_GCM_SHA384`, ...
    pub(super) cipher_suite: String,
    /// `X25519`, ...; none when a TLS 1.2 session was resumed.
    pub(super) key_exchange: Option<String>,
}

/// What `tls`'s finished handshake agreed on.
pub(super) fn params(tls: &ClientConnection) -> TlsParams {
    TlsParams {
        version: tls
            .protocol_version()
            .map_or_else(|| "TLS".to_string(), |v| format!("{v:?}")),
        cipher_suite: tls
            .negotiated_cipher_suite()
            .map_or_else(String::new, |s| format!("{:?}", s.suite())),
        key_exchange: tls
            .negotiated_key_exchange_group()
            .map(|g| format!("{:?}", g.name())),
    }
}

/// What a server whose first bytes cannot begin TLS is told (what it said, and the
/// fix): `None` when they could begin TLS (`peeked` is what `peek` found; never empty).
pub(super) fn not_tls(peeked: &[u8]) -> Option<String> {
    if peeked.first().is_some_and(|b| FIRST_RECORDS.contains(b)) {
        return None;
    }
    Some(tls_failure::not_tls(
        tls_failure::plain_text(peeked).as_deref(),
    ))
}

/// The socket as rustls reads it, noting a short read: then the socket is empty, and
/// new data will raise a new event.
struct Source<'a> {
    sock: &'a mut Stream,
    short: bool,
}

impl Read for Source<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

/// A TLS failure as the `io::Error` the connection's I/O returns (rustls's own
/// convention: `InvalidData` around the `rustls::Error`).
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The `rustls::Error` inside an error from [`read`], [`send`] or [`handshake`].
pub(super) fn cause(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Reads plaintext into `buf` (not empty): what rustls holds, else what the socket has.
/// Returns how much (0: the server closed) and whether the socket was found empty with
/// nothing left in rustls, so that only a new event brings more. `WouldBlock` when
/// there is nothing yet.
pub(super) fn read(
    sock: &mut Stream,
    tls: &mut ClientConnection,
    buf: &mut [u8],
) -> io::Result<(usize, bool)> {
    let mut drained = false;
    loop {
        match tls.reader().read(buf) {
            Ok(n) => return Ok((n, drained && n < buf.len())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // The TCP close without TLS's close_notify: many servers close that way, and
            // the protocol's own ends (`Bye!`, the notices) say whether it was expected.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok((0, true)),
            Err(e) => return Err(e),
        }
        if drained {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut source = Source {
            sock: &mut *sock,
            short: false,
        };
        // Ok(0) is the server's FIN: `reader()` then hands out what is left, then the end.
        if tls.read_tls(&mut source)? > 0 {
            drained = source.short;
        }
        process(sock, tls)?;
    }
}

/// Processes the records read, sending what rustls answers (an alert, a key update).
fn process(sock: &mut Stream, tls: &mut ClientConnection) -> io::Result<()> {
    match tls.process_new_packets() {
        Ok(_) => send(sock, tls).map(drop),
        Err(e) => {
            // rustls has queued an alert that says why: send it if the socket takes it.
            let _ = send(sock, tls);
            Err(tls_error(e))
        }
    }
}

/// Writes the records rustls has queued: true when all are out, false when the socket
/// would block (the next writable event goes on).
pub(super) fn send(sock: &mut Stream, tls: &mut ClientConnection) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(0) => return Err(io::Error::other("the socket accepted no bytes")),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Hands rustls `plain` and sends the records it makes. Returns how much of `plain`
/// it took (0 when its queue is full and the socket would block), whether every record
/// went out, and an error only when the socket failed.
pub(super) fn write(
    sock: &mut Stream,
    tls: &mut ClientConnection,
    plain: &[u8],
) -> io::Result<(usize, bool)> {
    use std::io::Write as _;
    // rustls takes plaintext up to its buffer limit (64 KiB of records by default),
    // which bounds what a connection queues however large its batch.
    let taken = tls.writer().write(plain)?;
    Ok((taken, send(sock, tls)?))
}

/// Moves a handshake on as far as the socket allows: sends what rustls has, reads what
/// the server sent. `Ok(true)` once the handshake is done, `Ok(false)` to wait for the
/// next event. A server whose first bytes cannot begin TLS is an `InvalidData` error
/// holding [`NotTls`].
pub(super) fn handshake(
    sock: &mut Stream,
    tls: &mut ClientConnection,
    peeked: &mut bool,
) -> io::Result<bool> {
    loop {
        send(sock, tls)?;
        if !tls.is_handshaking() {
            return Ok(true);
        }
        if !*peeked {
            let mut first = [0; PEEK];
            match sock.peek(&mut first) {
                Ok(0) => return Err(closed()),
                Ok(n) => {
                    if let Some(said) = not_tls(&first[..n]) {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, NotTls(said)));
                    }
                    *peeked = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        match tls.read_tls(sock) {
            Ok(0) => return Err(closed()),
            Ok(_) => process(sock, tls)?,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The server closed the connection during the handshake.
fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the server closed the connection during the TLS handshake",
    )
}

/// The server's first bytes were not TLS: what it said.
#[derive(Debug)]
pub(super) struct NotTls(pub(super) String);

impl fmt::Display for NotTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotTls {}

/// The `NotTls` inside an error from [`handshake`].
pub(super) fn plain_text(e: &io::Error) -> Option<&NotTls> {
    e.get_ref()?.downcast_ref::<NotTls>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicBool;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    use rustls::{AlertDescription, CertificateError, InvalidMessage};

    #[test]
    fn plain_text_is_told_from_tls_by_its_first_byte() {
        assert_eq!(
            not_tls(b"Welcome!\r\nHello"),
            Some(
                "the server does not speak TLS on that port (it answered in plain text: \
                 \"Welcome!\"): drop --tls, or use the server's TLS port in --connect"
                    .to_string()
            )
        );
        let http = not_tls(b"HTTP/1.1 400 Bad Request\r\n").unwrap();
        assert!(
            http.contains("(it answered in plain text: \"HTTP/1.1 400 Bad Request\")"),
            "{http}"
        );
        assert_eq!(not_tls(&[0x16, 3, 3, 0, 90]), None);
        assert_eq!(not_tls(&[0x15, 3, 3, 0, 2, 2, 40]), None);
    }

    /// A set-up with no roots, for classifying errors: `cert` as if given.
    fn setup_for(cert: Option<&str>) -> TlsSetup {
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
        TlsSetup {
            config: Arc::new(config),
            server_name: ServerName::try_from("127.0.0.1").unwrap(),
            resume: false,
            sessions: None,
            ctx: TlsContext {
                target: "127.0.0.1:9443".into(),
                server_name: "127.0.0.1".into(),
                name_given: false,
                ca: Some("certs/ca.pem".into()),
                system_roots: 0,
                cert: cert.map(PathBuf::from),
                asked: Arc::new(AtomicBool::new(false)),
            },
        }
    }

    #[test]
    fn certificate_failures_say_what_is_wrong() {
        use rustls::Error as E;
        use rustls::pki_types::UnixTime;
        let setup = setup_for(None);
        let kind = |e: E| setup.failure(&e, true);
        let (k, detail) = kind(E::InvalidCertificate(CertificateError::UnknownIssuer));
        assert_eq!(k, Fail::TlsUnknownIssuer);
        assert!(
            detail.starts_with(
                "the server's certificate is not signed by the CA in --tls-ca certs/ca.pem \
                 (unknown issuer): give --tls-ca the CA that signed it"
            ),
            "{detail}"
        );
        let (k, detail) = kind(E::InvalidCertificate(
            CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("127.0.0.1").unwrap(),
                presented: vec!["DnsName(\"localhost\")".into(), "IpAddress(::1)".into()],
            },
        ));
        assert_eq!(k, Fail::TlsBadName);
        assert_eq!(
            detail,
            "the server's certificate is not valid for 127.0.0.1 (it is for localhost, ::1): \
             connect with one of those names, or give --tls-server-name with one"
        );
        let (k, detail) = kind(E::InvalidCertificate(CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(10 * 86_400)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(7 * 86_400)),
        }));
        assert_eq!(k, Fail::TlsExpired);
        assert!(
            detail.starts_with("the server's certificate expired on 1970-01-08 00:00:00 UTC"),
            "{detail}"
        );
        assert_eq!(
            kind(E::InvalidCertificate(CertificateError::NotValidYet)).0,
            Fail::TlsExpired
        );
        assert_eq!(
            kind(E::InvalidCertificate(CertificateError::BadSignature)).0,
            Fail::TlsOther
        );
        let not_tls = E::InvalidMessage(InvalidMessage::InvalidContentType);
        assert_eq!(setup.failure(&not_tls, true).0, Fail::TlsNotTls);
        // After the handshake a bad record is not a plain-text server.
        assert_eq!(setup.failure(&not_tls, false).0, Fail::TlsOther);
    }

    #[test]
    fn alerts_tell_a_missing_client_certificate_from_a_refused_one() {
        use rustls::Error as E;
        let alert = |setup: &TlsSetup, a| setup.failure(&E::AlertReceived(a), false).0;
        let without = setup_for(None);
        assert_eq!(
            alert(&without, AlertDescription::CertificateRequired),
            Fail::TlsClientCertRequired
        );
        // A TLS 1.2 server, or another library, may say it less exactly.
        assert_eq!(
            alert(&without, AlertDescription::BadCertificate),
            Fail::TlsOther
        );
        without.ctx.asked.store(true, Relaxed);
        assert_eq!(
            alert(&without, AlertDescription::BadCertificate),
            Fail::TlsClientCertRequired
        );
        let with = setup_for(Some("alice.pem"));
        with.ctx.asked.store(true, Relaxed);
        for a in [
            AlertDescription::UnknownCA,
            AlertDescription::BadCertificate,
            AlertDescription::UnsupportedCertificate,
            AlertDescription::AccessDenied,
        ] {
            assert_eq!(alert(&with, a), Fail::TlsClientCertRefused, "{a:?}");
        }
        let (_, detail) = with.failure(&E::AlertReceived(AlertDescription::UnknownCA), false);
        assert!(
            detail.starts_with(
                "the server rejected this client's certificate, --tls-cert alice.pem \
                 (UnknownCA: it does not trust the CA that signed it)"
            ),
            "{detail}"
        );
        assert_eq!(
            alert(&with, AlertDescription::ProtocolVersion),
            Fail::TlsOther
        );
    }
}
