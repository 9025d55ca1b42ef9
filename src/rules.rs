//! Address rules, `serve --allow` and `--deny` and their files: parsing and matching,
//! pure and without sockets (reading a rule file is the one I/O, in [`Rules::load`]).
//!
//! A rule is an IP address or a CIDR network, IPv4 or IPv6. The most specific rule that
//! matches a client's address decides (the longest prefix); at equal length, deny wins.
//! An address no rule matches is refused once any allow rule is given (an allow list),
//! and let in when there are only deny rules (a block list). An IPv4-mapped IPv6 address
//! (`::ffff:1.2.3.4`) is matched as the IPv4 address it carries.
//!
//! Matching is a table per address family: one level per prefix length in use, longest
//! first, each a sorted `Vec` of networks searched by bisection. A lookup masks the
//! address once per level, so it costs at most 33 (IPv4) or 129 (IPv6) binary searches
//! however many rules there are, and in practice a handful: a rule file of 10,000 hosts
//! is one level. It runs on the accept thread, before anything else a connection costs,
//! so its cost must not grow with the rules as a linear scan's does: a large block list
//! scanned rule by rule would cap the accept rate (README, "Address rules").
//!
//! [`LiveRules`] holds the rules in force, and reads their files again on SIGHUP.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net};

use crate::protocol::LogText;

mod live;

pub use live::{Change, Counts, Current, LiveRules, Reloaded};

/// What a rule does with the addresses it matches. Deny sorts first: it wins a tie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Refuse the connection.
    Deny,
    /// Let it in.
    Allow,
}

impl Action {
    /// The flag that gives rules of this kind: `--allow` or `--deny`.
    pub fn flag(self) -> &'static str {
        match self {
            Action::Allow => "--allow",
            Action::Deny => "--deny",
        }
    }

    /// The flag that gives a file of such rules: `--allow-file` or `--deny-file`.
    pub fn file_flag(self) -> &'static str {
        match self {
            Action::Allow => "--allow-file",
            Action::Deny => "--deny-file",
        }
    }
}

/// An address or network as the user wrote it (`10.0.0.0/8`, `2001:db8::1`), checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    net: IpNet,
    written: Box<str>,
}

impl Pattern {
    /// The network matched: a host address is a /32 (IPv4) or /128 (IPv6).
    pub fn net(&self) -> IpNet {
        self.net
    }

