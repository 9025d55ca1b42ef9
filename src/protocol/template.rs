//! Reply templates: `--welcome`, `--reply`, `--farewell` (and `bench --expect`) parsed
//! once into pieces, and rendered per message with the connection's own values and
//! no allocation.

use memchr::memchr;

use super::log_text::LogText;
use super::telnet::telnet_escape;

/// Which option a template comes from: it decides whether `{}` (the client's line) is
/// allowed, and names the option in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateField {
    /// `--welcome`: sent before any line arrives, so `{}` is refused.
    Welcome,
    /// `--reply`: `{}` is the client's line.
    Reply,
    /// `--farewell`: its line is the exit word, so `{}` is refused.
    Farewell,
    /// `bench --expect`: the reply to a `--reply`, so `{}` is the name the bench sent.
    Expect,
}

impl TemplateField {
    /// The command-line flag, for messages.
    pub fn flag(self) -> &'static str {
        match self {
            TemplateField::Welcome => "--welcome",
            TemplateField::Reply => "--reply",
            TemplateField::Farewell => "--farewell",
            TemplateField::Expect => "--expect",
        }
    }

    /// The placeholders this option takes, for messages.
    fn known(self) -> String {
        match self {
            TemplateField::Reply => format!("{{}} (the client's line), {PLACEHOLDERS}"),
            TemplateField::Expect => format!("{{}} (the name sent), {PLACEHOLDERS}"),
            _ => PLACEHOLDERS.to_string(),
        }
    }
}

/// The placeholders every template may hold, for messages.
const PLACEHOLDERS: &str =
    "{peer}, {local}, {host}, {pid}, {conn}, and {{ and }} for literal braces";

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// `{name}` is not a placeholder.
    Unknown {
        /// The option the template came from.
        field: TemplateField,
        /// What stood between the braces.
        name: String,
    },
    /// `{}` in `--welcome` or `--farewell`, where there is no client's line.
    LineOutsideReply {
        /// The option the template came from.
        field: TemplateField,
    },
    /// A `{` without its `}`, or a `}` without its `{`.
    Unmatched {
        /// The option the template came from.
        field: TemplateField,
        /// The lone brace.
        brace: char,
    },
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TemplateError::Unknown { field, name } => write!(
                f,
                "{} has an unknown placeholder {{{name}}}; the known ones are {}",
                field.flag(),
                field.known()
            ),
            TemplateError::LineOutsideReply { field } => write!(
                f,
                "{} cannot hold {{}}, the client's line, which only --reply has (write {{{{}}}} \
                 for the two characters); the placeholders here are {}",
                field.flag(),
                field.known()
            ),
            TemplateError::Unmatched { field, brace } => write!(
                f,
                "{} has a lone {brace} (write {brace}{brace} for a literal one); the \
                 placeholders are {}",
                field.flag(),
                field.known()
            ),
        }
    }
}

impl std::error::Error for TemplateError {}

/// What the server knows about itself for `{host}` and `{pid}`, read once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// The host name.
    pub host: String,
    /// The server's process id.
    pub pid: u32,
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text sent as it is (`{host}`, `{pid}` and `{{ }}` included, resolved at parse time).
    Text(Vec<u8>),
    /// `{}`: the client's line, 0xFF bytes doubled.
    Line,
    /// `{peer}`: the client's address as the server sees it.
    Peer,
    /// `{local}`: the address the client reached.
    Local,
    /// `{conn}`: the connection's number.
    Conn,
}

/// A welcome, reply or farewell template such as `Hello, {}! from {host}`, parsed once
/// at start-up into pieces, so that rendering one is a few copies and no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTemplate {
    pieces: Vec<Piece>,
    /// Bytes of all the [`Piece::Text`] pieces.
    literal: usize,
    /// How many times each placeholder occurs: line, peer, local, conn.
    counts: [usize; 4],
}

