//! Reply templates: `--welcome`, `--reply`, `--farewell` (and `bench --expect`) parsed
//! once into pieces, and rendered per message with the connection's own values and
//! no allocation.

use memchr::memchr;

use super::json::{json_escape, json_len, json_len_max, json_string};
use super::log_text::LogText;
use super::telnet::telnet_escape;
use super::telnet::telnet_len;

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
            TemplateField::Expect => {
                "{} (the name sent), {peer}, {local}, {host}, {pid}, {conn}, and {{ and }} for \
                 literal braces"
                    .to_string()
            }
            _ => PLACEHOLDERS.to_string(),
        }
    }
}

/// The placeholders every template may hold, for messages.
const PLACEHOLDERS: &str = "{peer}, {local}, {host}, {pid}, {conn}, {tls_version}, \
     {tls_cipher}, {sni}, {alpn}, {client_cn}, {proxied_by}, {age}, and {{ and }} for literal \
     braces";

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
    /// One of the connection's facts learnt after it opened (see [`Fact`]).
    Who(Fact),
    /// `--reply-format json`: the client's line as a JSON string, quotes included.
    JsonLine,
    /// `--reply-format json`: a fact as a JSON string (`{age}`: a number).
    JsonWho(Fact),
}

/// What a connection is besides its addresses and number, known once its PROXY header
/// and TLS handshake are done: empty when it has no such thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// `{tls_version}`, e.g. `TLSv1.3`.
    TlsVersion,
    /// `{tls_cipher}`, e.g. `TLS13_AES_256_GCM_SHA384`.
    TlsCipher,
    /// `{sni}`: the server name the client asked for.
    Sni,
    /// `{alpn}`: the application protocol agreed.
    Alpn,
    /// `{client_cn}`: the client certificate's subject, as the close line names it.
    ClientCn,
    /// `{proxied_by}`: the socket's peer when a PROXY header named another client.
    ProxiedBy,
    /// `{age}`: seconds since the connection opened, formatted when rendered.
    Age,
}

impl Fact {
    /// Every fact, in the order of [`Fact::index`].
    pub const ALL: [Fact; 7] = [
        Fact::TlsVersion,
        Fact::TlsCipher,
        Fact::Sni,
        Fact::Alpn,
        Fact::ClientCn,
        Fact::ProxiedBy,
        Fact::Age,
    ];

