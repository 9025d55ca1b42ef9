//! The server's TLS: its configuration, read from PEM files at start-up and again on
//! SIGHUP, and the handshake, which runs on the connection's own thread, bounded by a
//! timeout, before [`connection::serve`] runs over the encrypted stream.
//!
//! rustls with the ring provider: TLS 1.2 and 1.3 only, no OpenSSL linked.

use std::fmt;
use std::io::{self, ErrorKind, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ProducesTickets, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    ServerConfig, ServerConnection, SignatureScheme,
};

use crate::connection::{self, CloseReason, Context, Peer, Summary};
use crate::pem;
use crate::protocol::{Facts, LogText, Who};
use crate::trace::ConnTrace;

/// Records of at most this much plaintext are queued for sending before a write waits
/// for the socket: what one large reply needs, not rustls's unbounded default.
const SEND_BUFFER_LIMIT: usize = 64 * 1024;

/// The most the handshake reads of one flight of the client's (its ClientHello; with
/// client certificates, its chain) before the server answers it. rustls alone would
/// buffer a handshake message of up to 64 KiB for a client that has proved nothing. A
/// real ClientHello is a few KiB, post-quantum key shares included (X25519MLKEM768's
/// is 1,216 bytes), and a client chain of a few certificates as much. 16 KiB exactly:
/// rustls's buffer grows 4 KiB a read and doubles its allocation, so that it then
/// stays a 16 KiB allocation; one byte more would make it 32 KiB.
pub const FLIGHT_LIMIT: usize = 16 * 1024;

/// The largest ClientHello taken: with its record's header and its own, a flight.
pub const CLIENT_HELLO_LIMIT: usize = FLIGHT_LIMIT - 5 - 4;

/// The files the server's TLS configuration is read from, at start-up and on reload.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// With mutual TLS: the CA that client certificates must chain to (PEM).
    pub client_ca: Option<PathBuf>,
    /// The application protocols (ALPN) offered, in order of preference; none: ALPN is
    /// not offered, and a client's list is ignored.
    pub alpn: Vec<String>,
}

/// The server's TLS configuration, swapped whole on reload: a connection takes the
/// configuration current when it starts and keeps it.
pub struct Tls {
    files: TlsFiles,
    config: RwLock<Arc<ServerConfig>>,
    /// Kept across reloads, so that a client's session ticket survives a certificate
    /// change.
    ticketer: Arc<dyn ProducesTickets>,
    /// The longest a handshake may take.
    pub handshake_timeout: Duration,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Reads the files and builds the configuration; the error is one line naming the
    /// file and the cause.
    pub fn load(files: TlsFiles, handshake_timeout: Duration) -> Result<Tls, String> {
        let ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| format!("cannot start TLS session tickets: {e}"))?;
        let config = build(&files, &ticketer)?;
        Ok(Tls {
            files,
            config: RwLock::new(Arc::new(config)),
            ticketer,
            handshake_timeout,
        })
    }

    /// The files, for messages.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the files again; on success new connections use them, and on failure the
    /// configuration in use stays. Open connections are never touched.
    pub fn reload(&self) -> Result<(), String> {
        let config = build(&self.files, &self.ticketer)?;
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
        Ok(())
    }

    /// The configuration for a new connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether clients must present a certificate (`--tls-client-ca`): then rustls sends
    /// nothing before it has verified one, so the welcome waits for the handshake's end.
    pub fn asks_client_certificate(&self) -> bool {
        self.files.client_ca.is_some()
    }
}

