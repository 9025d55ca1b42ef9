//! What the UDP server does with one datagram, decided without sockets: which peers
//! are never answered, and the reply's bytes, never more than the request's size plus
//! the template's fixed length ([`Replies::fixed`]).

use std::net::{IpAddr, SocketAddr};

use crate::protocol::{ConnectionValues, Mode, Piece, ReplyTemplate, Request, Settings, classify};

/// The largest UDP payload over IPv4 (65,535 less the IPv4 and UDP headers); IPv6
/// without jumbograms allows 20 bytes more, which a receive buffer of 65,536 still holds.
pub const MAX_PAYLOAD: usize = 65_507;

/// The largest receive buffer worth having: one byte more than any UDP payload.
pub const MAX_BUFFER: usize = 65_536;

/// Most bytes a reply may add to its request ([`Replies::fixed`]): a 1-byte request
/// (29 bytes on the wire with the IPv4 and UDP headers) gets at most 157 back, and the
/// ratio falls as requests grow. Room for `{peer}` and a sentence.
pub const MAX_FIXED: usize = 128;

/// Source ports of the classic small UDP services (echo, daytime, qotd, chargen, time)
/// that answer anything: a reply to one would be answered again, forever. BSD inetd
/// refuses them for the same reason. Never answered, even with `--udp-low-ports`.
pub const SERVICE_PORTS: [u16; 5] = [7, 13, 17, 19, 37];

/// Source ports below this are services' (root binds them), not clients', and are not
/// answered without `--udp-low-ports`: a service there may answer the reply.
pub const FIRST_CLIENT_PORT: u16 = 1024;

/// The DSCP every reply carries (IP_TOS, IPV6_TCLASS; Linux), one of RFC 2474's pool 2
/// for experimental or local use: a datagram that carries it is another tcp-hello's
/// reply, and is never answered, so that two servers cannot feed each other.
pub const REPLY_DSCP: u8 = 0b00_0011;

/// The TOS (IPv4) or traffic class (IPv6) byte of a reply: [`REPLY_DSCP`], and ECN
/// "not capable".
pub const REPLY_CLASS: u8 = REPLY_DSCP << 2;

/// Whether a datagram's TOS or traffic class byte marks it as a tcp-hello reply (the
/// ECN bits, which routers may change, do not count).
pub fn is_reply_class(class: u8) -> bool {
    class >> 2 == REPLY_DSCP
}

/// Why a datagram got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Sent from port 0, where no reply can go.
    PortZero,
    /// Sent from the port of one of this server's UDP sockets (on any address: the
    /// server itself, or another server on that port that would answer the reply), or
    /// from one of the [`SERVICE_PORTS`]: answering could start a loop.
    Loop,
    /// Sent from a port below [`FIRST_CLIENT_PORT`] without `--udp-low-ports`.
    LowPort,
    /// Carries [`REPLY_DSCP`]: another tcp-hello's reply, which answering would bounce.
    Reply,
    /// Sent from a broadcast, multicast or unspecified address: no reply may go there.
    NotUnicast,
    /// `--allow`/`--deny` refuse the address.
    Rule,
    /// Over `--udp-rate` datagrams per second from the address.
    Rate,
    /// Empty, or (greet mode) only spaces and tabs, as a blank line over TCP.
    Empty,
    /// Longer than `--max-line` (after one trailing LF or CRLF).
    TooLong,
    /// The reply would exceed the amplification bound; never happens with a template
    /// accepted by [`Replies::new`], checked anyway.
    Bound,
}

impl DropReason {
    /// Every reason, in the order of [`DropReason::index`].
    pub const ALL: [DropReason; 10] = [
        DropReason::PortZero,
        DropReason::Loop,
        DropReason::LowPort,
        DropReason::Reply,
        DropReason::NotUnicast,
        DropReason::Rule,
        DropReason::Rate,
        DropReason::Empty,
        DropReason::TooLong,
        DropReason::Bound,
    ];

