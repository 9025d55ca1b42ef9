//! One socket's window: the datagrams in flight, each holding a slot that its reply, or
//! its timeout, frees for the next; and what became of the recent ones, so that a
//! second reply is told from a first and a late one from a lost one. No socket, no
//! clock: times are given.
//!
//! Datagrams are numbered from 0 on each socket. The history remembers the last
//! `history` numbers (a power of two, at most the number of names that stay distinct,
//! see [`name_horizon`]); a datagram still in flight when `history` newer ones have been
//! sent is counted lost then, so that every datagram in flight or remembered is told
//! apart by its name alone.

use std::time::{Duration, Instant};

/// A datagram in flight, or a free slot.
#[derive(Debug, Clone, Copy)]
struct Slot {
    seq: u64,
    /// When it was sent: its timeout counts from here.
    sent: Instant,
    /// Where its latency counts from: when it was sent, or with `--rate` when it was due.
    from: Instant,
    busy: bool,
}

/// What became of datagram `seq`, in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Never used: nothing has been sent yet with this place in the history.
    Empty,
    /// In flight, in this slot.
    InFlight(u32),
    Answered,
    Lost,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    fate: Fate,
}

/// What a reply to datagram `seq` was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::bench) enum Verdict {
    /// The first reply to a datagram in flight; its latency counts from `from`.
    Match { from: Instant },
    /// Another reply to a datagram already answered.
    Duplicate,
    /// A reply to a datagram already counted lost (or sent too long ago to tell).
    Late,
    /// No datagram with that number was sent.
    Unsent,
}

/// The number of a datagram as far as its name tells it (see [`seq_hint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::bench) enum SeqHint {
    Exact(u64),
    /// Cut to its last digits: the number modulo `modulus` (a power of ten).
    Residue {
        residue: u64,
        modulus: u64,
    },
}

#[derive(Debug)]
pub(in crate::bench) struct Window {
    slots: Box<[Slot]>,
    /// Indices of the free slots.
    free: Vec<u32>,
    /// By `seq` modulo its length (a power of two).
    history: Box<[Entry]>,
    next_seq: u64,
}

impl Window {
    /// A window of `pipeline` slots (at most `u32::MAX`) remembering the last `history`
    /// datagrams (rounded up to a power of two).
    pub(in crate::bench) fn new(pipeline: usize, history: usize, now: Instant) -> Window {
        let free = Slot {
            seq: 0,
            sent: now,
            from: now,
            busy: false,
        };
        let pipeline = pipeline.min(u32::MAX as usize);
        Window {
            slots: vec![free; pipeline].into_boxed_slice(),
            // Popped from the end: slot 0 first.
            free: (0..pipeline as u32).rev().collect(),
            history: vec![
                Entry {
                    seq: 0,
                    fate: Fate::Empty
                };
                history.max(1).next_power_of_two()
            ]
            .into_boxed_slice(),
            next_seq: 0,
        }
    }

    pub(in crate::bench) fn has_room(&self) -> bool {
        !self.free.is_empty()
    }

    pub(in crate::bench) fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// The number the next datagram gets.
    pub(in crate::bench) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The oldest datagram in flight.
    pub(in crate::bench) fn oldest(&self) -> Option<u64> {
        self.slots.iter().filter(|s| s.busy).map(|s| s.seq).min()
    }

    fn entry(&mut self, seq: u64) -> &mut Entry {
        let mask = self.history.len() as u64 - 1;
        &mut self.history[(seq & mask) as usize]
    }

    /// Records datagram [`Window::next_seq`] as sent at `sent`, its latency counting from
    /// `from`. Returns how many datagrams this counted lost (0 or 1): the one that took
    /// the same place in the history, if it is still in flight. Call it only when
    /// [`Window::has_room`]; without room nothing is recorded.
    pub(in crate::bench) fn commit(&mut self, sent: Instant, from: Instant) -> u64 {
        let seq = self.next_seq;
        let old = *self.entry(seq);
        let mut lost = 0;
        if let Fate::InFlight(slot) = old.fate {
            self.release(slot);
            lost = 1;
        }
        let Some(slot) = self.free.pop() else {
            return lost;
        };
        self.slots[slot as usize] = Slot {
            seq,
            sent,
            from,
            busy: true,
        };
        *self.entry(seq) = Entry {
            seq,
            fate: Fate::InFlight(slot),
        };
        self.next_seq += 1;
        lost
    }

