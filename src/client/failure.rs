//! Why a session failed: each failure's exit code and its message with cause and fix.

use std::io::{self, ErrorKind};
use std::time::Duration;

use super::connect::{Attempt, connect_message, unix_connect_message};
use super::tally::PER_SOURCE_BUSY;
use super::tls_failure::TlsFailure;
use super::{EXIT_BUSY, EXIT_CONNECT, EXIT_LOCAL_IO, EXIT_PROTOCOL, EXIT_TIMEOUT, EXIT_USAGE};
use crate::protocol::CHUNK_MAX;

/// Why a session failed; each maps to an exit code and a message with cause and fix.
#[derive(Debug)]
pub(super) enum Failure {
    Usage(String),
    Resolve {
        target: String,
        error: String,
    },
    Connect {
        target: String,
        attempts: Vec<Attempt>,
        timeout: Option<Duration>,
    },
    /// A Unix socket did not accept the connection.
    UnixConnect {
        path: std::path::PathBuf,
        error: io::Error,
    },
    /// Nothing arrived for the reply timeout while something was due.
    Timeout {
        secs: f64,
        waiting: Waiting,
        /// What the server sent that tells why.
        hint: Hint,
    },
    Busy(String),
    Closed(Closed),
    Refused {
        count: u64,
        first: String,
    },
    /// Lines that were not text (control bytes): the protocol has none.
    Garbled {
        lines: u64,
        /// Replies before the first.
        after: u64,
    },
    /// A name longer than one chunk-framed message can carry.
    NameTooLong(usize),
    Stdin(io::Error),
    Stdout(io::Error),
    /// The connection failed while reading, other than by a reset (which is `Closed`).
    Socket(io::Error),
    /// TLS failed: the handshake, the server's certificate, or an alert from the server.
    Tls(TlsFailure),
}

/// What the server sent that tells why it stopped answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hint {
    /// Nothing telling: a slow server, or one that does not speak this protocol.
    None,
    /// Line framing: this many bytes arrived of a line that never ended, so the server
    /// ends nothing with a newline.
    Unended(usize),
    /// Chunk framing: the server's welcome ended with a line ending, so it frames lines
    /// and is waiting for a line ending that chunk framing never sends.
    EndsLines,
}

/// What the client was waiting for when the reply timeout passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Waiting {
    Welcome,
    Replies(u64),
    Close,
}

/// How the server ended a session too early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Closed {
    pub(super) what: ClosedWhen,
    /// The last notice the server sent before closing.
    pub(super) notice: Option<String>,
    /// Reset rather than closed.
    pub(super) reset: bool,
    /// Replies received whole before it ended.
    pub(super) replies: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClosedWhen {
    BeforeWelcome,
    /// Before ending a single line: the server's framing is not lines.
    Unframed,
    Unanswered(u64),
    /// In the middle of a reply: its line never ended.
    MidReply,
    InputOpen,
    Idle,
    /// Chunk framing: closed as idle while this was due, by a server whose welcome ended
    /// with a line ending: it was waiting for a line ending chunk framing never sends.
    IdleEndsLines(Waiting),
}

impl Failure {
    /// The process exit code.
    pub(super) fn code(&self) -> u8 {
        match self {
            Failure::Usage(_) | Failure::NameTooLong(_) => EXIT_USAGE,
            Failure::Resolve { .. } | Failure::Connect { .. } | Failure::UnixConnect { .. } => {
                EXIT_CONNECT
            }
            Failure::Timeout { .. } => EXIT_TIMEOUT,
            Failure::Closed(c)
                if matches!(c.what, ClosedWhen::Idle | ClosedWhen::IdleEndsLines(_)) =>
            {
                EXIT_TIMEOUT
            }
            Failure::Busy(_) => EXIT_BUSY,
            Failure::Closed(_)
            | Failure::Refused { .. }
            | Failure::Garbled { .. }
            | Failure::Socket(_) => EXIT_PROTOCOL,
            Failure::Stdin(_) | Failure::Stdout(_) => EXIT_LOCAL_IO,
            Failure::Tls(tls) => tls.code(),
        }
    }

