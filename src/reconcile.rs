//! Reconcile: walk every rule's source and bring the targets in line, for events that were
//! lost (a subscription created after the push, messages past retention, a dead-letter topic
//! nobody drained). The source is the truth.
//!
//! Cheap when nothing changed: one tag listing per source repository (plus a manifest HEAD
//! per selected tag on registries whose listing carries no digests) and one manifest HEAD per
//! selected tag per target. Copies go through the same path as events: same per-tag locks,
//! same tag guard, so a sync running beside event deliveries never moves a tag backwards.

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::event::{Action, DeliveryForm, Event};
use crate::reference::{Digest, Repository, Tag};
use crate::relay::{Arrival, Match, Plan, Relay, TargetStatus};
use crate::rules::{OnDelete, Rule};

/// Tags reconciled at once.
const PARALLEL_TAGS: usize = 8;

/// What to reconcile.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncOptions {
    /// Only this rule (by name); all rules when absent.
    #[serde(default)]
    pub rule: Option<String>,
    /// Report what would change without writing anything.
    #[serde(default)]
    pub dry_run: bool,
}

/// One thing reconcile did, or would do, or could not do.
#[derive(Debug, Clone, Serialize)]
pub struct SyncItem {
    pub rule: String,
    /// `repo:tag` in the source (or the repository for listing failures).
    pub source: String,
    /// `repo:tag` in a target, when the item concerns one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `copied`, `would_copy`, `held`, `pending`, `removed`, `would_remove`, `failed`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The result of one reconcile run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    pub dry_run: bool,
    /// Selected (tag, target) pairs looked at.
    pub checked: usize,
    pub already_in_place: usize,
    pub copied: usize,
    pub removed: usize,
    /// Selected images a release gate held back.
    pub held: usize,
    pub failed: usize,
    /// Everything that was not already in place.
    pub items: Vec<SyncItem>,
}

impl SyncReport {
    fn add(&mut self, item: SyncItem) {
        match item.outcome {
            "copied" => self.copied += 1,
            "removed" => self.removed += 1,
            "held" => self.held += 1,
            "failed" => self.failed += 1,
            _ => {}
        }
        self.items.push(item);
    }
}

/// Reconcile every rule (or the one named) with the rules in force. `copies` is the bound on
/// copies in flight that event deliveries also take from, when running inside the service.
pub async fn sync(relay: &Relay, opts: &SyncOptions, copies: Option<&Semaphore>) -> SyncReport {
    let loaded = relay.loaded();
    let mut report = SyncReport {
        dry_run: opts.dry_run,
        ..SyncReport::default()
    };
    for rule in &loaded.rules.rules {
        if opts.rule.as_ref().is_some_and(|n| n != &rule.name) {
            continue;
        }
        let fail = |source: String, reason: String| SyncItem {
            rule: rule.name.clone(),
            source,
            target: None,
            outcome: "failed",
            reason: Some(reason),
        };
        let repos = match loaded
            .registries
            .catalog(&rule.source.registry, &rule.source.path)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                report.add(fail(
                    rule.source.to_string(),
                    format!("listing repositories: {e}"),
                ));
                continue;
            }
        };
        for path in repos {
            let repo = Repository {
                registry: rule.source.registry.clone(),
                path,
            };
            let Some(rel) = rule.relative(&repo).map(str::to_owned) else {
                continue;
            };
            if !rule.selects_image(&rel) {
                continue;
            }
            sync_repository(relay, rule, &repo, &rel, opts, copies, &mut report).await;
        }
    }
    report
}

