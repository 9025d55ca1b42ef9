//! `serve --proxy-protocol`: the PROXY protocol header (HAProxy's, v1 text or v2 binary)
//! that a load balancer sends before a connection's own bytes, to say who the client is.
//!
//! Two parts: [`framing`] and [`parse`] are pure (bytes in, a decision out) and parse
//! with the `ppp` crate; [`read_header`] reads a header from a socket with them,
//! byte-exactly: not one byte past the header is consumed, since those bytes are the
//! client's (its first line, or a TLS ClientHello). It never busy-waits: every read or
//! peek blocks until bytes arrive, and each consumes what is certainly header.

use std::fmt;
use std::io::{self, ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ppp::v1;
use ppp::v2;

/// How long a connection has to send its whole header by default (`--proxy-header-timeout`).
/// A proxy sends the header with, or just before, the client's first bytes: a
/// connection still silent after this long is not a proxy doing its job.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest header accepted, in bytes; a longer one is refused as a bad header. A v1
/// header is at most 107 bytes; a v2 one is 16 bytes, the addresses (36 for IPv6) and
/// optional TLVs (TLS details, a unique ID, the server name), which HAProxy sends only
/// when asked to (`proxy-v2-options`). The header is read into a buffer of this size on
/// the connection's small stack, so it is no larger than the common cases need.
pub const MAX_HEADER: usize = 512;

/// The longest v1 (text) header, CRLF included, as the specification sets it.
const V1_MAX: usize = 107;

/// The fixed part of a v2 header: the 12-byte signature, version and command, family
/// and protocol, and the 2-byte length of the rest.
const V2_FIXED: usize = 16;

/// The text every v1 header begins with.
const V1_PREFIX: &[u8] = b"PROXY ";

/// `--proxy-protocol` and what goes with it.
#[derive(Debug, Clone)]
pub struct ProxyProtocol {
    /// The peers that may send a header (`--proxy-from`): allow rules only, as an allow
    /// list. Empty (no rules at all) trusts every peer.
    pub trusted: crate::rules::Rules,
    /// How long a connection has to send its whole header.
    pub header_timeout: Duration,
}

impl Default for ProxyProtocol {
    /// Every peer trusted, [`DEFAULT_HEADER_TIMEOUT`].
    fn default() -> Self {
        ProxyProtocol {
            trusted: crate::rules::Rules::default(),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
        }
    }
}

/// Who the header says the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A client, at this address (the header's source address and port).
    Client(SocketAddr),
    /// No client: a v2 `LOCAL` header (the proxy's own health check), a v1 `UNKNOWN`
    /// one, or a v2 `PROXY` one with an unspecified address family. The connection is
    /// served with the socket's own peer address.
    Local,
}

/// Why a connection's header could not be used.
#[derive(Debug)]
pub enum HeaderError {
    /// The peer closed before the header was complete.
    Closed,
    /// The header was not complete within the timeout.
    Timeout,
    /// The server began shutting down while waiting for the header.
    Shutdown,
    /// Reading failed.
    Io(io::Error),
    /// The bytes are not a PROXY protocol header: what is wrong with them.
    Invalid(String),
    /// A v2 header longer than [`MAX_HEADER`] (its length given).
    TooLong(usize),
    /// A well-formed header whose client address cannot be used: which kind it is.
    Unusable(&'static str),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Closed => f.write_str("closed before a complete PROXY header"),
            HeaderError::Timeout => f.write_str("no complete PROXY header in time"),
            HeaderError::Shutdown => f.write_str("shutting down before a PROXY header"),
            HeaderError::Io(e) => write!(f, "reading the PROXY header: {e}"),
            HeaderError::Invalid(why) => write!(f, "not a PROXY protocol header: {why}"),
            HeaderError::TooLong(len) => write!(
                f,
                "a PROXY v2 header of {len} bytes, longer than the {MAX_HEADER} accepted"
            ),
            HeaderError::Unusable(what) => {
                write!(f, "a PROXY header with {what}, not a TCP client address")
            }
        }
    }
}

impl std::error::Error for HeaderError {}

/// What the bytes read so far tell of the header they begin.
#[derive(Debug)]
pub enum Framing {
    /// The header is at least this many bytes long in all, counting those read: they
    /// are all header, and may be read without looking.
    AtLeast(usize),
    /// A v1 header: it ends at the first `\n`, within [`V1_MAX`] bytes.
    Line,
    /// The bytes read are the whole header.
    Complete,
    /// The bytes cannot begin a header ([`HeaderError::Invalid`]), or begin one longer
    /// than [`MAX_HEADER`] ([`HeaderError::TooLong`]).
    Invalid(HeaderError),
}

