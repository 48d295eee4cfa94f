//! What the service does with one event: match it against the rules, copy to the targets of
//! every matching rule (or propagate a tag deletion), and sum up the outcome. No HTTP here:
//! the edge maps a [`Disposition`] to a status once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::config::ConfigError;
use crate::copy::progress::Progress;
use crate::copy::{CopyError, CopyOptions, CopyRequest, Engine, TargetOutcome};
use crate::event::{Action, Event};
use crate::reference::{Digest, Reference, Repository};
use crate::registry::error::RegistryError;
use crate::registry::retry::RetryPolicy;
use crate::registry::{Registries, TagDeletion};
use crate::rules::{Rule, RuleSet, Verdict};
use crate::telemetry::Metrics;

/// Rules in force and the registry clients built from their settings.
pub struct Loaded {
    pub rules: RuleSet,
    pub registries: Arc<Registries>,
}

/// A rule that matched, and where the event's image goes.
#[derive(Debug, Clone)]
pub struct Match {
    pub rule: Rule,
    pub targets: Vec<Repository>,
    /// Set when the event is a signature arriving for this digest: release the image's tags.
    pub release_of: Option<Digest>,
}

/// A rule that did not match, and the clause that turned the event away.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    pub rule: String,
    pub clause: String,
    pub reason: String,
}

/// What the rules make of an event, before anything is written.
#[derive(Debug, Clone)]
pub struct Plan {
    pub matches: Vec<Match>,
    pub rejections: Vec<Rejection>,
}

/// Match `event` against `rules`: pure, no I/O (also what `image-relay plan` prints).
pub fn plan(rules: &RuleSet, event: &Event) -> Plan {
    let mut matches = Vec::new();
    let mut rejections = Vec::new();
    for (rule, verdict) in rules.evaluate(event) {
        match verdict {
            Verdict::Match { targets } => matches.push(Match {
                rule: rule.clone(),
                targets,
                release_of: None,
            }),
            Verdict::ReferrerArrived { subject, targets } => matches.push(Match {
                rule: rule.clone(),
                targets,
                release_of: Some(subject),
            }),
            Verdict::Rejected { clause, reason } => rejections.push(Rejection {
                rule: rule.name.clone(),
                clause: clause.to_string(),
                reason,
            }),
        }
    }
    Plan {
        matches,
        rejections,
    }
}

/// What happened at one target.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum TargetStatus {
    /// Written: `bytes` read from the source for the copy that served this target (shared by
    /// the targets of one copy: the source is read once), over `duration_ms`.
    Copied {
        bytes: u64,
        duration_ms: u64,
    },
    AlreadyPresent,
    /// Content copied; the tag was left alone because the source tag has moved on.
    TagSuperseded,
    Deleted,
    /// Nothing to delete: the target lacks the tag, or the source has it again.
    NothingToDelete {
        reason: String,
    },
    /// Not copied: a release gate held the image back. Acknowledged: a retry cannot help, a
    /// later event (the signature arriving) can.
    Held {
        gate: String,
        reason: String,
    },
    /// Not copied yet: a gate cannot decide (a vulnerability scan still running). Pub/Sub is
    /// asked to redeliver later.
    Pending {
        gate: String,
        reason: String,
    },
    /// The source tag kept moving while the target was written: Pub/Sub is asked to redeliver,
    /// and the redelivery copies what the source names then.
    Unsettled {
        reason: String,
    },
    Failed {
        error: String,
        retryable: bool,
    },
}

impl TargetStatus {
    pub fn label(&self) -> &'static str {
        match self {
            TargetStatus::Copied { .. } => "copied",
            TargetStatus::AlreadyPresent => "already_present",
            TargetStatus::TagSuperseded => "tag_superseded",
            TargetStatus::Deleted => "deleted",
            TargetStatus::NothingToDelete { .. } => "nothing_to_delete",
            TargetStatus::Held { .. } => "held",
            TargetStatus::Pending { .. } => "pending",
            TargetStatus::Unsettled { .. } => "unsettled",
            TargetStatus::Failed {
                retryable: true, ..
            } => "failed_retryable",
            TargetStatus::Failed {
                retryable: false, ..
            } => "failed",
        }
    }
}

/// One target's result, for the reply and the logs.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    pub rule: String,
    pub target: String,
    #[serde(flatten)]
    pub status: TargetStatus,
}

