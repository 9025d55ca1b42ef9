//! The address rules in force, and reading their files again on SIGHUP.
//!
//! A reload builds a whole new [`Rules`] from the flags' rules and the files as they are
//! now, then swaps it in at once: a file that cannot be read, or a line that is not a
//! rule, leaves the rules in force untouched, never half of a file. The rules decide only
//! at admission, so a swap applies to the connections accepted and the datagrams received
//! after it; connections already admitted never look at the rules again.
//!
//! Without a rule file nothing can change, and the rules are read without a lock. With
//! one, each admission clones an `Arc` under a read lock held only for the clone: a few
//! atomic operations beside an accept and a thread hand-off. A reload reads the files and
//! builds the tables before it takes the write lock, which it holds for one assignment,
//! so no admission waits for a file.

use std::fmt;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use super::{Action, LoadError, Pattern, Rule, Rules};

/// The rules a server admits by, and the files they are reloaded from.
#[derive(Debug)]
pub struct LiveRules {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    /// No rule file: the rules never change.
    Fixed(Rules),
    /// Rule files: the rules are replaced whole by each reload.
    Files {
        current: RwLock<Arc<Rules>>,
        sources: Sources,
    },
}

/// Where the rules come from: the flags' rules never change; the files are read again.
#[derive(Debug)]
struct Sources {
    allow: Vec<Pattern>,
    deny: Vec<Pattern>,
    allow_files: Vec<PathBuf>,
    deny_files: Vec<PathBuf>,
}

impl Sources {
    fn load(&self) -> Result<Rules, LoadError> {
        Rules::load(&self.allow, &self.deny, &self.allow_files, &self.deny_files)
    }

    /// The files, as named on the command line: `allow.txt, deny.txt`.
    fn files(&self) -> String {
        self.allow_files
            .iter()
            .chain(&self.deny_files)
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// No rules: every address is let in.
impl Default for LiveRules {
    fn default() -> LiveRules {
        LiveRules::fixed(Rules::default())
    }
}

impl LiveRules {
    /// Rules that no reload changes.
    pub fn fixed(rules: Rules) -> LiveRules {
        LiveRules {
            inner: Inner::Fixed(rules),
        }
    }

    /// The rules of `--allow`, `--deny`, `--allow-file` and `--deny-file`, as
    /// [`Rules::load`] reads them; with a file, [`LiveRules::reload`] reads the files
    /// again.
    pub fn load(
        allow: &[Pattern],
        deny: &[Pattern],
        allow_files: &[PathBuf],
        deny_files: &[PathBuf],
    ) -> Result<LiveRules, LoadError> {
        let sources = Sources {
            allow: allow.to_vec(),
            deny: deny.to_vec(),
            allow_files: allow_files.to_vec(),
            deny_files: deny_files.to_vec(),
        };
        let rules = sources.load()?;
        let inner = if allow_files.is_empty() && deny_files.is_empty() {
            Inner::Fixed(rules)
        } else {
            Inner::Files {
                current: RwLock::new(Arc::new(rules)),
                sources,
            }
        };
        Ok(LiveRules { inner })
    }

    /// Whether any rule comes from a file: whether there is anything to reload.
    pub fn has_files(&self) -> bool {
        matches!(self.inner, Inner::Files { .. })
    }

    /// The rules in force now, to decide one admission by.
    pub fn current(&self) -> Current<'_> {
        match &self.inner {
            Inner::Fixed(rules) => Current::Fixed(rules),
            Inner::Files { current, .. } => Current::Swapped(Arc::clone(
                // A swap is one assignment: a panic elsewhere cannot leave it half done.
                &current.read().unwrap_or_else(PoisonError::into_inner),
            )),
        }
    }

    /// Reads the rule files again and puts the rules they give in force, or, if a file
    /// cannot be read or a line is not a rule, leaves the rules in force as they are and
    /// says which file and line, and why. Without rule files there is nothing to read,
    /// and nothing changes.
    pub fn reload(&self) -> Result<Reloaded, LoadError> {
        let Inner::Files { current, sources } = &self.inner else {
            let rules = self.current();
            return Ok(Reloaded::new(String::new(), &rules, &rules));
        };
        let fresh = Arc::new(sources.load()?);
        let old = std::mem::replace(
            &mut *current.write().unwrap_or_else(PoisonError::into_inner),
            Arc::clone(&fresh),
        );
        Ok(Reloaded::new(sources.files(), &old, &fresh))
    }
}

/// The rules in force at one moment, kept for as long as a decision needs them: a
/// reload meanwhile does not change them under it.
#[derive(Debug)]
pub enum Current<'a> {
    /// Rules that never change.
    Fixed(&'a Rules),
    /// The rules last loaded from their files.
    Swapped(Arc<Rules>),
}

impl Deref for Current<'_> {
    type Target = Rules;

