//! Manifests as a copier sees them: raw bytes that must travel unchanged, plus the descriptors
//! they point at. Only the fields that decide what else to copy are parsed; everything else is
//! carried byte for byte, so digests and signatures over the manifest stay valid.

use serde::Deserialize;

use crate::reference::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The short-lived OCI artifact manifest (image-spec 1.1 release candidates); still found in
/// registries, so it is copied like any other manifest.
pub const OCI_ARTIFACT_MANIFEST: &str = "application/vnd.oci.artifact.manifest.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest media type a relay accepts, for the `Accept` header.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.oci.artifact.manifest.v1+json";

/// Why a manifest could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not JSON of a known shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("manifest has no media type (neither Content-Type nor a mediaType field)")]
    NoMediaType,
}

/// A content descriptor (OCI image-spec `descriptor.md`), with the fields a copier uses.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub artifact_type: Option<String>,
}

/// An index entry's platform.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_platform(f, &self.os, &self.architecture, self.variant.as_deref())
    }
}

/// `os/arch[/variant]`, as `--platform` takes it and as an index entry's platform is shown.
fn write_platform(
    f: &mut std::fmt::Formatter<'_>,
    os: &str,
    architecture: &str,
    variant: Option<&str>,
) -> std::fmt::Result {
    write!(f, "{os}/{architecture}")?;
    match variant {
        Some(v) => write!(f, "/{v}"),
        None => Ok(()),
    }
}

/// `--platform os/arch[/variant]` as given by a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformFilter {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl std::str::FromStr for PlatformFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Self {
                os: (*os).into(),
                architecture: (*arch).into(),
                variant: None,
            }),
            [os, arch, var] if !os.is_empty() && !arch.is_empty() && !var.is_empty() => Ok(Self {
                os: (*os).into(),
                architecture: (*arch).into(),
                variant: Some((*var).into()),
            }),
            _ => Err(format!("platform {s:?}: expected os/arch[/variant]")),
        }
    }
}

impl std::fmt::Display for PlatformFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_platform(f, &self.os, &self.architecture, self.variant.as_deref())
    }
}

impl PlatformFilter {
    /// Whether an index entry's platform is selected. A filter without variant selects every
    /// variant of that os/arch, as `docker pull --platform linux/arm` does.
    pub fn matches(&self, p: &Platform) -> bool {
        self.os == p.os
            && self.architecture == p.architecture
            && (self.variant.is_none() || self.variant == p.variant)
    }

    /// Whether `filters` (a rule's `platforms`, `--platform`) keep an index child: every
    /// child when there are none; otherwise only children whose platform one of them
    /// matches (a child without a platform, an attestation manifest say, is dropped).
    pub fn keeps(filters: &[PlatformFilter], child: &Descriptor) -> bool {
        filters.is_empty()
            || child
                .platform
                .as_ref()
                .is_some_and(|p| filters.iter().any(|f| f.matches(p)))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    /// OCI artifact manifest (1.1 rc) lists its blobs here.
    #[serde(default)]
    blobs: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    subject: Option<Descriptor>,
}

/// What a manifest points at.
#[derive(Debug, Clone)]
pub enum Contents {
    /// An image or artifact: blobs (config first, then layers), all of which must be present in
    /// a target before the manifest is pushed there.
    Image { blobs: Vec<Descriptor> },
    /// An index or manifest list: child manifests.
    Index { manifests: Vec<Descriptor> },
}

/// A manifest exactly as the registry served it.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: bytes::Bytes,
    pub contents: Contents,
    /// OCI 1.1 `subject`: the manifest this one refers to (a signature, an SBOM).
    pub subject: Option<Descriptor>,
}