/// How the delivery should be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// No rule matched: acknowledge, nothing was contacted.
    NothingMatched,
    /// Everything is in place (or deliberately left alone): acknowledge.
    Done,
    /// Some target failed in a way a later delivery can fix: ask Pub/Sub to retry.
    RetryLater,
    /// Some target failed in a way no retry can fix: acknowledge, report, alert.
    FailedPermanently,
}

/// The result of handling one event.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub message_id: Option<String>,
    pub source: String,
    pub targets: Vec<TargetResult>,
    pub rejections: Vec<Rejection>,
}

impl Outcome {
    pub fn disposition(&self) -> Disposition {
        if self.targets.is_empty() {
            return Disposition::NothingMatched;
        }
        let failed = |retryable: bool| {
            self.targets.iter().any(
                |t| matches!(t.status, TargetStatus::Failed { retryable: r, .. } if r == retryable),
            )
        };
        let pending = self.targets.iter().any(|t| {
            matches!(
                t.status,
                TargetStatus::Pending { .. } | TargetStatus::Unsettled { .. }
            )
        });
        if failed(true) || pending {
            Disposition::RetryLater
        } else if failed(false) {
            Disposition::FailedPermanently
        } else {
            Disposition::Done
        }
    }
}

/// Whether a later delivery of the same event can succeed where this one failed. Network
/// trouble, 5xx, 429 and 401/403 (an IAM grant fixes those) can; a missing source, content
/// that fails verification, or a target refusing the manifest (an immutable tag holding
/// another digest, say) cannot.
pub fn retry_can_help(e: &CopyError) -> bool {
    match e {
        CopyError::Registry(r) => redelivery_can_help(r),
        CopyError::Config(_) => false,
        CopyError::SourceNotFound(_)
        | CopyError::DigestMismatch { .. }
        | CopyError::Source { .. } => false,
    }
}

/// Whether a later delivery can succeed where this registry request failed: no answer, 408,
/// 429 and 5xx on their own; 401/403 once someone grants access, and a refused certificate
/// once it is renewed or its issuer trusted.
fn redelivery_can_help(e: &RegistryError) -> bool {
    e.is_retryable() || e.is_denied() || e.is_untrusted()
}

impl TargetStatus {
    /// A target that failed on a registry error.
    fn registry_failure(e: &RegistryError) -> TargetStatus {
        TargetStatus::Failed {
            retryable: redelivery_can_help(e),
            error: e.to_string(),
        }
    }
}

/// Serializes work on one target tag within the process: two deliveries moving the same tag
/// need not race each other's rounds here. Across processes nothing is shared: correctness
/// there comes from re-reading the source after every write ([`Relay::converge`]).
#[derive(Default)]
struct TagLocks {
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl TagLocks {
    fn get(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = map.get(key).and_then(Weak::upgrade) {
            return l;
        }
        // Entries of finished work are dropped as the map grows.
        if map.len() > 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let l = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(key.to_owned(), Arc::downgrade(&l));
        l
    }

    /// Take the locks of every key, each once and in a fixed order whatever the caller passes
    /// (a key named twice would otherwise wait for itself, and two callers taking the same
    /// keys in different orders for each other).
    async fn acquire(
        &self,
        keys: impl IntoIterator<Item = String>,
    ) -> Vec<tokio::sync::OwnedMutexGuard<()>> {
        let keys: std::collections::BTreeSet<String> = keys.into_iter().collect();
        let mut guards = Vec::with_capacity(keys.len());
        for k in keys {
            guards.push(self.get(&k).lock_owned().await);
        }
        guards
    }
}

/// Rounds of "write the targets, re-read the source tag" one delivery runs before it asks for
/// redelivery instead. Each round after the first follows a move of the source tag made while
/// the previous one was writing; running out means the tag moves faster than it can be copied.
const MAX_ROUNDS: usize = 4;

/// What the source tag names, which the targets must come to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    /// The image with this digest (`None`: whatever the tag names when the copy resolves it).
    Image(Option<Digest>),
    /// No tag: the source deleted it, and the rule propagates deletes.
    Absent,
}

/// `repo:tag` (or `repo` for a digest-only event): a target as replies and logs name it.
fn target_name(target: &Repository, tag: Option<&crate::reference::Tag>) -> String {
    match tag {
        Some(tag) => format!("{target}:{tag}"),
        None => target.to_string(),
    }
}

