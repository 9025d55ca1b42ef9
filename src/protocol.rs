//! The greeting protocol's decisions, without sockets: how lines are found in a byte
//! stream, which lines get which reply, and how telnet commands are removed.
//!
//! Everything here is pure and works on byte slices; [`crate::connection`] does the I/O.

use memchr::{memchr, memchr2};

/// What the server does with the bytes it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// Welcome, one reply per name, `exit` or `quit` ends the session.
    #[default]
    Greet,
    /// RFC 862 echo: every byte back unchanged, no welcome, until the client closes.
    Echo,
}

/// How messages are delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Framing {
    /// One message per line (LF, CRLF or telnet's CR NUL); lines sent end with CRLF.
    #[default]
    Line,
    /// One message per read from the socket; nothing sent carries a line ending
    /// (the classic Python tutorial's behaviour).
    Chunk,
}

/// The most bytes of one message in chunk framing: one `recv(1024)`, as in the tutorial.
pub const CHUNK_MAX: usize = 1024;

/// The largest `--max-line` the server accepts: no line longer than this is ever answered.
pub const MAX_LINE_LIMIT: usize = 16 * 1024 * 1024;

/// The longest line (or chunk) still read as an exit word when `--max-line` is shorter,
/// so that `exit` and `quit`, with blanks around them, always end a session.
pub const EXIT_LINE_MAX: usize = 64;

/// Telnet's "interpret as command" byte; a data byte of this value is sent doubled.
pub const IAC: u8 = 255;

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

impl Machine {
    /// This machine's host name and this process's id. The host name is the kernel's
    /// (`/proc/sys/kernel/hostname`), else `/etc/hostname`'s, else `localhost`: std has
    /// no `gethostname`, and this needs no `unsafe` and no crate. A name that is empty
    /// or holds a control character is passed over, so that it can never break a line.
    pub fn current() -> Self {
        let read = |path: &str| {
            let text = std::fs::read_to_string(path).ok()?;
            let name = text.trim();
            (!name.is_empty() && !name.chars().any(char::is_control)).then(|| name.to_string())
        };
        let host = read("/proc/sys/kernel/hostname")
            .or_else(|| read("/etc/hostname"))
            .unwrap_or_else(|| "localhost".to_string());
        Machine {
            host,
            pid: std::process::id(),
        }
    }
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

    fn from_pieces(pieces: Vec<Piece>) -> Self {
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
    /// [`telnet_len`]) on a connection with `values`, without the line ending.
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
    /// must have room for [`ReplyTemplate::len_for`]`(`[`telnet_len`]`(line), values)`
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

/// The length of `data` once every 0xFF in it is doubled.
pub fn telnet_len(data: &[u8]) -> usize {
    data.len() + memchr::memchr_iter(IAC, data).count()
}

/// Copies `data` to the start of `out` with every 0xFF doubled (`IAC IAC`, RFC 854), so
/// that a telnet client shows the byte instead of reading a command from it (`IAC WILL
/// ECHO` would make it stop echoing what its user types). `out` must have room for
/// [`telnet_len`]`(data)` bytes; returns the bytes written.
pub fn telnet_escape(data: &[u8], out: &mut [u8]) -> usize {
    let mut at = 0;
    let mut rest = data;
    while let Some(i) = memchr(IAC, rest) {
        out[at..at + i].copy_from_slice(&rest[..i]);
        out[at + i..at + i + 2].copy_from_slice(&[IAC, IAC]);
        at += i + 2;
        rest = &rest[i + 1..];
    }
    out[at..at + rest.len()].copy_from_slice(rest);
    at + rest.len()
}

/// The server's fixed protocol settings, shared by every connection.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Greet or echo.
    pub mode: Mode,
    /// Line or chunk framing.
    pub framing: Framing,
    /// Sent on connect (greet mode).
    pub welcome: ReplyTemplate,
    /// The reply to each name.
    pub reply: ReplyTemplate,
    /// Sent before closing on `exit`; empty sends nothing.
    pub farewell: ReplyTemplate,
    /// Longest line accepted, in bytes, without its ending.
    pub max_line: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: Mode::Greet,
            framing: Framing::Line,
            welcome: ReplyTemplate::literal("Welcome!"),
            reply: ReplyTemplate::from_pieces(vec![
                Piece::Text(b"Hello, ".to_vec()),
                Piece::Line,
                Piece::Text(b"!".to_vec()),
            ]),
            farewell: ReplyTemplate::literal("Bye!"),
            max_line: 8192,
        }
    }
}