    fn release(&mut self, slot: u32) {
        self.slots[slot as usize].busy = false;
        self.free.push(slot);
    }

    /// A reply to datagram `seq` came: what it is, and a match frees its slot.
    pub(in crate::bench) fn reply(&mut self, seq: u64) -> Verdict {
        if seq >= self.next_seq {
            return Verdict::Unsent;
        }
        let entry = *self.entry(seq);
        if entry.seq != seq || entry.fate == Fate::Empty {
            // Pushed out of the history, and so counted lost then if it was in flight.
            return Verdict::Late;
        }
        match entry.fate {
            Fate::InFlight(slot) => {
                let from = self.slots[slot as usize].from;
                self.release(slot);
                self.entry(seq).fate = Fate::Answered;
                Verdict::Match { from }
            }
            Fate::Answered => Verdict::Duplicate,
            Fate::Lost | Fate::Empty => Verdict::Late,
        }
    }

    /// Counts lost every datagram sent `timeout` or longer before `now`, freeing its
    /// slot; returns how many.
    pub(in crate::bench) fn expire(&mut self, now: Instant, timeout: Duration) -> u64 {
        self.lose_where(|s| now.saturating_duration_since(s.sent) >= timeout)
    }

    /// A reply that is no datagram's came: counts lost datagram `seq` if it is in
    /// flight, else the oldest in flight, and frees its slot; returns how many (0 or 1).
    /// The wrong reply answered some datagram: waiting for a right one would hold the
    /// slot for the whole timeout.
    pub(in crate::bench) fn lose(&mut self, seq: Option<u64>) -> u64 {
        let in_flight = |q: &u64| self.slots.iter().any(|s| s.busy && s.seq == *q);
        match seq.filter(in_flight).or_else(|| self.oldest()) {
            Some(q) => self.lose_where(|s| s.seq == q),
            None => 0,
        }
    }

    /// Counts lost every datagram in flight; returns how many.
    pub(in crate::bench) fn give_up(&mut self) -> u64 {
        self.lose_where(|_| true)
    }

    fn lose_where(&mut self, lost: impl Fn(&Slot) -> bool) -> u64 {
        let mut n = 0;
        for i in 0..self.slots.len() {
            let slot = self.slots[i];
            if slot.busy && lost(&slot) {
                self.release(i as u32);
                // A datagram in flight keeps its place in the history (`commit` counts
                // it lost before giving the place to another).
                self.entry(slot.seq).fate = Fate::Lost;
                n += 1;
            }
        }
        n
    }

    /// The datagram sent that `hint` stands for: the latest with that number or residue.
    pub(in crate::bench) fn resolve(&self, hint: SeqHint) -> Option<u64> {
        match hint {
            SeqHint::Exact(seq) => Some(seq),
            SeqHint::Residue { residue, modulus } => {
                let top = self.next_seq.checked_sub(1)?;
                let back = top.checked_sub(residue)? % modulus;
                Some(top - back)
            }
        }
    }
}

/// How many consecutive datagrams of one socket have distinct names of `size` bytes:
/// a name is cut to its last `size` bytes, which end in the datagram's number, so cut
/// names repeat every 10^size (see [`super::super::names::write_name`]).
pub(in crate::bench) fn name_horizon(size: usize) -> u64 {
    u32::try_from(size)
        .ok()
        .and_then(|s| 10u64.checked_pow(s))
        .unwrap_or(u64::MAX)
}

/// The history to keep for `pipeline` datagrams in flight with `size`-byte names: a
/// power of two, four windows' worth and at least 1024, but no more than the names
/// tell apart. `None` when that is less than four windows.
pub(in crate::bench) fn history_len(pipeline: usize, size: usize) -> Option<usize> {
    let want = pipeline
        .saturating_mul(4)
        .max(1024)
        .checked_next_power_of_two()?;
    let horizon = usize::try_from(name_horizon(size)).unwrap_or(usize::MAX);
    // The largest power of two the names tell apart.
    let most = 1usize << (usize::BITS - 1 - horizon.leading_zeros());
    let len = want.min(most);
    (len >= pipeline.saturating_mul(4)).then_some(len)
}

