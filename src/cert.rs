//! `tcp-hello cert`: a private CA, a server certificate and client certificates for TLS
//! and mutual TLS, made with rcgen, so that trying TLS needs no openssl.
//!
//! Everything is generated in memory first and written only once every check has
//! passed: a refusal writes nothing, and a failed write removes what this run wrote.
//! No file is ever overwritten.

use std::borrow::Cow;
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use rustls::pki_types::ServerName;

/// The server certificate's hosts when no `--host` is given.
pub const DEFAULT_HOSTS: [&str; 2] = ["localhost", "127.0.0.1"];

/// How long the CA is valid: ten years, so that it can stay trusted while leaves come and go.
pub const CA_DAYS: u64 = 3650;

/// How long the server and client certificates are valid: one year (below the 398 days
/// browsers accept and the 825 days Apple's platforms accept for a TLS server).
pub const LEAF_DAYS: u64 = 365;

/// How far in the past every certificate starts, so that a peer whose clock is a little
/// behind ours does not see it as not yet valid.
pub const BACKDATE: Duration = Duration::from_secs(3600);

/// Longest client name: the upper bound of an X.509 common name (RFC 5280, `ub-common-name`).
pub const MAX_CLIENT_NAME: usize = 64;

const DAY: u64 = 86_400;

/// One name the server certificate is for: a subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An IP address SAN (`127.0.0.1`, `::1`, also written `[::1]`).
    Ip(IpAddr),
    /// A DNS name SAN (`localhost`, `example.com`, `*.example.com`).
    Dns(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Dns(name) => f.write_str(name),
        }
    }
}

