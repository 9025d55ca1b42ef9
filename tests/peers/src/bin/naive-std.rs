//! naive-std: the obvious std::net translation of the classic Python tutorial server, one
//! thread per connection, `read_line`, one `write_all` per reply, no limits. A reference
//! point for `tests/peers/compare`: the same shape as tcp-hello (a thread per connection)
//! without its work, so the difference is what that work buys.
//!
//! `naive-std --bind ADDR [--tls-cert FILE --tls-key FILE]`: the same over TLS 1.2 and 1.3
//! with rustls's blocking `StreamOwned` and rustls's defaults.
#![forbid(unsafe_code)]

use std::error::Error;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

const USAGE: &str = "usage: naive-std --bind HOST:PORT [--tls-cert FILE --tls-key FILE]";

fn main() -> Result<(), Box<dyn Error>> {
    let (mut bind, mut cert, mut key) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let slot = match arg.as_str() {
            "--bind" => &mut bind,
            "--tls-cert" => &mut cert,
            "--tls-key" => &mut key,
            _ => return Err(USAGE.into()),
        };
        *slot = Some(args.next().ok_or(USAGE)?);
    }
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(config(&cert, &key)?),
        (None, None) => None,
        _ => return Err(USAGE.into()),
    };
    let listener = TcpListener::bind(bind.ok_or(USAGE)?)?;
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let tls = tls.clone();
                thread::spawn(move || {
                    let _ = match tls {
                        None => handle(stream),
                        Some(tls) => handle_tls(stream, tls),
                    };
                });
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
    Ok(())
}

fn config(cert: &str, key: &str) -> Result<Arc<ServerConfig>, Box<dyn Error>> {
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let config = ServerConfig::builder() // TLS 1.3 and 1.2
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

fn handle(stream: TcpStream) -> io::Result<()> {
    greet(BufReader::new(stream)).map(drop)
}

fn handle_tls(stream: TcpStream, config: Arc<ServerConfig>) -> io::Result<()> {
    // rustls sends its session tickets and our welcome in two writes; without NODELAY,
    // Nagle holds the welcome until the client's delayed ACK (40 ms per connection).
    stream.set_nodelay(true)?;
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tls = greet(BufReader::new(StreamOwned::new(conn, stream)))?;
    tls.conn.send_close_notify();
    tls.flush()
}

/// The protocol: the welcome, a reply per line, the farewell after `exit`. Lines are
/// read through the buffer and replies written past it, to the stream it wraps.
fn greet<S: Read + Write>(mut stream: BufReader<S>) -> io::Result<S> {
    stream.get_mut().write_all(b"Welcome!\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line)? == 0 {
            break;
        }
        let name = line.strip_suffix('\n').unwrap_or(&line);
        let name = name.strip_suffix('\r').unwrap_or(name);
        if name == "exit" {
            stream.get_mut().write_all(b"Bye!\n")?;
            break;
        }
        let reply = format!("Hello, {name}!\n");
        stream.get_mut().write_all(reply.as_bytes())?;
    }
    Ok(stream.into_inner())
}