impl Settings {
    /// Whether a reply can show the address the client reached (`{local}`); echo mode
    /// sends no template.
    pub fn shows_local(&self) -> bool {
        self.mode == Mode::Greet
            && [&self.welcome, &self.reply, &self.farewell]
                .iter()
                .any(|t| t.shows_local())
    }

    /// Refuses what cannot be sent as configured: in chunk framing nothing carries a
    /// line ending, so an empty welcome or reply would be no message at all, and a
    /// client (the tutorial's, the bundled one) would wait for it forever. In line
    /// framing an empty welcome or reply is an empty line.
    pub fn check(&self) -> Result<(), String> {
        if self.framing != Framing::Chunk {
            return Ok(());
        }
        // A template with `{}` is never empty: names are not blank.
        let what = if self.welcome.is_empty() {
            "--welcome"
        } else if self.reply.is_empty() {
            "--reply"
        } else {
            return Ok(());
        };
        Err(format!(
            "an empty {what} cannot be sent with --framing chunk, which has no line ending to \
             make an empty line: clients would wait for it forever; give it some text, or use \
             --framing line"
        ))
    }

    /// The line ending of everything the server sends: CRLF in line framing, none in chunk framing.
    pub fn eol(&self) -> &'static [u8] {
        match self.framing {
            Framing::Line => b"\r\n",
            Framing::Chunk => b"",
        }
    }

    /// The most bytes one message can hold under these settings.
    pub fn max_message(&self) -> usize {
        match self.framing {
            Framing::Line => self.max_line,
            Framing::Chunk => self.max_line.min(CHUNK_MAX),
        }
    }

    /// The most bytes of one line or chunk held before it is judged: a message, or an
    /// exit word with its blanks when `--max-line` is shorter ([`EXIT_LINE_MAX`]).
    pub fn max_held(&self) -> usize {
        self.max_message().max(EXIT_LINE_MAX)
    }

    /// The longest thing the server sends in answer to one message, ending included,
    /// when the message holds no 0xFF byte (each is sent doubled, and the connection
    /// sends a reply longer than its buffer in pieces).
    pub fn max_answer(&self) -> usize {
        let notice = Notice::LineTooLong.render(self).len();
        self.reply
            .max_len_for(self.max_message())
            .max(self.farewell.max_len_for(0))
            .max(notice)
            + self.eol().len()
    }

    /// The text sent for a notice, with its line ending.
    pub fn notice(&self, notice: Notice) -> Vec<u8> {
        let mut text = notice.render(self).into_bytes();
        text.extend_from_slice(self.eol());
        text
    }
}

/// Lines the server sends on its own account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// A line was longer than `--max-line` and was skipped.
    LineTooLong,
    /// The client sent nothing for the idle timeout.
    Idle {
        /// The idle timeout, in seconds.
        secs: u64,
    },
    /// The server is stopping.
    ShuttingDown,
    /// The connection limit is reached, or no thread could be started.
    Busy {
        /// Connections the server holds: the limit, or fewer when it could not start
        /// another thread.
        connections: usize,
    },
    /// The client's address has as many connections as one address may have.
    BusySource {
        /// The per-address limit.
        limit: usize,
    },
}

impl Notice {
    fn render(self, settings: &Settings) -> String {
        match self {
            Notice::LineTooLong => format!(
                "ERROR line too long (max {} bytes), skipped",
                settings.max_line
            ),
            Notice::Idle { secs } => format!("ERROR idle for {secs} s, closing"),
            Notice::ShuttingDown => "server shutting down".to_string(),
            Notice::Busy { connections } => {
                format!("ERROR server busy ({connections} connections), try again later")
            }
            Notice::BusySource { limit } => {
                format!("ERROR too many connections from your address ({limit}), try again later")
            }
        }
    }
}

/// What a received message asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Empty or only whitespace: no reply.
    Blank,
    /// `exit` or `quit` (any case, surrounding spaces and tabs ignored): farewell, then close.
    Exit,
    /// Anything else: one reply built from the message, verbatim.
    Name,
}

