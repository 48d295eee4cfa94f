//! Rule files: which images, with which tags, go to which targets. Operators edit them, so every
//! mistake is reported with file, line and column, and a set of files is validated as a whole
//! before it replaces the rules in force.
//!
//! ```toml
//! [[rule]]
//! name = "image-x-to-partners"
//! source = "us-central1-docker.pkg.dev/acme-build/releases"
//! images = ["image-x", "tools/.*"]
//! tags = ["latest", 'v[0-9]+\.[0-9]+\.[0-9]+']
//! exclude_tags = [".*-rc[0-9]*"]
//! targets = ["europe-west1-docker.pkg.dev/partner-prj/incoming"]
//! ```

mod check;
mod language;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use regex::{Regex, RegexBuilder};
use serde::Deserialize;
use toml::Spanned;

use crate::attestation::{
    AttestationPolicy, AttestorName, KeyVersionName, NoteName, ReleaseAttestation,
};
use crate::event::{Action, Event};
use crate::manifest::PlatformFilter;
use crate::reference::Digest;
use crate::reference::Repository;
use crate::registry::settings::{RegistryConfig, RegistrySettings};
use crate::signature::TrustedKeys;
use crate::vulnerability::VulnerabilityPolicy;

/// Compiled operator patterns are bounded: the regex crate matches in linear time, and this
/// caps the memory one pattern may take.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One problem in a rule file, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// What to do with a tag deleted in the source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDelete {
    /// Targets keep what they received (the default: a partner's copy is theirs).
    #[default]
    Ignore,
    /// Remove the tag from the targets too.
    Propagate,
}

/// The clause of a rule that turned an event away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Clause {
    Source,
    Image,
    Tag,
    Exclude,
    Action,
}

impl fmt::Display for Clause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Clause::Source => "source",
            Clause::Image => "image",
            Clause::Tag => "tag",
            Clause::Exclude => "exclude",
            Clause::Action => "action",
        })
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    /// Registry host and repository prefix the rule watches.
    pub source: Repository,
    images: Vec<Regex>,
    tags: Vec<Regex>,
    exclude_tags: Vec<Regex>,
    /// Repository prefixes the images go to; the path below the source prefix is kept.
    pub targets: Vec<Repository>,
    /// Copy only these platforms of an index.
    pub platforms: Vec<PlatformFilter>,
    /// Copy signatures, attestations and other referrers along.
    pub referrers: bool,
    /// Copy digest-only (untagged) pushes too.
    pub digests: bool,
    pub on_delete: OnDelete,
    /// Release gate: for each key set, the image digest must carry a cosign signature by one
    /// of its keys (a build key set, then an approvers key set: both must have signed).
    pub signatures: Vec<TrustedKeys>,
    /// Release gate on Artifact Analysis findings.
    pub vulnerabilities: Option<VulnerabilityPolicy>,
    /// Release gate on Binary Authorization attestations.
    pub attestation: Option<AttestationPolicy>,
    /// After an image is in place at a target: attest it there.
    pub attest: Option<ReleaseAttestation>,
}

/// What one rule makes of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The event's image goes to these repositories.
    Match { targets: Vec<Repository> },
    /// A referrer of `subject` arrived under a rule that gates on signatures or copies
    /// referrers: a cosign signature, attestation or SBOM (`sha256-HEX.sig|.att|.sbom`), or the
    /// OCI 1.1 referrers tag index (`sha256-HEX`) a registry without the referrers API keeps.
    /// Release the subject's selected tags (a gate may now pass) and bring the referrer along.
    ReferrerArrived {
        subject: Digest,
        targets: Vec<Repository>,
    },
    /// An untagged manifest was pushed under a rule that gates on signatures or copies
    /// referrers: it may be a referrer pushed through the OCI referrers API (what `cosign
    /// --registry-referrers-mode=oci-1-1`, `oras attach` and Artifact Registry attachments
    /// do), which only its `subject` field tells. The relay reads it to find out.
    UntaggedArrived { targets: Vec<Repository> },
    /// Turned away by `clause`, for `reason`.
    Rejected { clause: Clause, reason: String },
}

fn full_match(res: &[Regex], s: &str) -> bool {
    res.iter().any(|r| r.is_match(s))
}

impl Rule {
    /// Whether a release gate (signatures, vulnerabilities) stands in front of the rule's copies.
    pub fn gated(&self) -> bool {
        !self.signatures.is_empty() || self.vulnerabilities.is_some() || self.attestation.is_some()
    }

    /// Whether the image path below the source prefix is one the rule copies.
    pub fn selects_image(&self, rel: &str) -> bool {
        full_match(&self.images, rel)
    }

    /// Whether a tag is one the rule copies (matches `tags`, not `exclude_tags`).
    pub fn selects_tag(&self, tag: &str) -> bool {
        full_match(&self.tags, tag) && !full_match(&self.exclude_tags, tag)
    }

