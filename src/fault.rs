//! `serve --fault SPEC`: misbehaving on purpose, reproducibly, for testing clients,
//! proxies and load balancers. The pure part: a spec parsed into a [`Spec`], and the
//! decision of which faults strike a connection ([`Faults::strike`]) drawn from a
//! seeded generator ([`SplitMix64`]), so that the same `--fault-seed` and the same
//! clients in the same order meet the same faults.
//!
//! A spec is `KIND[,key=value]...`; `p=` is the probability (per connection, or per reply
//! or datagram for `delay`, `drop` and `duplicate`), `after=welcome` or `after=N` (after
//! the Nth reply: when the line that would get reply N+1 arrives) where it strikes.
//!
//! A connection meets at most one one-time fault (reset, close, stall, blackhole,
//! garbage: the first `--fault` that strikes it), besides per-reply delays and trickling.
//! Faults act in greet mode (echo mode has no replies to spoil); over TLS, after the
//! handshake, which carries the welcome.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::metrics::{MetricType, TextFormat};

/// The kinds, in the order the error message and the metrics list them.
const KINDS: [Kind; 10] = [
    Kind::Reset,
    Kind::Close,
    Kind::Stall,
    Kind::Blackhole,
    Kind::Delay,
    Kind::Trickle,
    Kind::Garbage,
    Kind::Drop,
    Kind::Duplicate,
    Kind::UdpDelay,
];

/// What kind of fault, as the `kind` label of `tcp_hello_faults_total` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Reset,
    Close,
    Stall,
    Blackhole,
    Delay,
    Trickle,
    Garbage,
    Drop,
    Duplicate,
    /// `delay` on a UDP reply.
    UdpDelay,
}

impl Kind {
    /// The `kind` label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Reset => "reset",
            Kind::Close => "close",
            Kind::Stall => "stall",
            Kind::Blackhole => "blackhole",
            Kind::Delay => "delay",
            Kind::Trickle => "trickle",
            Kind::Garbage => "garbage",
            Kind::Drop => "drop",
            Kind::Duplicate => "duplicate",
            Kind::UdpDelay => "udp_delay",
        }
    }
}

/// Where a one-time fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// At accept, before the welcome.
    Accept,
    /// Right after the welcome.
    Welcome,
    /// After this many replies: when the line that would get the next one arrives.
    Replies(u64),
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Point::Accept => f.write_str("at accept"),
            Point::Welcome => f.write_str("after the welcome"),
            Point::Replies(n) => write!(
                f,
                "after {n} {}",
                crate::plural::noun(*n, "reply", "replies")
            ),
        }
    }
}

/// When `close` closes, relative to the reply it strikes at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseWhen {
    BeforeReply,
    AfterReply,
    /// The first bytes of the reply, then the close.
    MidReply,
}

/// A range of milliseconds, drawn from uniformly (`lo == hi` for a fixed one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Millis {
    pub lo: u64,
    pub hi: u64,
}

/// One fault, typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// RST (`SO_LINGER` 0, then close).
    Reset { at: Point },
    /// FIN.
    Close { when: CloseWhen, at: Point },
    /// Stop answering and reading; the connection stays open.
    Stall { at: Point },
    /// Accept, never send a byte, read and discard.
    Blackhole,
    /// A wait before each reply (or UDP reply).
    Delay { ms: Millis },
    /// Replies sent `bytes` at a time, `ms` apart.
    Trickle { bytes: usize, ms: u64 },
    /// A line that breaks the protocol instead of a reply.
    Garbage { at: Point },
    /// UDP: no reply.
    Drop,
    /// UDP: the reply sent twice.
    Duplicate,
}

/// One `--fault`: a fault and its probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spec {
    pub fault: Fault,
    /// Per connection; per reply for `delay`, per datagram over UDP.
    pub p: f64,
}

const KIND_LIST: &str = "reset, close, stall, blackhole, delay, trickle, garbage \
                         (UDP: drop, duplicate, delay)";

/// Parses one `--fault` spec; the error is one line, beginning `--fault SPEC:`.
pub fn parse(spec: &str) -> Result<Spec, String> {
    parse_inner(spec).map_err(|e| format!("--fault {spec}: {e}"))
}

