//! What an operator's pattern can match, as far as that can be told cheaply: the whole
//! language when the pattern is a small finite set of strings (`latest`, `v1|v2`, `v[12]`),
//! and a few of its members otherwise. Whole-set checks use it to tell whether two rules can
//! select the same tag or image without deciding regular-language intersection.

use regex::Regex;
use regex_syntax::hir::{Class, Hir, HirKind};

/// Strings enumerated at most; a pattern with more is treated as open.
const MAX_MEMBERS: usize = 64;
/// Samples drawn from an open pattern.
const MAX_SAMPLES: usize = 8;
/// Characters a sample prefers from a class: what tags and repository paths are made of.
const PREFERRED: &str = "a0v1._-/A";

/// Strings a compiled pattern matches.
pub struct Language {
    pub members: Vec<String>,
    /// `members` is the whole language.
    pub exact: bool,
}

/// The language of `re`, a pattern compiled as `^(?:...)$`.
pub fn of(re: &Regex) -> Language {
    let Ok(hir) = regex_syntax::Parser::new().parse(re.as_str()) else {
        return Language {
            members: Vec::new(),
            exact: false,
        };
    };
    let (members, exact) = match finite(&hir) {
        Some(m) => (m, true),
        None => (samples(&hir), false),
    };
    // Anchors and word boundaries were read as empty above: keep what really matches. For a
    // finite pattern that filter leaves exactly its language.
    let members = members.into_iter().filter(|m| re.is_match(m)).collect();
    Language { members, exact }
}

/// Whether two selections can share a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlap {
    /// This member of the first selection is selected by the second too.
    Certain(String),
    /// They cannot: one of them is finite and none of its members is in the other.
    Never,
    /// The patterns do not tell.
    Unknown,
}

/// One side of an [`overlap`] question: the patterns a rule lists, and the rule's whole
/// selection (patterns minus exclusions) over strings of the other side's kind.
pub struct Side<'a> {
    pub patterns: &'a [Regex],
    pub selects: &'a dyn Fn(&str) -> bool,
    /// A member of this side as the other side would name it (`None`: it cannot collide).
    pub to_other: &'a dyn Fn(&str) -> Option<String>,
}

/// Whether some string selected by `a` is, once mapped, selected by `b`. The witness of a
/// certain overlap is named as `a` sees it.
pub fn overlap(a: &Side, b: &Side) -> Overlap {
    let la: Vec<Language> = a.patterns.iter().map(of).collect();
    let lb: Vec<Language> = b.patterns.iter().map(of).collect();
    let hit = |from: &Side, to: &Side, m: &str| {
        (from.selects)(m) && (from.to_other)(m).is_some_and(|x| (to.selects)(&x))
    };
    if let Some(m) = la.iter().flat_map(|l| &l.members).find(|m| hit(a, b, m)) {
        return Overlap::Certain(m.clone());
    }
    if let Some(m) = lb.iter().flat_map(|l| &l.members).find(|m| hit(b, a, m)) {
        return Overlap::Certain((b.to_other)(m).unwrap_or_else(|| m.clone()));
    }
    if la.iter().all(|l| l.exact) || lb.iter().all(|l| l.exact) {
        Overlap::Never
    } else {
        Overlap::Unknown
    }
}

/// Every string `hir` matches, when there are few (looks read as empty).
fn finite(hir: &Hir) -> Option<Vec<String>> {
    let out = match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => vec![String::new()],
        HirKind::Literal(l) => vec![String::from_utf8(l.0.to_vec()).ok()?],
        HirKind::Class(c) => {
            let chars = class_chars(c, MAX_MEMBERS + 1);
            if chars.len() > MAX_MEMBERS {
                return None;
            }
            chars.into_iter().map(String::from).collect()
        }
        HirKind::Capture(c) => finite(&c.sub)?,
        HirKind::Repetition(r) => {
            let max = r.max?;
            if max > 8 {
                return None;
            }
            let one = finite(&r.sub)?;
            let mut out = Vec::new();
            let mut power = vec![String::new()];
            for k in 0..=max {
                if k >= r.min {
                    out.extend(power.iter().cloned());
                }
                power = product(&power, &one, MAX_MEMBERS + 1);
                if out.len() > MAX_MEMBERS || power.len() > MAX_MEMBERS {
                    return None;
                }
            }
            out
        }
        HirKind::Concat(subs) => {
            let mut out = vec![String::new()];
            for s in subs {
                out = product(&out, &finite(s)?, MAX_MEMBERS + 1);
                if out.len() > MAX_MEMBERS {
                    return None;
                }
            }
            out
        }
        HirKind::Alternation(subs) => {
            let mut out = Vec::new();
            for s in subs {
                out.extend(finite(s)?);
                if out.len() > MAX_MEMBERS {
                    return None;
                }
            }
            out
        }
    };
    let mut out = out;
    out.sort();
    out.dedup();
    Some(out)
}