    fn deref(&self) -> &Rules {
        match self {
            Current::Fixed(rules) => rules,
            Current::Swapped(rules) => rules,
        }
    }
}

/// How many rules of each kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Allow rules.
    pub allow: usize,
    /// Deny rules.
    pub deny: usize,
}

impl Counts {
    /// The rules of each kind in `rules`, duplicates included, as the files list them.
    pub fn of(rules: &[Rule]) -> Counts {
        let allow = rules.iter().filter(|r| r.action == Action::Allow).count();
        Counts {
            allow,
            deny: rules.len() - allow,
        }
    }
}

/// What a reload changed: rules added and removed, a rule being its action and network
/// (where it is written does not count: a rule moved to another line is no change).
/// Counted with repeats, so that `after = before + added - removed` for each kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Change {
    /// Rules in the new set and not in the old.
    pub added: usize,
    /// Rules in the old set and not in the new.
    pub removed: usize,
}

impl Change {
    /// What changed from `before` to `after`.
    pub fn between(before: &[Rule], after: &[Rule]) -> Change {
        let key = |rules: &[Rule]| {
            let mut keys: Vec<_> = rules.iter().map(|r| (r.action, r.pattern.net())).collect();
            keys.sort_unstable();
            keys
        };
        let (before, after) = (key(before), key(after));
        let (mut b, mut a) = (before.iter().peekable(), after.iter().peekable());
        let mut change = Change::default();
        loop {
            match (b.peek(), a.peek()) {
                (None, None) => return change,
                (Some(_), None) => {
                    change.removed += b.count();
                    return change;
                }
                (None, Some(_)) => {
                    change.added += a.count();
                    return change;
                }
                (Some(old), Some(new)) => match old.cmp(new) {
                    std::cmp::Ordering::Equal => {
                        b.next();
                        a.next();
                    }
                    std::cmp::Ordering::Less => {
                        change.removed += 1;
                        b.next();
                    }
                    std::cmp::Ordering::Greater => {
                        change.added += 1;
                        a.next();
                    }
                },
            }
        }
    }

    /// Whether nothing was added or removed.
    pub fn is_none(&self) -> bool {
        self.added == 0 && self.removed == 0
    }
}

/// What a reload did, for its log line (see its `Display`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The files read, as named on the command line.
    pub files: String,
    /// The rules in force before, counted.
    pub before: Counts,
    /// The rules in force now, counted.
    pub after: Counts,
    /// What changed.
    pub change: Change,
    /// Whether every address is now refused (an allow list left without a rule).
    pub refuses_everyone: bool,
}

impl Reloaded {
    fn new(files: String, before: &Rules, after: &Rules) -> Reloaded {
        Reloaded {
            files,
            before: Counts::of(&before.rules),
            after: Counts::of(&after.rules),
            change: Change::between(&before.rules, &after.rules),
            refuses_everyone: after.refuses_everyone(),
        }
    }
}