    /// The placeholder's name, between the braces.
    pub fn name(self) -> &'static str {
        match self {
            Fact::TlsVersion => "tls_version",
            Fact::TlsCipher => "tls_cipher",
            Fact::Sni => "sni",
            Fact::Alpn => "alpn",
            Fact::ClientCn => "client_cn",
            Fact::ProxiedBy => "proxied_by",
            Fact::Age => "age",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn named(name: &str) -> Option<Fact> {
        Fact::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// The room a fact is given when the output buffer is sized (a longer one is sent in
/// pieces, as a long reply is).
const FACT_TEXT_TYPICAL: usize = 256;

/// The connection's facts ([`Fact`]) as text, made once after its handshake, only when
/// a template shows one: `{age}` alone is made again for each reply that shows it.
#[derive(Debug, Clone)]
pub struct Who {
    /// Each fact's text, in the order of [`Fact::ALL`] (`{age}`'s is in `age`).
    texts: [Vec<u8>; 6],
    /// The same as JSON strings, quotes included.
    json: [Vec<u8>; 6],
    started: std::time::Instant,
    age: Fixed<AGE_TEXT_MAX>,
}

/// The longest text of `{age}`: a `u64` of seconds, a point and 3 decimals.
const AGE_TEXT_MAX: usize = 24;

/// What the server learnt of a connection, for [`Who::new`]; `None` where it has not.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    /// The TLS version, e.g. `TLSv1.3`.
    pub tls_version: Option<&'a str>,
    /// The cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub tls_cipher: Option<&'a str>,
    /// The server name the client sent (client text).
    pub sni: Option<&'a [u8]>,
    /// The protocol agreed (client text).
    pub alpn: Option<&'a [u8]>,
    /// The client certificate's subject, already escaped for the close line.
    pub client_cn: Option<&'a str>,
    /// The socket's peer, when a PROXY header named another client.
    pub proxied_by: Option<std::net::SocketAddr>,
}

impl Who {
    /// The text of `facts`, for a connection that opened at `started`. What the client
    /// chose (the SNI, the ALPN protocol) is escaped as in the log ([`LogText`]): no
    /// control character, newline or invalid UTF-8 reaches a reply.
    pub fn new(facts: &Facts<'_>, started: std::time::Instant) -> Self {
        let client = |text: Option<&[u8]>| {
            text.map_or_else(Vec::new, |t| LogText(t).to_string().into_bytes())
        };
        let texts = [
            facts.tls_version.unwrap_or("").as_bytes().to_vec(),
            facts.tls_cipher.unwrap_or("").as_bytes().to_vec(),
            client(facts.sni),
            client(facts.alpn),
            facts.client_cn.unwrap_or("").as_bytes().to_vec(),
            facts
                .proxied_by
                .map_or_else(Vec::new, |p| p.to_string().into_bytes()),
        ];
        let json = texts
            .each_ref()
            .map(|t| json_string(&String::from_utf8_lossy(t)));
        let mut who = Who {
            texts,
            json,
            started,
            age: Fixed::of(""),
        };
        who.stamp_age();
        who
    }

    /// Formats `{age}` for a reply about to be rendered.
    pub fn stamp_age(&mut self) {
        self.age = Fixed::of(format_args!("{:.3}", self.started.elapsed().as_secs_f64()));
    }

    /// A fact's text.
    pub fn text(&self, fact: Fact) -> &[u8] {
        match fact {
            Fact::Age => self.age.as_bytes(),
            other => &self.texts[other.index()],
        }
    }

    /// A fact as JSON: a string, quotes included; `{age}` a number.
    pub fn json(&self, fact: Fact) -> &[u8] {
        match fact {
            Fact::Age => self.age.as_bytes(),
            other => &self.json[other.index()],
        }
    }
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
    /// How many times each [`Fact`] occurs, in the order of [`Fact::ALL`].
    facts: [usize; 7],
    /// The same for facts as JSON ([`Piece::JsonWho`]).
    json_facts: [usize; 7],
    /// How many times the line occurs as JSON ([`Piece::JsonLine`]).
    json_line: usize,
    /// Whether any fact occurs: without, rendering never looks at them.
    shows_who: bool,
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
                // The bench cannot know a server's connection facts.
                _ => match Fact::named(name) {
                    Some(fact) if field != TemplateField::Expect => Piece::Who(fact),
                    _ => {
                        let name = name.to_string();
                        return Err(TemplateError::Unknown { field, name });
                    }
                },
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
        let mut facts = [0; 7];
        let mut json_facts = [0; 7];
        let mut json_line = 0;
        for piece in &pieces {
            match piece {
                Piece::Text(text) => literal += text.len(),
                Piece::Line => counts[0] += 1,
                Piece::Peer => counts[1] += 1,
                Piece::Local => counts[2] += 1,
                Piece::Conn => counts[3] += 1,
                Piece::Who(fact) => facts[fact.index()] += 1,
                Piece::JsonLine => json_line += 1,
                Piece::JsonWho(fact) => json_facts[fact.index()] += 1,
            }
        }
        ReplyTemplate {
            pieces,
            literal,
            counts,
            shows_who: facts.iter().chain(&json_facts).any(|&n| n > 0),
            facts,
            json_facts,
            json_line,
        }
    }

    /// `--reply-format json`: one line of JSON with the client's line as `name` and
    /// every fact of the connection, `host` and `pid` as `machine`'s.
    pub fn json(machine: &Machine) -> Self {
        let text = |s: &str| Piece::Text(s.as_bytes().to_vec());
        let mut pieces = vec![
            text("{\"name\":"),
            Piece::JsonLine,
            text(",\"peer\":\""),
            Piece::Peer,
            text("\",\"local\":\""),
            Piece::Local,
        ];
        let host = String::from_utf8_lossy(&json_string(&machine.host)).into_owned();
        let pid = machine.pid;
        pieces.push(text(&format!("\",\"host\":{host},\"pid\":{pid},\"conn\":")));
        pieces.push(Piece::Conn);
        for fact in Fact::ALL {
            pieces.push(text(&format!(",\"{}\":", fact.name())));
            pieces.push(Piece::JsonWho(fact));
        }
        pieces.push(text("}"));
        // Adjacent text pieces joined, as `parse` leaves them.
        let mut joined: Vec<Piece> = Vec::new();
        for piece in pieces {
            match (joined.last_mut(), piece) {
                (Some(Piece::Text(last)), Piece::Text(more)) => last.extend_from_slice(&more),
                (_, piece) => joined.push(piece),
            }
        }
        ReplyTemplate::from_pieces(joined)
    }

    /// The length of `line` as this template shows it ([`ReplyTemplate::len_for`]'s
    /// `line_len`): with its 0xFF bytes doubled, or as a JSON string.
    pub fn line_len(&self, line: &[u8]) -> usize {
        if self.json_line > 0 {
            json_len(line)
        } else {
            telnet_len(line)
        }
    }

    /// Whether the template shows any of the connection's facts ([`Fact`]).
    pub fn shows_who(&self) -> bool {
        self.shows_who
    }

    /// Whether this is `--reply-format json`'s template ([`ReplyTemplate::json`]).
    pub fn is_json(&self) -> bool {
        self.json_line > 0
    }

    /// Whether the template shows `{age}`.
    pub fn shows_age(&self) -> bool {
        let age = Fact::Age.index();
        self.facts[age] + self.json_facts[age] > 0
    }

    /// The facts the template shows.
    pub fn facts(&self) -> impl Iterator<Item = Fact> + '_ {
        Fact::ALL
            .into_iter()
            .filter(|f| self.facts[f.index()] + self.json_facts[f.index()] > 0)
    }