/// Builds a server configuration from the files.
fn build(files: &TlsFiles, ticketer: &Arc<dyn ProducesTickets>) -> Result<ServerConfig, String> {
    let certs = pem::certificates(&files.cert).map_err(|e| e.to_string())?;
    let key = pem::private_key(&files.key).map_err(|e| e.to_string())?;
    // On every load, SIGHUP's too: the key may have been replaced or its mode changed.
    if pem::readable_by_others(&files.key) {
        log::warn!(
            "{}: the private key is readable by other users; make it private with `chmod 600 {}`",
            files.key.display(),
            files.key.display()
        );
    }
    if let Some(bad) = files.alpn.iter().find(|p| p.is_empty() || p.len() > 255) {
        return Err(format!(
            "--tls-alpn {bad:?}: an ALPN protocol name is 1 to 255 bytes (h2, http/1.1, ...)"
        ));
    }
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in pem::certificates(ca).map_err(|e| e.to_string())? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("{}: cannot verify clients with it: {e}", ca.display()))?;
            builder.with_client_cert_verifier(Arc::new(ClientVerifier(verifier)))
        }
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "{} does not match {}: the key is not the certificate's; give the key made with it",
            files.key.display(),
            files.cert.display()
        ),
        e => format!(
            "{} with {}: not a usable certificate and key: {e}",
            files.cert.display(),
            files.key.display()
        ),
    })?;
    config.ticketer = Arc::clone(ticketer);
    config.alpn_protocols = files.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    // The welcome leaves with the server's first flight in TLS 1.3, a round trip before
    // the handshake ends (see `handshake`). rustls does it only without client
    // certificates: a client that must prove who it is hears nothing before it has.
    config.send_half_rtt_data = true;
    Ok(config)
}

/// webpki's verification of client certificates, and then what webpki leaves out for an
/// end-entity certificate: its key usage. The rule, as a TLS server applies it (and
/// `openssl verify -purpose sslclient`): a certificate without the keyUsage extension
/// may sign; one with it must list digitalSignature, for the client signs the handshake
/// with its key (CertificateVerify).
#[derive(Debug)]
struct ClientVerifier(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.0.verify_client_cert(end_entity, intermediates, now)?;
        may_sign(end_entity.as_ref()).map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.0.requires_raw_public_keys()
    }
}

/// Why a client certificate's key may not sign the handshake.
#[derive(Debug)]
struct KeyUsageError(String);

impl fmt::Display for KeyUsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyUsageError {}

/// Whether a client certificate's key usage lets its key sign (see [`ClientVerifier`]).
fn may_sign(der: &[u8]) -> Result<(), KeyUsageError> {
    use x509_cert::der::Decode;
    use x509_cert::ext::pkix::KeyUsage;
    let unreadable = |e: x509_cert::der::Error| {
        KeyUsageError(format!(
            "cannot read the client certificate's keyUsage ({e}); issue it again"
        ))
    };
    let cert = x509_cert::Certificate::from_der(der).map_err(unreadable)?;
    match cert.tbs_certificate().get_extension::<KeyUsage>() {
        Err(e) => Err(unreadable(e)),
        Ok(None) => Ok(()),
        Ok(Some((_, usage))) if usage.digital_signature() => Ok(()),
        Ok(Some(_)) => Err(KeyUsageError(
            "the client certificate's keyUsage lacks digitalSignature, which the client \
             signs the handshake with; issue it with digitalSignature"
                .to_string(),
        )),
    }
}