    /// The text it was read from, trimmed, to name the rule in logs.
    pub fn written(&self) -> &str {
        &self.written
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

impl FromStr for Pattern {
    type Err = RuleError;

    /// Reads an IP address or CIDR: see [`RuleError`] for what is refused.
    fn from_str(s: &str) -> Result<Pattern, RuleError> {
        let written = s.trim();
        let (address, prefix) = match written.split_once('/') {
            Some((address, _)) => (address, true),
            None => (written, false),
        };
        // std's parser reads the address, not ipnet's: ipnet takes `010.0.0.1` as
        // 10.0.0.1, which inet_aton and the tools built on it read as octal, 8.0.0.1.
        let addr: IpAddr = address.parse().map_err(|_| {
            octal_looking(address, &written[address.len()..]).unwrap_or(RuleError::NotAnAddress)
        })?;
        let net = if prefix {
            let (_, len) = written.split_once('/').unwrap_or_default();
            if len.len() > 1 && len.starts_with('0') && len.bytes().all(|b| b.is_ascii_digit()) {
                // Read as octal by the same tools as `010.0.0.1`: `/010` could be 8 or 10.
                let digits = match len.trim_start_matches('0') {
                    "" => "0",
                    digits => digits,
                };
                let decimal = format!("{address}/{digits}");
                return Err(match decimal.parse::<IpNet>() {
                    Ok(_) => RuleError::PrefixZero { net: decimal },
                    Err(_) => RuleError::NotAnAddress,
                });
            }
            written
                .parse::<IpNet>()
                .map_err(|_| RuleError::NotAnAddress)?
        } else {
            IpNet::from(addr)
        };
        if net.trunc() != net {
            return Err(RuleError::HostBits {
                network: net.trunc(),
                host: addr,
            });
        }
        if let IpNet::V6(v6) = net {
            if let (Some(v4), Some(len)) =
                (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96))
            {
                // A peer's mapped address is matched as IPv4, so this rule could never
                // match as written: ask for the IPv4 form, as --bind does.
                let ipv4 = match Ipv4Net::new(v4, len) {
                    Ok(net) if len < 32 => net.to_string(),
                    _ => v4.to_string(),
                };
                return Err(RuleError::Mapped { ipv4 });
            }
        }
        Ok(Pattern {
            net,
            written: written.into(),
        })
    }
}

/// The address the per-address limits count a client by, `--max-per-source` and
/// `--udp-rate` alike: an IPv4 address as it is, an IPv4-mapped IPv6 address as the
/// IPv4 address it carries (as the rules match it), any other IPv6 address by its /64
/// (one host can pick any address in its /64, so a limit per /128 would be no limit).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Reads a `--allow` or `--deny` value (clap's value parser for them).
pub fn parse_pattern(s: &str) -> Result<Pattern, RuleError> {
    s.parse()
}

/// Why a rule's text is not a rule. The message does not repeat the text: whoever shows
/// it names the flag, or the file and line, with the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleError {
    /// Not an IP address, nor one followed by `/` and a prefix length that fits it (host
    /// names are refused too: a rule must not depend on DNS at every connection).
    NotAnAddress,
    /// A CIDR whose address has bits set past its prefix (`10.0.0.1/8`): which of the
    /// network or the one address was meant cannot be told, and a guess in an access
    /// rule could let in a whole network.
    HostBits {
        /// The network that prefix makes (`10.0.0.0/8`).
        network: IpNet,
        /// The address as written (`10.0.0.1`).
        host: IpAddr,
    },
    /// A prefix length with a leading zero (`10.0.0.0/08`): a leading zero can mean octal,
    /// as in `010.0.0.1`, so which length was meant cannot be told.
    PrefixZero {
        /// The network with its prefix length in decimal, to write instead.
        net: String,
    },
    /// An IPv4 address with a leading zero in a number (`010.0.0.1`): inet_aton and the
    /// tools built on it read it as octal (8.0.0.1), others as decimal, so which address
    /// was meant cannot be told.
    LeadingZero {
        /// The address with its numbers read as decimal.
        decimal: String,
        /// The address with its numbers read as inet_aton reads them, if they are octal
        /// numbers and it is not the same address.
        octal: Option<String>,
    },
    /// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`): clients are matched by the IPv4
    /// address such an address carries, so the rule is to be written as IPv4.
    Mapped {
        /// The IPv4 form to write instead.
        ipv4: String,
    },
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleError::NotAnAddress => {
                f.write_str("not an IP address or CIDR (e.g. 10.0.0.0/8 or 2001:db8::/32)")
            }
            RuleError::HostBits { network, host } => write!(
                f,
                "host bits set past the prefix; write {network} for the network, or {host} \
                 for the one address"
            ),
            RuleError::PrefixZero { net } => write!(
                f,
                "a prefix length with a leading zero, which some tools read as octal (as \
                 010.0.0.1 is 8.0.0.1 to inet_aton); write {net}"
            ),
            RuleError::LeadingZero { decimal, octal } => {
                f.write_str(
                    "a number with a leading zero, which inet_aton and the tools built on it \
                     read as octal",
                )?;
                match octal {
                    Some(octal) => {
                        write!(
                            f,
                            " ({octal}); write {decimal}, or {octal} if octal was meant"
                        )
                    }
                    None => write!(f, "; write {decimal}"),
                }
            }
            RuleError::Mapped { ipv4 } => write!(
                f,
                "an IPv4 address written as IPv6 (IPv4-mapped); write {ipv4}: IPv4 clients \
                 are matched by their IPv4 address"
            ),
        }
    }
}

impl std::error::Error for RuleError {}

/// `address` as four dot-separated numbers of which one has a leading zero
/// (`010.0.0.1`, followed by `rest`, a prefix length or nothing): the refusal naming
/// both readings, or `None` if it is not that.
fn octal_looking(address: &str, rest: &str) -> Option<RuleError> {
    let parts: Vec<&str> = address.split('.').collect();
    let digits = |p: &&str| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit());
    if parts.len() != 4 || !parts.iter().all(digits) {
        return None;
    }
    if !parts.iter().any(|p| p.len() > 1 && p.starts_with('0')) {
        return None;
    }
    let read = |radix: u32| -> Option<String> {
        let numbers = parts
            .iter()
            .map(|p| {
                let radix = if p.len() > 1 && p.starts_with('0') {
                    radix
                } else {
                    10
                };
                u8::from_str_radix(p, radix).ok()
            })
            .collect::<Option<Vec<u8>>>()?;
        let ip = std::net::Ipv4Addr::new(numbers[0], numbers[1], numbers[2], numbers[3]);
        Some(format!("{ip}{rest}"))
    };
    let decimal = read(10)?;
    let octal = read(8).filter(|octal| *octal != decimal);
    Some(RuleError::LeadingZero { decimal, octal })
}

