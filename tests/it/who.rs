//! The templates' connection facts (`{tls_version}`, `{tls_cipher}`, `{sni}`, `{alpn}`,
//! `{client_cn}`, `{proxied_by}`, `{age}`) over plain TCP, TLS and a PROXY header, and
//! their refusal over UDP. Certificates are made at run time (`common::tls`).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crate::common::tls::{Certs, Pair, make_certs, tls_server};
use crate::common::*;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Every fact, between bars, after the name.
const FACTS: &str = "{}|{tls_version}|{tls_cipher}|{sni}|{alpn}|{client_cn}|{proxied_by}|{age}";

/// The fields of a reply to [`FACTS`]; the age is checked to be a number of seconds
/// with 3 decimals, below a minute, and left out.
fn fields(reply: &str) -> Vec<String> {
    let mut fields: Vec<String> = reply.split('|').map(str::to_string).collect();
    assert_eq!(fields.len(), 8, "{reply:?}");
    let age = fields.pop().unwrap();
    let secs: f64 = age.parse().unwrap_or_else(|_| panic!("age {age:?}"));
    assert!((0.0..60.0).contains(&secs), "{age}");
    assert_eq!(age.split('.').nth(1).map(str::len), Some(3), "{age}");
    fields
}

#[test]
fn facts_are_empty_over_plain_tcp() {
    let server = Server::start(&["--reply", FACTS, "--welcome", "hi{sni}{proxied_by}"]);
    let mut conn = server.connect();
    assert_eq!(conn.text_line(), "hi");
    conn.send("Ann\n");
    assert_eq!(fields(&conn.text_line()), ["Ann", "", "", "", "", "", ""]);
}