/// How a TLS connection ended before the protocol began.
#[derive(Debug)]
pub enum HandshakeError {
    /// The client sent nothing, or not enough, within the handshake timeout.
    Timeout,
    /// The client closed, or reset, during the handshake.
    Closed,
    /// The bytes were not an acceptable TLS handshake (plain text, an old version, an
    /// untrusted or missing client certificate, ...).
    Tls(rustls::Error),
    /// The server is shutting down.
    Shutdown,
    /// The client spoke plain text (its first byte cannot begin a TLS handshake).
    PlainText,
    /// The client's ClientHello announced more than [`CLIENT_HELLO_LIMIT`] bytes.
    ClientHelloTooLarge(usize),
    /// The client sent more than [`FLIGHT_LIMIT`] bytes without completing a flight.
    FlightTooLarge,
    /// Any other socket error.
    Io(io::Error),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Timeout => f.write_str("TLS handshake timed out"),
            HandshakeError::Closed => f.write_str("client closed during the TLS handshake"),
            // rustls shows the error of a check of its own as Debug.
            HandshakeError::Tls(rustls::Error::InvalidCertificate(CertificateError::Other(e))) => {
                write!(f, "TLS handshake failed: invalid peer certificate: {e}")
            }
            HandshakeError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            HandshakeError::Shutdown => f.write_str("server shutdown during the TLS handshake"),
            HandshakeError::PlainText => f.write_str("plain text on a TLS port"),
            HandshakeError::ClientHelloTooLarge(n) => write!(
                f,
                "TLS handshake refused: a ClientHello of {n} bytes, more than the \
                 {CLIENT_HELLO_LIMIT} taken"
            ),
            HandshakeError::FlightTooLarge => write!(
                f,
                "TLS handshake refused: more than {FLIGHT_LIMIT} bytes of handshake from \
                 the client before an answer"
            ),
            HandshakeError::Io(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

/// What the server learnt of a client in its handshake, for the log.
#[derive(Debug, Clone)]
pub struct Session {
    /// `TLSv1_3`, `TLSv1_2`.
    pub version: String,
    /// The client certificate's subject (its CN, or its first SAN), with mutual TLS.
    pub client: Option<String>,
    /// The handshake resumed an earlier session.
    pub resumed: bool,
    /// The welcome given to [`handshake`] is sent (or queued to be).
    pub welcomed: bool,
}

/// The first byte of every TLS handshake: a handshake record.
const HANDSHAKE_RECORD: u8 = 0x16;

/// What a client that speaks plain text to a TLS port is told, in plain text, before
/// the close (like nginx's "plain HTTP request was sent to HTTPS port").
pub const PLAIN_TEXT_NOTICE: &[u8] =
    b"ERROR this port speaks TLS: connect with TLS (tcp-hello client --tls, openssl s_client)\r\n";

/// Runs the handshake on `sock` within `timeout`, its reads and its writes alike,
/// leaving the socket's read timeout for the caller to set (the write timeout is
/// `ctx`'s again after a handshake that succeeds). The client's flights are taken up to
/// [`FLIGHT_LIMIT`] bytes each. A client whose first byte cannot begin a TLS handshake
/// (telnet, nc) is told so in plain text. `welcome`, the server's first words (empty: none to
/// send), leaves in TLS 1.3 with the server's first flight (half-RTT data), so that the
/// client has it as soon as its handshake ends and answers without waiting another round
/// trip. [`Session::welcomed`] says whether it did; if not (TLS 1.2, a HelloRetryRequest,
/// see [`welcome_in_first_flight`]) it is the caller's to send. rustls sends no half-RTT
/// data to a client asked for a certificate: then pass none.
pub fn handshake(
    sock: &TcpStream,
    config: Arc<ServerConfig>,
    timeout: Duration,
    ctx: &Context,
    welcome: &[u8],
) -> Result<(ServerConnection, Session), HandshakeError> {
    let mut conn = ServerConnection::new(config).map_err(HandshakeError::Tls)?;
    conn.set_buffer_limit(Some(SEND_BUFFER_LIMIT));
    let mut early = (!welcome.is_empty() && welcome.len() <= SEND_BUFFER_LIMIT).then_some(welcome);
    let mut welcomed = false;
    let deadline = Instant::now().checked_add(timeout);
    let mut out = Output {
        sock,
        deadline,
        waited: false,
    };
    let mut input = Input {
        sock,
        head: [0; 9],
        seen: 0,
        left: FLIGHT_LIMIT,
    };
    let mut first = true;
    while conn.is_handshaking() {
        if conn.wants_write() {
            match flush_tls(&mut conn, &mut out) {
                // Answered: the client's next flight may be as large as its first.
                Ok(()) => input.left = FLIGHT_LIMIT,
                // A signal (shutdown's): checked below, then the rest is sent.
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(write_failed(e)),
            }
        }
        if !conn.is_handshaking() {
            break;
        }
        if ctx.shutting_down.load(Ordering::Acquire) {
            return Err(HandshakeError::Shutdown);
        }
        if conn.wants_write() {
            continue;
        }
        let left = time_left(deadline);
        if left.is_zero() {
            return Err(HandshakeError::Timeout);
        }
        if input.left == 0 {
            return Err(HandshakeError::FlightTooLarge);
        }
        sock.set_read_timeout(Some(left))
            .map_err(HandshakeError::Io)?;
        match conn.read_tls(&mut input) {
            Ok(0) => return Err(HandshakeError::Closed),
            Ok(_) => {
                if first && input.head[0] != HANDSHAKE_RECORD {
                    let _ = out.write_all(PLAIN_TEXT_NOTICE);
                    return Err(HandshakeError::PlainText);
                }
                first = false;
                if let Some(n) = input.client_hello_len() {
                    if n > CLIENT_HELLO_LIMIT {
                        return Err(HandshakeError::ClientHelloTooLarge(n));
                    }
                }
                if let Err(e) = conn.process_new_packets() {
                    // rustls has queued an alert saying why: send it, then report.
                    let _ = flush_tls(&mut conn, &mut out);
                    return Err(HandshakeError::Tls(e));
                }
                // Within the limit, rustls takes all of the welcome.
                if welcome_in_first_flight(conn.protocol_version(), conn.handshake_kind()) {
                    if let Some(welcome) = early.take() {
                        welcomed = conn.writer().write(welcome).map_err(HandshakeError::Io)?
                            == welcome.len();
                    }
                }
            }
            Err(e) => retry(e)?,
        }
    }
    if out.waited {
        sock.set_write_timeout(ctx.write_timeout)
            .map_err(HandshakeError::Io)?;
    }
    // What rustls queued after its last message (TLS 1.3 session tickets, TLS 1.2's
    // Finished) leaves with the first bytes written (see `Encrypted`).
    let session = Session {
        version: conn
            .protocol_version()
            .map_or_else(|| "TLS".to_string(), |v| format!("{v:?}")),
        client: conn
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|leaf| subject(leaf.as_ref())),
        resumed: matches!(conn.handshake_kind(), Some(rustls::HandshakeKind::Resumed)),
        welcomed,
    };
    Ok((conn, session))
}

/// Whether, with the ClientHello just read, the welcome can go to rustls to leave
/// encrypted behind the server's first flight (TLS 1.3 half-RTT data). Only when rustls
/// has the keys for it: in TLS 1.3, and not after a HelloRetryRequest (they come with the
/// second ClientHello). Handed over sooner, rustls holds it in a plaintext queue whose
/// buffer, once made, the connection keeps for its life; then the
/// caller sends it after the handshake, as in TLS 1.2. (With client certificates rustls
/// sends no half-RTT data; the caller gives no welcome then.)
fn welcome_in_first_flight(
    version: Option<rustls::ProtocolVersion>,
    kind: Option<rustls::HandshakeKind>,
) -> bool {
    version == Some(rustls::ProtocolVersion::TLSv1_3)
        && kind != Some(rustls::HandshakeKind::FullWithHelloRetryRequest)
}

/// A read that failed during the handshake: `Ok` to try again (a signal, or a read
/// timeout within the deadline, which the loop checks), else why it ended.
fn retry(e: io::Error) -> Result<(), HandshakeError> {
    match e.kind() {
        ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut => Ok(()),
        _ => Err(closed_or_io(e)),
    }
}

/// A write that failed during the handshake: a wait past the deadline is its timeout.
fn write_failed(e: io::Error) -> HandshakeError {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => HandshakeError::Timeout,
        _ => closed_or_io(e),
    }
}