impl Host {
    /// Reads a `--host`: an IP address if it parses as one, otherwise a DNS name (a
    /// leading `*.` makes it a wildcard).
    pub fn parse(text: &str) -> Result<Host, CertError> {
        let bad = |why: &'static str| CertError::BadHost {
            host: text.to_string(),
            why,
        };
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            return inner
                .parse::<Ipv6Addr>()
                .map(|ip| Host::Ip(IpAddr::V6(ip)))
                .map_err(|_| bad("is not an IPv6 address in brackets"));
        }
        if text.is_empty() {
            return Err(bad("is empty"));
        }
        if text.ends_with('.') {
            // Certificates name hosts without the root's dot (RFC 5280 section 4.2.1.6).
            return Err(bad("ends with a dot; give the name without it"));
        }
        let name = text.strip_prefix("*.").unwrap_or(text);
        if ServerName::try_from(name).is_ok_and(|n| matches!(n, ServerName::DnsName(_))) {
            Ok(Host::Dns(text.to_string()))
        } else {
            Err(bad(
                "is neither an IP address nor a DNS name (letters, digits, '-' and '.', \
                 not all digits)",
            ))
        }
    }

    fn san(&self) -> Result<SanType, CertError> {
        Ok(match self {
            Host::Ip(ip) => SanType::IpAddress(*ip),
            Host::Dns(name) => SanType::DnsName(Ia5String::try_from(name.as_str())?),
        })
    }

    /// Whether two hosts name the same thing (DNS names regardless of case).
    fn same(&self, other: &Host) -> bool {
        match (self, other) {
            (Host::Ip(a), Host::Ip(b)) => a == b,
            (Host::Dns(a), Host::Dns(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        }
    }
}

/// Checks that a `--client` name can be both a common name and the file names
/// `NAME.pem` and `NAME.key` beside the CA's and the server's.
pub fn check_client_name(name: &str) -> Result<(), CertError> {
    let why = if name.is_empty() {
        "is empty"
    } else if ["ca", "server"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
    {
        // Compared regardless of case for case-insensitive file systems.
        "would overwrite the CA's or the server's files"
    } else if name.contains('/') {
        "contains '/'"
    } else if name.starts_with('.') {
        "starts with '.'"
    } else if name.chars().any(crate::protocol::is_invisible) {
        // A right-to-left override makes `\u{202e}gnp.exe` show as `exe.png`; a
        // zero-width space makes two names look the same.
        "contains a control, format or invisible character (such as U+202E, which \
         reverses the text after it)"
    } else if name.chars().count() > MAX_CLIENT_NAME {
        "is longer than 64 characters, the most a common name holds"
    } else {
        return Ok(());
    };
    Err(CertError::BadClient {
        name: name.to_string(),
        why,
    })
}

/// What `tcp-hello cert` is asked to make.
#[derive(Debug, Clone)]
pub struct Request {
    /// The directory to write into; created (mode 0700) if missing.
    pub out: PathBuf,
    /// The server certificate's hosts, the first being its common name; empty means
    /// [`DEFAULT_HOSTS`].
    pub hosts: Vec<String>,
    /// One client certificate per name.
    pub clients: Vec<String>,
}

/// Why `tcp-hello cert` made nothing, or did not finish (then it removed what it wrote).
#[derive(Debug)]
pub enum CertError {
    /// A `--host` that is neither an IP address nor a DNS name.
    BadHost {
        /// As given.
        host: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A `--client` name that is not a safe file name.
    BadClient {
        /// As given.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The same `--host` or `--client` given twice.
    Twice {
        /// The flag, `--host` or `--client`.
        flag: &'static str,
        /// The value given twice.
        value: String,
    },
    /// A file this run would write exists already: a key, or a certificate without its key.
    Exists {
        /// The file.
        path: PathBuf,
        /// The certificate's key, when the file is a certificate (whose key does not exist).
        key_of: Option<PathBuf>,
    },
    /// `--out` names something that is not a directory.
    NotADirectory(PathBuf),
    /// The directory could not be created or a file could not be written; the files
    /// this run wrote before were removed.
    Io {
        /// The directory or file.
        path: PathBuf,
        /// What failed.
        error: io::Error,
    },
    /// rcgen refused the parameters (checked before, so this is a bug).
    Rcgen(rcgen::Error),
    /// The system's random number generator failed.
    Random,
}

impl From<rcgen::Error> for CertError {
    fn from(e: rcgen::Error) -> CertError {
        CertError::Rcgen(e)
    }
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::BadHost { host, why } => write!(
                f,
                "--host '{}' {why}; give a host name such as example.com or an address such \
                 as 192.0.2.1",
                host.escape_debug()
            ),
            CertError::BadClient { name, why } => write!(
                f,
                "--client '{}' {why}; give a plain name such as alice, which becomes the \
                 common name and the files alice.pem and alice.key",
                name.escape_debug()
            ),
            CertError::Twice { flag, value } => write!(
                f,
                "{flag} '{}' is given twice; give each once",
                value.escape_debug()
            ),
            CertError::Exists { path, key_of: None } => write!(
                f,
                "{} already exists, and tcp-hello cert never overwrites a private key: give \
                 another --out, or remove the file; nothing was written",
                path.display()
            ),
            CertError::Exists {
                path,
                key_of: Some(key),
            } => write!(
                f,
                "{} already exists without its key {}, and tcp-hello cert writes a \
                 certificate only with its key: give another --out, or remove the file; \
                 nothing was written",
                path.display(),
                key.display()
            ),
            CertError::NotADirectory(path) => write!(
                f,
                "--out {} exists and is not a directory; give a directory (it is created if \
                 missing)",
                path.display()
            ),
            CertError::Io { path, error } => {
                let fix = match error.kind() {
                    io::ErrorKind::PermissionDenied => "check its directory's permissions, or ",
                    io::ErrorKind::StorageFull => "free some space, or ",
                    _ => "",
                };
                write!(
                    f,
                    "cannot write {}: {error}; nothing was kept: {fix}give another --out",
                    path.display()
                )
            }
            CertError::Rcgen(e) => write!(
                f,
                "cannot make the certificates: {e}; this is a bug in tcp-hello, please report it"
            ),
            CertError::Random => write!(
                f,
                "the system's random number generator failed; check that /dev/urandom (or \
                 getrandom) works"
            ),
        }
    }
}

impl std::error::Error for CertError {}

/// What [`make`] wrote.
#[derive(Debug)]
pub struct Made {
    /// The files, in the order written.
    pub files: Vec<PathBuf>,
    /// The server certificate's hosts (the defaults when none was given).
    pub hosts: Vec<Host>,
}

/// One file to write, made in memory.
struct Output {
    path: PathBuf,
    text: String,
    secret: bool,
}

/// Makes the CA, the server certificate and one client certificate per name, and writes
/// them into `request.out`.
///
/// Refuses, writing nothing, a bad host or client name, the same one twice, or any file
/// it would write that exists already (keys are looked for first, so the file named is a
/// key whenever one exists). A write that fails removes the files this run wrote.
pub fn make(request: &Request) -> Result<Made, CertError> {
    let hosts = hosts(&request.hosts)?;
    for (i, name) in request.clients.iter().enumerate() {
        check_client_name(name)?;
        if request.clients[..i].contains(name) {
            return Err(CertError::Twice {
                flag: "--client",
                value: name.clone(),
            });
        }
    }
    let out = &request.out;
    let stems: Vec<&str> = ["ca", "server"]
        .into_iter()
        .chain(request.clients.iter().map(String::as_str))
        .collect();
    check_absent(out, &stems)?;

    let outputs = generate(out, &hosts, &request.clients)?;
    create_dir(out)?;
    let mut written = Vec::with_capacity(outputs.len());
    for output in &outputs {
        if let Err(error) = write_new(&output.path, &output.text, output.secret) {
            for path in &written {
                // Only files this run created (with create_new) are removed.
                let _ = std::fs::remove_file(path);
            }
            return Err(CertError::Io {
                path: output.path.clone(),
                error,
            });
        }
        written.push(output.path.clone());
    }
    Ok(Made {
        files: written,
        hosts,
    })
}

/// The hosts of `--host`, or the defaults, refusing any given twice.
pub fn hosts(given: &[String]) -> Result<Vec<Host>, CertError> {
    let texts: Vec<&str> = if given.is_empty() {
        DEFAULT_HOSTS.to_vec()
    } else {
        given.iter().map(String::as_str).collect()
    };
    let mut hosts: Vec<Host> = Vec::with_capacity(texts.len());
    for text in texts {
        let host = Host::parse(text)?;
        if hosts.iter().any(|h| h.same(&host)) {
            return Err(CertError::Twice {
                flag: "--host",
                value: text.to_string(),
            });
        }
        hosts.push(host);
    }
    Ok(hosts)
}

/// Refuses if any file this run would write exists: every key first, then every
/// certificate (whose key, by then, is known not to exist).
fn check_absent(out: &Path, stems: &[&str]) -> Result<(), CertError> {
    match std::fs::metadata(out) {
        Ok(meta) if !meta.is_dir() => return Err(CertError::NotADirectory(out.to_path_buf())),
        _ => {}
    }
    // symlink_metadata, so that a dangling link also counts: writing would follow it.
    let exists = |path: &Path| std::fs::symlink_metadata(path).is_ok();
    for stem in stems {
        let key = out.join(format!("{stem}.key"));
        if exists(&key) {
            return Err(CertError::Exists {
                path: key,
                key_of: None,
            });
        }
    }
    for stem in stems {
        let cert = out.join(format!("{stem}.pem"));
        if exists(&cert) {
            return Err(CertError::Exists {
                path: cert,
                key_of: Some(out.join(format!("{stem}.key"))),
            });
        }
    }
    Ok(())
}

/// Every file's contents, in the order they are written: each certificate, then its key.
fn generate(out: &Path, hosts: &[Host], clients: &[String]) -> Result<Vec<Output>, CertError> {
    let now = SystemTime::now();
    let mut outputs = Vec::new();
    let mut push = |stem: &str, cert: String, key: String| {
        outputs.push(Output {
            path: out.join(format!("{stem}.pem")),
            text: cert,
            secret: false,
        });
        outputs.push(Output {
            path: out.join(format!("{stem}.key")),
            text: key,
            secret: true,
        });
    };

    let ca_serial = random_serial()?;
    // A name of its own per CA, so that several tcp-hello CAs trusted side by side can be
    // told apart.
    let id: String = ca_serial[..4].iter().map(|b| format!("{b:02x}")).collect();
    let mut ca = params(&format!("tcp-hello CA {id}"), now, CA_DAYS, &ca_serial);
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let ca_cert = ca.self_signed(&ca_key)?;
    push("ca", ca_cert.pem(), ca_key.serialize_pem());
    let issuer = Issuer::new(ca, ca_key);

    let leaf = |cn: &str, usage: ExtendedKeyUsagePurpose| -> Result<_, CertError> {
        let mut p = params(cn, now, LEAF_DAYS, &random_serial()?);
        p.is_ca = IsCa::ExplicitNoCa;
        // ECDSA keys only sign in TLS: no key encipherment.
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![usage];
        p.use_authority_key_identifier_extension = true;
        Ok(p)
    };

    let mut server = leaf(&hosts[0].to_string(), ExtendedKeyUsagePurpose::ServerAuth)?;
    server.subject_alt_names = hosts.iter().map(Host::san).collect::<Result<_, _>>()?;
    let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let server_cert = server.signed_by(&server_key, &issuer)?;
    push("server", server_cert.pem(), server_key.serialize_pem());

    for name in clients {
        let client = leaf(name, ExtendedKeyUsagePurpose::ClientAuth)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = client.signed_by(&key, &issuer)?;
        push(name, cert.pem(), key.serialize_pem());
    }
    Ok(outputs)
}

/// Parameters common to every certificate: the common name, the validity from
/// [`BACKDATE`] before `now` to `days` after it, and the serial number.
fn params(cn: &str, now: SystemTime, days: u64, serial: &[u8]) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    // Within what OffsetDateTime holds (years up to 9999) for any clock of this century,
    // since `days` is at most CA_DAYS.
    p.not_before = (now - BACKDATE).into();
    p.not_after = (now + Duration::from_secs(days * DAY)).into();
    p.serial_number = Some(SerialNumber::from_slice(serial));
    p
}

/// 16 random bytes (127 random bits), as CA/Browser Forum rules ask of public CAs (at
/// least 64 bits), so that no two certificates share a serial number.
fn random_serial() -> Result<[u8; 16], CertError> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| CertError::Random)?;
    // Positive (a DER integer is signed) with a non-zero first byte, so every serial has
    // the same length.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(bytes)
}