/// A few strings `hir` matches: the shortest of each branch, and one more repetition.
fn samples(hir: &Hir) -> Vec<String> {
    let mut out = match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => vec![String::new()],
        HirKind::Literal(l) => vec![String::from_utf8_lossy(&l.0).into_owned()],
        HirKind::Class(c) => class_sample(c).map(String::from).into_iter().collect(),
        HirKind::Capture(c) => samples(&c.sub),
        HirKind::Repetition(r) => {
            let one = samples(&r.sub);
            let times =
                |n: u32| -> Vec<String> { one.iter().map(|s| s.repeat(n as usize)).collect() };
            let mut out = times(r.min);
            if r.min == 0 && r.max != Some(0) {
                out.extend(times(1));
            }
            out
        }
        HirKind::Concat(subs) => subs.iter().fold(vec![String::new()], |acc, s| {
            product(&acc, &samples(s), MAX_SAMPLES)
        }),
        HirKind::Alternation(subs) => subs.iter().flat_map(samples).collect(),
    };
    out.truncate(MAX_SAMPLES);
    out
}

fn product(a: &[String], b: &[String], cap: usize) -> Vec<String> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            if out.len() == cap {
                return out;
            }
            out.push(format!("{x}{y}"));
        }
    }
    out
}

/// Up to `cap` characters of a class.
fn class_chars(c: &Class, cap: usize) -> Vec<char> {
    let mut out = Vec::new();
    match c {
        Class::Unicode(u) => {
            for r in u.ranges() {
                for ch in r.start()..=r.end() {
                    if out.len() == cap {
                        return out;
                    }
                    out.push(ch);
                }
            }
        }
        Class::Bytes(b) => {
            for r in b.ranges() {
                for byte in r.start()..=r.end() {
                    if out.len() == cap {
                        return out;
                    }
                    out.push(char::from(byte));
                }
            }
        }
    }
    out
}

/// One character of a class, a tag or path character when the class has one.
fn class_sample(c: &Class) -> Option<char> {
    let contains = |ch: char| match c {
        Class::Unicode(u) => u.ranges().iter().any(|r| r.start() <= ch && ch <= r.end()),
        Class::Bytes(b) => {
            ch.is_ascii()
                && b.ranges()
                    .iter()
                    .any(|r| r.start() <= ch as u8 && ch as u8 <= r.end())
        }
    };
    PREFERRED
        .chars()
        .find(|&ch| contains(ch))
        .or_else(|| class_chars(c, 1).first().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(p: &str) -> Regex {
        Regex::new(&format!("^(?:{p})$")).unwrap()
    }

    fn tags(p: &[&str]) -> Vec<Regex> {
        p.iter().map(|p| re(p)).collect()
    }

    fn tag_overlap(a: &[&str], b: &[&str]) -> Overlap {
        let (pa, pb) = (tags(a), tags(b));
        let sel_a = |s: &str| pa.iter().any(|r| r.is_match(s));
        let sel_b = |s: &str| pb.iter().any(|r| r.is_match(s));
        let same = |s: &str| Some(s.to_owned());
        overlap(
            &Side {
                patterns: &pa,
                selects: &sel_a,
                to_other: &same,
            },
            &Side {
                patterns: &pb,
                selects: &sel_b,
                to_other: &same,
            },
        )
    }

    #[test]
    fn finite_patterns_are_enumerated_whole() {
        let l = of(&re("v[12]|latest"));
        assert!(l.exact);
        assert_eq!(l.members, ["latest", "v1", "v2"]);
        let l = of(&re("v[0-9]+"));
        assert!(!l.exact);
        assert!(l.members.contains(&"v0".to_owned()), "{:?}", l.members);
    }

    #[test]
    fn overlaps_are_certain_impossible_or_unknown() {
        assert_eq!(
            tag_overlap(&["latest"], &["v[0-9]+", "latest"]),
            Overlap::Certain("latest".into())
        );
        assert_eq!(
            tag_overlap(&[r"v[0-9]+\.[0-9]+"], &[".*"]),
            Overlap::Certain("v0.0".into())
        );
        assert_eq!(tag_overlap(&["latest", "stable"], &["v.*"]), Overlap::Never);
        // `v.*-rc` and `.*-rc[0-9]` share `v-rc1`, which no sample finds: not decided.
        assert_eq!(tag_overlap(&["v.*-rc"], &[".*-rc[0-9]"]), Overlap::Unknown);
    }
}
