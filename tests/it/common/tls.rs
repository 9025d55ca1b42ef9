//! Certificates for the TLS tests, made at run time with rcgen into a fresh temporary
//! directory (removed on drop), so that no key is ever committed.

use super::{Server, temp_dir};

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, date_time_ymd,
};

/// A certificate file and its key file.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Every certificate the TLS tests use, as PEM files in `dir`.
#[derive(Debug)]
pub struct Certs {
    /// Where they are; removed with them when `Certs` is dropped.
    pub dir: PathBuf,
    _temp: tempfile::TempDir,
    /// The test CA's certificate (`ca.pem`).
    pub ca: PathBuf,
    /// The test CA's private key (`ca-key.pem`), to sign with another tool.
    pub ca_key: PathBuf,
    /// For `localhost`, `127.0.0.1` and `::1`, signed by the CA.
    pub server: Pair,
    /// For the same names as `server`, signed by the CA: what a renewal would bring.
    pub renewed: Pair,
    /// A client certificate signed by the CA, for `alice`.
    pub client: Pair,
    /// Another CA's certificate (`other-ca.pem`).
    pub other_ca: PathBuf,
    /// For `localhost`, `127.0.0.1` and `::1`, signed by the other CA.
    pub other_server: Pair,
    /// A client certificate signed by the other CA, for `mallory`.
    pub other_client: Pair,
    /// For `localhost`, `127.0.0.1` and `::1`, signed by the CA, valid in 2000 only.
    pub expired: Pair,
    /// For `wrong.example` only, signed by the CA.
    pub wrong_name: Pair,
    /// A client certificate signed by the CA, valid in 2000 only.
    pub expired_client: Pair,
    /// A client certificate signed by the CA whose key usage is CRL signing only
    /// (critical): its key may not sign a handshake.
    pub crl_sign_only_client: Pair,
    /// A client certificate signed by the CA without the key usage extension.
    pub no_key_usage_client: Pair,
    /// A client certificate signed by the CA whose CN is [`HOSTILE_NAME`].
    pub hostile_cn_client: Pair,
    /// A client certificate signed by the CA with no subject, only the DNS SAN
    /// [`HOSTILE_DNS_NAME`].
    pub hostile_dns_client: Pair,
}

/// A name that would forge a log line, colour a terminal and reverse the text after it,
/// if logged raw.
pub const HOSTILE_NAME: &str =
    "mallory\n[2026-01-01T00:00:00Z INFO  tcp_hello] forged\x1b[31m\u{202E}txt";

/// [`HOSTILE_NAME`] as a DNS name can hold it: ASCII only (an IA5String).
pub const HOSTILE_DNS_NAME: &str = "evil\n[2026-01-01T00:00:00Z INFO  tcp_hello] forged\x1b[2J";

/// The names of the server certificates (but the wrong-name one).
pub const SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A CA: its certificate's PEM and what signs with it.
struct Ca {
    pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("CA certificate");
    Ca {
        pem: cert.pem(),
        key_pem: key.serialize_pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A leaf certificate with these names, for a server or a client, signed by `ca`.
fn leaf(ca: &Ca, names: &[&str], server: bool, valid_in_2000_only: bool) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("leaf params");
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("tcp-hello test", |n| n.as_str()),
    );
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    if valid_in_2000_only {
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(2001, 1, 1);
    }
    signed(ca, params)
}

/// A client certificate signed by `ca`: clientAuth, digitalSignature, then whatever
/// `change` makes of it (names, key usages).
fn client(ca: &Ca, change: impl FnOnce(&mut CertificateParams)) -> (String, String) {
    let mut params = CertificateParams::default();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    change(&mut params);
    signed(ca, params)
}

/// A certificate made from `params` with a fresh key, signed by `ca`, and its key.
fn signed(ca: &Ca, params: CertificateParams) -> (String, String) {
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, &ca.issuer).expect("sign leaf");
    (cert.pem(), key.serialize_pem())
}

/// Writes `text` to `path`; a key only for its owner to read.
fn write(path: &Path, text: &str, secret: bool) {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(text.as_bytes()).expect("write PEM");
}

/// `tcp-hello serve --tls-bind 127.0.0.1:0` with the server certificate of `certs`, and
/// `args`.
pub fn tls_server(certs: &Certs, args: &[&str]) -> Server {
    let (cert, key) = (certs.server.cert.display(), certs.server.key.display());
    let (cert, key) = (cert.to_string(), key.to_string());
    let mut all = vec![
        "--tls-bind",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    all.extend_from_slice(args);
    Server::start_with_binds(&all, 1)
}

/// Makes every certificate of [`Certs`] in a fresh temporary directory.
pub fn make_certs() -> Certs {
    let temp = temp_dir("tls");
    let dir = temp.path().to_path_buf();
    let pair = |name: &str, (cert, key): (String, String)| {
        let pair = Pair {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        write(&pair.cert, &cert, false);
        write(&pair.key, &key, true);
        pair
    };
    let ours = ca("tcp-hello test CA");
    let other = ca("another test CA");
    let ca_path = dir.join("ca.pem");
    write(&ca_path, &ours.pem, false);
    let ca_key = dir.join("ca-key.pem");
    write(&ca_key, &ours.key_pem, true);
    let other_ca = dir.join("other-ca.pem");
    write(&other_ca, &other.pem, false);
    Certs {
        ca: ca_path,
        ca_key,
        other_ca,
        server: pair("server", leaf(&ours, &SERVER_NAMES, true, false)),
        renewed: pair("renewed", leaf(&ours, &SERVER_NAMES, true, false)),
        client: pair("client", leaf(&ours, &["alice"], false, false)),
        other_server: pair("other-server", leaf(&other, &SERVER_NAMES, true, false)),
        other_client: pair("other-client", leaf(&other, &["mallory"], false, false)),
        expired_client: pair("expired-client", leaf(&ours, &["eve"], false, true)),
        expired: pair("expired", leaf(&ours, &SERVER_NAMES, true, true)),
        wrong_name: pair("wrong-name", leaf(&ours, &["wrong.example"], true, false)),
        crl_sign_only_client: pair(
            "crl-sign-only-client",
            client(&ours, |p| {
                p.distinguished_name.push(DnType::CommonName, "crl-signer");
                p.key_usages = vec![KeyUsagePurpose::CrlSign];
            }),
        ),
        no_key_usage_client: pair(
            "no-key-usage-client",
            client(&ours, |p| {
                p.distinguished_name
                    .push(DnType::CommonName, "no-key-usage");
                p.key_usages = Vec::new();
            }),
        ),
        hostile_cn_client: pair(
            "hostile-cn-client",
            client(&ours, |p| {
                p.distinguished_name = DistinguishedName::new();
                p.distinguished_name.push(DnType::CommonName, HOSTILE_NAME);
            }),
        ),
        hostile_dns_client: pair(
            "hostile-dns-client",
            client(&ours, |p| {
                p.distinguished_name = DistinguishedName::new();
                let name = HOSTILE_DNS_NAME.try_into().expect("an ASCII DNS name");
                p.subject_alt_names = vec![SanType::DnsName(name)];
            }),
        ),
        dir,
        _temp: temp,
    }
}