/// The datagram number a name ends in (see [`super::super::names::write_name`]): after
/// its `x`, or, when it was cut inside the number, the digits left.
pub(in crate::bench) fn seq_hint(name: &[u8]) -> Option<SeqHint> {
    let digits = name.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let run = &name[name.len() - digits..];
    let value = run.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    });
    if digits < name.len() {
        return (name[name.len() - digits - 1] == b'x')
            .then_some(value?)
            .map(SeqHint::Exact);
    }
    match u32::try_from(digits)
        .ok()
        .and_then(|d| 10u64.checked_pow(d))
    {
        Some(modulus) => Some(SeqHint::Residue {
            residue: value?,
            modulus,
        }),
        // As many digits as a u64 has: the whole number.
        None => value.map(SeqHint::Exact),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::names::write_name;
    use proptest::prelude::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn replies_free_their_slot_in_any_order_and_once() {
        let t0 = Instant::now();
        let mut w = Window::new(3, 16, t0);
        for ms in 0..3 {
            assert!(w.has_room());
            assert_eq!(w.commit(at(t0, ms), at(t0, ms)), 0);
        }
        assert!(!w.has_room());
        assert_eq!(w.in_flight(), 3);
        assert_eq!(w.reply(2), Verdict::Match { from: at(t0, 2) });
        assert_eq!(w.reply(2), Verdict::Duplicate);
        assert_eq!(w.reply(0), Verdict::Match { from: at(t0, 0) });
        assert_eq!(w.reply(3), Verdict::Unsent);
        assert_eq!(w.oldest(), Some(1));
        assert_eq!(w.in_flight(), 1);
        // The freed slots take the next numbers.
        assert_eq!(w.commit(at(t0, 5), at(t0, 4)), 0);
        assert_eq!(w.next_seq(), 4);
        assert_eq!(w.reply(3), Verdict::Match { from: at(t0, 4) });
        assert_eq!(w.reply(0), Verdict::Duplicate);
    }

    #[test]
    fn a_timeout_counts_lost_and_frees_the_slot_for_the_next() {
        let t0 = Instant::now();
        let mut w = Window::new(2, 16, t0);
        w.commit(at(t0, 0), at(t0, 0));
        w.commit(at(t0, 10), at(t0, 10));
        let timeout = Duration::from_millis(100);
        assert_eq!(w.expire(at(t0, 99), timeout), 0);
        assert_eq!(w.expire(at(t0, 100), timeout), 1);
        assert!(w.has_room());
        assert_eq!(w.oldest(), Some(1));
        // Its reply, when it comes, is late, not a match.
        assert_eq!(w.reply(0), Verdict::Late);
        assert_eq!(w.reply(0), Verdict::Late);
        w.commit(at(t0, 100), at(t0, 100));
        assert_eq!(w.give_up(), 2);
        assert_eq!(w.in_flight(), 0);
        assert_eq!(w.reply(1), Verdict::Late);
        assert_eq!(w.reply(2), Verdict::Late);
    }

    #[test]
    fn a_wrong_reply_frees_its_datagram_or_the_oldest() {
        let t0 = Instant::now();
        let mut w = Window::new(3, 16, t0);
        for _ in 0..3 {
            w.commit(t0, t0);
        }
        assert_eq!(w.lose(Some(1)), 1);
        assert_eq!(w.reply(1), Verdict::Late);
        // Not in flight (any more, or ever): the oldest goes.
        assert_eq!(w.lose(Some(1)), 1);
        assert_eq!(w.oldest(), Some(2));
        assert_eq!(w.lose(None), 1);
        assert_eq!(w.lose(None), 0);
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn a_datagram_in_flight_for_a_whole_history_is_lost() {
        let t0 = Instant::now();
        // Slot 0 stays busy with datagram 0; slot 1 takes every other one.
        let mut w = Window::new(2, 4, t0);
        assert_eq!(w.commit(t0, t0), 0);
        for seq in 1..4 {
            assert_eq!(w.commit(t0, t0), 0);
            assert_eq!(w.reply(seq), Verdict::Match { from: t0 });
        }
        // Datagram 4 takes datagram 0's place in the history.
        assert_eq!(w.commit(t0, t0), 1);
        assert_eq!(w.in_flight(), 1);
        assert_eq!(w.reply(0), Verdict::Late);
        assert_eq!(w.reply(4), Verdict::Match { from: t0 });
        // Answered ones pushed out of the history are late, not duplicates.
        for seq in 5..8 {
            w.commit(t0, t0);
            assert_eq!(w.reply(seq), Verdict::Match { from: t0 });
        }
        assert_eq!(w.reply(1), Verdict::Late);
        assert_eq!(w.reply(4), Verdict::Duplicate);
    }

    #[test]
    fn residues_resolve_to_the_latest_datagram_with_those_digits() {
        let t0 = Instant::now();
        let mut w = Window::new(1, 16, t0);
        let hint = |r| SeqHint::Residue {
            residue: r,
            modulus: 10,
        };
        assert_eq!(w.resolve(hint(0)), None);
        for _ in 0..23 {
            w.commit(t0, t0);
            w.give_up();
        }
        assert_eq!(w.resolve(hint(2)), Some(22));
        assert_eq!(w.resolve(hint(3)), Some(13));
        assert_eq!(w.resolve(SeqHint::Exact(40)), Some(40));
    }

    #[test]
    fn names_give_their_number_back() {
        let hint = |conn, seq, size| {
            let mut name = Vec::new();
            write_name(&mut name, conn, seq, size);
            seq_hint(&name)
        };
        assert_eq!(hint(3, 42, 8), Some(SeqHint::Exact(42)));
        assert_eq!(hint(3, 42, 3), Some(SeqHint::Exact(42)));
        assert_eq!(
            hint(3, 42, 2),
            Some(SeqHint::Residue {
                residue: 42,
                modulus: 100
            })
        );
        assert_eq!(
            hint(3, 1042, 2),
            Some(SeqHint::Residue {
                residue: 42,
                modulus: 100
            })
        );
        assert_eq!(hint(0, u64::MAX, 20), Some(SeqHint::Exact(u64::MAX)));
        assert_eq!(seq_hint(b"abc"), None);
        assert_eq!(seq_hint(b"ab3y42"), None);
        assert_eq!(seq_hint(b"x99999999999999999999"), None);
    }

    #[test]
    fn the_history_is_what_the_names_tell_apart() {
        assert_eq!(name_horizon(1), 10);
        assert_eq!(name_horizon(8), 100_000_000);
        assert_eq!(name_horizon(20), u64::MAX);
        assert_eq!(history_len(1, 8), Some(1024));
        assert_eq!(history_len(1000, 8), Some(4096));
        // 10^3 names: 512 remembered, enough for 128 in flight, not for 129.
        assert_eq!(history_len(128, 3), Some(512));
        assert_eq!(history_len(129, 3), None);
        assert_eq!(history_len(2, 1), Some(8));
        assert_eq!(history_len(3, 1), None);
        assert_eq!(history_len(usize::MAX, 8), None);
    }

    proptest! {
        /// Whatever the order, duplicates and drops: each datagram matches once, and
        /// sent = matched + lost.
        #[test]
        fn every_datagram_is_matched_or_lost_once(
            pipeline in 1usize..8,
            script in proptest::collection::vec((0u8..4, 0u64..40), 1..200),
        ) {
            let t0 = Instant::now();
            let mut w = Window::new(pipeline, 16, t0);
            let (mut sent, mut matched, mut lost) = (0u64, 0u64, 0u64);
            let mut answered = std::collections::HashSet::new();
            for (op, n) in script {
                match op {
                    0 | 1 if w.has_room() => {
                        lost += w.commit(t0, t0);
                        sent += 1;
                    }
                    2 => match w.reply(n) {
                        Verdict::Match { .. } => {
                            prop_assert!(answered.insert(n), "{} matched twice", n);
                            matched += 1;
                        }
                        Verdict::Unsent => prop_assert!(n >= sent),
                        Verdict::Duplicate => prop_assert!(answered.contains(&n)),
                        Verdict::Late => {}
                    },
                    3 => lost += w.expire(t0 + Duration::from_secs(n), Duration::from_secs(20)),
                    _ => {}
                }
                prop_assert_eq!(sent, matched + lost + w.in_flight() as u64);
            }
            lost += w.give_up();
            prop_assert_eq!(sent, matched + lost);
        }

        #[test]
        fn a_name_resolves_to_its_datagram(
            conn in any::<u64>(), seq in 0u64..1_000_000_000, size in 1usize..30,
        ) {
            let mut name = Vec::new();
            write_name(&mut name, conn, seq, size);
            let hint = seq_hint(&name).unwrap();
            let t0 = Instant::now();
            let mut w = Window::new(1, 16, t0);
            w.next_seq = seq + 1;
            prop_assert_eq!(w.resolve(hint), Some(seq));
        }
    }
}
