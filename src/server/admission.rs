//! Admission: whether a connection is let in (address rules, `--proxy-from`, connection
//! limits), its place in the registry if it is, and the refusal if it is not. Refusals
//! are counted, logged at most once a second, and told to the client from the thread
//! that decided, without a thread of their own.

use std::fmt;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::log_limit::{LogLimit, unreported};
use super::registry::{Live, Registered, Registry, Socket};
use super::{ServerState, log_target};
use crate::metrics::Refusal;
use crate::protocol::{Mode, Notice};
use crate::proxy::{self, HeaderError, ProxyProtocol, Source};
use crate::rules::{Rules, source_key};
use crate::sync::lock;

/// The log rate limit of address refusals, apart from the busy log: those are the rules
/// doing their job, logged at info, and a scan from a denied network must not take the
/// second's report from a busy refusal, which is a warning. A static rather than a field
/// of [`ServerState`]: a process runs one server, and its accept loops all share it.
static ADDRESS_LOG: Mutex<LogLimit> = Mutex::new(LogLimit::new(Duration::from_secs(1)));

/// A connection let in: its place in the registry, and what its thread needs.
pub(super) struct Admitted {
    pub(super) id: u64,
    pub(super) slot: usize,
    pub(super) stream: Arc<TcpStream>,
    /// The address whose `--max-per-source` count took a place for it, if any.
    pub(super) counted: Option<IpAddr>,
}

/// Admits a connection just accepted, giving it a place in the registry, or refuses it.
///
/// With `--proxy-protocol` the peer is a proxy: all that is checked here is whether it
/// may send a header (`--proxy-from`) and `--max-connections`. The client's address,
/// which the address rules and `--max-per-source` are about, comes with the header, read
/// on the connection's own thread (see [`admit_proxied`]): the accept loop never waits
/// for a client's bytes.
pub(super) fn admit(
    state: &ServerState,
    stream: TcpStream,
    peer: SocketAddr,
    tls: bool,
) -> Option<Admitted> {
    let proxied = state.config.proxy.is_some();
    let allowed = match &state.config.proxy {
        Some(proxy) => trusted_proxy(state, &proxy.trusted, peer),
        None => let_in(state, peer),
    };
    if !allowed {
        // Closed before anything else, without a byte or a thread: a refused address
        // learns no more than that the port is open, and costs next to nothing. If the
        // client already sent data, the close is a reset: fine.
        drop(stream);
        return None;
    }
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let stream = Arc::new(stream);
    let slot = {
        let mut registry = match room(state) {
            Ok(registry) => registry,
            Err(NoRoom::Stopping) => return None,
            Err(NoRoom::Full) => {
                refuse_busy(state, &*stream, peer, tls);
                return None;
            }
        };
        if !proxied && !take_source_place(state, &mut registry, peer.ip()) {
            drop(registry);
            refuse_per_source(state, &stream, peer, tls);
            return None;
        }
        registry.live.insert(Live {
            stream: Socket::Tcp(Arc::clone(&stream)),
            thread: 0,
            handed_off: false,
            woken: false,
        })
    };
    let counted = (!proxied && state.config.max_per_source > 0).then_some(source_key(peer.ip()));
    // A proxied connection is counted once its header has let it in.
    if !proxied {
        state.counters.admitted();
    }
    // Logged here rather than on the connection's thread: formatting a log record takes
    // more stack than serving does, and every stack page a connection thread touches
    // stays resident for as long as the connection lives. At debug: the close line says
    // all there is to say, and a health check, which logs its close at debug, must not
    // leave an open line without its close at info. A TLS connection's open line comes
    // after its handshake, with what it told, and a proxied one's after its header, with
    // the client it names.
    if !tls && !proxied {
        debug!(target: log_target::ACCEPT, id, peer:%; "conn {id} open: {peer}");
    }
    Some(Admitted {
        id,
        slot,
        stream,
        counted,
    })
}

/// Why a connection gets no place in the registry.
enum NoRoom {
    /// Shutdown has begun: closed without a word, like the rest.
    Stopping,
    /// `--max-connections` are open.
    Full,
}

/// The registry, locked, with room for one more connection. Connections waiting for
/// their clients' close hold places too: those whose clients have closed since the
/// closer last looked give theirs up first.
fn room(state: &ServerState) -> Result<std::sync::MutexGuard<'_, Registry>, NoRoom> {
    let mut registry = state.lock();
    if registry.live.len() >= state.config.max_connections {
        drop(registry);
        state.runtime.sweep_lingering();
        registry = state.lock();
    }
    if registry.stopping {
        return Err(NoRoom::Stopping);
    }
    if registry.live.len() >= state.config.max_connections {
        return Err(NoRoom::Full);
    }
    Ok(registry)
}

/// Counts and refuses a connection at `--max-connections`, with the busy line.
fn refuse_busy(state: &ServerState, stream: &impl AsFd, peer: impl fmt::Display, tls: bool) {
    state.counters.refused(Refusal::Busy);
    let connections = state.config.max_connections;
    let notice = Notice::Busy { connections };
    refuse(state, stream, peer, notice, "connection limit reached", tls);
}

