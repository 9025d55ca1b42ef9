//! A connection's own thread: configures its socket, serves it, closes it gracefully,
//! and logs how it went.

use std::io::{self, ErrorKind};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::Shared;
use super::closer::Lingering;
use super::registry::Registered;
use super::shutdown::SHUTDOWN_READ_TIMEOUT;
use crate::connection::{self, CloseReason, Peer, Summary};
use crate::tls;

/// What a connection's thread reports in its close line.
struct Ending {
    summary: Summary,
    /// What the close line adds: who the client certificate says the client is, or why
    /// there was no TLS session.
    detail: String,
}

/// A TLS connection whose handshake is done, on its way to the thread that serves it.
struct Established {
    registered: Registered,
    stream: Arc<TcpStream>,
    conn: Box<rustls::ServerConnection>,
    client: Option<String>,
    started: Instant,
    /// The address the client reached.
    local: SocketAddr,
    /// The length of the welcome the handshake sent, if it did.
    welcomed: Option<usize>,
}

impl Shared {
    /// A connection's thread: configures the socket, serves it (a TLS one after its
    /// handshake, see [`Shared::hand_off`]), closes it gracefully, and logs the close.
    /// `counted`: the address whose `--max-per-source` count the accept loop took a
    /// place in for this connection, if any. With `--proxy-protocol`, the PROXY header
    /// comes first (see `proxied`): before the TLS handshake, whose bytes follow it.
    pub(super) fn run_connection(
        self: &Arc<Self>,
        id: u64,
        slot: usize,
        stream: Arc<TcpStream>,
        peer: SocketAddr,
        counted: Option<IpAddr>,
        tls: bool,
    ) {
        // Leaves the registry however the connection ends, a panic included, so that a
        // bug in one connection can neither leak its socket nor hold a slot for good.
        let mut registered = Registered {
            shared: Arc::clone(self),
            id,
            slot,
            peer,
            counted,
            via: None,
        };
        let started = Instant::now();
        let configured = self.configure(&stream);
        if configured.is_ok() {
            if let Some(proxy) = &self.config.proxy {
                if !self.admit_proxied(&mut registered, &stream, proxy, tls) {
                    return;
                }
            }
        }
        let peer = registered.peer;
        let local = configured.and_then(|()| self.local_address(&stream));
        let ending = match (local, &self.config.tls) {
            (Err(e), _) => failed(e),
            (Ok(local), Some(config)) if tls => {
                self.handshake_then_hand_off(registered, stream, config, started, local);
                return;
            }
            (Ok(local), _) => Ending {
                summary: connection::serve(
                    &*stream,
                    &self.ctx,
                    Peer {
                        id,
                        addr: peer,
                        local,
                    },
                ),
                detail: String::new(),
            },
        };
        self.close(registered, stream, started, ending);
    }

    /// A TLS connection's handshake, then its hand-off to a serving thread; or, if the
    /// handshake fails, its close. Never inlined into [`Shared::run_connection`]: the
    /// handshake's result is over a kilobyte, and in that frame it made every plain
    /// connection's thread touch a third stack page (9.6 -> 13.7 KiB a held connection).
    #[inline(never)]
    fn handshake_then_hand_off(
        self: &Arc<Self>,
        registered: Registered,
        stream: Arc<TcpStream>,
        config: &tls::Tls,
        started: Instant,
        local: SocketAddr,
    ) {
        let welcome = if config.asks_client_certificate() {
            Vec::new()
        } else {
            connection::welcome(
                &self.ctx,
                Peer {
                    id: registered.id,
                    addr: registered.peer,
                    local,
                },
            )
        };
        let place = self.begin_handshake(registered.id, registered.peer, &stream);
        let handshake = tls::handshake(
            &stream,
            config.current(),
            config.handshake_timeout,
            &self.ctx,
            &welcome,
        );
        // False if a newer handshake took the place, and closed the socket.
        let kept = place.give_up();
        match handshake {
            Ok((conn, session)) if kept => {
                log::debug!(
                    "conn {} open: {}{}, {}{}{}",
                    registered.id,
                    registered.peer,
                    Via(registered.via),
                    session.version,
                    if session.resumed { " resumed" } else { "" },
                    session
                        .client
                        .as_ref()
                        .map_or(String::new(), |c| format!(", client {c}"))
                );
                let mut established = Established {
                    registered,
                    stream,
                    conn: Box::new(conn),
                    client: session.client,
                    started,
                    local,
                    welcomed: session.welcomed.then_some(welcome.len()),
                };
                match self.stay_on_handshake_thread() {
                    Some(_seat) => self.serve_established(established),
                    None => {
                        // What rustls queued after the handshake (the session tickets)
                        // leaves now, from this thread, rather than with the serving
                        // thread's first write: freed here, its buffers stay out of the
                        // serving thread's allocator cache, which a held connection keeps
                        // (0.4 KiB a connection, measured). A failed send fails the
                        // serving thread's first write too.
                        let _ = tls::send_queued(&established.stream, &mut established.conn);
                        self.hand_off(established);
                    }
                }
            }
            failed => {
                self.counters.handshake_failed();
                let detail = match failed {
                    Err(e) if kept => format!(": {e}"),
                    _ => ": TLS handshake ended for a newer one (--tls-max-handshakes, \
                          --tls-max-handshakes-per-source)"
                        .to_string(),
                };
                let ending = Ending {
                    summary: nothing(CloseReason::Handshake),
                    detail,
                };
                self.close(registered, stream, started, ending);
            }
        }
    }