    /// The line printed on stderr; `None` when silence is right (stdout closed by a reader
    /// that has seen enough, as `| head` does).
    pub(super) fn message(&self) -> Option<String> {
        Some(match self {
            Failure::Usage(m) => m.clone(),
            Failure::Resolve { target, error } => format!(
                "cannot resolve {target}: {error}; check the host name, or use an IP address"
            ),
            Failure::Connect {
                target,
                attempts,
                timeout,
            } => connect_message(target, attempts, *timeout),
            Failure::UnixConnect { path, error } => unix_connect_message(path, error),
            Failure::Timeout {
                secs,
                waiting,
                hint,
            } => {
                let what = match waiting {
                    Waiting::Welcome => "waiting for its welcome".to_string(),
                    Waiting::Replies(1) => "1 name unanswered".to_string(),
                    Waiting::Replies(n) => format!("{n} names unanswered"),
                    Waiting::Close => "waiting for it to close the connection".to_string(),
                };
                let hint = match hint {
                    Hint::Unended(partial) => format!(
                        "; it sent {partial} bytes with no line ending: for a server that ends \
                         nothing with a newline (like the Python tutorial's), use --framing chunk"
                    ),
                    Hint::EndsLines => format!(": {ENDS_LINES}"),
                    Hint::None => "; is it a tcp-hello server, and is it overloaded? \
                                   Raise --reply-timeout to wait longer"
                        .to_string(),
                };
                format!("timed out: nothing from the server for {secs} s ({what}){hint}")
            }
            Failure::Busy(line) if line.as_bytes().starts_with(PER_SOURCE_BUSY) => format!(
                "server busy ({line}): close some of this address's connections, try again \
                 later, or raise the server's --max-per-source"
            ),
            Failure::Busy(line) => format!(
                "server busy ({line}): try again later, or raise the server's --max-connections"
            ),
            Failure::Closed(closed) => closed_message(closed),
            Failure::Refused { count, first } => {
                let names = if *count == 1 { "name" } else { "names" };
                let fix = if first.starts_with("ERROR line too long") {
                    "shorten them, or raise the server's --max-line"
                } else {
                    "see the server's log"
                };
                format!("the server refused {count} {names} ({first}): {fix}")
            }
            Failure::Garbled { lines, after } => format!(
                "the server sent {lines} {} with control bytes, not text (the first after \
                 {after} {}): shown escaped; no tcp-hello reply holds them, unless it is \
                 faulty on purpose (--fault garbage)",
                crate::plural::noun(*lines, "line", "lines"),
                crate::plural::noun(*after, "reply", "replies"),
            ),
            Failure::NameTooLong(len) => format!(
                "a name of {len} bytes does not fit in one chunk-framed message (at most \
                 {CHUNK_MAX} bytes): shorten it, or use line framing"
            ),
            Failure::Stdin(e) => format!("cannot read stdin: {e}"),
            Failure::Stdout(e) if e.kind() == ErrorKind::BrokenPipe => return None,
            Failure::Stdout(e) => format!("cannot write to stdout: {e}"),
            Failure::Socket(e) => {
                format!("connection to the server failed: {e}; check the network and try again")
            }
            Failure::Tls(tls) => tls.message(),
        })
    }
}

/// Why `--framing chunk` stalls against a line server, and the fix.
const ENDS_LINES: &str = "the server ends its lines (its welcome ended with a line ending), \
     so it frames lines and waits for a line ending, which --framing chunk never sends: \
     drop --framing chunk";

