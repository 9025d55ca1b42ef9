//! Certificates and private keys read from PEM files, for the server, the client and the
//! bench alike. Every error is one line that names the file, the cause and the fix.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::protocol::LogText;

/// Why a PEM file could not be used.
#[derive(Debug)]
pub struct PemError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it, and what to do.
    pub cause: String,
}

impl fmt::Display for PemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.cause)
    }
}

impl std::error::Error for PemError {}

impl From<PemError> for io::Error {
    fn from(e: PemError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
    }
}

fn error(path: &Path, cause: impl Into<String>) -> PemError {
    PemError {
        path: path.to_path_buf(),
        cause: cause.into(),
    }
}

/// The cause of a failure to read `path`, in words.
fn read_cause(e: pem::Error, what: &str) -> String {
    match e {
        pem::Error::Io(e) if e.kind() == io::ErrorKind::NotFound => {
            "no such file; check the path".to_string()
        }
        pem::Error::Io(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            "permission denied; make it readable by this user".to_string()
        }
        pem::Error::Io(e) => format!("cannot read it: {e}"),
        pem::Error::NoItemsFound => {
            format!("no {what} found in it; is it a PEM file (-----BEGIN ...-----)?")
        }
        // The file's own bytes are shown as text, escaped: it may hold anything.
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "not valid PEM: the -----BEGIN {label}----- block has no -----END {label}----- \
             line; the file is cut short or damaged: give the whole PEM {what} file",
            label = LogText(&end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "not valid PEM: the line \"{}\" does not begin a block as -----BEGIN LABEL----- \
             does; is it a PEM {what} file?",
            LogText(line.trim_ascii())
        ),
        pem::Error::Base64Decode(_) => {
            format!("not valid PEM: a block's base64 is damaged; give an intact PEM {what} file")
        }
        pem::Error::SectionTooLarge => {
            format!("not valid PEM: a block is over 256 MB; is it a PEM {what} file?")
        }
        other => format!("not valid PEM: {other}; is it a PEM {what} file?"),
    }
}

/// Every certificate in a PEM file, in order (a chain: the leaf first).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(path, read_cause(e, "certificate")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(path, read_cause(e, "certificate")))?;
    if certs.is_empty() {
        return Err(error(
            path,
            "no certificate found in it (no -----BEGIN CERTIFICATE----- block); give the PEM certificate file",
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        let cause = match e {
            pem::Error::NoItemsFound => "no private key found in it (no -----BEGIN ... PRIVATE \
                                         KEY----- block); give the PEM key file"
                .to_string(),
            e => read_cause(e, "private key"),
        };
        error(path, cause)
    })
}

/// Whether a file's permissions let users other than its owner read it (a private key
/// should be mode 0600 or 0400, as ssh insists).
#[cfg(unix)]
pub fn readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o044 != 0)
}

/// Whether a file's permissions let users other than its owner read it.
#[cfg(not(unix))]
pub fn readable_by_others(_path: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tcp-hello-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn errors_name_the_file_and_the_cause() {
        let missing = Path::new("/no/such/dir/cert.pem");
        let e = certificates(missing).unwrap_err().to_string();
        assert!(e.starts_with("/no/such/dir/cert.pem: no such file"), "{e}");
        let text = temp("not-pem.txt", "hello\n");
        let e = certificates(&text).unwrap_err().to_string();
        assert!(e.contains("no certificate found"), "{e}");
        let e = private_key(&text).unwrap_err().to_string();
        assert!(e.contains("no private key found"), "{e}");
    }

    #[test]
    fn malformed_pem_is_one_readable_line_naming_the_file() {
        let cut = temp("cut.pem", "-----BEGIN CERTIFICATE-----\nMIIBwTCCAWig\n");
        let e = certificates(&cut).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}: not valid PEM: the -----BEGIN CERTIFICATE----- block has no -----END \
                 CERTIFICATE----- line; the file is cut short or damaged: give the whole PEM \
                 certificate file",
                cut.display()
            )
        );
        // The label is built, not written whole: a committed file never holds what
        // looks like the start of a private key.
        let label = ["PRIVATE", "KEY"].join(" ");
        let cut_key = format!("-----BEGIN {label}-----\nMIGH\n");
        let e = private_key(&temp("cut.key", &cut_key))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!(
                "the -----BEGIN {label}----- block has no -----END {label}"
            )),
            "{e}"
        );
        let start = temp("start.pem", "-----BEGIN CERTIFICATE\x1b[31m--\nMIIB\n");
        let e = certificates(&start).unwrap_err().to_string();
        assert!(
            e.contains(r#"the line "-----BEGIN CERTIFICATE\u{1b}[31m--" does not begin"#),
            "{e}"
        );
        let damaged = temp(
            "damaged.pem",
            "-----BEGIN CERTIFICATE-----\nM*I=B\n-----END CERTIFICATE-----\n",
        );
        let e = certificates(&damaged).unwrap_err().to_string();
        assert!(e.contains("a block's base64 is damaged"), "{e}");
        for e in [
            certificates(&cut).unwrap_err().to_string(),
            certificates(&start).unwrap_err().to_string(),
            certificates(&damaged).unwrap_err().to_string(),
        ] {
            assert!(!e.contains('\n') && !e.contains('\x1b'), "{e}");
            assert!(!e.contains("[67, "), "no bytes as numbers: {e}");
        }
    }
}