/// Creates `out` if it is missing: mode 0700 (and so are missing parents), since it holds keys.
fn create_dir(out: &Path) -> Result<(), CertError> {
    if out.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(out).map_err(|error| CertError::Io {
        path: out.to_path_buf(),
        error,
    })
}

/// Writes a file that must not exist yet: a key with mode 0600 from its creation (never
/// readable by others, even for an instant), a certificate with 0644.
fn write_new(path: &Path, text: &str, secret: bool) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, if secret { 0o600 } else { 0o644 });
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes()).inspect_err(|_| {
        // This run created the file: a half-written key or certificate is of no use.
        let _ = std::fs::remove_file(path);
    })
}

/// The commands to try next, one per line: the server with these files, then the
/// bundled client and `openssl s_client` connecting to it (with the first client's
/// certificate when there is one, since the server then asks for one).
pub fn next_steps(out: &Path, hosts: &[Host], clients: &[String]) -> String {
    let file = |name: &str| shell_word(&out.join(name).to_string_lossy()).into_owned();
    let addr = "127.0.0.1:9443";
    let mut serve = format!(
        "tcp-hello serve --tls-bind {addr} --tls-cert {} --tls-key {}",
        file("server.pem"),
        file("server.key")
    );
    let mut client = format!(
        "tcp-hello client --tls --connect {addr} --tls-ca {}",
        file("ca.pem")
    );
    let mut openssl = format!(
        "openssl s_client -connect {addr} -CAfile {}",
        file("ca.pem")
    );
    if let Some(name) = clients.first() {
        serve += &format!(" --tls-client-ca {}", file("ca.pem"));
        let (cert, key) = (file(&format!("{name}.pem")), file(&format!("{name}.key")));
        client += &format!(" --tls-cert {cert} --tls-key {key}");
        openssl += &format!(" -cert {cert} -key {key}");
    }
    // Without -quiet, s_client reads lines beginning with K, R or Q as its own commands
    // (so names like Kim, Rob and Quinn are never sent) and prints the certificates.
    openssl += " -quiet";
    let loopback = Host::Ip(IpAddr::from([127, 0, 0, 1]));
    if !hosts.contains(&loopback) {
        client += &format!(" --tls-server-name {}", shell_word(&hosts[0].to_string()));
    }
    format!("next: serve TLS with\n  {serve}\nthen connect with\n  {client}\nor\n  {openssl}\n")
}

