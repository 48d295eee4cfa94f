//! Checks of a rule set as a whole, which no single rule can fail on its own: a target listed
//! twice, a rule that copies into its own source, rules that copy into each other's sources,
//! and rules that write the same target repository from different sources. Hosts are
//! compared as the network sees them ([`RegistryConfig::network_host`]), so `localhost:5000`
//! and `127.0.0.1:5000` are one registry.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use super::language::{Overlap, Side, overlap};
use super::{Rule, RuleError};
use crate::reference::Repository;
use crate::registry::settings::RegistryConfig;

/// Where a compiled rule was written: the file, its source and each of its targets.
pub struct Sites {
    pub file: usize,
    pub source: Range<usize>,
    pub targets: Vec<Range<usize>>,
}

/// Findings of the whole-set checks.
#[derive(Default)]
pub struct Findings {
    pub errors: Vec<RuleError>,
    pub warnings: Vec<RuleError>,
}

/// A repository as the network sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Place {
    host: String,
    path: String,
}

/// How one repository prefix relates to another on the same registry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Nesting {
    Same,
    /// The first is the second plus `/p`.
    Below(String),
    /// The second is the first plus `/p`.
    Above(String),
}

fn nesting(a: &Place, b: &Place) -> Option<Nesting> {
    if a.host != b.host {
        return None;
    }
    if a.path == b.path {
        return Some(Nesting::Same);
    }
    let under = |x: &str, y: &str| x.strip_prefix(y)?.strip_prefix('/').map(str::to_owned);
    under(&a.path, &b.path)
        .map(Nesting::Below)
        .or_else(|| under(&b.path, &a.path).map(Nesting::Above))
}