/// What `have`, the bytes of a connection read so far (and only header bytes, as
/// [`read_header`] reads), tell of the header.
pub fn framing(have: &[u8]) -> Framing {
    let Some(&first) = have.first() else {
        // The shortest header (a v1 `PROXY UNKNOWN\r\n`) is 15 bytes: one is certainly in it.
        return Framing::AtLeast(1);
    };
    if first == v2::PROTOCOL_PREFIX[0] {
        let signature = have.len().min(v2::PROTOCOL_PREFIX.len());
        if have[..signature] != v2::PROTOCOL_PREFIX[..signature] {
            return Framing::Invalid(HeaderError::Invalid("bad v2 signature".into()));
        }
        if have.len() < V2_FIXED {
            return Framing::AtLeast(V2_FIXED);
        }
        let total = V2_FIXED + usize::from(u16::from_be_bytes([have[14], have[15]]));
        if total > MAX_HEADER {
            return Framing::Invalid(HeaderError::TooLong(total));
        }
        return if have.len() < total {
            Framing::AtLeast(total)
        } else {
            Framing::Complete
        };
    }
    let prefix = have.len().min(V1_PREFIX.len());
    if have[..prefix] != V1_PREFIX[..prefix] {
        return Framing::Invalid(HeaderError::Invalid(format!(
            "starts with {:?}, neither \"PROXY \" (v1) nor the v2 signature",
            String::from_utf8_lossy(&have[..have.len().min(16)])
        )));
    }
    if have.ends_with(b"\n") {
        Framing::Complete
    } else if have.len() >= V1_MAX {
        Framing::Invalid(HeaderError::Invalid(format!(
            "no CRLF within the first {V1_MAX} bytes (v1)"
        )))
    } else {
        Framing::Line
    }
}

/// What a complete header (exactly its bytes, as [`framing`] delimits them) says.
pub fn parse(header: &[u8]) -> Result<Source, HeaderError> {
    let invalid = |e: &dyn fmt::Display| HeaderError::Invalid(e.to_string());
    if header.first() == v2::PROTOCOL_PREFIX.first() {
        let parsed = v2::Header::try_from(header).map_err(|e| invalid(&e))?;
        if parsed.len() != header.len() {
            return Err(HeaderError::Invalid("v2 length mismatch".into()));
        }
        if parsed.command == v2::Command::Local {
            // The proxy's own connection (a health check): whatever the addresses say.
            return Ok(Source::Local);
        }
        if parsed.protocol == v2::Protocol::Datagram {
            return Err(HeaderError::Unusable("a UDP (datagram) address"));
        }
        return match parsed.addresses {
            v2::Addresses::IPv4(a) => Ok(Source::Client(SocketAddr::from((
                a.source_address,
                a.source_port,
            )))),
            v2::Addresses::IPv6(a) => Ok(Source::Client(SocketAddr::from((
                a.source_address,
                a.source_port,
            )))),
            // The specification lets the receiver use the real endpoints then.
            v2::Addresses::Unspecified => Ok(Source::Local),
            v2::Addresses::Unix(_) => Err(HeaderError::Unusable("a UNIX socket address")),
        };
    }
    let parsed = v1::Header::try_from(header).map_err(|e| invalid(&e))?;
    if parsed.header.len() != header.len() {
        return Err(HeaderError::Invalid("v1 header not ended by CRLF".into()));
    }
    match parsed.addresses {
        v1::Addresses::Tcp4(a) => Ok(Source::Client(SocketAddr::from((
            a.source_address,
            a.source_port,
        )))),
        v1::Addresses::Tcp6(a) => Ok(Source::Client(SocketAddr::from((
            a.source_address,
            a.source_port,
        )))),
        v1::Addresses::Unknown => Ok(Source::Local),
    }
}