async fn sync_repository(
    relay: &Relay,
    rule: &Rule,
    repo: &Repository,
    rel: &str,
    opts: &SyncOptions,
    copies: Option<&Semaphore>,
    report: &mut SyncReport,
) {
    let loaded = relay.loaded();
    let listing = match loaded.registries.repo(repo) {
        Ok(c) => c
            .list_tags()
            .await
            .map(|l| (c, l))
            .map_err(|e| format!("listing tags: {e}")),
        Err(e) => Err(e.to_string()),
    };
    let (client, listing) = match listing {
        Ok(found) => found,
        Err(reason) => {
            report.add(item(rule, repo.to_string(), None, "failed", Some(reason)));
            return;
        }
    };
    let selected: Vec<Tag> = listing
        .tags
        .iter()
        .filter(|t| rule.selects_tag(t))
        .filter_map(|t| t.parse().ok())
        .collect();
    let targets = rule.targets_for(rel);
    let (client, targets, listing) = (&client, &targets, &listing);
    // Owned tags: a closure over borrowed items would not be `Send` for every lifetime, which
    // the HTTP handler running this needs.
    let results: Vec<Vec<SyncResult>> =
        futures_util::stream::iter(selected.into_iter().map(|tag| {
            async move {
                let tag = &tag;
                let digest = match listing.digests.get(tag.as_str()) {
                    Some(d) => Some(d.clone()),
                    None => match client.head_manifest(tag).await {
                        Ok(h) => h.and_then(|h| h.digest),
                        Err(e) => {
                            return vec![SyncResult::Failed(
                                format!("{repo}:{tag}"),
                                None,
                                e.to_string(),
                            )];
                        }
                    },
                };
                let Some(digest) = digest else {
                    // Deleted between listing and now: nothing to copy.
                    return Vec::new();
                };
                if opts.dry_run {
                    dry_run_tag(relay, rule, repo, tag, &digest, targets).await
                } else {
                    // Wait for a slot rather than refuse: a sync is not redelivered like an event.
                    let _slot = match copies {
                        Some(sem) => sem.acquire().await.ok(),
                        None => None,
                    };
                    copy_tag(relay, rule, repo, tag, digest, targets).await
                }
            }
        }))
        .buffer_unordered(PARALLEL_TAGS)
        .collect()
        .await;
    for r in results.into_iter().flatten() {
        report.checked += 1;
        match r {
            SyncResult::InPlace => report.already_in_place += 1,
            SyncResult::Item(source, target, outcome, reason) => {
                report.add(item(rule, source, Some(target), outcome, reason))
            }
            SyncResult::Failed(source, target, reason) => {
                report.add(item(rule, source, target, "failed", Some(reason)))
            }
        }
    }
    if rule.on_delete == OnDelete::Propagate {
        remove_stale_tags(relay, rule, &listing.tags, targets, opts, report, repo).await;
    }
}

