//! The client side of TLS, as `tcp-hello client` and `tcp-hello bench` both set it up
//! from the same options ([`TlsClientConfig`]): the trust roots,
//! the client certificate for mutual TLS, and the name the server's certificate must
//! have. Every error is one line naming the flag, the file and the fix.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{debug, warn};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};

use crate::config::TlsClientConfig;
use crate::pem;

/// A client's TLS configuration, read from its flags.
#[derive(Debug)]
pub struct ClientTls {
    /// TLS 1.2 and 1.3 with ring, the trust roots, and the client certificate if any;
    /// the caller may still change it (bench turns resumption off).
    pub config: ClientConfig,
    /// The name the server's certificate must have.
    pub server_name: ServerName<'static>,
    /// That name, as text, for messages.
    pub name: String,
    /// Whether `--tls-server-name` gave it (else it is the `--connect` host).
    pub name_given: bool,
    /// `--tls-ca`, or `None` for the system's trust roots.
    pub ca: Option<PathBuf>,
    /// How many of the system's trust roots could be used (0 with `--tls-ca`).
    pub system_roots: usize,
    /// Set once a server has asked for a client certificate: tells a refusal of the
    /// client's certificate from other alerts.
    pub asked: Arc<AtomicBool>,
}

/// Without `--tls`, the first TLS option given (besides `extra`, the caller's own), as
/// the error to report: ignoring it would talk plain text to a server the user thinks
/// is TLS (e.g. when `TCP_HELLO_TLS=0` turned TLS off).
pub fn options_without_tls(tls: &TlsClientConfig, extra: &[(&str, bool)]) -> Option<String> {
    let given = [
        ("--tls-ca", tls.ca.is_some()),
        ("--tls-cert", tls.cert.is_some()),
        ("--tls-key", tls.key.is_some()),
        ("--tls-server-name", tls.server_name.is_some()),
        ("--tls-alpn", !tls.alpn.is_empty()),
    ];
    given
        .iter()
        .chain(extra)
        .find(|(_, set)| *set)
        .map(|(flag, _)| {
            format!("{flag} is for TLS, which is off: add --tls (or set TCP_HELLO_TLS=1)")
        })
}

/// Reads `--tls-ca`, `--tls-cert` and `--tls-key`, and the name to check (`host`, the
/// `--connect` host, unless `--tls-server-name` is given).
pub fn client_tls(tls: &TlsClientConfig, host: &str) -> Result<ClientTls, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (roots, system_roots) = trust_roots(tls.ca.as_deref())?;
    let key = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Some(client_key(cert, key, &provider)?),
        (None, None) => None,
        // The command line's parser requires both or neither; say so all the same.
        _ => return Err("--tls-cert and --tls-key go together: give both, or neither".into()),
    };
    let given = tls.server_name.as_deref().map(str::trim);
    let name = given.unwrap_or(host).to_string();
    let server_name = ServerName::try_from(name.clone()).map_err(|_| match given {
        Some(_) => format!(
            "--tls-server-name {name:?} is neither a DNS name nor an IP address: give a name \
             the server's certificate has, e.g. localhost"
        ),
        None => format!(
            "{name:?} cannot be checked against a certificate (it is neither a DNS name nor an \
             IP address): give the name the server's certificate has with --tls-server-name"
        ),
    })?;
    let asked = Arc::new(AtomicBool::new(false));
    let resolver = ClientCert {
        key,
        asked: Arc::clone(&asked),
    };
    if let Some(bad) = tls.alpn.iter().find(|p| p.is_empty() || p.len() > 255) {
        return Err(format!(
            "--tls-alpn {bad:?}: an ALPN protocol name is 1 to 255 bytes (h2, http/1.1, ...)"
        ));
    }
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS cannot be set up: {e}"))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(ClientTls {
        config,
        server_name,
        name,
        name_given: given.is_some(),
        ca: tls.ca.clone(),
        system_roots,
        asked,
    })
}

/// The trust roots: the certificates of `ca`, or else the system's (and how many of
/// those could be used). A system without roots is not refused here: every handshake
/// then fails as an unknown issuer, whose message says so and names --tls-ca.
fn trust_roots(ca: Option<&Path>) -> Result<(RootCertStore, usize), String> {
    let mut roots = RootCertStore::empty();
    let Some(path) = ca else {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            debug!("system trust roots: {e}");
        }
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        debug!("{added} system trust roots ({ignored} unusable)");
        return Ok((roots, added));
    };
    let certs = pem::certificates(path).map_err(|e| format!("--tls-ca {e}"))?;
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            format!(
                "--tls-ca {}: certificate {} in it cannot be a trust root ({e}): give the \
                 certificate of the CA that signed the server's",
                path.display(),
                i + 1
            )
        })?;
    }
    Ok((roots, 0))
}

/// This client's certificate and key, checked to belong together.
fn client_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let chain = pem::certificates(cert).map_err(|e| format!("--tls-cert {e}"))?;
    let der = pem::private_key(key).map_err(|e| format!("--tls-key {e}"))?;
    if pem::readable_by_others(key) {
        warn!(
            "--tls-key {}: other users can read this private key; chmod 600 it",
            key.display()
        );
    }
    CertifiedKey::from_der(chain, der, provider)
        .map(Arc::new)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "--tls-key {}: not the key of the certificate in --tls-cert {}: give the key \
                 that was made with that certificate",
                key.display(),
                cert.display()
            ),
            e => format!(
                "--tls-key {}: this key cannot be used ({e}): give an ECDSA (P-256 or P-384), \
                 Ed25519 or RSA key",
                key.display()
            ),
        })
}

/// Offers this client's certificate, if it has one, to a server that asks, and notes
/// that it asked: a refusal then is about the client's certificate.
#[derive(Debug)]
struct ClientCert {
    key: Option<Arc<CertifiedKey>>,
    asked: Arc<AtomicBool>,
}

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.asked.store(true, Ordering::SeqCst);
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}