#[test]
fn proxied_by_is_the_socket_s_peer_when_a_proxy_header_named_another_client() {
    let server = Server::start(&["--proxy-protocol", "--reply", "{peer} via {proxied_by}"]);
    let stream = TcpStream::connect_timeout(&server.addr(), IO_TIMEOUT).unwrap();
    let own = stream.local_addr().unwrap();
    let mut conn = Conn::from_stream(stream);
    conn.send("PROXY TCP4 192.0.2.9 10.0.0.1 4242 9999\r\nAnn\n");
    assert_eq!(conn.text_line(), "Welcome!");
    assert_eq!(conn.text_line(), format!("192.0.2.9:4242 via {own}"));
    // A LOCAL header (a health check) names no other client.
    let mut conn = server.connect();
    conn.send("PROXY UNKNOWN\r\nAnn\n");
    assert_eq!(conn.text_line(), "Welcome!");
    assert!(conn.text_line().ends_with(" via "));
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A rustls client of `name` trusting the test CA, offering `alpn`, with the client
/// certificate `client` if given; the handshake is done when it returns.
fn connect_tls(
    addr: SocketAddr,
    certs: &Certs,
    name: &str,
    alpn: &[&str],
    client: Option<&Pair>,
) -> Tls {
    let mut roots = RootCertStore::empty();
    for cert in tcp_hello::pem::certificates(&certs.ca).unwrap() {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(pair) => {
            let chain = tcp_hello::pem::certificates(&pair.cert).unwrap();
            let key = tcp_hello::pem::private_key(&pair.key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let name = ServerName::try_from(name.to_string()).unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    sock.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("handshake");
    }
    tls
}

/// Sends `name` and returns the welcome and the reply, without CRLF.
fn ask(tls: Tls, name: &str) -> (String, String) {
    fn line(reader: &mut BufReader<Tls>) -> String {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read over TLS");
        line.strip_suffix("\r\n")
            .unwrap_or_else(|| panic!("{line:?}"))
            .to_string()
    }
    let mut reader = BufReader::new(tls);
    let welcome = line(&mut reader);
    reader
        .get_mut()
        .write_all(format!("{name}\n").as_bytes())
        .unwrap();
    (welcome, line(&mut reader))
}

#[test]
fn facts_over_tls_name_the_session() {
    let certs = make_certs();
    let server = tls_server(&certs, &["--reply", FACTS, "--welcome", "{tls_version}"]);
    let tls = connect_tls(server.addr(), &certs, "localhost", &[], None);
    let (welcome, reply) = ask(tls, "Ann");
    // The welcome waits for the handshake's end, which it shows.
    assert_eq!(welcome, "TLSv1.3");
    let fields = fields(&reply);
    assert_eq!(fields[..2], ["Ann", "TLSv1.3"]);
    assert!(fields[2].starts_with("TLS13_"), "{reply}");
    assert_eq!(fields[3..], ["localhost", "", "", ""]);
}

#[test]
fn a_hostile_client_cn_is_escaped_as_in_the_close_line() {
    let certs = make_certs();
    let ca = certs.ca.display().to_string();
    let server = tls_server(
        &certs,
        &[
            "--tls-client-ca",
            &ca,
            "--reply",
            "[{client_cn}]",
            "--welcome",
            "{client_cn}",
        ],
    );
    let tls = connect_tls(server.addr(), &certs, "localhost", &[], Some(&certs.client));
    assert_eq!(
        ask(tls, "Ann"),
        ("alice".to_string(), "[alice]".to_string())
    );
    let hostile = Some(&certs.hostile_cn_client);
    let tls = connect_tls(server.addr(), &certs, "localhost", &[], hostile);
    let (_, reply) = ask(tls, "Ann");
    let escaped = "mallory\\n[2026-01-01T00:00:00Z INFO  tcp_hello] forged\\u{1b}[31m\\u{202e}txt";
    assert_eq!(reply, format!("[{escaped}]"));
    let logs = server.stop_and_logs();
    assert!(logs.contains(&format!("client {escaped}")), "{logs}");
}

#[test]
fn facts_are_refused_over_udp_in_one_line() {
    for fact in ["{tls_version}", "{sni}", "{proxied_by}", "{age}"] {
        let out = clean_env(Command::new(bin()).args([
            "serve",
            "--udp-bind",
            "127.0.0.1:0",
            "--reply",
            &format!("Hi {{}} {fact}"),
        ]))
        .output()
        .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(fact), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

#[test]
fn tls_alpn_offers_protocols_and_alpn_shows_the_one_agreed() {
    let certs = make_certs();
    let args = [
        "--tls-alpn",
        "h2",
        "--tls-alpn",
        "x-hello",
        "--reply",
        "{}:{alpn}",
    ];
    let server = tls_server(&certs, &args);
    let tls = connect_tls(server.addr(), &certs, "localhost", &["x-hello"], None);
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"x-hello"[..]));
    assert_eq!(ask(tls, "Ann").1, "Ann:x-hello");
    // The server's preference wins among the client's.
    let tls = connect_tls(server.addr(), &certs, "localhost", &["x-hello", "h2"], None);
    assert_eq!(ask(tls, "Ann").1, "Ann:h2");
    // A client that offers none gets none.
    let tls = connect_tls(server.addr(), &certs, "localhost", &[], None);
    assert_eq!(ask(tls, "Ann").1, "Ann:");
}

#[test]
fn tls_alpn_is_agreed_with_openssl_s_client() {
    if !require("openssl", "openssl") {
        return;
    }
    let certs = make_certs();
    let server = tls_server(&certs, &["--tls-alpn", "x-hello", "--reply", FACTS]);
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &server.addr().to_string()])
        .args(["-servername", "lb.example", "-alpn", "h2,x-hello", "-quiet"])
        .arg("-CAfile")
        .arg(&certs.ca);
    let out = run_tool(&mut cmd, Some(b"Ann\nexit\n"), Duration::from_secs(20));
    let stdout = &out.stdout;
    let reply = stdout
        .lines()
        .find(|l| l.starts_with("Ann|"))
        .unwrap_or_else(|| panic!("no reply: {stdout:?} {:?}", out.stderr));
    let fields = fields(reply);
    assert_eq!(fields[1], "TLSv1.3", "{reply}");
    assert_eq!(fields[3..], ["lb.example", "x-hello", "", ""], "{reply}");
}

/// The fields of `--reply-format json`, every one of which each reply holds.
const JSON_FIELDS: [&str; 13] = [
    "name",
    "peer",
    "local",
    "host",
    "pid",
    "conn",
    "tls_version",
    "tls_cipher",
    "sni",
    "alpn",
    "client_cn",
    "proxied_by",
    "age",
];

/// A reply of `--reply-format json`, parsed, with every field checked to be there.
fn json(line: &str) -> serde_json::Value {
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    for field in JSON_FIELDS {
        assert!(value.get(field).is_some(), "{field} missing: {line}");
    }
    assert_eq!(value.as_object().map(|o| o.len()), Some(JSON_FIELDS.len()));
    value
}

#[test]
fn reply_format_json_holds_every_fact_over_plain_tcp_and_proxy() {
    let server = Server::start(&["--reply-format", "json", "--proxy-protocol"]);
    let stream = TcpStream::connect_timeout(&server.addr(), IO_TIMEOUT).unwrap();
    let own = stream.local_addr().unwrap();
    let mut conn = Conn::from_stream(stream);
    conn.send("PROXY TCP4 192.0.2.9 10.0.0.1 4242 9999\r\n");
    assert_eq!(conn.text_line(), "Welcome!");
    conn.send(b"Ann \"the\" \\ \x1b[31m \xff\xff\n");
    let reply = json(&conn.text_line());
    // The 0xFF 0xFF a telnet client sends for one 0xFF is one invalid byte.
    assert_eq!(reply["name"], "Ann \"the\" \\ \u{1b}[31m \u{fffd}");
    assert_eq!(reply["peer"], "192.0.2.9:4242");
    assert_eq!(reply["local"], server.addr().to_string());
    assert_eq!(reply["pid"], server.pid());
    assert_eq!(reply["conn"], 1);
    assert_eq!(reply["proxied_by"], own.to_string());
    assert!(reply["host"].as_str().is_some_and(|h| !h.is_empty()));
    for fact in ["tls_version", "tls_cipher", "sni", "alpn", "client_cn"] {
        assert_eq!(reply[fact], "", "{fact}");
    }
    let age = reply["age"].as_f64().unwrap();
    assert!((0.0..60.0).contains(&age), "{age}");
    conn.send("exit\n");
    assert_eq!(conn.text_line(), "Bye!");
}

#[test]
fn reply_format_json_names_the_tls_session() {
    let certs = make_certs();
    let ca = certs.ca.display().to_string();
    let args = [
        "--reply-format",
        "json",
        "--tls-alpn",
        "x-hello",
        "--tls-client-ca",
        &ca,
    ];
    let server = tls_server(&certs, &args);
    let hostile = Some(&certs.hostile_cn_client);
    let tls = connect_tls(server.addr(), &certs, "localhost", &["x-hello"], hostile);
    let reply = json(&ask(tls, "Ann").1);
    assert_eq!(reply["name"], "Ann");
    assert_eq!(reply["tls_version"], "TLSv1.3");
    assert!(
        reply["tls_cipher"]
            .as_str()
            .is_some_and(|c| c.starts_with("TLS13_"))
    );
    assert_eq!(reply["sni"], "localhost");
    assert_eq!(reply["alpn"], "x-hello");
    // The same escaped text as `{client_cn}` and the close line.
    let escaped = "mallory\\n[2026-01-01T00:00:00Z INFO  tcp_hello] forged\\u{1b}[31m\\u{202e}txt";
    assert_eq!(reply["client_cn"], escaped);
    assert_eq!(reply["proxied_by"], "");
}

#[test]
fn reply_format_json_with_chunk_framing_sends_one_object_per_message() {
    let server = Server::start(&["--reply-format", "json", "--framing", "chunk"]);
    let mut conn = server.connect();
    let mut welcome = [0u8; 8];
    std::io::Read::read_exact(&mut conn.stream, &mut welcome).unwrap();
    assert_eq!(&welcome, b"Welcome!");
    conn.send("Ann");
    let mut de = serde_json::Deserializer::from_reader(&conn.stream).into_iter();
    let reply: serde_json::Value = de.next().unwrap().unwrap();
    json(&reply.to_string());
    assert_eq!(reply["name"], "Ann");
}

#[test]
fn reply_format_json_is_refused_with_reply_or_echo_or_udp() {
    for args in [
        &["--reply-format", "json", "--reply", "Hi {}"][..],
        &["--reply-format", "json", "--mode", "echo"],
        &["--reply-format", "json", "--udp-bind", "127.0.0.1:0"],
    ] {
        let out = clean_env(
            Command::new(bin())
                .args(["serve", "--bind", "127.0.0.1:0"])
                .args(args),
        )
        .output()
        .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or("");
        assert!(first.contains("--reply-format"), "{args:?}: {err}");
    }
}

#[test]
fn client_tls_alpn_is_agreed_with_the_server_s() {
    let certs = make_certs();
    let args = ["--tls-alpn", "x-hello", "--reply", "{}:{alpn}:{sni}"];
    let server = tls_server(&certs, &args);
    let (addr, ca) = (server.addr().to_string(), certs.ca.display().to_string());
    let run = |alpn: &str| {
        let mut args = vec!["--tls", "--tls-ca", &ca, "--connect", &addr];
        args.extend(["--tls-server-name", "localhost", "--tls-alpn", alpn, "Ann"]);
        run_tool(
            &mut hello_cmd("client", &args),
            None,
            Duration::from_secs(20),
        )
    };
    let agreed = run("x-hello");
    assert_eq!(agreed.code, Some(0), "{agreed:?}");
    assert!(
        agreed.stdout.contains("Ann:x-hello:localhost"),
        "{agreed:?}"
    );
    // A server that offers ALPN refuses a client whose protocols it does not speak.
    let refused = run("h2");
    assert_ne!(refused.code, Some(0), "{refused:?}");
}