/// Run every whole-set check. `files` are the `(name, text)` pairs the rules came from.
pub fn check(
    rules: &[Rule],
    sites: &[Sites],
    files: &[(String, String)],
    config: &RegistryConfig,
) -> Findings {
    let place = |r: &Repository| Place {
        host: config.network_host(&r.registry),
        path: r.path.clone(),
    };
    let at = |file: usize, span: &Range<usize>| {
        let (f, text) = &files[file];
        let (line, column) = super::line_col(text, span.start);
        (f.clone(), line, column)
    };
    let error_at = |file: usize, span: &Range<usize>, message: String| {
        let (file, line, column) = at(file, span);
        RuleError {
            file,
            line,
            column,
            message,
        }
    };
    let where_ = |file: usize, span: &Range<usize>| {
        let (f, line, column) = at(file, span);
        format!("{f}:{line}:{column}")
    };
    let mut out = Findings::default();
    let sources: Vec<Place> = rules.iter().map(|r| place(&r.source)).collect();
    let targets: Vec<Vec<Place>> = rules
        .iter()
        .map(|r| r.targets.iter().map(place).collect())
        .collect();
    // The same registry under two names reads as a mistake only once explained.
    let alias = |a: &Repository, b: &Repository| {
        if a.registry != b.registry {
            format!(" ({} and {} are the same registry)", a.registry, b.registry)
        } else {
            String::new()
        }
    };

    for (i, rule) in rules.iter().enumerate() {
        let s = &sites[i];
        let mut seen: BTreeMap<&Place, usize> = BTreeMap::new();
        for (k, t) in targets[i].iter().enumerate() {
            if let Some(&first) = seen.get(t) {
                out.errors.push(error_at(
                    s.file,
                    &s.targets[k],
                    format!(
                        "rule {:?}: target {} is listed twice (also at {}){}",
                        rule.name,
                        rule.targets[k],
                        where_(s.file, &s.targets[first]),
                        alias(&rule.targets[first], &rule.targets[k]),
                    ),
                ));
                continue;
            }
            seen.insert(t, k);
            let message = match nesting(t, &sources[i]) {
                Some(Nesting::Same | Nesting::Below(_)) => format!(
                    "rule {:?}: target {} is the source or lies under it: each copy would trigger the rule again{}",
                    rule.name,
                    rule.targets[k],
                    alias(&rule.source, &rule.targets[k]),
                ),
                Some(Nesting::Above(p)) => format!(
                    "rule {:?}: target {} contains the source {}: images under {}/{p}/ would be copied into the source{}",
                    rule.name,
                    rule.targets[k],
                    rule.source,
                    rule.source,
                    alias(&rule.source, &rule.targets[k]),
                ),
                None => continue,
            };
            out.errors.push(error_at(s.file, &s.targets[k], message));
        }
    }

    // Rules whose copies land where another rule watches: edges of the source -> target graph.
    let mut by_host: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (j, s) in sources.iter().enumerate() {
        by_host.entry(&s.host).or_default().push(j);
    }
    let mut edges: Vec<Vec<(usize, usize)>> = vec![Vec::new(); rules.len()];
    for (i, ts) in targets.iter().enumerate() {
        for (k, t) in ts.iter().enumerate() {
            for &j in by_host.get(t.host.as_str()).into_iter().flatten() {
                if j != i && nesting(t, &sources[j]).is_some() {
                    edges[i].push((j, k));
                }
            }
        }
    }
    let mut reported: BTreeSet<Vec<usize>> = BTreeSet::new();
    for start in 0..rules.len() {
        if let Some(cycle) = cycle_through(start, &edges) {
            let mut key: Vec<usize> = cycle.iter().map(|(i, _, _)| *i).collect();
            key.sort();
            if !reported.insert(key) {
                continue;
            }
            let steps: Vec<String> = cycle
                .iter()
                .map(|&(i, k, next)| {
                    format!(
                        "{:?} writes {} ({}), which {:?} watches ({})",
                        rules[i].name,
                        rules[i].targets[k],
                        where_(sites[i].file, &sites[i].targets[k]),
                        rules[next].name,
                        where_(sites[next].file, &sites[next].source),
                    )
                })
                .collect();
            let (i, k, _) = cycle[0];
            out.errors.push(error_at(
                sites[i].file,
                &sites[i].targets[k],
                format!(
                    "rules copy into each other's sources, so every copy triggers another: {}",
                    steps.join("; ")
                ),
            ));
        }
    }

    // Two rules writing one target repository from different sources: the target tag flips
    // to whichever source was copied last.
    let mut target_hosts: BTreeMap<&str, Vec<(usize, usize)>> = BTreeMap::new();
    for (i, ts) in targets.iter().enumerate() {
        for (k, t) in ts.iter().enumerate() {
            target_hosts.entry(&t.host).or_default().push((i, k));
        }
    }
    for list in target_hosts.values() {
        for (x, &(i, k)) in list.iter().enumerate() {
            for &(j, l) in &list[x + 1..] {
                if i == j {
                    continue;
                }
                let Some(offset) = nesting(&targets[i][k], &targets[j][l]) else {
                    continue;
                };
                // The same offset between the sources: every collision is the same source
                // image, copied twice to the same place.
                if nesting(&sources[i], &sources[j]).as_ref() == Some(&offset) {
                    continue;
                }
                let (a, b) = (&rules[i], &rules[j]);
                let to_b = |rel: &str| -> Option<String> {
                    match &offset {
                        Nesting::Same => Some(rel.to_owned()),
                        Nesting::Below(p) => Some(format!("{p}/{rel}")),
                        Nesting::Above(p) => rel.strip_prefix(&format!("{p}/")).map(str::to_owned),
                    }
                };
                let to_a = |rel: &str| -> Option<String> {
                    match &offset {
                        Nesting::Same => Some(rel.to_owned()),
                        Nesting::Below(p) => rel.strip_prefix(&format!("{p}/")).map(str::to_owned),
                        Nesting::Above(p) => Some(format!("{p}/{rel}")),
                    }
                };
                let same = |s: &str| Some(s.to_owned());
                // Image paths below a prefix: never empty, no empty components.
                let path = |s: &str| !s.is_empty() && s.split('/').all(|c| !c.is_empty());
                let (sel_ia, sel_ib) = (
                    |s: &str| path(s) && a.selects_image(s),
                    |s: &str| path(s) && b.selects_image(s),
                );
                let images = overlap(
                    &Side {
                        patterns: &a.images,
                        selects: &sel_ia,
                        to_other: &to_b,
                    },
                    &Side {
                        patterns: &b.images,
                        selects: &sel_ib,
                        to_other: &to_a,
                    },
                );
                let (sel_ta, sel_tb) = (|s: &str| a.selects_tag(s), |s: &str| b.selects_tag(s));
                let tags = overlap(
                    &Side {
                        patterns: &a.tags,
                        selects: &sel_ta,
                        to_other: &same,
                    },
                    &Side {
                        patterns: &b.tags,
                        selects: &sel_tb,
                        to_other: &same,
                    },
                );
                if images == Overlap::Never || tags == Overlap::Never {
                    continue;
                }
                let both = format!(
                    "rules {:?} and {:?} write the same target repositories from different sources ({} at {}, from {}; {} at {}, from {})",
                    a.name,
                    b.name,
                    a.targets[k],
                    where_(sites[i].file, &sites[i].targets[k]),
                    a.source,
                    b.targets[l],
                    where_(sites[j].file, &sites[j].targets[l]),
                    b.source,
                );
                match (&images, &tags) {
                    (Overlap::Certain(image), Overlap::Certain(tag)) => out.errors.push(error_at(
                        sites[j].file,
                        &sites[j].targets[l],
                        format!(
                            "{both}: image {}/{image} with tag {tag} matches both, and the target tag would flip to whichever source was copied last",
                            a.targets[k]
                        ),
                    )),
                    _ => out.warnings.push(error_at(
                        sites[j].file,
                        &sites[j].targets[l],
                        format!(
                            "{both}: the patterns do not tell whether one image and tag can match both; if one does, the target tag flips to whichever source was copied last"
                        ),
                    )),
                }
            }
        }
    }
    out
}

/// A cycle of the rule graph through `start`, as `(rule, its target index, next rule)` steps.
fn cycle_through(
    start: usize,
    edges: &[Vec<(usize, usize)>],
) -> Option<Vec<(usize, usize, usize)>> {
    // Depth-first without recursion (rule sets can be long chains); `path` holds the edge
    // that reached each frame above the first.
    let mut seen = vec![false; edges.len()];
    seen[start] = true;
    let mut frames: Vec<(usize, usize)> = vec![(start, 0)];
    let mut path: Vec<(usize, usize, usize)> = Vec::new();
    while let Some(frame) = frames.last_mut() {
        let (at, edge) = (frame.0, frame.1);
        if edge == edges[at].len() {
            frames.pop();
            path.pop();
            continue;
        }
        frame.1 += 1;
        let (next, k) = edges[at][edge];
        if next == start {
            path.push((at, k, next));
            return Some(path);
        }
        if !seen[next] {
            seen[next] = true;
            path.push((at, k, next));
            frames.push((next, 0));
        }
    }
    None
}
