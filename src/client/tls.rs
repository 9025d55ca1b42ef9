//! TLS for the client: the set-up (trust roots, client certificate, server name), the
//! handshake, and the connection split into a reading half and a writing half.
//!
//! # The split
//!
//! Both threads share one rustls [`ClientConnection`] behind a mutex, and the socket is
//! never used while holding it, so that a blocked read never blocks the writer nor a
//! blocked write the reader:
//!
//! - The reader reads ciphertext from its own clone of the socket without the lock
//!   (with the read timeout the session arms on it), then locks to hand it to rustls
//!   (`read_tls`, `process_new_packets`) and take the plaintext.
//! - The writer locks to hand rustls plaintext and take the records it makes, unlocks,
//!   and writes them to the socket.
//! - Records must leave in the order rustls made them, so whoever writes them holds the
//!   `sending` token meanwhile. The writer takes it before the lock. The reader, which
//!   has records to send only rarely (an alert, an answer to a key update), only tries
//!   to take it while holding the lock: if the writer has it, the writer sends those
//!   records too, since it lets go of the token only while holding the lock and seeing
//!   nothing left to send. When the reader writes them itself, that write could block
//!   (past the reply timeout, which bounds reads) only if the server asked for something
//!   (a key update) and then stopped reading.

use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use log::debug;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ProtocolVersion};

use super::READ_BUF;
use super::failure::Failure;
use super::link::{ReadError, Received, got};
use super::tls_failure::{TlsCause, TlsFailure};
use super::wait::{is_reset, is_timeout};
use crate::address::HostPort;
use crate::config::TlsClientConfig;
use crate::sync::lock;
use crate::tls_failure::{TlsContext, plain_text};

/// The TLS set-up when `--tls` is on; without it, a TLS option is a usage error (it
/// would otherwise be ignored, e.g. when `TCP_HELLO_TLS=0` turned TLS off).
pub(super) fn tls_setup(
    tls: &TlsClientConfig,
    target: &HostPort,
) -> Result<Option<TlsConnector>, Failure> {
    if !tls.enabled {
        return match crate::tls_client::options_without_tls(tls, &[]) {
            Some(message) => Err(Failure::Usage(message)),
            None => Ok(None),
        };
    }
    let made = crate::tls_client::client_tls(tls, &target.host).map_err(Failure::Usage)?;
    Ok(Some(TlsConnector {
        ctx: Arc::new(TlsContext::new(target.to_string(), &made, tls.cert.clone())),
        config: Arc::new(made.config),
        server_name: made.server_name,
    }))
}

/// Everything a TLS connection needs, read from the command line before connecting.
pub(super) struct TlsConnector {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    ctx: Arc<TlsContext>,
}

impl TlsConnector {
    /// Runs the handshake on `stream`, within `limit` (the time and the flag that set
    /// it) if there is one. Leaves the stream with no read timeout.
    pub(super) fn handshake(
        &self,
        stream: &TcpStream,
        limit: Option<(Duration, &'static str)>,
    ) -> Result<Handshaken, Failure> {
        let fail = |cause| Failure::Tls(self.failure(cause));
        let refused = |error, plain: Option<&[u8]>| {
            fail(TlsCause::Refused {
                error,
                in_handshake: true,
                plain: plain.and_then(plain_text),
            })
        };
        let mut conn = ClientConnection::new(Arc::clone(&self.config), self.server_name.clone())
            .map_err(|e| refused(e, None))?;
        let deadline = limit.and_then(|(time, _)| Instant::now().checked_add(time));
        let mut buf = vec![0u8; READ_BUF];
        // The start of what the server said first, to show it when it is not TLS.
        let mut first: Option<Vec<u8>> = None;
        let mut leftover = Vec::new();
        loop {
            send_records(&mut conn, stream).map_err(|e| handshake_io(e, &fail))?;
            if !conn.is_handshaking() {
                break;
            }
            let timeout = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        let (time, flag) = limit.unwrap_or((Duration::ZERO, ""));
                        return Err(fail(TlsCause::Timeout {
                            secs: time.as_secs_f64(),
                            flag,
                        }));
                    }
                    Some(left)
                }
                None => None,
            };
            stream.set_read_timeout(timeout).map_err(Failure::Socket)?;
            let n = match (&*stream).read(&mut buf) {
                Ok(0) => return Err(fail(TlsCause::Closed { reset: false })),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted || is_timeout(&e) => continue,
                Err(e) => return Err(handshake_io(e, &fail)),
            };
            first.get_or_insert_with(|| buf[..n.min(80)].to_vec());
            let mut data = &buf[..n];
            while !data.is_empty() {
                match conn.read_tls(&mut data) {
                    Ok(0) => break,
                    Ok(_) => {}
                    // Only past the handshake, with more plaintext waiting than rustls
                    // holds: the reader takes it, then the rest.
                    Err(_) if !conn.is_handshaking() => break,
                    Err(e) => return Err(Failure::Socket(e)),
                }
                if let Err(error) = conn.process_new_packets() {
                    // Best effort: the alert rustls queued tells the server why.
                    let _ = send_records(&mut conn, stream);
                    return Err(refused(error, first.as_deref()));
                }
            }
            leftover = data.to_vec();
        }
        stream.set_read_timeout(None).map_err(Failure::Socket)?;
        let version = match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLS 1.3",
            Some(ProtocolVersion::TLSv1_2) => "TLS 1.2",
            _ => "TLS",
        };
        let suite = conn
            .negotiated_cipher_suite()
            .map_or("an unknown cipher suite".to_string(), |s| {
                format!("{:?}", s.suite())
            });
        debug!(
            "{version} with {suite}, certificate valid for {}",
            self.ctx.server_name
        );
        Ok(Handshaken {
            conn,
            leftover,
            version,
            ctx: Arc::clone(&self.ctx),
        })
    }

    fn failure(&self, cause: TlsCause) -> TlsFailure {
        TlsFailure {
            cause,
            ctx: Arc::clone(&self.ctx),
        }
    }
}