    /// A seat for a TLS connection to be served by the thread that ran its handshake,
    /// if fewer than [`handshake_seats`] connections hold one. A connection that stays
    /// skips the hand-off to a serving thread, a wake-up of another thread on each
    /// connection (about a tenth of a full handshake's server CPU, measured); one that
    /// cannot is handed off, so that a handshake's deep stack stays resident for a few
    /// open connections only, however many are held.
    fn stay_on_handshake_thread(&self) -> Option<HandshakeSeat<'_>> {
        let limit = handshake_seats(self.config.thread_cache);
        self.on_handshake_threads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| HandshakeSeat(&self.on_handshake_threads))
    }

    /// Serves an established TLS connection on a thread with the small stack of a plain
    /// one, and frees the handshake's thread for the next handshake: the pages its deep
    /// cryptography touched, on its stack and in its allocator cache, stay with the
    /// handshake threads (a few, parked or ending) instead of staying resident for as
    /// long as each connection lives (37 KiB a held TLS connection before, see the
    /// README). Each connection still has one thread at a time. If no thread can be
    /// started, this one serves.
    fn hand_off(self: &Arc<Self>, established: Established) {
        let slot = established.registered.slot;
        let stream = Arc::clone(&established.stream);
        // Taken by whichever thread serves: the new one, or this one if it cannot start.
        let parcel = Arc::new(std::sync::Mutex::new(Some(established)));
        let (shared, handed) = (Arc::clone(self), Arc::clone(&parcel));
        let spawned = self.threads.run(Box::new(move || {
            let taken = crate::sync::lock(&handed).take();
            if let Some(established) = taken {
                shared.serve_established(established);
            }
        }));
        match spawned {
            Ok(thread) => {
                // Recorded under the registry's lock before this thread moves on, so
                // that shutdown never signals a thread that has left the connection.
                let mut registry = self.lock();
                if let Some(live) = registry.live.get_mut(slot) {
                    if Arc::ptr_eq(&live.stream, &stream) {
                        live.thread = thread;
                        live.handed_off = true;
                        live.woken = false;
                    }
                }
            }
            Err(e) => {
                log::debug!("cannot start a serving thread ({e}); serving on the handshake's");
                let taken = crate::sync::lock(&parcel).take();
                if let Some(established) = taken {
                    self.serve_established(established);
                }
            }
        }
    }

    /// The protocol over an established TLS connection, then its close.
    fn serve_established(&self, established: Established) {
        let Established {
            registered,
            stream,
            mut conn,
            client,
            started,
            local,
            welcomed,
        } = established;
        let peer = Peer {
            id: registered.id,
            addr: registered.peer,
            local,
        };
        let ending = match self.restore_read_timeout(&stream) {
            Err(e) => failed(e),
            Ok(()) => Ending {
                summary: tls::serve(&stream, &mut conn, &self.ctx, peer, welcomed),
                detail: client.map_or(String::new(), |c| format!(", client {c}")),
            },
        };
        self.close(registered, stream, started, ending);
    }

    /// Logs the close line and closes gracefully: after `exit`, an idle timeout,
    /// shutdown or a failed handshake, sends FIN, then hands the connection to the closer,
    /// which closes it once the client has closed too (see [`closer`](super::closer)).
    fn close(
        &self,
        registered: Registered,
        stream: Arc<TcpStream>,
        started: Instant,
        ending: Ending,
    ) {
        let Ending { summary, detail } = ending;
        self.counters.closed(&summary);
        let quiet = summary.bytes_in == 0
            || matches!(
                summary.reason,
                CloseReason::ReadError(ErrorKind::ConnectionReset)
                    | CloseReason::WriteError(ErrorKind::ConnectionReset | ErrorKind::BrokenPipe)
                    | CloseReason::TlsOnPlainPort
            );
        let level = if quiet {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "conn {} closed: {}{}, {:.3} s, {} replies, {} bytes in, {} bytes out, {}{detail}",
            registered.id,
            registered.peer,
            Via(registered.via),
            started.elapsed().as_secs_f64(),
            summary.replies,
            summary.bytes_in,
            summary.bytes_out,
            summary.reason
        );
        let lingers = matches!(
            summary.reason,
            // A failed handshake too: its alert, or the plain-text notice, must not be
            // destroyed by a reset over unread client bytes.
            CloseReason::Exit | CloseReason::Idle | CloseReason::Shutdown | CloseReason::Handshake
        );
        if !lingers || stream.shutdown(Shutdown::Write).is_err() {
            return;
        }
        if self.config.linger.is_zero() {
            return;
        }
        // A linger past what the clock holds: closed now rather than never.
        let Some(deadline) = Instant::now().checked_add(self.config.linger) else {
            return;
        };
        {
            // This thread moves on to other connections: shutdown must not signal it
            // for this one.
            let mut registry = self.lock();
            if let Some(live) = registry.live.get_mut(registered.slot) {
                if Arc::ptr_eq(&live.stream, &stream) {
                    live.thread = 0;
                }
            }
        }
        self.closer.take(Lingering {
            _registered: registered,
            stream,
            deadline,
        });
    }

    /// After the TLS handshake or the PROXY header, which set their own read timeouts:
    /// the idle timeout again, or the shutdown's, if shutdown began meanwhile (set after
    /// the idle one, in the same order as shutdown sets the flag and then the timeout,
    /// so neither is lost).
    pub(super) fn restore_read_timeout(&self, stream: &TcpStream) -> io::Result<()> {
        stream.set_read_timeout(self.config.idle_timeout)?;
        if self.stopping() {
            stream.set_read_timeout(Some(SHUTDOWN_READ_TIMEOUT))?;
        }
        Ok(())
    }

    /// The address the client reached, looked up only if a template shows it.
    fn local_address(&self, stream: &TcpStream) -> io::Result<SocketAddr> {
        if self.ctx.settings.shows_local() {
            stream.local_addr()
        } else {
            Ok(SocketAddr::from(([0, 0, 0, 0], 0)))
        }
    }

    pub(super) fn configure(&self, stream: &TcpStream) -> io::Result<()> {
        if !cfg!(target_os = "linux") {
            // Elsewhere accepted sockets may not inherit the listener's options.
            stream.set_nodelay(true)?;
            stream.set_read_timeout(self.config.idle_timeout)?;
            stream.set_write_timeout(self.config.write_timeout)?;
        }
        if self.stopping() {
            // Shutdown began between admission and now; end reading like the others.
            stream.set_read_timeout(Some(SHUTDOWN_READ_TIMEOUT))?;
        }
        Ok(())
    }
}

