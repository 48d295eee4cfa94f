//! The release gate "an image must be signed before it is copied", checked the way
//! `cosign verify --key cosign.pub` checks it.
//!
//! cosign stores a signature as an image manifest whose layers are "simple signing" payloads
//! (a small JSON document naming the signed manifest's digest), each with the base64 of an
//! ASN.1 DER ECDSA P-256 SHA-256 signature over the payload's bytes in the layer annotation
//! `dev.cosignproject.cosign/signature`. That manifest lives under the tag `sha256-HEX.sig`
//! (cosign's default) or, with `--registry-referrers-mode=oci-1-1`, as an OCI 1.1 referrer of
//! the signed manifest. An image is signed when any layer of any such manifest verifies with a
//! trusted key *and* its payload names the image's digest: the signature alone only proves who
//! wrote the payload, the payload says what was signed.
//!
//! Crypto: aws-lc-rs, not the RustCrypto `p256` crate. aws-lc-rs is already compiled into the
//! binary (rustls and jsonwebtoken use it), so verification adds no crate to the build, whereas
//! `p256` with `ecdsa` and `pkcs8` would add about a dozen (elliptic-curve, ecdsa, primeorder,
//! crypto-bigint, sec1, spki, der, ...). aws-lc-rs takes the X.509 SubjectPublicKeyInfo DER that
//! a `PUBLIC KEY` PEM block holds and checks that its curve is P-256; the PEM armour is removed
//! here with the `base64` crate the project already uses.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ParsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::manifest::{Descriptor, Manifest};
use crate::reference::{Digest, ManifestRef};
use crate::registry::error::RegistryError;
use crate::registry::{RepoClient, transport};

/// `artifactType` of a cosign signature stored as an OCI 1.1 referrer.
pub const COSIGN_SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// Layer annotation holding the base64 of the DER ECDSA signature over the layer's bytes.
pub const COSIGN_SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a cosign simple-signing payload.
pub const COSIGN_PAYLOAD_TYPE: &str = "cosign container image signature";

/// A simple-signing payload is a few hundred bytes; 1 MiB leaves room for a large `optional`
/// map while bounding what a hostile or broken registry can make the gate buffer.
const MAX_PAYLOAD_BYTES: u64 = 1 << 20;
/// Problems spelled out in an `Unsigned` reason; the rest are counted, so a repository with
/// hundreds of stale signatures does not produce a reason of hundreds of lines.
const MAX_LISTED_PROBLEMS: usize = 4;

/// A key file that cannot serve as a trusted key, with the file and why.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// A gate with no key would refuse every image; that is a rule mistake, not a policy.
    #[error("no public key files given: a signature requirement needs at least one key")]
    NoKeys,
    /// The key file could not be read.
    #[error("{path}: cannot read key file: {source}")]
    Read {
        /// The file as given.
        path: String,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The file was read but holds no usable ECDSA P-256 public key.
    #[error("{path}: {reason}")]
    Key {
        /// The file as given (or the name passed to [`TrustedKeys::from_pem`]).
        path: String,
        /// What is wrong with its content.
        reason: String,
    },
}

/// Public keys an image's signature must verify against.
#[derive(Clone)]
pub struct TrustedKeys {
    keys: Vec<TrustedKey>,
}

#[derive(Clone)]
struct TrustedKey {
    /// Named in verdicts: the key file as the rule gives it.
    name: String,
    /// The file it was read from (none for a key given as text).
    path: Option<PathBuf>,
    /// Parsed once at load, so a bad key fails the rule load rather than every check.
    key: ParsedPublicKey,
}