    /// Where an image below the source prefix goes: each target prefix plus `rel`.
    pub fn targets_for(&self, rel: &str) -> Vec<Repository> {
        self.targets
            .iter()
            .map(|t| Repository {
                registry: t.registry.clone(),
                path: format!("{}/{rel}", t.path),
            })
            .collect()
    }

    /// The target prefix of this rule that `repo` lies under (the longest, should two nest).
    pub fn target_prefix(&self, repo: &Repository) -> Option<&Repository> {
        self.targets
            .iter()
            .filter(|t| {
                t.registry == repo.registry
                    && (t.path.is_empty()
                        || repo
                            .path
                            .strip_prefix(t.path.as_str())
                            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
            })
            .max_by_key(|t| t.path.len())
    }

    /// The image path below the source prefix, when the repository is under it.
    pub fn relative<'a>(&self, repo: &'a Repository) -> Option<&'a str> {
        if repo.registry != self.source.registry {
            return None;
        }
        repo.path
            .strip_prefix(self.source.path.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|rest| !rest.is_empty())
    }

    /// Whether this rule watches `repo` at all (source clause only).
    pub fn watches(&self, repo: &Repository) -> bool {
        self.relative(repo).is_some()
    }

    /// Apply the rule's clauses in order: source, image, action, tag, exclude.
    pub fn evaluate(&self, event: &Event) -> Verdict {
        let reject = |clause, reason: String| Verdict::Rejected { clause, reason };
        let Some(rel) = self.relative(&event.repo) else {
            return reject(
                Clause::Source,
                format!("{} is not under {}", event.repo, self.source),
            );
        };
        if !full_match(&self.images, rel) {
            return reject(
                Clause::Image,
                format!("image {rel:?} matches none of the image patterns"),
            );
        }
        match (event.action, self.on_delete) {
            (Action::Delete, OnDelete::Ignore) => {
                return reject(
                    Clause::Action,
                    "DELETE is ignored (on_delete = \"ignore\")".into(),
                );
            }
            (Action::Delete, OnDelete::Propagate) if event.tag.is_none() => {
                return reject(Clause::Action, "only tag deletions are propagated".into());
            }
            _ => {}
        }
        if let (Some(tag), Action::Insert) = (&event.tag, event.action)
            && (!self.signatures.is_empty() || self.referrers)
            && let Some(subject) = referrer_tag_subject(tag.as_str())
        {
            return Verdict::ReferrerArrived {
                subject,
                targets: self.targets_for(rel),
            };
        }
        match &event.tag {
            None if !self.digests
                && event.action == Action::Insert
                && (!self.signatures.is_empty() || self.referrers) =>
            {
                return Verdict::UntaggedArrived {
                    targets: self.targets_for(rel),
                };
            }
            None if !self.digests => {
                return reject(
                    Clause::Tag,
                    "untagged push, and the rule says digests = false".into(),
                );
            }
            None => {}
            Some(tag) => {
                if !full_match(&self.tags, tag.as_str()) {
                    return reject(
                        Clause::Tag,
                        format!("tag {tag} matches none of the tag patterns"),
                    );
                }
                if full_match(&self.exclude_tags, tag.as_str()) {
                    return reject(
                        Clause::Exclude,
                        format!("tag {tag} matches an exclude_tags pattern"),
                    );
                }
            }
        }
        Verdict::Match {
            targets: self.targets_for(rel),
        }
    }
}

/// `sha256-HEX.sig` (`.att`, `.sbom`) names a cosign referrer of `sha256:HEX`, and
/// `sha256-HEX` the referrers tag index of `sha256:HEX`.
fn referrer_tag_subject(tag: &str) -> Option<Digest> {
    let stem = [".sig", ".att", ".sbom"]
        .iter()
        .find_map(|s| tag.strip_suffix(s))
        .unwrap_or(tag);
    stem.strip_prefix("sha256-")
        .and_then(|hex| format!("sha256:{hex}").parse().ok())
}

/// Every rule and registry setting in force.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub registries: RegistryConfig,
    /// What the whole-set checks could not rule out but did not refuse: shown by `rules
    /// check`, logged by `serve` when the rules are loaded.
    pub warnings: Vec<RuleError>,
}

impl RuleSet {
    /// The files the rules name besides themselves (signing keys, password and token files,
    /// CA bundles, Docker configs): they are part of the rules, and a change to one is a
    /// change to the rule set.
    pub fn named_files(&self) -> Vec<PathBuf> {
        let keys = self
            .rules
            .iter()
            .flat_map(|r| r.signatures.iter().flat_map(|k| k.files()))
            .map(Path::to_path_buf);
        let secrets = self.registries.registries.values().flat_map(|s| {
            [
                &s.password_file,
                &s.token_file,
                &s.ca_file,
                &s.docker_config,
            ]
            .into_iter()
            .flatten()
            .cloned()
        });
        let mut files: Vec<PathBuf> = keys.chain(secrets).collect();
        files.sort();
        files.dedup();
        files
    }