    /// The reason's place in [`DropReason::ALL`], for counting.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The reason as logs name it.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::PortZero => "port_zero",
            DropReason::Loop => "loop",
            DropReason::LowPort => "low_port",
            DropReason::Reply => "reply",
            DropReason::NotUnicast => "not_unicast",
            DropReason::Rule => "rule",
            DropReason::Rate => "rate",
            DropReason::Empty => "empty",
            DropReason::TooLong => "too_long",
            DropReason::Bound => "bound",
        }
    }
}

/// Which peers are never answered, whatever the datagram says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerRules {
    /// The ports of every UDP socket of this server: a datagram from one of them (from
    /// any address) may be a reply of this server or of another on that port.
    pub own_ports: Vec<u16>,
    /// `--udp-low-ports`: answer source ports below [`FIRST_CLIENT_PORT`] (but never
    /// the [`SERVICE_PORTS`]).
    pub low_ports: bool,
}

/// Whether a datagram from `peer`, whose TOS or traffic class byte is `class` (0 where
/// it is not known), may be answered at all: never a tcp-hello reply
/// ([`is_reply_class`]); never to port 0, to the port of one of this server's sockets
/// (which covers the server's own addresses), to the [`SERVICE_PORTS`], or without
/// `--udp-low-ports` to another port below [`FIRST_CLIENT_PORT`]; never to an address
/// that is not unicast (IPv4 broadcast 255.255.255.255, multicast, unspecified;
/// IPv4-mapped IPv6 addresses are judged as IPv4). A subnet's directed broadcast (e.g.
/// 192.168.1.255) cannot be told from a host address without the interfaces' netmasks,
/// and is not checked; the kernel does not deliver datagrams whose source is one of its
/// own broadcast addresses.
pub fn check_peer(peer: SocketAddr, class: u8, rules: &PeerRules) -> Result<(), DropReason> {
    if is_reply_class(class) {
        return Err(DropReason::Reply);
    }
    let port = peer.port();
    if port == 0 {
        return Err(DropReason::PortZero);
    }
    if rules.own_ports.contains(&port) || SERVICE_PORTS.contains(&port) {
        return Err(DropReason::Loop);
    }
    if port < FIRST_CLIENT_PORT && !rules.low_ports {
        return Err(DropReason::LowPort);
    }
    let unicast = match peer.ip().to_canonical() {
        IpAddr::V4(v4) => !(v4.is_broadcast() || v4.is_multicast() || v4.is_unspecified()),
        IpAddr::V6(v6) => !(v6.is_multicast() || v6.is_unspecified()),
    };
    if unicast {
        Ok(())
    } else {
        Err(DropReason::NotUnicast)
    }
}

/// The reply rules of one server: the mode, the reply template and `--max-line`.
#[derive(Debug, Clone)]
pub struct Replies {
    mode: Mode,
    reply: ReplyTemplate,
    max_line: usize,
    fixed: usize,
    /// The template shows `{peer}`, `{local}` or `{conn}`.
    needs_values: bool,
}

