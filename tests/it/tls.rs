//! `tcp-hello serve` over TLS: interop with programs no one here wrote (`openssl
//! s_client`, Python's `ssl`), keys in every format the `openssl` command line writes,
//! mutual TLS, hostile input, reload and shutdown. Certificates are made at run time
//! (`common::tls`; no key is committed).
//!
//! The tests that run `openssl` (Debian's `openssl` package) or `python3` need them;
//! without them they say so and pass, or fail under `CI=true` (see `common::require`).

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::common::tls::{Certs, Pair, make_certs, tls_server};
use crate::common::*;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A rustls client trusting the test CA, with the client certificate `client` if given;
/// the handshake is done when it returns.
fn connect_tls(addr: SocketAddr, certs: &Certs, client: Option<&Pair>) -> std::io::Result<Tls> {
    let (conn, sock) = tls_client(addr, client_config(certs, client), IO_TIMEOUT)?;
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// A rustls client of `localhost` with `config`, and its socket to `addr` (reads time out
/// after `read_timeout`); nothing is sent yet.
fn tls_client(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    read_timeout: Duration,
) -> std::io::Result<(ClientConnection, TcpStream)> {
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let sock = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    sock.set_read_timeout(Some(read_timeout))?;
    sock.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok((conn, sock))
}

/// A rustls client configuration trusting `ca`, with the client certificate `client` if
/// given.
fn client_config(certs: &Certs, client: Option<&Pair>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in tcp_hello::pem::certificates(&certs.ca).unwrap() {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(pair) => {
            let chain = tcp_hello::pem::certificates(&pair.cert).unwrap();
            let key = tcp_hello::pem::private_key(&pair.key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    Arc::new(config)
}

/// Sends a ClientHello and reads what the server sends back, without ever sending the
/// client's Finished: returns the plaintext that arrived within `wait` (the server's
/// half-RTT data), or what ended the wait.
fn before_the_clients_finished(
    addr: SocketAddr,
    certs: &Certs,
    client: Option<&Pair>,
    wait: Duration,
) -> Result<Vec<u8>, std::io::Error> {
    let (mut conn, mut sock) = tls_client(addr, client_config(certs, client), wait)?;
    while conn.wants_write() {
        conn.write_tls(&mut sock)?;
    }
    // The ClientHello is all this client sends: whatever it queues next stays queued.
    loop {
        if conn.read_tls(&mut sock)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        conn.process_new_packets().map_err(std::io::Error::other)?;
        let mut plain = vec![0u8; 256];
        match conn.reader().read(&mut plain) {
            Ok(n) if n > 0 => {
                plain.truncate(n);
                return Ok(plain);
            }
            _ => continue,
        }
    }
}

fn read_line(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("read a line over TLS");
    line
}

/// Runs `openssl s_client` with `args`, `input` on stdin; returns (exit code, stdout,
/// stderr).
fn s_client(addr: SocketAddr, certs: &Certs, args: &[&str], input: &[u8]) -> Finished {
    let ca = &certs.ca;
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &addr.to_string(),
        "-servername",
        "localhost",
    ])
    .arg("-CAfile")
    .arg(ca)
    .args(["-verify_return_error", "-quiet"])
    .args(args)
    .current_dir(&certs.dir);
    run_tool(&mut cmd, Some(input), Duration::from_secs(20))
}

#[test]
fn openssl_s_client_is_greeted_over_tls_1_2_and_1_3_and_tls_1_1_is_refused() {
    if !require("openssl", "openssl") {
        return;
    }
    let certs = make_certs();
    let server = tls_server(&certs, &["-v"]);
    for version in ["-tls1_3", "-tls1_2"] {
        let done = s_client(server.addr(), &certs, &[version], b"Alice\nexit\n");
        assert_eq!(done.code, Some(0), "{version}: {}", done.stderr);
        assert_eq!(
            done.stdout, "Welcome!\r\nHello, Alice!\r\nBye!\r\n",
            "{version}: {}",
            done.stderr
        );
    }
    let done = s_client(server.addr(), &certs, &["-tls1_1"], b"Alice\n");
    assert_ne!(
        done.code,
        Some(0),
        "TLS 1.1 must be refused: {}",
        done.stdout
    );
    assert!(!done.stdout.contains("Welcome!"), "{}", done.stdout);
    let logs = server.stop_and_logs();
    assert!(
        logs.contains("TLSv1_3") && logs.contains("TLSv1_2"),
        "{logs}"
    );
    assert!(
        logs.contains("no TLS session: TLS handshake failed"),
        "{logs}"
    );
}

/// A client whose key share the server cannot use (X448) gets a HelloRetryRequest, then
/// its welcome after the handshake (not as half-RTT data: the keys for it come with the
/// second ClientHello), then its replies.
#[test]
fn a_client_sent_a_hello_retry_request_is_greeted_and_answered() {
    if !require("openssl", "openssl") {
        return;
    }
    let certs = make_certs();
    let server = tls_server(&certs, &[]);
    let done = s_client(
        server.addr(),
        &certs,
        &["-tls1_3", "-groups", "X448:X25519", "-msg"],
        b"Alice\nexit\n",
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_eq!(
        done.stdout.matches(", ServerHello").count(),
        2,
        "a HelloRetryRequest (a ServerHello), then the ServerHello: {}",
        done.stdout
    );
    // Between the lines, -msg shows the records that brought them.
    let at = |text: &str| {
        assert_eq!(
            done.stdout.matches(text).count(),
            1,
            "{text}: {}",
            done.stdout
        );
        done.stdout.find(text).unwrap()
    };
    let client_finished = done
        .stdout
        .lines()
        .find(|l| l.starts_with(">>> ") && l.ends_with(", Finished"))
        .and_then(|l| done.stdout.find(l))
        .unwrap_or_else(|| panic!("the client's Finished: {}", done.stdout));
    let (welcome, hello, bye) = (at("Welcome!\r\n"), at("Hello, Alice!\r\n"), at("Bye!\r\n"));
    assert!(
        client_finished < welcome && welcome < hello && hello < bye,
        "{}",
        done.stdout
    );
}

#[test]
fn only_tls_listeners_open_no_plain_one_and_are_announced_as_tls() {
    let certs = make_certs();
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--tls-bind", "127.0.0.1:0", "--tls-cert"])
        .arg(&certs.server.cert)
        .arg("--tls-key")
        .arg(&certs.server.key);
    let out = {
        let mut child = KillOnDrop(
            clean_env(&mut cmd)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
        let line = read_line(&mut stdout);
        drop(child);
        line
    };
    assert!(out.starts_with("listening on tls 127.0.0.1:"), "{out:?}");
    // Beside a plain listener, each is announced as what it is (the test harness reads
    // `listening on tls ADDR` too), and each speaks its own.
    let server = Server::start_with_binds(
        &[
            "--bind",
            "127.0.0.1:0",
            "--tls-bind",
            "127.0.0.1:0",
            "--tls-cert",
            &certs.server.cert.display().to_string(),
            "--tls-key",
            &certs.server.key.display().to_string(),
        ],
        2,
    );
    let mut plain = Conn::open(server.addrs[0]);
    assert_eq!(plain.text_line(), "Welcome!");
    let mut tls = BufReader::new(connect_tls(server.addrs[1], &certs, None).unwrap());
    assert_eq!(read_line(&mut tls), "Welcome!\r\n");
}

#[test]
fn every_behaviour_works_over_tls_greet_chunk_echo_and_limits() {
    let certs = make_certs();
    if !require("python3", "python3") {
        return;
    }
    // Greet, with a line too long and a 0xFF doubled.
    let server = tls_server(&certs, &["--max-line", "8"]);
    let mut tls = BufReader::new(connect_tls(server.addr(), &certs, None).unwrap());
    assert_eq!(read_line(&mut tls), "Welcome!\r\n");
    tls.get_mut().write_all(b"Bob\n0123456789\nexit\n").unwrap();
    let mut rest = String::new();
    tls.read_to_string(&mut rest)
        .expect("a clean TLS close (close_notify)");
    assert_eq!(
        rest,
        "Hello, Bob!\r\nERROR line too long (max 8 bytes), skipped\r\nBye!\r\n"
    );
    drop(server);
    // Chunk framing: the tutorial's client in Python's ssl module.
    let server = tls_server(&certs, &["--framing", "chunk"]);
    let done = run_tool(
        Command::new("python3")
            .arg(fixture("server_tutorial_client.py"))
            .arg(server.addr().port().to_string())
            .arg(&certs.ca),
        None,
        Duration::from_secs(20),
    );
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_eq!(
        done.stdout, "Welcome!\nHello, Michael!\n",
        "{}",
        done.stderr
    );
    drop(server);
    // Echo.
    let server = tls_server(&certs, &["--mode", "echo"]);
    let mut tls = connect_tls(server.addr(), &certs, None).unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    tls.write_all(&data).unwrap();
    let mut back = vec![0u8; data.len()];
    tls.read_exact(&mut back).unwrap();
    assert!(back == data, "echo over TLS differs");
    drop(server);
    // The idle timeout, with its notice, inside TLS.
    let server = tls_server(&certs, &["--idle-timeout", "1"]);
    let mut tls = BufReader::new(connect_tls(server.addr(), &certs, None).unwrap());
    assert_eq!(read_line(&mut tls), "Welcome!\r\n");
    let mut rest = String::new();
    tls.read_to_string(&mut rest).expect("a clean TLS close");
    assert_eq!(rest, "ERROR idle for 1 s, closing\r\n");
}

/// `--max-lifetime` over TLS: the notice inside the session, then its clean close
/// (close_notify), for an idle connection at its end of life.
#[test]
fn max_lifetime_closes_a_tls_connection_with_its_notice_and_a_clean_close() {
    let certs = make_certs();
    let server = tls_server(&certs, &["--max-lifetime", "1"]);
    let opened = std::time::Instant::now();
    let mut tls = BufReader::new(connect_tls(server.addr(), &certs, None).unwrap());
    assert_eq!(read_line(&mut tls), "Welcome!\r\n");
    tls.get_mut().write_all(b"Ann\n").unwrap();
    assert_eq!(read_line(&mut tls), "Hello, Ann!\r\n");
    let mut rest = String::new();
    tls.read_to_string(&mut rest).expect("a clean TLS close");
    assert_eq!(rest, "server closing this connection, reconnect\r\n");
    assert!(
        opened.elapsed() < Duration::from_secs(4),
        "{:?}",
        opened.elapsed()
    );
    drop(tls);
    let logs = server.stop_and_logs();
    assert!(logs.contains("max lifetime reached"), "{logs}");
}

#[test]
fn placeholders_over_tls_name_the_connection_and_both_addresses() {
    let certs = make_certs();
    let server = tls_server(
        &certs,
        &[
            "--welcome",
            "conn {conn}",
            "--reply",
            "Hello, {}! {peer} -> {local}",
        ],
    );
    let mut tls = BufReader::new(connect_tls(server.addr(), &certs, None).unwrap());
    let peer = tls.get_ref().sock.local_addr().unwrap();
    assert_eq!(read_line(&mut tls), "conn 1\r\n");
    tls.get_mut().write_all(b"Ann\nexit\n").unwrap();
    let mut rest = String::new();
    tls.read_to_string(&mut rest)
        .expect("a clean TLS close (close_notify)");
    assert_eq!(
        rest,
        format!("Hello, Ann! {peer} -> {}\r\nBye!\r\n", server.addr())
    );
}

#[test]
fn mutual_tls_accepts_a_certificate_from_the_ca_and_refuses_others() {
    if !require("openssl", "openssl") {
        return;
    }
    let certs = make_certs();
    let ca = certs.ca.display().to_string();
    let server = tls_server(&certs, &["--tls-client-ca", &ca]);
    // openssl s_client with alice's certificate: served.
    let done = s_client(
        server.addr(),
        &certs,
        &["-cert", "client.pem", "-key", "client-key.pem"],
        b"Alice\nexit\n",
    );
    assert_eq!(
        done.stdout, "Welcome!\r\nHello, Alice!\r\nBye!\r\n",
        "{}",
        done.stderr
    );
    // Without a certificate, and with one from another CA: no welcome.
    for args in [
        &[][..],
        &["-cert", "other-client.pem", "-key", "other-client-key.pem"],
    ] {
        let done = s_client(server.addr(), &certs, args, b"Alice\n");
        assert!(
            !done.stdout.contains("Welcome"),
            "{args:?}: {}",
            done.stdout
        );
    }
    // Our own rustls client alike.
    assert!(connect_tls(server.addr(), &certs, Some(&certs.client)).is_ok());
    let refused = connect_tls(server.addr(), &certs, Some(&certs.other_client))
        .and_then(|mut t| t.read(&mut [0u8; 16]));
    assert!(refused.is_err(), "{refused:?}");
    let logs = server.stop_and_logs();
    assert!(
        logs.contains(", client alice"),
        "the client's subject: {logs}"
    );
}

#[test]
fn certificates_from_the_openssl_command_line_in_every_key_format_load() {
    if !require("openssl", "openssl") {
        return;
    }
    let certs = make_certs();
    let dir = &certs.dir;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n\
         basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n",
    )
    .unwrap();
    // PKCS#1 RSA, SEC1 EC and PKCS#8 keys, each in the form openssl writes it.
    openssl(dir, &["genrsa", "-traditional", "-out", "rsa.key", "2048"]);
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "sec1.key",
        ],
    );
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-out",
            "pkcs8.key",
        ],
    );
    for (key, header) in [
        ("rsa.key", "BEGIN RSA PRIVATE KEY"),
        ("sec1.key", "BEGIN EC PRIVATE KEY"),
        ("pkcs8.key", "BEGIN PRIVATE KEY"),
    ] {
        assert!(
            std::fs::read_to_string(dir.join(key))
                .unwrap()
                .contains(header)
        );
        let name = key.trim_end_matches(".key");
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-key",
                key,
                "-out",
                &format!("{name}.csr"),
                "-subj",
                "/CN=localhost",
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(key), std::fs::Permissions::from_mode(0o600)).unwrap();
        let cert = dir.join(format!("{name}.pem")).display().to_string();
        let key = dir.join(key).display().to_string();
        let server = Server::start_with_binds(
            &[
                "--tls-bind",
                "127.0.0.1:0",
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
            ],
            1,
        );
        let mut tls = BufReader::new(connect_tls(server.addr(), &certs, None).unwrap());
        assert_eq!(read_line(&mut tls), "Welcome!\r\n", "{name}");
    }
}

