//! What refers to a manifest: the OCI 1.1 referrers API, or, on a registry without it, the
//! index clients keep under the referrers tag `sha256-HEX` (distribution-spec 1.1,
//! "Referrers Tag Schema"). One lookup for the copy engine and the signature gate alike.

use crate::manifest::{Contents, Descriptor, Manifest};
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