impl fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustedKeys")
            .field("keys", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

impl TrustedKeys {
    /// Read one PEM public key (`-----BEGIN PUBLIC KEY-----`, as `cosign generate-key-pair`
    /// writes `cosign.pub`) from each file; a verdict names a key by its path as given here.
    pub fn load(paths: &[PathBuf]) -> Result<TrustedKeys, SignatureError> {
        if paths.is_empty() {
            return Err(SignatureError::NoKeys);
        }
        let mut keys = Vec::with_capacity(paths.len());
        for path in paths {
            let name = path.display().to_string();
            let pem = std::fs::read_to_string(path).map_err(|source| SignatureError::Read {
                path: name.clone(),
                source,
            })?;
            keys.extend(
                TrustedKeys::from_pem(&name, &pem)?
                    .keys
                    .into_iter()
                    .map(|k| TrustedKey {
                        path: Some(path.clone()),
                        ..k
                    }),
            );
        }
        Ok(TrustedKeys { keys })
    }

    /// One key from PEM text; `name` stands for the file in errors and verdicts.
    pub fn from_pem(name: &str, pem: &str) -> Result<TrustedKeys, SignatureError> {
        let key = parse_public_key(pem).map_err(|reason| SignatureError::Key {
            path: name.to_owned(),
            reason,
        })?;
        Ok(TrustedKeys {
            keys: vec![TrustedKey {
                name: name.to_owned(),
                path: None,
                key,
            }],
        })
    }

    /// The files the keys were read from: a change to one is a change to the rules.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.keys.iter().filter_map(|k| k.path.as_deref())
    }

    /// The keys' names, in load order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.name.as_str())
    }
}

/// PEM `PUBLIC KEY` block → P-256 key, or a sentence saying what the text is instead.
fn parse_public_key(pem: &str) -> Result<ParsedPublicKey, String> {
    let der = decode_pem(pem)?;
    // aws-lc-rs also accepts a bare SEC1 point; a `PUBLIC KEY` block is defined (RFC 7468) to
    // hold a SubjectPublicKeyInfo, which is a DER SEQUENCE, so anything else is refused here.
    if der.first() != Some(&0x30) {
        return Err("PUBLIC KEY block does not hold a SubjectPublicKeyInfo".into());
    }
    ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &der).map_err(|e| match key_kind(&der) {
        Some(kind) => format!("{kind}, not an ECDSA P-256 key as cosign generate-key-pair makes"),
        None => format!("not a valid ECDSA P-256 public key ({e})"),
    })
}

/// The DER inside the file's one `PUBLIC KEY` block.
pub(crate) fn decode_pem(pem: &str) -> Result<Vec<u8>, String> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let mut blocks = Vec::new();
    let mut other_labels = Vec::new();
    let mut lines = pem.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line == BEGIN {
            let mut b64 = String::new();
            let mut closed = false;
            for l in lines.by_ref() {
                if l == END {
                    closed = true;
                    break;
                }
                b64.push_str(l);
            }
            if !closed {
                return Err(format!("{BEGIN} without {END}"));
            }
            let der = STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| format!("PUBLIC KEY block is not base64: {e}"))?;
            blocks.push(der);
        } else if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            other_labels.push(label.to_owned());
        }
    }
    if blocks.len() > 1 {
        // A verdict names the file that signed; with several keys in one file it could not
        // say which one.
        return Err(format!(
            "holds {} public keys: give one key per file",
            blocks.len()
        ));
    }
    match (blocks.pop(), other_labels.first()) {
        (Some(der), _) => Ok(der),
        (None, Some(label)) if label.contains("PRIVATE KEY") => Err(format!(
            "holds a private key ({label}), not a public key: give the public half (cosign.pub)"
        )),
        (None, Some(label)) => Err(format!("holds a PEM {label:?} block, not a PUBLIC KEY")),
        (None, None) => Err(format!(
            "not a PEM public key: no {BEGIN} line (cosign generate-key-pair writes one to cosign.pub)"
        )),
    }
}

