//! Copy and delete: bring every target of a match to what the source tag names, round after
//! round, until a read of the source after the last write agrees with it.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::copy::progress::Progress;
use crate::copy::{CopyOptions, CopyRequest, Engine, TargetOutcome};
use crate::event::{DeliveryForm, Event};
use crate::reference::{Digest, Reference, Repository, Tag};
use crate::registry::error::RegistryError;
use crate::registry::{ManifestHead, RepoClient, TagDeletion};
use crate::rules::OnDelete;

use super::outcome::TargetStatus;
use super::plan::Match;
use super::{Done, Loaded, Relay};

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

/// What a copy moves, which decides what it passes through and brings along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cargo {
    /// A release image: the rule's gates, platforms and referrers apply.
    Image,
    /// A referrer (signature, attestation, SBOM) of an image already released: it passes no
    /// gate of its own (a signature is not scanned, nor signed itself), is copied whole, and
    /// has no referrers to bring.
    Referrer,
}

/// `repo:tag` (or `repo` for a digest-only event): a target as replies and logs name it.
pub(super) fn target_name(target: &Repository, tag: Option<&Tag>) -> String {
    match tag {
        Some(tag) => format!("{target}:{tag}"),
        None => target.to_string(),
    }
}

impl Relay {
    /// The event's image (or referrer) to every target of `m`.
    pub(super) async fn copy(
        &self,
        loaded: &Loaded,
        event: &Event,
        m: &Match,
        cargo: Cargo,
    ) -> Done {
        let want = Want::Image(event.digest.clone());
        self.converge(loaded, event, m, cargo, want).await
    }

    /// `on_delete = "propagate"`: remove the tag from the targets, but only once the source
    /// really no longer has it (a delete delivered after a re-push must not remove a live tag).
    pub(super) async fn delete(&self, loaded: &Loaded, event: &Event, m: &Match) -> Done {
        let Some(tag) = &event.tag else {
            return Done {
                targets: Vec::new(),
                bytes: 0,
            };
        };
        let status = match loaded.registries.repo(&event.repo) {
            Err(e) => TargetStatus::failed(e.to_string(), false),
            Ok(source) => match source.head_manifest(tag).await {
                Ok(None) => {
                    return self
                        .converge(loaded, event, m, Cargo::Image, Want::Absent)
                        .await;
                }
                Ok(Some(_)) => TargetStatus::NothingToDelete {
                    reason: "the source has the tag again".into(),
                },
                Err(e) => TargetStatus::registry_failure(&e),
            },
        };
        Done::all(m, Some(tag), status)
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
        cargo: Cargo,
        first: Want,
    ) -> Done {
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
            Err(e) => return Done::all(m, tag, TargetStatus::failed(e.to_string(), false)),
        };
        let opts = match cargo {
            Cargo::Image => CopyOptions {
                jobs: self.jobs,
                platforms: m.rule.platforms.clone(),
                referrers: m.rule.referrers,
            },
            Cargo::Referrer => CopyOptions {
                jobs: self.jobs,
                platforms: Vec::new(),
                referrers: false,
            },
        };
        let engine = Engine::new(loaded.registries.clone(), opts, Progress::Silent);
        let started = Instant::now();
        self.metrics.in_flight.inc();
        // Per target: the latest round's status, and the latest one that changed something.
        let mut last: Vec<Option<TargetStatus>> = vec![None; names.len()];
        let mut acted: Vec<Option<TargetStatus>> = vec![None; names.len()];
        let mut active: Vec<usize> = (0..names.len()).collect();
        let mut want = first;
        // The digest the targets were last written with (after platform filtering): what a
        // release attestation names.
        let mut at_target: Option<Digest> = None;
        for round in 1..=MAX_ROUNDS {
            let (statuses, placed, wrote) = match &want {
                Want::Image(digest) => {
                    let e = Event {
                        digest: digest.clone(),
                        ..event.clone()
                    };
                    let held = match cargo {
                        Cargo::Image => self.gates.check(&loaded.registries, &e, &m.rule).await,
                        Cargo::Referrer => None,
                    };
                    match held {
                        Some(held) => (vec![held; active.len()], None, None),
                        None => self.copy_round(&engine, &e, m, &active).await,
                    }
                }
                Want::Absent => {
                    let tag = tag.expect("only tag events delete");
                    let mut out = Vec::with_capacity(active.len());
                    for &i in &active {
                        out.push(self.remove_tag(loaded, &m.targets[i], tag).await);
                    }
                    (out, None, None)
                }
            };
            if wrote.is_some() {
                at_target = wrote;
            }
            for (&i, status) in active.iter().zip(statuses) {
                if status.acted() {
                    acted[i] = Some(status.clone());
                }
                last[i] = Some(status);
            }
            // Failed, held and pending targets are done with this delivery.
            active.retain(|&i| last[i].as_ref().is_some_and(|s| s.acted() || s.in_place()));
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
            if round == 1 && in_place && event.delivery == DeliveryForm::Reconcile {
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
                None if m.rule.on_delete == OnDelete::Propagate => Want::Absent,
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
        let bytes = engine.stats().bytes.load(Ordering::Relaxed);
        let mut targets = m
            .targets
            .iter()
            .zip(names)
            .zip(last.into_iter().zip(acted))
            .map(|((repo, name), (last, acted))| {
                let status = match (last, acted) {
                    // A round with nothing left to do does not hide what an earlier one did.
                    (Some(last), Some(acted)) if last.in_place() => acted,
                    (Some(last), _) => last,
                    // Every target is in the first round; a slip here must not pass as done.
                    (None, _) => {
                        TargetStatus::failed("internal error: no round reached this target", true)
                    }
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
                (repo.clone(), name, status)
            })
            .collect::<Vec<_>>();
        if let (Cargo::Image, Some(release), Some(digest)) = (cargo, &m.rule.attest, &at_target) {
            for (repo, _, status) in &mut targets {
                if matches!(
                    status,
                    TargetStatus::Copied { .. } | TargetStatus::AlreadyPresent
                ) && let Some(failed) = self
                    .gates
                    .attest_release(&loaded.registries, release, repo, digest)
                    .await
                {
                    *status = failed;
                }
            }
        }
        Done { targets, bytes }
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
    ) -> (Vec<TargetStatus>, Option<Digest>, Option<Digest>) {
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
                Err(e) => TargetStatus::copy_failure(&e),
            })
            .collect();
        (statuses, placed, report.digest)
    }