impl ReplyTemplate {
    /// Parses `text`: `{}` is the client's line (in `--reply` only), `{peer}`, `{local}`
    /// and `{conn}` are the connection's, `{host}` and `{pid}` become `machine`'s text,
    /// `{{` and `}}` are literal braces. Anything else in braces, or a lone brace, is
    /// refused.
    pub fn parse(
        text: &str,
        field: TemplateField,
        machine: &Machine,
    ) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut literal = Vec::new();
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let (byte, next) = (bytes[i], bytes.get(i + 1).copied());
            if (byte == b'{' || byte == b'}') && next == Some(byte) {
                literal.push(byte);
                i += 2;
                continue;
            }
            if byte == b'}' {
                return Err(TemplateError::Unmatched { field, brace: '}' });
            }
            if byte != b'{' {
                literal.push(byte);
                i += 1;
                continue;
            }
            let Some(len) = memchr(b'}', &bytes[i + 1..]) else {
                return Err(TemplateError::Unmatched { field, brace: '{' });
            };
            // Braces are ASCII, so both ends are character boundaries.
            let name = &text[i + 1..i + 1 + len];
            // `Hello { {}`: the first brace opens nothing, the second a placeholder.
            if name.contains('{') {
                return Err(TemplateError::Unmatched { field, brace: '{' });
            }
            i += len + 2;
            let piece = match name {
                "" if matches!(field, TemplateField::Reply | TemplateField::Expect) => Piece::Line,
                "" => return Err(TemplateError::LineOutsideReply { field }),
                "peer" => Piece::Peer,
                "local" => Piece::Local,
                "conn" => Piece::Conn,
                "host" => {
                    literal.extend_from_slice(machine.host.as_bytes());
                    continue;
                }
                "pid" => {
                    literal.extend_from_slice(machine.pid.to_string().as_bytes());
                    continue;
                }
                _ => {
                    let name = name.to_string();
                    return Err(TemplateError::Unknown { field, name });
                }
            };
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(piece);
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(ReplyTemplate::from_pieces(pieces))
    }

    /// A template of fixed text, with no placeholders.
    pub fn literal(text: &str) -> Self {
        let pieces = if text.is_empty() {
            Vec::new()
        } else {
            vec![Piece::Text(text.as_bytes().to_vec())]
        };
        ReplyTemplate::from_pieces(pieces)
    }

    pub(super) fn from_pieces(pieces: Vec<Piece>) -> Self {
        let mut literal = 0;
        let mut counts = [0; 4];
        for piece in &pieces {
            match piece {
                Piece::Text(text) => literal += text.len(),
                Piece::Line => counts[0] += 1,
                Piece::Peer => counts[1] += 1,
                Piece::Local => counts[2] += 1,
                Piece::Conn => counts[3] += 1,
            }
        }
        ReplyTemplate {
            pieces,
            literal,
            counts,
        }
    }

    /// Whether the template shows `{local}`.
    pub fn shows_local(&self) -> bool {
        self.counts[2] > 0
    }

    /// Whether the template always renders to nothing.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The exact length of the rendering for a line of `line_len` bytes (after
    /// [`telnet_len`](super::telnet_len)) on a connection with `values`, without the line ending.
    pub fn len_for(&self, line_len: usize, values: &ConnectionValues) -> usize {
        let [line, peer, local, conn] = self.counts;
        self.literal
            + line * line_len
            + peer * values.peer.len()
            + local * values.local.len()
            + conn * values.conn.len()
    }

    /// The longest rendering for a line of `line_len` bytes, on any connection.
    pub fn max_len_for(&self, line_len: usize) -> usize {
        let [line, peer, local, conn] = self.counts;
        self.literal + line * line_len + (peer + local) * ADDR_TEXT_MAX + conn * CONN_TEXT_MAX
    }

    /// The pieces, in order.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// Writes the rendering for `line` (without line ending) at the start of `out`,
    /// every 0xFF of the line doubled as telnet requires (see [`telnet_escape`]). `out`
    /// must have room for [`ReplyTemplate::len_for`]`(`[`telnet_len`](super::telnet_len)`(line), values)`
    /// bytes; returns the bytes written.
    pub fn render(&self, line: &[u8], values: &ConnectionValues, out: &mut [u8]) -> usize {
        let mut at = 0;
        for piece in &self.pieces {
            let text = match piece {
                Piece::Line => {
                    at += telnet_escape(line, &mut out[at..]);
                    continue;
                }
                other => values.text(other),
            };
            out[at..at + text.len()].copy_from_slice(text);
            at += text.len();
        }
        at
    }
}

/// The longest text of a socket address: `[`, 39 characters of IPv6, `%`, a 10-digit
/// scope id, `]:` and a 5-digit port make 58.
pub const ADDR_TEXT_MAX: usize = 64;
/// The longest text of a connection number (a `u64`).
pub const CONN_TEXT_MAX: usize = 20;

