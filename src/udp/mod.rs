//! The datagram half: `serve --udp-bind`. Each datagram gets at most one datagram back
//! (`Hello, <payload>!`, or the payload itself in echo mode); there is no welcome and
//! no session.
//!
//! - `reply`: which peers are never answered, and the reply's bytes, pure;
//! - `rate`: `--udp-rate`, per-address token buckets in a bounded table, pure;
//! - this module: binding the sockets, and one thread per socket that receives, asks
//!   `reply` and `rate`, sends, counts, and stops when the server stops.
//!
//! A thread blocks in `recv_from` for at most [`POLL`], then looks at the stopping
//! flag; so it stops within that time of SIGINT or SIGTERM. Each socket has its own
//! counts and its own rate table; the threads share only [`UdpStats`], where each
//! publishes its counts about once a second for `--metrics`.
//!
//! One datagram per system call: batching with `recvmmsg`/`sendmmsg` does not pay where
//! the load generator sets the pace (README, UDP).

pub mod rate;
pub mod reply;

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, info, log_enabled, warn};
use socket2::{Domain, Protocol, Socket, Type};

use crate::fault::{Faults, Kind, UdpFaults};
use crate::metrics::{MetricType, TextFormat};
use crate::protocol::{ConnectionValues, LogText};
use crate::rules::LiveRules;
use crate::sync::lock;
use rate::TokenBuckets;
use reply::{DropReason, PeerRules, Replies, check_peer};

/// Longest a thread blocks in `recv_from` before it looks at the stopping flag.
pub const POLL: Duration = Duration::from_millis(200);

/// Least time between two info summaries of one socket while datagrams arrive.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Longest a socket's counts may go unpublished to [`UdpStats`] while datagrams arrive.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// How the UDP sockets serve, apart from the replies.
#[derive(Debug, Clone, Default)]
pub struct UdpConfig {
    /// `--udp-rate`: datagrams per second per address, 0 = no limit.
    pub rate: u32,
    /// `--allow`/`--deny`, as for TCP, shared with the TCP listeners: a reload applies to
    /// the next datagram.
    pub rules: Arc<LiveRules>,
    /// The peers never answered; [`UdpServer::spawn`] adds every socket's port.
    pub peers: PeerRules,
    /// `--fault` (drop, duplicate, delay), drawn per datagram; `None` without it.
    pub faults: Option<Arc<Faults>>,
}

/// Binds a UDP socket on `addr` (IPv6 sockets are IPv6-only, as the TCP listeners
/// are), with SO_REUSEPORT if asked, and the [`POLL`] read timeout. On Linux its
/// datagrams carry [`reply::REPLY_CLASS`], and it reports each datagram's TOS or
/// traffic class, so that no two tcp-hello sockets answer each other.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    #[cfg(target_os = "linux")]
    if addr.is_ipv6() {
        socket.set_tclass_v6(u32::from(reply::REPLY_CLASS))?;
        socket.set_recv_tclass_v6(true)?;
    } else {
        socket.set_tos_v4(u32::from(reply::REPLY_CLASS))?;
        socket.set_recv_tos_v4(true)?;
    }
    socket.bind(&addr.into())?;
    socket.set_read_timeout(Some(POLL))?;
    Ok(socket.into())
}

/// Room for the one control message [`receive`] asks for (a TOS byte or a traffic
/// class, an int at most).
#[cfg(target_os = "linux")]
fn control_buffer() -> Vec<u8> {
    nix::cmsg_space!(libc::c_int)
}

#[cfg(not(target_os = "linux"))]
fn control_buffer() -> Vec<u8> {
    Vec::new()
}

/// One datagram into `buf`: its length, its sender, and its TOS (IPv4) or traffic
/// class (IPv6) byte, as [`bind`] asked the kernel to report it.
#[cfg(target_os = "linux")]
fn receive(
    socket: &UdpSocket,
    buf: &mut [u8],
    control: &mut [u8],
) -> io::Result<(usize, SocketAddr, u8)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg};
    use std::os::fd::AsRawFd;
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(control),
        MsgFlags::empty(),
    )?;
    let peer = msg.address.and_then(|a| {
        a.as_sockaddr_in()
            .map(|v4| SocketAddr::V4((*v4).into()))
            .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into())))
    });
    let peer = peer.ok_or_else(|| io::Error::other("a datagram without an IP sender"))?;
    let mut class = 0;
    // A truncated control buffer (it cannot be, at its size) only loses the mark.
    for cmsg in msg.cmsgs().into_iter().flatten() {
        match cmsg {
            ControlMessageOwned::Ipv4Tos(tos) => class = tos,
            // The traffic class is one byte, passed as an int.
            ControlMessageOwned::Ipv6TClass(tc) => class = tc as u8,
            _ => {}
        }
    }
    Ok((msg.bytes, peer, class))
}