    /// Whether any rule watches this repository: the gate in front of every registry request.
    pub fn watches(&self, repo: &Repository) -> bool {
        self.rules.iter().any(|r| r.watches(repo))
    }

    /// Each rule's verdict on `event`.
    pub fn evaluate<'a>(&'a self, event: &Event) -> Vec<(&'a Rule, Verdict)> {
        self.rules.iter().map(|r| (r, r.evaluate(event))).collect()
    }

    /// Load a rule file, or every `*.toml` file of a directory, and validate them as a whole.
    pub fn load(path: &Path) -> Result<RuleSet, Vec<RuleError>> {
        let files = rule_files(path).map_err(|e| vec![e])?;
        let mut texts = Vec::new();
        for f in files {
            match std::fs::read_to_string(&f) {
                Ok(t) => texts.push((f.display().to_string(), t)),
                Err(e) => {
                    return Err(vec![RuleError {
                        file: f.display().to_string(),
                        line: 0,
                        column: 0,
                        message: format!("cannot read: {e}"),
                    }]);
                }
            }
        }
        Self::parse(&texts)
    }

    /// Validate `(file name, text)` pairs as one set.
    pub fn parse(files: &[(String, String)]) -> Result<RuleSet, Vec<RuleError>> {
        let mut errors = Vec::new();
        let mut rules = Vec::new();
        let mut registries: BTreeMap<String, RegistrySettings> = BTreeMap::new();
        // Hosts named by rules, with where, to check each has settings.
        let mut used_hosts: Vec<(String, usize, Range<usize>, String)> = Vec::new();
        let mut names = HashSet::new();
        let mut sites = Vec::new();
        for (fi, (file, text)) in files.iter().enumerate() {
            let at = |span: Range<usize>, message: String| RuleError {
                file: file.clone(),
                line: line_col(text, span.start).0,
                column: line_col(text, span.start).1,
                message,
            };
            let shape: FileShape = match toml::from_str(text) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(at(e.span().unwrap_or(0..0), e.message().trim().to_owned()));
                    continue;
                }
            };
            for (host, settings) in shape.registry {
                let span = settings.span();
                let settings = settings.into_inner();
                if let Err(reason) = settings.validate() {
                    errors.push(at(span.clone(), format!("registry {host:?}: {reason}")));
                }
                if registries.insert(host.clone(), settings).is_some() {
                    errors.push(at(
                        span,
                        format!("registry {host:?} is configured more than once"),
                    ));
                }
            }
            for raw in shape.rule {
                let span = raw.span();
                // Key paths in a rule are relative to the file that names them.
                let dir = Path::new(file).parent().unwrap_or(Path::new("."));
                match compile(raw.into_inner(), dir, &at) {
                    Ok((rule, hosts, (source, targets))) => {
                        sites.push(check::Sites {
                            file: fi,
                            source,
                            targets,
                        });
                        if !names.insert(rule.name.clone()) {
                            errors
                                .push(at(span, format!("rule name {:?} is used twice", rule.name)));
                        }
                        used_hosts.extend(
                            hosts
                                .into_iter()
                                .map(|(h, s)| (h, fi, s, rule.name.clone())),
                        );
                        rules.push(rule);
                    }
                    Err(mut e) => errors.append(&mut e),
                }
            }
        }
        for (host, fi, span, rule) in used_hosts {
            if !registries.contains_key(&host) {
                let (file, text) = &files[fi];
                let (line, column) = line_col(text, span.start);
                errors.push(RuleError {
                    file: file.clone(),
                    line,
                    column,
                    message: format!(
                        "rule {rule:?}: registry {host:?} has no auth settings: add a [registry.\"{host}\"] table"
                    ),
                });
            }
        }
        let registries = RegistryConfig { registries };
        let whole = check::check(&rules, &sites, files, &registries);
        errors.extend(whole.errors);
        if errors.is_empty() {
            Ok(RuleSet {
                rules,
                registries,
                warnings: whole.warnings,
            })
        } else {
            errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            errors.dedup();
            Err(errors)
        }
    }
}