/// An admitted connection whose thread could not start: gives its place back and tells
/// the client the server is busy.
pub(super) fn no_thread(
    state: &ServerState,
    admitted: Admitted,
    peer: SocketAddr,
    tls: bool,
    error: &std::io::Error,
) {
    super::registry::leave(state, admitted.slot, admitted.counted);
    state.counters.refused(Refusal::Busy);
    let connections = state.lock().live.len();
    let why = format!("cannot start a thread: {error}");
    let notice = Notice::Busy { connections };
    refuse(state, &admitted.stream, peer, notice, &why, tls);
}

/// A connection let in on a `unix:` listener.
pub(super) struct AdmittedUnix {
    pub(super) id: u64,
    pub(super) slot: usize,
    pub(super) stream: Arc<UnixStream>,
}

/// Admits a connection just accepted on a `unix:` listener, from `peer`, giving it a
/// place in the registry, or refuses it. Only `--max-connections` applies: the address
/// rules, `--max-per-source` and PROXY headers are about IP addresses.
pub(super) fn admit_unix(
    state: &ServerState,
    stream: UnixStream,
    peer: impl fmt::Display,
) -> Option<AdmittedUnix> {
    let stream = Arc::new(stream);
    let slot = {
        let mut registry = match room(state) {
            Ok(registry) => registry,
            Err(NoRoom::Stopping) => return None,
            Err(NoRoom::Full) => {
                refuse_busy(state, &*stream, peer, false);
                return None;
            }
        };
        registry.live.insert(Live {
            stream: Socket::Unix(Arc::clone(&stream)),
            thread: 0,
            handed_off: false,
            woken: false,
        })
    };
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    state.counters.admitted();
    // Here rather than on the connection's thread, as in `admit`.
    debug!(target: log_target::ACCEPT, "conn {id} open: {peer}");
    Some(AdmittedUnix { id, slot, stream })
}

/// An admitted Unix connection whose thread could not start: as [`no_thread`].
pub(super) fn no_unix_thread(
    state: &ServerState,
    admitted: AdmittedUnix,
    peer: impl fmt::Display,
    error: &std::io::Error,
) {
    super::registry::leave(state, admitted.slot, None);
    state.counters.refused(Refusal::Busy);
    let connections = state.lock().live.len();
    let why = format!("cannot start a thread: {error}");
    let notice = Notice::Busy { connections };
    refuse(state, &*admitted.stream, peer, notice, &why, false);
}

/// With `--proxy-protocol`: reads the connection's PROXY header, first thing on its own
/// thread, and admits the client it names with the checks the accept loop applies
/// without a header (the address rules, `--max-per-source`): `registered` then carries
/// the client's address, with the proxy's as `via`. A `LOCAL` or `UNKNOWN` header (a
/// health check) has no client: the connection is served with the socket's peer, and no
/// client rule or limit applies. False if the connection is to be closed now: refused
/// (counted and logged as the accept loop does), or without a usable header (counted,
/// logged at debug: scanners and plain TCP probes must not fill the logs). Never
/// inlined: its header buffer would stay in the frame of every connection's thread.
#[inline(never)]
pub(super) fn admit_proxied(
    state: &ServerState,
    registered: &mut Registered,
    stream: &TcpStream,
    proxy: &ProxyProtocol,
    tls: bool,
) -> bool {
    let (id, peer) = (registered.id, registered.peer);
    match proxy::read_header(stream, proxy.header_timeout, &state.ctx.shutting_down) {
        // Not the peer's fault: nothing to count.
        Err(HeaderError::Shutdown) => return false,
        Err(e) => {
            state.counters.refused(Refusal::ProxyHeader);
            debug!(
                target: log_target::PROXIED,
                id, peer:%, reason:% = e;
                "conn {id} refused: {peer}: {e}"
            );
            return false;
        }
        Ok(Source::Local) => {}
        Ok(Source::Client(client)) => {
            if !let_in(state, client) {
                return false;
            }
            let mut registry = state.lock();
            if !take_source_place(state, &mut registry, client.ip()) {
                drop(registry);
                refuse_per_source(state, stream, client, tls);
                return false;
            }
            drop(registry);
            registered.counted =
                (state.config.max_per_source > 0).then_some(source_key(client.ip()));
            registered.via = Some(peer);
            registered.peer = client;
        }
    }
    if let Err(e) = super::shutdown::restore_read_timeout(state, stream) {
        debug!(
            target: log_target::PROXIED,
            id, peer:%, reason = "cannot set its read timeout", error:% = e;
            "conn {id} closed: {peer}: cannot set its read timeout: {e}"
        );
        return false;
    }
    state.counters.admitted();
    // A TLS connection's open line comes after its handshake.
    if !tls {
        match registered.via {
            Some(via) => debug!(
                target: log_target::PROXIED,
                id, peer:% = registered.peer, via:%;
                "conn {id} open: {} (via {via})",
                registered.peer
            ),
            None => debug!(
                target: log_target::PROXIED,
                id, peer:%;
                "conn {id} open: {peer} (no client address in its header)"
            ),
        }
    }
    true
}