/// A socket error during the handshake: a close or reset is the server's doing.
fn handshake_io(e: io::Error, fail: &impl Fn(TlsCause) -> Failure) -> Failure {
    if is_reset(&e) {
        fail(TlsCause::Closed { reset: true })
    } else {
        Failure::Socket(e)
    }
}

/// A connection whose handshake is done.
pub(super) struct Handshaken {
    conn: ClientConnection,
    /// Ciphertext read after the handshake that rustls had no room for yet.
    leftover: Vec<u8>,
    /// `TLS 1.3` or `TLS 1.2`.
    pub(super) version: &'static str,
    ctx: Arc<TlsContext>,
}

/// Writes every record rustls has made to `to`.
fn send_records(conn: &mut ClientConnection, mut to: &TcpStream) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(&mut to)?;
    }
    Ok(())
}

/// Takes every record rustls has made.
fn take_records(conn: &mut ClientConnection) -> Vec<u8> {
    let mut records = Vec::new();
    while conn.wants_write() {
        // A Vec takes all; an error or nothing taken would only repeat.
        match conn.write_tls(&mut records) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    records
}

/// What both halves share.
struct TlsSession {
    conn: Mutex<ClientConnection>,
    /// The socket records are written to.
    sock: TcpStream,
    /// Held by whoever writes records to `sock` (see the module's docs).
    sending: Mutex<()>,
}

impl TlsSession {
    /// Writes what rustls has made, then lets go of `sending`, but only while holding
    /// `conn` with nothing left in it to send, so that records queued meanwhile by the
    /// reader (which cannot take `sending` while it is held) are never left behind.
    fn send_and_release<'a>(
        &'a self,
        sending: MutexGuard<'a, ()>,
        mut conn: MutexGuard<'a, ClientConnection>,
    ) -> io::Result<()> {
        loop {
            let records = take_records(&mut conn);
            if records.is_empty() {
                drop(sending);
                drop(conn);
                return Ok(());
            }
            drop(conn);
            (&self.sock).write_all(&records)?;
            conn = lock(&self.conn);
        }
    }

    /// Sends the records the reader made rustls queue (an alert, an answer to a key
    /// update), unless the writer is sending: then the writer sends them before it lets
    /// go of `sending`.
    fn send_pending<'a>(&'a self, conn: MutexGuard<'a, ClientConnection>) {
        if !conn.wants_write() {
            return;
        }
        let sending = match self.sending.try_lock() {
            Ok(sending) => sending,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        // A failed write shows in the next read.
        let _ = self.send_and_release(sending, conn);
    }
}

/// Splits a connection whose handshake is done into its reading and writing halves.
pub(super) fn tls_halves(
    stream: TcpStream,
    done: Handshaken,
) -> io::Result<(TlsReader, TlsWriter)> {
    let shared = Arc::new(TlsSession {
        conn: Mutex::new(done.conn),
        sock: stream.try_clone()?,
        sending: Mutex::new(()),
    });
    let end = done.leftover.len();
    let mut cipher = done.leftover;
    cipher.resize(end.max(READ_BUF), 0);
    let reader = TlsReader {
        shared: Arc::clone(&shared),
        sock: stream,
        cipher,
        start: 0,
        end,
        eof: false,
        ctx: done.ctx,
    };
    Ok((reader, TlsWriter { shared }))
}

/// The reading half of a TLS connection.
pub(super) struct TlsReader {
    shared: Arc<TlsSession>,
    /// Its own clone of the socket, read without holding the lock.
    sock: TcpStream,
    /// Ciphertext read; `start..end` is not yet taken by rustls.
    cipher: Vec<u8>,
    start: usize,
    end: usize,
    /// The socket has reached its end.
    eof: bool,
    ctx: Arc<TlsContext>,
}