#[test]
fn bad_certificate_files_fail_at_start_naming_the_file() {
    let certs = make_certs();
    let p = |path: &Path| path.display().to_string();
    let start = |cert: &str, key: &str, extra: &[&str]| {
        let mut args = vec![
            "--tls-bind",
            "127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ];
        args.extend_from_slice(extra);
        run_tool(
            hello_cmd("serve", &args).stdin(Stdio::null()),
            None,
            Duration::from_secs(20),
        )
    };
    let missing = p(&certs.dir.join("missing.pem"));
    // A certificate cut short: its END line is missing.
    let whole = std::fs::read_to_string(&certs.server.cert).unwrap();
    std::fs::write(certs.dir.join("cut.pem"), &whole[..whole.len() / 2]).unwrap();
    for (cert, key, says) in [
        (
            p(&certs.dir.join("cut.pem")),
            p(&certs.server.key),
            format!(
                "{}: not valid PEM: the -----BEGIN CERTIFICATE----- block has no -----END \
                 CERTIFICATE----- line",
                p(&certs.dir.join("cut.pem"))
            ),
        ),
        (
            missing.clone(),
            p(&certs.server.key),
            format!("{missing}: no such file"),
        ),
        (
            p(&certs.server.key),
            p(&certs.server.key),
            "no certificate found".to_string(),
        ),
        (
            p(&certs.server.cert),
            p(&certs.server.cert),
            "no private key found".to_string(),
        ),
        (
            p(&certs.server.cert),
            p(&certs.client.key),
            format!(
                "{} does not match {}",
                p(&certs.client.key),
                p(&certs.server.cert)
            ),
        ),
    ] {
        let done = start(&cert, &key, &[]);
        assert_eq!(done.code, Some(2), "{cert} {key}: {}", done.stderr);
        assert_eq!(done.stdout, "", "nothing is announced");
        assert!(done.stderr.contains(&says), "{says}: {}", done.stderr);
        let errors = done.stderr.lines().filter(|l| l.starts_with("tcp-hello: "));
        assert_eq!(errors.count(), 1, "one line: {}", done.stderr);
    }
    let done = start(
        &p(&certs.server.cert),
        &p(&certs.server.key),
        &["--tls-client-ca", &missing],
    );
    assert!(
        done.stderr.contains(&format!("{missing}: no such file")),
        "{}",
        done.stderr
    );
    // --tls-bind without files, files without --tls-bind.
    let done = run_tool(
        hello_cmd("serve", &["--tls-bind", "127.0.0.1:0"]).stdin(Stdio::null()),
        None,
        Duration::from_secs(20),
    );
    assert!(
        done.stderr.contains("--tls-bind needs --tls-cert"),
        "{}",
        done.stderr
    );
    let done = run_tool(
        hello_cmd(
            "serve",
            &[
                "--bind",
                "127.0.0.1:0",
                "--tls-cert",
                &p(&certs.server.cert),
            ],
        )
        .stdin(Stdio::null()),
        None,
        Duration::from_secs(20),
    );
    assert!(done.stderr.contains("add --tls-bind"), "{}", done.stderr);
}

#[test]
fn a_private_key_readable_by_others_is_warned_about() {
    let certs = make_certs();
    use std::os::unix::fs::PermissionsExt;
    let key = &certs.server.key;
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let server = tls_server(&certs, &[]);
    let logs = server.stop_and_logs();
    assert!(
        logs.contains("the private key is readable by other users") && logs.contains("chmod 600"),
        "{logs}"
    );
}

/// The warning comes with every load of the key, a reload's too: a key made readable by
/// others while the server runs is warned about at the next SIGHUP, and again at the
/// one after.
#[test]
fn a_private_key_made_readable_by_others_is_warned_about_on_every_reload() {
    use std::os::unix::fs::PermissionsExt;
    let certs = make_certs();
    let p = |path: &Path| path.display().to_string();
    let server = Server::start_with_binds(
        &[
            "--tls-bind",
            "127.0.0.1:0",
            "--tls-cert",
            &p(&certs.server.cert),
            "--tls-key",
            &p(&certs.server.key),
        ],
        1,
    );
    let warnings = || {
        server
            .logs_so_far()
            .matches("the private key is readable by other users")
            .count()
    };
    // Announced, so loaded: a private key is not warned about.
    assert_eq!(warnings(), 0, "{}", server.logs_so_far());
    let readable = std::fs::Permissions::from_mode(0o644);
    std::fs::set_permissions(&certs.server.key, readable).unwrap();
    for reloads in 1..=2 {
        server.signal("HUP");
        assert!(
            eventually(IO_TIMEOUT, || warnings() == reloads),
            "{reloads} reloads: {}",
            server.logs_so_far()
        );
    }
    let logs = server.stop_and_logs();
    assert!(
        logs.contains(&format!(
            "{}: the private key is readable by other users; make it private with `chmod 600 {}`",
            p(&certs.server.key),
            p(&certs.server.key)
        )),
        "{logs}"
    );
}

#[test]
fn plain_text_on_a_tls_port_is_told_and_a_client_hello_on_a_plain_port_is_closed() {
    let certs = make_certs();
    let server = Server::start_with_binds(
        &[
            "-v",
            "--bind",
            "127.0.0.1:0",
            "--tls-bind",
            "127.0.0.1:0",
            "--tls-cert",
            &certs.server.cert.display().to_string(),
            "--tls-key",
            &certs.server.key.display().to_string(),
        ],
        2,
    );
    let (plain, tls) = (server.addrs[0], server.addrs[1]);
    // nc or telnet on the TLS port: one plain line saying what to do, then the close.
    let mut c = Conn::open(tls);
    c.send("Alice\n");
    assert_eq!(
        String::from_utf8_lossy(&c.rest()),
        "ERROR this port speaks TLS: connect with TLS (tcp-hello client --tls, openssl s_client)\r\n"
    );
    // Random bytes that begin like a handshake: closed, nothing else.
    let mut c = Conn::open(tls);
    c.send(b"\x16\x03\x01\x00\x05garbage-garbage");
    assert!(!String::from_utf8_lossy(&c.rest()).contains("Welcome"));
    // A TLS client on the plain port: its ClientHello closes the connection at once.
    let refused = connect_tls(plain, &certs, None);
    assert!(refused.is_err(), "a handshake with a plain port");
    // Everyone else is served meanwhile.
    let mut ok = BufReader::new(connect_tls(tls, &certs, None).unwrap());
    assert_eq!(read_line(&mut ok), "Welcome!\r\n");
    drop(ok);
    let logs = server.stop_and_logs();
    assert!(logs.contains("plain text on a TLS port"), "{logs}");
    assert!(logs.contains("a TLS handshake on a plain port"), "{logs}");
    for line in logs
        .lines()
        .filter(|l| l.contains(" closed: ") && !l.contains("conn 4 "))
    {
        assert!(
            line.contains("DEBUG"),
            "failed handshakes log at debug: {line}"
        );
    }
}

/// Clients that start a handshake and stop (a scanner, slowloris over TLS) are closed
/// at the handshake timeout, while everyone else is served; afterwards the server's
/// threads and file descriptors are back where they were.
#[test]
fn half_done_handshakes_end_at_the_timeout_while_others_are_served() {
    let certs = make_certs();
    let n = 1000;
    let _fds = raise_fd_limit(n as u64 + 300);
    // Thread counts show connections freed: no thread may park for the next one.
    let server = tls_server(
        &certs,
        &["-q", "--tls-handshake-timeout", "1", "--thread-cache", "0"],
    );
    let (threads, fds) = (server.proc_status("Threads"), server.fd_count());
    let mut stalled = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect_timeout(&server.addr(), IO_TIMEOUT).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        // The first bytes of a ClientHello, and no more.
        s.write_all(b"\x16\x03\x01\x00\xc8\x01").unwrap();
        stalled.push(s);
    }
    let mut ok = BufReader::new(connect_tls(server.addr(), &certs, None).unwrap());
    assert_eq!(read_line(&mut ok), "Welcome!\r\n");
    drop(ok);
    // Each is closed by the server (EOF, or a reset), within the timeout and a margin.
    for (i, s) in stalled.iter_mut().enumerate() {
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) => assert!(
                matches!(e.kind(), std::io::ErrorKind::ConnectionReset),
                "connection {i}: {e}"
            ),
        }
    }
    drop(stalled);
    assert!(
        eventually(IO_TIMEOUT, || server.proc_status("Threads") <= threads
            && server.fd_count() <= fds),
        "threads {} (idle {threads}), fds {} (idle {fds})",
        server.proc_status("Threads"),
        server.fd_count()
    );
}

