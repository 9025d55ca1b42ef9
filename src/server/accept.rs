//! The accept loop: admits a connection (address rules, connection limits) and starts
//! its thread, or refuses it from the loop itself; backs off when the system runs out of
//! resources.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};

use super::Shared;
use super::registry::{Live, Registry};
use crate::metrics::Refusal;
use crate::protocol::{Mode, Notice};
use crate::rules::{Rules, source_key};
use crate::sync::lock;

/// The log rate limit of address refusals, apart from `busy_log`: those are the rules
/// doing their job, logged at info, and a scan from a denied network must not take the
/// second's report from a busy refusal, which is a warning. A static rather than a field
/// of `Shared`: a process runs one server, and its accept loops all share it.
static ADDRESS_LOG: Mutex<RateLimit> = Mutex::new(RateLimit::new(Duration::from_secs(1)));

impl Shared {
    pub(super) fn accept_loop(self: &Arc<Self>, listener: &TcpListener, tls: bool) {
        let mut backoff = AcceptBackoff::default();
        loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    backoff.succeeded();
                    self.report_suppressed_refusals(false);
                    self.admit(stream, peer, tls);
                }
                Err(_) if self.stopping() => return,
                Err(e) => {
                    if !is_timeout(&e) {
                        self.counters.accept_failed();
                    }
                    if let Some(pause) = backoff.failed(&e, Instant::now()) {
                        thread::sleep(pause);
                    }
                }
            }
        }
    }

    /// Registers a new connection and starts its thread, or refuses it.
    ///
    /// With `--proxy-protocol` the peer is a proxy: all that is checked here is whether
    /// it may send a header (`--proxy-from`) and `--max-connections`. The client's
    /// address, which the address rules and `--max-per-source` are about, comes with
    /// the header, read on the connection's own thread (see `proxied`): the accept loop
    /// never waits for a client's bytes.
    pub(super) fn admit(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, tls: bool) {
        let proxied = self.config.proxy.is_some();
        let allowed = match &self.config.proxy {
            Some(proxy) => self.trusted_proxy(&proxy.trusted, peer),
            None => self.let_in(peer),
        };
        if !allowed {
            // Closed before anything else, without a byte or a thread: a refused
            // address learns no more than that the port is open, and costs next to
            // nothing. If the client already sent data, the close is a reset: fine.
            drop(stream);
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stream = Arc::new(stream);
        let slot = {
            let mut registry = self.lock();
            if registry.live.len() >= self.config.max_connections {
                // Connections waiting for their clients' close hold places too: those
                // whose clients have closed since the closer last looked give theirs up.
                drop(registry);
                self.closer.sweep();
                registry = self.lock();
            }
            if registry.stopping {
                return;
            }
            if registry.live.len() >= self.config.max_connections {
                drop(registry);
                self.counters.refused(Refusal::Busy);
                let connections = self.config.max_connections;
                self.refuse(
                    &stream,
                    peer,
                    Notice::Busy { connections },
                    "connection limit reached",
                    tls,
                );
                return;
            }
            if !proxied && !self.take_source_place(&mut registry, peer.ip()) {
                drop(registry);
                self.refuse_per_source(&stream, peer, tls);
                return;
            }
            registry.live.insert(Live {
                stream: Arc::clone(&stream),
                thread: 0,
                handed_off: false,
                woken: false,
            })
        };
        let counted = (!proxied && self.config.max_per_source > 0).then_some(source_key(peer.ip()));
        // A proxied connection is counted once its header has let it in.
        if !proxied {
            self.counters.admitted();
        }
        // Logged here rather than on the connection's thread: formatting a log record
        // takes more stack than serving does, and every stack page a connection thread
        // touches stays resident for as long as the connection lives. At debug: the
        // close line says all there is to say, and a health check, which logs its close
        // at debug, must not leave an open line without its close at info.
        // A TLS connection's open line comes after its handshake, with what it told,
        // and a proxied one's after its header, with the client it names.
        if !tls && !proxied {
            debug!("conn {id} open: {peer}");
        }
        let (shared, conn_stream) = (Arc::clone(self), Arc::clone(&stream));
        let threads = if tls {
            &self.handshake_threads
        } else {
            &self.threads
        };
        match threads.run(Box::new(move || {
            shared.run_connection(id, slot, conn_stream, peer, counted, tls)
        })) {
            Ok(thread) => {
                // Recorded only while the slot is still this connection's: the thread
                // may have finished already, and the slot gone to another connection.
                let mut registry = self.lock();
                if let Some(live) = registry.live.get_mut(slot) {
                    if Arc::ptr_eq(&live.stream, &stream) && !live.handed_off {
                        live.thread = thread;
                    }
                }
            }
            Err(e) => {
                self.leave(slot, counted);
                self.counters.refused(Refusal::Busy);
                let connections = self.lock().live.len();
                let why = format!("cannot start a thread: {e}");
                self.refuse(&stream, peer, Notice::Busy { connections }, &why, tls);
            }
        }
    }

    /// The address rules (`--allow`, `--deny`) for a client's address: whether it is
    /// let in. A refusal is counted and logged (at info, at most once a second).
    pub(super) fn let_in(&self, client: SocketAddr) -> bool {
        let rules = &self.config.rules;
        if rules.is_empty() {
            return true;
        }
        let decision = rules.decide(client.ip());
        if decision.allows() {
            return true;
        }
        self.counters.refused(Refusal::Rule);
        refuse_address(client, format_args!("address not allowed ({decision})"));
        false
    }

    /// `--proxy-from`: whether `peer` may send a PROXY header (every peer, without
    /// rules). A refusal is counted as the rules' and logged like theirs.
    fn trusted_proxy(&self, trusted: &Rules, peer: SocketAddr) -> bool {
        if trusted.is_empty() || trusted.decide(peer.ip()).allows() {
            return true;
        }
        self.counters.refused(Refusal::Rule);
        refuse_address(peer, format_args!("not a trusted proxy (--proxy-from)"));
        false
    }

    /// Takes a place for `ip` in `--max-per-source`'s count, under the registry's lock;
    /// false if its connections are at the limit. Always true without a limit. The count
    /// is by [`source_key`]: an IPv6 address's /64, a mapped address's IPv4 one.
    pub(super) fn take_source_place(&self, registry: &mut Registry, ip: IpAddr) -> bool {
        let limit = self.config.max_per_source;
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

    /// Refuses a client whose address is at `--max-per-source`: counted, logged, and
    /// told so (see [`Shared::refuse`]).
    pub(super) fn refuse_per_source(&self, stream: &TcpStream, client: SocketAddr, tls: bool) {
        self.counters.refused(Refusal::PerSource);
        let notice = Notice::BusySource {
            limit: self.config.max_per_source,
        };
        self.refuse(stream, client, notice, "per-address limit reached", tls);
    }

    /// Logs the refusals a burst left unreported: once their second has passed (`force`
    /// false), or at once (at shutdown).
    pub(super) fn report_suppressed_refusals(&self, force: bool) {
        if let Some(n) = unreported(&self.busy_log, force) {
            warn!("refused {n} more connections since the last report");
        }
        if let Some(n) = unreported(&ADDRESS_LOG, force) {
            info!("refused {n} more connections by address rules since the last report");
        }
    }

    /// Tells a client the server is busy and closes, without a thread of its own.
    pub(super) fn refuse(
        &self,
        stream: &TcpStream,
        peer: SocketAddr,
        notice: Notice,
        why: &str,
        tls: bool,
    ) {
        let suppressed = lock(&self.busy_log).allow(Instant::now());
        match suppressed {
            Some(0) => warn!("refused {peer}: {why}"),
            Some(n) => warn!("refused {peer}: {why} ({n} more refused since the last report)"),
            None => {}
        }
        // Echo mode sends nothing of its own; a TLS client could not read plain text,
        // and a handshake here would hold up the accept loop.
        if self.ctx.settings.mode == Mode::Echo || tls {
            return;
        }
        let notice = self.ctx.settings.notice(notice);
        let _ = stream.set_nonblocking(true);
        // Read what the client already sent, so that closing does not reset the
        // connection and destroy the notice before the client reads it.
        let mut scratch = [0u8; 1024];
        let _ = (&*stream).read(&mut scratch);
        let _ = (&*stream).write(&notice);
        let _ = stream.shutdown(Shutdown::Write);
    }
}

/// What `log` suppressed and has not reported: once its period has passed (`force`
/// false), or at once.
fn unreported(log: &Mutex<RateLimit>, force: bool) -> Option<u64> {
    let mut log = lock(log);
    if force {
        log.flush()
    } else {
        log.overdue(Instant::now())
    }
}

/// Logs an address refusal at info, at most once a second with a count of the others.
fn refuse_address(peer: SocketAddr, why: fmt::Arguments<'_>) {
    let suppressed = lock(&ADDRESS_LOG).allow(Instant::now());
    match suppressed {
        Some(0) => info!("refused {peer}: {why}"),
        Some(n) => info!("refused {peer}: {why} ({n} more refused since the last report)"),
        None => {}
    }
}

/// Log rate limiting: at most one report per period, counting what was suppressed.
#[derive(Debug)]
pub struct RateLimit {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// Allows one report per `period`.
    pub const fn new(period: Duration) -> Self {
        RateLimit {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// What was suppressed, once a period has passed since the last report: the count
    /// a burst left behind that no later event reported.
    pub fn overdue(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if self.suppressed > 0 && now.duration_since(last) >= self.period => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
            _ => None,
        }
    }

    /// What was suppressed since the last report, reported now whatever the time.
    pub fn flush(&mut self) -> Option<u64> {
        (self.suppressed > 0).then(|| std::mem::take(&mut self.suppressed))
    }

    /// `Some(suppressed since the last report)` if a report is due now, else `None`.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// What the accept loop does after an error: retry at once for errors that concern only
/// one connection, back off exponentially (5 ms to 1 s) when the process or system is
/// out of a resource (EMFILE, ENFILE, ENOBUFS, ENOMEM), and log at most once a second.
#[derive(Debug)]
pub struct AcceptBackoff {
    pause: Duration,
    log: RateLimit,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff {
            pause: Duration::ZERO,
            log: RateLimit::new(Duration::from_secs(1)),
        }
    }
}

const MIN_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_secs(1);

impl AcceptBackoff {
    /// An accept succeeded: the next failure starts from the shortest pause, and errors
    /// the log left out are counted now.
    pub fn succeeded(&mut self) {
        self.pause = Duration::ZERO;
        if let Some(n) = self.log.flush() {
            warn!("accepting again; {n} more accept errors were not shown");
        }
    }

    /// An accept failed with `error`; returns how long to pause before the next one.
    pub fn failed(&mut self, error: &io::Error, now: Instant) -> Option<Duration> {
        if per_connection(error) {
            // The listener's receive timeout (the idle timeout, see `per_connection`)
            // ends an `accept` that found no client: nothing happened, nothing to log.
            if !is_timeout(error) {
                debug!("accept: {error}");
            }
            return None;
        }
        self.pause = (self.pause * 2).clamp(MIN_PAUSE, MAX_PAUSE);
        if let Some(suppressed) = self.log.allow(now) {
            error!(
                "accept failed: {error}{}; pausing accepts for {} ms{}",
                if is_fd_exhaustion(error) {
                    " (out of file descriptors: raise `ulimit -n` or lower --max-connections)"
                } else {
                    ""
                },
                self.pause.as_millis(),
                if suppressed > 0 {
                    format!(" ({suppressed} similar errors not shown)")
                } else {
                    String::new()
                }
            );
        }
        Some(self.pause)
    }
}

/// Errors after which the next accept can follow at once: the connection being
/// accepted was reset or aborted before `accept` returned, or no client came within
/// the listener's receive timeout. That timeout is the idle timeout, set on the
/// listener so that accepted sockets inherit it, and Linux applies it to `accept` too.
fn per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
            | ErrorKind::TimedOut
    ) || error.raw_os_error() == Some(71) // EPROTO
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

fn is_fd_exhaustion(error: &io::Error) -> bool {
    // EMFILE (24) and ENFILE (23).
    matches!(error.raw_os_error(), Some(23 | 24))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_what_it_suppresses() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(Duration::from_secs(1));
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0 + Duration::from_millis(10)), None);
        assert_eq!(r.allow(t0 + Duration::from_millis(20)), None);
        assert_eq!(r.allow(t0 + Duration::from_millis(1001)), Some(2));
        assert_eq!(r.allow(t0 + Duration::from_millis(1002)), None);
    }

    #[test]
    fn rate_limit_reports_what_a_burst_left_once_its_period_passed() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(Duration::from_secs(1));
        assert_eq!(r.overdue(t0), None);
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(
            r.overdue(t0 + Duration::from_secs(5)),
            None,
            "nothing suppressed"
        );
        for ms in 1..50 {
            assert_eq!(r.allow(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(r.overdue(t0 + Duration::from_millis(500)), None, "too soon");
        assert_eq!(r.overdue(t0 + Duration::from_millis(1000)), Some(49));
        assert_eq!(
            r.overdue(t0 + Duration::from_secs(9)),
            None,
            "reported once"
        );
        assert_eq!(r.allow(t0 + Duration::from_millis(1500)), None);
        assert_eq!(r.flush(), Some(1));
        assert_eq!(r.flush(), None);
    }

    #[test]
    fn accept_timeouts_and_aborted_connections_retry_at_once() {
        let mut b = AcceptBackoff::default();
        let now = Instant::now();
        for kind in [
            ErrorKind::WouldBlock,
            ErrorKind::TimedOut,
            ErrorKind::ConnectionAborted,
        ] {
            assert_eq!(b.failed(&io::Error::from(kind), now), None, "{kind:?}");
        }
    }

    #[test]
    fn backoff_doubles_to_a_ceiling_and_resets() {
        let mut b = AcceptBackoff::default();
        let emfile = io::Error::from_raw_os_error(24);
        let now = Instant::now();
        let pauses: Vec<_> = (0..12).map(|_| b.failed(&emfile, now).unwrap()).collect();
        assert_eq!(pauses[0], MIN_PAUSE);
        assert_eq!(pauses[1], MIN_PAUSE * 2);
        assert_eq!(*pauses.last().unwrap(), MAX_PAUSE);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        b.succeeded();
        assert_eq!(b.failed(&emfile, now), Some(MIN_PAUSE));
    }

    #[test]
    fn aborted_connections_are_retried_at_once() {
        let mut b = AcceptBackoff::default();
        let aborted = io::Error::from(ErrorKind::ConnectionAborted);
        assert_eq!(b.failed(&aborted, Instant::now()), None);
        assert_eq!(
            b.failed(&io::Error::from_raw_os_error(71), Instant::now()),
            None
        );
    }
}