/// Where a rule was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// On the command line or in `TCP_HELLO_ALLOW` / `TCP_HELLO_DENY`.
    Flag,
    /// In a rule file, on a line counted from 1.
    File {
        /// The file as it was named on the command line.
        path: Arc<str>,
        /// The line.
        line: usize,
    },
}

/// One rule: an action, the addresses it applies to, and where it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What it does.
    pub action: Action,
    /// What it matches.
    pub pattern: Pattern,
    /// Where it came from.
    pub origin: Origin,
}

impl Rule {
    /// A rule given by a flag.
    pub fn flag(action: Action, pattern: Pattern) -> Rule {
        Rule {
            action,
            pattern,
            origin: Origin::Flag,
        }
    }
}

impl fmt::Display for Rule {
    /// As the user gave it: `--deny 10.0.0.0/8`, `--deny-file rules.txt:3: 10.0.0.0/8`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::Flag => write!(f, "{} {}", self.action.flag(), self.pattern),
            Origin::File { path, line } => write!(
                f,
                "{} {path}:{line}: {}",
                self.action.file_flag(),
                self.pattern
            ),
        }
    }
}

/// Why the rules could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// A rule file could not be read.
    Read {
        /// `--allow-file` or `--deny-file`.
        flag: &'static str,
        /// The file as named.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// A line of a rule file is not a rule.
    Line {
        /// The file as named.
        path: Arc<str>,
        /// The line, counted from 1.
        line: usize,
        /// What the line says, comment and blanks removed; shown escaped (the file may
        /// hold anything, escape sequences included).
        text: String,
        /// What is wrong with it.
        error: RuleError,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Read { flag, path, error } => {
                write!(f, "cannot read {flag} {}: {error}", path.display())
            }
            LoadError::Line {
                path,
                line,
                text,
                error,
            } => write!(f, "{path}:{line}: {}: {error}", LogText(text.as_bytes())),
        }
    }
}

// No `source()`: the message already ends with the cause, and a chain printed with
// `{:#}` would say it twice.
impl std::error::Error for LoadError {}

/// Reads a rule file's contents, as ncat reads its `--allowfile`: one rule per line,
/// `#` starts a comment (a whole line or its end), blank lines are ignored. `path` names
/// the file in errors and logs. Bytes that are not UTF-8 make their line a bad rule.
pub fn parse_file(path: &str, contents: &[u8], action: Action) -> Result<Vec<Rule>, LoadError> {
    let path: Arc<str> = path.into();
    let mut rules = Vec::new();
    for (index, raw) in contents.split(|&b| b == b'\n').enumerate() {
        let line = String::from_utf8_lossy(raw);
        let line = line.split('#').next().unwrap_or_default();
        // A byte-order mark, as some Windows editors write, is not part of the first rule.
        let text = line.trim_start_matches('\u{feff}').trim();
        if text.is_empty() {
            continue;
        }
        let pattern = text.parse().map_err(|error| LoadError::Line {
            path: Arc::clone(&path),
            line: index + 1,
            text: text.to_string(),
            error,
        })?;
        rules.push(Rule {
            action,
            pattern,
            origin: Origin::File {
                path: Arc::clone(&path),
                line: index + 1,
            },
        });
    }
    Ok(rules)
}

/// What [`Rules::decide`] found for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// The most specific rule that matches (a deny rule, if two are equally specific).
    Rule(&'a Rule),
    /// No rule matches: the default, deny when there are allow rules, else allow.
    Unmatched(Action),
}

impl Decision<'_> {
    /// What happens to the connection.
    pub fn action(&self) -> Action {
        match self {
            Decision::Rule(rule) => rule.action,
            Decision::Unmatched(action) => *action,
        }
    }

    /// Whether the connection is let in.
    pub fn allows(&self) -> bool {
        self.action() == Action::Allow
    }
}

