//! Deterministic content and manifest builders (no I/O).
//!
//! Manifests are serialized with `serde_json::to_vec_pretty` from `json!`
//! values: keys come out sorted and indented, which differs from what a
//! struct-based serializer would produce. So a relay that re-serializes
//! instead of copying bytes verbatim changes the digest and tests notice.

use super::sha256_digest;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use std::io::{Read, Write};

/// Media types used by the builders and the Accept header of readers.
pub mod media {
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
    /// Short-lived OCI 1.1 RC type; only listed in Accept headers.
    pub const OCI_ARTIFACT_MANIFEST: &str = "application/vnd.oci.artifact.manifest.v1+json";
    pub const COSIGN_SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
    pub const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

    /// Accept header value that asks for any manifest kind verbatim.
    pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
        application/vnd.oci.image.manifest.v1+json, \
        application/vnd.docker.distribution.manifest.list.v2+json, \
        application/vnd.docker.distribution.manifest.v2+json, \
        application/vnd.oci.artifact.manifest.v1+json";
}

/// The 32-byte gzip of an empty (1024 zero bytes) tar that Docker uses for
/// "empty" layers; its digest is [`EMPTY_TAR_GZIP_DIGEST`].
pub const EMPTY_TAR_GZIP: [u8; 32] = [
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x09, 0x6e, 0x88, 0x00, 0xff, 0x62, 0x18, 0x05, 0xa3, 0x60, 0x14,
    0x8c, 0x58, 0x00, 0x08, 0x00, 0x00, 0xff, 0xff, 0x2e, 0xaf, 0xb5, 0xef, 0x00, 0x04, 0x00, 0x00,
];
pub const EMPTY_TAR_GZIP_DIGEST: &str =
    "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";
/// OCI 1.1 empty descriptor content `{}` and its digest.
pub const EMPTY_JSON: &[u8] = b"{}";
pub const EMPTY_JSON_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

/// A blob as stored in a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
}

/// A manifest (image, index, list, signature, artifact) with its exact bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pushed {
    pub digest: String,
    pub bytes: Vec<u8>,
    pub media_type: String,
}

impl Pushed {
    /// Wrap manifest bytes, computing their digest.
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Pushed {
        Pushed {
            digest: sha256_digest(&bytes),
            bytes,
            media_type: media_type.to_string(),
        }
    }
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
    /// Digest hex without the `sha256:` prefix.
    pub fn hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }
    /// OCI descriptor `{mediaType, digest, size}` of this manifest.
    pub fn descriptor(&self) -> Value {
        descriptor(&self.media_type, &self.digest, self.size())
    }
    /// The manifest parsed as JSON (for assertions).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).expect("pushed manifest is valid JSON")
    }
}

/// A single-platform image: its manifest plus what it references.
#[derive(Clone, Debug)]
pub struct Image {
    pub manifest: Pushed,
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub platform: Platform,
}

/// A multi-platform image (OCI index or Docker manifest list).
#[derive(Clone, Debug)]
pub struct Index {
    pub manifest: Pushed,
    /// Children in the same order as in the index.
    pub children: Vec<Image>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Docker v2 schema 2 manifest / manifest list.
    Docker,
    /// OCI image manifest / index.
    Oci,
}

impl Format {
    pub fn manifest_type(self) -> &'static str {
        match self {
            Format::Docker => media::DOCKER_MANIFEST,
            Format::Oci => media::OCI_MANIFEST,
        }
    }
    pub fn index_type(self) -> &'static str {
        match self {
            Format::Docker => media::DOCKER_LIST,
            Format::Oci => media::OCI_INDEX,
        }
    }
    pub fn config_type(self) -> &'static str {
        match self {
            Format::Docker => media::DOCKER_CONFIG,
            Format::Oci => media::OCI_CONFIG,
        }
    }
    pub fn layer_type(self, compressed: bool) -> &'static str {
        match (self, compressed) {
            (Format::Docker, true) => media::DOCKER_LAYER_GZIP,
            (Format::Docker, false) => media::DOCKER_LAYER_TAR,
            (Format::Oci, true) => media::OCI_LAYER_GZIP,
            (Format::Oci, false) => media::OCI_LAYER_TAR,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }
    pub fn linux_amd64() -> Platform {
        Platform::new("linux", "amd64", None)
    }
    /// linux/amd64, linux/arm64/v8, linux/arm/v7, linux/s390x.
    pub fn four() -> Vec<Platform> {
        vec![
            Platform::linux_amd64(),
            Platform::new("linux", "arm64", Some("v8")),
            Platform::new("linux", "arm", Some("v7")),
            Platform::new("linux", "s390x", None),
        ]
    }
    /// `{"architecture","os"[,"variant"]}` as used in index entries.
    pub fn json(&self) -> Value {
        let mut v = json!({ "architecture": self.architecture, "os": self.os });
        if let Some(variant) = &self.variant {
            v["variant"] = json!(variant);
        }
        v
    }
    /// Stable number (FNV-1a of the platform) mixed into seeds so each
    /// platform's content differs.
    pub fn salt(&self) -> u64 {
        let s = format!("{}/{}/{:?}", self.os, self.architecture, self.variant);
        s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        })
    }
}

