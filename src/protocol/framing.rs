//! Where messages end in a byte stream: lines (LF, CRLF, telnet's CR NUL) in line
//! framing, one read in chunk framing.

use memchr::memchr2;

/// The most bytes of one message in chunk framing: one `recv(1024)`, as in the tutorial.
pub const CHUNK_MAX: usize = 1024;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