impl fmt::Display for Decision<'_> {
    /// What decided: `--deny 127.0.0.2`, or `no --allow rule matches`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Rule(rule) => rule.fmt(f),
            Decision::Unmatched(Action::Deny) => f.write_str("no --allow rule matches"),
            Decision::Unmatched(Action::Allow) => f.write_str("no --deny rule matches"),
        }
    }
}

/// Every rule of one prefix length in one address family, sorted by network.
#[derive(Debug, Clone)]
struct Level {
    prefix: u8,
    /// Each network once, with the index of the rule that decides it.
    networks: Vec<(IpNet, usize)>,
}

/// The address rules of a server, ready to match: see the module's documentation.
/// The default (no rules) lets every address in.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    /// Longest prefix first.
    v4: Vec<Level>,
    v6: Vec<Level>,
    allow_list: bool,
}

impl Rules {
    /// Builds the tables for `rules`, given in any order. An address no rule matches is
    /// refused when any rule allows, or when `allow_list` is set: an `--allow-file` was
    /// given, even one without rules (as ncat does, so that an allow list emptied by
    /// mistake refuses everyone rather than no one).
    pub fn new(rules: Vec<Rule>, allow_list: bool) -> Rules {
        let allow_list = allow_list || rules.iter().any(|r| r.action == Action::Allow);
        let mut order: Vec<usize> = (0..rules.len()).collect();
        // Longest prefix first; within a network, deny before allow, then the first given,
        // so that deduplication keeps the rule that decides and names it as first given.
        order.sort_by_key(|&i| {
            let rule = &rules[i];
            let net = rule.pattern.net;
            (std::cmp::Reverse(net.prefix_len()), net, rule.action, i)
        });
        let (mut v4, mut v6) = (Vec::<Level>::new(), Vec::<Level>::new());
        for index in order {
            let net = rules[index].pattern.net;
            let levels = match net {
                IpNet::V4(_) => &mut v4,
                IpNet::V6(_) => &mut v6,
            };
            match levels.last_mut() {
                Some(level) if level.prefix == net.prefix_len() => {
                    if level.networks.last().is_some_and(|&(n, _)| n == net) {
                        continue;
                    }
                    level.networks.push((net, index));
                }
                _ => levels.push(Level {
                    prefix: net.prefix_len(),
                    networks: vec![(net, index)],
                }),
            }
        }
        Rules {
            rules,
            v4,
            v6,
            allow_list,
        }
    }

    /// The rules of `--allow`, `--deny`, `--allow-file` and `--deny-file`, files read in
    /// the order given. Fails on the first file that cannot be read or line that is not
    /// a rule.
    pub fn load(
        allow: &[Pattern],
        deny: &[Pattern],
        allow_files: &[PathBuf],
        deny_files: &[PathBuf],
    ) -> Result<Rules, LoadError> {
        let mut rules: Vec<Rule> = allow
            .iter()
            .map(|p| Rule::flag(Action::Allow, p.clone()))
            .chain(deny.iter().map(|p| Rule::flag(Action::Deny, p.clone())))
            .collect();
        for (action, files) in [(Action::Allow, allow_files), (Action::Deny, deny_files)] {
            for path in files {
                rules.extend(read_file(path, action)?);
            }
        }
        Ok(Rules::new(rules, !allow_files.is_empty()))
    }

    /// No rules at all: every address is let in, and nothing needs checking.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && !self.allow_list
    }

    /// Whether every address is refused: an allow list without a single allow rule.
    pub fn refuses_everyone(&self) -> bool {
        self.allow_list && !self.rules.iter().any(|r| r.action == Action::Allow)
    }

    /// Decides for a client's address: the longest matching prefix, deny at a tie,
    /// else the default. An IPv4-mapped IPv6 address is matched as IPv4.
    pub fn decide(&self, ip: IpAddr) -> Decision<'_> {
        let ip = ip.to_canonical();
        let levels = match ip {
            IpAddr::V4(_) => &self.v4,
            IpAddr::V6(_) => &self.v6,
        };
        for level in levels {
            // Cannot fail: each level's prefix came from a network of this family.
            let Ok(net) = IpNet::new(ip, level.prefix) else {
                continue;
            };
            let key = net.trunc();
            if let Ok(at) = level.networks.binary_search_by(|(n, _)| n.cmp(&key)) {
                return Decision::Rule(&self.rules[level.networks[at].1]);
            }
        }
        Decision::Unmatched(if self.allow_list {
            Action::Deny
        } else {
            Action::Allow
        })
    }
}