impl fmt::Display for Reloaded {
    /// `address rules reloaded from deny.txt: 0 allow, 3 deny (was 0, 2; 1 added, 0
    /// removed)`, or `...: unchanged, 0 allow, 2 deny`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (now, was) = (self.after, self.before);
        write!(f, "address rules reloaded from {}: ", self.files)?;
        if self.change.is_none() {
            write!(f, "unchanged, {} allow, {} deny", now.allow, now.deny)?;
        } else {
            write!(
                f,
                "{} allow, {} deny (was {}, {}; {} added, {} removed); new connections \
                 follow them",
                now.allow, now.deny, was.allow, was.deny, self.change.added, self.change.removed
            )?;
        }
        if self.refuses_everyone {
            f.write_str(
                "; no allow rule is left but an --allow-file is given, so every address is \
                 refused: add allow rules to it",
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_file;
    use super::*;

    fn file(action: Action, text: &str) -> Vec<Rule> {
        parse_file("f", text.as_bytes(), action).unwrap()
    }

    #[test]
    fn counts_are_by_kind_with_repeats() {
        let mut rules = file(Action::Allow, "10.0.0.0/8\n10.0.0.0/8\n::1\n");
        rules.extend(file(Action::Deny, "10.1.0.0/16\n"));
        assert_eq!(Counts::of(&rules), Counts { allow: 3, deny: 1 });
        assert_eq!(Counts::of(&[]), Counts::default());
    }

    #[test]
    fn a_change_counts_rules_added_and_removed_by_action_and_network() {
        let change = |before: &[Rule], after: &[Rule]| {
            let c = Change::between(before, after);
            (c.added, c.removed)
        };
        let deny = |text| file(Action::Deny, text);
        let allow = |text| file(Action::Allow, text);
        assert_eq!(change(&[], &[]), (0, 0));
        assert_eq!(change(&deny("10.0.0.1\n"), &deny("10.0.0.1\n")), (0, 0));
        // Moved to another line, written otherwise, or reordered: the same rules.
        assert_eq!(
            change(
                &deny("10.0.0.1\n10.0.0.0/8\n"),
                &deny("# moved\n\n10.0.0.0/8\n10.0.0.1/32 # a host\n")
            ),
            (0, 0)
        );
        assert_eq!(
            change(&deny("10.0.0.1\n"), &deny("10.0.0.1\n10.0.0.2\n")),
            (1, 0)
        );
        assert_eq!(
            change(&deny("10.0.0.1\n10.0.0.2\n"), &deny("10.0.0.2\n")),
            (0, 1)
        );
        // One rule replaced by another: the counts alone would not show it.
        assert_eq!(change(&deny("10.0.0.1\n"), &deny("10.0.0.2\n")), (1, 1));
        // The same network with the other action is another rule.
        assert_eq!(change(&deny("10.0.0.1\n"), &allow("10.0.0.1\n")), (1, 1));
        // Repeats count, so that the counts add up.
        assert_eq!(change(&deny("::1\n"), &deny("::1\n::1\n")), (1, 0));
        assert_eq!(change(&deny("::1\n::1\n::1\n"), &deny("::1\n")), (0, 2));
        assert_eq!(change(&deny("::1\n10.0.0.0/8\n"), &[]), (0, 2));
        assert_eq!(change(&[], &allow("::1\n10.0.0.0/8\n")), (2, 0));
    }

    #[test]
    fn the_counts_add_up_whatever_the_change() {
        let sets = [
            "",
            "10.0.0.1\n",
            "10.0.0.1\n10.0.0.1\n",
            "10.0.0.0/8\n10.0.0.1\n::1\n",
            "::1\n2001:db8::/32\n10.0.0.2\n",
        ];
        for before in sets {
            for after in sets {
                let (b, a) = (file(Action::Deny, before), file(Action::Deny, after));
                let c = Change::between(&b, &a);
                assert_eq!(
                    b.len() + c.added - c.removed,
                    a.len(),
                    "{before:?} {after:?}"
                );
                let sorted = |rules: &[Rule]| {
                    let mut nets: Vec<_> = rules.iter().map(|r| r.pattern.net()).collect();
                    nets.sort();
                    nets
                };
                assert_eq!(
                    c.is_none(),
                    sorted(&b) == sorted(&a),
                    "{before:?} {after:?}"
                );
            }
        }
    }

    fn reloaded(before: Counts, after: Counts, added: usize, removed: usize) -> Reloaded {
        Reloaded {
            files: "allow.txt, deny.txt".into(),
            before,
            after,
            change: Change { added, removed },
            refuses_everyone: false,
        }
    }

    #[test]
    fn the_log_line_says_what_changed_or_that_nothing_did() {
        let c = |allow, deny| Counts { allow, deny };
        assert_eq!(
            reloaded(c(10, 3), c(12, 3), 3, 1).to_string(),
            "address rules reloaded from allow.txt, deny.txt: 12 allow, 3 deny (was 10, 3; 3 \
             added, 1 removed); new connections follow them"
        );
        assert_eq!(
            reloaded(c(1, 2), c(1, 2), 0, 0).to_string(),
            "address rules reloaded from allow.txt, deny.txt: unchanged, 1 allow, 2 deny"
        );
        let empty = Reloaded {
            refuses_everyone: true,
            ..reloaded(c(1, 0), c(0, 0), 0, 1)
        };
        assert!(
            empty.to_string().ends_with(
                "(was 1, 0; 0 added, 1 removed); new connections follow them; no allow rule \
                 is left but an --allow-file is given, so every address is refused: add allow \
                 rules to it"
            ),
            "{empty}"
        );
    }

    /// A rule file of the test's own, and `LiveRules` reading it as `--deny-file`.
    fn deny_file(text: &str) -> (tempfile::TempDir, PathBuf, LiveRules) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deny.txt");
        std::fs::write(&path, text).unwrap();
        let live = LiveRules::load(&[], &[], &[], std::slice::from_ref(&path)).unwrap();
        (dir, path, live)
    }

    fn allows(live: &LiveRules, ip: &str) -> bool {
        live.current().decide(ip.parse().unwrap()).allows()
    }

    #[test]
    fn a_reload_puts_the_file_as_it_is_now_in_force() {
        let (_dir, path, live) = deny_file("10.0.0.1\n");
        assert!(live.has_files());
        assert!(!allows(&live, "10.0.0.1") && allows(&live, "10.0.0.2"));
        let held = live.current();
        std::fs::write(&path, "10.0.0.2\n10.0.0.3\n").unwrap();
        let r = live.reload().unwrap();
        assert_eq!(r.files, path.display().to_string());
        assert_eq!(r.before, Counts { allow: 0, deny: 1 });
        assert_eq!(r.after, Counts { allow: 0, deny: 2 });
        assert_eq!(
            r.change,
            Change {
                added: 2,
                removed: 1
            }
        );
        assert!(allows(&live, "10.0.0.1") && !allows(&live, "10.0.0.2"));
        // Rules taken before the reload stay as they were for whoever holds them.
        assert!(!held.decide("10.0.0.1".parse().unwrap()).allows());
        let again = live.reload().unwrap();
        assert!(again.change.is_none(), "{again}");
        assert!(again.to_string().contains("unchanged"), "{again}");
    }

    #[test]
    fn a_broken_or_missing_file_keeps_the_rules_in_force() {
        let (_dir, path, live) = deny_file("10.0.0.1\n");
        // Its first line alone would deny 10.0.0.2: nothing of a broken file is taken.
        std::fs::write(&path, "10.0.0.2\n10.0.0.300\n").unwrap();
        let e = live.reload().unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{}:2: 10.0.0.300: not an IP address or CIDR (e.g. 10.0.0.0/8 or \
                 2001:db8::/32)",
                path.display()
            )
        );
        assert!(!allows(&live, "10.0.0.1") && allows(&live, "10.0.0.2"));
        std::fs::remove_file(&path).unwrap();
        let e = live.reload().unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot read --deny-file {}: ", path.display())),
            "{e}"
        );
        assert!(!allows(&live, "10.0.0.1") && allows(&live, "10.0.0.2"));
    }

    #[test]
    fn rules_from_flags_alone_are_fixed_and_stay_through_a_reload() {
        let deny: Pattern = "10.0.0.1".parse().unwrap();
        let live = LiveRules::load(&[], &[deny], &[], &[]).unwrap();
        assert!(!live.has_files());
        assert!(matches!(live.current(), Current::Fixed(_)));
        let r = live.reload().unwrap();
        assert!(r.change.is_none());
        assert!(!allows(&live, "10.0.0.1"));
    }

    #[test]
    fn an_allow_file_emptied_by_a_reload_refuses_everyone_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allow.txt");
        std::fs::write(&path, "10.0.0.1\n").unwrap();
        let live = LiveRules::load(&[], &[], std::slice::from_ref(&path), &[]).unwrap();
        assert!(allows(&live, "10.0.0.1"));
        std::fs::write(&path, "# nobody\n").unwrap();
        let r = live.reload().unwrap();
        assert!(r.refuses_everyone, "{r}");
        assert!(!allows(&live, "10.0.0.1"));
        assert!(r.to_string().contains("every address is refused"), "{r}");
    }
}