/// The address rules (`--allow`, `--deny`) in force now for a client's address: whether
/// it is let in. A refusal is counted and logged (at info, at most once a second).
fn let_in(state: &ServerState, client: SocketAddr) -> bool {
    let rules = state.config.rules.current();
    if rules.is_empty() {
        return true;
    }
    let decision = rules.decide(client.ip());
    if decision.allows() {
        return true;
    }
    state.counters.refused(Refusal::Rule);
    refuse_address(client, format_args!("address not allowed ({decision})"));
    false
}

/// `--proxy-from`: whether `peer` may send a PROXY header (every peer, without rules).
/// A refusal is counted as the rules' and logged like theirs.
fn trusted_proxy(state: &ServerState, trusted: &Rules, peer: SocketAddr) -> bool {
    if trusted.is_empty() || trusted.decide(peer.ip()).allows() {
        return true;
    }
    state.counters.refused(Refusal::Rule);
    refuse_address(peer, format_args!("not a trusted proxy (--proxy-from)"));
    false
}

/// Takes a place for `ip` in `--max-per-source`'s count, under the registry's lock;
/// false if its connections are at the limit. Always true without a limit. The count is
/// by [`source_key`]: an IPv6 address's /64, a mapped address's IPv4 one.
fn take_source_place(state: &ServerState, registry: &mut Registry, ip: IpAddr) -> bool {
    let limit = state.config.max_per_source;
    if limit == 0 {
        return true;
    }
    let count = registry.per_source.entry(source_key(ip)).or_insert(0);
    if *count >= limit {
        return false;
    }
    *count += 1;
    true
}

/// Refuses a client whose address is at `--max-per-source`: counted, logged, and told
/// so (see [`refuse`]).
fn refuse_per_source(state: &ServerState, stream: &TcpStream, client: SocketAddr, tls: bool) {
    state.counters.refused(Refusal::PerSource);
    let notice = Notice::BusySource {
        limit: state.config.max_per_source,
    };
    refuse(
        state,
        stream,
        client,
        notice,
        "per-address limit reached",
        tls,
    );
}

/// Logs the refusals a burst left unreported: once their second has passed (`force`
/// false), or at once (at shutdown).
pub(super) fn report_suppressed_refusals(state: &ServerState, force: bool) {
    if let Some(n) = unreported(&state.busy_log, force) {
        warn!(
            target: log_target::ACCEPT,
            suppressed = n;
            "refused {n} more connections since the last report"
        );
    }
    if let Some(n) = unreported(&ADDRESS_LOG, force) {
        info!(
            target: log_target::ACCEPT,
            suppressed = n;
            "refused {n} more connections by address rules since the last report"
        );
    }
}

/// Tells a client the server is busy and closes, without a thread of its own.
fn refuse(
    state: &ServerState,
    stream: &impl AsFd,
    peer: impl fmt::Display,
    notice: Notice,
    why: &str,
    tls: bool,
) {
    let suppressed = lock(&state.busy_log).allow(Instant::now());
    match suppressed {
        Some(0) => warn!(target: log_target::ACCEPT, peer:%, reason = why; "refused {peer}: {why}"),
        Some(n) => warn!(
            target: log_target::ACCEPT,
            peer:%, reason = why, suppressed = n;
            "refused {peer}: {why} ({n} more refused since the last report)"
        ),
        None => {}
    }
    // Echo mode sends nothing of its own; a TLS client could not read plain text, and a
    // handshake here would hold up the accept loop.
    if state.ctx.settings.mode == Mode::Echo || tls {
        return;
    }
    let notice = state.ctx.settings.notice(notice);
    let socket = socket2::SockRef::from(stream);
    let _ = socket.set_nonblocking(true);
    // Read what the client already sent, so that closing does not reset the connection
    // and destroy the notice before the client reads it.
    let mut scratch = [0u8; 1024];
    let _ = (&*socket).read(&mut scratch);
    let _ = (&*socket).write(&notice);
    let _ = socket.shutdown(Shutdown::Write);
}

/// Logs an address refusal at info, at most once a second with a count of the others.
fn refuse_address(peer: SocketAddr, why: fmt::Arguments<'_>) {
    let suppressed = lock(&ADDRESS_LOG).allow(Instant::now());
    match suppressed {
        Some(0) => {
            info!(target: log_target::ACCEPT, peer:%, reason:% = why; "refused {peer}: {why}")
        }
        Some(n) => info!(
            target: log_target::ACCEPT,
            peer:%, reason:% = why, suppressed = n;
            "refused {peer}: {why} ({n} more refused since the last report)"
        ),
        None => {}
    }
}