#[test]
fn sighup_reloads_the_certificate_for_new_connections_and_a_broken_file_keeps_the_old() {
    let certs = make_certs();
    let dir = &certs.dir;
    // The server reads cert.pem and cert.key, which start as copies of server's.
    let (cert, key) = (dir.join("cert.pem"), dir.join("cert.key"));
    std::fs::copy(&certs.server.cert, &cert).unwrap();
    std::fs::copy(&certs.server.key, &key).unwrap();
    let server = Server::start_with_binds(
        &[
            "--tls-bind",
            "127.0.0.1:0",
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
        ],
        1,
    );
    let serial = |certs: &Certs| -> Vec<u8> {
        let tls = connect_tls(server.addr(), certs, None).unwrap();
        tls.conn.peer_certificates().unwrap()[0].as_ref().to_vec()
    };
    let before = serial(&certs);
    let open = BufReader::new(connect_tls(server.addr(), &certs, None).unwrap());
    // A new certificate for the same names: issued again, so different bytes.
    std::fs::copy(&certs.renewed.cert, &cert).unwrap();
    std::fs::copy(&certs.renewed.key, &key).unwrap();
    server.signal("HUP");
    assert!(
        eventually(IO_TIMEOUT, || server.logs_so_far().contains("reloaded")),
        "{}",
        server.logs_so_far()
    );
    let after = serial(&certs);
    assert_ne!(before, after, "new connections get the new certificate");
    assert_eq!(
        after,
        tcp_hello::pem::certificates(&cert).unwrap()[0].as_ref()
    );
    // The connection opened before is untouched.
    let mut open = open;
    open.get_mut().write_all(b"Alice\n").unwrap();
    assert_eq!(read_line(&mut open), "Welcome!\r\n");
    assert_eq!(read_line(&mut open), "Hello, Alice!\r\n");
    // A broken file: the reload fails, naming it, and the certificate in use stays.
    std::fs::write(&key, "not a key\n").unwrap();
    server.signal("HUP");
    assert!(
        eventually(IO_TIMEOUT, || server
            .logs_so_far()
            .contains("reload failed")),
        "{}",
        server.logs_so_far()
    );
    assert!(server.logs_so_far().contains(&key.display().to_string()));
    assert_eq!(serial(&certs), after);
}