/// Text formatted once into a fixed buffer, so that it costs no allocation.
#[derive(Clone, Copy)]
struct Fixed<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Fixed<N> {
    /// `value`'s text; [`ADDR_TEXT_MAX`] and [`CONN_TEXT_MAX`] are the longest there
    /// is, so nothing is cut (if it were, what fits would be kept).
    fn of(value: impl std::fmt::Display) -> Self {
        use std::io::Write;
        let mut bytes = [0; N];
        let mut rest = &mut bytes[..];
        let _ = write!(rest, "{value}");
        let len = N - rest.len();
        Fixed { bytes, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl<const N: usize> std::fmt::Debug for Fixed<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", LogText(self.as_bytes()).to_string())
    }
}

/// A connection's own placeholder values (`{peer}`, `{local}`, `{conn}`), formatted
/// once when it opens. They are ASCII, so they never hold a 0xFF byte.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionValues {
    peer: Fixed<ADDR_TEXT_MAX>,
    local: Fixed<ADDR_TEXT_MAX>,
    conn: Fixed<CONN_TEXT_MAX>,
}

impl ConnectionValues {
    /// The values of connection number `conn` from `peer` to `local`.
    pub fn new(peer: std::net::SocketAddr, local: std::net::SocketAddr, conn: u64) -> Self {
        ConnectionValues {
            peer: Fixed::of(peer),
            local: Fixed::of(local),
            conn: Fixed::of(conn),
        }
    }

