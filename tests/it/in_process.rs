//! The server run in the test's own process through the library ([`serve::start`]):
//! real sockets, no child process, no signal handlers; the addresses come from the
//! running server, so nothing waits for it to be ready.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;

use crate::common::IO_TIMEOUT;
use tcp_hello::config::ServeConfig;
use tcp_hello::serve::{self, Running};

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A server on a free port of 127.0.0.1, plain text, the defaults otherwise.
fn plain(change: impl FnOnce(&mut ServeConfig)) -> Running {
    let mut config = ServeConfig {
        bind: vec![local()],
        ..ServeConfig::default()
    };
    change(&mut config);
    serve::start(config).unwrap()
}

/// A connection to `addr` whose reads and writes time out.
fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    BufReader::new(stream)
}

fn line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line
}

#[test]
fn greets_replies_and_says_goodbye() {
    let running = plain(|_| {});
    let listeners = running.listeners().to_vec();
    assert_eq!(listeners.len(), 1);
    assert!(!listeners[0].tls);
    assert_ne!(listeners[0].addr.port(), 0, "port 0 is resolved");
    let mut conn = connect(listeners[0].addr);
    assert_eq!(line(&mut conn), "Welcome!\r\n");
    conn.get_mut().write_all(b"Michael\nexit\n").unwrap();
    assert_eq!(line(&mut conn), "Hello, Michael!\r\n");
    assert_eq!(line(&mut conn), "Bye!\r\n");
    assert_eq!(line(&mut conn), "", "the server closes after the farewell");
    assert_eq!(running.stop().unwrap(), 0);
}

#[test]
fn the_config_s_templates_are_served() {
    let running = plain(|c| {
        c.welcome = "hi {conn}".into();
        c.reply = "<{}>".into();
    });
    let mut conn = connect(running.listeners()[0].addr);
    assert_eq!(line(&mut conn), "hi 1\r\n");
    conn.get_mut().write_all(b"x\n").unwrap();
    assert_eq!(line(&mut conn), "<x>\r\n");
    drop(conn);
    running.stop().unwrap();
}

#[test]
fn the_shutdown_handle_stops_the_server_and_tells_open_connections() {
    let running = plain(|_| {});
    let addr = running.listeners()[0].addr;
    let mut conn = connect(addr);
    assert_eq!(line(&mut conn), "Welcome!\r\n");
    let handle = running.shutdown_handle();
    assert_eq!(handle.connections(), 1);
    handle.shutdown();
    assert_eq!(line(&mut conn), "server shutting down\r\n");
    assert_eq!(line(&mut conn), "");
    assert_eq!(running.wait().unwrap(), 0, "no connection was cut off");
    let refused = TcpStream::connect_timeout(&addr, IO_TIMEOUT);
    assert!(refused.is_err(), "the listener is closed: {refused:?}");
}

#[test]
fn udp_and_metrics_addresses_are_given_and_served() {
    let running = plain(|c| {
        c.udp_bind = vec![local()];
        c.metrics = Some(local());
    });
    let udp = running.udp_addrs()[0];
    let socket = UdpSocket::bind(local()).unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket.send_to(b"Tracy\n", udp).unwrap();
    let mut buf = [0; 256];
    let (n, from) = socket.recv_from(&mut buf).unwrap();
    assert_eq!(from, udp);
    assert_eq!(&buf[..n], b"Hello, Tracy!\n");

    let metrics = running.metrics_addr().expect("metrics asked for");
    let mut http = connect(metrics);
    http.get_mut()
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    http.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1."), "{body}");
    assert!(body.contains("tcp_hello_"), "{body}");
    running.stop().unwrap();
}

#[test]
fn bad_configuration_is_an_error_naming_the_value() {
    let error = |config: ServeConfig| match serve::start(config) {
        Ok(running) => {
            running.stop().unwrap();
            panic!("started");
        }
        Err(e) => format!("{e:#}"),
    };
    let e = error(ServeConfig {
        bind: vec![local()],
        tls_cert: Some("cert.pem".into()),
        ..ServeConfig::default()
    });
    assert!(
        e.starts_with("--tls-cert, --tls-key and --tls-client-ca are for TLS listeners"),
        "{e}"
    );
    let e = error(ServeConfig {
        tls_bind: vec![local()],
        ..ServeConfig::default()
    });
    assert!(e.starts_with("--tls-bind needs --tls-cert FILE"), "{e}");
    let twice: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let e = error(ServeConfig {
        bind: vec![twice, twice],
        ..ServeConfig::default()
    });
    assert!(e.starts_with("--bind 127.0.0.1:9 is given twice"), "{e}");
    let e = error(ServeConfig {
        bind: vec![local()],
        reply: "{nope}".into(),
        ..ServeConfig::default()
    });
    assert!(e.contains("--reply"), "{e}");

    let taken = plain(|_| {});
    let e = error(ServeConfig {
        bind: vec![taken.listeners()[0].addr],
        ..ServeConfig::default()
    });
    assert!(e.contains("is another server running there?"), "{e}");
    taken.stop().unwrap();
}

#[test]
fn tls_listeners_serve_over_tls() {
    let temp = crate::common::temp_dir("in-process");
    let dir = temp.path();
    tcp_hello::cert::make(&tcp_hello::cert::Request {
        out: dir.to_path_buf(),
        hosts: Vec::new(),
        clients: Vec::new(),
    })
    .unwrap();
    let running = serve::start(ServeConfig {
        tls_bind: vec![local()],
        tls_cert: Some(dir.join("server.pem")),
        tls_key: Some(dir.join("server.key")),
        ..ServeConfig::default()
    })
    .unwrap();
    let listening = running.listeners()[0];
    assert!(listening.tls);

    let mut roots = rustls::RootCertStore::empty();
    for cert in tcp_hello::pem::certificates(&dir.join("ca.pem")).unwrap() {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = "localhost".try_into().unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = connect(listening.addr).into_inner();
    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    assert_eq!(line(&mut tls), "Welcome!\r\n");
    tls.get_mut().write_all(b"Sarah\n").unwrap();
    tls.get_mut().flush().unwrap();
    assert_eq!(line(&mut tls), "Hello, Sarah!\r\n");
    drop(tls);
    running.stop().unwrap();
}
