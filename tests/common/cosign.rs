//! Real cosign signatures: a P-256 key pair, simple-signing payloads signed with it, and the
//! two layouts cosign stores them in — the `sha256-HEX.sig` tag, and an OCI 1.1 referrer
//! (`--registry-referrers-mode=oci-1-1`) with the `sha256-HEX` referrers tag index a client
//! writes for registries without the referrers API (distribution 2.8).
//!
//! Unlike [`Seeder::push_cosign_signature`], whose signature is fake, these verify with the
//! public key exactly as `cosign verify --key cosign.pub` would check them.

use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::images::{EMPTY_JSON, EMPTY_JSON_DIGEST, Pushed, descriptor, media, to_bytes};
use super::seed::Seeder;

/// `artifactType` cosign gives a signature pushed as an OCI 1.1 referrer.
pub const COSIGN_SIG_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

/// An ECDSA P-256 key pair, the kind `cosign generate-key-pair` makes.
pub struct CosignKey {
    pair: EcdsaKeyPair,
}

impl CosignKey {
    /// A fresh random key pair.
    pub fn generate() -> CosignKey {
        CosignKey {
            pair: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
                .expect("generate P-256 key pair"),
        }
    }

    /// The public key as cosign writes `cosign.pub`: PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
    pub fn public_pem(&self) -> String {
        let der = self
            .pair
            .public_key()
            .as_der()
            .expect("encode public key as SubjectPublicKeyInfo");
        pem("PUBLIC KEY", der.as_ref())
    }

    /// Write [`CosignKey::public_pem`] to `dir/file` and return the path.
    pub fn write_public(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, self.public_pem())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Base64 of the ASN.1 DER ECDSA-P256-SHA256 signature over `payload`: the value of the
    /// `dev.cosignproject.cosign/signature` annotation.
    pub fn sign(&self, payload: &[u8]) -> String {
        let sig = self
            .pair
            .sign(&SystemRandom::new(), payload)
            .expect("ECDSA sign");
        STANDARD.encode(sig.as_ref())
    }

    /// A signature of `digest` as `cosign sign --key` makes it for `docker_reference`.
    pub fn sign_image(&self, docker_reference: &str, digest: &str) -> CosignSignature {
        let payload = simple_signing_payload(docker_reference, digest);
        CosignSignature {
            signature: self.sign(&payload),
            payload,
        }
    }
}

/// PEM armour: base64 in 64-column lines between BEGIN and END lines.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The simple-signing payload cosign signs, byte for byte as cosign (Go's encoding/json)
/// writes it: compact, keys in this order.
pub fn simple_signing_payload(docker_reference: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {
            "identity": { "docker-reference": docker_reference },
            "image": { "docker-manifest-digest": digest },
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .expect("serialize simple-signing payload")
}

/// One signature layer: the payload bytes and the base64 signature annotation.
#[derive(Clone, Debug)]
pub struct CosignSignature {
    pub payload: Vec<u8>,
    pub signature: String,
}

impl CosignSignature {
    /// The same signature over a payload changed after signing (still valid JSON naming the
    /// same digest), as an attacker editing the blob and its descriptor would leave it.
    pub fn tampered(&self) -> CosignSignature {
        let text = String::from_utf8(self.payload.clone()).expect("payload is UTF-8");
        let changed = text.replace(r#""optional":null"#, r#""optional":{"tampered":"yes"}"#);
        assert_ne!(changed, text, "payload has the expected shape");
        CosignSignature {
            payload: changed.into_bytes(),
            signature: self.signature.clone(),
        }
    }
}

impl Seeder {
    /// Push `sig`'s payload blob and config, and return the signature layer's descriptor.
    async fn push_cosign_layer(&self, repo: &str, sig: &CosignSignature) -> serde_json::Value {
        let layer = self.push_blob(repo, &sig.payload).await;
        let mut desc = descriptor(media::COSIGN_SIMPLESIGNING, &layer.digest, layer.size);
        desc["annotations"] = json!({ media::COSIGN_SIGNATURE_ANNOTATION: sig.signature });
        desc
    }

    /// A cosign signature manifest for `subject_digest` under the tag `sha256-HEX.sig`, as
    /// `cosign sign --key` pushes it: OCI manifest, the config cosign writes (empty image
    /// config whose `diff_ids` name the payloads), one simple-signing layer per signature.
    pub async fn push_cosign_sig_tag(
        &self,
        repo: &str,
        subject_digest: &str,
        sigs: &[&CosignSignature],
    ) -> Pushed {
        let mut layers = Vec::with_capacity(sigs.len());
        for sig in sigs {
            layers.push(self.push_cosign_layer(repo, sig).await);
        }
        let diff_ids: Vec<&serde_json::Value> = layers.iter().map(|l| &l["digest"]).collect();
        let config_bytes = serde_json::to_vec(&json!({
            "architecture": "",
            "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{ "created": "0001-01-01T00:00:00Z" }],
            "os": "",
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .expect("serialize cosign config");
        let config = self.push_blob(repo, &config_bytes).await;
        let bytes = to_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": descriptor(media::OCI_CONFIG, &config.digest, config.size),
            "layers": layers,
        }));
        let m = Pushed::new(media::OCI_MANIFEST, bytes);
        let hex = subject_digest.trim_start_matches("sha256:");
        self.push_pushed(repo, Some(&format!("sha256-{hex}.sig")), &m)
            .await;
        m
    }

    /// [`Seeder::push_cosign_sig_tag`] with one fresh signature of `subject` by `key`.
    pub async fn cosign_sign(&self, repo: &str, subject: &Pushed, key: &CosignKey) -> Pushed {
        let sig = key.sign_image(&format!("{}/{repo}", self.host()), &subject.digest);
        self.push_cosign_sig_tag(repo, &subject.digest, &[&sig])
            .await
    }

    /// A cosign signature of `subject` stored as an OCI 1.1 referrer: image manifest with
    /// `artifactType` = cosign's signature type, the empty config, the signature layer and
    /// `subject`, pushed by digest; plus the `sha256-HEX` referrers tag index listing it
    /// (distribution 2.8 has no referrers API, so a client keeps that index itself).
    pub async fn push_cosign_sig_referrer(
        &self,
        repo: &str,
        subject: &Pushed,
        sig: &CosignSignature,
    ) -> Pushed {
        self.push_blob(repo, EMPTY_JSON).await;
        let layer = self.push_cosign_layer(repo, sig).await;
        let bytes = to_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "artifactType": COSIGN_SIG_ARTIFACT_TYPE,
            "config": descriptor(media::OCI_EMPTY, EMPTY_JSON_DIGEST, EMPTY_JSON.len() as u64),
            "layers": [layer],
            "subject": subject.descriptor(),
            "annotations": { "org.opencontainers.image.created": "2024-01-01T00:00:00Z" },
        }));
        let m = Pushed::new(media::OCI_MANIFEST, bytes);
        self.push_pushed(repo, None, &m).await;
        self.push_referrers_tag_index(repo, subject, &[&m]).await;
        m
    }
}
