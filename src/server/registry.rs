//! The live connections: each one's stream and thread, for shutdown, and the count per
//! client address, for `--max-per-source`.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread;
use std::time::Duration;
use std::time::Instant;

use log::{error, warn};
use nix::sys::pthread::Pthread;
use slab::Slab;

use super::{ServerState, log_target};
use crate::rules::source_key;
use crate::sync::lock;

#[derive(Default)]
pub(super) struct Registry {
    /// Every live connection, in a slab: a slot each, and no spare buckets as a hash map
    /// sized for the limit would have.
    pub(super) live: Slab<Live>,
    /// Connections per client address (its [`source_key`](crate::rules::source_key)),
    /// kept only with `--max-per-source`.
    pub(super) per_source: HashMap<IpAddr, usize>,
    /// TLS handshakes under way, by connection: ids only grow, so the first is the
    /// oldest. At most `--tls-max-handshakes`.
    pub(super) handshakes: BTreeMap<u64, Pending>,
    /// TLS handshakes under way per client address (counted as `--max-per-source`
    /// counts, see [`source_key`]), at most
    /// `--tls-max-handshakes-per-source` each.
    pub(super) handshakes_per_source: HashMap<IpAddr, usize>,
    pub(super) stopping: bool,
}

/// A TLS handshake under way, as a newer one may have to end it.
pub(super) struct Pending {
    pub(super) peer: SocketAddr,
    pub(super) stream: Arc<TcpStream>,
}

impl Registry {
    /// The live entry in `slot` if it is still `stream`'s connection: a slot is reused
    /// once its connection has left.
    fn entry<S>(&mut self, slot: usize, stream: &Arc<S>) -> Option<&mut Live> {
        self.live
            .get_mut(slot)
            .filter(|live| live.stream.is(stream))
    }

    /// Removes handshake `id` from those under way; `None` if it is not there.
    fn end_handshake(&mut self, id: u64) -> Option<Pending> {
        let pending = self.handshakes.remove(&id)?;
        let source = source_key(pending.peer.ip());
        if let Some(count) = self.handshakes_per_source.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                self.handshakes_per_source.remove(&source);
            }
        }
        Some(pending)
    }
}

/// A live connection's socket, shared with its thread so that shutdown can reach it.
#[derive(Clone)]
pub(super) enum Socket {
    Tcp(Arc<TcpStream>),
    /// A `unix:` listener's connection (see [`super::unix`]).
    Unix(Arc<UnixStream>),
}

impl Socket {
    /// Whether this is `stream`, the very one (not another on the same descriptor
    /// number, which a closed connection's successor may have).
    fn is<S>(&self, stream: &Arc<S>) -> bool {
        let other = Arc::as_ptr(stream);
        match self {
            Socket::Tcp(own) => std::ptr::addr_eq(Arc::as_ptr(own), other),
            Socket::Unix(own) => std::ptr::addr_eq(Arc::as_ptr(own), other),
        }
    }

    /// Sets the read timeout, as shutdown does to end reading.
    pub(super) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Socket::Tcp(stream) => stream.set_read_timeout(timeout),
            Socket::Unix(stream) => stream.set_read_timeout(timeout),
        }
    }
}

/// A live connection: its stream, shared so that shutdown can reach it, and its thread,
/// so that shutdown can interrupt the thread's blocked read.
pub(super) struct Live {
    pub(super) stream: Socket,
    /// 0 until the accept loop has recorded it (glibc never uses 0 for a thread).
    pub(super) thread: Pthread,
    /// A TLS connection's handshake thread has handed it to a serving thread, recorded
    /// in `thread`: the accept loop, if it records late, must not put back the
    /// handshake thread, which has ended.
    pub(super) handed_off: bool,
    /// Shutdown has signalled `thread` already: each thread is signalled once, not on
    /// every pass of the wait (with thousands of connections that would slow the exit).
    pub(super) woken: bool,
}