/// TLS 1.3 without client certificates: the welcome leaves with the server's first
/// flight, so a client has it before it has even sent its Finished; with mutual TLS,
/// not before the client has proved who it is.
#[test]
fn the_welcome_leaves_with_the_servers_first_flight_unless_the_client_must_prove_itself() {
    let certs = make_certs();
    let server = tls_server(&certs, &[]);
    let early = before_the_clients_finished(server.addr(), &certs, None, IO_TIMEOUT)
        .expect("the welcome before the client's Finished");
    assert_eq!(early, b"Welcome!\r\n");
    let ca = certs.ca.display().to_string();
    let mutual = tls_server(&certs, &["--tls-client-ca", &ca]);
    let quiet = Duration::from_millis(300);
    match before_the_clients_finished(mutual.addr(), &certs, Some(&certs.client), quiet) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("mutual TLS: nothing before the client's Finished, got {other:?}"),
    }
    // The full handshake still gets the welcome, then answers.
    let mut c = BufReader::new(connect_tls(mutual.addr(), &certs, Some(&certs.client)).unwrap());
    assert_eq!(read_line(&mut c), "Welcome!\r\n");
    c.get_mut().write_all(b"Alice\n").unwrap();
    assert_eq!(read_line(&mut c), "Hello, Alice!\r\n");
}

