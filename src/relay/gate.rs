//! The release gates in front of a copy: every key set of `signatures` must have signed the
//! image, Artifact Analysis must have found nothing the `vulnerabilities` policy refuses, and
//! every attestor of `attestation` must have attested it. Also the release attestation the
//! relay makes once an image is in place, which calls the same Google APIs.

use std::sync::Arc;
use std::time::SystemTime;

use crate::attestation::{self, AttestationPolicy, Attestations, ReleaseAttestation};
use crate::event::{DeliveryForm, Event};
use crate::manifest::{Contents, PlatformFilter};
use crate::reference::{Digest, Repository};
use crate::registry::endpoints::GoogleApis;
use crate::registry::{ManifestHead, Registries, RepoClient};
use crate::rules::Rule;
use crate::signature;
use crate::telemetry::Metrics;
use crate::vulnerability::{Published, Scanner, VulnerabilityPolicy};

use super::outcome::TargetStatus;

/// The gates, built once for the process: the Google API clients and where they point.
pub struct Gates {
    scanner: Scanner,
    attestations: Attestations,
    metrics: Arc<Metrics>,
}

impl Gates {
    /// Gates asking the Google APIs at `apis` (their production URLs, or fakes in tests).
    pub fn new(apis: &GoogleApis, metrics: Arc<Metrics>) -> Result<Gates, reqwest::Error> {
        let http = crate::registry::api_client()?;
        Ok(Gates {
            scanner: Scanner::new(http.clone(), apis.container_analysis.clone()),
            attestations: Attestations::new(http, apis),
            metrics,
        })
    }