    /// Whether the template shows `{local}`.
    pub fn shows_local(&self) -> bool {
        self.counts[2] > 0
    }

    /// Whether it shows `{peer}`, `{local}` or `{conn}`.
    pub fn shows_values(&self) -> bool {
        self.counts[1..].iter().any(|&n| n > 0)
    }

    /// Whether the template always renders to nothing.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The exact length of the rendering for a line of `line_len` bytes (after
    /// [`telnet_len`](super::telnet_len)) on a connection with `values`, without the line ending.
    pub fn len_for(&self, line_len: usize, values: &ConnectionValues) -> usize {
        let [line, peer, local, conn] = self.counts;
        let base = self.literal
            + line * line_len
            + peer * values.peer.len()
            + local * values.local.len()
            + conn * values.conn.len();
        if !self.shows_who {
            return base;
        }
        base + self.json_line * line_len
            + Fact::ALL
                .into_iter()
                .map(|f| {
                    self.facts[f.index()] * values.fact(f).len()
                        + self.json_facts[f.index()] * values.fact_json(f).len()
                })
                .sum::<usize>()
    }

    /// The longest rendering for a line of `line_len` bytes, on any connection; with
    /// facts ([`Fact`]), which have no bound (a client certificate's subject), a typical
    /// one, for sizing buffers only.
    pub fn max_len_for(&self, line_len: usize) -> usize {
        let [line, peer, local, conn] = self.counts;
        let facts: usize = self.facts.iter().chain(&self.json_facts).sum();
        self.literal
            + line * line_len
            + self.json_line * json_len_max(line_len)
            + (peer + local) * ADDR_TEXT_MAX
            + conn * CONN_TEXT_MAX
            + facts * FACT_TEXT_TYPICAL
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
                // Copied here: `values.text`, with the facts, is too large to inline.
                Piece::Text(text) => text,
                Piece::Line => {
                    at += telnet_escape(line, &mut out[at..]);
                    continue;
                }
                Piece::JsonLine => {
                    at += json_escape(line, &mut out[at..]);
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
    const EMPTY: Self = Fixed {
        bytes: [0; N],
        len: 0,
    };

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

/// A `{local}` that is no socket address: a Unix socket's path, made once for all of
/// its connections. Escaped as inside a JSON string (only `"`, `\\` and control
/// characters change; invalid UTF-8 becomes U+FFFD), so that it is safe in a JSON reply
/// and holds no 0xFF byte for telnet to obey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalName(std::sync::Arc<str>);

impl LocalName {
    /// The name of `path`.
    pub fn new(path: &std::path::Path) -> Self {
        let quoted = json_string(&path.to_string_lossy());
        let inside = quoted.get(1..quoted.len() - 1).unwrap_or_default();
        LocalName(String::from_utf8_lossy(inside).into())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What `{local}` shows: an address formatted in place, or a shared name.
#[derive(Debug, Clone)]
enum Local {
    Addr(Fixed<ADDR_TEXT_MAX>),
    Name(LocalName),
}

impl Local {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Local::Addr(addr) => addr.as_bytes(),
            Local::Name(name) => name.0.as_bytes(),
        }
    }

    fn len(&self) -> usize {
        self.as_bytes().len()
    }
}

/// A connection's own placeholder values (`{peer}`, `{local}`, `{conn}`), formatted
/// once when it opens, and its facts ([`Who`]) when a template shows them. They never
/// hold a 0xFF byte: addresses and credentials are ASCII, names and facts escaped UTF-8.
#[derive(Debug, Clone)]
pub struct ConnectionValues {
    peer: Fixed<ADDR_TEXT_MAX>,
    local: Local,
    conn: Fixed<CONN_TEXT_MAX>,
    /// `None` unless a template shows a fact: every fact is empty then.
    who: Option<Box<Who>>,
}

impl ConnectionValues {
    /// The values of a connection whose templates show none of them: all empty.
    pub const NONE: ConnectionValues = ConnectionValues {
        peer: Fixed::EMPTY,
        local: Local::Addr(Fixed::EMPTY),
        conn: Fixed::EMPTY,
        who: None,
    };

    /// The values of connection number `conn` from `peer` to `local`.
    pub fn new(peer: std::net::SocketAddr, local: std::net::SocketAddr, conn: u64) -> Self {
        ConnectionValues {
            peer: Fixed::of(peer),
            local: Local::Addr(Fixed::of(local)),
            conn: Fixed::of(conn),
            who: None,
        }
    }

    /// The values of connection number `conn` on a Unix socket: `peer`, the client's
    /// credentials as text of at most [`ADDR_TEXT_MAX`] ASCII bytes, and the socket's
    /// `local` name.
    pub fn unix(peer: impl std::fmt::Display, local: LocalName, conn: u64) -> Self {
        ConnectionValues {
            peer: Fixed::of(peer),
            local: Local::Name(local),
            conn: Fixed::of(conn),
            who: None,
        }
    }

    /// These values with the connection's facts.
    pub fn with_who(mut self, who: Option<Who>) -> Self {
        self.who = who.map(Box::new);
        self
    }

    /// Formats `{age}` for a reply from `template` about to be rendered, if it shows it.
    pub fn stamp_age(&mut self, template: &ReplyTemplate) {
        if let Some(who) = &mut self.who {
            if template.shows_age() {
                who.stamp_age();
            }
        }
    }

    /// A fact's text; empty without facts.
    pub fn fact(&self, fact: Fact) -> &[u8] {
        self.who.as_deref().map_or(b"", |w| w.text(fact))
    }

    /// A fact as JSON ([`Who::json`]); an empty string without facts.
    pub fn fact_json(&self, fact: Fact) -> &[u8] {
        match (&self.who, fact) {
            (Some(who), _) => who.json(fact),
            (None, Fact::Age) => b"0",
            (None, _) => b"\"\"",
        }
    }

    /// The text of a piece that is not the client's line (which is empty here).
    #[inline]
    pub fn text<'a>(&'a self, piece: &'a Piece) -> &'a [u8] {
        match piece {
            Piece::Text(text) => text,
            Piece::Line => b"",
            Piece::Peer => self.peer.as_bytes(),
            Piece::Local => self.local.as_bytes(),
            Piece::Conn => self.conn.as_bytes(),
            Piece::Who(fact) => self.fact(*fact),
            Piece::JsonWho(fact) => self.fact_json(*fact),
            Piece::JsonLine => b"\"\"",
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
    fn unix_values_show_credentials_and_a_path_safe_in_text_and_json() {
        let name = LocalName::new(std::path::Path::new("/run/a \"b\"\\c.sock"));
        assert_eq!(name.as_str(), "/run/a \\\"b\\\"\\\\c.sock");
        let v = ConnectionValues::unix("uid=7,pid=9", name, 3);
        let t = reply("{} {peer} {local} #{conn}");
        assert_eq!(
            render(&t, b"Ann", &v),
            b"Ann uid=7,pid=9 /run/a \\\"b\\\"\\\\c.sock #3"
        );
        let json = ReplyTemplate::json(&machine());
        let mut line = vec![0; json.len_for(json.line_len(b"Ann"), &v)];
        let n = json.render(b"Ann", &v, &mut line);
        let parsed: serde_json::Value = serde_json::from_slice(&line[..n]).unwrap();
        assert_eq!(parsed["local"], "/run/a \"b\"\\c.sock");
        assert_eq!(parsed["peer"], "uid=7,pid=9");
        // Not UTF-8: shown as U+FFFD, never a 0xFF byte telnet would obey.
        use std::os::unix::ffi::OsStrExt;
        let odd = LocalName::new(std::path::Path::new(std::ffi::OsStr::from_bytes(b"/x\xff")));
        assert_eq!(odd.as_str(), "/x\u{fffd}");
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
    fn facts_render_empty_without_who_and_escaped_with_it() {
        let t = reply("[{tls_version}|{tls_cipher}|{sni}|{alpn}|{client_cn}|{proxied_by}]");
        assert!(t.shows_who() && !t.shows_age());
        assert!(!reply("{} {peer}").shows_who());
        assert_eq!(render(&t, b"", &values()), b"[|||||]");
        let facts = Facts {
            tls_version: Some("TLSv1.3"),
            tls_cipher: Some("TLS13_AES_256_GCM_SHA384"),
            sni: Some(b"evil\r\nname\x1b[31m"),
            alpn: Some(b"h2\xff"),
            client_cn: Some("Ann"),
            proxied_by: Some("10.9.9.9:1234".parse().unwrap()),
        };
        let v = values().with_who(Some(Who::new(&facts, std::time::Instant::now())));
        assert_eq!(
            String::from_utf8(render(&t, b"", &v)).unwrap(),
            "[TLSv1.3|TLS13_AES_256_GCM_SHA384|evil\\r\\nname\\u{1b}[31m|h2\\xff|Ann|10.9.9.9:1234]"
        );
    }

    #[test]
    fn age_is_formatted_when_rendered() {
        let t = reply("{age}s");
        assert!(t.shows_age());
        let started = std::time::Instant::now() - std::time::Duration::from_millis(1500);
        let mut v = values().with_who(Some(Who::new(&Facts::default(), started)));
        v.stamp_age(&t);
        let out = String::from_utf8(render(&t, b"", &v)).unwrap();
        let secs: f64 = out.trim_end_matches('s').parse().unwrap();
        assert!((1.5..60.0).contains(&secs), "{out}");
        assert_eq!(
            out.split('.').nth(1).map(str::len),
            Some(4),
            "3 decimals: {out}"
        );
        assert_eq!(render(&t, b"", &values()), b"s");
    }

    #[test]
    fn the_json_reply_holds_every_fact_and_the_line_escaped() {
        let machine = Machine {
            host: "b\"ox".to_string(),
            pid: 42,
        };
        let t = ReplyTemplate::json(&machine);
        assert!(t.is_json() && t.shows_who());
        let facts = Facts {
            tls_version: Some("TLSv1.3"),
            sni: Some(b"x\n"),
            ..Facts::default()
        };
        let line = b"A\"n\\n\n\xff";
        for v in [
            values(),
            values().with_who(Some(Who::new(&facts, std::time::Instant::now()))),
        ] {
            let mut out = vec![0u8; t.len_for(t.line_len(line), &v)];
            assert_eq!(t.render(line, &v, &mut out), out.len(), "len_for is exact");
            assert!(out.len() <= t.max_len_for(line.len()));
            let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(json["name"], "A\"n\\n\n\u{fffd}");
            assert_eq!(json["peer"], "10.0.0.7:40000");
            assert_eq!(json["local"], "[fe80::1%3]:9999");
            assert_eq!(json["host"], "b\"ox");
            assert_eq!(json["pid"], 42);
            assert_eq!(json["conn"], 7);
            assert!(json["age"].is_number());
            for fact in Fact::ALL {
                assert!(json.get(fact.name()).is_some(), "{}", fact.name());
            }
        }
        let v = values().with_who(Some(Who::new(&facts, std::time::Instant::now())));
        let mut out = vec![0u8; t.len_for(t.line_len(b"x"), &v)];
        t.render(b"x", &v, &mut out);
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["tls_version"], "TLSv1.3");
        assert_eq!(json["sni"], "x\\n", "escaped as in {{sni}}");
        assert_eq!(json["client_cn"], "");
    }

    #[test]
    fn the_bench_s_expect_refuses_facts() {
        assert!(matches!(
            parse("{} {sni}", TemplateField::Expect),
            Err(TemplateError::Unknown { .. })
        ));
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
        for v in [values(), widest.clone(), narrow.clone()] {
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