/// A client whose first line comes with its Finished (as a client does once it has the
/// welcome from the server's first flight) gets the session tickets in the same segment
/// as the reply to that line: two segments from the server in all, not three.
#[test]
fn the_session_tickets_leave_with_the_reply_to_a_line_sent_with_the_clients_finished() {
    let certs = make_certs();
    if !require("ss", "iproute2") {
        return;
    }
    let server = tls_server(&certs, &[]);
    let (mut conn, mut sock) =
        tls_client(server.addr(), client_config(&certs, None), IO_TIMEOUT).unwrap();
    conn.write_tls(&mut sock).unwrap();
    while conn.is_handshaking() {
        assert!(
            conn.read_tls(&mut sock).unwrap() > 0,
            "closed in the handshake"
        );
        conn.process_new_packets().unwrap();
    }
    // The client's Finished and its first line leave in one write.
    conn.writer().write_all(b"Alice\n").unwrap();
    conn.write_tls(&mut sock).unwrap();
    assert!(!conn.wants_write(), "one write took both records");
    let mut got = Vec::new();
    while !got.ends_with(b"Hello, Alice!\r\n") {
        assert!(
            conn.read_tls(&mut sock).unwrap() > 0,
            "closed before the reply"
        );
        conn.process_new_packets().unwrap();
        let mut plain = [0u8; 256];
        while let Ok(n @ 1..) = conn.reader().read(&mut plain) {
            got.extend_from_slice(&plain[..n]);
        }
    }
    assert_eq!(got, b"Welcome!\r\nHello, Alice!\r\n");
    // The kernel's count of the segments with data this socket received.
    let port = sock.local_addr().unwrap().port();
    let out = Command::new("ss")
        .args(["-tinH", "state", "established", &format!("sport = :{port}")])
        .output()
        .expect("run ss");
    let info = String::from_utf8_lossy(&out.stdout);
    let segments = info
        .split_whitespace()
        .find_map(|field| field.strip_prefix("data_segs_in:"))
        .unwrap_or_else(|| panic!("no data_segs_in in ss's output: {info:?}"));
    assert_eq!(
        segments, "2",
        "the first flight with the welcome, then the tickets with the reply: {info}"
    );
}