/// Elsewhere the class is not read: only the ports and the rate stop loops there.
#[cfg(not(target_os = "linux"))]
fn receive(
    socket: &UdpSocket,
    buf: &mut [u8],
    _control: &mut [u8],
) -> io::Result<(usize, SocketAddr, u8)> {
    let (n, peer) = socket.recv_from(buf)?;
    Ok((n, peer, 0))
}

/// Datagrams one socket answered and dropped, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Datagrams received.
    pub received: u64,
    /// Replies sent.
    pub answered: u64,
    /// Dropped, by [`DropReason::index`].
    pub dropped: [u64; DropReason::ALL.len()],
    /// Replies the kernel refused to send.
    pub send_failed: u64,
    /// Receive errors other than the timeout.
    pub recv_failed: u64,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} received, {} answered",
            self.received,
            crate::plural::noun(self.received, "datagram", "datagrams"),
            self.answered
        )?;
        let dropped: u64 = self.dropped.iter().sum();
        write!(f, ", {dropped} dropped")?;
        if dropped > 0 {
            let reasons: Vec<String> = DropReason::ALL
                .iter()
                .filter(|d| self.dropped[d.index()] > 0)
                .map(|d| format!("{} {}", d.label(), self.dropped[d.index()]))
                .collect();
            write!(f, " ({})", reasons.join(", "))?;
        }
        if self.send_failed > 0 {
            write!(f, ", {} replies failed to send", self.send_failed)?;
        }
        if self.recv_failed > 0 {
            write!(f, ", {} receive errors", self.recv_failed)?;
        }
        Ok(())
    }
}

impl Counts {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Counts) {
        self.received += other.received;
        self.answered += other.answered;
        self.send_failed += other.send_failed;
        self.recv_failed += other.recv_failed;
        for (t, n) in self.dropped.iter_mut().zip(other.dropped) {
            *t += n;
        }
    }
}

/// The counts of every UDP socket, as each last published them (at most
/// [`PUBLISH_EVERY`] old while datagrams arrive, [`POLL`] when they stop), for
/// `--metrics`. The lock is taken by a socket's thread about once a second, never per
/// datagram.
#[derive(Debug, Default)]
pub struct UdpStats {
    sockets: Mutex<Vec<Counts>>,
}

impl UdpStats {
    /// Every socket's counts together.
    pub fn total(&self) -> Counts {
        let sockets = lock(&self.sockets);
        let mut total = Counts::default();
        for c in sockets.iter() {
            total.add(c);
        }
        total
    }

    fn publish(&self, socket: usize, counts: &Counts) {
        let mut sockets = lock(&self.sockets);
        if sockets.len() <= socket {
            sockets.resize(socket + 1, Counts::default());
        }
        sockets[socket] = counts.clone();
    }

    /// The counts in the Prometheus text format, to follow the TCP server's.
    pub fn render(&self) -> String {
        let c = self.total();
        let mut out = TextFormat::with_capacity(1024);
        out.single(
            "tcp_hello_udp_datagrams_total",
            MetricType::Counter,
            "UDP datagrams received.",
            c.received,
        );
        out.single(
            "tcp_hello_udp_replies_total",
            MetricType::Counter,
            "UDP datagrams answered.",
            c.answered,
        );
        out.single(
            "tcp_hello_udp_send_errors_total",
            MetricType::Counter,
            "UDP replies the kernel refused to send.",
            c.send_failed,
        );
        out.by_label(
            "tcp_hello_udp_dropped_total",
            MetricType::Counter,
            "UDP datagrams not answered, by reason.",
            "reason",
            DropReason::ALL
                .iter()
                .map(|d| (d.label(), c.dropped[d.index()])),
        );
        out.finish()
    }
}

/// The running UDP threads.
pub struct UdpServer {
    threads: Vec<thread::JoinHandle<Counts>>,
}

impl UdpServer {
    /// Starts one thread per socket; each serves until `stopping()` says so, and
    /// publishes its counts to `stats`.
    pub fn spawn(
        sockets: Vec<UdpSocket>,
        replies: Replies,
        config: UdpConfig,
        stats: Arc<UdpStats>,
        stopping: Arc<dyn Fn() -> bool + Send + Sync>,
    ) -> io::Result<UdpServer> {
        let replies = Arc::new(replies);
        let mut config = config;
        for socket in &sockets {
            config.peers.own_ports.push(socket.local_addr()?.port());
        }
        let mut threads = Vec::with_capacity(sockets.len());
        for (i, socket) in sockets.into_iter().enumerate() {
            let (replies, config, stopping, stats) = (
                Arc::clone(&replies),
                config.clone(),
                Arc::clone(&stopping),
                Arc::clone(&stats),
            );
            threads.push(thread::Builder::new().name("udp".into()).spawn(move || {
                serve(&socket, &replies, &config, &*stopping, &|c: &Counts| {
                    stats.publish(i, c)
                })
            })?);
        }
        Ok(UdpServer { threads })
    }

