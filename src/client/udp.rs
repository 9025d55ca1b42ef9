//! `tcp-hello client --udp`: each name is one datagram and is answered by one datagram.
//!
//! UDP loses datagrams and says nothing about it, so the client sends a name again when
//! no reply comes: up to `--retries` more times, within `--reply-timeout` for the name
//! altogether, each wait twice the one before (with the defaults, 10 s and 3 retries:
//! waits of 0.67, 1.33, 2.67 and 5.33 s), as RFC 8085 asks of UDP applications. A name
//! still unanswered is reported on stderr at once, the next names are still sent, and
//! the exit code is [`EXIT_LOST`].
//!
//! UDP has no request ids. Datagrams that arrive between names (late replies to an
//! earlier send) are discarded before the next name goes out; a reply that arrives
//! later than that, in the next name's wait, is taken as that name's.
//!
//! The socket is connected to the server, so only the server's datagrams are read, and
//! an ICMP port unreachable (nothing listens on that port) ends the run at once as
//! [`EXIT_CONNECT`].
//!
//! `--raw --udp`: each line of stdin (up to [`MAX_PAYLOAD`] bytes of it) is one
//! datagram, sent as it is, line ending included, without waiting; every datagram
//! received is printed unchanged. Once stdin ends the client waits until nothing has
//! arrived for `--reply-timeout` (0: forever), then exits: 0 if as many
//! datagrams came back as went out, else [`EXIT_LOST`].

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use log::debug;

use super::{EXIT_CONNECT, EXIT_LOCAL_IO, EXIT_LOST, EXIT_USAGE};
use crate::address::parse_connect;
use crate::config::ClientConfig;
use crate::udp::reply::{MAX_BUFFER, MAX_PAYLOAD, split_ending};

/// Why a `--udp` run failed.
#[derive(Debug)]
pub(super) enum UdpFailure {
    Usage(String),
    /// The server's address could not be resolved, or a socket not set up.
    Setup(String),
    /// An ICMP port unreachable came back: nothing listens there.
    Refused(String),
    /// Names (or raw datagrams) left unanswered.
    Lost(String),
    Stdin(io::Error),
    Stdout(io::Error),
}

impl UdpFailure {
    /// The exit code.
    pub(super) fn code(&self) -> u8 {
        match self {
            UdpFailure::Usage(_) => EXIT_USAGE,
            UdpFailure::Setup(_) | UdpFailure::Refused(_) => EXIT_CONNECT,
            UdpFailure::Lost(_) => EXIT_LOST,
            UdpFailure::Stdin(_) | UdpFailure::Stdout(_) => EXIT_LOCAL_IO,
        }
    }

    /// The line for stderr; none for a stdout closed by its reader (`| head`).
    pub(super) fn message(&self) -> Option<String> {
        Some(match self {
            UdpFailure::Usage(m)
            | UdpFailure::Setup(m)
            | UdpFailure::Refused(m)
            | UdpFailure::Lost(m) => m.clone(),
            UdpFailure::Stdin(e) => format!("cannot read stdin: {e}"),
            UdpFailure::Stdout(e) if e.kind() == ErrorKind::BrokenPipe => return None,
            UdpFailure::Stdout(e) => format!("cannot write to stdout: {e}"),
        })
    }
}

/// How long each of `sends` sends of one name waits, sharing `total`: each twice the
/// one before.
pub(super) fn waits(total: Duration, sends: u32) -> Vec<Duration> {
    let sends = sends.clamp(1, 16);
    let parts = (1u64 << sends) - 1;
    (0..sends)
        .map(|i| total.mul_f64((1u64 << i) as f64 / parts as f64))
        .collect()
}