/// A client that sends nothing after its handshake still gets its session tickets (they
/// leave before the server waits for it), and its next connection resumes.
#[test]
fn a_client_silent_after_its_handshake_still_gets_tickets_and_resumes() {
    let certs = make_certs();
    let server = tls_server(&certs, &[]);
    let config = client_config(&certs, None);
    let connect = || {
        let (conn, sock) = tls_client(server.addr(), config.clone(), IO_TIMEOUT).unwrap();
        let mut tls = BufReader::new(StreamOwned::new(conn, sock));
        assert_eq!(read_line(&mut tls), "Welcome!\r\n");
        tls.into_inner()
    };
    let mut first = connect();
    assert_eq!(
        first.conn.handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
    // The welcome came with the first flight; what comes next, unasked, is the tickets.
    assert!(
        first.conn.read_tls(&mut first.sock).unwrap() > 0,
        "the tickets"
    );
    first.conn.process_new_packets().unwrap();
    let second = connect();
    assert_eq!(
        second.conn.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
}

/// Up to a quarter of `--thread-cache` TLS connections are served by the thread that ran
/// their handshake, with no hand-off; the next ones are each handed to a serving thread,
/// so that however many are held, at most that many keep a handshake's deep stack.
#[test]
fn tls_connections_stay_on_their_handshake_thread_up_to_the_thread_cache_size() {
    let certs = make_certs();
    let server = tls_server(&certs, &["--thread-cache", "8"]);
    let idle = server.proc_status("Threads");
    let mut open = Vec::new();
    for (n, threads) in [(1, idle + 1), (2, idle + 2), (3, idle + 4)] {
        let mut c = BufReader::new(connect_tls(server.addr(), &certs, None).unwrap());
        assert_eq!(read_line(&mut c), "Welcome!\r\n");
        // The welcome left within the handshake; the reply comes after it, from the
        // thread that serves: that thread exists now, and so does one that handed the
        // connection to it.
        c.get_mut().write_all(b"Alice\n").unwrap();
        assert_eq!(read_line(&mut c), "Hello, Alice!\r\n");
        assert_eq!(
            server.proc_status("Threads"),
            threads,
            "connection {n}: one thread each for the first two; the third's handshake \
             thread hands it to a serving thread"
        );
        open.push(c);
    }
    for c in &mut open {
        c.get_mut().write_all(b"exit\n").unwrap();
        let mut rest = String::new();
        c.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "Bye!\r\n");
    }
}

/// A TLS 1.2 client that asks to renegotiate (`R` to `openssl s_client`) is refused with
/// the no_renegotiation alert, and the server reads on rather than take the missing
/// plaintext for the idle timeout. openssl gives up then with a fatal alert: the close
/// line names it, and nothing is closed or counted as idle.
#[test]
fn a_tls_1_2_renegotiation_request_is_refused_and_not_taken_for_the_idle_timeout() {
    if !require("openssl", "openssl") {
        return;
    }
    let certs = make_certs();
    let server = tls_server(&certs, &["--metrics", "127.0.0.1:0"]);
    let metrics = metrics_addr(&server);
    // Not `s_client` above: its -quiet implies -ign_eof, under which `R` is a name, not
    // the command to renegotiate. The lines are sent one at a time, as typed.
    let mut s_client = Command::new("openssl");
    s_client
        .args(["s_client", "-tls1_2", "-verify_return_error"])
        .args([
            "-connect",
            &server.addr().to_string(),
            "-servername",
            "localhost",
        ])
        .arg("-CAfile")
        .arg(&certs.ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut s_client = KillOnDrop(s_client.spawn().expect("run openssl s_client"));
    let mut typed = s_client.0.stdin.take().expect("stdin is piped");
    let printed = s_client.0.stdout.take().expect("stdout is piped");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(printed).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |text: &str| {
        while !seen.iter().any(|l: &String| l.contains(text)) {
            let line = lines
                .recv_timeout(IO_TIMEOUT)
                .unwrap_or_else(|e| panic!("s_client did not print {text:?} ({e}): {seen:?}"));
            seen.push(line);
        }
    };
    typed.write_all(b"Bob\n").unwrap();
    wait_for("Hello, Bob!");
    typed.write_all(b"R\n").unwrap();
    let closed = |logs: &str| {
        logs.lines()
            .find(|l| l.contains("conn 1 closed"))
            .map(str::to_string)
    };
    assert!(
        eventually(IO_TIMEOUT, || closed(&server.logs_so_far()).is_some()),
        "{}",
        server.logs_so_far()
    );
    let close = closed(&server.logs_so_far()).unwrap();
    assert!(
        close.ends_with("client sent the TLS alert HandshakeFailure"),
        "{close}"
    );
    drop(typed);
    let samples = metrics_samples(metrics);
    assert_eq!(samples["tcp_hello_closes_total{reason=\"idle\"}"], 0);
    assert_eq!(samples["tcp_hello_closes_total{reason=\"read_error\"}"], 1);
    // What s_client printed to the end: no idle notice.
    while let Ok(line) = lines.recv_timeout(IO_TIMEOUT) {
        assert!(!line.contains("ERROR idle"), "{line}");
    }
    // The server serves on.
    let mut next = BufReader::new(connect_tls(server.addr(), &certs, None).unwrap());
    assert_eq!(read_line(&mut next), "Welcome!\r\n");
}

#[test]
fn sigterm_over_tls_answers_then_says_shutting_down_then_close_notify() {
    let certs = make_certs();
    let server = tls_server(&certs, &["--delay", "200"]);
    let mut busy = BufReader::new(connect_tls(server.addr(), &certs, None).unwrap());
    let mut idle = BufReader::new(connect_tls(server.addr(), &certs, None).unwrap());
    assert_eq!(read_line(&mut busy), "Welcome!\r\n");
    assert_eq!(read_line(&mut idle), "Welcome!\r\n");
    busy.get_mut().write_all(b"a\nb\nc\n").unwrap();
    assert_eq!(read_line(&mut busy), "Hello, a!\r\n");
    server.signal("TERM");
    // read_to_string fails on a close without close_notify (rustls: UnexpectedEof).
    let mut rest = String::new();
    idle.read_to_string(&mut rest)
        .expect("close_notify after the notice");
    assert_eq!(rest, "server shutting down\r\n");
    let mut rest = String::new();
    busy.read_to_string(&mut rest)
        .expect("close_notify after the notice");
    assert_eq!(rest, "Hello, b!\r\nHello, c!\r\nserver shutting down\r\n");
    let (code, logs) = server.wait(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{logs}");
}

/// A line far longer than --max-line, sent over TLS without a newline: the client gets
/// the error line, the next line is answered, and the server's memory stays flat
/// (rustls holds at most a record of ciphertext and a bounded plaintext buffer).
#[test]
fn a_64_mib_line_over_tls_keeps_memory_bounded() {
    let certs = make_certs();
    let server = tls_server(&certs, &["-q"]);
    let mut tls = connect_tls(server.addr(), &certs, None).unwrap();
    let mut welcome = [0u8; 10];
    tls.read_exact(&mut welcome).unwrap();
    let before = server.proc_status("VmRSS");
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..64 {
        tls.write_all(&chunk).unwrap();
    }
    tls.write_all(b"\nBob\n").unwrap();
    let mut reader = BufReader::new(tls);
    assert_eq!(
        read_line(&mut reader),
        "ERROR line too long (max 8192 bytes), skipped\r\n"
    );
    assert_eq!(read_line(&mut reader), "Hello, Bob!\r\n");
    let peak = server.proc_status("VmHWM");
    eprintln!("64 MiB line over TLS: server RSS {before} kB before, peak {peak} kB");
    assert!(
        peak < before + 16 * 1024,
        "memory grew with the line: {before} kB -> peak {peak} kB"
    );
}

/// The bundled client and the server, both over TLS with mutual TLS: served with the
/// client's certificate; without one, exit 7 and the message that says what to give.
#[test]
fn our_client_and_our_server_speak_mutual_tls() {
    let certs = make_certs();
    let p = |path: &Path| path.display().to_string();
    let server = tls_server(&certs, &["--tls-client-ca", &p(&certs.ca)]);
    let addr = server.addr().to_string();
    let run = |extra: &[&str]| {
        let mut args = vec!["--tls", "--connect", &addr, "--tls-ca"];
        let ca = p(&certs.ca);
        args.push(&ca);
        args.extend_from_slice(extra);
        args.push("Bob");
        run_tool(
            hello_cmd("client", &args).stdin(Stdio::null()),
            None,
            Duration::from_secs(20),
        )
    };
    let (cert, key) = (p(&certs.client.cert), p(&certs.client.key));
    let done = run(&["--tls-cert", &cert, "--tls-key", &key]);
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert_eq!(done.stdout, "Welcome!\nHello, Bob!\nBye!\n");
    let done = run(&[]);
    assert_eq!(done.code, Some(7), "{}", done.stderr);
    assert!(
        done.stderr
            .contains("the server requires a client certificate"),
        "{}",
        done.stderr
    );
    let logs = server.stop_and_logs();
    assert!(logs.contains("client said exit, client alice"), "{logs}");
}

/// `serve -v` with a TLS listener for mutual TLS, with the certificates of
/// `common::tls`.
fn mutual_tls_server(certs: &Certs) -> Server {
    tls_server(
        certs,
        &["-v", "--tls-client-ca", &certs.ca.display().to_string()],
    )
}

/// `tcp-hello client` saying `Bob` over TLS to `server`, with the client certificate
/// `pair`.
fn client_with_certificate(server: &Server, certs: &Certs, pair: &Pair) -> Finished {
    let p = |path: &Path| path.display().to_string();
    run_tool(
        hello_cmd(
            "client",
            &[
                "--tls",
                "--connect",
                &server.addr().to_string(),
                "--tls-ca",
                &p(&certs.ca),
                "--tls-cert",
                &p(&pair.cert),
                "--tls-key",
                &p(&pair.key),
                "Bob",
            ],
        )
        .stdin(Stdio::null()),
        None,
        Duration::from_secs(20),
    )
}

/// Mutual TLS refuses an expired client certificate from the right CA, as it refuses one
/// from another CA; the close line (at debug) says why.
#[test]
fn mutual_tls_refuses_an_expired_client_certificate() {
    let certs = make_certs();
    let server = mutual_tls_server(&certs);
    for (pair, served) in [(&certs.client, true), (&certs.expired_client, false)] {
        let done = client_with_certificate(&server, &certs, pair);
        assert_eq!(done.code == Some(0), served, "{}", done.stderr);
        assert_eq!(
            done.stdout.contains("Hello, Bob!"),
            served,
            "{}",
            done.stdout
        );
    }
    let logs = server.stop_and_logs();
    assert!(
        logs.contains("TLS handshake failed: invalid peer certificate: certificate expired"),
        "{logs}"
    );
}

/// Mutual TLS refuses a certificate from the right CA, for client authentication,
/// whose key usage does not allow digitalSignature (webpki does not check it on the
/// client's certificate), and says so in the close line; one without the key usage
/// extension is served.
#[test]
fn mutual_tls_refuses_a_client_certificate_whose_key_usage_lacks_digital_signature() {
    let certs = make_certs();
    let server = mutual_tls_server(&certs);
    for (pair, served) in [
        (&certs.no_key_usage_client, true),
        (&certs.crl_sign_only_client, false),
    ] {
        let done = client_with_certificate(&server, &certs, pair);
        assert_eq!(done.code == Some(0), served, "{}", done.stderr);
        assert_eq!(
            done.stdout.contains("Hello, Bob!"),
            served,
            "{}",
            done.stdout
        );
    }
    let logs = server.stop_and_logs();
    assert!(logs.contains(", client no-key-usage"), "{logs}");
    assert!(!logs.contains(", client crl-signer"), "{logs}");
    assert!(
        logs.contains(
            "no TLS session: TLS handshake failed: invalid peer certificate: the client \
             certificate's keyUsage lacks digitalSignature"
        ),
        "{logs}"
    );
}

/// A client certificate's names are the client's to choose: its CN, or its only DNS
/// SAN, reach the open and close lines escaped as a client's line is, each line whole.
#[test]
fn client_certificate_names_reach_the_log_escaped() {
    use crate::common::tls::{HOSTILE_DNS_NAME, HOSTILE_NAME};
    let certs = make_certs();
    let server = mutual_tls_server(&certs);
    for pair in [&certs.hostile_cn_client, &certs.hostile_dns_client] {
        let done = client_with_certificate(&server, &certs, pair);
        assert_eq!(done.code, Some(0), "{}", done.stderr);
        assert!(done.stdout.contains("Hello, Bob!"), "{}", done.stdout);
    }
    let logs = server.stop_and_logs();
    let escaped = |name: &str| tcp_hello::protocol::LogText(name.as_bytes()).to_string();
    for name in [HOSTILE_NAME, HOSTILE_DNS_NAME] {
        let escaped = format!(", client {}", escaped(name));
        assert!(!escaped.contains(['\n', '\x1b', '\u{202E}']), "{escaped}");
        let lines: Vec<&str> = logs.lines().filter(|l| l.contains(&escaped)).collect();
        assert_eq!(
            lines.len(),
            2,
            "an open and a close line with {escaped}: {logs}"
        );
        assert!(lines[0].contains(" open: "), "{}", lines[0]);
        assert!(lines[1].contains(" closed: "), "{}", lines[1]);
    }
    assert!(!logs.contains(['\x1b', '\u{202E}']), "{logs}");
    assert!(
        !logs.lines().any(|l| l.starts_with("[2026-01-01")),
        "a forged line: {logs}"
    );
}

/// A client that sends its ClientHello and never reads, so that the server's flight (a
/// certificate of about 60 KB) cannot all be written: the handshake still ends at
/// `--tls-handshake-timeout`, even with no write timeout. A small MSS and receive buffer
/// keep the server's send buffer small on loopback, as a real network path does.
#[cfg(target_os = "linux")]
#[test]
fn a_handshake_whose_flight_the_client_never_reads_ends_at_the_handshake_timeout() {
    use socket2::{Domain, Protocol, Socket, Type};
    let temp = temp_dir("bigcert");
    let dir = temp.path();
    let mut args = vec!["--out".to_string(), dir.display().to_string()];
    for i in 0..1500 {
        args.push("--host".into());
        args.push(format!("name-{i}.a-long-enough-domain.example"));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let made = run_tool(&mut hello_cmd("cert", &refs), None, IO_TIMEOUT);
    assert_eq!(made.code, Some(0), "{}", made.stderr);
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    let server = Server::start_with_binds(
        &[
            "-v",
            "--tls-bind",
            "127.0.0.1:0",
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
            "--tls-handshake-timeout",
            "1",
            "--write-timeout",
            "0",
        ],
        1,
    );
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    socket.set_tcp_mss(536).unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    socket
        .connect_timeout(&server.addr().into(), IO_TIMEOUT)
        .unwrap();
    let mut sock = TcpStream::from(socket);
    // Any client's ClientHello: this one never gets as far as checking the certificate.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let mut client =
        ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    while client.wants_write() {
        client.write_tls(&mut sock).unwrap();
    }
    assert!(
        eventually(IO_TIMEOUT, || server
            .logs_so_far()
            .contains("no TLS session: TLS handshake timed out")),
        "the handshake outlived its timeout: {}",
        server.logs_so_far()
    );
    drop(sock);
}

/// A ClientHello announced larger than the server takes is refused as soon as its
/// header is read, and a flight of more than the server reads before answering (here a
/// ClientHello just within the limit, split over two records) as soon as that much has
/// come: not at the handshake timeout, and each with a debug close line saying why.
#[test]
fn a_client_hello_over_the_read_limit_is_refused_at_once() {
    let certs = make_certs();
    let server = tls_server(&certs, &["-v", "--tls-handshake-timeout", "60"]);
    let too_large = tcp_hello::tls::CLIENT_HELLO_LIMIT + 1;
    let mut c = Conn::open(server.addr());
    let mut hello = b"\x16\x03\x01\x40\x00\x01".to_vec();
    hello.extend_from_slice(&(too_large as u32).to_be_bytes()[1..]);
    hello.extend_from_slice(&[0x03; 1000]);
    c.send(&hello);
    assert_closed_without_a_byte(&mut c.stream, "an oversized ClientHello");
    // The largest ClientHello taken, in two records: five bytes over the flight limit.
    let limit = tcp_hello::tls::CLIENT_HELLO_LIMIT;
    let mut split = b"\x16\x03\x01\x20\x00\x01".to_vec();
    split.extend_from_slice(&(limit as u32).to_be_bytes()[1..]);
    split.resize(5 + 0x2000, 0x03);
    let second = 4 + limit - 0x2000;
    split.extend_from_slice(&[0x16, 0x03, 0x01]);
    split.extend_from_slice(&(second as u16).to_be_bytes());
    split.resize(split.len() + second, 0x03);
    let mut c = Conn::open(server.addr());
    // The server may close before taking the last bytes, and reset.
    let _ = c.stream.write_all(&split);
    assert_closed_without_a_byte(&mut c.stream, "a flight over the limit");
    // Everyone else is served.
    let mut ok = BufReader::new(connect_tls(server.addr(), &certs, None).unwrap());
    assert_eq!(read_line(&mut ok), "Welcome!\r\n");
    drop(ok);
    let logs = server.stop_and_logs();
    let line = |says: &str| {
        logs.lines()
            .find(|l| l.contains(" closed: ") && l.contains(says))
            .unwrap_or_else(|| panic!("no close line with {says:?}: {logs}"))
            .to_string()
    };
    let hello = line(&format!(
        "TLS handshake refused: a ClientHello of {too_large} bytes, more than the {limit} taken"
    ));
    assert!(hello.contains("DEBUG"), "{hello}");
    let flight = line(&format!(
        "TLS handshake refused: more than {} bytes of handshake from the client before an answer",
        tcp_hello::tls::FLIGHT_LIMIT
    ));
    assert!(flight.contains("DEBUG"), "{flight}");
}

/// Whether the server has closed `stream` (EOF or a reset), without waiting: `None`
/// while it is open and silent.
fn closed_now(stream: &TcpStream) -> Option<bool> {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let closed = match (&*stream).read(&mut byte) {
        Ok(0) => Some(true),
        Ok(_) => Some(false),
        Err(e) if e.kind() == ErrorKind::WouldBlock => None,
        Err(_) => Some(true),
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// The first bytes of a ClientHello, and no more.
const STALLED_HELLO: &[u8] = b"\x16\x03\x01\x00\xc8\x01";

/// `--tls-max-handshakes` and `--tls-max-handshakes-per-source`: past either, a new
/// handshake ends the oldest under way (of its address, or of all), long before the
/// handshake timeout; a real client still gets through a flood of stalled ones.
#[test]
fn handshakes_under_way_are_capped_and_the_oldest_gives_way_to_a_new_one() {
    let certs = make_certs();
    let server = tls_server(
        &certs,
        &[
            "-v",
            "--tls-handshake-timeout",
            "60",
            "--tls-max-handshakes",
            "4",
            "--tls-max-handshakes-per-source",
            "2",
        ],
    );
    let stalled_from = |ip: [u8; 4]| {
        let mut s = connect_from(ip.into(), server.addr());
        s.write_all(STALLED_HELLO).unwrap();
        s
    };
    let closed = |conns: &[TcpStream]| conns.iter().filter(|s| closed_now(s) == Some(true)).count();
    // Five from one address, two at most under way: three give way, whatever order
    // their threads start in.
    let ones: Vec<_> = (0..5).map(|_| stalled_from([127, 0, 0, 1])).collect();
    assert!(
        eventually(IO_TIMEOUT, || closed(&ones) == 3),
        "{} of 5 closed; logs: {}",
        closed(&ones),
        server.logs_so_far()
    );
    // Three from other addresses: five under way against four, so the oldest of all,
    // one from 127.0.0.1, gives way; those from the others stay.
    let others = [
        stalled_from([127, 0, 0, 2]),
        stalled_from([127, 0, 0, 2]),
        stalled_from([127, 0, 0, 3]),
    ];
    assert!(
        eventually(IO_TIMEOUT, || closed(&ones) == 4),
        "{} of 5 closed",
        closed(&ones)
    );
    assert_eq!(closed(&others), 0, "the newer handshakes stay");
    // A real client comes through, as the oldest stalled one gives way.
    let mut ok = BufReader::new(connect_tls(server.addr(), &certs, None).unwrap());
    assert_eq!(read_line(&mut ok), "Welcome!\r\n");
    drop(ok);
    assert!(
        eventually(IO_TIMEOUT, || closed(&ones) == 5),
        "{} of 5 closed",
        closed(&ones)
    );
    assert_eq!(closed(&others), 0, "the newer handshakes stay");
    let logs = server.stop_and_logs();
    assert!(
        logs.contains(
            "for a newer one: 2 under way from its address (--tls-max-handshakes-per-source)"
        ),
        "{logs}"
    );
    let ended = logs
        .lines()
        .filter(|l| l.contains("DEBUG") && l.contains("TLS handshake ended for a newer one"))
        .count();
    assert_eq!(ended, 5, "{logs}");
}

/// The full-size measurement: 3,000 and 5,000 connections, each sending a ClientHello it
/// never finishes, as the issue's attack (64 KB of one announcing 65,531 bytes, from one
/// address) and as the worst the limits let through (the largest ClientHello taken, all
/// but its last bytes, from 30 addresses so that only `--tls-max-handshakes` applies).
/// Prints the server's RSS idle, under the attack and once the connections are closed;
/// checks that a real client is served meanwhile and that the growth stays within
/// `--tls-max-handshakes` (1,024) times 64 KiB. Run with
/// `cargo test --release --test it -- --ignored --nocapture tls::full_size`.
#[test]
#[ignore]
fn full_size_half_open_handshakes_keep_memory_bounded() {
    let certs = make_certs();
    let _fds = raise_fd_limit(5_300);
    let issue = {
        let mut hello = b"\x16\x03\x01\x40\x00\x01\x00\xff\xfb\x03\x03".to_vec();
        hello.resize(5 + 0x4000, b'A');
        for _ in 0..2 {
            hello.extend_from_slice(b"\x16\x03\x01\x40\x00");
            hello.resize(hello.len() + 0x4000, b'B');
        }
        hello.extend_from_slice(b"\x16\x03\x01\x3a\x98");
        hello.resize(hello.len() + 15_000, b'C');
        hello
    };
    let largest = {
        let limit = tcp_hello::tls::CLIENT_HELLO_LIMIT as u32;
        let mut hello = b"\x16\x03\x01\x40\x00\x01".to_vec();
        hello.extend_from_slice(&limit.to_be_bytes()[1..]);
        hello.resize(16_000, b'A');
        hello
    };
    for (what, hello, sources) in [
        ("64 KB, 1 address", &issue, 1),
        ("16 KB, 30 addresses", &largest, 30),
    ] {
        for n in [3_000, 5_000] {
            let server = tls_server(&certs, &["-q", "--tls-handshake-timeout", "120"]);
            let idle = server.proc_status("VmRSS");
            let mut open = Vec::with_capacity(n);
            for i in 0..n {
                let from = [127, 0, 0, 1 + (i % sources) as u8];
                let mut s = connect_from(from.into(), server.addr());
                // The server may close it before it takes everything.
                let _ = s.write_all(hello);
                open.push(s);
            }
            let mut ok = BufReader::new(connect_tls(server.addr(), &certs, None).unwrap());
            assert_eq!(read_line(&mut ok), "Welcome!\r\n");
            drop(ok);
            let attacked = server.proc_status("VmRSS");
            let threads = server.proc_status("Threads");
            drop(open);
            // The handshake threads that are not parked end as their connections close.
            eventually(IO_TIMEOUT, || server.proc_status("Threads") <= 2 * 64 + 4);
            let after = server.proc_status("VmRSS");
            eprintln!(
                "{n} half-open handshakes ({what}): server RSS idle {:.1} MB, under attack \
                 {:.1} MB ({threads} threads), after they closed {:.1} MB",
                idle as f64 / 1024.0,
                attacked as f64 / 1024.0,
                after as f64 / 1024.0
            );
            assert!(
                attacked < idle + 1024 * 64,
                "{n} ({what}): {idle} kB -> {attacked} kB"
            );
        }
    }
}
