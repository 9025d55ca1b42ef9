//! Which datagram a reply answers, and whether it is the reply `--expect` gives: the
//! name in it (where `--expect` puts `{}`) tells the datagram's number, and the whole
//! reply is then compared byte for byte with what `--expect` gives for that name.

use super::window::{SeqHint, Verdict, Window, seq_hint};
use crate::bench::names::{Template, lossy, write_name};
use crate::protocol::ConnectionValues;

/// What one socket's replies are checked against.
#[derive(Debug, Clone, Copy)]
pub(in crate::bench) struct Expected<'a> {
    pub(in crate::bench) template: &'a Template,
    /// The socket's number among all: its names carry it.
    pub(in crate::bench) conn: u64,
    pub(in crate::bench) size: usize,
    /// Where the name starts in a reply ([`Template::name_offset`]).
    pub(in crate::bench) name_offset: usize,
    /// The socket's addresses, when `--expect` shows them.
    pub(in crate::bench) values: Option<&'a ConnectionValues>,
}

/// What a reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::bench) enum Judged {
    /// Exactly the reply to a datagram sent: what the window made of it.
    Reply(Verdict),
    /// The reply to no datagram sent; `seq` is the one whose name it holds, if any.
    Mismatch { seq: Option<u64> },
}

impl Expected<'_> {
    /// Judges `reply`, telling `window` of a match; `name` is scratch.
    pub(in crate::bench) fn judge(
        &self,
        reply: &[u8],
        window: &mut Window,
        name: &mut Vec<u8>,
    ) -> Judged {
        let Some(seq) = self.seq_in(reply, window) else {
            return Judged::Mismatch { seq: None };
        };
        self.write_name(name, seq);
        if !self.template.matches(reply, name, self.values) {
            return Judged::Mismatch { seq: Some(seq) };
        }
        match window.reply(seq) {
            Verdict::Unsent => Judged::Mismatch { seq: None },
            verdict => Judged::Reply(verdict),
        }
    }

    /// The number of the datagram sent whose name `reply` holds.
    fn seq_in(&self, reply: &[u8], window: &Window) -> Option<u64> {
        let end = self.name_offset.checked_add(self.size)?;
        let hint: SeqHint = seq_hint(reply.get(self.name_offset..end)?)?;
        window.resolve(hint).filter(|&seq| seq < window.next_seq())
    }

    fn write_name(&self, name: &mut Vec<u8>, seq: u64) {
        name.clear();
        write_name(name, self.conn, seq, self.size);
    }

    /// What to show of a mismatch: `reply`, and the reply to datagram `seq` or else to
    /// the oldest in flight.
    pub(in crate::bench) fn mismatch_detail(
        &self,
        reply: &[u8],
        seq: Option<u64>,
        window: &Window,
    ) -> String {
        let mut name = Vec::new();
        let got = lossy(reply);
        match (seq, window.oldest()) {
            (Some(seq), _) => {
                self.write_name(&mut name, seq);
                let expected = self.template.render(&name, self.values);
                format!("expected {:?}, got {got:?}", lossy(&expected))
            }
            (None, Some(oldest)) => {
                self.write_name(&mut name, oldest);
                let expected = self.template.render(&name, self.values);
                format!(
                    "got {got:?}, the reply to no datagram sent (the oldest in flight expects {:?})",
                    lossy(&expected)
                )
            }
            (None, None) => format!("got {got:?}, the reply to no datagram sent"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn reply(template: &Template, conn: u64, seq: u64) -> Vec<u8> {
        let mut name = Vec::new();
        write_name(&mut name, conn, seq, 8);
        template.render(&name, None)
    }

    #[test]
    fn replies_are_matched_by_the_name_in_them() {
        let template = Template::parse("Hello, {}!").unwrap();
        let expected = Expected {
            template: &template,
            conn: 3,
            size: 8,
            name_offset: template.name_offset(None).unwrap(),
            values: None,
        };
        let t0 = Instant::now();
        let mut w = Window::new(4, 1024, t0);
        for _ in 0..3 {
            w.commit(t0, t0);
        }
        let mut name = Vec::new();
        let mut judge = |reply: &[u8], w: &mut Window| expected.judge(reply, w, &mut name);
        let match_ = Judged::Reply(Verdict::Match { from: t0 });
        assert_eq!(judge(&reply(&template, 3, 2), &mut w), match_);
        assert_eq!(
            judge(&reply(&template, 3, 2), &mut w),
            Judged::Reply(Verdict::Duplicate)
        );
        assert_eq!(judge(&reply(&template, 3, 0), &mut w), match_);
        // Another socket's name, a number not sent, a reply cut short, another text.
        assert_eq!(
            judge(&reply(&template, 4, 1), &mut w),
            Judged::Mismatch { seq: Some(1) }
        );
        assert_eq!(
            judge(&reply(&template, 3, 7), &mut w),
            Judged::Mismatch { seq: None }
        );
        assert_eq!(
            judge(b"Hello, abcde3x1", &mut w),
            Judged::Mismatch { seq: Some(1) }
        );
        assert_eq!(
            judge(b"Hello, abcde3x", &mut w),
            Judged::Mismatch { seq: None }
        );
        assert_eq!(
            judge(b"Hello, abcde3x1?", &mut w),
            Judged::Mismatch { seq: Some(1) }
        );
        assert_eq!(
            judge(b"Hi, abcde3x1!", &mut w),
            Judged::Mismatch { seq: None }
        );
        // None of those took datagram 1's slot.
        assert_eq!(w.in_flight(), 1);
        assert_eq!(judge(&reply(&template, 3, 1), &mut w), match_);

        w.commit(t0, t0);
        assert_eq!(
            expected.mismatch_detail(b"Hello, abcde3x1?", Some(1), &w),
            "expected \"Hello, abcde3x1!\", got \"Hello, abcde3x1?\""
        );
        assert_eq!(
            expected.mismatch_detail(b"Hi", None, &w),
            "got \"Hi\", the reply to no datagram sent (the oldest in flight expects \
             \"Hello, abcde3x3!\")"
        );
        w.give_up();
        assert_eq!(
            expected.mismatch_detail(b"Hi", None, &w),
            "got \"Hi\", the reply to no datagram sent"
        );
    }

    #[test]
    fn the_name_is_found_after_the_addresses() {
        let template = Template::parse("{peer}: {}").unwrap();
        let values = ConnectionValues::new(
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.1:9999".parse().unwrap(),
            0,
        );
        let expected = Expected {
            template: &template,
            conn: 0,
            size: 8,
            name_offset: template.name_offset(Some(&values)).unwrap(),
            values: Some(&values),
        };
        let t0 = Instant::now();
        let mut w = Window::new(1, 1024, t0);
        w.commit(t0, t0);
        let mut name = Vec::new();
        assert_eq!(
            expected.judge(b"127.0.0.1:40000: abcde0x0", &mut w, &mut name),
            Judged::Reply(Verdict::Match { from: t0 })
        );
    }
}