    /// The gates of `rule` for the event's image: `None` to go ahead, or the status every
    /// target gets instead (also what `plan` and `sync --dry-run` report).
    pub async fn check(
        &self,
        registries: &Registries,
        event: &Event,
        rule: &Rule,
    ) -> Option<TargetStatus> {
        if !rule.gated() {
            return None;
        }
        let source = match registries.repo(&event.repo) {
            Ok(s) => s,
            Err(e) => return Some(TargetStatus::failed(e.to_string(), false)),
        };
        let digest = match &event.digest {
            Some(d) => d.clone(),
            None => match source.head_manifest(event.reference().manifest_ref()).await {
                Ok(Some(ManifestHead {
                    digest: Some(d), ..
                })) => d,
                Ok(_) => {
                    return Some(TargetStatus::failed(
                        format!("source {} does not exist", event.reference()),
                        false,
                    ));
                }
                Err(e) => return Some(TargetStatus::registry_failure(&e)),
            },
        };
        // Every key set must have signed: the build key, then the approvers.
        for (i, keys) in rule.signatures.iter().enumerate() {
            match signature::check(&source, &digest, keys).await {
                Ok(signature::Verdict::Signed { .. }) => {}
                Ok(signature::Verdict::Unsigned { reason }) => {
                    self.metrics.held(&rule.name, "signature");
                    let reason = if rule.signatures.len() > 1 {
                        let names: Vec<&str> = keys.names().collect();
                        format!(
                            "key set {} of {} ({}): {reason}",
                            i + 1,
                            rule.signatures.len(),
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
                Err(e) => return Some(TargetStatus::registry_failure(&e)),
            }
        }
        if let Some(policy) = &rule.vulnerabilities {
            let published = published(event, SystemTime::now());
            let held = self
                .vulnerabilities(
                    registries,
                    &source,
                    &event.repo,
                    &digest,
                    rule,
                    policy,
                    published,
                )
                .await;
            if held.is_some() {
                return held;
            }
        }
        match &rule.attestation {
            Some(policy) => {
                self.attested(registries, &event.repo, &digest, rule, policy)
                    .await
            }
            None => None,
        }
    }

    /// Binary Authorization: every attestor must have attested `digest` (an index's own
    /// digest, the reference a cluster deploys and the policy is evaluated on).
    async fn attested(
        &self,
        registries: &Registries,
        repo: &Repository,
        digest: &Digest,
        rule: &Rule,
        policy: &AttestationPolicy,
    ) -> Option<TargetStatus> {
        let token = match google_token(registries, "attestation gate").await {
            Ok(t) => t,
            Err(failed) => return Some(failed),
        };
        match self
            .attestations
            .check(policy, repo, digest, token.expose())
            .await
        {
            Ok(attestation::Verdict::Attested) => None,
            Ok(attestation::Verdict::Missing { reason }) => {
                self.metrics.held(&rule.name, "attestation");
                Some(TargetStatus::Held {
                    gate: "attestation".into(),
                    reason,
                })
            }
            Err(e) => Some(TargetStatus::failed(
                format!("attestation gate: {e}"),
                e.is_retryable() || e.is_denied(),
            )),
        }
    }

    /// Attest `digest` at `target` on the rule's release note: `None` when done (now or by an
    /// earlier delivery), or the failure the target's outcome becomes.
    pub async fn attest_release(
        &self,
        registries: &Registries,
        release: &ReleaseAttestation,
        target: &Repository,
        digest: &Digest,
    ) -> Option<TargetStatus> {
        let token = match google_token(registries, "release attestation").await {
            Ok(t) => t,
            Err(failed) => return Some(failed),
        };
        match self
            .attestations
            .attest(release, target, digest, token.expose())
            .await
        {
            Ok(attestation::Attested::Created { occurrence }) => {
                tracing::info!(target = %target, %digest, occurrence, "release attested");
                None
            }
            Ok(attestation::Attested::AlreadyThere) => None,
            // The image is in place: a redelivery finds it there and attests without copying.
            Err(e) => Some(TargetStatus::failed(
                format!("copied, but not attested: {e}"),
                e.is_retryable() || e.is_denied(),
            )),
        }
    }

    /// Artifact Analysis findings for the image, or for each child of an index (the children
    /// the rule copies, when it filters platforms).
    #[allow(clippy::too_many_arguments)]
    async fn vulnerabilities(
        &self,
        registries: &Registries,
        source: &RepoClient,
        repo: &Repository,
        digest: &Digest,
        rule: &Rule,
        policy: &VulnerabilityPolicy,
        published: Published,
    ) -> Option<TargetStatus> {
        let manifest = match source.get_manifest(digest).await {
            Ok(m) => m,
            Err(e) => return Some(TargetStatus::registry_failure(&e)),
        };
        let digests: Vec<Digest> = match &manifest.contents {
            Contents::Image { .. } => vec![digest.clone()],
            Contents::Index { manifests } => manifests
                .iter()
                .filter(|c| PlatformFilter::keeps(&rule.platforms, c))
                .map(|c| c.digest.clone())
                .collect(),
        };
        let token = match google_token(registries, "vulnerability gate").await {
            Ok(t) => t,
            Err(failed) => return Some(failed),
        };
        match self
            .scanner
            .check(repo, &digests, policy, published, token.expose())
            .await
        {
            Ok(crate::vulnerability::Verdict::Clean) => None,
            Ok(crate::vulnerability::Verdict::Held { reason, .. }) => {
                self.metrics.held(&rule.name, "vulnerabilities");
                Some(TargetStatus::Held {
                    gate: "vulnerabilities".into(),
                    reason,
                })
            }
            Ok(crate::vulnerability::Verdict::Pending { reason }) => Some(TargetStatus::Pending {
                gate: "vulnerabilities".into(),
                reason,
            }),
            Err(e) => Some(TargetStatus::failed(
                e.to_string(),
                e.is_retryable() || e.is_denied(),
            )),
        }
    }
}

/// How long ago the event's image was published, for `unscanned_after` (see [`Published`]).
/// For a signature that releases its image, this is the signature's event: the image is at
/// least that old, so an unscanned image waits no less than the rule says.
fn published(event: &Event, now: SystemTime) -> Published {
    match event
        .publish_time
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(t.trim()).ok())
    {
        // A publish time ahead of this clock (skew between Google's and the instance's) is
        // "just now": waiting is the answer a later delivery can still correct.
        Some(t) => Published::Ago(now.duration_since(t).unwrap_or_default()),
        None if event.delivery == DeliveryForm::Reconcile => Published::UnknownToSync,
        None => Published::Unknown,
    }
}

/// The relay's own Google access token, for `what`; a failure to get one is retryable (the
/// metadata server or IAM answers again later, or a grant fixes it).
async fn google_token(
    registries: &Registries,
    what: &str,
) -> Result<crate::registry::auth::Secret, TargetStatus> {
    registries
        .google_token()
        .await
        .map_err(|e| TargetStatus::failed(format!("{what}: {e}"), true))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn event(publish_time: Option<&str>, delivery: DeliveryForm) -> Event {
        Event {
            action: crate::event::Action::Insert,
            repo: Repository::parse("src.example/acme/releases/app").unwrap(),
            tag: None,
            digest: None,
            message_id: None,
            publish_time: publish_time.map(str::to_owned),
            delivery,
        }
    }

    #[test]
    fn the_age_is_measured_from_the_publish_time_and_unknown_only_to_a_sync_is_old() {
        let now = humantime::parse_rfc3339("2026-11-20T20:00:00Z").unwrap();
        let e = event(Some("2026-11-20T19:13:55.749Z"), DeliveryForm::PubSubPush);
        assert_eq!(
            published(&e, now),
            Published::Ago(Duration::from_millis(46 * 60_000 + 4_251))
        );
        let ahead = event(Some("2026-11-20T20:05:00Z"), DeliveryForm::PubSubPush);
        assert_eq!(published(&ahead, now), Published::Ago(Duration::ZERO));
        for time in [None, Some("yesterday")] {
            assert_eq!(
                published(&event(time, DeliveryForm::PubSubPush), now),
                Published::Unknown
            );
        }
        assert_eq!(
            published(&event(None, DeliveryForm::Reconcile), now),
            Published::UnknownToSync
        );
    }
}