impl Manifest {
    /// Parse raw bytes. `content_type` is the registry's `Content-Type`; when it is missing or
    /// generic the manifest's own `mediaType` field decides.
    pub fn parse(
        digest: Digest,
        content_type: Option<&str>,
        bytes: bytes::Bytes,
    ) -> Result<Self, ManifestError> {
        let wire: Wire = serde_json::from_slice(&bytes)?;
        let header = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim())
            .filter(|c| {
                !c.is_empty() && *c != "application/json" && *c != "application/octet-stream"
            });
        let media_type = header
            .map(str::to_owned)
            .or(wire.media_type.clone())
            .or_else(|| {
                // Pre-1.0.2 OCI manifests may omit mediaType; the shape tells.
                if wire.manifests.is_some() {
                    Some(OCI_INDEX.to_owned())
                } else if wire.config.is_some() {
                    Some(OCI_MANIFEST.to_owned())
                } else {
                    None
                }
            })
            .ok_or(ManifestError::NoMediaType)?;
        let contents = match media_type.as_str() {
            OCI_INDEX | DOCKER_MANIFEST_LIST => Contents::Index {
                manifests: wire.manifests.unwrap_or_default(),
            },
            OCI_MANIFEST | DOCKER_MANIFEST => {
                let mut blobs = Vec::new();
                blobs.extend(wire.config);
                blobs.extend(wire.layers.unwrap_or_default());
                Contents::Image { blobs }
            }
            OCI_ARTIFACT_MANIFEST => Contents::Image {
                blobs: wire.blobs.unwrap_or_default(),
            },
            other => return Err(ManifestError::UnsupportedMediaType(other.to_owned())),
        };
        Ok(Manifest {
            digest,
            media_type,
            bytes,
            contents,
            subject: wire.subject,
        })
    }

    pub fn is_index(&self) -> bool {
        matches!(self.contents, Contents::Index { .. })
    }

    /// A copy of this index keeping only the children `keep` selects. The bytes are re-encoded,
    /// so the result has a new digest: that is inherent in dropping platforms.
    pub fn filter_index(
        &self,
        keep: impl Fn(&Descriptor) -> bool,
    ) -> Result<Manifest, ManifestError> {
        let mut value: serde_json::Value = serde_json::from_slice(&self.bytes)?;
        if let Some(list) = value.get_mut("manifests").and_then(|m| m.as_array_mut()) {
            let mut kept = Vec::with_capacity(list.len());
            for entry in list.drain(..) {
                let desc: Descriptor = serde_json::from_value(entry.clone())?;
                if keep(&desc) {
                    kept.push(entry);
                }
            }
            *list = kept;
        }
        let bytes = bytes::Bytes::from(serde_json::to_vec(&value)?);
        Manifest::parse(Digest::sha256_of(&bytes), Some(&self.media_type), bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn image_manifest_lists_config_then_layers() {
        let raw = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"x","digest":"{}","size":1}},
            "layers":[{{"mediaType":"y","digest":"{}","size":2}}],"extra":true}}"#,
            d('a'),
            d('b')
        );
        let m = Manifest::parse(Digest::sha256_of(raw.as_bytes()), None, raw.into()).unwrap();
        assert_eq!(m.media_type, DOCKER_MANIFEST);
        let Contents::Image { blobs } = m.contents else {
            panic!("not an image")
        };
        assert_eq!(blobs.len(), 2);
        assert_eq!(blobs[0].size, 1);
    }

    #[test]
    fn content_type_wins_over_the_body_and_charset_is_ignored() {
        let raw = format!(r#"{{"manifests":[{{"digest":"{}","size":3}}]}}"#, d('c'));
        let m = Manifest::parse(
            Digest::sha256_of(raw.as_bytes()),
            Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
            raw.into(),
        )
        .unwrap();
        assert!(m.is_index());
    }

    #[test]
    fn filter_index_keeps_selected_platforms_and_rehashes() {
        let raw = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
              {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}},
              {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}}]}}"#,
            d('a'),
            d('b')
        );
        let m = Manifest::parse(Digest::sha256_of(raw.as_bytes()), None, raw.into()).unwrap();
        let f: PlatformFilter = "linux/arm".parse().unwrap();
        let out = m
            .filter_index(|c| c.platform.as_ref().is_some_and(|p| f.matches(p)))
            .unwrap();
        let Contents::Index { manifests } = &out.contents else {
            panic!()
        };
        assert_eq!(manifests.len(), 1);
        assert_ne!(out.digest, m.digest);
        assert!(out.digest.matches(&out.bytes));
    }

    #[test]
    fn unknown_media_types_are_refused() {
        let raw = r#"{"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#;
        let e = Manifest::parse(Digest::sha256_of(raw.as_bytes()), None, raw.into()).unwrap_err();
        assert!(e.to_string().contains("unsupported"));
    }
}
