//! tokio-hello: the greeting protocol as a tokio user would write it, one task per
//! connection, buffered lines in, buffered replies out, flushed once no complete line is
//! left in the input buffer. A reference point for `tests/peers/compare`, not a
//! competitor: it stays plain, as its authors would have left it.
//!
//! `tokio-hello --bind ADDR [--tls-cert FILE --tls-key FILE]`: the same over TLS 1.2 and
//! 1.3 with tokio-rustls and rustls's defaults (session cache and tickets).
#![forbid(unsafe_code)]

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

const USAGE: &str = "usage: tokio-hello --bind HOST:PORT [--tls-cert FILE --tls-key FILE]";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
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
        (Some(cert), Some(key)) => Some(acceptor(&cert, &key)?),
        (None, None) => None,
        _ => return Err(USAGE.into()),
    };
    let listener = TcpListener::bind(bind.ok_or(USAGE)?).await?;
    loop {
        match listener.accept().await {
            Ok((socket, _)) => {
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _ = handle(socket, tls).await;
                });
            }
            Err(e) => {
                // Out of file descriptors, say: retry soon rather than spin.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, Box<dyn Error>> {
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let config = ServerConfig::builder() // TLS 1.3 and 1.2
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn handle(socket: TcpStream, tls: Option<TlsAcceptor>) -> std::io::Result<()> {
    let Some(tls) = tls else {
        let (reader, writer) = socket.into_split();
        return greet(reader, writer).await.map(drop);
    };
    // rustls sends its session tickets and our welcome in two writes; without NODELAY,
    // Nagle holds the welcome until the client's delayed ACK (40 ms per connection).
    socket.set_nodelay(true)?;
    let (reader, writer) = tokio::io::split(tls.accept(socket).await?);
    greet(reader, writer).await?.shutdown().await // close_notify, then FIN
}

/// The protocol: the welcome, a reply per line, the farewell after `exit`.
async fn greet<R, W>(reader: R, writer: W) -> std::io::Result<W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut lines = BufReader::new(reader).lines(); // strips "\n" and "\r\n"
    let mut out = BufWriter::new(writer);
    out.write_all(b"Welcome!\n").await?;
    out.flush().await?;
    while let Some(name) = lines.next_line().await? {
        if name == "exit" {
            out.write_all(b"Bye!\n").await?;
            break;
        }
        out.write_all(format!("Hello, {name}!\n").as_bytes())
            .await?;
        if !lines.get_ref().buffer().contains(&b'\n') {
            out.flush().await?;
        }
    }
    out.flush().await?;
    Ok(out.into_inner())
}