fn parse_inner(spec: &str) -> Result<Spec, String> {
    let mut parts = spec.split(',').map(str::trim);
    let kind = parts.next().unwrap_or_default();
    let keys: &[&str] = match kind {
        "reset" | "stall" | "garbage" => &["p", "after"],
        "close" => &["p", "after", "when"],
        "blackhole" | "drop" | "duplicate" => &["p"],
        "delay" => &["p", "ms"],
        "trickle" => &["p", "bytes", "ms"],
        _ => {
            return Err(format!(
                "unknown fault \"{kind}\"; the faults are {KIND_LIST}"
            ));
        }
    };
    let (mut p, mut after, mut when, mut ms, mut bytes) = (1.0, None, None, None, None);
    for part in parts {
        let Some((key, value)) = part.split_once('=') else {
            return Err(format!(
                "\"{part}\" is not key=value; {kind} takes {}",
                keys.join(", ")
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        if !keys.contains(&key) {
            return Err(format!(
                "{kind} takes no \"{key}\"; it takes {}",
                keys.join(", ")
            ));
        }
        match key {
            "p" => p = probability(value)?,
            "after" => after = Some(point(value)?),
            "when" => when = Some(close_when(value)?),
            "ms" if kind == "delay" => ms = Some(millis(value)?),
            "ms" => ms = Some(Millis::fixed(whole(key, value)?)),
            "bytes" => bytes = Some(whole(key, value)?),
            _ => {}
        }
    }
    let fault = match kind {
        "reset" => Fault::Reset {
            at: after.unwrap_or(Point::Accept),
        },
        "close" => Fault::Close {
            when: when.unwrap_or(CloseWhen::BeforeReply),
            at: after.unwrap_or(Point::Replies(0)),
        },
        "stall" => Fault::Stall {
            at: after.unwrap_or(Point::Replies(0)),
        },
        "garbage" => Fault::Garbage {
            at: match after.unwrap_or(Point::Replies(0)) {
                Point::Replies(n) => Point::Replies(n),
                _ => return Err("garbage replaces a reply: give after=N".to_string()),
            },
        },
        "blackhole" => Fault::Blackhole,
        "drop" => Fault::Drop,
        "duplicate" => Fault::Duplicate,
        "delay" => Fault::Delay {
            ms: ms.unwrap_or(Millis::fixed(200)),
        },
        _ => {
            let bytes = bytes.unwrap_or(1);
            if bytes == 0 {
                return Err("bytes=0 sends nothing; give 1 or more".to_string());
            }
            Fault::Trickle {
                bytes: usize::try_from(bytes).unwrap_or(usize::MAX),
                ms: ms.map_or(50, |m| m.lo),
            }
        }
    };
    Ok(Spec { fault, p })
}

fn probability(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("p={value} is not a probability; give 0 to 1")),
    }
}

fn point(value: &str) -> Result<Point, String> {
    if value == "welcome" {
        return Ok(Point::Welcome);
    }
    value
        .parse()
        .map(Point::Replies)
        .map_err(|_| format!("after={value}: give welcome or a number of replies"))
}

fn close_when(value: &str) -> Result<CloseWhen, String> {
    match value {
        "before-reply" => Ok(CloseWhen::BeforeReply),
        "after-reply" => Ok(CloseWhen::AfterReply),
        "mid-reply" => Ok(CloseWhen::MidReply),
        _ => Err(format!(
            "when={value}: give before-reply, after-reply or mid-reply"
        )),
    }
}

fn whole(key: &str, value: &str) -> Result<u64, String> {
    value
        .parse()
        .map_err(|_| format!("{key}={value}: give a whole number"))
}

/// Milliseconds, 100 or 100..300 ([`Millis`]); each bound may carry a unit, `200ms`
/// or `0.2s`, so that `100ms..300ms` reads as written.
fn millis(value: &str) -> Result<Millis, String> {
    let bad = || {
        format!(
            "ms={value}: give a number of milliseconds, or a range such as 100..300 (or 100ms..0.3s)"
        )
    };
    let bound = |text: &str| -> Result<u64, String> {
        if let Some(ms) = text.strip_suffix("ms") {
            return ms.parse().map_err(|_| bad());
        }
        if let Some(secs) = text.strip_suffix('s') {
            let secs: f64 = secs.parse().map_err(|_| bad())?;
            if !(0.0..=1e9).contains(&secs) {
                return Err(bad());
            }
            return Ok((secs * 1000.0).round() as u64);
        }
        text.parse().map_err(|_| bad())
    };
    let (lo, hi) = match value.split_once("..") {
        Some((lo, hi)) => (bound(lo)?, bound(hi)?),
        None => {
            let ms = bound(value)?;
            (ms, ms)
        }
    };
    if lo > hi {
        return Err(bad());
    }
    Ok(Millis { lo, hi })
}

impl Millis {
    const fn fixed(ms: u64) -> Self {
        Millis { lo: ms, hi: ms }
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{} ms", self.lo)
        } else {
            write!(f, "{}..{} ms", self.lo, self.hi)
        }
    }
}