/// What is left before `deadline` (none: no end).
fn time_left(deadline: Option<Instant>) -> Duration {
    deadline.map_or(Duration::MAX, |d| {
        d.saturating_duration_since(Instant::now())
    })
}

/// The socket as the handshake reads it: it notes the first bytes (a TLS handshake
/// begins with [`HANDSHAKE_RECORD`], plain text from telnet or nc does not; then comes
/// the length of the ClientHello), and gives rustls no more than is `left` of the
/// client's flight, so that what rustls buffers is bounded before the client has
/// proved anything.
struct Input<'a> {
    sock: &'a TcpStream,
    /// The first record's header and the first handshake message's, as far as read.
    head: [u8; 9],
    seen: usize,
    /// Bytes the client may still send before the server answers.
    left: usize,
}

impl Input<'_> {
    /// The length the first handshake message announces, once its header is here, if it
    /// is a ClientHello.
    fn client_hello_len(&self) -> Option<usize> {
        const CLIENT_HELLO: u8 = 1;
        let h = &self.head;
        (self.seen == h.len() && h[0] == HANDSHAKE_RECORD && h[5] == CLIENT_HELLO)
            .then(|| usize::from(h[6]) << 16 | usize::from(h[7]) << 8 | usize::from(h[8]))
    }
}