/// What kind of key an SPKI holds, when it is a common one that is not P-256: only to word the
/// error, never to accept anything (aws-lc-rs decides that).
fn key_kind(der: &[u8]) -> Option<&'static str> {
    const RSA: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
    ];
    const ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
    const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    const P521: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
    const SECP256K1: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
    let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    [
        (RSA, "an RSA key"),
        (ED25519, "an Ed25519 key"),
        (P384, "an ECDSA P-384 key"),
        (P521, "an ECDSA P-521 key"),
        (SECP256K1, "a secp256k1 key"),
    ]
    .into_iter()
    .find(|(oid, _)| has(oid))
    .map(|(_, kind)| kind)
}

/// Outcome of the gate for one image digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A signature by a trusted key names this digest.
    Signed {
        /// The key that verified, by its file as the rule names it.
        key: String,
    },
    /// No signature passes; the reason says what was found and why each failed.
    Unsigned {
        /// One sentence an operator can act on.
        reason: String,
    },
}

impl Verdict {
    /// Whether the image may be copied.
    pub fn is_signed(&self) -> bool {
        matches!(self, Verdict::Signed { .. })
    }
}

/// Look up `digest`'s cosign signatures in `source` — the `sha256-HEX.sig` tag, then OCI 1.1
/// referrers with cosign's signature artifact type (the referrers API, or the `sha256-HEX`
/// referrers tag index when the registry has no API) — and check them against `keys`.
///
/// Registry failures that a retry may fix come back as `Err`, but only when no signature
/// verified: one good signature is enough, whatever else could not be read. Everything about
/// the signatures' content, missing blobs included, is a [`Verdict`].
pub async fn check(
    source: &RepoClient,
    digest: &Digest,
    keys: &TrustedKeys,
) -> Result<Verdict, RegistryError> {
    let mut gate = Gate {
        source,
        digest,
        keys,
        seen: HashSet::new(),
        found: 0,
        problems: Vec::new(),
        deferred: None,
    };
    // The tag first: it is where cosign puts signatures by default, and when it verifies the
    // referrers lookup (one or two more requests) is not needed.
    let tag = digest.cosign_tag("sig");
    if let Some(m) = gate.fetch((&tag).into(), tag.as_str(), false).await
        && let Some(key) = gate.check_manifest(&m, tag.as_str()).await
    {
        return Ok(Verdict::Signed { key });
    }
    for desc in gate.cosign_referrers().await {
        let at = format!("referrer {}", desc.digest);
        if let Some(m) = gate.fetch((&desc.digest).into(), &at, true).await
            && let Some(key) = gate.check_manifest(&m, &at).await
        {
            return Ok(Verdict::Signed { key });
        }
    }
    if let Some(e) = gate.deferred {
        return Err(e);
    }
    let reason = gate.reason();
    tracing::debug!(%digest, reason, "image not signed by a trusted key");
    Ok(Verdict::Unsigned { reason })
}

/// Why one signature layer does not make the image signed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    /// The signature verifies with none of the trusted keys.
    Untrusted,
    /// A trusted key signed, but the payload names another manifest.
    OtherDigest { signed: String, key: String },
    /// Not a cosign signature that can be checked at all.
    Malformed(String),
}

/// One problem and where it was found (`sha256-HEX.sig layer 1`).
struct Finding {
    at: String,
    problem: Problem,
}

/// The state of one check: what was looked at and what was wrong with it.
struct Gate<'a> {
    source: &'a RepoClient,
    digest: &'a Digest,
    keys: &'a TrustedKeys,
    /// Signature manifests already checked (the tag and a referrer may be the same one).
    seen: HashSet<Digest>,
    /// Signature manifests found, checked or not.
    found: usize,
    problems: Vec<Finding>,
    /// The first registry failure; returned only if nothing verifies.
    deferred: Option<RegistryError>,
}

