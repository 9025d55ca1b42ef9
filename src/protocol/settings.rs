//! The server's protocol settings: mode, framing, templates and line limit, what they
//! allow, and the limits and line endings that follow from them.

use super::framing::CHUNK_MAX;
use super::notice::Notice;
use super::request::EXIT_LINE_MAX;
use super::template::{Piece, ReplyTemplate};

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

/// How replies to names are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReplyFormat {
    /// The `--reply` template.
    #[default]
    Text,
    /// One line of JSON with the name and every fact of the connection, for scripts.
    Json,
}

/// The largest `--max-line` the server accepts: no line longer than this is ever answered.
pub const MAX_LINE_LIMIT: usize = 16 * 1024 * 1024;

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

    /// Whether a template shows `{peer}`, `{local}` or `{conn}`; echo mode sends no
    /// template.
    pub fn shows_values(&self) -> bool {
        self.mode == Mode::Greet
            && [&self.welcome, &self.reply, &self.farewell]
                .iter()
                .any(|t| t.shows_values())
    }

    /// Whether a template shows a connection's facts
    /// ([`Fact`](super::template::Fact)); echo mode sends no template.
    pub fn shows_who(&self) -> bool {
        self.mode == Mode::Greet
            && [&self.welcome, &self.reply, &self.farewell]
                .iter()
                .any(|t| t.shows_who())
    }

    /// Refuses what cannot be sent as configured: in chunk framing nothing carries a
    /// line ending, so an empty welcome or reply would be no message at all, and a
    /// client (the tutorial's, the bundled one) would wait for it forever. In line
    /// framing an empty welcome or reply is an empty line.
    pub fn check(&self) -> Result<(), String> {
        if self.mode == Mode::Echo && self.reply.is_json() {
            return Err(
                "--reply-format json writes replies to names, and --mode echo sends \
                        none (it echoes bytes): use one or the other"
                    .to_string(),
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TemplateField;
    use crate::protocol::template::tests::{machine, parse, reply};

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
        assert_eq!(
            s.notice(Notice::Reconnect),
            b"server closing this connection, reconnect\r\n"
        );
        assert_eq!(
            chunk.notice(Notice::Reconnect),
            b"server closing this connection, reconnect"
        );
        assert_eq!(chunk.max_message(), CHUNK_MAX);
    }
}