impl io::Read for Input<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let len = buf.len().min(self.left);
        let mut sock = self.sock;
        let n = sock.read(&mut buf[..len])?;
        let noted = n.min(self.head.len() - self.seen);
        self.head[self.seen..self.seen + noted].copy_from_slice(&buf[..noted]);
        self.seen += noted;
        self.left -= n;
        Ok(n)
    }
}

/// The socket as the handshake writes to it: a write waits no longer than the time left
/// before the handshake's deadline, rather than the socket's write timeout, so that a
/// client that never reads the server's flight (a large certificate chain) holds the
/// thread no longer than one that never sends.
struct Output<'a> {
    sock: &'a TcpStream,
    deadline: Option<Instant>,
    /// The socket's write timeout was changed: the caller's is to be put back.
    waited: bool,
}

impl Write for Output<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(bytes)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // A flight nearly always fits in the socket's buffer: then it leaves without a
        // timeout to set.
        match socket2::SockRef::from(self.sock).send_vectored_with_flags(bufs, libc::MSG_DONTWAIT) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            sent => return sent,
        }
        let left = time_left(self.deadline);
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        self.sock.set_write_timeout(Some(left))?;
        self.waited = true;
        let mut sock = self.sock;
        sock.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn closed_or_io(e: io::Error) -> HandshakeError {
    match e.kind() {
        ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe
        | ErrorKind::UnexpectedEof => HandshakeError::Closed,
        _ => HandshakeError::Io(e),
    }
}

/// A certificate's subject for the log: its CN, or else its first SAN. The client chose
/// these names, so they are escaped as a client's line is: no newline, escape sequence
/// or bidirectional control reaches the log raw.
pub fn subject(der: &[u8]) -> Option<String> {
    use x509_cert::der::Decode;
    use x509_cert::ext::pkix::SubjectAltName;
    use x509_cert::ext::pkix::name::GeneralName;
    let escaped = |name: String| LogText(name.as_bytes()).to_string();
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let tbs = cert.tbs_certificate();
    if let Ok(Some(cn)) = tbs.subject().common_name() {
        return Some(escaped(String::from(cn)));
    }
    let (_, san) = tbs.get_extension::<SubjectAltName>().ok()??;
    san.0.iter().find_map(|name| match name {
        GeneralName::DnsName(dns) => Some(escaped(dns.to_string())),
        GeneralName::Rfc822Name(mail) => Some(escaped(mail.to_string())),
        GeneralName::IpAddress(ip) => ip_address(ip.as_bytes()).map(|ip| ip.to_string()),
        _ => None,
    })
}