/// A tiny seeded generator (splitmix64): the faults' only source of chance.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (always for 1, never for 0).
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A number of milliseconds in `ms`.
    pub fn millis(&mut self, ms: Millis) -> Duration {
        let span = ms.hi - ms.lo;
        let add = if span == 0 {
            0
        } else {
            self.next_u64() % (span + 1)
        };
        Duration::from_millis(ms.lo + add)
    }
}

/// A one-time fault, at its [`Point`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Once {
    Reset,
    Close(CloseWhen),
    Stall,
    Blackhole,
    Garbage,
}

impl Once {
    pub fn kind(self) -> Kind {
        match self {
            Once::Reset => Kind::Reset,
            Once::Close(_) => Kind::Close,
            Once::Stall => Kind::Stall,
            Once::Blackhole => Kind::Blackhole,
            Once::Garbage => Kind::Garbage,
        }
    }
}

impl fmt::Display for Once {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Once::Close(CloseWhen::BeforeReply) => f.write_str("close before a reply"),
            Once::Close(CloseWhen::AfterReply) => f.write_str("close after a reply"),
            Once::Close(CloseWhen::MidReply) => f.write_str("close in the middle of a reply"),
            other => f.write_str(other.kind().label()),
        }
    }
}

/// What struck one connection: at most one one-time fault (the first `--fault` that
/// struck), a delay drawn per reply, and trickling.
#[derive(Debug, Clone)]
pub struct Struck {
    once: Option<(Once, Point)>,
    delay: Option<(Millis, f64)>,
    /// Bytes at a time, and the pause between.
    pub trickle: Option<(usize, Duration)>,
    rng: SplitMix64,
}

impl Struck {
    /// The one-time fault due at `point`, taken: it strikes once.
    pub fn at(&mut self, point: Point) -> Option<Once> {
        match self.once {
            Some((once, at)) if at == point => {
                self.once = None;
                Some(once)
            }
            _ => None,
        }
    }

    /// Whether the one-time fault is still to come at a reply (so the caller may skip
    /// the checks of welcome and accept).
    pub fn pending(&self) -> Option<(Once, Point)> {
        self.once
    }

    /// The wait before this reply, if the delay strikes it.
    pub fn delay(&mut self) -> Option<Duration> {
        let (ms, p) = self.delay?;
        if !self.rng.chance(p) {
            return None;
        }
        Some(self.rng.millis(ms))
    }
}

/// Every `--fault`, the seed, and the count of each kind that struck.
#[derive(Debug)]
pub struct Faults {
    specs: Vec<Spec>,
    seed: u64,
    struck: [AtomicU64; KINDS.len()],
}

impl Faults {
    /// `None` without specs: no fault, no cost.
    pub fn new(specs: Vec<Spec>, seed: u64) -> Option<Self> {
        (!specs.is_empty()).then(|| Faults {
            specs,
            seed,
            struck: Default::default(),
        })
    }