/// Decides what a message (a line without its ending, or one chunk) asks for. Only
/// spaces and tabs count as blank, as the README specifies: a form feed or a stray CR
/// is data, and gets a reply.
pub fn classify(message: &[u8]) -> Request {
    let trimmed = trim_blanks(message);
    if trimmed.is_empty() {
        Request::Blank
    } else if trimmed.eq_ignore_ascii_case(b"exit") || trimmed.eq_ignore_ascii_case(b"quit") {
        Request::Exit
    } else {
        Request::Name
    }
}

/// `message` without leading and trailing spaces and tabs.
fn trim_blanks(message: &[u8]) -> &[u8] {
    let is_blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = message
        .iter()
        .position(|b| !is_blank(b))
        .unwrap_or(message.len());
    let end = message
        .iter()
        .rposition(|b| !is_blank(b))
        .map_or(start, |i| i + 1);
    &message[start..end]
}

/// Whether the first bytes a client sent begin a TLS handshake (a handshake record of
/// TLS 1.0 to 1.3: 0x16 0x03 0x01..=0x04): no name, typed or piped, starts that way.
pub fn looks_like_tls(first: &[u8]) -> bool {
    matches!(first, [0x16, 0x03, 0x00..=0x04, ..])
}

/// Strips the trailing line ending (any run of CR and LF) from a chunk-framed message.
pub fn chunk_message(chunk: &[u8]) -> &[u8] {
    let end = chunk
        .iter()
        .rposition(|&b| b != b'\n' && b != b'\r')
        .map_or(0, |i| i + 1);
    &chunk[..end]
}

/// Where the next line ends in `buf[scan..]`, for lines starting at `buf[start]`.
///
/// A line ends at LF or at telnet's CR NUL; a CR just before either is part of the
/// ending. Returns `(content_end, next_start)`: the line is `buf[start..content_end]`
/// and the next one starts at `next_start`.
pub fn find_line_end(buf: &[u8], start: usize, scan: usize) -> Option<(usize, usize)> {
    let mut from = scan.max(start);
    while let Some(i) = memchr2(b'\n', 0, &buf[from..]) {
        let pos = from + i;
        let cr_before = pos > start && buf[pos - 1] == b'\r';
        if buf[pos] == b'\n' {
            return Some((if cr_before { pos - 1 } else { pos }, pos + 1));
        }
        if cr_before {
            return Some((pos - 1, pos + 1));
        }
        // A NUL on its own is data.
        from = pos + 1;
    }
    None
}

/// The length of a partial line's content: a trailing CR may yet be part of a CRLF.
pub fn partial_len(partial: &[u8]) -> usize {
    match partial.last() {
        Some(b'\r') => partial.len() - 1,
        _ => partial.len(),
    }
}

const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const SB: u8 = 250;
const SE: u8 = 240;

/// Where a [`TelnetFilter`] is within a telnet command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum TelnetState {
    #[default]
    Data,
    /// After IAC.
    Command,
    /// After IAC and one of WILL, WONT, DO, DONT (the byte kept), awaiting the option.
    Option(u8),
    /// Inside a subnegotiation (IAC SB ... IAC SE), whose bytes are dropped.
    Sub,
    /// After IAC inside a subnegotiation.
    SubCommand,
}

/// Removes telnet command sequences (RFC 854) from a byte stream, across reads, and
/// refuses every option the client offers or asks for, so that a telnet client's
/// Ctrl-C (IAC IP, IAC DO TIMING-MARK) neither reaches the protocol nor leaves the
/// client waiting for an answer. `IAC IAC` is a literal 0xFF byte.
#[derive(Debug, Clone, Default)]
pub struct TelnetFilter {
    state: TelnetState,
}