/// An iPAddress SAN's octets as the address: 4 for IPv4, 16 for IPv6 (RFC 5280 4.2.1.6).
fn ip_address(octets: &[u8]) -> Option<std::net::IpAddr> {
    match octets.len() {
        4 => <[u8; 4]>::try_from(octets).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(octets)
            .ok()
            .map(std::net::IpAddr::from),
        _ => None,
    }
}

/// A TLS session over its socket, as [`connection::serve`] speaks over it. Unlike
/// `rustls::Stream`, a write sends whatever rustls had queued before it together with
/// its own record, in one `writev`: the TLS 1.3 session tickets left by the handshake
/// leave with the first reply (one segment, one wake-up of the client, instead of two).
struct Encrypted<'a> {
    conn: &'a mut ServerConnection,
    sock: &'a TcpStream,
}

impl Encrypted<'_> {
    /// Sends every queued record; `more`: the connection's last bytes, held back for
    /// the FIN (see [`connection::Transport::write_last`]).
    fn send_queued(&mut self, more: bool) -> io::Result<()> {
        while self.conn.wants_write() {
            if more {
                self.conn.write_tls(&mut Corked(self.sock))?;
            } else {
                self.conn.write_tls(&mut self.sock)?;
            }
        }
        Ok(())
    }

    /// Decrypts what [`ServerConnection::read_tls`] took in; on bad input, sends the
    /// alert that says why before failing, as `complete_io` does.
    fn process(&mut self) -> io::Result<()> {
        if let Err(e) = self.conn.process_new_packets() {
            let _ = self.send_queued(false);
            return Err(io::Error::new(ErrorKind::InvalidData, e));
        }
        Ok(())
    }

    /// Hands `bytes` to rustls, then sends what is queued. Once rustls holds the bytes
    /// they are written (`Ok`), so a failed send is reported by the next call, as
    /// `rustls::Stream` does: returning it here would have the caller send them twice.
    fn write_as(&mut self, bytes: &[u8], last: bool) -> io::Result<usize> {
        let mut n = self.conn.writer().write(bytes)?;
        if n == 0 && !bytes.is_empty() {
            // rustls's send buffer is at its limit: empty it first.
            self.send_queued(false)?;
            n = self.conn.writer().write(bytes)?;
        }
        if last && n == bytes.len() {
            // The farewell, the close_notify and (see `write_last`) the FIN leave
            // together.
            self.conn.send_close_notify();
        }
        let _ = self.send_queued(last);
        Ok(n)
    }
}

impl io::Read for Encrypted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.conn.wants_write() && self.conn.wants_read() {
            // Records are queued: the session tickets after the handshake, or what a
            // failed send left. When the client's next bytes are here already, the queue
            // leaves with the reply to them (one segment, not two).
            match self.conn.read_tls(&mut DontWait(self.sock)) {
                Ok(_) => self.process()?,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if self.conn.wants_read() {
            // Nothing for the caller yet: before the wait, the queue leaves.
            self.send_queued(false)?;
        }
        // One read may bring only part of a record. Unlike `rustls::Stream`, a call that
        // only wrote (the no_renegotiation alert that answers a TLS 1.2 renegotiation
        // request) goes on to read: stopping there would leave the reader with no
        // plaintext, whose `WouldBlock` the caller takes for the idle timeout. Only the
        // end of input reads and writes nothing.
        while self.conn.wants_read() {
            if self.conn.complete_io(&mut self.sock)? == (0, 0) {
                break;
            }
        }
        self.conn.reader().read(buf)
    }
}

impl Write for Encrypted<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.write_as(bytes, false)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_queued(false)
    }
}

impl connection::Transport for Encrypted<'_> {
    fn write_last(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.write_as(bytes, true)
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(timeout)
    }
}

/// A socket read that returns `WouldBlock` instead of waiting (`MSG_DONTWAIT`).
struct DontWait<'a>(&'a TcpStream);

