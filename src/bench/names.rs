//! The names the bench sends and the replies it expects.

/// The reply the server should send: literal parts around each `{}`.
#[derive(Debug, Clone)]
pub(super) struct Template {
    /// One more part than there are `{}` (so never empty).
    pub(super) parts: Vec<Vec<u8>>,
    pub(super) fixed: usize,
}

impl Template {
    pub(super) fn parse(template: &str) -> Result<Template, String> {
        if template.contains(['\r', '\n']) {
            return Err(format!("--expect {template:?} must be a single line"));
        }
        let parts: Vec<Vec<u8>> = template
            .split("{}")
            .map(|p| p.as_bytes().to_vec())
            .collect();
        let fixed = parts.iter().map(Vec::len).sum();
        Ok(Template { parts, fixed })
    }

    /// Length of the reply to a name of `name_len` bytes.
    pub(super) fn reply_len(&self, name_len: usize) -> usize {
        let names = (self.parts.len() - 1).saturating_mul(name_len);
        self.fixed.saturating_add(names)
    }

    /// Whether `line` (without its line ending) is the reply to `name`.
    pub(super) fn matches(&self, line: &[u8], name: &[u8]) -> bool {
        if line.len() != self.reply_len(name.len()) {
            return false;
        }
        let mut rest = line;
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                match rest.strip_prefix(name) {
                    Some(r) => rest = r,
                    None => return false,
                }
            }
            match rest.strip_prefix(part.as_slice()) {
                Some(r) => rest = r,
                None => return false,
            }
        }
        rest.is_empty()
    }

    /// The reply to `name`.
    pub(super) fn render(&self, name: &[u8]) -> Vec<u8> {
        self.parts.join(name)
    }
}

/// Appends name number `seq` of connection `conn`: exactly `size` bytes of
/// `<conn>x<seq>`, left-padded with letters, or its last `size` bytes when
/// longer. It always ends in a digit, so it is never `exit` or `quit`, and it
/// holds no whitespace.
pub(super) fn write_name(out: &mut Vec<u8>, conn: u64, seq: u64, size: usize) {
    const LETTERS: &[u8; 26] = b"abcdefghijklmnopqrstuvwxyz";
    // Two u64 in decimal (20 digits each) and the separator.
    let mut body = [0u8; 41];
    let mut at = body.len();
    for (i, mut n) in [seq, conn].into_iter().enumerate() {
        if i == 1 {
            at -= 1;
            body[at] = b'x';
        }
        loop {
            at -= 1;
            body[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
    }
    let body = &body[at..];
    if body.len() >= size {
        out.extend_from_slice(&body[body.len() - size..]);
        return;
    }
    let mut pad = size - body.len();
    while pad > 0 {
        let n = pad.min(LETTERS.len());
        out.extend_from_slice(&LETTERS[..n]);
        pad -= n;
    }
    out.extend_from_slice(body);
}

/// `line` without a trailing `\r` (the `\n` is already gone).
pub(super) fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `bytes` as text for a report, cut to a readable length.
pub(super) fn lossy(bytes: &[u8]) -> String {
    const MAX: usize = 200;
    let mut s = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
    if bytes.len() > MAX {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(conn: u64, seq: u64, size: usize) -> String {
        let mut v = Vec::new();
        write_name(&mut v, conn, seq, size);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn names_are_padded_or_cut_to_size() {
        assert_eq!(name(3, 42, 8), "abcd3x42");
        assert_eq!(name(3, 42, 4), "3x42");
        assert_eq!(name(3, 42, 3), "x42");
        assert_eq!(name(3, 42, 1), "2");
        assert_eq!(name(0, 0, 3), "0x0");
        assert_eq!(name(1, 2, 30), "abcdefghijklmnopqrstuvwxyza1x2");
        assert_eq!(name(u64::MAX, u64::MAX, 41).len(), 41);
    }

    proptest! {
        #[test]
        fn names_are_valid(conn in any::<u64>(), seq in any::<u64>(), size in 1usize..300) {
            let mut v = b"prefix".to_vec();
            write_name(&mut v, conn, seq, size);
            let n = &v[6..];
            prop_assert_eq!(n.len(), size);
            prop_assert!(n.last().unwrap().is_ascii_digit());
            prop_assert!(n.iter().all(|b| b.is_ascii_alphanumeric()));
            let mut next = Vec::new();
            write_name(&mut next, conn, seq.wrapping_add(1), size);
            prop_assert_ne!(n, &next[..]);
        }

        #[test]
        fn rendered_replies_match(t in "[^\r\n]{0,20}", name in "[a-z0-9]{1,20}") {
            let tpl = Template::parse(&t).unwrap();
            let reply = tpl.render(name.as_bytes());
            prop_assert_eq!(reply.len(), tpl.reply_len(name.len()));
            prop_assert!(tpl.matches(&reply, name.as_bytes()));
        }
    }

    #[test]
    fn template_checks_every_byte() {
        let t = Template::parse("Hello, {}!").unwrap();
        assert!(t.matches(b"Hello, bob!", b"bob"));
        assert!(!t.matches(b"Hello, bob", b"bob"));
        assert!(!t.matches(b"Hello, bob!!", b"bob"));
        assert!(!t.matches(b"Hello, bOb!", b"bob"));
        assert!(!t.matches(b"hello, bob!", b"bob"));
        assert!(!t.matches(b"", b"bob"));
        assert_eq!(t.render(b"bob"), b"Hello, bob!");

        let two = Template::parse("{}-{}").unwrap();
        assert!(two.matches(b"ab-ab", b"ab"));
        assert!(!two.matches(b"ab-ba", b"ab"));
        let none = Template::parse("OK").unwrap();
        assert!(none.matches(b"OK", b"anything"));
        assert!(!none.matches(b"OK anything", b"anything"));

        assert!(Template::parse("a\nb").is_err());
        assert!(Template::parse("a\r").is_err());
    }

    #[test]
    fn line_endings_are_stripped() {
        assert_eq!(strip_cr(b"Hello\r"), b"Hello");
        assert_eq!(strip_cr(b"Hello"), b"Hello");
        assert_eq!(strip_cr(b"\r"), b"");
        assert_eq!(strip_cr(b"a\r\r"), b"a\r");
    }
}
