//! A client's line as a JSON string (`--reply-format json`), written into a buffer of
//! a length known in advance, with no allocation.

/// The bytes of `b`'s escape inside a JSON string, or `None` if it stands as it is.
fn escape(b: u8) -> Option<&'static [u8]> {
    Some(match b {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0x08 => b"\\b",
        0x0c => b"\\f",
        // The other controls: `\u00XX`, written by `json_escape`.
        0x00..=0x1f => b"",
        _ => return None,
    })
}

/// The replacement character, written for each invalid sequence of UTF-8 (as
/// [`String::from_utf8_lossy`] does).
const REPLACEMENT: &[u8] = "\u{fffd}".as_bytes();

/// The length of [`json_escape`]'s output for `line`.
pub fn json_len(line: &[u8]) -> usize {
    let mut len = 2;
    for chunk in line.utf8_chunks() {
        for &b in chunk.valid().as_bytes() {
            len += match escape(b) {
                None => 1,
                Some(b"") => 6,
                Some(e) => e.len(),
            };
        }
        if !chunk.invalid().is_empty() {
            len += REPLACEMENT.len();
        }
    }
    len
}

/// The longest [`json_escape`] output for a line of `len` bytes: six bytes (`\u00XX`)
/// for each, and the quotes.
pub fn json_len_max(len: usize) -> usize {
    len.saturating_mul(6).saturating_add(2)
}

/// Writes `line` as a JSON string, quotes included, at the start of `out` (which has
/// room for [`json_len`]`(line)` bytes): escaped as RFC 8259 requires, each
/// invalid UTF-8 sequence as U+FFFD. Returns the bytes written.
pub fn json_escape(line: &[u8], out: &mut [u8]) -> usize {
    let mut at = 0;
    let mut put = |bytes: &[u8], at: &mut usize| {
        out[*at..*at + bytes.len()].copy_from_slice(bytes);
        *at += bytes.len();
    };
    put(b"\"", &mut at);
    for chunk in line.utf8_chunks() {
        for &b in chunk.valid().as_bytes() {
            match escape(b) {
                None => put(&[b], &mut at),
                Some(b"") => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    let u = [
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[usize::from(b >> 4)],
                        HEX[usize::from(b & 0xf)],
                    ];
                    put(&u, &mut at);
                }
                Some(e) => put(e, &mut at),
            }
        }
        if !chunk.invalid().is_empty() {
            put(REPLACEMENT, &mut at);
        }
    }
    put(b"\"", &mut at);
    at
}

/// `text` as a JSON string, quotes included.
pub fn json_string(text: &str) -> Vec<u8> {
    let mut out = vec![0; json_len(text.as_bytes())];
    let n = json_escape(text.as_bytes(), &mut out);
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_json_strings_serde_reads_back() {
        for line in [
            &b""[..],
            b"Ann",
            "张三 \u{202e}".as_bytes(),
            b"q\"uo\\te\n\r\t\x08\x0c\x00\x1f\x7f",
            b"bad \xff\xfe utf-8 \xe2\x82",
        ] {
            let mut out = vec![0u8; json_len(line)];
            let n = json_escape(line, &mut out);
            assert_eq!(n, out.len(), "json_len is exact");
            assert!(n <= json_len_max(line.len()));
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, String::from_utf8_lossy(line));
        }
        assert_eq!(json_string("a\"b"), b"\"a\\\"b\"");
    }
}