impl TelnetFilter {
    /// Filters `data` in place and returns the length of the data left at its start.
    /// Refusals to send back to the client are appended to `answers`, three bytes each.
    pub fn filter(&mut self, data: &mut [u8], answers: &mut Vec<u8>) -> usize {
        if self.state == TelnetState::Data && memchr(IAC, data).is_none() {
            return data.len();
        }
        let mut kept = 0;
        for i in 0..data.len() {
            let byte = data[i];
            self.state = match (self.state, byte) {
                (TelnetState::Data, IAC) => TelnetState::Command,
                (TelnetState::Data, _) => {
                    data[kept] = byte;
                    kept += 1;
                    TelnetState::Data
                }
                (TelnetState::Command, IAC) => {
                    data[kept] = IAC;
                    kept += 1;
                    TelnetState::Data
                }
                (TelnetState::Command, WILL..=DONT) => TelnetState::Option(byte),
                (TelnetState::Command, SB) => TelnetState::Sub,
                (TelnetState::Command, _) => TelnetState::Data,
                (TelnetState::Option(verb), option) => {
                    // Refuse what is offered or asked; never answer a refusal (RFC 1143).
                    match verb {
                        WILL => answers.extend_from_slice(&[IAC, DONT, option]),
                        DO => answers.extend_from_slice(&[IAC, WONT, option]),
                        _ => {}
                    }
                    TelnetState::Data
                }
                (TelnetState::Sub, IAC) => TelnetState::SubCommand,
                (TelnetState::Sub, _) => TelnetState::Sub,
                (TelnetState::SubCommand, SE) => TelnetState::Data,
                (TelnetState::SubCommand, _) => TelnetState::Sub,
            };
        }
        kept
    }
}

/// Escapes client bytes for a log line: printable text stays, control characters,
/// escapes and invalid UTF-8 are written as `\n`, `\u{1b}`, `\xff`, so a client
/// cannot forge or corrupt log lines. So are the characters a viewer does not show as
/// themselves (see [`is_invisible`]).
pub struct LogText<'a>(pub &'a [u8]);