fn rule_files(path: &Path) -> Result<Vec<PathBuf>, RuleError> {
    let err = |message: String| RuleError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if meta.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| err(format!("cannot list: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(err("no *.toml rule files in this directory".into()));
    }
    Ok(files)
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    rule: Vec<Spanned<RuleShape>>,
    #[serde(default)]
    registry: BTreeMap<String, Spanned<RegistrySettings>>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleShape {
    name: Spanned<String>,
    source: Spanned<String>,
    images: Spanned<Vec<Spanned<String>>>,
    tags: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    exclude_tags: Vec<Spanned<String>>,
    targets: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    platforms: Vec<Spanned<String>>,
    #[serde(default = "yes")]
    referrers: bool,
    #[serde(default)]
    digests: bool,
    #[serde(default)]
    on_delete: OnDelete,
    #[serde(default)]
    require_signature: Option<Spanned<SignatureGates>>,
    #[serde(default)]
    vulnerabilities: Option<Spanned<VulnerabilityPolicy>>,
    #[serde(default)]
    require_attestation: Option<Spanned<AttestationGate>>,
    #[serde(default)]
    attest: Option<Spanned<AttestShape>>,
}

/// `require_attestation = { attestors = ["projects/P/attestors/NAME"] }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestationGate {
    attestors: Vec<Spanned<String>>,
}

/// `attest = { key = "projects/.../cryptoKeyVersions/1", note = "projects/P/notes/N" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestShape {
    key: Spanned<String>,
    note: Spanned<String>,
}

/// `require_signature = { keys = ["cosign.pub"] }`: paths relative to the rule file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureGate {
    keys: Vec<String>,
}

/// One key set (any of its keys), or several that must all have signed.
#[derive(Deserialize)]
#[serde(untagged)]
enum SignatureGates {
    One(SignatureGate),
    All(Vec<SignatureGate>),
}

type Hosts = Vec<(String, Range<usize>)>;
/// Where the rule's source and each of its targets were written.
type Spans = (Range<usize>, Vec<Range<usize>>);