    /// The seed, for the start-up line (so a run can be repeated).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The generator of connection (or UDP socket) `id`: the seed and the id mixed.
    pub fn rng(&self, id: u64) -> SplitMix64 {
        let mixed = SplitMix64::new(id).next_u64();
        SplitMix64::new(self.seed ^ mixed)
    }

    /// Which TCP faults strike connection `id`; `None` when none does. One draw per
    /// spec, whatever the earlier ones drew, so that a spec's draws do not depend on
    /// the others'.
    pub fn strike(&self, id: u64) -> Option<Struck> {
        let mut rng = self.rng(id);
        let mut struck = Struck {
            once: None,
            delay: None,
            trickle: None,
            rng: SplitMix64::new(0),
        };
        let mut any = false;
        for spec in &self.specs {
            let per_reply = matches!(spec.fault, Fault::Delay { .. });
            if !per_reply && !rng.chance(spec.p) {
                continue;
            }
            let once = match spec.fault {
                Fault::Reset { at } => Some((Once::Reset, at)),
                Fault::Close { when, at } => Some((Once::Close(when), at)),
                Fault::Stall { at } => Some((Once::Stall, at)),
                Fault::Blackhole => Some((Once::Blackhole, Point::Accept)),
                Fault::Garbage { at } => Some((Once::Garbage, at)),
                Fault::Delay { ms } => {
                    struck.delay = struck.delay.or(Some((ms, spec.p)));
                    any = true;
                    None
                }
                Fault::Trickle { bytes, ms } => {
                    struck.trickle = struck.trickle.or(Some((bytes, Duration::from_millis(ms))));
                    any = true;
                    None
                }
                Fault::Drop | Fault::Duplicate => None,
            };
            if struck.once.is_none() && once.is_some() {
                struck.once = once;
                any = true;
            }
        }
        struck.rng = rng;
        any.then_some(struck)
    }

    /// The UDP faults, if any `--fault` is one.
    pub fn udp(&self) -> Option<UdpFaults> {
        let mut udp = UdpFaults::default();
        for spec in &self.specs {
            match spec.fault {
                Fault::Drop => udp.drop = udp.drop.max(spec.p),
                Fault::Duplicate => udp.duplicate = udp.duplicate.max(spec.p),
                Fault::Delay { ms } if udp.delay.is_none() => udp.delay = Some((ms, spec.p)),
                _ => {}
            }
        }
        (udp.drop > 0.0 || udp.duplicate > 0.0 || udp.delay.is_some()).then_some(udp)
    }

    /// One more fault of `kind` struck.
    pub fn count(&self, kind: Kind) {
        let i = KINDS.iter().position(|&k| k == kind).unwrap_or(0);
        self.struck[i].fetch_add(1, Ordering::Relaxed);
    }

    /// How many faults of `kind` struck.
    pub fn counted(&self, kind: Kind) -> u64 {
        let i = KINDS.iter().position(|&k| k == kind).unwrap_or(0);
        self.struck[i].load(Ordering::Relaxed)
    }

    /// `tcp_hello_faults_total`, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = TextFormat::with_capacity(1024);
        out.by_label(
            "tcp_hello_faults_total",
            MetricType::Counter,
            "Faults that struck (--fault), by kind.",
            "kind",
            KINDS.iter().map(|&k| (k.label(), self.counted(k))),
        );
        out.finish()
    }
}

/// The UDP faults: each drawn per datagram.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UdpFaults {
    pub drop: f64,
    pub duplicate: f64,
    pub delay: Option<(Millis, f64)>,
}

/// What the UDP faults do to one datagram's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpStrike {
    pub drop: bool,
    pub duplicate: bool,
    pub delay: Option<Duration>,
}