impl io::Read for DontWait<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use nix::sys::socket::{MsgFlags, recv};
        use std::os::fd::AsRawFd;
        loop {
            match recv(self.0.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
                Err(nix::errno::Errno::EINTR) => continue,
                result => return result.map_err(io::Error::from),
            }
        }
    }
}

/// A socket whose writes are held back for what follows (`MSG_MORE`): the connection's
/// last records, which leave with the FIN that follows them.
struct Corked<'a>(&'a TcpStream);

impl Write for Corked<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(bytes)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        #[cfg(target_os = "linux")]
        {
            socket2::SockRef::from(self.0).send_vectored_with_flags(bufs, libc::MSG_MORE)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let mut sock = self.0;
            sock.write_vectored(bufs)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The protocol over an established TLS session, then the session's end: the server's
/// close_notify after its last bytes, as the TLS close of a graceful close.
/// `welcomed`: the length of the welcome the handshake sent, if it did; `who`: the
/// connection's facts, when the templates show them; `trace`: with `--trace`, where the
/// plaintext each way is shown.
pub fn serve(
    sock: &TcpStream,
    conn: &mut ServerConnection,
    ctx: &Context,
    peer: Peer,
    welcomed: Option<usize>,
    who: Option<Who>,
    trace: Option<&ConnTrace>,
) -> Summary {
    fn protocol<S: connection::Transport>(
        stream: S,
        ctx: &Context,
        peer: Peer,
        welcomed: Option<usize>,
        who: Option<Who>,
    ) -> Summary {
        match (who, welcomed) {
            (Some(who), welcomed) => connection::serve_who(stream, ctx, peer, who, welcomed),
            (None, Some(n)) => connection::serve_welcomed(stream, ctx, peer, n),
            (None, None) => connection::serve(stream, ctx, peer),
        }
    }
    let stream = Encrypted {
        conn: &mut *conn,
        sock,
    };
    let summary = match trace {
        Some(trace) => protocol(
            connection::Traced::new(stream, trace),
            ctx,
            peer,
            welcomed,
            who,
        ),
        None => protocol(stream, ctx, peer, welcomed, who),
    };
    if matches!(
        summary.reason,
        CloseReason::Exit
            | CloseReason::Idle
            | CloseReason::Shutdown
            | CloseReason::Lifetime
            | CloseReason::ClientClosed
    ) {
        // After `exit`, already sent with the farewell.
        conn.send_close_notify();
        let _ = flush_tls(conn, &mut &*sock);
    }
    summary
}

/// What an established session is, for the templates' facts: its version (`TLSv1.3`),
/// cipher suite, the server name the client asked for, the protocol agreed (ALPN), and
/// `client`, the client certificate's subject as [`Session::client`] has it.
pub fn facts<'a>(conn: &'a ServerConnection, client: Option<&'a str>) -> Facts<'a> {
    Facts {
        tls_version: conn.protocol_version().map(|v| match v {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "TLS",
        }),
        tls_cipher: conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str()),
        sni: conn.server_name().map(str::as_bytes),
        alpn: conn.alpn_protocol(),
        client_cn: client,
        proxied_by: None,
    }
}

/// Sends the records rustls has queued on `sock`.
pub fn send_queued(sock: &TcpStream, conn: &mut ServerConnection) -> io::Result<()> {
    flush_tls(conn, &mut &*sock)
}