/// A layer's bytes and whether they are gzip-compressed (decides the media
/// type and how the config's diff_id is computed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub bytes: Vec<u8>,
    pub compressed: bool,
}

impl Layer {
    /// Gzip of `raw_len` pseudo-random bytes (not a real tar: registries and
    /// the relay never look inside).
    pub fn random_gzip(seed: u64, raw_len: usize) -> Layer {
        Layer {
            bytes: gzip(&random_bytes(seed, raw_len)),
            compressed: true,
        }
    }
    /// `len` pseudo-random bytes with an uncompressed-tar media type.
    pub fn random_tar(seed: u64, len: usize) -> Layer {
        Layer {
            bytes: random_bytes(seed, len),
            compressed: false,
        }
    }
    /// Docker's well-known 32-byte gzipped empty tar.
    pub fn empty_gzip() -> Layer {
        Layer {
            bytes: EMPTY_TAR_GZIP.to_vec(),
            compressed: true,
        }
    }
    /// Uncompressed content digest, as listed in the config's `diff_ids`.
    pub fn diff_id(&self) -> String {
        if !self.compressed {
            return sha256_digest(&self.bytes);
        }
        let mut raw = Vec::new();
        GzDecoder::new(&self.bytes[..])
            .read_to_end(&mut raw)
            .expect("layer is valid gzip");
        sha256_digest(&raw)
    }
}

/// Deterministic pseudo-random bytes (same seed, same bytes).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).expect("gzip into Vec cannot fail");
    enc.finish().expect("gzip into Vec cannot fail")
}

/// `{mediaType, digest, size}`.
pub fn descriptor(media_type: &str, digest: &str, size: u64) -> Value {
    json!({ "mediaType": media_type, "digest": digest, "size": size })
}

/// Image config JSON for `platform` with `rootfs.diff_ids` of `layers`.
pub fn config_json(platform: &Platform, layers: &[Layer]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(Layer::diff_id).collect();
    let mut v = json!({
        "architecture": platform.architecture,
        "os": platform.os,
        "created": "2024-01-01T00:00:00Z",
        "config": { "Env": ["PATH=/usr/bin:/bin"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    if let Some(variant) = &platform.variant {
        v["variant"] = json!(variant);
    }
    to_bytes(&v)
}

/// Image manifest (Docker v2 s2 or OCI) referencing `config` and `layers`
/// (`(media_type, blob)` pairs).
pub fn image_manifest_json(format: Format, config: &Blob, layers: &[(&str, &Blob)]) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|(mt, b)| descriptor(mt, &b.digest, b.size))
        .collect();
    to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": format.manifest_type(),
        "config": descriptor(format.config_type(), &config.digest, config.size),
        "layers": layers,
    }))
}

/// OCI index / Docker manifest list over single-platform images.
pub fn index_json(format: Format, children: &[Image]) -> Vec<u8> {
    let manifests: Vec<Value> = children
        .iter()
        .map(|c| {
            let mut d = c.manifest.descriptor();
            d["platform"] = c.platform.json();
            d
        })
        .collect();
    to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": format.index_type(),
        "manifests": manifests,
    }))
}

/// Cosign "simple signing" payload for `subject_digest`.
pub fn cosign_payload(docker_reference: &str, subject_digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {
            "identity": { "docker-reference": docker_reference },
            "image": { "docker-manifest-digest": subject_digest },
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .expect("serialize cosign payload")
}

/// Manifest bytes, pretty-printed (see module docs for why).
pub fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).expect("serialize manifest JSON")
}
