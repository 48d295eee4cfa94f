//! A referrer arrived for an image: release the tags a gate held back, and bring the referrer.

use crate::event::Event;
use crate::reference::{Digest, Repository, Tag};

use super::converge::Cargo;
use super::outcome::{TargetStatus, redelivery_can_help};
use super::plan::Match;
use super::{Done, Loaded, Relay};

impl Relay {
    /// A cosign referrer (signature, attestation, SBOM) arrived for `subject`: copy every tag
    /// of the repository that the rule selects and that points at `subject` (each copy passes
    /// the gates again), then the referrer itself to the targets where its subject went. A
    /// referrer of an image the rule does not release goes nowhere.
    pub(super) async fn release(
        &self,
        loaded: &Loaded,
        event: &Event,
        m: &Match,
        subject: &Digest,
    ) -> Done {
        let failed =
            |e: String, retryable: bool| Done::all(m, None, TargetStatus::failed(e, retryable));
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
        let mut out = Done {
            targets: Vec::new(),
            bytes: 0,
        };
        for name in listing.tags.iter().filter(|t| m.rule.selects_tag(t)) {
            let Ok(tag) = name.parse::<Tag>() else {
                continue;
            };
            let digest = match listing.digests.get(name) {
                Some(d) => Some(d.clone()),
                None => match source.head_manifest(&tag).await {
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
            let released = Event {
                tag: Some(tag),
                digest: Some(subject.clone()),
                ..event.clone()
            };
            out.extend(self.copy(loaded, &released, m, Cargo::Image).await);
        }
        let holders = self.holding(loaded, m, subject, &out).await;
        if !holders.is_empty() {
            let to_holders = Match {
                targets: holders,
                ..m.clone()
            };
            out.extend(self.copy(loaded, event, &to_holders, Cargo::Referrer).await);
        }
        out
    }

    /// The targets of `m` that hold `subject` now: where this delivery just released it, or,
    /// for the others, where a HEAD by digest finds it (a child of an index copied earlier,
    /// an image whose tag no rule selects any more). A referrer goes only where its subject
    /// is: on its own it would be an orphan the partner cannot place.
    async fn holding(
        &self,
        loaded: &Loaded,
        m: &Match,
        subject: &Digest,
        released: &Done,
    ) -> Vec<Repository> {
        let mut holders = Vec::new();
        for t in &m.targets {
            let here = released.targets.iter().any(|(repo, _, s)| {
                repo == t
                    && matches!(
                        s,
                        TargetStatus::Copied { .. } | TargetStatus::AlreadyPresent
                    )
            });
            let present = here
                || match loaded.registries.repo(t) {
                    Ok(c) => matches!(c.head_manifest(subject).await, Ok(Some(_))),
                    Err(_) => false,
                };
            if present {
                holders.push(t.clone());
            }
        }
        holders
    }

    /// An untagged manifest arrived under a rule that cares about referrers: read it (one GET
    /// of a small manifest); one with a `subject` is a referrer of that, released and
    /// brought along as one arriving by tag would be. One without is an untagged image
    /// (a child of an index being pushed, say): its tag's own event copies it.
    pub(super) async fn untagged(&self, loaded: &Loaded, event: &Event, m: &Match) -> Done {
        let nothing = Done {
            targets: Vec::new(),
            bytes: 0,
        };
        let Some(digest) = &event.digest else {
            return nothing;
        };
        let source = match loaded.registries.repo(&event.repo) {
            Ok(s) => s,
            Err(e) => return Done::all(m, None, TargetStatus::failed(e.to_string(), false)),
        };
        match source.get_manifest(digest).await {
            Ok(manifest) => match manifest.subject {
                Some(subject) => self.release(loaded, event, m, &subject.digest).await,
                None => nothing,
            },
            // Gone again before it was read: nothing left to bring.
            Err(e) if e.is_not_found() => nothing,
            Err(e) => Done::all(m, None, TargetStatus::registry_failure(&e)),
        }
    }
}