impl UdpFaults {
    /// The draw for one datagram; one draw per fault whatever the others drew.
    pub fn draw(&self, rng: &mut SplitMix64) -> UdpStrike {
        let drop = rng.chance(self.drop);
        let duplicate = rng.chance(self.duplicate);
        let delay = self.delay.and_then(|(ms, p)| {
            let ms = rng.millis(ms);
            rng.chance(p).then_some(ms)
        });
        UdpStrike {
            drop,
            duplicate: duplicate && !drop,
            delay: delay.filter(|_| !drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(s: &str) -> Fault {
        parse(s).unwrap().fault
    }

    #[test]
    fn every_kind_parses_with_its_defaults_and_keys() {
        assert_eq!(fault("reset"), Fault::Reset { at: Point::Accept });
        assert_eq!(
            fault("reset,after=welcome"),
            Fault::Reset { at: Point::Welcome }
        );
        assert_eq!(
            fault("reset,after=2"),
            Fault::Reset {
                at: Point::Replies(2)
            }
        );
        assert_eq!(
            fault("close"),
            Fault::Close {
                when: CloseWhen::BeforeReply,
                at: Point::Replies(0)
            }
        );
        assert_eq!(
            fault("close,when=mid-reply,after=1"),
            Fault::Close {
                when: CloseWhen::MidReply,
                at: Point::Replies(1)
            }
        );
        assert_eq!(
            fault("close,when=after-reply"),
            Fault::Close {
                when: CloseWhen::AfterReply,
                at: Point::Replies(0)
            }
        );
        assert_eq!(
            fault("stall"),
            Fault::Stall {
                at: Point::Replies(0)
            }
        );
        assert_eq!(fault("blackhole"), Fault::Blackhole);
        assert_eq!(
            fault("delay,ms=200"),
            Fault::Delay {
                ms: Millis { lo: 200, hi: 200 }
            }
        );
        // Units, as the values are often written.
        assert_eq!(fault("delay,ms=200ms"), fault("delay,ms=200"));
        assert_eq!(fault("delay,ms=100ms..300ms"), fault("delay,ms=100..300"));
        assert_eq!(fault("delay,ms=0.1s..0.3s"), fault("delay,ms=100..300"));
        assert_eq!(
            fault("delay,ms=100..300"),
            Fault::Delay {
                ms: Millis { lo: 100, hi: 300 }
            }
        );
        assert_eq!(
            fault("trickle,bytes=1,ms=50"),
            Fault::Trickle { bytes: 1, ms: 50 }
        );
        assert_eq!(fault("trickle"), Fault::Trickle { bytes: 1, ms: 50 });
        assert_eq!(
            fault("garbage,after=3"),
            Fault::Garbage {
                at: Point::Replies(3)
            }
        );
        assert_eq!(fault("drop"), Fault::Drop);
        assert_eq!(fault("duplicate"), Fault::Duplicate);
        let spec = parse("drop,p=0.2").unwrap();
        assert!((spec.p - 0.2).abs() < 1e-12);
        assert!((parse("reset").unwrap().p - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_bad_spec_is_one_line_naming_what_is_wrong() {
        assert_eq!(
            parse("resset").unwrap_err(),
            "--fault resset: unknown fault \"resset\"; the faults are reset, close, stall, \
             blackhole, delay, trickle, garbage (UDP: drop, duplicate, delay)"
        );
        let cases = [
            ("reset,p=2", "p=2 is not a probability"),
            ("reset,p=x", "p=x is not a probability"),
            ("reset,after=soon", "after=soon: give welcome"),
            ("close,when=later", "when=later: give before-reply"),
            ("delay,ms=300..100", "ms=300..100: give a number"),
            ("delay,ms=x", "ms=x: give a number"),
            ("delay,ms=5m", "ms=5m: give a number"),
            ("delay,ms=-1s", "ms=-1s: give a number"),
            ("delay,ms=2s..1s", "ms=2s..1s: give a number"),
            ("trickle,bytes=0", "bytes=0 sends nothing"),
            ("trickle,bytes=x", "bytes=x: give a whole number"),
            (
                "blackhole,after=2",
                "blackhole takes no \"after\"; it takes p",
            ),
            ("reset,when=mid-reply", "reset takes no \"when\""),
            ("reset,after", "\"after\" is not key=value"),
            ("garbage,after=welcome", "garbage replaces a reply"),
            ("", "unknown fault \"\""),
        ];
        for (spec, wanted) in cases {
            let e = parse(spec).unwrap_err();
            assert!(e.starts_with(&format!("--fault {spec}: ")), "{e}");
            assert!(e.contains(wanted), "{spec}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    fn faults(specs: &[&str], seed: u64) -> Faults {
        Faults::new(specs.iter().map(|s| parse(s).unwrap()).collect(), seed).unwrap()
    }

    #[test]
    fn probabilities_hold_over_10000_draws() {
        // 10,000 Bernoulli(0.3) draws: the standard deviation of the count is about 46;
        // 300 is over 6 of them.
        let plan = faults(&["reset,p=0.3"], 7);
        let struck = (0..10_000).filter(|&id| plan.strike(id).is_some()).count();
        assert!((2_700..=3_300).contains(&struck), "{struck}");
        let none = faults(&["reset,p=0"], 7);
        assert!((0..10_000).all(|id| none.strike(id).is_none()));
        let all = faults(&["reset"], 7);
        assert!((0..10_000).all(|id| all.strike(id).is_some()));
        // Per reply: delay,p=0.5.
        let plan = faults(&["delay,ms=100..300,p=0.5"], 7);
        let mut struck = plan.strike(1).unwrap();
        let delays: Vec<_> = (0..10_000).filter_map(|_| struck.delay()).collect();
        assert!((4_700..=5_300).contains(&delays.len()), "{}", delays.len());
        assert!(delays.iter().all(|d| (100..=300).contains(&d.as_millis())));
        assert!(delays.iter().any(|d| d.as_millis() < 150));
        assert!(delays.iter().any(|d| d.as_millis() > 250));
        // UDP, per datagram.
        let udp = faults(&["drop,p=0.2", "duplicate,p=0.5"], 7).udp().unwrap();
        let mut rng = SplitMix64::new(3);
        let draws: Vec<_> = (0..10_000).map(|_| udp.draw(&mut rng)).collect();
        let dropped = draws.iter().filter(|d| d.drop).count();
        assert!((1_800..=2_200).contains(&dropped), "{dropped}");
        let doubled = draws.iter().filter(|d| d.duplicate).count();
        // 0.8 * 0.5 of them: 4,000.
        assert!((3_700..=4_300).contains(&doubled), "{doubled}");
    }

    #[test]
    fn the_same_seed_gives_the_same_faults_and_another_seed_others() {
        let struck = |seed| -> Vec<u64> {
            let plan = faults(&["reset,p=0.5"], seed);
            (1..=200).filter(|&id| plan.strike(id).is_some()).collect()
        };
        assert_eq!(struck(42), struck(42));
        assert_ne!(struck(42), struck(43));
        let delays = |seed| -> Vec<Option<Duration>> {
            let mut s = faults(&["delay,ms=0..1000,p=0.5"], seed).strike(9).unwrap();
            (0..50).map(|_| s.delay()).collect()
        };
        assert_eq!(delays(5), delays(5));
    }

    #[test]
    fn the_first_one_time_fault_wins_and_strikes_once_at_its_point() {
        let plan = faults(&["close,after=2", "reset", "trickle,bytes=2,ms=10"], 1);
        let mut s = plan.strike(1).unwrap();
        assert_eq!(s.trickle, Some((2, Duration::from_millis(10))));
        assert_eq!(s.at(Point::Accept), None);
        assert_eq!(s.at(Point::Replies(1)), None);
        assert_eq!(
            s.at(Point::Replies(2)),
            Some(Once::Close(CloseWhen::BeforeReply))
        );
        assert_eq!(s.at(Point::Replies(2)), None);
        assert_eq!(Point::Replies(2).to_string(), "after 2 replies");
        assert_eq!(Point::Replies(1).to_string(), "after 1 reply");
    }

    #[test]
    fn faults_are_counted_by_kind_in_the_metrics() {
        let plan = faults(&["reset"], 1);
        plan.count(Kind::Reset);
        plan.count(Kind::Reset);
        plan.count(Kind::Drop);
        let text = plan.render();
        assert!(
            text.contains("tcp_hello_faults_total{kind=\"reset\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("tcp_hello_faults_total{kind=\"drop\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("tcp_hello_faults_total{kind=\"stall\"} 0\n"),
            "{text}"
        );
    }
}
