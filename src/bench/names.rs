//! The names the bench sends and the replies it expects.

use std::net::SocketAddr;

use crate::protocol::{
    CONN_TEXT_MAX, ConnectionValues, Machine, Piece, ReplyTemplate, TemplateError, TemplateField,
};

/// The reply the server should send: `--expect` read with the grammar of the server's
/// `--reply` ([`ReplyTemplate`]), so that it can mirror any `--reply`. `{}` is the name
/// sent; `{peer}` and `{local}` are the connection's addresses as its socket sees them
/// (the server's when no proxy stands between); `{host}` is this machine's name (the
/// server's when it runs here); `{conn}`, which the bench cannot know, is any
/// connection number; `{pid}` is refused, as the server's process id is not the bench's.
#[derive(Debug, Clone)]
pub(super) struct Template {
    reply: ReplyTemplate,
    /// The values of a connection whose addresses the template does not show.
    blank: ConnectionValues,
}

impl Template {
    pub(super) fn parse(template: &str) -> Result<Template, String> {
        if template.contains(['\r', '\n']) {
            return Err(format!("--expect {template:?} must be a single line"));
        }
        let host = Machine::current().host;
        // `{pid}` becomes text when parsed: two process ids tell whether it was there.
        let with_pid = |pid| {
            let machine = Machine {
                host: host.clone(),
                pid,
            };
            ReplyTemplate::parse(template, TemplateField::Expect, &machine)
        };
        let reply = match (with_pid(0), with_pid(1)) {
            (Ok(zero), Ok(one)) if zero != one => {
                return Err(format!(
                    "--expect {template:?} holds {{pid}}, the server's process id, which the \
                     bench cannot know: write the number the server shows"
                ));
            }
            (Ok(reply), _) => reply,
            // What the server refuses (a lone brace, an unknown `{name}`) the bench has
            // always read as text around each `{}`: kept so.
            (Err(TemplateError::Unmatched { .. } | TemplateError::Unknown { .. }), _) => {
                ReplyTemplate::parse(
                    &braces_as_text(template),
                    TemplateField::Expect,
                    &Machine { host, pid: 0 },
                )
                .map_err(|e| e.to_string())?
            }
            (Err(e), _) => return Err(e.to_string()),
        };
        let nowhere = SocketAddr::from(([0, 0, 0, 0], 0));
        Ok(Template {
            reply,
            blank: ConnectionValues::new(nowhere, nowhere, 0),
        })
    }

    /// Whether the reply shows the connection's addresses (`{peer}`, `{local}`).
    pub(super) fn shows_addresses(&self) -> bool {
        (self.reply.pieces().iter()).any(|p| matches!(p, Piece::Peer | Piece::Local))
    }

    /// Where the name starts in a reply on a connection with `values` (`None` when the
    /// template shows no address): the length of what comes before the first `{}`; `None`
    /// when there is no `{}`, or a `{conn}`, of any length, comes before it.
    pub(super) fn name_offset(&self, values: Option<&ConnectionValues>) -> Option<usize> {
        let values = values.unwrap_or(&self.blank);
        let mut at = 0;
        for piece in self.reply.pieces() {
            match piece {
                Piece::Line => return Some(at),
                Piece::Conn => return None,
                other => at += values.text(other).len(),
            }
        }
        None
    }

    /// The longest reply to a name of `name_len` bytes.
    pub(super) fn reply_len(&self, name_len: usize) -> usize {
        self.reply.max_len_for(name_len)
    }

    /// Whether `line` (without its line ending) is the reply to `name` on a connection
    /// with `values` (`None` when the template shows no address).
    pub(super) fn matches(
        &self,
        line: &[u8],
        name: &[u8],
        values: Option<&ConnectionValues>,
    ) -> bool {
        let values = values.unwrap_or(&self.blank);
        let any_conn = self.reply.pieces().contains(&Piece::Conn);
        if !any_conn && line.len() != self.reply.len_for(name.len(), values) {
            return false;
        }
        matches_pieces(self.reply.pieces(), line, name, values)
    }

    /// The reply to `name`, `{conn}` shown as it is written.
    pub(super) fn render(&self, name: &[u8], values: Option<&ConnectionValues>) -> Vec<u8> {
        let values = values.unwrap_or(&self.blank);
        let mut out = Vec::new();
        for piece in self.reply.pieces() {
            out.extend_from_slice(match piece {
                Piece::Line => name,
                Piece::Conn => b"{conn}",
                other => values.text(other),
            });
        }
        out
    }
}

/// Whether `line` is what `pieces` render for `name`: a name is letters and digits, so
/// the server sends it unchanged; `{conn}` is any connection number.
fn matches_pieces(pieces: &[Piece], line: &[u8], name: &[u8], values: &ConnectionValues) -> bool {
    let Some((first, rest)) = pieces.split_first() else {
        return line.is_empty();
    };
    let text = match first {
        Piece::Line => name,
        Piece::Conn => {
            let digits = line
                .iter()
                .take(CONN_TEXT_MAX)
                .take_while(|b| b.is_ascii_digit());
            return (1..=digits.count()).any(|n| matches_pieces(rest, &line[n..], name, values));
        }
        other => values.text(other),
    };
    line.strip_prefix(text)
        .is_some_and(|line| matches_pieces(rest, line, name, values))
}