    /// Waits for every thread to stop; returns the counts of all sockets together.
    pub fn join(self) -> Counts {
        let mut total = Counts::default();
        for thread in self.threads {
            // A thread that panicked has logged the panic; its counts are lost.
            if let Ok(c) = thread.join() {
                total.add(&c);
            }
        }
        total
    }
}

/// One socket's loop: until `stopping()`, each datagram is judged and maybe answered.
/// Logs each at debug level, and a summary at info at most every [`SUMMARY_EVERY`]
/// while datagrams arrive, and when it stops. Gives its counts to `publish` at most
/// every [`PUBLISH_EVERY`] while datagrams arrive, after the first quiet [`POLL`], and
/// when it stops.
pub fn serve(
    socket: &UdpSocket,
    replies: &Replies,
    config: &UdpConfig,
    stopping: &dyn Fn() -> bool,
    publish: &dyn Fn(&Counts),
) -> Counts {
    let local = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut buf = vec![0u8; replies.buffer_len()];
    let mut control = control_buffer();
    let mut out = Vec::with_capacity(replies.buffer_len() + replies.fixed());
    let mut limit = TokenBuckets::new(config.rate);
    let mut counts = Counts::default();
    let mut summarized = Counts::default();
    let mut last_summary = Instant::now();
    let mut published = Counts::default();
    let mut last_publish = Instant::now();
    // `{conn}` over UDP is the datagram's number on this socket, from 1.
    let mut values = ConnectionValues::new(local, local, 0);
    let mut faults = config.faults.as_ref().and_then(|all| {
        let udp = all.udp()?;
        Some(Faulted {
            udp,
            all: Arc::clone(all),
            // Every socket draws the same sequence: one run repeats another.
            rng: all.rng(u64::MAX),
            counts: [0; 3],
        })
    });
    while !stopping() {
        let (n, peer, class) = match receive(socket, &mut buf, &mut control) {
            Ok(got) => got,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if counts != published {
                    publish(&counts);
                    published = counts.clone();
                    last_publish = Instant::now();
                }
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                // Linux reports an earlier reply's ICMP error here on some sockets;
                // nothing to do but go on.
                counts.recv_failed += 1;
                if counts.recv_failed == 1 {
                    warn!("udp {local}: receive failed: {e}; going on");
                } else {
                    debug!("udp {local}: receive failed: {e}");
                }
                continue;
            }
        };
        counts.received += 1;
        let datagram = &buf[..n];
        let verdict = judge(peer, class, config, &mut limit).and_then(|()| {
            if replies.needs_values() {
                values = ConnectionValues::new(peer, local, counts.received);
            }
            replies.answer(datagram, &values, &mut out)
        });
        let mut twice = false;
        if let (Ok(()), Some(faulted)) = (&verdict, faults.as_mut()) {
            match faulted.strike(local, peer) {
                Some(twin) => twice = twin,
                None => continue,
            }
        }
        match verdict {
            Ok(()) => match socket.send_to(&out, peer) {
                Ok(_) => {
                    if twice {
                        let _ = socket.send_to(&out, peer);
                    }
                    counts.answered += 1;
                    if log_enabled!(log::Level::Debug) {
                        debug!(
                            "udp {local}: {peer} sent {n} bytes \"{}\", answered {} bytes",
                            LogText(datagram),
                            out.len()
                        );
                    }
                }
                Err(e) => {
                    counts.send_failed += 1;
                    debug!("udp {local}: reply to {peer} failed: {e}");
                }
            },
            Err(why) => {
                counts.dropped[why.index()] += 1;
                debug!(
                    "udp {local}: {peer} sent {n} bytes, dropped ({})",
                    why.label()
                );
            }
        }
        if last_publish.elapsed() >= PUBLISH_EVERY {
            publish(&counts);
            published = counts.clone();
            last_publish = Instant::now();
        }
        if counts != summarized && last_summary.elapsed() >= SUMMARY_EVERY {
            info!("udp {local}: {counts} so far");
            if let Some(faulted) = &faults {
                faulted.summary(local);
            }
            summarized = counts.clone();
            last_summary = Instant::now();
        }
    }
    info!("udp {local} stopped: {counts}");
    if let Some(faulted) = &faults {
        faulted.summary(local);
    }
    publish(&counts);
    counts
}

