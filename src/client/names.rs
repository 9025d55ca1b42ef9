//! The names input (arguments or stdin), split into messages as the server splits lines.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read, Write};

use memchr::memchr;

use super::INPUT_BUF;
use crate::protocol::{MAX_LINE_LIMIT, Request, classify, find_line_end, partial_len};

/// A source of input bytes (stdin, or the names given as arguments).
pub(super) type Input = BufReader<Box<dyn Read + Send>>;

/// The input for names: the arguments, one per line, or stdin.
pub(super) fn names_input(names: &[OsString]) -> Input {
    let source: Box<dyn Read + Send> = if names.is_empty() {
        Box::new(io::stdin())
    } else {
        // The arguments' own bytes, so that a name need not be UTF-8 (as on stdin).
        let mut text = Vec::new();
        for name in names {
            text.extend_from_slice(name.as_encoded_bytes());
            text.push(b'\n');
        }
        Box::new(io::Cursor::new(text))
    };
    BufReader::with_capacity(INPUT_BUF, source)
}

/// Names read from the input, split into messages exactly as the server splits lines.
pub(super) struct Names {
    input: Input,
    /// One input line (up to LF), which may hold several messages (telnet's CR NUL).
    line: Vec<u8>,
    pos: usize,
    /// The input ended. A terminal's end (Ctrl-D) is not sticky: reading again would
    /// wait for more, so a second Ctrl-D would be needed after a half-typed line.
    ended: bool,
}

impl Names {
    pub(super) fn new(input: Input) -> Self {
        Names {
            input,
            line: Vec::new(),
            pos: 0,
            ended: false,
        }
    }

    /// Whether the next [`Names::next`] may block: no complete line is buffered.
    pub(super) fn may_block(&self) -> bool {
        self.pos >= self.line.len() && memchr(b'\n', self.input.buffer()).is_none()
    }

    /// The next message and what it asks for; `None` at the end of the input.
    pub(super) fn next(&mut self) -> io::Result<Option<(Request, &[u8])>> {
        if self.pos >= self.line.len() {
            if self.ended {
                return Ok(None);
            }
            self.line.clear();
            self.pos = 0;
            // Bounded, so that input without newlines cannot grow the client without limit.
            let most = (MAX_LINE_LIMIT + 3) as u64;
            if (&mut self.input)
                .take(most)
                .read_until(b'\n', &mut self.line)?
                == 0
            {
                return Ok(None);
            }
            if self.line.len() as u64 == most && !self.line.ends_with(b"\n") {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "a line is longer than {} MiB, which no tcp-hello server answers \
                         (--max-line is at most that): split it, or send bytes as they are \
                         with --raw",
                        MAX_LINE_LIMIT >> 20
                    ),
                ));
            }
            // `read_until` stops short of a newline only at the end of the input.
            self.ended = !self.line.ends_with(b"\n");
        }
        let start = self.pos;
        let (end, next) = find_line_end(&self.line, start, start)
            .unwrap_or_else(|| (start + partial_len(&self.line[start..]), self.line.len()));
        self.pos = next;
        let message = &self.line[start..end];
        Ok(Some((classify(message), message)))
    }
}

/// Writes a name with every 0xFF doubled (telnet's IAC IAC), which the server reads as
/// one 0xFF byte instead of the start of a telnet command.
pub(super) fn write_escaped(out: &mut impl Write, mut name: &[u8]) -> io::Result<()> {
    while let Some(i) = memchr(0xFF, name) {
        out.write_all(&name[..=i])?;
        out.write_all(&[0xFF])?;
        name = &name[i + 1..];
    }
    out.write_all(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_of(input: &[u8]) -> Vec<(Request, Vec<u8>)> {
        let source: Box<dyn Read + Send> = Box::new(io::Cursor::new(input.to_vec()));
        let mut names = Names::new(BufReader::new(source));
        let mut all = Vec::new();
        while let Some((r, n)) = names.next().unwrap() {
            all.push((r, n.to_vec()));
        }
        all
    }

    #[test]
    fn names_split_like_the_server() {
        use Request::*;
        assert_eq!(
            names_of(b"Alice\n\nBob\r\n  \na\r\0b\nexit\nCarol"),
            [
                (Name, b"Alice".to_vec()),
                (Blank, b"".to_vec()),
                (Name, b"Bob".to_vec()),
                (Blank, b"  ".to_vec()),
                (Name, b"a".to_vec()),
                (Name, b"b".to_vec()),
                (Exit, b"exit".to_vec()),
                (Name, b"Carol".to_vec()),
            ]
        );
        assert_eq!(names_of(b"x\r"), [(Name, b"x".to_vec())]);
        assert!(names_of(b"").is_empty());
    }

    /// Reads like a terminal: each chunk is one `read`, an empty one is Ctrl-D, and
    /// reading goes on after it.
    struct Terminal(Vec<&'static [u8]>);

    impl Read for Terminal {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let chunk = self.0.remove(0);
            buf[..chunk.len()].copy_from_slice(chunk);
            Ok(chunk.len())
        }
    }

    #[test]
    fn ctrl_d_after_a_half_typed_line_ends_the_input() {
        // `Bo`, Ctrl-D (sends `Bo`), Ctrl-D (the end): what comes after is not read.
        let source: Box<dyn Read + Send> = Box::new(Terminal(vec![b"Bo", b"", b"more\n"]));
        let mut names = Names::new(BufReader::new(source));
        let (request, name) = names.next().unwrap().unwrap();
        assert_eq!((request, name), (Request::Name, &b"Bo"[..]));
        assert!(names.next().unwrap().is_none());
    }

    #[test]
    fn iac_bytes_are_doubled() {
        let mut out = Vec::new();
        write_escaped(&mut out, b"a\xffb\xff").unwrap();
        assert_eq!(out, b"a\xff\xffb\xff\xff");
        out.clear();
        write_escaped(&mut out, "张三".as_bytes()).unwrap();
        assert_eq!(out, "张三".as_bytes());
    }
}