/// `template` as the bench read it before it took the server's grammar, in that
/// grammar: every brace that is not part of a `{}` is a literal one.
fn braces_as_text(template: &str) -> String {
    let parts: Vec<String> = template
        .split("{}")
        .map(|part| part.replace('{', "{{").replace('}', "}}"))
        .collect();
    parts.join("{}")
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
            // The two values the bench cannot render as the server would.
            prop_assume!(!t.contains("{pid}") && !t.contains("{conn}"));
            let tpl = Template::parse(&t).unwrap();
            let reply = tpl.render(name.as_bytes(), None);
            prop_assert_eq!(reply.len(), tpl.reply_len(name.len()));
            prop_assert!(tpl.matches(&reply, name.as_bytes(), None));
        }
    }

    #[test]
    fn template_checks_every_byte() {
        let t = Template::parse("Hello, {}!").unwrap();
        assert!(t.matches(b"Hello, bob!", b"bob", None));
        assert!(!t.matches(b"Hello, bob", b"bob", None));
        assert!(!t.matches(b"Hello, bob!!", b"bob", None));
        assert!(!t.matches(b"Hello, bOb!", b"bob", None));
        assert!(!t.matches(b"hello, bob!", b"bob", None));
        assert!(!t.matches(b"", b"bob", None));
        assert_eq!(t.render(b"bob", None), b"Hello, bob!");

        let two = Template::parse("{}-{}").unwrap();
        assert!(two.matches(b"ab-ab", b"ab", None));
        assert!(!two.matches(b"ab-ba", b"ab", None));
        let none = Template::parse("OK").unwrap();
        assert!(none.matches(b"OK", b"anything", None));
        assert!(!none.matches(b"OK anything", b"anything", None));

        assert_eq!(t.name_offset(None), Some(7));
        assert_eq!(two.name_offset(None), Some(0));
        assert_eq!(none.name_offset(None), None);
        assert_eq!(
            Template::parse("{conn}: {}").unwrap().name_offset(None),
            None
        );
        assert_eq!(
            Template::parse("{}: {conn}").unwrap().name_offset(None),
            Some(0)
        );

        assert!(Template::parse("a\nb").is_err());
        assert!(Template::parse("a\r").is_err());
    }

    #[test]
    fn expect_reads_as_the_server_s_reply_does() {
        let v = ConnectionValues::new(
            "10.0.0.7:40000".parse().unwrap(),
            "10.0.0.1:9999".parse().unwrap(),
            0,
        );
        let t = Template::parse("{{{}}} from {peer} to {local}").unwrap();
        assert!(t.shows_addresses());
        assert!(t.matches(
            b"{bob} from 10.0.0.7:40000 to 10.0.0.1:9999",
            b"bob",
            Some(&v)
        ));
        assert!(!t.matches(
            b"{bob} from 10.0.0.8:40000 to 10.0.0.1:9999",
            b"bob",
            Some(&v)
        ));
        assert_eq!(
            t.render(b"bob", Some(&v)),
            b"{bob} from 10.0.0.7:40000 to 10.0.0.1:9999"
        );
        let t = Template::parse("{peer} says {}").unwrap();
        assert_eq!(t.name_offset(Some(&v)), Some("10.0.0.7:40000 says ".len()));
        let host = Machine::current().host;
        let t = Template::parse("{} on {host}").unwrap();
        assert!(!t.shows_addresses());
        assert!(t.matches(format!("bob on {host}").as_bytes(), b"bob", None));

        // `{conn}` is any connection number.
        let t = Template::parse("#{conn}1: {}").unwrap();
        assert!(t.matches(b"#71: bob", b"bob", None));
        assert!(t.matches(b"#12345671: bob", b"bob", None));
        assert!(!t.matches(b"#1: bob", b"bob", None));
        assert!(!t.matches(b"#x1: bob", b"bob", None));
        assert_eq!(t.render(b"bob", None), b"#{conn}1: bob");

        let e = Template::parse("{pid}: {}").unwrap_err();
        assert!(e.contains("{pid}, the server's process id"), "{e}");
        assert!(
            Template::parse("{{pid}}: {}")
                .unwrap()
                .matches(b"{pid}: a", b"a", None)
        );
    }

    #[test]
    fn what_the_server_refuses_expect_reads_as_before() {
        // A lone brace, or an unknown name in braces, is text around each `{}`.
        for (expect, reply) in [
            ("a{b {}", &b"a{b bob"[..]),
            ("}{}{", b"}bob{"),
            ("{x} {}", b"{x} bob"),
            ("{}}", b"bob}"),
        ] {
            let t = Template::parse(expect).unwrap();
            assert!(t.matches(reply, b"bob", None), "{expect}");
            assert_eq!(t.render(b"bob", None), reply, "{expect}");
        }
    }

    #[test]
    fn line_endings_are_stripped() {
        assert_eq!(strip_cr(b"Hello\r"), b"Hello");
        assert_eq!(strip_cr(b"Hello"), b"Hello");
        assert_eq!(strip_cr(b"\r"), b"");
        assert_eq!(strip_cr(b"a\r\r"), b"a\r");
    }
}