/// A socket's UDP faults, its generator, and how many of each struck: dropped,
/// duplicated, delayed.
struct Faulted {
    udp: UdpFaults,
    all: Arc<Faults>,
    rng: crate::fault::SplitMix64,
    counts: [u64; 3],
}

impl Faulted {
    /// The faults that strike a reply about to go to `peer`: `None` to drop it, else
    /// whether to send it twice, after the delay drawn for it.
    fn strike(&mut self, local: SocketAddr, peer: SocketAddr) -> Option<bool> {
        let strike = self.udp.draw(&mut self.rng);
        if strike.drop {
            self.counts[0] += 1;
            self.all.count(Kind::Drop);
            debug!("udp {local}: fault: reply to {peer} dropped");
            return None;
        }
        if let Some(wait) = strike.delay {
            self.counts[2] += 1;
            self.all.count(Kind::UdpDelay);
            debug!(
                "udp {local}: fault: reply to {peer} delayed {} ms",
                wait.as_millis()
            );
            // The socket's one thread waits: later datagrams wait too.
            thread::sleep(wait);
        }
        if strike.duplicate {
            self.counts[1] += 1;
            self.all.count(Kind::Duplicate);
            debug!("udp {local}: fault: reply to {peer} sent twice");
        }
        Some(strike.duplicate)
    }

    fn summary(&self, local: SocketAddr) {
        let [dropped, duplicated, delayed] = self.counts;
        info!(
            "udp {local}: faults: {dropped} replies dropped, {duplicated} duplicated, \
             {delayed} delayed"
        );
    }
}

/// The checks that do not depend on the payload: the peer's address and port, the
/// reply mark (`class`), the rules, the rate.
fn judge(
    peer: SocketAddr,
    class: u8,
    config: &UdpConfig,
    limit: &mut TokenBuckets,
) -> Result<(), DropReason> {
    check_peer(peer, class, &config.peers)?;
    if !config.rules.current().decide(peer.ip()).allows() {
        return Err(DropReason::Rule);
    }
    if !limit.allow(peer.ip(), Instant::now()) {
        return Err(DropReason::Rate);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Settings;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_socket_answers_and_stops_when_told() {
        let socket = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let stats = Arc::new(UdpStats::default());
        let server = UdpServer::spawn(
            vec![socket],
            Replies::new(&Settings::default()).unwrap(),
            UdpConfig::default(),
            Arc::clone(&stats),
            Arc::new(move || flag.load(Ordering::Acquire)),
        )
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client.send_to(b"Alice\n", addr).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"Hello, Alice!\n");
        assert_eq!(from, addr);
        client.send_to(b"", addr).unwrap();
        client.send_to(b"Bob", addr).unwrap();
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"Hello, Bob!");
        stop.store(true, Ordering::Release);
        let counts = server.join();
        assert_eq!(counts.received, 3);
        assert_eq!(counts.answered, 2);
        assert_eq!(counts.dropped[DropReason::Empty.index()], 1);
        assert_eq!(stats.total(), counts);
        let text = stats.render();
        assert!(text.contains("tcp_hello_udp_datagrams_total 3\n"), "{text}");
        assert!(text.contains("tcp_hello_udp_replies_total 2\n"), "{text}");
        assert!(
            text.contains("tcp_hello_udp_dropped_total{reason=\"empty\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn rules_and_rate_are_checked_before_the_payload() {
        let deny = LiveRules::load(
            &[],
            &[crate::rules::parse_pattern("127.0.0.0/8").unwrap()],
            &[],
            &[],
        )
        .unwrap();
        let peers = PeerRules {
            own_ports: vec![9999],
            low_ports: false,
        };
        let config = UdpConfig {
            rate: 1,
            rules: Arc::new(deny),
            peers: peers.clone(),
            faults: None,
        };
        let mut limit = TokenBuckets::new(1);
        let peer = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(judge(peer, 0, &config, &mut limit), Err(DropReason::Rule));
        let config = UdpConfig {
            rate: 1,
            rules: Arc::default(),
            peers,
            faults: None,
        };
        assert_eq!(judge(peer, 0, &config, &mut limit), Ok(()));
        assert_eq!(judge(peer, 0, &config, &mut limit), Err(DropReason::Rate));
        // The loop checks come before the rate, and take no token.
        let own = "127.0.0.1:9999".parse().unwrap();
        assert_eq!(judge(own, 0, &config, &mut limit), Err(DropReason::Loop));
        let marked = reply::REPLY_CLASS;
        assert_eq!(
            judge(peer, marked, &config, &mut limit),
            Err(DropReason::Reply)
        );
    }
}
