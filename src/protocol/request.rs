//! What a received message asks for: a reply, nothing (a blank line), or the end of
//! the session (`exit`, `quit`).

/// The longest line (or chunk) still read as an exit word when `--max-line` is shorter,
/// so that `exit` and `quit`, with blanks around them, always end a session.
pub const EXIT_LINE_MAX: usize = 64;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::LogText;

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
}