impl Gate<'_> {
    /// GET a signature manifest. `listed` says whether something pointed at it (a referrer),
    /// which makes its absence a problem rather than "no signature here".
    async fn fetch(
        &mut self,
        reference: ManifestRef<'_>,
        at: &str,
        listed: bool,
    ) -> Option<Manifest> {
        match self.source.get_manifest(reference).await {
            Ok(m) => {
                self.found += 1;
                self.seen.insert(m.digest.clone()).then_some(m)
            }
            Err(e) if e.is_not_found() && !listed => None,
            Err(e) => {
                if listed {
                    self.found += 1;
                }
                self.absorb(at, e);
                None
            }
        }
    }

    /// Keep a content failure as a problem of the signature; keep the first other failure to
    /// return if nothing verifies.
    fn absorb(&mut self, at: &str, e: RegistryError) {
        // 404, bytes that do not match their digest, unparsable answers: a retry gives the
        // same answer, so they say something about the signature, not about the network.
        let content = e.is_not_found()
            || matches!(
                e,
                RegistryError::Content { .. } | RegistryError::Protocol { .. }
            );
        if content {
            self.problems.push(Finding {
                at: at.to_owned(),
                problem: Problem::Malformed(e.to_string()),
            });
        } else if self.deferred.is_none() {
            self.deferred = Some(e);
        }
    }

    /// Descriptors of the subject's referrers that are cosign signatures.
    async fn cosign_referrers(&mut self) -> Vec<Descriptor> {
        let listed = match self.source.find_referrers(self.digest).await {
            Ok(found) => {
                if found.tag_index.as_ref().is_some_and(|m| !m.is_index()) {
                    self.problems.push(Finding {
                        at: format!("referrers tag {}", self.digest.tag_form()),
                        problem: Problem::Malformed("not an index".into()),
                    });
                }
                found.descriptors
            }
            Err(e) => {
                self.absorb("referrers", e);
                Vec::new()
            }
        };
        // Only the artifact type is trusted for selection; what the manifest signs is decided
        // by its payload, so a referrer whose `subject` lies cannot sign another image.
        listed
            .into_iter()
            .filter(|d| d.artifact_type.as_deref() == Some(COSIGN_SIGNATURE_ARTIFACT_TYPE))
            .collect()
    }

    /// Check every layer of a signature manifest; the name of the first key that verifies.
    async fn check_manifest(&mut self, m: &Manifest, at: &str) -> Option<String> {
        let layers = match signature_layers(m) {
            Ok(l) => l,
            Err(why) => {
                self.problems.push(Finding {
                    at: at.to_owned(),
                    problem: Problem::Malformed(why),
                });
                return None;
            }
        };
        for (i, layer) in layers.iter().enumerate() {
            let at = format!("{at} layer {}", i + 1);
            match self.check_layer(layer).await {
                Ok(Ok(key)) => return Some(key),
                Ok(Err(problem)) => self.problems.push(Finding { at, problem }),
                Err(e) => self.absorb(&at, e),
            }
        }
        None
    }

    async fn check_layer(
        &self,
        layer: &SignatureLayer,
    ) -> Result<Result<String, Problem>, RegistryError> {
        // The annotation, not the layer's media type, makes a layer a signature: cosign reads
        // it the same way, and the payload's own `type` is checked after verification.
        let Some(signature) = layer.annotations.get(COSIGN_SIGNATURE_ANNOTATION) else {
            return Ok(Err(Problem::Malformed(format!(
                "no {COSIGN_SIGNATURE_ANNOTATION} annotation"
            ))));
        };
        let payload = match self.payload(layer).await? {
            Ok(p) => p,
            Err(problem) => return Ok(Err(problem)),
        };
        Ok(verify(self.keys, &payload, signature, self.digest).map(str::to_owned))
    }

    /// The layer's bytes, size-limited and checked against its descriptor.
    async fn payload(
        &self,
        layer: &SignatureLayer,
    ) -> Result<Result<Vec<u8>, Problem>, RegistryError> {
        if layer.size > MAX_PAYLOAD_BYTES {
            return Ok(Err(Problem::Malformed(format!(
                "payload of {} bytes, more than the {MAX_PAYLOAD_BYTES} a simple-signing payload may have",
                layer.size
            ))));
        }
        let op = self.source.op("GET", format!("blob {}", layer.digest));
        // open_blob leaves retries to its caller, which retries the whole transfer.
        self.source
            .retrying(|_| async {
                let mut resp = self.source.open_blob(&layer.digest).await?;
                // Bounded by MAX_PAYLOAD_BYTES above.
                let mut body = Vec::with_capacity(layer.size as usize);
                while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&op, &e))? {
                    // Stop reading at the descriptor's size: the registry does not get to
                    // decide how much we buffer.
                    if (body.len() + chunk.len()) as u64 > layer.size {
                        return Ok(Err(Problem::Malformed(format!(
                            "payload blob {} is longer than its descriptor's {} bytes",
                            layer.digest, layer.size
                        ))));
                    }
                    body.extend_from_slice(&chunk);
                }
                if body.len() as u64 != layer.size || !layer.digest.matches(&body) {
                    return Ok(Err(Problem::Malformed(format!(
                        "payload blob does not match its descriptor ({}, {} bytes)",
                        layer.digest, layer.size
                    ))));
                }
                Ok(Ok(body))
            })
            .await
    }

    /// The `Unsigned` reason: nothing found, or each problem with where it was found.
    fn reason(&self) -> String {
        if self.found == 0 && self.problems.is_empty() {
            return format!(
                "no signature found for {}: no {}.sig tag and no cosign signature among its referrers",
                self.digest,
                self.digest.tag_form()
            );
        }
        let keys = self.keys.names().collect::<Vec<_>>().join(", ");
        let mut parts: Vec<String> = self
            .problems
            .iter()
            .take(MAX_LISTED_PROBLEMS)
            .map(|f| {
                let what = match &f.problem {
                    Problem::Untrusted => format!(
                        "signature by an untrusted key (it verifies with none of: {keys}), \
                         or a payload altered after signing"
                    ),
                    Problem::OtherDigest { signed, key } => {
                        format!("signature over another digest, {signed} (key {key})")
                    }
                    Problem::Malformed(why) => format!("malformed signature: {why}"),
                };
                format!("{}: {what}", f.at)
            })
            .collect();
        if self.problems.len() > MAX_LISTED_PROBLEMS {
            parts.push(format!(
                "{} more",
                self.problems.len() - MAX_LISTED_PROBLEMS
            ));
        }
        if parts.is_empty() {
            // Found only manifests already seen under another name: cannot happen with a
            // well-behaved registry, but the reason must still say something true.
            parts.push("no signature layers".into());
        }
        format!(
            "no valid signature for {}: {}",
            self.digest,
            parts.join("; ")
        )
    }
}