/// Writes whatever TLS records are queued.
fn flush_tls(conn: &mut ServerConnection, io: &mut impl Write) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(io)?;
    }
    io.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_welcome_goes_with_the_first_flight_only_in_tls_1_3_without_a_retry() {
        use rustls::HandshakeKind::{Full, FullWithHelloRetryRequest, Resumed};
        use rustls::ProtocolVersion::{TLSv1_2, TLSv1_3};
        assert!(welcome_in_first_flight(Some(TLSv1_3), Some(Full)));
        assert!(welcome_in_first_flight(Some(TLSv1_3), Some(Resumed)));
        // After a HelloRetryRequest rustls has no keys for it until the second ClientHello.
        assert!(!welcome_in_first_flight(
            Some(TLSv1_3),
            Some(FullWithHelloRetryRequest)
        ));
        assert!(!welcome_in_first_flight(Some(TLSv1_2), Some(Full)));
        assert!(!welcome_in_first_flight(None, None));
    }

    /// A self-signed certificate's DER, made by `params` from rcgen's defaults.
    fn certificate(params: impl FnOnce(&mut rcgen::CertificateParams)) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::default();
        params(&mut p);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_subject_logged_is_escaped_as_a_clients_line_is() {
        use rcgen::{DistinguishedName, DnType, SanType};
        let hostile = "mallory\n[2026] INFO forged\x1b[31m\u{202E}txt";
        let cn = certificate(|p| p.distinguished_name.push(DnType::CommonName, hostile));
        assert_eq!(
            subject(&cn).unwrap(),
            r"mallory\n[2026] INFO forged\u{1b}[31m\u{202e}txt"
        );
        assert_eq!(
            subject(&cn).unwrap(),
            LogText(hostile.as_bytes()).to_string()
        );
        // No CN: the DNS SAN (ASCII only, as IA5String allows), escaped alike.
        let dns = certificate(|p| {
            p.distinguished_name = DistinguishedName::new();
            p.subject_alt_names = vec![SanType::DnsName("evil\nforged\x1b[2J".try_into().unwrap())];
        });
        assert_eq!(subject(&dns).unwrap(), r"evil\nforged\u{1b}[2J");
        let plain = certificate(|p| p.distinguished_name.push(DnType::CommonName, "alice"));
        assert_eq!(subject(&plain).unwrap(), "alice");
    }

    #[test]
    fn a_client_key_may_sign_without_key_usage_or_with_digital_signature_only() {
        use rcgen::KeyUsagePurpose::{
            ContentCommitment, CrlSign, DigitalSignature, KeyAgreement, KeyEncipherment,
        };
        for (usages, signs) in [
            (vec![], true),
            (vec![DigitalSignature], true),
            (vec![KeyEncipherment, DigitalSignature], true),
            (vec![CrlSign], false),
            (
                vec![KeyEncipherment, KeyAgreement, ContentCommitment],
                false,
            ),
        ] {
            let der = certificate(|p| {
                p.key_usages = usages.clone();
                // Without another extension rcgen writes none, keyUsage included.
                p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            });
            match may_sign(&der) {
                Ok(()) => assert!(signs, "{usages:?} may not sign"),
                Err(e) => {
                    assert!(!signs, "{usages:?}: {e}");
                    assert!(e.to_string().contains("lacks digitalSignature"), "{e}");
                }
            }
        }
        let e = may_sign(b"not a certificate").unwrap_err().to_string();
        assert!(
            e.starts_with("cannot read the client certificate's keyUsage"),
            "{e}"
        );
    }

    #[test]
    fn an_ip_address_san_is_logged_as_an_ip_address() {
        use rcgen::{DistinguishedName, SanType};
        for ip in ["10.1.2.3", "2001:db8::7"] {
            let der = certificate(|p| {
                p.distinguished_name = DistinguishedName::new();
                p.subject_alt_names = vec![SanType::IpAddress(ip.parse().unwrap())];
            });
            assert_eq!(subject(&der).unwrap(), ip);
        }
        assert_eq!(ip_address(&[10, 1, 2, 3, 0]), None);
    }

    #[test]
    fn missing_files_are_named() {
        let files = TlsFiles {
            cert: "/no/such/cert.pem".into(),
            key: "/no/such/key.pem".into(),
            client_ca: None,
            alpn: Vec::new(),
        };
        let e = Tls::load(files, Duration::from_secs(1)).unwrap_err();
        assert!(e.starts_with("/no/such/cert.pem: no such file"), "{e}");
    }
}