impl TlsReader {
    /// The socket, to arm its read timeout.
    pub(super) fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// The next plaintext from the server, one record's worth at most, so that chunk
    /// framing sees each message the server sent alone; [`Received::Nothing`] when the socket
    /// gave only part of a record, so that the session looks at its deadline again.
    pub(super) fn read(&mut self, buf: &mut [u8]) -> Result<Received, ReadError> {
        if let Some(got) = self.plaintext(buf)? {
            return Ok(got);
        }
        // All ciphertext is taken: read more, without the lock.
        match got((&self.sock).read(&mut self.cipher))? {
            Received::Bytes(n) => (self.start, self.end) = (0, n),
            Received::Closed => self.eof = true,
            Received::Nothing => return Ok(Received::Nothing),
        }
        Ok(self.plaintext(buf)?.unwrap_or(Received::Nothing))
    }

    /// Hands rustls the ciphertext at hand and takes what plaintext there is; `None`
    /// when it needs more ciphertext, and then it has taken all there was.
    fn plaintext(&mut self, buf: &mut [u8]) -> Result<Option<Received>, ReadError> {
        let shared = Arc::clone(&self.shared);
        let mut conn = lock(&shared.conn);
        let result = self.decrypt(&mut conn, buf);
        // Whatever rustls queued meanwhile (an alert, a key update) goes out.
        shared.send_pending(conn);
        result
    }

    fn decrypt(
        &mut self,
        conn: &mut ClientConnection,
        buf: &mut [u8],
    ) -> Result<Option<Received>, ReadError> {
        let mut refused = None;
        while self.start < self.end {
            match conn.read_tls(&mut &self.cipher[self.start..self.end]) {
                // After the server's close_notify rustls takes nothing more.
                Ok(0) => self.start = self.end,
                Ok(n) => self.start += n,
                // The plaintext it holds is full: that is taken first.
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
            if let Err(error) = conn.process_new_packets() {
                return Err(ReadError::Tls(TlsFailure {
                    cause: TlsCause::Refused {
                        error,
                        in_handshake: false,
                        plain: None,
                    },
                    ctx: Arc::clone(&self.ctx),
                }));
            }
        }
        if self.eof && self.start == self.end {
            // Tells rustls the socket has ended: an empty read.
            let _ = conn.read_tls(&mut io::empty());
        }
        let mut reader = conn.reader();
        match reader.fill_buf() {
            Ok([]) => Ok(Some(Received::Closed)),
            Ok(chunk) => {
                let n = chunk.len().min(buf.len());
                buf[..n].copy_from_slice(&chunk[..n]);
                reader.consume(n);
                Ok(Some(Received::Bytes(n)))
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => match refused {
                // No plaintext, yet rustls took no more ciphertext: it never will.
                Some(e) => Err(ReadError::Io(e)),
                None => Ok(None),
            },
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                // Tolerated: the session's tally tells a close after everything
                // expected from a truncation.
                debug!("the server closed the connection without a TLS close_notify");
                Ok(Some(Received::Closed))
            }
            Err(e) => Err(ReadError::Io(e)),
        }
    }
}

/// The writing half of a TLS connection; it writes plaintext.
pub(super) struct TlsWriter {
    shared: Arc<TlsSession>,
}

impl TlsWriter {
    /// The socket, to shut it down.
    pub(super) fn socket(&self) -> &TcpStream {
        &self.shared.sock
    }

    /// Hands rustls plaintext and writes the records it makes.
    pub(super) fn write(&self, buf: &[u8]) -> io::Result<usize> {
        let sending = lock(&self.shared.sending);
        let mut conn = lock(&self.shared.conn);
        let n = conn.writer().write(buf)?;
        self.shared.send_and_release(sending, conn)?;
        Ok(n)
    }

    /// Sends `last` and close_notify, in one write when rustls holds them at once:
    /// nothing more comes from this client.
    pub(super) fn finish(&self, last: &[u8]) -> io::Result<()> {
        let sending = lock(&self.shared.sending);
        let mut conn = lock(&self.shared.conn);
        let mut rest = last;
        while !rest.is_empty() {
            match conn.writer().write(rest)? {
                // Its buffer is full: what it made goes out first.
                0 => {
                    let records = take_records(&mut conn);
                    if records.is_empty() {
                        return Err(ErrorKind::WriteZero.into());
                    }
                    drop(conn);
                    (&self.shared.sock).write_all(&records)?;
                    conn = lock(&self.shared.conn);
                }
                n => rest = &rest[n..],
            }
        }
        conn.send_close_notify();
        self.shared.send_and_release(sending, conn)
    }
}