/// Gives up a connection's slot, and its place in the count of `counted`, the address it
/// was counted for (see [`Registered::counted`]). Called exactly once per admitted
/// connection (by its `Registered` guard, or by admission when its thread could not
/// start): slots are reused, so a second call could free another connection's.
pub(super) fn leave(state: &ServerState, slot: usize, counted: Option<IpAddr>) {
    let mut registry = state.lock();
    if registry.live.try_remove(slot).is_none() {
        return;
    }
    if let Some(source) = counted {
        if let Some(count) = registry.per_source.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                registry.per_source.remove(&source);
            }
        }
    }
    if registry.live.is_empty() {
        state.left.notify_all();
    }
    drop(registry);
    // A burst of refusals at the limit is followed by connections leaving: report
    // what it left unreported without waiting for the next refusal.
    super::admission::report_suppressed_refusals(state, false);
}

/// Records the thread the accept loop started for the connection in `slot`, so that
/// shutdown can interrupt its reads. Only while the slot is still this connection's (the
/// thread may have finished already, and the slot gone to another connection), and not
/// over the serving thread a TLS connection's handshake thread has handed it to.
pub(super) fn record_thread<S>(state: &ServerState, slot: usize, stream: &Arc<S>, thread: Pthread) {
    if let Some(live) = state.lock().entry(slot, stream) {
        if !live.handed_off {
            live.thread = thread;
        }
    }
}

/// Records the serving thread a TLS connection was handed to. Called before the
/// handshake's thread moves on, so that shutdown never signals a thread that has left
/// the connection.
pub(super) fn record_hand_off(
    state: &ServerState,
    slot: usize,
    stream: &Arc<TcpStream>,
    thread: Pthread,
) {
    if let Some(live) = state.lock().entry(slot, stream) {
        live.thread = thread;
        live.handed_off = true;
        live.woken = false;
    }
}

/// Forgets the thread of the connection in `slot`, which keeps its place while its
/// thread moves on to other connections: shutdown must not signal that thread for it.
pub(super) fn forget_thread(state: &ServerState, slot: usize, stream: &Arc<TcpStream>) {
    if let Some(live) = state.lock().entry(slot, stream) {
        live.thread = 0;
    }
}

/// Takes a place for connection `id`'s TLS handshake among those under way. With
/// `--tls-max-handshakes-per-source` under way from `peer`'s address, or
/// `--tls-max-handshakes` in all, the oldest one (of the address, or of all) is
/// ended to make room: a real client's handshake takes a round trip or two, so the
/// oldest is the likeliest to be stalled, and a flood of stalled handshakes cannot
/// shut out the clients that come after it, as refusing the newest would.
pub(super) fn begin_handshake<'a>(
    state: &'a ServerState,
    id: u64,
    peer: SocketAddr,
    stream: &Arc<TcpStream>,
) -> HandshakePlace<'a> {
    let (per_source, all) = (
        state.config.max_handshakes_per_source,
        state.config.max_handshakes,
    );
    let mut registry = state.lock();
    let source = source_key(peer.ip());
    let from_source = registry.handshakes_per_source.get(&source);
    let oldest = if from_source.is_some_and(|&n| n >= per_source) {
        registry
            .handshakes
            .iter()
            .find(|(_, p)| source_key(p.peer.ip()) == source)
            .map(|(&id, _)| id)
    } else if registry.handshakes.len() >= all {
        registry.handshakes.keys().next().copied()
    } else {
        None
    };
    let ended = oldest.and_then(|old| registry.end_handshake(old));
    registry.handshakes.insert(
        id,
        Pending {
            peer,
            stream: Arc::clone(stream),
        },
    );
    *registry.handshakes_per_source.entry(source).or_insert(0) += 1;
    drop(registry);
    if let Some(ended) = ended {
        // Its thread's read or write returns at once, and it closes.
        let _ = ended.stream.shutdown(Shutdown::Both);
        let why = if source_key(ended.peer.ip()) == source {
            format!("{per_source} under way from its address (--tls-max-handshakes-per-source)")
        } else {
            format!("{all} under way (--tls-max-handshakes)")
        };
        let suppressed = lock(&state.busy_log).allow(Instant::now());
        match suppressed {
            Some(0) => warn!(
                target: log_target::REGISTRY,
                peer:% = ended.peer, reason:% = why;
                "ended the TLS handshake of {} for a newer one: {why}",
                ended.peer
            ),
            Some(n) => warn!(
                target: log_target::REGISTRY,
                peer:% = ended.peer, reason:% = why, suppressed = n;
                "ended the TLS handshake of {} for a newer one: {why} ({n} more ended or \
                 refused since the last report)",
                ended.peer
            ),
            None => {}
        }
    }
    HandshakePlace {
        state,
        id,
        given_up: false,
    }
}

