//! The greeting protocol's decisions, without sockets: how lines are found in a byte
//! stream, which lines get which reply, and how telnet commands are removed.
//!
//! Everything here is pure and works on byte slices; [`crate::connection`] does the I/O.
//! One job per file: `settings` (what the server is configured to do), `template`
//! (replies and their placeholders), `request` (what a message asks for), `framing`
//! (where messages end), `notice` (the server's own lines), `telnet` (commands and
//! 0xFF escaping), `sniff` (TLS on a plain port), `log_text` (client bytes in logs).

mod framing;
mod json;
mod log_text;
mod notice;
mod request;
mod settings;
mod sniff;
mod telnet;
mod template;

pub use framing::{CHUNK_MAX, chunk_message, find_line_end, partial_len};
pub use json::{json_escape, json_len};
pub use log_text::{LogText, is_invisible};
pub use notice::Notice;
pub use request::{EXIT_LINE_MAX, Request, classify};
pub use settings::{Framing, MAX_LINE_LIMIT, Mode, ReplyFormat, Settings};
pub use sniff::looks_like_tls;
pub use telnet::{IAC, TelnetFilter, telnet_escape, telnet_len};
pub use template::{
    ADDR_TEXT_MAX, CONN_TEXT_MAX, ConnectionValues, Fact, Facts, LocalName, Machine, Piece,
    ReplyTemplate, TemplateError, TemplateField, Who,
};