fn closed_message(closed: &Closed) -> String {
    let how = if closed.reset { "reset" } else { "closed" };
    // How it ended, and when, said plainly: what a client under test has to tell apart.
    let ended = if closed.reset {
        "connection reset by the server"
    } else {
        "the server closed the connection"
    };
    let after = format!(
        "after {} {}",
        closed.replies,
        crate::plural::noun(closed.replies, "reply", "replies")
    );
    let said = closed
        .notice
        .as_ref()
        .map_or(String::new(), |n| format!(" (it said: {n})"));
    match closed.what {
        ClosedWhen::BeforeWelcome => {
            format!("{ended} before its welcome: is it a tcp-hello server? Check --connect")
        }
        ClosedWhen::Unframed => format!(
            "the server {how} the connection without ever ending a line: for a server that \
             ends nothing with a newline (like the Python tutorial's, or `tcp-hello serve \
             --framing chunk`), use --framing chunk"
        ),
        ClosedWhen::Unanswered(n) => {
            let names = if n == 1 { "name" } else { "names" };
            format!(
                "{ended} {after}, with {n} {names} unanswered{said}: \
                 see the server's log, and send them again"
            )
        }
        ClosedWhen::MidReply => format!(
            "{ended} in the middle of a reply {after}{said}: see the server's log, and \
             send the unanswered names again"
        ),
        ClosedWhen::InputOpen => format!(
            "{ended} {after}, before the input ended{said}: \
             see the server's log, and send the rest again"
        ),
        ClosedWhen::Idle => format!(
            "the server closed the connection because this client sent nothing for too long\
             {said}: send names sooner, or raise the server's --idle-timeout"
        ),
        ClosedWhen::IdleEndsLines(waiting) => {
            let what = match waiting {
                Waiting::Replies(1) => "with 1 name unanswered".to_string(),
                Waiting::Replies(n) => format!("with {n} names unanswered"),
                Waiting::Welcome | Waiting::Close => "without answering `exit`".to_string(),
            };
            format!("the server closed the connection as idle {what}{said}: {ENDS_LINES}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_map_to_distinct_codes() {
        let codes = [
            Failure::Usage(String::new()).code(),
            Failure::Connect {
                target: String::new(),
                attempts: vec![],
                timeout: None,
            }
            .code(),
            Failure::Timeout {
                secs: 1.0,
                waiting: Waiting::Welcome,
                hint: Hint::None,
            }
            .code(),
            Failure::Closed(Closed {
                what: ClosedWhen::InputOpen,
                notice: None,
                reset: false,
                replies: 0,
            })
            .code(),
            Failure::Busy(String::new()).code(),
            Failure::Stdin(io::Error::other("x")).code(),
        ];
        assert_eq!(
            codes,
            [
                EXIT_USAGE,
                EXIT_CONNECT,
                EXIT_TIMEOUT,
                EXIT_PROTOCOL,
                EXIT_BUSY,
                EXIT_LOCAL_IO
            ]
        );
        assert_eq!(
            Failure::Stdout(io::Error::from(ErrorKind::BrokenPipe)).message(),
            None
        );
    }

    #[test]
    fn timeout_message_hints_at_the_framing_the_server_shows() {
        let m = |hint| {
            Failure::Timeout {
                secs: 1.0,
                waiting: Waiting::Replies(1),
                hint,
            }
            .message()
            .unwrap()
        };
        let unended = m(Hint::Unended(8));
        assert!(unended.contains("use --framing chunk"), "{unended}");
        let none = m(Hint::None);
        assert!(none.contains("--reply-timeout"), "{none}");
        let ends = m(Hint::EndsLines);
        assert!(
            ends.contains("its welcome ended with a line ending")
                && ends.contains("drop --framing chunk")
                && !ends.contains("overloaded"),
            "{ends}"
        );
    }

    #[test]
    fn a_reset_and_a_cut_reply_are_said_plainly_with_the_replies_before() {
        let closed = |what, reset, replies| {
            let failure = Failure::Closed(Closed {
                what,
                notice: None,
                reset,
                replies,
            });
            assert_eq!(failure.code(), EXIT_PROTOCOL);
            failure.message().unwrap()
        };
        let m = closed(ClosedWhen::Unanswered(1), true, 2);
        assert!(
            m.starts_with("connection reset by the server after 2 replies, with 1 name unanswered"),
            "{m}"
        );
        let m = closed(ClosedWhen::MidReply, false, 1);
        assert!(
            m.starts_with(
                "the server closed the connection in the middle of a reply after 1 reply"
            ),
            "{m}"
        );
        let m = closed(ClosedWhen::BeforeWelcome, true, 0);
        assert!(
            m.starts_with("connection reset by the server before its welcome"),
            "{m}"
        );
    }

    #[test]
    fn an_idle_close_in_chunk_framing_of_a_line_server_blames_the_framing() {
        let failure = Failure::Closed(Closed {
            what: ClosedWhen::IdleEndsLines(Waiting::Replies(1)),
            notice: Some("ERROR idle for 1 s, closing".into()),
            reset: false,
            replies: 0,
        });
        assert_eq!(failure.code(), EXIT_TIMEOUT);
        let m = failure.message().unwrap();
        assert!(
            m.contains("idle with 1 name unanswered") && m.contains("drop --framing chunk"),
            "{m}"
        );
        assert!(!m.contains('\n'), "{m}");
    }
}