fn compile(
    r: RuleShape,
    dir: &Path,
    at: &dyn Fn(Range<usize>, String) -> RuleError,
) -> Result<(Rule, Hosts, Spans), Vec<RuleError>> {
    let mut errors = Vec::new();
    let name = r.name.get_ref().trim().to_owned();
    if name.is_empty() {
        errors.push(at(r.name.span(), "name must not be empty".into()));
    }
    let label = if name.is_empty() {
        "(unnamed)".to_owned()
    } else {
        name.clone()
    };
    let mut hosts = Vec::new();
    let source = match Repository::parse(r.source.get_ref()) {
        Ok(s) => {
            hosts.push((s.registry.clone(), r.source.span()));
            Some(s)
        }
        Err(e) => {
            errors.push(at(r.source.span(), format!("rule {label:?}: source: {e}")));
            None
        }
    };
    let patterns =
        |field: &str, list: &[Spanned<String>], errors: &mut Vec<RuleError>| -> Vec<Regex> {
            list.iter()
                .filter_map(|p| {
                    match RegexBuilder::new(&format!("^(?:{})$", p.get_ref()))
                        .size_limit(REGEX_SIZE_LIMIT)
                        .build()
                    {
                        Ok(re) => Some(re),
                        Err(e) => {
                            errors.push(at(
                                p.span(),
                                format!(
                                    "rule {label:?}: {field}: bad pattern {:?}: {e}",
                                    p.get_ref()
                                ),
                            ));
                            None
                        }
                    }
                })
                .collect()
        };
    if r.images.get_ref().is_empty() {
        errors.push(at(
            r.images.span(),
            format!("rule {label:?}: images needs at least one pattern"),
        ));
    }
    if r.tags.get_ref().is_empty() && !r.digests {
        errors.push(at(
            r.tags.span(),
            format!("rule {label:?}: tags needs at least one pattern (or digests = true)"),
        ));
    }
    let images = patterns("images", r.images.get_ref(), &mut errors);
    let tags = patterns("tags", r.tags.get_ref(), &mut errors);
    let exclude_tags = patterns("exclude_tags", &r.exclude_tags, &mut errors);
    if r.targets.get_ref().is_empty() {
        errors.push(at(
            r.targets.span(),
            format!("rule {label:?}: targets needs at least one repository"),
        ));
    }
    // Where targets fall relative to sources (their own and other rules') is checked for the
    // whole set at once (`check`), with hosts compared as the network sees them.
    let mut targets = Vec::new();
    let mut target_spans = Vec::new();
    for t in r.targets.get_ref() {
        match Repository::parse(t.get_ref()) {
            Err(e) => errors.push(at(t.span(), format!("rule {label:?}: target: {e}"))),
            Ok(target) => {
                hosts.push((target.registry.clone(), t.span()));
                targets.push(target);
                target_spans.push(t.span());
            }
        }
    }
    let mut platforms = Vec::new();
    for p in &r.platforms {
        match p.get_ref().parse::<PlatformFilter>() {
            Ok(f) => platforms.push(f),
            Err(e) => errors.push(at(p.span(), format!("rule {label:?}: platforms: {e}"))),
        }
    }
    let mut signatures = Vec::new();
    if let Some(gates) = &r.require_signature {
        let sets: Vec<&SignatureGate> = match gates.get_ref() {
            SignatureGates::One(g) => vec![g],
            SignatureGates::All(list) => list.iter().collect(),
        };
        if sets.is_empty() {
            errors.push(at(
                gates.span(),
                format!("rule {name:?}: require_signature names no key set"),
            ));
        }
        for g in sets {
            let paths: Vec<PathBuf> = g.keys.iter().map(|k| dir.join(k)).collect();
            match TrustedKeys::load(&paths) {
                Ok(keys) => signatures.push(keys),
                Err(e) => errors.push(at(
                    gates.span(),
                    format!("rule {name:?}: require_signature: {e}"),
                )),
            }
        }
    }
    let attestation = r.require_attestation.as_ref().and_then(|gate| {
        let list = &gate.get_ref().attestors;
        if list.is_empty() {
            errors.push(at(
                gate.span(),
                format!("rule {name:?}: require_attestation names no attestor"),
            ));
        }
        let mut attestors = Vec::new();
        for a in list {
            match a.get_ref().parse::<AttestorName>() {
                Ok(n) => attestors.push(n),
                Err(e) => errors.push(at(
                    a.span(),
                    format!("rule {name:?}: require_attestation: {e}"),
                )),
            }
        }
        (attestors.len() == list.len() && !list.is_empty())
            .then_some(AttestationPolicy { attestors })
    });
    let attest = r.attest.as_ref().and_then(|a| {
        let a = a.get_ref();
        let key = a.key.get_ref().parse::<KeyVersionName>().map_err(|e| {
            errors.push(at(a.key.span(), format!("rule {name:?}: attest.key: {e}")));
        });
        let note = a.note.get_ref().parse::<NoteName>().map_err(|e| {
            errors.push(at(
                a.note.span(),
                format!("rule {name:?}: attest.note: {e}"),
            ));
        });
        Some(ReleaseAttestation {
            key: key.ok()?,
            note: note.ok()?,
        })
    });
    let vulnerabilities = r.vulnerabilities.map(|v| {
        // Without require_scan the DISCOVERY state is never asked for, so an unscanned image
        // passes at once: a bound on waiting for its scan would be written and mean nothing.
        if v.get_ref().unscanned_after.is_some() && !v.get_ref().require_scan {
            errors.push(at(
                v.span(),
                format!(
                    "rule {label:?}: vulnerabilities: unscanned_after bounds the wait for a scan, \
                     which only require_scan = true waits for: add require_scan = true or drop unscanned_after"
                ),
            ));
        }
        v.into_inner()
    });
    match (errors.is_empty(), source) {
        (true, Some(source)) => Ok((
            Rule {
                name,
                source,
                images,
                tags,
                exclude_tags,
                targets,
                platforms,
                referrers: r.referrers,
                digests: r.digests,
                on_delete: r.on_delete,
                signatures,
                vulnerabilities,
                attestation,
                attest,
            },
            hosts,
            (r.source.span(), target_spans),
        )),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{DeliveryForm, Event};
    use crate::reference::Tag;

    const REGISTRIES: &str = r#"
[registry."src.example"]
auth = "none"
[registry."dst.example"]
auth = "none"
"#;

    fn parse(text: &str) -> Result<RuleSet, Vec<RuleError>> {
        RuleSet::parse(&[("relay.toml".into(), text.into())])
    }

    fn event(action: Action, repo: &str, tag: Option<&str>) -> Event {
        Event {
            action,
            repo: Repository::parse(repo).unwrap(),
            tag: tag.map(|t| t.parse::<Tag>().unwrap()),
            digest: Some(crate::reference::Digest::sha256_of(b"x")),
            message_id: None,
            publish_time: None,
            delivery: DeliveryForm::PubSubPush,
        }
    }

    fn rule(extra: &str) -> String {
        format!(
            "[[rule]]\nname = \"r\"\nsource = \"src.example/releases\"\nimages = [\"app\", \"tools/.*\"]\n\
             tags = ['v[0-9]+', \"latest\"]\nexclude_tags = [\"v0\"]\ntargets = [\"dst.example/incoming\"]\n{extra}\n{REGISTRIES}"
        )
    }

    #[test]
    fn the_shipped_examples_are_valid() {
        let set = RuleSet::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules"))).unwrap();
        assert_eq!(set.rules.len(), 1);
        assert_eq!(set.rules[0].targets.len(), 2);
        let binauthz = RuleSet::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/rules/examples/binauthz.toml"
        )))
        .unwrap();
        assert!(binauthz.rules[0].attestation.is_some() && binauthz.rules[0].attest.is_some());
    }

    #[test]
    fn a_matching_event_keeps_its_path_below_the_source() {
        let set = parse(&rule("")).unwrap();
        let v = set.rules[0].evaluate(&event(
            Action::Insert,
            "src.example/releases/tools/lint",
            Some("v2"),
        ));
        assert_eq!(
            v,
            Verdict::Match {
                targets: vec![Repository::parse("dst.example/incoming/tools/lint").unwrap()]
            }
        );
    }

    #[test]
    fn referrer_tags_name_their_subject() {
        let hex = "a".repeat(64);
        let subject: Digest = format!("sha256:{hex}").parse().unwrap();
        for tag in ["sig", "att", "sbom"].map(|s| format!("sha256-{hex}.{s}")) {
            assert_eq!(referrer_tag_subject(&tag), Some(subject.clone()), "{tag}");
        }
        assert_eq!(
            referrer_tag_subject(&format!("sha256-{hex}")),
            Some(subject)
        );
        for tag in [
            "v1",
            "sha256-abc.sig",
            "sha256-",
            &format!("sha256-{hex}.tar"),
        ] {
            assert_eq!(referrer_tag_subject(tag), None, "{tag}");
        }
    }

    #[test]
    fn each_clause_names_itself_when_it_rejects() {
        let set = parse(&rule("")).unwrap();
        let r = &set.rules[0];
        let clause = |e: Event| match r.evaluate(&e) {
            Verdict::Rejected { clause, .. } => Some(clause),
            Verdict::Match { .. }
            | Verdict::ReferrerArrived { .. }
            | Verdict::UntaggedArrived { .. } => None,
        };
        assert_eq!(
            clause(event(
                Action::Insert,
                "other.example/releases/app",
                Some("v1")
            )),
            Some(Clause::Source)
        );
        assert_eq!(
            clause(event(
                Action::Insert,
                "src.example/releases2/app",
                Some("v1")
            )),
            Some(Clause::Source)
        );
        assert_eq!(
            clause(event(
                Action::Insert,
                "src.example/releases/app2",
                Some("v1")
            )),
            Some(Clause::Image)
        );
        assert_eq!(
            clause(event(
                Action::Insert,
                "src.example/releases/app",
                Some("v1-beta")
            )),
            Some(Clause::Tag)
        );
        assert_eq!(
            clause(event(
                Action::Insert,
                "src.example/releases/app",
                Some("v0")
            )),
            Some(Clause::Exclude)
        );
        // Untagged: turned away by the tag clause when the rule brings no referrers; with
        // them (the default) it may be one, and the relay reads it.
        assert!(matches!(
            r.evaluate(&event(Action::Insert, "src.example/releases/app", None)),
            Verdict::UntaggedArrived { .. }
        ));
        let plain = parse(&rule("referrers = false")).unwrap();
        assert_eq!(
            match plain.rules[0].evaluate(&event(Action::Insert, "src.example/releases/app", None))
            {
                Verdict::Rejected { clause, .. } => Some(clause),
                _ => None,
            },
            Some(Clause::Tag)
        );
        assert_eq!(
            clause(event(
                Action::Delete,
                "src.example/releases/app",
                Some("v1")
            )),
            Some(Clause::Action)
        );
        assert_eq!(
            clause(event(
                Action::Insert,
                "src.example/releases/app",
                Some("latest")
            )),
            None
        );
        let digests = parse(&rule("digests = true\non_delete = \"propagate\"")).unwrap();
        assert!(matches!(
            digests.rules[0].evaluate(&event(Action::Insert, "src.example/releases/app", None)),
            Verdict::Match { .. }
        ));
        assert!(matches!(
            digests.rules[0].evaluate(&event(
                Action::Delete,
                "src.example/releases/app",
                Some("v1")
            )),
            Verdict::Match { .. }
        ));
    }

    #[test]
    fn attestation_gates_and_release_attestations_name_google_resources_exactly() {
        let set = parse(&rule(
            "require_attestation = { attestors = [\"projects/p/attestors/built\", \"projects/q/attestors/scanned\"] }\n\
             attest = { key = \"projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1\", note = \"projects/partner/notes/released\" }",
        ))
        .unwrap();
        let r = &set.rules[0];
        assert!(r.gated());
        assert_eq!(r.attestation.as_ref().unwrap().attestors.len(), 2);
        assert_eq!(
            r.attest.as_ref().unwrap().note.as_str(),
            "projects/partner/notes/released"
        );
        let errors = parse(&rule(
            "require_attestation = { attestors = [\"projects/p/notes/built\"] }\n\
             attest = { key = \"projects/p/cryptoKeys/k\", note = \"partner/released\" }",
        ))
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 3, "{text:#?}");
        assert!(
            text[0].contains("require_attestation") && text[0].contains("attestors/NAME"),
            "{text:#?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("attest.key") && t.contains("cryptoKeyVersions")),
            "{text:#?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("attest.note") && t.contains("notes/NAME")),
            "{text:#?}"
        );
        assert!(
            errors.iter().all(|e| e.line > 0 && e.column > 0),
            "{text:#?}"
        );
    }

    #[test]
    fn mistakes_are_reported_with_file_line_and_column() {
        let errs = parse(&rule("colour = \"blue\"")).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(
            (errs[0].line, errs[0].file.as_str()),
            (8, "relay.toml"),
            "{errs:?}"
        );
        assert!(errs[0].message.contains("colour"), "{errs:?}");

        let text = rule("").replace("'v[0-9]+'", "'v[0-9+'");
        let errs = parse(&text).unwrap_err();
        assert_eq!((errs[0].line, errs[0].column), (5, 9), "{errs:?}");
        assert!(errs[0].message.contains("bad pattern"), "{errs:?}");

        let errs =
            parse(&rule("").replace("dst.example/incoming", "src.example/releases")).unwrap_err();
        assert!(
            errs[0].message.contains("is the source or lies under it"),
            "{errs:?}"
        );
        let errs = parse(&rule("").replace("dst.example/incoming", "src.example/releases/mirror"))
            .unwrap_err();
        assert!(errs[0].message.contains("lies under it"), "{errs:?}");

        let errs = parse(&rule("").replace("[registry.\"dst.example\"]\nauth = \"none\"\n", ""))
            .unwrap_err();
        assert!(errs[0].message.contains("has no auth settings"), "{errs:?}");
        assert_eq!(errs[0].line, 7, "points at the target: {errs:?}");

        let errs = parse(&rule("").replace(
            "[registry.\"dst.example\"]\nauth = \"none\"",
            "[registry.\"dst.example\"]\ninsecure = true",
        ))
        .unwrap_err();
        assert!(errs[0].message.contains("auth"), "{errs:?}");
    }

    #[test]
    fn unscanned_after_is_a_duration_and_needs_require_scan_or_is_refused_where_written() {
        let gate = |v: &str| format!("vulnerabilities = {{ block = \"HIGH\", {v} }}");
        let set = parse(&rule(&gate(
            "require_scan = true, unscanned_after = \"45m\"",
        )))
        .unwrap();
        let policy = set.rules[0].vulnerabilities.as_ref().unwrap();
        assert_eq!(
            policy.unscanned_after(),
            std::time::Duration::from_secs(45 * 60)
        );

        let line = gate("require_scan = true, unscanned_after = \"soon\"");
        let errs = parse(&rule(&line)).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        let column = line.find("\"soon\"").unwrap() + 1;
        assert_eq!((errs[0].line, errs[0].column), (8, column), "{errs:?}");
        assert!(
            errs[0].message.contains("unscanned_after") && errs[0].message.contains("\"soon\""),
            "{errs:?}"
        );

        let errs = parse(&rule(&gate("unscanned_after = \"45m\""))).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            (errs[0].line, errs[0].column),
            (8, 19),
            "at the table: {errs:?}"
        );
        assert!(
            errs[0]
                .message
                .starts_with("rule \"r\": vulnerabilities: unscanned_after")
                && errs[0].message.contains("require_scan = true"),
            "{errs:?}"
        );
        assert_eq!(
            errs[0].to_string(),
            format!("relay.toml:8:19: {}", errs[0].message)
        );
    }

    /// Rules from `(name, source, targets, tags)`, registries for every host they name.
    fn set(rules: &[(&str, &str, &[&str], &str)]) -> String {
        let mut hosts = BTreeMap::new();
        let mut text = String::new();
        for (name, source, targets, tags) in rules {
            for r in std::iter::once(source).chain(targets.iter()) {
                hosts.insert(r.split('/').next().unwrap().to_owned(), ());
            }
            let targets: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
            text.push_str(&format!(
                "[[rule]]\nname = {name:?}\nsource = {source:?}\nimages = [\".*\"]\ntags = [{tags}]\ntargets = [{}]\n\n",
                targets.join(", ")
            ));
        }
        for h in hosts.keys() {
            text.push_str(&format!("[registry.{h:?}]\nauth = \"none\"\n"));
        }
        text
    }

    #[test]
    fn a_target_listed_twice_is_refused_where_it_repeats_even_under_another_host_name() {
        let errs = parse(&set(&[(
            "dup",
            "src.example/releases",
            &["dst.example/in", "dst.example/in"],
            "\"v1\"",
        )]))
        .unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!((errs[0].line, errs[0].column), (6, 30), "{errs:?}");
        assert!(
            errs[0]
                .message
                .contains("listed twice (also at relay.toml:6:12)"),
            "{errs:?}"
        );
        let errs = parse(&set(&[(
            "dup",
            "src.example/releases",
            &["localhost:5000/in", "127.0.0.1:5000/in"],
            "\"v1\"",
        )]))
        .unwrap_err();
        assert!(
            errs[0]
                .message
                .contains("localhost:5000 and 127.0.0.1:5000 are the same registry"),
            "{errs:?}"
        );
    }

    #[test]
    fn a_target_inside_or_around_its_own_source_is_refused_as_the_network_compares_hosts() {
        let inside = |source: &str, target: &str| {
            parse(&set(&[("loop", source, &[target], "\"v1\"")]))
                .err()
                .map(|e| e[0].message.clone())
        };
        let e = inside("127.0.0.1:5000/releases", "localhost:5000/releases/mirror").unwrap();
        assert!(e.contains("is the source or lies under it"), "{e}");
        assert!(inside("127.0.0.1:5000/releases", "[::1]:5000/releases").is_some());
        assert!(
            inside(
                "Registry.Example/releases",
                "registry.example:443/releases/x"
            )
            .is_some()
        );
        let e = inside("src.example/a/b", "src.example/a").unwrap();
        assert!(e.contains("contains the source"), "{e}");
        assert_eq!(
            inside("127.0.0.1:5000/releases", "127.0.0.1:5001/releases"),
            None
        );
        assert_eq!(
            inside("src.example/releases", "src.example/releases2"),
            None
        );
    }

    #[test]
    fn rules_that_copy_into_each_others_sources_are_refused_with_every_step() {
        let errs = parse(&set(&[
            (
                "there",
                "a.example/releases",
                &["b.example/mirror"],
                "\"v1\"",
            ),
            (
                "back",
                "b.example/mirror",
                &["a.example/releases/back"],
                "\"v1\"",
            ),
        ]))
        .unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        let m = &errs[0].message;
        assert!(m.contains("copy into each other's sources"), "{m}");
        assert!(
            m.contains("\"there\" writes b.example/mirror (relay.toml:6:12), which \"back\" watches (relay.toml:10:10)"),
            "{m}"
        );
        assert!(m.contains("\"back\" writes a.example/releases/back"), "{m}");
        // Three rules around a circle; a chain that does not close is fine.
        let circle = set(&[
            ("ab", "a.example/r", &["b.example/r"], "\"v1\""),
            ("bc", "b.example/r", &["c.example/r"], "\"v1\""),
            ("ca", "c.example/r", &["a.example/r"], "\"v1\""),
        ]);
        assert!(parse(&circle).unwrap_err()[0].message.contains("\"ca\""));
        let chain = set(&[
            ("ab", "a.example/r", &["b.example/r"], "\"v1\""),
            ("bc", "b.example/r", &["c.example/r"], "\"v1\""),
        ]);
        assert!(parse(&chain).is_ok());
    }

    #[test]
    fn two_sources_writing_one_target_are_an_error_when_a_tag_matches_both_else_a_warning() {
        let errs = parse(&set(&[
            ("one", "a.example/releases", &["t.example/in"], "\"latest\""),
            (
                "two",
                "b.example/builds",
                &["t.example/in"],
                "'v.*', \"latest\"",
            ),
        ]))
        .unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        let m = &errs[0].message;
        assert!(
            m.contains("relay.toml:6:12") && m.contains("relay.toml:13:12"),
            "{m}"
        );
        assert!(m.contains("with tag latest matches both"), "{m}");
        // Nested target prefixes collide too.
        let errs = parse(&set(&[
            (
                "one",
                "a.example/releases",
                &["t.example/in/app"],
                "\"latest\"",
            ),
            ("two", "b.example/builds", &["t.example/in"], "\"latest\""),
        ]))
        .unwrap_err();
        assert!(
            errs[0]
                .message
                .contains("image t.example/in/app/a with tag latest"),
            "{errs:?}"
        );
        // Patterns that cannot be compared are a warning; disjoint ones nothing.
        let warned = parse(&set(&[
            ("one", "a.example/releases", &["t.example/in"], "'v.*-rc'"),
            ("two", "b.example/builds", &["t.example/in"], "'.*-rc[0-9]'"),
        ]))
        .unwrap();
        assert_eq!(warned.warnings.len(), 1, "{:?}", warned.warnings);
        assert!(
            warned.warnings[0].message.contains("do not tell"),
            "{:?}",
            warned.warnings
        );
        let apart = parse(&set(&[
            (
                "one",
                "a.example/releases",
                &["t.example/in"],
                "\"latest\", \"stable\"",
            ),
            ("two", "b.example/builds", &["t.example/in"], "'v.*'"),
        ]))
        .unwrap();
        assert!(apart.warnings.is_empty(), "{:?}", apart.warnings);
        // One source under two rules is the same image twice: no flip.
        let same = parse(&set(&[
            ("one", "a.example/releases", &["t.example/in"], "\"latest\""),
            ("two", "a.example/releases", &["t.example/in"], "\"latest\""),
        ]))
        .unwrap();
        assert!(same.warnings.is_empty(), "{:?}", same.warnings);
    }

    #[test]
    fn rules_across_files_are_one_set() {
        let a = ("a.toml".to_owned(), rule(""));
        let b = ("b.toml".to_owned(), rule("").replace(REGISTRIES, ""));
        let errs = RuleSet::parse(&[a.clone(), b]).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.file == "b.toml" && e.message.contains("used twice")),
            "{errs:?}"
        );
        let c = (
            "c.toml".to_owned(),
            rule("")
                .replace("name = \"r\"", "name = \"s\"")
                .replace(REGISTRIES, ""),
        );
        assert_eq!(RuleSet::parse(&[a, c]).unwrap().rules.len(), 2);
    }
}