/// The service's domain: rules in force, registries, per-tag locks, metrics.
pub struct Relay {
    loaded: ArcSwap<Loaded>,
    locks: TagLocks,
    jobs: usize,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
    /// Container Analysis API base (`RELAY_CONTAINER_ANALYSIS_URL` overrides, for tests).
    scanner_base: String,
}

impl Relay {
    pub fn new(
        rules: RuleSet,
        jobs: usize,
        retry: RetryPolicy,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ConfigError> {
        let loaded = Self::build(rules, &retry)?;
        Ok(Relay {
            loaded: ArcSwap::from_pointee(loaded),
            locks: TagLocks::default(),
            jobs,
            retry,
            metrics,
            scanner_base: std::env::var(crate::vulnerability::CONTAINER_ANALYSIS_URL_ENV)
                .unwrap_or_else(|_| crate::vulnerability::CONTAINER_ANALYSIS_URL.to_owned()),
        })
    }

    fn build(rules: RuleSet, retry: &RetryPolicy) -> Result<Loaded, ConfigError> {
        let registries = Registries::new(rules.registries.clone(), retry.clone()).map_err(|e| {
            ConfigError::Parse {
                path: "HTTP client".into(),
                message: e.to_string(),
            }
        })?;
        // Credentials are resolved now, so a missing password variable fails the load, not
        // the first copy.
        for host in rules.registries.registries.keys() {
            registries.host(host)?;
        }
        Ok(Loaded {
            rules,
            registries: Arc::new(registries),
        })
    }

    /// Put new rules in force; work in flight finishes with the rules it started with.
    pub fn replace_rules(&self, rules: RuleSet) -> Result<(), ConfigError> {
        let loaded = Self::build(rules, &self.retry)?;
        self.loaded.store(Arc::new(loaded));
        Ok(())
    }

    /// The rules in force.
    pub fn loaded(&self) -> Arc<Loaded> {
        self.loaded.load_full()
    }

    /// Handle one event: copies, tag guards, deletions. Only sources named in matching rules
    /// are contacted; an event no rule matches touches no registry.
    pub async fn handle(&self, event: &Event, plan: &Plan) -> Outcome {
        let started = Instant::now();
        let outcome = self.decide(event, plan).await;
        if let Some(r) = crate::audit::record(
            event,
            plan,
            Some(&outcome),
            started.elapsed().as_millis() as u64,
        ) {
            crate::audit::emit(&r);
        }
        outcome
    }

    async fn decide(&self, event: &Event, plan: &Plan) -> Outcome {
        let loaded = self.loaded();
        let mut targets = Vec::new();
        for m in &plan.matches {
            let results = match (event.action, &m.release_of) {
                (Action::Insert, Some(subject)) => self.release(&loaded, event, m, subject).await,
                (Action::Insert, None) => self.copy(&loaded, event, m).await,
                (Action::Delete, _) => self.delete(&loaded, event, m).await,
            };
            for (target, status) in results {
                self.metrics.copy(&m.rule.name, &target, status.label());
                targets.push(TargetResult {
                    rule: m.rule.name.clone(),
                    target,
                    status,
                });
            }
        }
        Outcome {
            message_id: event.message_id.clone(),
            source: event.reference().to_string(),
            targets,
            rejections: plan.rejections.clone(),
        }
    }

    /// A cosign referrer (signature, attestation, SBOM) arrived for `subject`: copy every tag
    /// of the repository that the rule selects and that points at `subject` (each copy passes
    /// the gates again), then the referrer itself to the targets where its subject went. A
    /// referrer of an image the rule does not release goes nowhere.
    async fn release(
        &self,
        loaded: &Loaded,
        event: &Event,
        m: &Match,
        subject: &Digest,
    ) -> Vec<(String, TargetStatus)> {
        let failed = |e: String, retryable: bool| {
            m.targets
                .iter()
                .map(|t| {
                    (
                        t.to_string(),
                        TargetStatus::Failed {
                            error: e.clone(),
                            retryable,
                        },
                    )
                })
                .collect::<Vec<_>>()
        };
        let source = match loaded.registries.repo(&event.repo) {
            Ok(s) => s,
            Err(e) => return failed(e.to_string(), false),
        };
        let listing = match source.list_tags().await {
            Ok(l) => l,
            Err(e) => {
                return failed(
                    format!("listing tags to release {subject}: {e}"),
                    redelivery_can_help(&e),
                );
            }
        };
        let mut out = Vec::new();
        for tag in listing.tags.iter().filter(|t| m.rule.selects_tag(t)) {
            let digest = match listing.digests.get(tag) {
                Some(d) => Some(d.clone()),
                None => match source.head_manifest(tag).await {
                    Ok(h) => h.and_then(|h| h.digest),
                    Err(e) => {
                        out.extend(failed(e.to_string(), redelivery_can_help(&e)));
                        continue;
                    }
                },
            };
            if digest.as_ref() != Some(subject) {
                continue;
            }
            let Ok(tag) = tag.parse() else { continue };
            let released = Event {
                tag: Some(tag),
                digest: Some(subject.clone()),
                ..event.clone()
            };
            let plain = Match {
                release_of: None,
                ..m.clone()
            };
            out.extend(self.copy(loaded, &released, &plain).await);
        }
        let subject_released = out.iter().any(|(_, s)| {
            matches!(
                s,
                TargetStatus::Copied { .. } | TargetStatus::AlreadyPresent
            )
        });
        if subject_released {
            // The referrer passes no gate of its own (a signature is not scanned for
            // vulnerabilities, nor signed itself) and has no referrers to bring.
            let mut rule = m.rule.clone();
            rule.signatures.clear();
            rule.vulnerabilities = None;
            rule.referrers = false;
            rule.platforms.clear();
            let referrer = Match {
                rule,
                targets: m.targets.clone(),
                release_of: None,
            };
            out.extend(self.copy(loaded, event, &referrer).await);
        }
        out
    }

    /// The release gates of the rule, in front of a copy: `None` to go ahead, or the status
    /// every target gets instead (also what `plan` and `sync --dry-run` report).
    pub async fn gate(&self, loaded: &Loaded, event: &Event, m: &Match) -> Option<TargetStatus> {
        if m.rule.signatures.is_empty() && m.rule.vulnerabilities.is_none() {
            return None;
        }
        let source = match loaded.registries.repo(&event.repo) {
            Ok(s) => s,
            Err(e) => {
                return Some(TargetStatus::Failed {
                    error: e.to_string(),
                    retryable: false,
                });
            }
        };
        let digest = match &event.digest {
            Some(d) => d.clone(),
            None => match source
                .head_manifest(&event.reference().manifest_ref())
                .await
            {
                Ok(Some(crate::registry::ManifestHead {
                    digest: Some(d), ..
                })) => d,
                Ok(_) => {
                    return Some(TargetStatus::Failed {
                        error: format!("source {} does not exist", event.reference()),
                        retryable: false,
                    });
                }
                Err(e) => {
                    return Some(TargetStatus::registry_failure(&e));
                }
            },
        };
        // Every key set must have signed: the build key, then the approvers.
        for (i, keys) in m.rule.signatures.iter().enumerate() {
            match crate::signature::check(&source, &digest, keys).await {
                Ok(crate::signature::Verdict::Signed { .. }) => {}
                Ok(crate::signature::Verdict::Unsigned { reason }) => {
                    self.metrics.held(&m.rule.name, "signature");
                    let reason = if m.rule.signatures.len() > 1 {
                        let names: Vec<&str> = keys.names().collect();
                        format!(
                            "key set {} of {} ({}): {reason}",
                            i + 1,
                            m.rule.signatures.len(),
                            names.join(", ")
                        )
                    } else {
                        reason
                    };
                    return Some(TargetStatus::Held {
                        gate: "signature".into(),
                        reason,
                    });
                }
                Err(e) => {
                    return Some(TargetStatus::registry_failure(&e));
                }
            }
        }
        match &m.rule.vulnerabilities {
            Some(policy) => {
                self.vulnerability_gate(loaded, &source, &event.repo, &digest, m, policy)
                    .await
            }
            None => None,
        }
    }

    /// Artifact Analysis findings for the image, or for each child of an index (the children
    /// the rule copies, when it filters platforms).
    async fn vulnerability_gate(
        &self,
        loaded: &Loaded,
        source: &crate::registry::RepoClient,
        repo: &Repository,
        digest: &Digest,
        m: &Match,
        policy: &crate::vulnerability::VulnerabilityPolicy,
    ) -> Option<TargetStatus> {
        let failed =
            |error: String, retryable: bool| Some(TargetStatus::Failed { error, retryable });
        let manifest = match source.get_manifest(digest.as_str()).await {
            Ok(m) => m,
            Err(e) => return Some(TargetStatus::registry_failure(&e)),
        };
        let digests: Vec<Digest> = match &manifest.contents {
            crate::manifest::Contents::Image { .. } => vec![digest.clone()],
            crate::manifest::Contents::Index { manifests } => manifests
                .iter()
                .filter(|c| {
                    m.rule.platforms.is_empty()
                        || c.platform
                            .as_ref()
                            .is_some_and(|p| m.rule.platforms.iter().any(|f| f.matches(p)))
                })
                .map(|c| c.digest.clone())
                .collect(),
        };
        let token = match loaded.registries.google_token().await {
            Ok(t) => t,
            Err(e) => return failed(format!("vulnerability gate: {e}"), true),
        };
        let scanner = crate::vulnerability::Scanner::new(
            loaded.registries.http().clone(),
            self.scanner_base.clone(),
        );
        match scanner.check(repo, &digests, policy, token.expose()).await {
            Ok(crate::vulnerability::Verdict::Clean) => None,
            Ok(crate::vulnerability::Verdict::Held { reason, .. }) => {
                self.metrics.held(&m.rule.name, "vulnerabilities");
                Some(TargetStatus::Held {
                    gate: "vulnerabilities".into(),
                    reason,
                })
            }
            Ok(crate::vulnerability::Verdict::Pending { reason }) => Some(TargetStatus::Pending {
                gate: "vulnerabilities".into(),
                reason,
            }),
            Err(e) => failed(e.to_string(), e.is_retryable() || e.is_denied()),
        }
    }

    async fn copy(&self, loaded: &Loaded, event: &Event, m: &Match) -> Vec<(String, TargetStatus)> {
        self.converge(loaded, event, m, Want::Image(event.digest.clone()))
            .await
    }

    /// `on_delete = "propagate"`: remove the tag from the targets, but only once the source
    /// really no longer has it (a delete delivered after a re-push must not remove a live tag).
    async fn delete(
        &self,
        loaded: &Loaded,
        event: &Event,
        m: &Match,
    ) -> Vec<(String, TargetStatus)> {
        let Some(tag) = &event.tag else {
            return Vec::new();
        };
        let names = || m.targets.iter().map(|t| target_name(t, Some(tag)));
        let status = match loaded.registries.repo(&event.repo) {
            Err(e) => TargetStatus::Failed {
                retryable: false,
                error: e.to_string(),
            },
            Ok(source) => match source.head_manifest(tag.as_str()).await {
                Ok(None) => return self.converge(loaded, event, m, Want::Absent).await,
                Ok(Some(_)) => TargetStatus::NothingToDelete {
                    reason: "the source has the tag again".into(),
                },
                Err(e) => TargetStatus::registry_failure(&e),
            },
        };
        names().map(|n| (n, status.clone())).collect()
    }

    /// Bring every target of `m` to what the source tag names, starting from `first` (what the
    /// event said), under the per-tag locks of this process.
    ///
    /// Across processes nothing is locked, so every round ends by re-reading the source tag
    /// after the targets were written: when the source moved meanwhile (another instance may
    /// have written the newer digest before this round's slower write landed), the next round
    /// copies what the source names now and writes again. The write that lands last is thus
    /// always followed by a read of the source by the same delivery, which answers 2xx only
    /// once that read agrees with what it wrote (`docs/design.md`, "Many instances").
    async fn converge(
        &self,
        loaded: &Loaded,
        event: &Event,
        m: &Match,
        first: Want,
    ) -> Vec<(String, TargetStatus)> {
        let tag = event.tag.as_ref();
        let names: Vec<String> = m.targets.iter().map(|t| target_name(t, tag)).collect();
        let net = &loaded.rules.registries;
        let _locks = self
            .locks
            .acquire(m.targets.iter().map(|t| {
                let host = net.network_host(&t.registry);
                let name = target_name(t, tag);
                format!("{host}{}", &name[t.registry.len()..])
            }))
            .await;
        let source = match loaded.registries.repo(&event.repo) {
            Ok(s) => s,
            Err(e) => {
                let status = TargetStatus::Failed {
                    retryable: false,
                    error: e.to_string(),
                };
                return names.into_iter().map(|n| (n, status.clone())).collect();
            }
        };
        let engine = Engine::new(
            loaded.registries.clone(),
            CopyOptions {
                jobs: self.jobs,
                platforms: m.rule.platforms.clone(),
                referrers: m.rule.referrers,
            },
            Progress::Silent,
        );
        let started = Instant::now();
        self.metrics.in_flight.inc();
        // Per target: the latest round's status, and the latest one that changed something.
        let mut last: Vec<Option<TargetStatus>> = vec![None; names.len()];
        let mut acted: Vec<Option<TargetStatus>> = vec![None; names.len()];
        let mut active: Vec<usize> = (0..names.len()).collect();
        let mut want = first;
        for round in 1..=MAX_ROUNDS {
            let (statuses, placed) = match &want {
                Want::Image(digest) => {
                    let e = Event {
                        digest: digest.clone(),
                        ..event.clone()
                    };
                    match self.gate(loaded, &e, m).await {
                        Some(held) => (vec![held; active.len()], None),
                        None => self.copy_round(&engine, &e, m, &active).await,
                    }
                }
                Want::Absent => {
                    let tag = tag.expect("only tag events delete");
                    let mut out = Vec::with_capacity(active.len());
                    for &i in &active {
                        out.push(self.remove_tag(loaded, &m.targets[i], tag).await);
                    }
                    (out, None)
                }
            };
            for (&i, status) in active.iter().zip(statuses) {
                if matches!(
                    status,
                    TargetStatus::Copied { .. }
                        | TargetStatus::TagSuperseded
                        | TargetStatus::Deleted
                ) {
                    acted[i] = Some(status.clone());
                }
                last[i] = Some(status);
            }
            // Failed, held and pending targets are done with this delivery.
            active.retain(|&i| {
                matches!(
                    last[i],
                    Some(
                        TargetStatus::Copied { .. }
                            | TargetStatus::AlreadyPresent
                            | TargetStatus::TagSuperseded
                            | TargetStatus::Deleted
                            | TargetStatus::NothingToDelete { .. }
                    )
                )
            });
            // A digest-only copy has no tag that could have moved.
            let Some(tag) = tag.filter(|_| !active.is_empty()) else {
                break;
            };
            // A delivery finding everything in place still asks the source: it may be the
            // redelivery of one whose write landed late and whose instance died before it
            // could check. Reconcile read the digest from the source a moment ago, and a move
            // since has its own event, so its "nothing changed" stays one HEAD per target.
            let in_place = active
                .iter()
                .all(|&i| matches!(last[i], Some(TargetStatus::AlreadyPresent)));
            if round == 1 && in_place && event.delivery == crate::event::DeliveryForm::Reconcile {
                break;
            }
            let now = match source_tag(&source, tag).await {
                Ok(d) => d,
                Err(e) => {
                    for &i in &active {
                        last[i] = Some(TargetStatus::registry_failure(&e));
                    }
                    break;
                }
            };
            let next = match now {
                Some(d) => Want::Image(Some(d)),
                None if m.rule.on_delete == crate::rules::OnDelete::Propagate => Want::Absent,
                // The rule leaves deletions alone: targets keep what they received.
                None => break,
            };
            let settled = match (&next, &want) {
                (Want::Image(now), Want::Image(_)) => now.is_some() && *now == placed,
                (a, b) => a == b,
            };
            if settled {
                break;
            }
            if round == MAX_ROUNDS {
                for &i in &active {
                    last[i] = Some(TargetStatus::Unsettled {
                        reason: format!(
                            "the source tag {tag} moved during each of {MAX_ROUNDS} rounds of writing the target; a redelivery will settle it"
                        ),
                    });
                }
                break;
            }
            tracing::info!(
                source = %event.reference(), round, now = ?next,
                "the source tag moved while the targets were written: following it"
            );
            want = next;
        }
        self.metrics.in_flight.dec();
        let took = started.elapsed();
        self.metrics.observe_copy(engine.stats(), took);
        let bytes = engine
            .stats()
            .bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        names
            .into_iter()
            .zip(last.into_iter().zip(acted))
            .map(|(name, (last, acted))| {
                let status = match (last, acted) {
                    // A round with nothing left to do does not hide what an earlier one did.
                    (
                        Some(TargetStatus::AlreadyPresent | TargetStatus::NothingToDelete { .. }),
                        Some(acted),
                    ) => acted,
                    (Some(last), _) => last,
                    (None, _) => TargetStatus::Failed {
                        error: "internal error: no round reached this target".into(),
                        retryable: true,
                    },
                };
                let status = match status {
                    TargetStatus::Copied { .. } => TargetStatus::Copied {
                        bytes,
                        duration_ms: took.as_millis() as u64,
                    },
                    s => s,
                };
                if matches!(
                    status,
                    TargetStatus::Copied { .. } | TargetStatus::AlreadyPresent
                ) {
                    self.metrics.replicated(event.publish_time.as_deref());
                }
                (name, status)
            })
            .collect()
    }

    /// One round of a copy: the event's image to the `active` targets of `m`, each target tag
    /// written only while the source tag still names it. Returns each target's status and the
    /// source digest that was copied.
    async fn copy_round(
        &self,
        engine: &Engine,
        event: &Event,
        m: &Match,
        active: &[usize],
    ) -> (Vec<TargetStatus>, Option<Digest>) {
        let targets: Vec<Reference> = active
            .iter()
            .map(|&i| Reference {
                repo: m.targets[i].clone(),
                tag: None,
                digest: None,
            })
            .collect();
        let report = engine
            .copy(CopyRequest {
                source: event.reference(),
                targets,
                guard_tag: true,
            })
            .await;
        let placed = report.filtered_from.clone().or(report.digest.clone());
        let statuses = report
            .targets
            .into_iter()
            .map(|(_, result)| match result {
                // Bytes and duration are the whole delivery's, filled in at its end.
                Ok(TargetOutcome::Copied) => TargetStatus::Copied {
                    bytes: 0,
                    duration_ms: 0,
                },
                Ok(TargetOutcome::AlreadyPresent) => TargetStatus::AlreadyPresent,
                Ok(TargetOutcome::TagSuperseded { .. }) => TargetStatus::TagSuperseded,
                Err(e) => TargetStatus::Failed {
                    retryable: retry_can_help(&e),
                    error: e.to_string(),
                },
            })
            .collect();
        (statuses, placed)
    }

    /// Delete `tag` from one target (the caller holds its lock).
    async fn remove_tag(
        &self,
        loaded: &Loaded,
        target: &Repository,
        tag: &crate::reference::Tag,
    ) -> TargetStatus {
        let client = match loaded.registries.repo(target) {
            Ok(c) => c,
            Err(e) => {
                return TargetStatus::Failed {
                    retryable: false,
                    error: e.to_string(),
                };
            }
        };
        match client.delete_tag(tag).await {
            Ok(TagDeletion::Deleted) => TargetStatus::Deleted,
            Ok(TagDeletion::Absent) => TargetStatus::NothingToDelete {
                reason: "the target does not have the tag".into(),
            },
            Ok(TagDeletion::Shared { other, digest, via }) => TargetStatus::Failed {
                retryable: false,
                error: match via {
                    None => format!(
                        "{target}: this registry cannot delete a tag alone, only its manifest; `{other}` still points at {digest}"
                    ),
                    Some(index) => format!(
                        "{target}: this registry cannot delete a tag alone, only its manifest; `{other}` points at the index {index}, which lists {digest}"
                    ),
                },
            },
            Err(e) => TargetStatus::registry_failure(&e),
        }
    }
}

/// The digest the source tag names now (`None`: no such tag), from a HEAD, or from the bytes
/// when the registry sends no `Docker-Content-Digest`.
async fn source_tag(
    source: &crate::registry::RepoClient,
    tag: &crate::reference::Tag,
) -> Result<Option<Digest>, RegistryError> {
    match source.head_manifest(tag.as_str()).await? {
        None => Ok(None),
        Some(crate::registry::ManifestHead {
            digest: Some(d), ..
        }) => Ok(Some(d)),
        Some(_) => Ok(Some(source.get_manifest(tag.as_str()).await?.digest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lock_key_named_twice_is_taken_once() {
        let locks = TagLocks::default();
        let keys = ["r/b:v1", "r/a:v1", "r/b:v1"].map(String::from);
        let held = tokio::time::timeout(std::time::Duration::from_secs(5), locks.acquire(keys))
            .await
            .expect("a repeated key must not wait for itself");
        assert_eq!(held.len(), 2);
        // Held until dropped: another taker waits, then gets it.
        let again = locks.acquire(["r/a:v1".to_owned()]);
        tokio::pin!(again);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut again)
                .await
                .is_err()
        );
        drop(held);
        assert_eq!(again.await.len(), 1);
    }
}