/// One layer of a signature manifest, with the annotations the copier's `Descriptor` omits.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignatureLayer {
    digest: Digest,
    size: u64,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// The layers of a signature manifest, parsed from its raw bytes.
fn signature_layers(m: &Manifest) -> Result<Vec<SignatureLayer>, String> {
    #[derive(Deserialize)]
    struct Wire {
        #[serde(default)]
        layers: Vec<SignatureLayer>,
    }
    if m.is_index() {
        return Err("an index, not a signature image manifest".into());
    }
    let wire: Wire =
        serde_json::from_slice(&m.bytes).map_err(|e| format!("signature manifest: {e}"))?;
    if wire.layers.is_empty() {
        return Err("signature manifest has no layers".into());
    }
    Ok(wire.layers)
}

/// The simple-signing payload's fields the gate checks (containers/image
/// `docs/containers-signature.5.md`, as cosign writes it).
#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    image: PayloadImage,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct PayloadImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Check one payload and its base64 signature: the name of the key that signed it, when that
/// key is trusted and the payload signs `digest`.
///
/// `critical.identity.docker-reference` is not compared, as `cosign verify` does not compare it
/// by default: the relay copies images to other names, and the digest pins the content.
fn verify<'k>(
    keys: &'k TrustedKeys,
    payload: &[u8],
    signature_b64: &str,
    digest: &Digest,
) -> Result<&'k str, Problem> {
    let signature = STANDARD
        .decode(signature_b64.trim().as_bytes())
        .map_err(|e| Problem::Malformed(format!("signature annotation is not base64: {e}")))?;
    // Checked before trying keys so that garbage is called malformed, not "untrusted".
    if signature.first() != Some(&0x30) {
        return Err(Problem::Malformed(
            "signature is not an ASN.1 DER ECDSA signature".into(),
        ));
    }
    let key = keys
        .keys
        .iter()
        .find(|k| k.key.verify_sig(payload, &signature).is_ok())
        .ok_or(Problem::Untrusted)?;
    // Only now is the payload trusted enough to read.
    let p: Payload = serde_json::from_slice(payload).map_err(|e| {
        Problem::Malformed(format!("payload is not a simple-signing document: {e}"))
    })?;
    if p.critical.kind != COSIGN_PAYLOAD_TYPE {
        return Err(Problem::Malformed(format!(
            "payload type {:?}, expected {COSIGN_PAYLOAD_TYPE:?}",
            p.critical.kind
        )));
    }
    if p.critical.image.docker_manifest_digest != digest.as_str() {
        return Err(Problem::OtherDigest {
            signed: p.critical.image.docker_manifest_digest,
            key: key.name.clone(),
        });
    }
    Ok(&key.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
    };

    fn pem(label: &str, der: &[u8]) -> String {
        let b64 = STANDARD.encode(der);
        let body: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            body.join("\n")
        )
    }

    struct Signer(EcdsaKeyPair);

    impl Signer {
        fn new() -> Self {
            Signer(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap())
        }
        fn public_pem(&self) -> String {
            pem("PUBLIC KEY", self.0.public_key().as_der().unwrap().as_ref())
        }
        fn keys(&self, name: &str) -> TrustedKeys {
            TrustedKeys::from_pem(name, &self.public_pem()).unwrap()
        }
        fn sign(&self, payload: &[u8]) -> String {
            let sig = self.0.sign(&SystemRandom::new(), payload).unwrap();
            STANDARD.encode(sig.as_ref())
        }
    }

    fn payload(digest: &str, kind: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "critical": {
                "identity": {"docker-reference": "r.example/app"},
                "image": {"docker-manifest-digest": digest},
                "type": kind,
            },
            "optional": null,
        }))
        .unwrap()
    }

    fn image() -> Digest {
        Digest::sha256_of(b"image")
    }

    #[test]
    fn a_trusted_key_over_this_digest_verifies_and_is_named() {
        let (a, b) = (Signer::new(), Signer::new());
        let mut keys = a.keys("a.pub");
        keys.keys.extend(b.keys("b.pub").keys);
        let p = payload(image().as_str(), COSIGN_PAYLOAD_TYPE);
        assert_eq!(verify(&keys, &p, &b.sign(&p), &image()), Ok("b.pub"));
    }

    #[test]
    fn another_key_and_an_altered_payload_are_untrusted() {
        let (a, other) = (Signer::new(), Signer::new());
        let p = payload(image().as_str(), COSIGN_PAYLOAD_TYPE);
        let keys = a.keys("a.pub");
        assert_eq!(
            verify(&keys, &p, &other.sign(&p), &image()),
            Err(Problem::Untrusted)
        );
        let sig = a.sign(&p);
        let mut altered = p.clone();
        altered.push(b' ');
        assert_eq!(
            verify(&keys, &altered, &sig, &image()),
            Err(Problem::Untrusted)
        );
    }

    #[test]
    fn a_signature_over_another_digest_names_it() {
        let a = Signer::new();
        let other = Digest::sha256_of(b"other");
        let p = payload(other.as_str(), COSIGN_PAYLOAD_TYPE);
        assert_eq!(
            verify(&a.keys("a.pub"), &p, &a.sign(&p), &image()),
            Err(Problem::OtherDigest {
                signed: other.to_string(),
                key: "a.pub".into()
            })
        );
    }

    #[test]
    fn wrong_type_bad_base64_and_non_der_signatures_are_malformed() {
        let a = Signer::new();
        let keys = a.keys("a.pub");
        let p = payload(image().as_str(), "atomic container signature");
        let e = verify(&keys, &p, &a.sign(&p), &image()).unwrap_err();
        assert!(
            matches!(e, Problem::Malformed(ref m) if m.contains("type")),
            "{e:?}"
        );
        let p = payload(image().as_str(), COSIGN_PAYLOAD_TYPE);
        assert!(matches!(
            verify(&keys, &p, "not base64!", &image()),
            Err(Problem::Malformed(_))
        ));
        assert!(matches!(
            verify(&keys, &p, &STANDARD.encode([1u8; 64]), &image()),
            Err(Problem::Malformed(_))
        ));
        let not_json = b"signed, but not JSON";
        assert!(matches!(
            verify(&keys, not_json, &a.sign(not_json), &image()),
            Err(Problem::Malformed(_))
        ));
    }

    #[test]
    fn pem_with_crlf_and_surrounding_text_loads() {
        let a = Signer::new();
        let text = format!("comment line\r\n{}", a.public_pem().replace('\n', "\r\n"));
        let keys = TrustedKeys::from_pem("a.pub", &text).unwrap();
        assert_eq!(keys.names().collect::<Vec<_>>(), ["a.pub"]);
        assert!(format!("{keys:?}").contains("a.pub"));
    }

    fn key_error(name: &str, text: &str) -> String {
        TrustedKeys::from_pem(name, text).unwrap_err().to_string()
    }

    #[test]
    fn keys_that_are_not_p256_public_keys_are_refused_with_the_file_named() {
        let p384 = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING).unwrap();
        let e = key_error(
            "k.pub",
            &pem("PUBLIC KEY", p384.public_key().as_der().unwrap().as_ref()),
        );
        assert!(e.starts_with("k.pub: ") && e.contains("P-384"), "{e}");

        let e = key_error("cosign.key", &pem("ENCRYPTED SIGSTORE PRIVATE KEY", b"x"));
        assert!(e.contains("cosign.key") && e.contains("private key"), "{e}");

        let e = key_error("k.pub", "ssh-ed25519 AAAA...");
        assert!(e.contains("not a PEM public key"), "{e}");

        let e = key_error("k.pub", &pem("PUBLIC KEY", b"\x30\x03\x02\x01\x01"));
        assert!(e.contains("not a valid ECDSA P-256"), "{e}");

        let a = Signer::new();
        let raw_point = a.0.public_key().as_ref().to_vec();
        let e = key_error("k.pub", &pem("PUBLIC KEY", &raw_point));
        assert!(e.contains("SubjectPublicKeyInfo"), "{e}");

        let two = format!("{}{}", a.public_pem(), Signer::new().public_pem());
        assert!(key_error("k.pub", &two).contains("one key per file"));

        let cut = a.public_pem().replace("-----END PUBLIC KEY-----\n", "");
        assert!(key_error("k.pub", &cut).contains("without"));
    }

    #[test]
    fn load_reads_each_file_and_names_unreadable_ones() {
        let dir = std::env::temp_dir().join(format!("image-relay-sig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("release.pub");
        std::fs::write(&path, Signer::new().public_pem()).unwrap();
        let keys = TrustedKeys::load(std::slice::from_ref(&path)).unwrap();
        assert_eq!(
            keys.names().collect::<Vec<_>>(),
            [path.display().to_string()]
        );
        let missing = dir.join("missing.pub");
        let e = TrustedKeys::load(&[path, missing.clone()]).unwrap_err();
        assert!(
            matches!(&e, SignatureError::Read { path, .. } if *path == missing.display().to_string()),
            "{e}"
        );
        assert!(matches!(
            TrustedKeys::load(&[]),
            Err(SignatureError::NoKeys)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