/// Reads the PROXY header that must begin `stream`, within `timeout`, and says who the
/// client is. Consumes exactly the header's bytes. Gives up with
/// [`HeaderError::Shutdown`] once `stopping` is set (shutdown sets it, then interrupts
/// blocked reads). Leaves the socket's read timeout for the caller to set again.
pub fn read_header(
    stream: &TcpStream,
    timeout: Duration,
    stopping: &AtomicBool,
) -> Result<Source, HeaderError> {
    let deadline = Instant::now().checked_add(timeout);
    let mut buf = [0u8; MAX_HEADER];
    let mut have = 0;
    loop {
        let framing = framing(&buf[..have]);
        let want = match framing {
            Framing::Complete => return parse(&buf[..have]),
            Framing::Invalid(e) => return Err(e),
            Framing::AtLeast(total) => total,
            Framing::Line => V1_MAX,
        };
        if stopping.load(Ordering::Acquire) {
            return Err(HeaderError::Shutdown);
        }
        let left = deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
        if left.is_zero() {
            return Err(HeaderError::Timeout);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(HeaderError::Io)?;
        let space = &mut buf[have..want];
        let got = if matches!(framing, Framing::Line) {
            // A v1 header ends at its first `\n`: look before taking, and take what is
            // certainly header, up to that `\n` if it has come.
            match stream.peek(space) {
                Ok(0) => return Err(HeaderError::Closed),
                Ok(n) => {
                    let take = memchr::memchr(b'\n', &space[..n]).map_or(n, |at| at + 1);
                    // Already received: this read does not block.
                    (&*stream)
                        .read_exact(&mut space[..take])
                        .map(|()| take)
                        .map_err(HeaderError::Io)?
                }
                Err(e) => retry(e)?,
            }
        } else {
            match (&*stream).read(space) {
                Ok(0) => return Err(HeaderError::Closed),
                Ok(n) => n,
                Err(e) => retry(e)?,
            }
        };
        have += got;
    }
}

/// A read that found nothing in time, or was interrupted: 0 bytes, to loop and check the
/// deadline and shutdown again; any other error ends the header.
fn retry(e: io::Error) -> Result<usize, HeaderError> {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted => Ok(0),
        ErrorKind::UnexpectedEof => Err(HeaderError::Closed),
        _ => Err(HeaderError::Io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = v2::PROTOCOL_PREFIX.to_vec();
        h.push(0x20 | command);
        h.push(family);
        let len = u16::try_from(addresses.len() + tlvs.len()).unwrap();
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    fn v2_ipv4(client: [u8; 4], port: u16) -> Vec<u8> {
        let mut a = client.to_vec();
        a.extend_from_slice(&[10, 0, 0, 1]);
        a.extend_from_slice(&port.to_be_bytes());
        a.extend_from_slice(&9999u16.to_be_bytes());
        v2(1, 0x11, &a, &[])
    }

    /// Feeds `bytes` to `framing` a byte at a time, as a peer sending one byte per
    /// segment would, returning the header's length.
    fn frame(bytes: &[u8]) -> Result<usize, String> {
        let mut have = 0;
        loop {
            match framing(&bytes[..have]) {
                Framing::Complete => return Ok(have),
                Framing::Invalid(e) => return Err(e.to_string()),
                Framing::AtLeast(n) if n <= have => panic!("AtLeast({n}) with {have} read"),
                Framing::AtLeast(_) | Framing::Line if have == bytes.len() => {
                    return Err("incomplete".into());
                }
                Framing::AtLeast(_) | Framing::Line => have += 1,
            }
        }
    }

    fn client(s: &str) -> Result<Source, String> {
        Ok(Source::Client(s.parse().unwrap()))
    }

    fn read(bytes: &[u8]) -> Result<Source, String> {
        let len = frame(bytes)?;
        parse(&bytes[..len]).map_err(|e| e.to_string())
    }

    #[test]
    fn v1_headers_end_at_their_crlf_and_name_the_client() {
        let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 9999\r\nAlice\n";
        assert_eq!(frame(h), Ok(h.len() - 6));
        assert_eq!(read(h), client("192.0.2.7:56324"));
        let h = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 9999\r\n";
        assert_eq!(read(h), client("[2001:db8::7]:4000"));
        assert_eq!(read(b"PROXY UNKNOWN\r\n"), Ok(Source::Local));
        assert_eq!(
            read(b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n"),
            Ok(Source::Local)
        );
    }

    #[test]
    fn v2_headers_are_framed_by_their_length_and_name_the_client() {
        let mut h = v2_ipv4([192, 0, 2, 7], 56324);
        let len = h.len();
        h.extend_from_slice(b"Alice\n");
        assert_eq!(frame(&h), Ok(len));
        assert_eq!(read(&h), client("192.0.2.7:56324"));
        let mut a = [0u8; 36];
        a[..16].copy_from_slice(
            &"2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        a[32..34].copy_from_slice(&4000u16.to_be_bytes());
        assert_eq!(read(&v2(1, 0x21, &a, &[])), client("[2001:db8::7]:4000"));
        // TLVs (here a NOOP of 3 bytes) are part of the header, and skipped.
        let mut a = vec![192, 0, 2, 7, 10, 0, 0, 1, 0, 80, 0, 81];
        let with_tlv = v2(1, 0x11, &a, &[0x04, 0, 3, 1, 2, 3]);
        assert_eq!(frame(&with_tlv), Ok(with_tlv.len()));
        assert_eq!(read(&with_tlv), client("192.0.2.7:80"));
        // LOCAL (a health check) has no client, whatever its addresses say.
        assert_eq!(read(&v2(0, 0x00, &[], &[])), Ok(Source::Local));
        assert_eq!(read(&v2(0, 0x11, &a, &[])), Ok(Source::Local));
        a.truncate(0);
        assert_eq!(read(&v2(1, 0x00, &a, &[])), Ok(Source::Local));
    }

    #[test]
    fn what_is_not_a_usable_header_is_refused_with_a_reason() {
        for (bytes, why) in [
            (&b"Alice\n"[..], "starts with"),
            (b"GET / HTTP/1.1\r\n", "starts with"),
            (b"\x16\x03\x01\x02\x00", "starts with"),
            (b"\r\n\r\nX", "bad v2 signature"),
            (b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n", "not a PROXY"),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", "not a PROXY"),
            (b"PROXY TCP4 1.2.3.400 1.2.3.4 1 2\r\n", "not a PROXY"),
            (b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n", "not a PROXY"),
        ] {
            let got = read(bytes).unwrap_err();
            assert!(got.contains(why), "{bytes:?}: {got}");
        }
        let long = [b"PROXY ".as_slice(), &[b'1'; 200]].concat();
        assert!(
            read(&long)
                .unwrap_err()
                .contains("no CRLF within the first 107")
        );
        let mut too_long = v2(1, 0x11, &[0; 12], &[]);
        too_long[14..16].copy_from_slice(&1000u16.to_be_bytes());
        assert!(
            matches!(
                framing(&too_long),
                Framing::Invalid(HeaderError::TooLong(1016))
            ),
            "{:?}",
            framing(&too_long)
        );
        let unix = v2(1, 0x31, &[0; 216], &[]);
        assert!(read(&unix).unwrap_err().contains("UNIX socket"));
        let udp = v2(1, 0x12, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2], &[]);
        assert!(read(&udp).unwrap_err().contains("UDP"));
        let mut bad_command = v2_ipv4([1, 2, 3, 4], 5);
        bad_command[12] = 0x22;
        assert!(read(&bad_command).unwrap_err().contains("not a PROXY"));
    }

    proptest::proptest! {
        /// No input panics framing or parsing, and a header is never longer than the
        /// bytes it was read from, so what follows it is left alone.
        #[test]
        fn any_bytes_are_framed_and_parsed_without_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            prefix in 0usize..4,
        ) {
            let prefixes: [&[u8]; 4] = [b"", b"PROXY ", b"PROXY TCP4 ", v2::PROTOCOL_PREFIX];
            let input = [prefixes[prefix], &bytes].concat();
            if let Ok(len) = frame(&input) {
                proptest::prop_assert!(len <= input.len());
                let _ = parse(&input[..len]);
            }
        }
    }

    #[test]
    fn a_header_read_from_a_socket_leaves_the_bytes_after_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let timeout = Duration::from_secs(10);
        client.set_write_timeout(Some(timeout)).unwrap();
        let (server, _) = listener.accept().unwrap();
        let stopping = AtomicBool::new(false);
        // Split inside the v1 text, then the rest with the client's first line.
        client.write_all(b"PROXY TCP4 192.0.2.7 ").unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            client.write_all(b"10.0.0.1 1234 9999\r\nAlice\n").unwrap();
            client
        });
        let source = read_header(&server, timeout, &stopping).unwrap();
        assert_eq!(source, Source::Client("192.0.2.7:1234".parse().unwrap()));
        let _client = writer.join().unwrap();
        server.set_read_timeout(Some(timeout)).unwrap();
        let mut rest = [0u8; 6];
        (&server).read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"Alice\n");
    }

    #[test]
    fn a_silent_connection_times_out_and_a_closed_one_is_told_apart() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (server, _) = listener.accept().unwrap();
        let stopping = AtomicBool::new(false);
        let started = Instant::now();
        let got = read_header(&server, Duration::from_millis(100), &stopping);
        assert!(matches!(got, Err(HeaderError::Timeout)), "{got:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let mut client = client;
        client.write_all(b"PROXY TCP4").unwrap();
        drop(client);
        let got = read_header(&server, Duration::from_secs(10), &stopping);
        assert!(matches!(got, Err(HeaderError::Closed)), "{got:?}");
        stopping.store(true, Ordering::Release);
        let got = read_header(&server, Duration::from_secs(10), &stopping);
        assert!(matches!(got, Err(HeaderError::Shutdown)), "{got:?}");
    }
}