impl fmt::Display for Rules {
    /// A summary for the start-up log: `2 allow rules and 1 deny rule; an address no
    /// rule matches is refused`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Counts { allow, deny } = Counts::of(&self.rules);
        let count = |n: usize, what: &str| match n {
            1 => format!("1 {what} rule"),
            n => format!("{n} {what} rules"),
        };
        let (allow, deny) = (count(allow, "allow"), count(deny, "deny"));
        if self.refuses_everyone() {
            return write!(
                f,
                "{deny} and no allow rule, but an --allow-file was given: every address is \
                 refused"
            );
        }
        write!(
            f,
            "{allow} and {deny}; an address no rule matches is {}",
            if self.allow_list { "refused" } else { "let in" }
        )
    }
}

/// Reads and parses one rule file.
fn read_file(path: &Path, action: Action) -> Result<Vec<Rule>, LoadError> {
    let contents = std::fs::read(path).map_err(|error| LoadError::Read {
        flag: action.file_flag(),
        path: path.to_path_buf(),
        error,
    })?;
    parse_file(&path.display().to_string(), &contents, action)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(s: &str) -> Pattern {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn rules(allow: &[&str], deny: &[&str]) -> Rules {
        let allow: Vec<_> = allow.iter().map(|s| pattern(s)).collect();
        let deny: Vec<_> = deny.iter().map(|s| pattern(s)).collect();
        Rules::load(&allow, &deny, &[], &[]).unwrap()
    }

    /// The decision for `ip`, as `allow`/`deny` and the rule that decided (or `default`).
    fn decide(rules: &Rules, ip: &str) -> String {
        let decision = rules.decide(ip.parse().unwrap());
        let verb = if decision.allows() { "allow" } else { "deny" };
        match decision {
            Decision::Rule(rule) => format!("{verb} by {rule}"),
            Decision::Unmatched(_) => format!("{verb} by default"),
        }
    }

    #[test]
    fn addresses_are_hosts_and_cidrs_are_networks() {
        for (text, net) in [
            ("10.0.0.1", "10.0.0.1/32"),
            (" 10.0.0.1 ", "10.0.0.1/32"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("192.168.1.7/32", "192.168.1.7/32"),
            ("::1", "::1/128"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("2001:DB8::/32", "2001:db8::/32"),
            ("::/0", "::/0"),
            ("fe80::/10", "fe80::/10"),
        ] {
            let p = pattern(text);
            assert_eq!(p.net(), net.parse::<IpNet>().unwrap(), "{text}");
            assert_eq!(p.written(), text.trim());
        }
    }

    #[test]
    fn an_ipv4_number_with_a_leading_zero_is_refused_naming_both_readings() {
        let refused = |text: &str| text.parse::<Pattern>().unwrap_err();
        let octal = |decimal: &str, octal: Option<&str>| RuleError::LeadingZero {
            decimal: decimal.into(),
            octal: octal.map(String::from),
        };
        assert_eq!(refused("010.0.0.1"), octal("10.0.0.1", Some("8.0.0.1")));
        assert_eq!(
            refused("010.0.0.0/8"),
            octal("10.0.0.0/8", Some("8.0.0.0/8"))
        );
        // The same address either way, or not an octal number: one reading to give.
        assert_eq!(refused("10.0.0.01"), octal("10.0.0.1", None));
        assert_eq!(refused("09.0.0.1"), octal("9.0.0.1", None));
        let e = refused("010.0.0.1").to_string();
        assert!(e.contains("read as octal (8.0.0.1)"), "{e}");
        assert!(
            e.contains("write 10.0.0.1, or 8.0.0.1 if octal was meant"),
            "{e}"
        );
        // Not four numbers: not this mistake.
        assert_eq!(refused("010.0.0"), RuleError::NotAnAddress);
    }

    #[test]
    fn what_is_not_an_address_or_cidr_is_refused_with_an_example() {
        for bad in [
            "",
            " ",
            "10.0.0.300",
            "10.0.0",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "/8",
            "10.0.0.0/033",
            "localhost",
            "example.com",
            "10.0.0.1:80",
            "[::1]",
            "[2001:db8::]/32",
            "::1/129",
            "fe80::1%eth0",
            "10.0.0.1-50",
            "10.0.0.1 10.0.0.2",
            "10.0.0.0/255.0.0.0",
        ] {
            let e = bad.parse::<Pattern>().unwrap_err();
            assert_eq!(e, RuleError::NotAnAddress, "{bad:?}");
            assert_eq!(
                e.to_string(),
                "not an IP address or CIDR (e.g. 10.0.0.0/8 or 2001:db8::/32)"
            );
        }
    }

    #[test]
    fn a_cidr_with_host_bits_is_refused_naming_both_readings() {
        let e = "10.0.0.1/8".parse::<Pattern>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "host bits set past the prefix; write 10.0.0.0/8 for the network, or 10.0.0.1 \
             for the one address"
        );
        let e = "2001:db8::1/32".parse::<Pattern>().unwrap_err();
        assert!(e.to_string().contains("write 2001:db8::/32"), "{e}");
        assert!("0.0.0.1/0".parse::<Pattern>().is_err());
    }

    #[test]
    fn a_prefix_length_with_a_leading_zero_is_refused_with_its_decimal_form() {
        for (bad, net) in [
            ("10.0.0.0/08", "10.0.0.0/8"),
            ("10.0.0.0/010", "10.0.0.0/10"),
            ("0.0.0.0/00", "0.0.0.0/0"),
            ("2001:db8::/032", "2001:db8::/32"),
        ] {
            let e = bad.parse::<Pattern>().unwrap_err();
            assert_eq!(e, RuleError::PrefixZero { net: net.into() }, "{bad}");
            assert_eq!(
                e.to_string(),
                format!(
                    "a prefix length with a leading zero, which some tools read as octal \
                     (as 010.0.0.1 is 8.0.0.1 to inet_aton); write {net}"
                )
            );
        }
        for good in ["10.0.0.0/8", "0.0.0.0/0", "10.0.0.0/10", "2001:db8::/32"] {
            assert!(good.parse::<Pattern>().is_ok(), "{good}");
        }
    }

    #[test]
    fn ipv4_mapped_rules_are_refused_with_their_ipv4_form() {
        for (bad, ipv4) in [
            ("::ffff:10.0.0.1", "10.0.0.1"),
            ("::ffff:10.0.0.1/128", "10.0.0.1"),
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
            ("::ffff:0:0/96", "0.0.0.0/0"),
        ] {
            let e = bad.parse::<Pattern>().unwrap_err();
            assert_eq!(
                e,
                RuleError::Mapped {
                    ipv4: ipv4.to_string()
                },
                "{bad}"
            );
            assert!(e.to_string().contains(&format!("write {ipv4}:")), "{e}");
        }
        // A shorter prefix is an IPv6 network that merely contains the mapped range.
        assert!("::/80".parse::<Pattern>().is_ok());
    }

    #[test]
    fn rule_files_have_comments_blank_lines_and_one_rule_a_line() {
        let text = b"# office and VPN\n\
                     \n\
                     10.0.0.0/8   # office\n\
                     \t192.168.7.7\r\n\
                     2001:db8::/32#vpn\n\
                     \x20  # indented comment\n\
                     ::1";
        let rules = parse_file("rules.txt", text, Action::Deny).unwrap();
        let got: Vec<_> = rules.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            got,
            [
                "--deny-file rules.txt:3: 10.0.0.0/8",
                "--deny-file rules.txt:4: 192.168.7.7",
                "--deny-file rules.txt:5: 2001:db8::/32",
                "--deny-file rules.txt:7: ::1",
            ]
        );
        assert!(parse_file("empty", b"", Action::Allow).unwrap().is_empty());
        assert!(
            parse_file("bom", "\u{feff}10.0.0.1\n".as_bytes(), Action::Allow)
                .unwrap()
                .len()
                == 1
        );
    }

    #[test]
    fn a_bad_line_in_a_rule_file_names_the_file_and_line() {
        let text = b"# allowed\n10.0.0.0/8\n10.0.0.300  # typo\n::1\n";
        let e = parse_file("rules.txt", text, Action::Allow).unwrap_err();
        assert_eq!(
            e.to_string(),
            "rules.txt:3: 10.0.0.300: not an IP address or CIDR (e.g. 10.0.0.0/8 or \
             2001:db8::/32)"
        );
        let e = parse_file("r", b"10.0.0.1\n\xff\xfe\n", Action::Allow).unwrap_err();
        assert!(e.to_string().starts_with("r:2: "), "{e}");
        // A terminal escape, a bidirectional override and a carriage return reach the
        // message escaped, so that it stays one line that shows what the file holds.
        let e = parse_file(
            "r",
            b"\x1b[2J10.0.0.1\r\xe2\x80\xae8/0.0.0.01\n",
            Action::Deny,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "r:1: \\u{1b}[2J10.0.0.1\\r\\u{202e}8/0.0.0.01: not an IP address or CIDR (e.g. \
             10.0.0.0/8 or 2001:db8::/32)"
        );
        let e = parse_file("r", b"10.1.2.3/16\n", Action::Deny).unwrap_err();
        assert!(
            e.to_string().starts_with("r:1: 10.1.2.3/16: host bits"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_rule_file_names_the_file_and_the_cause() {
        let missing = PathBuf::from("/nonexistent/tcp-hello-rules.txt");
        let e = Rules::load(&[], &[], &[], std::slice::from_ref(&missing)).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("cannot read --deny-file /nonexistent/tcp-hello-rules.txt: ")
                && text.contains("No such file"),
            "{text}"
        );
    }

    #[test]
    fn no_rules_let_everyone_in() {
        let r = Rules::default();
        assert!(r.is_empty());
        assert_eq!(decide(&r, "10.0.0.1"), "allow by default");
        assert_eq!(decide(&r, "::1"), "allow by default");
    }

    #[test]
    fn deny_rules_alone_are_a_block_list() {
        let r = rules(&[], &["127.0.0.2", "2001:db8::/32"]);
        assert_eq!(decide(&r, "127.0.0.2"), "deny by --deny 127.0.0.2");
        assert_eq!(decide(&r, "127.0.0.1"), "allow by default");
        assert_eq!(decide(&r, "2001:db8:1::9"), "deny by --deny 2001:db8::/32");
        assert_eq!(decide(&r, "2001:db9::"), "allow by default");
        assert_eq!(
            r.decide("127.0.0.3".parse().unwrap()).to_string(),
            "no --deny rule matches"
        );
    }

    #[test]
    fn any_allow_rule_makes_an_allow_list() {
        let r = rules(&["127.0.0.1"], &["10.0.0.0/8"]);
        assert_eq!(decide(&r, "127.0.0.1"), "allow by --allow 127.0.0.1");
        assert_eq!(decide(&r, "127.0.0.2"), "deny by default");
        assert_eq!(decide(&r, "::1"), "deny by default");
        assert_eq!(
            r.decide("127.0.0.2".parse().unwrap()).to_string(),
            "no --allow rule matches"
        );
    }

    #[test]
    fn the_longest_prefix_wins_whichever_way_it_goes() {
        let r = rules(
            &["10.0.0.0/8", "10.1.2.0/24", "::/0"],
            &["10.1.0.0/16", "10.1.2.3", "2001:db8::/32"],
        );
        assert_eq!(decide(&r, "10.9.9.9"), "allow by --allow 10.0.0.0/8");
        assert_eq!(decide(&r, "10.1.9.9"), "deny by --deny 10.1.0.0/16");
        assert_eq!(decide(&r, "10.1.2.4"), "allow by --allow 10.1.2.0/24");
        assert_eq!(decide(&r, "10.1.2.3"), "deny by --deny 10.1.2.3");
        assert_eq!(decide(&r, "11.0.0.1"), "deny by default");
        assert_eq!(decide(&r, "2001:db8::1"), "deny by --deny 2001:db8::/32");
        assert_eq!(decide(&r, "2001:db9::1"), "allow by --allow ::/0");
        // An IPv6 catch-all says nothing about IPv4, and the other way round.
        assert_eq!(decide(&r, "192.0.2.1"), "deny by default");
        let r = rules(&[], &["0.0.0.0/0"]);
        assert_eq!(decide(&r, "::1"), "allow by default");
    }

    #[test]
    fn deny_wins_a_tie_whatever_the_order_given() {
        let r = rules(&["127.0.0.2"], &["127.0.0.2"]);
        assert_eq!(decide(&r, "127.0.0.2"), "deny by --deny 127.0.0.2");
        let deny_first = Rules::new(
            vec![
                Rule::flag(Action::Deny, pattern("10.0.0.0/8")),
                Rule::flag(Action::Allow, pattern("10.0.0.0/8")),
                Rule::flag(Action::Allow, pattern("10.0.0.0/8")),
            ],
            false,
        );
        assert_eq!(decide(&deny_first, "10.2.3.4"), "deny by --deny 10.0.0.0/8");
        // Two equal rules: the first given is the one named.
        let r = Rules::new(
            parse_file("a", b"10.0.0.0/8\n10.0.0.0/8\n", Action::Deny).unwrap(),
            false,
        );
        assert_eq!(
            decide(&r, "10.2.3.4"),
            "deny by --deny-file a:1: 10.0.0.0/8"
        );
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_rules() {
        let r = rules(&["127.0.0.0/8"], &["127.0.0.2"]);
        assert_eq!(
            decide(&r, "::ffff:127.0.0.1"),
            "allow by --allow 127.0.0.0/8"
        );
        assert_eq!(decide(&r, "::ffff:127.0.0.2"), "deny by --deny 127.0.0.2");
        assert_eq!(decide(&r, "::ffff:10.0.0.1"), "deny by default");
        // Only the mapped form is IPv4: the deprecated compatible form ::a.b.c.d is not.
        assert_eq!(decide(&r, "::127.0.0.1"), "deny by default");
    }

    #[test]
    fn sources_count_ipv4_as_is_mapped_as_ipv4_and_ipv6_by_its_64() {
        let key = |s: &str| source_key(s.parse().unwrap()).to_string();
        assert_eq!(key("192.0.2.9"), "192.0.2.9");
        assert_eq!(key("::ffff:192.0.2.9"), "192.0.2.9");
        assert_eq!(key("2001:db8::1"), "2001:db8::");
        assert_eq!(key("2001:db8::ffff:2"), "2001:db8::");
        assert_eq!(key("2001:db8:0:1::1"), "2001:db8:0:1::");
        // IPv4-compatible (deprecated) addresses are IPv6 as far as the kernel goes.
        assert_eq!(key("::192.0.2.9"), "::");
    }

    #[test]
    fn an_allow_file_makes_an_allow_list_even_when_empty() {
        let r = Rules::new(Vec::new(), true);
        assert!(!r.is_empty() && r.refuses_everyone());
        assert_eq!(decide(&r, "127.0.0.1"), "deny by default");
        assert!(r.to_string().contains("every address is refused"), "{r}");
        let r = Rules::new(
            parse_file("allow.txt", b"127.0.0.1\n", Action::Allow).unwrap(),
            true,
        );
        assert!(!r.refuses_everyone());
        assert_eq!(
            decide(&r, "127.0.0.1"),
            "allow by --allow-file allow.txt:1: 127.0.0.1"
        );
        assert_eq!(
            r.to_string(),
            "1 allow rule and 0 deny rules; an address no rule matches is refused"
        );
    }

    #[test]
    fn many_rules_match_as_a_linear_scan_would() {
        // Every /32, /24 and /16 around a few addresses, allow and deny alternating,
        // checked against the definition: the longest matching prefix, deny at a tie.
        let mut all = Vec::new();
        for (i, a) in (0u32..64).enumerate() {
            let ip = std::net::Ipv4Addr::from(
                0x0a00_0000 | (a.wrapping_mul(2_654_435_761) & 0x00ff_ffff),
            );
            for len in [32, 24, 16, 12] {
                let net = Ipv4Net::new(ip, len).unwrap().trunc();
                let action = if (i + len as usize) % 3 == 0 {
                    Action::Allow
                } else {
                    Action::Deny
                };
                all.push(Rule::flag(action, pattern(&net.to_string())));
            }
        }
        let r = Rules::new(all.clone(), false);
        for probe in 0u32..20_000 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 | ((probe * 40_503) & 0x00ff_ffff));
            let best = all
                .iter()
                .filter(|rule| rule.pattern.net().contains(&IpAddr::V4(ip)))
                .max_by_key(|rule| (rule.pattern.net().prefix_len(), rule.action == Action::Deny));
            let want = best.map_or(Action::Allow, |rule| rule.action);
            assert_eq!(r.decide(IpAddr::V4(ip)).action(), want, "{ip}");
        }
    }
}