impl Replies {
    /// The replies of `settings` (the welcome and the farewell have no use over UDP).
    /// Refuses, in greet mode, a `--reply` with more than one `{}`: each copy of the
    /// payload would multiply it, and a reply must stay within the request's size plus
    /// a fixed length; and one whose fixed length is over [`MAX_FIXED`].
    pub fn new(settings: &Settings) -> Result<Replies, String> {
        let lines = settings
            .reply
            .pieces()
            .iter()
            .filter(|p| matches!(p, Piece::Line))
            .count();
        if settings.mode == Mode::Greet && lines > 1 {
            return Err(format!(
                "--reply has {lines} `{{}}`: over UDP (--udp-bind) a reply must not be more \
                 than the request's size plus a fixed length, or the server amplifies \
                 spoofed requests; use `{{}}` once"
            ));
        }
        if settings.mode == Mode::Greet && settings.reply.is_json() {
            return Err("--reply-format json describes a connection, and over UDP \
                        (--udp-bind) there is none; it would also let a reply grow to six \
                        times its request: use --reply, or a TCP listener only"
                .to_string());
        }
        if let Some(fact) = settings
            .reply
            .facts()
            .next()
            .filter(|_| settings.mode == Mode::Greet)
        {
            return Err(format!(
                "--reply has {{{}}}: over UDP (--udp-bind) there is no connection, TLS session \
                 or PROXY header to describe; use {{peer}}, {{local}} or {{conn}}, or a TCP \
                 listener only",
                fact.name()
            ));
        }
        let fixed = match settings.mode {
            Mode::Greet => settings.reply.max_len_for(0),
            Mode::Echo => 0,
        };
        if fixed > MAX_FIXED {
            return Err(format!(
                "--reply adds up to {fixed} bytes to a request (its text, and 64 for each \
                 `{{peer}}` and `{{local}}`, 20 for each `{{conn}}`): over UDP (--udp-bind) \
                 a reply may add at most {MAX_FIXED}, or the server amplifies spoofed \
                 requests; shorten the template"
            ));
        }
        let needs_values = settings
            .reply
            .pieces()
            .iter()
            .any(|p| matches!(p, Piece::Peer | Piece::Local | Piece::Conn));
        Ok(Replies {
            mode: settings.mode,
            reply: settings.reply.clone(),
            max_line: settings.max_line,
            fixed,
            needs_values,
        })
    }

    /// The amplification bound's constant: no reply is longer than the request plus
    /// this many bytes. In greet mode the template's text (`{host}` and `{pid}`
    /// included) plus [`ADDR_TEXT_MAX`](crate::protocol::ADDR_TEXT_MAX) for each `{peer}` and `{local}` and 20 for each
    /// `{conn}`; 0 in echo mode.
    pub fn fixed(&self) -> usize {
        self.fixed
    }

    /// Whether replies show `{peer}`, `{local}` or `{conn}`, so that the caller must
    /// give each datagram's values.
    pub fn needs_values(&self) -> bool {
        self.mode == Mode::Greet && self.needs_values
    }

    /// The receive buffer: room for the longest accepted payload and a CRLF, and one
    /// byte more, so that a longer datagram (which the kernel cuts to the buffer) is
    /// seen to be too long; at most [`MAX_BUFFER`].
    pub fn buffer_len(&self) -> usize {
        self.max_line.saturating_add(3).min(MAX_BUFFER)
    }

    /// The reply to `datagram` (as received, at most [`Replies::buffer_len`] bytes), in
    /// `out` (cleared first), or why there is none. `values` fill `{peer}`, `{local}`
    /// and `{conn}`. Greet mode: one trailing LF or CRLF is taken off, the rest is
    /// `{}`, and the same ending goes back on the reply; `exit` is a name like any
    /// other. Echo mode: the datagram itself.
    pub fn answer(
        &self,
        datagram: &[u8],
        values: &ConnectionValues,
        out: &mut Vec<u8>,
    ) -> Result<(), DropReason> {
        out.clear();
        if datagram.is_empty() {
            return Err(DropReason::Empty);
        }
        let (payload, ending) = split_ending(datagram);
        if payload.len() > self.max_line {
            return Err(DropReason::TooLong);
        }
        match self.mode {
            Mode::Echo => out.extend_from_slice(datagram),
            Mode::Greet => {
                if classify(payload) == Request::Blank {
                    return Err(DropReason::Empty);
                }
                for piece in self.reply.pieces() {
                    match piece {
                        // No telnet escaping: a datagram is not a telnet stream.
                        Piece::Line => out.extend_from_slice(payload),
                        other => out.extend_from_slice(values.text(other)),
                    }
                }
                out.extend_from_slice(ending);
            }
        }
        if out.len() > datagram.len() + self.fixed {
            out.clear();
            return Err(DropReason::Bound);
        }
        Ok(())
    }
}