    /// Delete `tag` from one target (the caller holds its lock).
    async fn remove_tag(&self, loaded: &Loaded, target: &Repository, tag: &Tag) -> TargetStatus {
        let client = match loaded.registries.repo(target) {
            Ok(c) => c,
            Err(e) => return TargetStatus::failed(e.to_string(), false),
        };
        match client.delete_tag(tag).await {
            Ok(TagDeletion::Deleted) => TargetStatus::Deleted,
            Ok(TagDeletion::Absent) => TargetStatus::NothingToDelete {
                reason: "the target does not have the tag".into(),
            },
            Ok(TagDeletion::Shared { other, digest, via }) => TargetStatus::failed(
                match via {
                    None => format!(
                        "{target}: this registry cannot delete a tag alone, only its manifest; `{other}` still points at {digest}"
                    ),
                    Some(index) => format!(
                        "{target}: this registry cannot delete a tag alone, only its manifest; `{other}` points at the index {index}, which lists {digest}"
                    ),
                },
                false,
            ),
            Err(e) => TargetStatus::registry_failure(&e),
        }
    }
}

/// The digest the source tag names now (`None`: no such tag), from a HEAD, or from the bytes
/// when the registry sends no `Docker-Content-Digest`.
async fn source_tag(source: &RepoClient, tag: &Tag) -> Result<Option<Digest>, RegistryError> {
    match source.head_manifest(tag).await? {
        None => Ok(None),
        Some(ManifestHead {
            digest: Some(d), ..
        }) => Ok(Some(d)),
        Some(_) => Ok(Some(source.get_manifest(tag).await?.digest)),
    }
}
