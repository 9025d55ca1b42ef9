//! `tcp-hello cert`: the files it writes and their modes, what it refuses, and that
//! openssl and rustls accept what it makes for TLS and mutual TLS. Keys are made at run
//! time in temporary directories, never stored.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};

use crate::common::{Finished, clean_env, run_tool, temp_dir};
use tcp_hello::pem;

const DAY: u64 = 86_400;

/// `tcp-hello cert --out OUT ARGS` under umask 022, so that the modes are exactly the
/// ones asked for.
fn cert(out: &Path, args: &[&str]) -> Finished {
    let mut cmd = Command::new("sh");
    clean_env(&mut cmd)
        .args([
            "-c",
            r#"umask 022 && exec "$0" "$@""#,
            crate::common::bin(),
            "cert",
            "--out",
        ])
        .arg(out)
        .args(args);
    run_tool(&mut cmd, None, Duration::from_secs(60))
}

fn made(out: &Path, args: &[&str]) -> Finished {
    let run = cert(out, args);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
    run
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir`, sorted, with its contents.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut all: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = fs::read(&path).unwrap_or_default();
            (path, bytes)
        })
        .collect();
    all.sort();
    all
}

#[test]
fn writes_each_certificate_and_key_with_their_modes_and_says_what_next() {
    let temp = temp_dir("cert-modes");
    let out = temp.path().join("new/certs");
    let run = made(&out, &["--client", "alice", "--client", "bob"]);

    assert_eq!(mode(&out), 0o700, "a created directory holds keys");
    assert_eq!(mode(&temp.path().join("new")), 0o700);
    let names = [
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "alice.pem",
        "alice.key",
        "bob.pem",
        "bob.key",
    ];
    let lines: Vec<&str> = run.stdout.lines().collect();
    for (i, name) in names.iter().enumerate() {
        let path = out.join(name);
        assert_eq!(
            lines[i],
            format!("wrote {}", path.display()),
            "{}",
            run.stdout
        );
        let text = fs::read_to_string(&path).unwrap();
        if name.ends_with(".key") {
            assert_eq!(mode(&path), 0o600, "{name}");
            assert!(
                // Spelt in two, so that no committed file holds a key's header (PKCS#8).
                text.starts_with(concat!("-----BEGIN ", "PRIVATE KEY-----\n")),
                "PKCS#8: {text}"
            );
        } else {
            assert_eq!(mode(&path), 0o644, "{name}");
            // The leaf alone: the CA is given to peers separately.
            assert_eq!(
                text.matches("-----BEGIN CERTIFICATE-----").count(),
                1,
                "{name}"
            );
        }
    }
    assert_eq!(fs::read_dir(&out).unwrap().count(), names.len());
    let next = lines[names.len()..].join("\n");
    let file = |name: &str| out.join(name).display().to_string();
    for expected in [
        format!(
            "tcp-hello serve --tls-bind 127.0.0.1:9443 --tls-cert {}",
            file("server.pem")
        ),
        format!(
            "--tls-key {} --tls-client-ca {}",
            file("server.key"),
            file("ca.pem")
        ),
        format!(
            "tcp-hello client --tls --connect 127.0.0.1:9443 --tls-ca {}",
            file("ca.pem")
        ),
        format!(
            "--tls-cert {} --tls-key {}",
            file("alice.pem"),
            file("alice.key")
        ),
        format!(
            "openssl s_client -connect 127.0.0.1:9443 -CAfile {}",
            file("ca.pem")
        ),
    ] {
        assert!(next.contains(&expected), "{expected}\n{next}");
    }

    // An existing directory keeps its own mode.
    let shared = temp.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
    made(&shared, &[]);
    assert_eq!(mode(&shared), 0o755);
    assert_eq!(mode(&shared.join("server.key")), 0o600);
}

#[test]
fn never_overwrites_a_key_and_then_writes_nothing() {
    let temp = temp_dir("cert-overwrite");
    let out = temp.path().join("certs");
    made(&out, &["--client", "alice"]);
    let before = snapshot(&out);

    // A second run, even one adding a client, refuses on the first key it finds.
    let run = cert(&out, &["--client", "bob"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    let ca_key = out.join("ca.key").display().to_string();
    assert!(run.stderr.contains(&ca_key), "{run:?}");
    assert!(
        run.stderr.contains("another --out") && run.stderr.contains("remove"),
        "{run:?}"
    );
    assert_eq!(snapshot(&out), before, "nothing changed, nothing added");

    // A lone key of a client, and a dangling link where a key would go, are found too.
    for (stem, plant) in [("carol", "file"), ("dave", "link")] {
        let dir = temp.path().join(format!("{stem}-dir"));
        fs::create_dir(&dir).unwrap();
        let key = dir.join(format!("{stem}.key"));
        match plant {
            "file" => fs::write(&key, "keep me").unwrap(),
            _ => std::os::unix::fs::symlink(temp.path().join("nowhere"), &key).unwrap(),
        }
        let run = cert(&dir, &["--client", stem]);
        assert_eq!(run.code, Some(2), "{run:?}");
        assert!(run.stderr.contains(&key.display().to_string()), "{run:?}");
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "only the planted {plant}"
        );
        assert!(!temp.path().join("nowhere").exists());
    }

    // A certificate without its key is refused as well, so a key always has its certificate.
    let dir = temp.path().join("lone-cert");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("server.pem"), "old").unwrap();
    let run = cert(&dir, &[]);
    assert_eq!(run.code, Some(2), "{run:?}");
    let server_pem = dir.join("server.pem").display().to_string();
    assert!(
        run.stderr
            .contains(&format!("{server_pem} already exists without its key")),
        "{run:?}"
    );
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    assert_eq!(fs::read_to_string(dir.join("server.pem")).unwrap(), "old");

    // --out naming a file.
    let file = temp.path().join("a-file");
    fs::write(&file, "").unwrap();
    let run = cert(&file, &[]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("is not a directory"), "{run:?}");
}

#[test]
fn bad_client_names_and_hosts_are_refused_with_one_line_and_nothing_written() {
    let temp = temp_dir("cert-names");
    let out = temp.path().join("certs");
    let long = "x".repeat(65);
    let refusals: &[(&[&str], &str)] = &[
        (&["--client", "ca"], "--client 'ca'"),
        (&["--client", "Server"], "--client 'Server'"),
        (&["--client", ""], "is empty"),
        (&["--client", "a/b"], "contains '/'"),
        (&["--client", "../up"], "contains '/'"),
        (&["--client", ".hidden"], "starts with '.'"),
        (
            &["--client", "a\nb"],
            "--client 'a\\nb' contains a control, format or invisible character",
        ),
        (
            &["--client", "\u{202e}gnp.exe"],
            "--client '\\u{202e}gnp.exe' contains a control, format or invisible character",
        ),
        (&["--client", &long], "longer than 64"),
        (
            &["--client", "alice", "--client", "alice"],
            "--client 'alice' is given twice",
        ),
        (&["--host", "not a host"], "--host 'not a host' is neither"),
        (&["--host", "1.2.3"], "is neither"),
        (&["--host", "example.com."], "ends with a dot"),
        (&["--host", ""], "--host '' is empty"),
        (
            &["--host", "localhost", "--host", "LOCALHOST"],
            "is given twice",
        ),
    ];
    for (args, says) in refusals {
        let run = cert(&out, args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {run:?}");
        assert!(run.stderr.starts_with("tcp-hello: "), "{args:?}: {run:?}");
        assert!(run.stderr.contains(says), "{args:?}: {run:?}");
        assert!(!out.exists(), "{args:?}: nothing may be written");
    }
}

#[test]
fn a_write_that_fails_halfway_removes_what_the_run_wrote() {
    let temp = temp_dir("cert-halfway");
    let out = temp.path().join("certs");
    fs::create_dir(&out).unwrap();
    // A file-size limit of 1 or 2 KiB (the shell's blocks are 512 or 1024 bytes) lets
    // ca.pem and ca.key through and stops server.pem, whose 150 names take about 4 KiB;
    // SIGXFSZ ignored, the write fails with EFBIG instead of killing the process.
    let mut cmd = Command::new("sh");
    clean_env(&mut cmd)
        .args([
            "-c",
            r#"trap '' XFSZ && ulimit -f 2 && exec "$0" "$@""#,
            crate::common::bin(),
            "cert",
            "--out",
        ])
        .arg(&out);
    for i in 0..150 {
        cmd.args(["--host", &format!("host{i}.example.test")]);
    }
    let run = run_tool(&mut cmd, None, Duration::from_secs(60));
    assert_eq!(run.code, Some(2), "{run:?}");
    let server_pem = out.join("server.pem").display().to_string();
    assert!(
        run.stderr
            .starts_with(&format!("tcp-hello: cannot write {server_pem}: ")),
        "{run:?}"
    );
    assert!(run.stderr.contains("nothing was kept"), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert_eq!(
        snapshot(&out),
        vec![],
        "ca.pem, ca.key and the piece of server.pem are gone"
    );
}

fn openssl(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn openssl_reads_and_verifies_them() {
    if !crate::common::require("openssl", "openssl") {
        return;
    }
    let temp = temp_dir("cert-openssl");
    let out = temp.path().join("certs");
    made(
        &out,
        &[
            "--host",
            "example.test",
            "--host",
            "192.0.2.7",
            "--host",
            "[::1]",
            "--client",
            "alice",
        ],
    );
    let ok = |args: &[&str]| {
        let (success, text) = openssl(args, &out);
        assert!(success, "openssl {args:?}: {text}");
        text
    };

    let ca = ok(&["x509", "-noout", "-text", "-in", "ca.pem"]);
    for expected in [
        "CA:TRUE, pathlen:0",
        "Certificate Sign, CRL Sign",
        "NIST CURVE: P-256",
    ] {
        assert!(ca.contains(expected), "{expected}\n{ca}");
    }
    let server = ok(&["x509", "-noout", "-text", "-in", "server.pem"]);
    for expected in [
        "Subject: CN = example.test",
        "DNS:example.test, IP Address:192.0.2.7, IP Address:0:0:0:0:0:0:0:1",
        "CA:FALSE",
        "TLS Web Server Authentication",
        "Digital Signature",
        "NIST CURVE: P-256",
    ] {
        assert!(server.contains(expected), "{expected}\n{server}");
    }
    let client = ok(&["x509", "-noout", "-text", "-in", "alice.pem"]);
    assert!(client.contains("Subject: CN = alice"), "{client}");
    assert!(client.contains("TLS Web Client Authentication"), "{client}");

    ok(&["verify", "-CAfile", "ca.pem", "server.pem", "alice.pem"]);
    ok(&[
        "verify",
        "-CAfile",
        "ca.pem",
        "-purpose",
        "sslserver",
        "server.pem",
    ]);
    ok(&[
        "verify",
        "-CAfile",
        "ca.pem",
        "-purpose",
        "sslclient",
        "alice.pem",
    ]);
    ok(&[
        "verify",
        "-CAfile",
        "ca.pem",
        "-verify_hostname",
        "example.test",
        "server.pem",
    ]);
    ok(&[
        "verify",
        "-CAfile",
        "ca.pem",
        "-verify_ip",
        "::1",
        "server.pem",
    ]);
    // Each leaf is for its own side only.
    for (purpose, file) in [("sslclient", "server.pem"), ("sslserver", "alice.pem")] {
        let (success, text) = openssl(
            &["verify", "-CAfile", "ca.pem", "-purpose", purpose, file],
            &out,
        );
        assert!(!success, "{purpose} {file}: {text}");
    }
    let (success, text) = openssl(
        &[
            "verify",
            "-CAfile",
            "ca.pem",
            "-verify_hostname",
            "localhost",
            "server.pem",
        ],
        &out,
    );
    assert!(!success, "--host replaces the defaults: {text}");
    for key in ["ca.key", "server.key", "alice.key"] {
        ok(&["pkey", "-in", key, "-noout"]);
    }

    // CA 10 years, leaves 1 year.
    let valid_for = |file: &str, days: u64| {
        let seconds = (days * DAY).to_string();
        openssl(
            &["x509", "-noout", "-in", file, "-checkend", &seconds],
            &out,
        )
        .0
    };
    assert!(valid_for("ca.pem", 3649) && !valid_for("ca.pem", 3651));
    assert!(valid_for("server.pem", 364) && !valid_for("server.pem", 366));
    assert!(valid_for("alice.pem", 364) && !valid_for("alice.pem", 366));

    // Serial numbers are random: all different, and different in another run.
    let serial =
        |dir: &Path, file: &str| openssl(&["x509", "-noout", "-serial", "-in", file], dir).1;
    let again = temp.path().join("again");
    made(&again, &[]);
    let serials = [
        serial(&out, "ca.pem"),
        serial(&out, "server.pem"),
        serial(&out, "alice.pem"),
        serial(&again, "ca.pem"),
        serial(&again, "server.pem"),
    ];
    for (i, a) in serials.iter().enumerate() {
        assert!(
            a.starts_with("serial=") && a.len() == "serial=".len() + 32 + 1,
            "{a}"
        );
        assert!(serials[i + 1..].iter().all(|b| a != b), "{serials:?}");
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &Path) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in pem::certificates(ca).unwrap() {
        roots.add(cert).unwrap();
    }
    Arc::new(roots)
}

/// Moves every TLS record each side has to send to the other, until neither has any;
/// the first error either side finds in what it receives ends it.
fn pump(client: &mut Connection, server: &mut Connection) -> Result<(), rustls::Error> {
    for _ in 0..100 {
        let there = transfer(client, server)?;
        let back = transfer(server, client)?;
        if !there && !back {
            return Ok(());
        }
    }
    panic!("the two sides never stopped talking")
}

/// Moves what `from` has to send into `to`; whether there was anything.
fn transfer(from: &mut Connection, to: &mut Connection) -> Result<bool, rustls::Error> {
    let mut bytes = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut bytes).unwrap();
    }
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        to.read_tls(&mut rest).unwrap();
        to.process_new_packets()?;
    }
    Ok(!bytes.is_empty())
}

fn connect(
    client: ClientConfig,
    server: &Arc<ServerConfig>,
    name: &str,
) -> (Connection, Connection, Result<(), rustls::Error>) {
    let name = ServerName::try_from(name.to_string()).unwrap();
    let mut c = Connection::Client(ClientConnection::new(Arc::new(client), name).unwrap());
    let mut s = Connection::Server(ServerConnection::new(server.clone()).unwrap());
    let result = pump(&mut c, &mut s);
    (c, s, result)
}

/// Sends a line from the client and reads it on the server, through TLS.
fn say_hello(client: &mut Connection, server: &mut Connection) {
    client.writer().write_all(b"Alice\n").unwrap();
    pump(client, server).unwrap();
    let mut got = [0u8; 6];
    server.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"Alice\n");
}

#[test]
fn rustls_accepts_them_for_tls_and_mutual_tls() {
    let temp = temp_dir("cert-rustls");
    let out = temp.path().join("certs");
    made(&out, &["--client", "alice"]);
    let file = |name: &str| out.join(name);
    let chain = pem::certificates(&file("server.pem")).unwrap();
    let key = pem::private_key(&file("server.key")).unwrap();
    let alice = pem::certificates(&file("alice.pem")).unwrap();
    let alice_key = pem::private_key(&file("alice.key")).unwrap();
    let roots = roots(&file("ca.pem"));
    let client_config = |with_cert: bool| {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone());
        if with_cert {
            builder
                .with_client_auth_cert(alice.clone(), alice_key.clone_key())
                .unwrap()
        } else {
            builder.with_no_client_auth()
        }
    };

    // TLS: the server's certificate for localhost and 127.0.0.1, and no other name.
    let server = Arc::new(
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .unwrap(),
    );
    for name in ["localhost", "127.0.0.1"] {
        let (mut c, mut s, result) = connect(client_config(false), &server, name);
        result.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!c.is_handshaking() && !s.is_handshaking());
        say_hello(&mut c, &mut s);
    }
    let (_, _, result) = connect(client_config(false), &server, "example.test");
    let e = result.unwrap_err().to_string();
    assert!(e.contains("not valid for name"), "{e}");

    // Mutual TLS: a server that requires a client certificate from the CA takes alice's.
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .unwrap();
    let mutual = Arc::new(
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .unwrap(),
    );
    let (mut c, mut s, result) = connect(client_config(true), &mutual, "localhost");
    result.unwrap();
    let peer: Vec<CertificateDer> = s.peer_certificates().unwrap().to_vec();
    assert_eq!(peer, alice);
    say_hello(&mut c, &mut s);
    let (_, _, result) = connect(client_config(false), &mutual, "localhost");
    assert!(result.is_err(), "a client without a certificate is refused");

    // Valid from an hour before it was made (a peer's clock may lag) to a year after.
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    let check = |offset: i64| {
        let at = if offset >= 0 {
            now + Duration::from_secs(offset as u64)
        } else {
            now - Duration::from_secs(offset.unsigned_abs())
        };
        let name = ServerName::try_from("localhost").unwrap();
        verifier
            .verify_server_cert(&chain[0], &[], &name, &[], UnixTime::since_unix_epoch(at))
            .map(|_| ())
    };
    check(0).unwrap();
    check(-50 * 60).unwrap();
    check(364 * DAY as i64).unwrap();
    assert!(check(-2 * 3600).is_err(), "not valid before");
    assert!(check(366 * DAY as i64).is_err(), "expired");
}