/// `datagram` without one trailing LF or CRLF, and that ending.
pub fn split_ending(datagram: &[u8]) -> (&[u8], &[u8]) {
    let cut = if datagram.ends_with(b"\r\n") {
        2
    } else if datagram.ends_with(b"\n") {
        1
    } else {
        0
    };
    datagram.split_at(datagram.len() - cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Machine, TemplateField};

    fn settings(mode: Mode, reply: &str, max_line: usize) -> Settings {
        let machine = Machine {
            host: "box".into(),
            pid: 42,
        };
        Settings {
            mode,
            reply: ReplyTemplate::parse(reply, TemplateField::Reply, &machine).unwrap(),
            max_line,
            ..Settings::default()
        }
    }

    fn values() -> ConnectionValues {
        ConnectionValues::new(
            "192.0.2.7:5353".parse().unwrap(),
            "127.0.0.1:9999".parse().unwrap(),
            3,
        )
    }

    fn answer(r: &Replies, datagram: &[u8]) -> Result<Vec<u8>, DropReason> {
        let mut out = Vec::new();
        r.answer(datagram, &values(), &mut out).map(|()| out)
    }

    #[test]
    fn greet_trims_one_ending_and_puts_it_back() {
        let r = Replies::new(&settings(Mode::Greet, "Hello, {}!", 100)).unwrap();
        assert_eq!(answer(&r, b"Alice").unwrap(), b"Hello, Alice!");
        assert_eq!(answer(&r, b"Alice\n").unwrap(), b"Hello, Alice!\n");
        assert_eq!(answer(&r, b"Alice\r\n").unwrap(), b"Hello, Alice!\r\n");
        assert_eq!(answer(&r, b"Alice\n\n").unwrap(), b"Hello, Alice\n!\n");
        assert_eq!(answer(&r, b"exit").unwrap(), b"Hello, exit!");
        assert_eq!(answer(&r, b"\xff\x00").unwrap(), b"Hello, \xff\x00!");
    }

    #[test]
    fn echo_sends_the_datagram_back_unchanged() {
        let r = Replies::new(&settings(Mode::Echo, "Hello, {}!", 100)).unwrap();
        for d in [&b"Alice\r\n"[..], b"  ", b"\xff\xfe", b"exit\n"] {
            assert_eq!(answer(&r, d).unwrap(), d);
        }
        assert_eq!(r.fixed(), 0);
    }

    #[test]
    fn empty_and_blank_datagrams_get_nothing() {
        let r = Replies::new(&settings(Mode::Greet, "Hello, {}!", 100)).unwrap();
        for d in [&b""[..], b"\n", b"\r\n", b" \t\n"] {
            assert_eq!(answer(&r, d), Err(DropReason::Empty), "{d:?}");
        }
        let echo = Replies::new(&settings(Mode::Echo, "{}", 100)).unwrap();
        assert_eq!(answer(&echo, b""), Err(DropReason::Empty));
    }

    #[test]
    fn max_line_counts_the_payload_without_its_ending() {
        let r = Replies::new(&settings(Mode::Greet, "Hello, {}!", 4)).unwrap();
        assert_eq!(r.buffer_len(), 7);
        assert!(answer(&r, b"abcd\r\n").is_ok());
        assert_eq!(answer(&r, b"abcde"), Err(DropReason::TooLong));
        // What the kernel leaves of a longer datagram in a buffer of 7.
        assert_eq!(answer(&r, b"abcdefg"), Err(DropReason::TooLong));
        assert_eq!(answer(&r, b"abcde\r\n"), Err(DropReason::TooLong));
        let big = Replies::new(&settings(Mode::Greet, "{}", 16 << 20)).unwrap();
        assert_eq!(big.buffer_len(), MAX_BUFFER);
    }

    #[test]
    fn placeholders_fill_and_stay_within_the_bound() {
        // The text (" #", " box/42: "), an address at 64 and a number at 20; and the
        // text (" ") and an address.
        for (template, reply, fixed) in [
            (
                "{peer} #{conn} {host}/{pid}: {}",
                &b"192.0.2.7:5353 #3 box/42: x"[..],
                11 + 64 + 20,
            ),
            ("{local} {}", b"127.0.0.1:9999 x", 1 + 64),
        ] {
            let r = Replies::new(&settings(Mode::Greet, template, 100)).unwrap();
            assert!(r.needs_values());
            assert_eq!(answer(&r, b"x").unwrap(), reply);
            assert_eq!(r.fixed(), fixed);
            // The longest address text still fits the bound.
            let long = ConnectionValues::new(
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535"
                    .parse()
                    .unwrap(),
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535"
                    .parse()
                    .unwrap(),
                u64::MAX,
            );
            let mut out = Vec::new();
            r.answer(b"y", &long, &mut out).unwrap();
            assert!(out.len() <= 1 + r.fixed());
        }
    }

    #[test]
    fn connection_facts_are_refused_in_greet_mode() {
        for name in ["tls_version", "sni", "proxied_by", "age"] {
            let text = format!("Hi {{}} {{{name}}}");
            let e = Replies::new(&settings(Mode::Greet, &text, 100)).unwrap_err();
            assert!(e.contains(&format!("{{{name}}}")), "{e}");
            assert!(!e.contains('\n'), "{e}");
            assert!(Replies::new(&settings(Mode::Echo, &text, 100)).is_ok());
        }
    }

    #[test]
    fn a_reply_with_two_lines_is_refused_in_greet_mode() {
        let e = Replies::new(&settings(Mode::Greet, "{} and {}", 100)).unwrap_err();
        assert!(e.contains("use `{}` once"), "{e}");
        assert!(Replies::new(&settings(Mode::Echo, "{} and {}", 100)).is_ok());
        let none = Replies::new(&settings(Mode::Greet, "pong", 100)).unwrap();
        assert_eq!(answer(&none, b"x").unwrap(), b"pong");
        assert!(!none.needs_values());
    }

    #[test]
    fn a_template_that_adds_more_than_max_fixed_is_refused_in_greet_mode() {
        let text = "A".repeat(MAX_FIXED - 2);
        let at = Replies::new(&settings(Mode::Greet, &format!("{text}{{}}!!"), 100)).unwrap();
        assert_eq!(at.fixed(), MAX_FIXED);
        let over = format!("{text}{{}}!!!");
        let e = Replies::new(&settings(Mode::Greet, &over, 100)).unwrap_err();
        assert!(
            e.starts_with("--reply adds up to 129 bytes to a request") && e.contains("128"),
            "{e}"
        );
        // Placeholders count at their longest: two addresses and a number are 148.
        assert!(Replies::new(&settings(Mode::Greet, "{peer}{local}{conn}{}", 100)).is_err());
        assert!(Replies::new(&settings(Mode::Greet, "{peer} says {}", 100)).is_ok());
        // Echo mode does not use the template.
        assert_eq!(
            Replies::new(&settings(Mode::Echo, &over, 100))
                .unwrap()
                .fixed(),
            0
        );
    }

    #[test]
    fn no_reply_exceeds_request_plus_fixed() {
        // Every size up to the buffer, for the default template and a busy one.
        for template in ["Hello, {}!", "{peer}{conn}{}{host}", "{local}{}", "x"] {
            for mode in [Mode::Greet, Mode::Echo] {
                let r = Replies::new(&settings(mode, template, 300)).unwrap();
                for n in 0..=r.buffer_len() {
                    let d = vec![b'a'; n];
                    if let Ok(out) = answer(&r, &d) {
                        assert!(out.len() <= n + r.fixed(), "{template} {n}");
                    }
                }
            }
        }
    }

    proptest::proptest! {
        /// Whatever the bytes, the template, the addresses and the datagram's number, a
        /// reply is never longer than the request plus [`Replies::fixed`].
        #[test]
        fn any_datagram_s_reply_is_within_the_bound(
            datagram in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b' ', b'\t', b'\r', b'\n', 0xff, 0]),
                0..80,
            ),
            template in 0usize..5,
            echo in proptest::bool::ANY,
            peer in proptest::sample::select(vec![
                "192.0.2.1:1",
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535",
                "[::1]:40000",
            ]),
            conn in proptest::num::u64::ANY,
        ) {
            let templates = ["Hello, {}!", "{}", "pong", "{peer}{conn}{}", "{host} {pid} {local}"];
            let mode = if echo { Mode::Echo } else { Mode::Greet };
            let r = Replies::new(&settings(mode, templates[template], 64)).unwrap();
            let peer: SocketAddr = peer.parse().unwrap();
            let values = ConnectionValues::new(peer, peer, conn);
            let mut out = Vec::new();
            if r.answer(&datagram, &values, &mut out).is_ok() {
                proptest::prop_assert!(out.len() <= datagram.len() + r.fixed());
                proptest::prop_assert!(!out.is_empty() || datagram.is_empty());
            } else {
                proptest::prop_assert!(out.is_empty());
            }
        }
    }

    #[test]
    fn peers_that_could_start_a_loop_or_are_not_unicast_are_never_answered() {
        let rules = PeerRules {
            own_ports: vec![9999, 8888],
            low_ports: false,
        };
        let check = |s: &str| check_peer(s.parse().unwrap(), 0, &rules);
        assert_eq!(check("127.0.0.1:40000"), Ok(()));
        assert_eq!(check("[::1]:40000"), Ok(()));
        assert_eq!(check("127.0.0.1:1024"), Ok(()));
        assert_eq!(check("127.0.0.1:0"), Err(DropReason::PortZero));
        // Every socket's port, not only the one the datagram came to.
        for own in [
            "127.0.0.1:9999",
            "[::1]:9999",
            "192.0.2.1:9999",
            "127.0.0.1:8888",
        ] {
            assert_eq!(check(own), Err(DropReason::Loop), "{own}");
        }
        for port in SERVICE_PORTS {
            assert_eq!(check(&format!("192.0.2.1:{port}")), Err(DropReason::Loop));
        }
        for port in [1, 53, 123, 1023] {
            assert_eq!(
                check(&format!("192.0.2.1:{port}")),
                Err(DropReason::LowPort)
            );
        }
        // --udp-low-ports opens the low ports, never the services' nor the own ones.
        let open = PeerRules {
            low_ports: true,
            ..rules.clone()
        };
        let check_open = |s: &str| check_peer(s.parse().unwrap(), 0, &open);
        assert_eq!(check_open("192.0.2.1:53"), Ok(()));
        assert_eq!(check_open("192.0.2.1:17"), Err(DropReason::Loop));
        assert_eq!(check_open("192.0.2.1:8888"), Err(DropReason::Loop));
        assert_eq!(check_open("192.0.2.1:0"), Err(DropReason::PortZero));
        for bad in [
            "255.255.255.255:40000",
            "224.0.0.1:40000",
            "239.1.2.3:40000",
            "0.0.0.0:40000",
            "[ff02::1]:40000",
            "[::]:40000",
            "[::ffff:255.255.255.255]:40000",
            "[::ffff:224.0.0.1]:40000",
        ] {
            assert_eq!(check(bad), Err(DropReason::NotUnicast), "{bad}");
        }
    }

    #[test]
    fn a_datagram_marked_as_a_reply_is_never_answered_whatever_its_ecn_bits() {
        let rules = PeerRules::default();
        let peer = "127.0.0.1:40000".parse().unwrap();
        for ecn in 0..4 {
            let class = REPLY_CLASS | ecn;
            assert!(is_reply_class(class));
            assert_eq!(check_peer(peer, class, &rules), Err(DropReason::Reply));
        }
        // Best effort, other DSCPs (LE, AF11, EF), and a DSCP that differs in one bit.
        for class in [
            0,
            1 << 2,
            10 << 2,
            46 << 2,
            (REPLY_DSCP ^ 0b10_0000) << 2,
            0xff,
        ] {
            assert!(!is_reply_class(class), "{class:#04x}");
            assert_eq!(check_peer(peer, class, &rules), Ok(()));
        }
    }

    #[test]
    fn labels_follow_the_order_of_all() {
        for (i, d) in DropReason::ALL.iter().enumerate() {
            assert_eq!(d.index(), i);
            assert!(!d.label().is_empty());
        }
    }
}