impl std::fmt::Display for LogText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c == '\\' || is_invisible(c) {
                    write!(f, "{}", c.escape_default())?;
                } else {
                    f.write_char(c)?;
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

/// Characters that break a line, reorder or hide text, or show as nothing in a viewer:
/// controls (Cc), every format character (Cf: bidirectional controls, zero-width
/// characters, the soft hyphen, the tag block, ...), line and paragraph separators,
/// code points Unicode has not assigned (a later version may make them any of these),
/// and the default-ignorable characters of other categories (variation selectors, the
/// combining grapheme joiner, Hangul fillers, Mongolian free variation selectors).
pub fn is_invisible(c: char) -> bool {
    use unicode_properties::{GeneralCategory as G, UnicodeGeneralCategory};
    matches!(
        c.general_category(),
        G::Control | G::Format | G::LineSeparator | G::ParagraphSeparator | G::Unassigned
    ) || matches!(
        c,
        '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FFA0}'
            | '\u{E0100}'..='\u{E01EF}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            host: "box".to_string(),
            pid: 42,
        }
    }

    fn parse(text: &str, field: TemplateField) -> Result<ReplyTemplate, TemplateError> {
        ReplyTemplate::parse(text, field, &machine())
    }

    fn reply(text: &str) -> ReplyTemplate {
        parse(text, TemplateField::Reply).unwrap()
    }

    #[test]
    fn the_local_address_is_wanted_only_where_a_template_shows_it() {
        let mut settings = Settings::default();
        assert!(!settings.shows_local());
        settings.farewell = parse("Bye from {local}", TemplateField::Farewell).unwrap();
        assert!(settings.shows_local());
        settings.mode = Mode::Echo;
        assert!(!settings.shows_local(), "echo mode sends no template");
        let settings = Settings {
            welcome: parse("on {local}", TemplateField::Welcome).unwrap(),
            ..Settings::default()
        };
        assert!(settings.shows_local());
        assert!(!reply("{peer} {conn} {{local}}").shows_local());
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

    #[test]
    fn the_host_name_is_one_line_of_text() {
        let m = Machine::current();
        assert!(!m.host.is_empty());
        assert!(!m.host.chars().any(char::is_control), "{:?}", m.host);
        assert_eq!(m.pid, std::process::id());
    }

    #[test]
    fn the_default_settings_are_the_parsed_defaults() {
        let s = Settings::default();
        let m = machine();
        assert_eq!(s.reply, reply("Hello, {}!"));
        assert_eq!(
            s.welcome,
            ReplyTemplate::parse("Welcome!", TemplateField::Welcome, &m).unwrap()
        );
        assert_eq!(
            s.farewell,
            ReplyTemplate::parse("Bye!", TemplateField::Farewell, &m).unwrap()
        );
        assert_eq!(ReplyTemplate::literal(""), reply(""));
        assert!(reply("").is_empty());
    }

    #[test]
    fn tls_client_hellos_are_recognised() {
        assert!(looks_like_tls(b"\x16\x03\x01\x02\x00"));
        assert!(looks_like_tls(b"\x16\x03\x03"));
        assert!(!looks_like_tls(b"\x16\x03"));
        assert!(!looks_like_tls(b"Alice\n"));
        assert!(!looks_like_tls(b"\x16\x04\x01"));
    }

    #[test]
    fn classify_exit_variants_and_blanks() {
        for exit in [&b"exit"[..], b"EXIT", b"  Quit \t", b"quit", b"eXiT "] {
            assert_eq!(
                classify(exit),
                Request::Exit,
                "{:?}",
                LogText(exit).to_string()
            );
        }
        for blank in [&b""[..], b"   ", b"\t"] {
            assert_eq!(classify(blank), Request::Blank);
        }
        for name in [
            &b"exits"[..],
            b"ex it",
            b"Alice",
            b"\xff\xfe",
            b"\0",
            b"\x0c",
            b"\x0b",
            b"exit\r",
            b"\x0cexit",
        ] {
            assert_eq!(classify(name), Request::Name);
        }
    }

    #[test]
    fn line_endings_lf_crlf_and_cr_nul() {
        assert_eq!(find_line_end(b"abc\n", 0, 0), Some((3, 4)));
        assert_eq!(find_line_end(b"abc\r\n", 0, 0), Some((3, 5)));
        assert_eq!(find_line_end(b"abc\r\0x", 0, 0), Some((3, 5)));
        // A NUL without CR is data; a lone CR is data.
        assert_eq!(find_line_end(b"a\0b\n", 0, 0), Some((3, 4)));
        assert_eq!(find_line_end(b"a\rb\n", 0, 0), Some((3, 4)));
        assert_eq!(find_line_end(b"abc", 0, 0), None);
        assert_eq!(find_line_end(b"abc\r", 0, 0), None);
        // Scanning resumes mid-line and still sees a CR from an earlier read.
        assert_eq!(find_line_end(b"xxab\r\n", 2, 5), Some((4, 6)));
        assert_eq!(find_line_end(b"ab\r\0", 0, 3), Some((2, 4)));
        // The CR before the line's start belongs to the previous line.
        assert_eq!(find_line_end(b"\r\0", 1, 1), None);
    }

    #[test]
    fn partial_len_ignores_a_trailing_cr() {
        assert_eq!(partial_len(b"abc\r"), 3);
        assert_eq!(partial_len(b"abc"), 3);
        assert_eq!(partial_len(b""), 0);
    }

    #[test]
    fn chunk_message_strips_line_endings() {
        assert_eq!(chunk_message(b"Michael"), b"Michael");
        assert_eq!(chunk_message(b"Michael\r\n"), b"Michael");
        assert_eq!(chunk_message(b"\n\n"), b"");
        assert_eq!(chunk_message(b"a\nb\n"), b"a\nb");
    }

    fn telnet(chunks: &[&[u8]]) -> (Vec<u8>, Vec<u8>) {
        let mut f = TelnetFilter::default();
        let (mut data, mut answers) = (Vec::new(), Vec::new());
        for chunk in chunks {
            let mut c = chunk.to_vec();
            let n = f.filter(&mut c, &mut answers);
            data.extend_from_slice(&c[..n]);
        }
        (data, answers)
    }

    #[test]
    fn telnet_ctrl_c_is_removed_and_timing_mark_refused() {
        // What BSD telnet sends for Ctrl-C: IAC IP, IAC DO TIMING-MARK.
        let (data, answers) = telnet(&[b"Bob\xff\xf4\xff\xfd\x06\r\n"]);
        assert_eq!(data, b"Bob\r\n");
        assert_eq!(answers, [IAC, WONT, 6]);
    }

    #[test]
    fn telnet_sequences_split_across_reads() {
        let (data, answers) = telnet(&[b"a\xff", b"\xfb", b"\x01b\xff", b"\xff", b"c"]);
        assert_eq!(data, b"ab\xffc");
        assert_eq!(answers, [IAC, DONT, 1]);
        // Subnegotiation is dropped whole, including an escaped IAC inside it.
        let (data, answers) = telnet(&[b"x\xff\xfa\x18\x01\xff\xff", b"zz\xff\xf0y"]);
        assert_eq!(data, b"xy");
        assert!(answers.is_empty());
        // Refusals are never answered.
        let (data, answers) = telnet(&[b"\xff\xfc\x01\xff\xfe\x01q"]);
        assert_eq!(data, b"q");
        assert!(answers.is_empty());
    }

    #[test]
    fn log_text_escapes_controls_and_invalid_bytes() {
        let s = LogText(b"evil\n2026 INFO forged\x1b[31m\xff").to_string();
        assert_eq!(s, "evil\\n2026 INFO forged\\u{1b}[31m\\xff");
        assert_eq!(LogText("张三".as_bytes()).to_string(), "张三");
        assert!(!s.contains('\n'));
        let s = LogText("a\u{2028}b\u{202E}c\u{200B}d\u{2066}e\u{FEFF}".as_bytes()).to_string();
        assert_eq!(s, "a\\u{2028}b\\u{202e}c\\u{200b}d\\u{2066}e\\u{feff}");
    }

    #[test]
    fn log_text_escapes_every_invisible_character() {
        // Each found logged raw by an audit: a bidi control, the soft hyphen, the
        // Mongolian vowel separator, interlinear annotation, the tag block.
        for c in [
            '\u{061C}',
            '\u{00AD}',
            '\u{180E}',
            '\u{FFF9}',
            '\u{FFFA}',
            '\u{FFFB}',
            '\u{E0000}',
            '\u{E0001}',
            '\u{E0041}',
            '\u{E007F}',
            '\u{FE0F}',
            '\u{3164}',
            '\u{034F}',
        ] {
            let s = LogText(c.to_string().as_bytes()).to_string();
            assert_eq!(s, c.escape_default().to_string(), "U+{:04X}", c as u32);
        }
        // Every format character (Cf), whatever the Unicode version.
        use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
        let format = (0..=0x10FFFF_u32)
            .filter_map(char::from_u32)
            .filter(|c| c.general_category() == GeneralCategory::Format);
        for c in format {
            assert!(is_invisible(c), "U+{:04X}", c as u32);
        }
        // Visible text, spaces and emoji stay as they are.
        for text in ["张三", "café", "a b", "e\u{301}", "🦀", "\u{00A0}"] {
            assert_eq!(LogText(text.as_bytes()).to_string(), text);
        }
    }

    #[test]
    fn an_empty_welcome_or_reply_is_refused_in_chunk_framing_only() {
        let chunk = |welcome: &str, reply: &str| {
            Settings {
                framing: Framing::Chunk,
                welcome: parse(welcome, TemplateField::Welcome).unwrap(),
                reply: parse(reply, TemplateField::Reply).unwrap(),
                ..Settings::default()
            }
            .check()
        };
        assert!(chunk("", "Hello, {}!").unwrap_err().contains("--welcome"));
        assert!(chunk("hi", "").unwrap_err().contains("--reply"));
        assert_eq!(chunk("hi", "{}"), Ok(()));
        assert_eq!(chunk("hi", "x"), Ok(()));
        assert_eq!(chunk("{conn}", "{peer}"), Ok(()));
        let line = Settings {
            welcome: ReplyTemplate::literal(""),
            reply: reply(""),
            ..Settings::default()
        };
        assert_eq!(line.check(), Ok(()));
    }

    #[test]
    fn notices_and_limits() {
        let s = Settings::default();
        assert_eq!(s.notice(Notice::ShuttingDown), b"server shutting down\r\n");
        assert_eq!(
            s.notice(Notice::Busy { connections: 3 }),
            b"ERROR server busy (3 connections), try again later\r\n"
        );
        assert_eq!(s.max_answer(), "Hello, !".len() + 8192 + 2);
        let chunk = Settings {
            framing: Framing::Chunk,
            ..Settings::default()
        };
        assert_eq!(chunk.notice(Notice::ShuttingDown), b"server shutting down");
        assert_eq!(chunk.max_message(), CHUNK_MAX);
    }
}