/// Runs `client --udp`; the exit code is the caller's to print.
pub(super) fn session(config: &ClientConfig) -> Result<(), UdpFailure> {
    let target = parse_connect(&config.connect).map_err(UdpFailure::Usage)?;
    let reply_timeout = config.reply_timeout;
    let addr = *target
        .resolve()
        .map_err(|e| {
            UdpFailure::Setup(format!(
                "cannot resolve {}: {e}; check the host name, or use an IP address",
                target.host
            ))
        })?
        .first()
        .ok_or_else(|| UdpFailure::Setup(format!("{} resolves to no address", target.host)))?;
    let local = if addr.is_ipv6() {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
    };
    let socket = UdpSocket::bind(local)
        .and_then(|s| s.connect(addr).map(|()| s))
        .map_err(|e| UdpFailure::Setup(format!("cannot open a UDP socket to {addr}: {e}")))?;
    debug!("udp socket {:?} to {addr}", socket.local_addr().ok());
    let out = io::stdout().lock();
    if config.raw {
        raw(socket, addr, reply_timeout, out)
    } else {
        let names: Box<dyn Read + Send> = if config.names.is_empty() {
            Box::new(io::stdin())
        } else {
            let mut text = Vec::new();
            for name in &config.names {
                text.extend_from_slice(name.as_encoded_bytes());
                text.push(b'\n');
            }
            Box::new(io::Cursor::new(text))
        };
        let sends = config.retries.saturating_add(1);
        names_session(&socket, addr, reply_timeout, sends, names, out)
    }
}

/// Each name one datagram, answered or retried; loss reported per name and at the end.
fn names_session(
    socket: &UdpSocket,
    addr: SocketAddr,
    reply_timeout: Option<Duration>,
    sends: u32,
    names: Box<dyn Read + Send>,
    mut out: impl Write,
) -> Result<(), UdpFailure> {
    let mut input = BufReader::new(names);
    let mut line = Vec::new();
    let mut buf = vec![0u8; MAX_BUFFER];
    let (mut asked, mut lost) = (0u64, Vec::new());
    let schedule = match reply_timeout {
        Some(total) => waits(total, sends).into_iter().map(Some).collect(),
        None => vec![None],
    };
    loop {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .map_err(UdpFailure::Stdin)?
            == 0
        {
            break;
        }
        let (name, _) = split_ending(&line);
        if name.iter().all(|b| *b == b' ' || *b == b'\t') {
            // The server does not answer a blank datagram.
            continue;
        }
        if name.len() > MAX_PAYLOAD {
            return Err(UdpFailure::Usage(format!(
                "a name of {} bytes cannot be one UDP datagram (at most {MAX_PAYLOAD} bytes): \
                 shorten it",
                name.len()
            )));
        }
        asked += 1;
        discard_stale(socket, &mut buf);
        match ask(socket, name, &schedule, &mut buf).map_err(|e| refused(e, addr))? {
            Some(n) => {
                let (reply, _) = split_ending(&buf[..n]);
                out.write_all(reply)
                    .and_then(|()| out.write_all(b"\n"))
                    .and_then(|()| out.flush())
                    .map_err(UdpFailure::Stdout)?;
            }
            None => {
                let shown = String::from_utf8_lossy(name).into_owned();
                let _ = writeln!(
                    io::stderr(),
                    "tcp-hello: no reply from udp {addr} to {shown:?} ({} sends{})",
                    schedule.len(),
                    over(reply_timeout)
                );
                lost.push(shown);
            }
        }
    }
    if lost.is_empty() {
        return Ok(());
    }
    Err(UdpFailure::Lost(format!(
        "{} of {asked} names got no reply from udp {addr}{} (first: {:?}): UDP loses \
         datagrams without a word, or nothing answers there; is `tcp-hello serve \
         --udp-bind {addr}` running? Raise --retries or --reply-timeout to try harder",
        lost.len(),
        over(reply_timeout),
        lost[0]
    )))
}

/// ` over N s`, for the messages.
fn over(timeout: Option<Duration>) -> String {
    timeout.map_or(String::new(), |t| format!(" over {} s", t.as_secs_f64()))
}

/// Sends `name` and waits for a reply by `schedule`, sending again after each wait;
/// returns the reply's length in `buf`, or `None` when every wait passed.
fn ask(
    socket: &UdpSocket,
    name: &[u8],
    schedule: &[Option<Duration>],
    buf: &mut [u8],
) -> io::Result<Option<usize>> {
    for (i, wait) in schedule.iter().enumerate() {
        if i > 0 {
            debug!("no reply after {:?}; sending again", schedule[i - 1]);
        }
        socket.send(name)?;
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => break,
                },
                None => None,
            };
            socket.set_read_timeout(left)?;
            match socket.recv(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(None)
}

/// Reads and drops what is queued: replies that came after their name's wait.
fn discard_stale(socket: &UdpSocket, buf: &mut [u8]) {
    if socket.set_nonblocking(true).is_err() {
        return;
    }
    while let Ok(n) = socket.recv(buf) {
        debug!("discarded a late reply of {n} bytes");
    }
    let _ = socket.set_nonblocking(false);
}