/// A TLS handshake's place among those under way, given up when it ends (on drop, if
/// not before).
pub(super) struct HandshakePlace<'a> {
    state: &'a ServerState,
    id: u64,
    given_up: bool,
}

impl HandshakePlace<'_> {
    /// Gives the place up; false if a newer handshake took it (see
    /// [`begin_handshake`]), which also closed the socket.
    pub(super) fn give_up(mut self) -> bool {
        self.given_up = true;
        self.state.lock().end_handshake(self.id).is_some()
    }
}

impl Drop for HandshakePlace<'_> {
    fn drop(&mut self) {
        if !self.given_up {
            self.state.lock().end_handshake(self.id);
        }
    }
}

/// A connection's place in the registry, given up on drop.
pub(super) struct Registered {
    pub(super) state: Arc<ServerState>,
    pub(super) id: u64,
    pub(super) slot: usize,
    /// The client's address: the socket's peer, or the one its PROXY header names.
    pub(super) peer: SocketAddr,
    /// The address whose `--max-per-source` count holds this connection, if any: the
    /// one given back on leaving. Not always `peer`'s: a proxy's health check is served
    /// with the proxy's address but counted for none.
    pub(super) counted: Option<IpAddr>,
    /// With `--proxy-protocol`, the proxy the connection came through (the socket's
    /// peer), once its header has named another client.
    pub(super) via: Option<SocketAddr>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if thread::panicking() {
            // Connection threads are unnamed (a name costs an allocation per
            // connection), so this line is what ties the panic message to a connection.
            error!(
                target: log_target::REGISTRY,
                id = self.id, peer:% = self.peer, reason = "panic";
                "conn {} closed: {}, its thread panicked (a bug: please report it)",
                self.id, self.peer
            );
        }
        leave(&self.state, self.slot, self.counted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::Context;
    use crate::server::{Server, ServerConfig};
    use std::net::TcpStream;
    use std::time::Duration;

    #[test]
    fn a_connection_whose_thread_panics_leaves_the_registry() {
        let config = ServerConfig {
            bind: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            tls_bind: Vec::new(),
            unix_bind: Vec::new(),
            unix_mode: None,
            tls: None,
            backlog: 8,
            reuse_port: false,
            max_connections: 4,
            max_per_source: 4,
            rules: Default::default(),
            proxy: None,
            idle_timeout: None,
            write_timeout: None,
            shutdown_timeout: Duration::from_secs(1),
            linger: Duration::from_secs(2),
            drain_delay: Duration::ZERO,
            unready_at_max: false,
            keepalive: None,
            user_timeout: None,
            thread_cache: 0,
            max_handshakes: 4,
            max_handshakes_per_source: 4,
            trace: None,
        };
        let ctx = Context::new(Default::default(), None, Duration::ZERO);
        let server = Server::bind(config, ctx).unwrap();
        let shared = Arc::clone(&server.state);
        let listener = &server.listeners[0].0;
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, peer) = listener.accept().unwrap();
        let slot = {
            let mut registry = shared.lock();
            *registry.per_source.entry(peer.ip()).or_insert(0) += 1;
            registry.live.insert(Live {
                stream: Socket::Tcp(Arc::new(stream)),
                thread: 0,
                handed_off: false,
                woken: false,
            })
        };
        let holder = Arc::clone(&shared);
        let joined = thread::spawn(move || {
            let _registered = Registered {
                state: holder,
                id: 1,
                slot,
                peer,
                counted: Some(peer.ip()),
                via: None,
            };
            panic!("deliberate panic while registered");
        })
        .join();
        assert!(joined.is_err(), "the thread should have panicked");
        let registry = shared.lock();
        assert!(registry.live.is_empty());
        assert!(registry.per_source.is_empty());
        drop(client);
    }
}
