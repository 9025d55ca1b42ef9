//! Splitting the server's byte stream into lines as it arrives, keeping each line's head.

use memchr::memchr;

use super::HEAD;

/// Splits the server's byte stream into lines as it arrives: each line's text is
/// handed out at once (so a long line is never held whole), without its CRLF or LF,
/// and the first [`HEAD`] bytes of the current line are kept to classify it.
#[derive(Debug, Default)]
pub(super) struct LineSplitter {
    head: Vec<u8>,
    /// Bytes of the current line so far.
    len: usize,
    /// The last read ended in CR, not handed out yet: a CRLF's CR, or data.
    cr: bool,
    /// The current line holds a control byte ([`has_control`]).
    garbled: bool,
}

/// Whether `text` holds a control byte other than tab or CR: no line of the protocol
/// does (a server's `--fault garbage` line does), and printed raw it would drive the
/// terminal.
pub(super) fn has_control(text: &[u8]) -> bool {
    text.iter()
        .any(|&b| (b < 0x20 && b != b'\t' && b != b'\r') || b == 0x7f)
}

/// A piece of a server line.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct LinePiece<'a> {
    /// Text to print.
    pub(super) text: &'a [u8],
    /// The line ends after `text`.
    pub(super) end: bool,
}

impl LineSplitter {
    /// Takes the next piece from the front of `data`; `None` when `data` is used up.
    pub(super) fn next<'a>(&mut self, data: &mut &'a [u8]) -> Option<LinePiece<'a>> {
        if data.is_empty() {
            return None;
        }
        let piece = if self.cr {
            self.cr = false;
            if data[0] == b'\n' {
                *data = &data[1..];
                LinePiece {
                    text: b"",
                    end: true,
                }
            } else {
                LinePiece {
                    text: b"\r",
                    end: false,
                }
            }
        } else if let Some(i) = memchr(b'\n', data) {
            let line = &data[..i];
            *data = &data[i + 1..];
            LinePiece {
                text: line.strip_suffix(b"\r").unwrap_or(line),
                end: true,
            }
        } else {
            let mut text = *data;
            *data = &[];
            if let Some(t) = text.strip_suffix(b"\r") {
                text = t;
                self.cr = true;
            }
            LinePiece { text, end: false }
        };
        self.keep(piece.text);
        Some(piece)
    }

    /// At the end of the stream: a held CR, then the end of an unterminated line.
    pub(super) fn at_eof(&mut self) -> Option<LinePiece<'static>> {
        if self.cr {
            self.cr = false;
            self.keep(b"\r");
            return Some(LinePiece {
                text: b"\r",
                end: true,
            });
        }
        (self.len > 0).then_some(LinePiece {
            text: b"",
            end: true,
        })
    }

    fn keep(&mut self, text: &[u8]) {
        self.garbled |= has_control(text);
        let room = HEAD.saturating_sub(self.head.len());
        self.head.extend_from_slice(&text[..room.min(text.len())]);
        self.len += text.len();
    }

    /// The first bytes of the line that just ended (or is in progress).
    pub(super) fn head(&self) -> &[u8] {
        &self.head
    }

    /// Bytes of the line in progress.
    pub(super) fn partial(&self) -> usize {
        self.len + usize::from(self.cr)
    }

    /// Whether the current line holds a control byte.
    pub(super) fn garbled(&self) -> bool {
        self.garbled
    }

    /// Forgets the line that ended.
    pub(super) fn clear(&mut self) {
        self.head.clear();
        self.len = 0;
        self.garbled = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(chunks: &[&[u8]]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut s = LineSplitter::default();
        let (mut out, mut lines) = (Vec::new(), Vec::new());
        for chunk in chunks {
            let mut data = *chunk;
            while let Some(p) = s.next(&mut data) {
                out.extend_from_slice(p.text);
                if p.end {
                    out.push(b'\n');
                    lines.push(s.head().to_vec());
                    s.clear();
                }
            }
        }
        if let Some(p) = s.at_eof() {
            out.extend_from_slice(p.text);
            out.push(b'\n');
            lines.push(s.head().to_vec());
        }
        (out, lines)
    }

    #[test]
    fn a_line_with_a_control_byte_is_garbled_until_cleared() {
        let mut s = LineSplitter::default();
        let mut data = &b"Hello, a!\r\n\x00\x1b[5m#\r\nok\r\n"[..];
        let mut garbled = Vec::new();
        while let Some(p) = s.next(&mut data) {
            if p.end {
                garbled.push(s.garbled());
                s.clear();
            }
        }
        assert_eq!(garbled, [false, true, false]);
        assert!(!has_control(b"tab\there, CR\r alone, Zo\xc3\xab"));
        assert!(has_control(b"\x7f") && has_control(b"a\x01"));
    }

    #[test]
    fn splitter_turns_crlf_into_lf_across_reads() {
        let (out, lines) = split_all(&[b"Welcome!\r", b"\nHello, a!\r\nHel", b"lo, b!\n"]);
        assert_eq!(out, b"Welcome!\nHello, a!\nHello, b!\n");
        assert_eq!(lines, [&b"Welcome!"[..], b"Hello, a!", b"Hello, b!"]);
        // A CR not before LF is data; an unterminated last line still counts.
        let (out, lines) = split_all(&[b"a\r", b"b\r\n", b"tail\r"]);
        assert_eq!(out, b"a\rb\ntail\r\n");
        assert_eq!(lines, [&b"a\rb"[..], b"tail\r"]);
        let (out, lines) = split_all(&[b"", b"\n"]);
        assert_eq!((out, lines), (b"\n".to_vec(), vec![vec![]]));
    }

    #[test]
    fn splitter_keeps_only_the_head_of_long_lines() {
        let long = vec![b'x'; 10 * HEAD];
        let mut s = LineSplitter::default();
        let mut data = &long[..];
        while s.next(&mut data).is_some() {}
        assert_eq!(s.head().len(), HEAD);
        assert_eq!(s.partial(), long.len());
    }
}