    /// The text of a piece that is not the client's line (which is empty here).
    pub fn text<'a>(&'a self, piece: &'a Piece) -> &'a [u8] {
        match piece {
            Piece::Text(text) => text,
            Piece::Line => b"",
            Piece::Peer => self.peer.as_bytes(),
            Piece::Local => self.local.as_bytes(),
            Piece::Conn => self.conn.as_bytes(),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::protocol::telnet_len;

    pub(crate) fn machine() -> Machine {
        Machine {
            host: "box".to_string(),
            pid: 42,
        }
    }

    pub(crate) fn parse(text: &str, field: TemplateField) -> Result<ReplyTemplate, TemplateError> {
        ReplyTemplate::parse(text, field, &machine())
    }

    pub(crate) fn reply(text: &str) -> ReplyTemplate {
        parse(text, TemplateField::Reply).unwrap()
    }

    fn values() -> ConnectionValues {
        let peer = "10.0.0.7:40000".parse().unwrap();
        let local = "[fe80::1%3]:9999".parse().unwrap();
        ConnectionValues::new(peer, local, 7)
    }

    /// Renders `t` for `line` into a buffer of exactly the announced length.
    fn render(t: &ReplyTemplate, line: &[u8], values: &ConnectionValues) -> Vec<u8> {
        let mut out = vec![0u8; t.len_for(telnet_len(line), values)];
        let n = t.render(line, values, &mut out);
        assert_eq!(n, out.len(), "len_for is exact");
        out
    }

    #[test]
    fn template_renders_every_placeholder() {
        let v = values();
        let t = reply("Hello, {}!");
        assert_eq!(render(&t, "张三".as_bytes(), &v), "Hello, 张三!".as_bytes());
        assert_eq!(render(&reply("{} and {}"), b"x", &v), b"x and x");
        assert_eq!(
            render(&reply("no placeholder"), b"ignored", &v),
            b"no placeholder"
        );
        let t = reply("{}@{host}:{pid} #{conn} {peer} -> {local}");
        assert_eq!(
            render(&t, b"Ann", &v),
            b"Ann@box:42 #7 10.0.0.7:40000 -> [fe80::1%3]:9999"
        );
        let t = reply("{peer}{peer}{local}{conn}{conn}");
        assert_eq!(
            render(&t, b"", &v),
            b"10.0.0.7:40000"
                .repeat(2)
                .into_iter()
                .chain(b"[fe80::1%3]:9999".iter().copied())
                .chain(*b"77")
                .collect::<Vec<u8>>()
        );
        // {host} and {pid} are resolved at parse time into literal text.
        assert_eq!(
            reply("a{host}b{pid}c").pieces(),
            [Piece::Text(b"aboxb42c".to_vec())]
        );
    }

    #[test]
    fn doubled_braces_are_literal_braces() {
        let v = values();
        assert_eq!(render(&reply("{{}}"), b"x", &v), b"{}");
        assert_eq!(render(&reply("{{{}}}"), b"x", &v), b"{x}");
        assert_eq!(
            render(&reply("{{peer}} {{{conn}}}"), b"", &v),
            b"{peer} {7}"
        );
        let t = parse("{{}} {{host}}", TemplateField::Welcome).unwrap();
        assert_eq!(render(&t, b"", &v), b"{} {host}");
    }

    #[test]
    fn unknown_placeholders_and_lone_braces_are_refused() {
        for field in [
            TemplateField::Welcome,
            TemplateField::Reply,
            TemplateField::Farewell,
        ] {
            let e = parse("Hi {nme}!", field).unwrap_err();
            assert_eq!(
                e,
                TemplateError::Unknown {
                    field,
                    name: "nme".to_string()
                }
            );
            let text = e.to_string();
            assert!(text.starts_with(field.flag()), "{text}");
            assert!(text.contains("{nme}"), "{text}");
            for known in ["{peer}", "{local}", "{host}", "{pid}", "{conn}", "{{"] {
                assert!(text.contains(known), "{text}");
            }
            assert!(!text.contains('\n'), "one line: {text}");
            assert!(matches!(
                parse("{PEER}", field),
                Err(TemplateError::Unknown { .. })
            ));
            assert!(matches!(
                parse("{ }", field),
                Err(TemplateError::Unknown { .. })
            ));
            assert_eq!(
                parse("a { b", field),
                Err(TemplateError::Unmatched { field, brace: '{' })
            );
            assert_eq!(
                parse("Hello { {}", field),
                Err(TemplateError::Unmatched { field, brace: '{' })
            );
            assert_eq!(
                parse("a } b", field),
                Err(TemplateError::Unmatched { field, brace: '}' })
            );
            assert_eq!(
                parse("x}}}", field)
                    .err()
                    .map(|e| e.to_string().contains("lone }")),
                Some(true)
            );
        }
    }

    #[test]
    fn the_client_s_line_is_refused_in_welcome_and_farewell() {
        for field in [TemplateField::Welcome, TemplateField::Farewell] {
            let e = parse("Hi {}", field).unwrap_err();
            assert_eq!(e, TemplateError::LineOutsideReply { field });
            let text = e.to_string();
            assert!(text.starts_with(field.flag()), "{text}");
            assert!(text.contains("{{}}"), "says how to write it: {text}");
            let t = parse("conn {conn} from {peer} to {local} on {host}", field).unwrap();
            assert_eq!(
                render(&t, b"", &values()),
                b"conn 7 from 10.0.0.7:40000 to [fe80::1%3]:9999 on box"
            );
        }
        assert_eq!(reply("{}").pieces(), [Piece::Line]);
    }

    #[test]
    fn len_for_is_exact_and_max_len_for_bounds_every_connection() {
        let t = reply("{}|{peer}|{local}|{conn}|{}");
        let widest = ConnectionValues::new(
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535"
                .parse()
                .unwrap(),
            "255.255.255.255:65535".parse().unwrap(),
            u64::MAX,
        );
        let narrow =
            ConnectionValues::new("1.2.3.4:5".parse().unwrap(), "[::]:1".parse().unwrap(), 0);
        for v in [values(), widest, narrow] {
            for line in [&b""[..], b"a", b"\xff\xff", "张三".as_bytes()] {
                let out = render(&t, line, &v);
                assert!(out.len() <= t.max_len_for(telnet_len(line)));
            }
        }
        let out = render(&t, b"", &widest);
        assert!(
            out.starts_with(b"|[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535|"),
            "not cut: {:?}",
            LogText(&out).to_string()
        );
        assert!(out.ends_with(b"|18446744073709551615|"));
        assert_eq!(render(&t, b"", &narrow), b"|1.2.3.4:5|[::]:1|0|");
    }

    #[test]
    fn replies_double_every_0xff_of_the_line() {
        let t = reply("Hello, {}! {conn}");
        let line = b"a\xff\xfb\x01\xff";
        assert_eq!(telnet_len(line), 7);
        let out = render(&t, line, &values());
        assert_eq!(out, b"Hello, a\xff\xff\xfb\x01\xff\xff! 7");
        let mut out = [0u8; 64];
        let n = telnet_escape(b"plain", &mut out);
        assert_eq!(&out[..n], b"plain");
        let n = telnet_escape(b"\xff\xff", &mut out);
        assert_eq!(&out[..n], b"\xff\xff\xff\xff");
    }
}
