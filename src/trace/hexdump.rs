//! The wire trace's text: one block per read or write (a header line, then the bytes
//! as hex and as text, 16 to a row), and the line that ends a connection's trace.
//! Pure: bytes in, text out.

use std::fmt::Write as _;
use std::time::Duration;

use crate::plural::noun;

/// Bytes per row of the dump.
const ROW: usize = 16;

/// Which way bytes went, from the tracing side's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Read from the peer: `<`.
    Received,
    /// Written to the peer: `>`.
    Sent,
}

impl Direction {
    fn arrow(self) -> char {
        match self {
            Direction::Received => '<',
            Direction::Sent => '>',
        }
    }
}

/// One read or write, as the trace shows it.
#[derive(Debug, Clone, Copy)]
pub struct Block<'a> {
    /// The connection's number.
    pub conn: u64,
    /// Since the connection began.
    pub offset: Duration,
    pub direction: Direction,
    /// How many bytes the read or write moved; `bytes` may be fewer, the rest being
    /// past the connection's trace limit.
    pub len: usize,
    /// The bytes shown.
    pub bytes: &'a [u8],
    /// The bytes are the plaintext of a TLS session.
    pub tls: bool,
}

/// Appends `block` to `out`: a header line, then rows of up to 16 bytes, each with its
/// offset, its bytes in hex and as text. Only printable ASCII shows as itself in the
/// text; everything else, line endings included, is `.`, so nothing a peer sends can
/// forge a line of the trace. The hex column is as wide as the block's first row, so
/// a one-row block has no padding and the text of every row lines up.
pub fn write_block(out: &mut String, block: &Block<'_>) {
    // invariant: writing to a String cannot fail.
    let _ = write!(
        out,
        "conn {} +{}.{:06} {} {} {}",
        block.conn,
        block.offset.as_secs(),
        block.offset.subsec_micros(),
        block.direction.arrow(),
        block.len,
        noun(block.len as u64, "byte", "bytes")
    );
    if block.bytes.len() < block.len {
        let _ = write!(out, ", first {} shown", block.bytes.len());
    }
    if block.tls {
        out.push_str(" (plaintext of TLS)");
    }
    out.push('\n');
    let width = block.bytes.len().min(ROW);
    for (i, row) in block.bytes.chunks(ROW).enumerate() {
        let _ = write!(out, "  {:04x} ", i * ROW);
        for byte in row {
            let _ = write!(out, " {byte:02x}");
        }
        for _ in row.len()..width {
            out.push_str("   ");
        }
        out.push_str("  |");
        out.extend(row.iter().map(|&b| {
            if b == b' ' || b.is_ascii_graphic() {
                char::from(b)
            } else {
                '.'
            }
        }));
        out.push_str("|\n");
    }
}

/// Appends the line that says connection `conn`'s trace has reached its `limit`.
pub fn write_stop(out: &mut String, conn: u64, limit: usize) {
    let _ = writeln!(
        out,
        "conn {conn}: trace stops after {limit} {}",
        noun(limit as u64, "byte", "bytes")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(block: Block<'_>) -> String {
        let mut out = String::new();
        write_block(&mut out, &block);
        out
    }

    fn block(bytes: &[u8]) -> Block<'_> {
        Block {
            conn: 3,
            offset: Duration::from_micros(412),
            direction: Direction::Received,
            len: bytes.len(),
            bytes,
            tls: false,
        }
    }

    #[test]
    fn a_short_read_is_one_row_without_padding() {
        let out = text(Block {
            tls: true,
            ..block(b"Alice\r\n\xff\xfb")
        });
        assert_eq!(
            out,
            "conn 3 +0.000412 < 9 bytes (plaintext of TLS)\n  \
             0000  41 6c 69 63 65 0d 0a ff fb  |Alice....|\n"
        );
    }

    #[test]
    fn a_write_is_marked_as_sent() {
        let out = text(Block {
            conn: 12,
            offset: Duration::from_millis(2530),
            direction: Direction::Sent,
            ..block(b"Hello, Alice!\r\n")
        });
        assert_eq!(
            out,
            "conn 12 +2.530000 > 15 bytes\n  \
             0000  48 65 6c 6c 6f 2c 20 41 6c 69 63 65 21 0d 0a  |Hello, Alice!..|\n"
        );
    }

    #[test]
    fn long_blocks_have_rows_of_sixteen_and_the_text_lines_up() {
        let bytes: Vec<u8> = (b'a'..=b'z').collect();
        let out = text(block(&bytes));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[1],
            "  0000  61 62 63 64 65 66 67 68 69 6a 6b 6c 6d 6e 6f 70  |abcdefghijklmnop|"
        );
        assert_eq!(
            lines[2],
            "  0010  71 72 73 74 75 76 77 78 79 7a                    |qrstuvwxyz|"
        );
        assert_eq!(lines[1].find('|'), lines[2].find('|'));
    }

    #[test]
    fn nothing_a_peer_sends_makes_a_line_of_its_own() {
        let forged = b"x\nconn 1 +0.000001 > 2 bytes\r\n\x1b[2J\x7f\xc3\xa9";
        let out = text(block(forged));
        // The header, and two rows: every other line break is the dump's own.
        assert_eq!(out.lines().count(), 1 + forged.len().div_ceil(16));
        for line in out.lines().skip(1) {
            assert!(line.starts_with("  00"), "{line:?}");
            assert!(line.bytes().all(|b| b == b' ' || b.is_ascii_graphic()));
        }
        assert!(out.contains("|x.conn 1 +0.0000|"));
    }

    #[test]
    fn a_block_cut_by_the_limit_says_how_much_is_shown() {
        let out = text(Block {
            len: 100,
            ..block(b"ab")
        });
        assert!(out.starts_with("conn 3 +0.000412 < 100 bytes, first 2 shown\n"));
        assert!(out.ends_with("  0000  61 62  |ab|\n"));
    }

    #[test]
    fn one_byte_is_singular_and_the_stop_line_names_the_limit() {
        assert!(text(block(b"\0")).starts_with("conn 3 +0.000412 < 1 byte\n"));
        let mut out = String::new();
        write_stop(&mut out, 7, 4096);
        assert_eq!(out, "conn 7: trace stops after 4096 bytes\n");
    }
}
