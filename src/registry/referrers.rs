//! What refers to a manifest: the OCI 1.1 referrers API, or, on a registry without it, the
//! index clients keep under the referrers tag `sha256-HEX` (distribution-spec 1.1,
//! "Referrers Tag Schema"). One lookup for the copy engine and the signature gate alike.

use crate::manifest::{Contents, Descriptor, Manifest, OCI_INDEX};
use crate::reference::Digest;

use super::RepoClient;
use super::error::RegistryError;

/// The referrers of one subject.
#[derive(Debug, Clone, Default)]
pub struct Referrers {
    /// Each referrer's descriptor, with the `artifactType` it was listed with.
    pub descriptors: Vec<Descriptor>,
    /// The referrers tag's manifest, on a registry without the API that has one. A copy
    /// brings it along (after the referrers it lists); it should be an index, and when it is
    /// not, `descriptors` is empty.
    pub tag_index: Option<Manifest>,
}

impl RepoClient {
    /// The referrers of `subject`: from the API; when the registry answers it with 404, from
    /// the referrers tag; none when neither exists.
    pub async fn find_referrers(&self, subject: &Digest) -> Result<Referrers, RegistryError> {
        if let Some(descriptors) = self.referrers(subject).await? {
            return Ok(Referrers {
                descriptors,
                tag_index: None,
            });
        }
        let index = match self.get_manifest(&subject.referrers_tag()).await {
            Ok(m) => m,
            Err(e) if e.is_not_found() => return Ok(Referrers::default()),
            Err(e) => return Err(e),
        };
        let descriptors = match &index.contents {
            Contents::Index { manifests } => manifests.clone(),
            Contents::Image { .. } => Vec::new(),
        };
        Ok(Referrers {
            descriptors,
            tag_index: Some(index),
        })
    }
}

/// How many times a referrers tag index is read, extended and written before giving up: two
/// relays (or a relay and `oras attach`) adding to one index at once can each overwrite the
/// other's addition, and a read after the write tells.
const INDEX_ROUNDS: usize = 3;

impl RepoClient {
    /// Make `referrer` (a manifest whose `subject` is `subject`, just pushed here) findable on
    /// a registry without the referrers API: add its descriptor to the index under the
    /// referrers tag `sha256-HEX`, creating it if absent, as distribution-spec 1.1 asks of
    /// the client that pushed it. Idempotent: a referrer already listed is left alone.
    pub async fn index_referrer(
        &self,
        subject: &Digest,
        referrer: &Manifest,
    ) -> Result<(), RegistryError> {
        let tag = subject.referrers_tag();
        let entry = referrer_descriptor(referrer);
        for _ in 0..INDEX_ROUNDS {
            let mut listed: Vec<serde_json::Value> = match self.get_manifest(&tag).await {
                Ok(index) => match serde_json::from_slice::<serde_json::Value>(&index.bytes) {
                    Ok(v) => v["manifests"].as_array().cloned().unwrap_or_default(),
                    Err(_) => Vec::new(),
                },
                Err(e) if e.is_not_found() => Vec::new(),
                Err(e) => return Err(e),
            };
            if listed
                .iter()
                .any(|d| d["digest"].as_str() == Some(referrer.digest.as_str()))
            {
                return Ok(());
            }
            listed.push(entry.clone());
            let bytes = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": listed,
            }))
            .unwrap_or_default();
            let index = Manifest::parse(
                Digest::sha256_of(&bytes),
                Some(OCI_INDEX),
                bytes::Bytes::from(bytes),
            )
            .map_err(|e| RegistryError::Internal {
                op: self.op("PUT", format!("manifest {tag}")),
                detail: format!("referrers index: {e}"),
            })?;
            self.put_manifest(&tag, &index).await?;
        }
        // Whatever the last round wrote, another writer may have replaced since: say so if
        // the referrer is still missing.
        let index = self.get_manifest(&tag).await?;
        let listed = match &index.contents {
            Contents::Index { manifests } => manifests.iter().any(|d| d.digest == referrer.digest),
            Contents::Image { .. } => false,
        };
        if listed {
            Ok(())
        } else {
            Err(RegistryError::Transport {
                op: self.op("PUT", format!("manifest {tag}")),
                detail: format!(
                    "the referrers index kept changing under {INDEX_ROUNDS} writes; {} is not in it yet",
                    referrer.digest
                ),
            })
        }
    }
}

/// The index entry for a referrer: what `oras discover` and `cosign tree` filter on
/// (`artifactType`, falling back to the config's media type as the spec says) and show
/// (`annotations`).
fn referrer_descriptor(m: &Manifest) -> serde_json::Value {
    let raw: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap_or_default();
    let mut d = serde_json::json!({
        "mediaType": m.media_type,
        "digest": m.digest.as_str(),
        "size": m.bytes.len(),
    });
    let artifact_type = raw["artifactType"]
        .as_str()
        .or_else(|| raw["config"]["mediaType"].as_str());
    if let Some(t) = artifact_type {
        d["artifactType"] = t.into();
    }
    if raw["annotations"].is_object() {
        d["annotations"] = raw["annotations"].clone();
    }
    d
}