/// How many TLS connections may be served by the thread that ran their handshake at
/// once: a quarter of `--thread-cache` (16 by default). Enough for the connections a
/// busy server has open at once when they are short (3,000 handshakes a second of 2 ms
/// connections: 6); each seat taken by a held connection costs about 80 KiB (its deep
/// thread, and the parked handshake thread that then takes its place), 1.3 MB at 16.
fn handshake_seats(thread_cache: usize) -> usize {
    thread_cache / 4
}

/// A TLS connection's place among those served by their handshake's thread, given
/// back however the connection ends.
struct HandshakeSeat<'a>(&'a AtomicUsize);

impl Drop for HandshakeSeat<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How the close line names the proxy a connection came through: ` (via ADDR)`.
struct Via(Option<SocketAddr>);

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(proxy) => write!(f, " (via {proxy})"),
            None => Ok(()),
        }
    }
}

/// A connection that ended before anything was exchanged.
fn nothing(reason: CloseReason) -> Summary {
    Summary {
        replies: 0,
        bytes_in: 0,
        bytes_out: 0,
        reason,
    }
}

/// A connection whose socket could not be set up.
fn failed(e: io::Error) -> Ending {
    Ending {
        summary: nothing(CloseReason::ReadError(e.kind())),
        detail: String::new(),
    }
}