/// `text` as one shell word: unchanged when it needs no quoting, else in single quotes.
fn shell_word(text: &str) -> Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(format!("'{}'", text.replace('\'', r"'\''")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_that_parse_as_addresses_are_ip_sans_the_others_dns_sans() {
        let ip = |s: &str| Host::Ip(s.parse().unwrap());
        let dns = |s: &str| Host::Dns(s.to_string());
        for (text, host) in [
            ("127.0.0.1", ip("127.0.0.1")),
            ("::1", ip("::1")),
            ("[::1]", ip("::1")),
            ("fe80::1", ip("fe80::1")),
            ("localhost", dns("localhost")),
            ("example.com", dns("example.com")),
            ("*.example.com", dns("*.example.com")),
            ("xn--bcher-kva.example", dns("xn--bcher-kva.example")),
            ("1.2.3.example", dns("1.2.3.example")),
        ] {
            assert_eq!(Host::parse(text).unwrap(), host, "{text}");
        }
        assert!(matches!(
            Host::parse("::1").unwrap().san().unwrap(),
            SanType::IpAddress(_)
        ));
        assert!(matches!(
            Host::parse("localhost").unwrap().san().unwrap(),
            SanType::DnsName(_)
        ));
        for bad in [
            "",
            "1.2.3",
            "256.0.0.1",
            "a b",
            "bücher.example",
            "example.com.",
            "[127.0.0.1]",
            "-x",
        ] {
            let e = Host::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("--host '") && !e.contains('\n'), "{bad}: {e}");
        }
    }

    #[test]
    fn hosts_default_and_refuse_duplicates() {
        let defaults = hosts(&[]).unwrap();
        assert_eq!(defaults[0], Host::Dns("localhost".into()));
        assert_eq!(defaults[1], Host::Ip(IpAddr::from([127, 0, 0, 1])));
        let twice = |a: &str, b: &str| hosts(&[a.to_string(), b.to_string()]);
        assert!(matches!(
            twice("Example.com", "example.COM"),
            Err(CertError::Twice { .. })
        ));
        assert!(matches!(
            twice("::1", "[0::1]"),
            Err(CertError::Twice { .. })
        ));
        assert!(twice("example.com", "*.example.com").is_ok());
    }

    #[test]
    fn client_names_must_be_safe_file_names() {
        for good in ["alice", "bob-2", "Alice Smith", "张三", "a.b"] {
            check_client_name(good).unwrap();
        }
        let long = "x".repeat(MAX_CLIENT_NAME + 1);
        for bad in [
            "",
            "ca",
            "CA",
            "server",
            "a/b",
            "../x",
            ".x",
            "a\nb",
            "\u{202e}gnp.exe",
            "ali\u{200b}ce",
            "\u{feff}bob",
            long.as_str(),
        ] {
            let e = check_client_name(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("--client '") && !e.contains('\n'),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn next_steps_quote_paths_and_name_the_server_when_127_0_0_1_is_not_a_host() {
        let text = next_steps(
            Path::new("my certs"),
            &[Host::Dns("example.test".into())],
            &["alice".into()],
        );
        assert!(text.contains("--tls-cert 'my certs/server.pem'"), "{text}");
        assert!(text.contains("--tls-client-ca 'my certs/ca.pem'"), "{text}");
        assert!(text.contains("--tls-key 'my certs/alice.key'"), "{text}");
        assert!(text.contains("--tls-server-name example.test"), "{text}");
        assert!(
            text.contains("-cert 'my certs/alice.pem' -key 'my certs/alice.key' -quiet\n"),
            "{text}"
        );
        let text = next_steps(Path::new("c"), &hosts(&[]).unwrap(), &[]);
        assert!(!text.contains("--tls-server-name"), "{text}");
        assert!(!text.contains("--tls-client-ca"), "{text}");
        assert!(text.contains("-CAfile c/ca.pem -quiet\n"), "{text}");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