/// An I/O error of the socket: ICMP port unreachable says nothing listens.
fn refused(e: io::Error, addr: SocketAddr) -> UdpFailure {
    if e.kind() == ErrorKind::ConnectionRefused {
        UdpFailure::Refused(format!(
            "nothing listens on udp {addr} (ICMP port unreachable): is `tcp-hello serve \
             --udp-bind {addr}` running? Or give the server's address with --connect"
        ))
    } else {
        UdpFailure::Setup(format!("udp {addr}: {e}"))
    }
}

/// `--raw --udp`: stdin's lines out as datagrams, every datagram received printed.
fn raw(
    socket: UdpSocket,
    addr: SocketAddr,
    reply_timeout: Option<Duration>,
    mut out: impl Write,
) -> Result<(), UdpFailure> {
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let socket = socket
            .try_clone()
            .map_err(|e| UdpFailure::Setup(format!("udp {addr}: {e}")))?;
        let (sent, done) = (Arc::clone(&sent), Arc::clone(&done));
        thread::Builder::new()
            .name("udp-stdin".into())
            .spawn(move || -> Result<(), UdpFailure> {
                let result = send_lines(&socket, io::stdin().lock(), &sent, addr);
                done.store(true, Ordering::Release);
                result
            })
            .map_err(|e| UdpFailure::Setup(format!("cannot start the stdin thread: {e}")))?
    };
    let mut buf = vec![0u8; MAX_BUFFER];
    let mut received = 0u64;
    let mut last = Instant::now();
    let mut ended_at: Option<Instant> = None;
    // Short reads, so that the end of stdin is noticed soon.
    let slice = Duration::from_millis(50);
    socket
        .set_read_timeout(Some(slice))
        .map_err(|e| UdpFailure::Setup(format!("udp {addr}: {e}")))?;
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => {
                received += 1;
                last = Instant::now();
                out.write_all(&buf[..n])
                    .and_then(|()| out.flush())
                    .map_err(UdpFailure::Stdout)?;
                continue;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(refused(e, addr)),
        }
        if done.load(Ordering::Acquire) {
            let since = *ended_at.get_or_insert_with(Instant::now);
            let quiet = last.max(since).elapsed();
            if reply_timeout.is_some_and(|t| quiet >= t) {
                break;
            }
        }
    }
    match writer.join() {
        Ok(result) => result?,
        Err(_) => return Err(UdpFailure::Setup("the stdin thread panicked".into())),
    }
    let sent = sent.load(Ordering::Acquire);
    if received >= sent {
        debug!("{sent} datagrams sent, {received} received");
        return Ok(());
    }
    Err(UdpFailure::Lost(format!(
        "{sent} datagrams sent to udp {addr}, {received} came back{}: UDP loses datagrams \
         without a word, and a server may answer some with nothing (tcp-hello: empty ones, \
         ones over --max-line, over --udp-rate)",
        over(reply_timeout)
    )))
}

/// Sends each line of `input` (cut at [`MAX_PAYLOAD`]) as one datagram.
fn send_lines(
    socket: &UdpSocket,
    input: impl BufRead,
    sent: &AtomicU64,
    addr: SocketAddr,
) -> Result<(), UdpFailure> {
    let mut input = input.take(u64::MAX);
    let mut line = Vec::new();
    loop {
        line.clear();
        input.set_limit(MAX_PAYLOAD as u64);
        if input
            .read_until(b'\n', &mut line)
            .map_err(UdpFailure::Stdin)?
            == 0
        {
            return Ok(());
        }
        socket.send(&line).map_err(|e| refused(e, addr))?;
        sent.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_share_the_timeout_each_waiting_twice_the_last() {
        let w = waits(Duration::from_secs(15), 4);
        assert_eq!(
            w,
            [1, 2, 4, 8].map(Duration::from_secs).to_vec(),
            "15 s over 4 sends"
        );
        assert_eq!(
            waits(Duration::from_secs(3), 1),
            vec![Duration::from_secs(3)]
        );
        let total: Duration = waits(Duration::from_secs(10), 11).iter().sum();
        assert!(total <= Duration::from_secs(10));
        assert!(total > Duration::from_millis(9_990));
    }
}