enum SyncResult {
    InPlace,
    Item(String, String, &'static str, Option<String>),
    Failed(String, Option<String>, String),
}

fn item(
    rule: &Rule,
    source: String,
    target: Option<String>,
    outcome: &'static str,
    reason: Option<String>,
) -> SyncItem {
    SyncItem {
        rule: rule.name.clone(),
        source,
        target,
        outcome,
        reason,
    }
}

async fn dry_run_tag(
    relay: &Relay,
    rule: &Rule,
    repo: &Repository,
    tag: &Tag,
    digest: &Digest,
    targets: &[Repository],
) -> Vec<SyncResult> {
    let loaded = relay.loaded();
    let mut out = Vec::new();
    let event = reconcile_event(Action::Insert, repo, tag, Some(digest.clone()));
    let m = Match {
        rule: rule.clone(),
        targets: targets.to_vec(),
        arrival: Arrival::Image,
    };
    // What a copy would meet first: the rule's release gates.
    let held = relay.gate(&event, &m).await;
    for t in targets {
        let source = format!("{repo}:{tag}");
        let target = format!("{t}:{tag}");
        let head = match loaded.registries.repo(t) {
            Ok(c) => c.head_manifest(tag).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        out.push(match (head, &held) {
            (Ok(Some(h)), _) if h.digest.as_ref() == Some(digest) => SyncResult::InPlace,
            (Err(e), _) => SyncResult::Failed(source, Some(target), e),
            (_, Some(TargetStatus::Held { gate, reason })) => SyncResult::Item(
                source,
                target,
                "held",
                Some(format!("{gate} gate: {reason}")),
            ),
            (_, Some(TargetStatus::Failed { error, .. })) => {
                SyncResult::Failed(source, Some(target), error.clone())
            }
            (head, _) => match head {
                Ok(Some(_)) => SyncResult::Item(
                    source,
                    target,
                    "would_copy",
                    Some(format!("target holds another digest; source has {digest}")),
                ),
                Ok(None) => SyncResult::Item(
                    source,
                    target,
                    "would_copy",
                    Some("missing in the target".into()),
                ),
                Err(e) => SyncResult::Failed(source, Some(target), e),
            },
        });
    }
    out
}

async fn copy_tag(
    relay: &Relay,
    rule: &Rule,
    repo: &Repository,
    tag: &Tag,
    digest: Digest,
    targets: &[Repository],
) -> Vec<SyncResult> {
    let event = reconcile_event(Action::Insert, repo, tag, Some(digest));
    through_the_event_path(relay, rule, &event, targets).await
}

/// The event reconcile stands in for: what Pub/Sub would have delivered for `repo:tag`.
fn reconcile_event(action: Action, repo: &Repository, tag: &Tag, digest: Option<Digest>) -> Event {
    Event {
        action,
        repo: repo.clone(),
        tag: Some(tag.clone()),
        digest,
        message_id: None,
        publish_time: None,
        delivery: DeliveryForm::Reconcile,
    }
}

/// Handle `event` for `targets` of `rule` as a delivery is handled: same locks, guards,
/// rounds and audit record.
async fn through_the_event_path(
    relay: &Relay,
    rule: &Rule,
    event: &Event,
    targets: &[Repository],
) -> Vec<SyncResult> {
    let plan = Plan {
        matches: vec![Match {
            rule: rule.clone(),
            targets: targets.to_vec(),
            arrival: Arrival::Image,
        }],
        rejections: Vec::new(),
    };
    let outcome = relay.run(event, &plan).await;
    let source = format!(
        "{}:{}",
        event.repo,
        event.tag.as_ref().map_or("", |t| t.as_str())
    );
    sync_results(&source, outcome)
}

/// What reconcile reports of the relay's outcome for one source tag.
fn sync_results(source: &str, outcome: crate::relay::Outcome) -> Vec<SyncResult> {
    outcome
        .targets
        .into_iter()
        .map(|t| match t.status.sync_item() {
            None => SyncResult::InPlace,
            Some(("failed", reason)) => SyncResult::Failed(
                source.to_owned(),
                Some(t.target),
                reason.unwrap_or_default(),
            ),
            Some((word, reason)) => SyncResult::Item(source.to_owned(), t.target, word, reason),
        })
        .collect()
}

/// `on_delete = "propagate"`: target tags the rule selects that the source no longer has.
async fn remove_stale_tags(
    relay: &Relay,
    rule: &Rule,
    source_tags: &[String],
    targets: &[Repository],
    opts: &SyncOptions,
    report: &mut SyncReport,
    repo: &Repository,
) {
    let loaded = relay.loaded();
    for t in targets {
        let listing = match loaded.registries.repo(t) {
            Ok(c) => c.list_tags().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let tags = match listing {
            Ok(l) => l.tags,
            Err(e) => {
                report.add(item(
                    rule,
                    repo.to_string(),
                    Some(t.to_string()),
                    "failed",
                    Some(format!("listing target tags: {e}")),
                ));
                continue;
            }
        };
        for tag in tags
            .iter()
            .filter(|tag| rule.selects_tag(tag) && !source_tags.contains(tag))
        {
            let source = format!("{repo}:{tag}");
            let target = format!("{t}:{tag}");
            if opts.dry_run {
                report.add(item(
                    rule,
                    source,
                    Some(target),
                    "would_remove",
                    Some("the source no longer has the tag".into()),
                ));
                continue;
            }
            // Through the event path: the source is asked again now (the listing may be
            // minutes old), the tag lock is taken, and a re-push meanwhile is restored.
            let Ok(tag) = tag.parse::<Tag>() else {
                continue;
            };
            let event = reconcile_event(Action::Delete, repo, &tag, None);
            for r in through_the_event_path(relay, rule, &event, std::slice::from_ref(t)).await {
                match r {
                    SyncResult::InPlace => {}
                    SyncResult::Item(source, target, outcome, reason) => {
                        report.add(item(rule, source, Some(target), outcome, reason))
                    }
                    SyncResult::Failed(source, target, reason) => {
                        report.add(item(rule, source, target, "failed", Some(reason)))
                    }
                }
            }
        }
    }
}
