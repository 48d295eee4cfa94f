//! A referrer arrived for an image: release the tags a gate held back, and bring the referrer.

use crate::event::Event;
use crate::reference::{Digest, Tag};

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
        let subject_released = out.targets.iter().any(|(_, _, s)| {
            matches!(
                s,
                TargetStatus::Copied { .. } | TargetStatus::AlreadyPresent
            )
        });
        if subject_released {
            out.extend(self.copy(loaded, event, m, Cargo::Referrer).await);
        }
        out
    }
}
