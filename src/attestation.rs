//! Binary Authorization attestations: the release gate that requires them, and the release
//! attestation the relay creates for what it placed at a target.
//!
//! An attestation is a Container Analysis `ATTESTATION` occurrence on the note an attestor
//! names, attached to the image's resource URL `https://HOST/PATH@sha256:HEX`. Its
//! `serializedPayload` is a simple-signing document whose `critical.image.
//! docker-manifest-digest` is the digest attested, and each signature is made over those
//! bytes with a key the attestor lists. That is what GKE and Cloud Run enforce; a cosign
//! signature is not.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::json;

use crate::google_api::{Api, ApiError};
use crate::reference::{Digest, Repository};
use crate::registry::endpoints::GoogleApis;
use crate::vulnerability::resource_url;

/// Occurrences asked for per page; a note collects one per attested image digest.
const PAGE_SIZE: &str = "1000";
/// Pages read at most: past this the listing is not the small set of attestations of one
/// image, and holding the image is safer than reading on.
const MAX_PAGES: usize = 20;

/// `require_attestation = { attestors = ["projects/P/attestors/NAME"] }`: every attestor must
/// have attested the digest being released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationPolicy {
    pub attestors: Vec<AttestorName>,
}

/// `attest = { key = "projects/.../cryptoKeyVersions/1", note = "projects/P/notes/N" }`:
/// after the image is in place at a target, attest it there on `note`, signed in Cloud KMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseAttestation {
    pub key: KeyVersionName,
    pub note: NoteName,
}

macro_rules! resource_name {
    ($name:ident, $what:literal, $shape:literal, $check:expr) => {
        #[doc = concat!("A ", $what, " resource name: `", $shape, "`.")]
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let parts: Vec<&str> = s.split('/').collect();
                let ok: fn(&[&str]) -> bool = $check;
                if ok(&parts) && parts.iter().all(|p| !p.is_empty()) {
                    Ok($name(s.to_owned()))
                } else {
                    Err(format!("{s:?} is not a {} name ({})", $what, $shape))
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

resource_name!(
    AttestorName,
    "Binary Authorization attestor",
    "projects/PROJECT/attestors/NAME",
    |p| matches!(p, ["projects", _, "attestors", _])
);
resource_name!(
    NoteName,
    "Container Analysis note",
    "projects/PROJECT/notes/NAME",
    |p| matches!(p, ["projects", _, "notes", _])
);
resource_name!(
    KeyVersionName,
    "Cloud KMS key version",
    "projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/V",
    |p| matches!(
        p,
        [
            "projects",
            _,
            "locations",
            _,
            "keyRings",
            _,
            "cryptoKeys",
            _,
            "cryptoKeyVersions",
            _
        ]
    )
);

impl NoteName {
    fn project(&self) -> &str {
        self.0.split('/').nth(1).unwrap_or_default()
    }
}

impl KeyVersionName {
    /// How an attestor lists a Cloud KMS key, and how a signature names the key it used.
    pub fn public_key_id(&self) -> String {
        format!("//cloudkms.googleapis.com/v1/{}", self.0)
    }
}

/// What the gate found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every attestor has a verified attestation of the digest.
    Attested,
    /// Some attestor has none: why, per attestor.
    Missing { reason: String },
}

/// What the release attestation step did at one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attested {
    Created {
        occurrence: String,
    },
    /// A redelivery: the target's image already carries the relay's attestation.
    AlreadyThere,
}

/// The three Google APIs the attestation gate and the release attestation call.
pub struct Attestations {
    binauthz: Api,
    analysis: Api,
    kms: Api,
    /// Each KMS key version's algorithm, asked once: it decides the digest KMS signs.
    algorithms: Mutex<HashMap<KeyVersionName, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Attestor {
    #[serde(default)]
    user_owned_grafeas_note: Option<UserOwnedNote>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserOwnedNote {
    note_reference: String,
    #[serde(default)]
    public_keys: Vec<AttestorKey>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttestorKey {
    #[serde(default)]
    id: String,
    #[serde(default)]
    pkix_public_key: Option<PkixKey>,
    #[serde(default)]
    ascii_armored_pgp_public_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PkixKey {
    public_key_pem: String,
    #[serde(default)]
    signature_algorithm: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct OccurrencePage {
    #[serde(default)]
    occurrences: Vec<Occurrence>,
    #[serde(default)]
    next_page_token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Occurrence {
    #[serde(default)]
    name: String,
    #[serde(default)]
    attestation: Option<AttestationBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttestationBody {
    #[serde(default)]
    serialized_payload: String,
    #[serde(default)]
    signatures: Vec<Signature>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Signature {
    #[serde(default)]
    signature: String,
    #[serde(default)]
    public_key_id: String,
}

/// A key an attestor lists, ready to verify with, or why it cannot be used.
struct Key {
    id: String,
    parsed: Result<ParsedPublicKey, String>,
}

impl Attestations {
    pub fn new(http: reqwest::Client, apis: &GoogleApis) -> Attestations {
        Attestations {
            binauthz: Api::new(
                http.clone(),
                &apis.binary_authorization,
                "the relay's account needs roles/binaryauthorization.attestorsViewer on the attestor",
            ),
            analysis: Api::new(
                http.clone(),
                &apis.container_analysis,
                "the relay's account needs roles/containeranalysis.occurrences.viewer (to read) or \
                 roles/containeranalysis.notes.attacher and occurrences.editor (to attest) in the note's project",
            ),
            kms: Api::new(
                http,
                &apis.cloud_kms,
                "the relay's account needs roles/cloudkms.signer on the key version",
            ),
            algorithms: Mutex::new(HashMap::new()),
        }
    }

    /// Whether every attestor of `policy` has attested `digest` of `image`.
    pub async fn check(
        &self,
        policy: &AttestationPolicy,
        image: &Repository,
        digest: &Digest,
        token: &str,
    ) -> Result<Verdict, ApiError> {
        let resource = resource_url(image, digest);
        let mut missing = Vec::new();
        for name in &policy.attestors {
            let attestor: Attestor = self
                .binauthz
                .get(
                    &format!("reading attestor {name}"),
                    &format!("v1/{name}"),
                    &[],
                    token,
                )
                .await?;
            let Some(note) = attestor.user_owned_grafeas_note else {
                missing.push(format!("{name}: the attestor names no note"));
                continue;
            };
            let keys: Vec<Key> = note.public_keys.iter().map(parse_key).collect();
            if !keys.iter().any(|k| k.parsed.is_ok()) {
                let why: Vec<String> = keys
                    .iter()
                    .filter_map(|k| k.parsed.as_ref().err().map(|e| format!("{}: {e}", k.id)))
                    .collect();
                missing.push(format!(
                    "{name}: none of its keys can be verified ({})",
                    if why.is_empty() {
                        "it lists no keys".to_owned()
                    } else {
                        why.join("; ")
                    }
                ));
                continue;
            }
            let occurrences = self
                .occurrences(&note.note_reference, &resource, token)
                .await?;
            match attested_by(&occurrences, &keys, digest) {
                Ok(()) => {}
                Err(why) => missing.push(format!("{name}: {why}")),
            }
        }
        Ok(if missing.is_empty() {
            Verdict::Attested
        } else {
            Verdict::Missing {
                reason: format!("no attestation of {digest}: {}", missing.join("; ")),
            }
        })
    }

    /// Attest `digest` at `target` on the release note, unless a redelivery already did.
    ///
    /// Two instances handling the same image can both find no attestation and both create
    /// one. Container Analysis has no create-if-absent, so every creator lists again and
    /// keeps, of the relay's attestations of this digest, the one whose name sorts first,
    /// which every instance picks alike: however many raced, one stays.
    pub async fn attest(
        &self,
        release: &ReleaseAttestation,
        target: &Repository,
        digest: &Digest,
        token: &str,
    ) -> Result<Attested, ApiError> {
        let resource = resource_url(target, digest);
        let key_id = release.key.public_key_id();
        let note = release.note.as_str();
        if !self
            .keep_one(note, &resource, digest, &key_id, token)
            .await?
            .is_empty()
        {
            return Ok(Attested::AlreadyThere);
        }
        let payload = simple_signing_payload(target, digest);
        let signature = self.sign(&release.key, &payload, token).await?;
        #[derive(Deserialize)]
        struct Created {
            #[serde(default)]
            name: String,
        }
        let created: Created = self
            .analysis
            .post(
                &format!("creating the release attestation of {resource}"),
                &format!("v1/projects/{}/occurrences", release.note.project()),
                &json!({
                    "resourceUri": resource,
                    "noteName": release.note.as_str(),
                    "attestation": {
                        "serializedPayload": STANDARD.encode(&payload),
                        "signatures": [{ "signature": STANDARD.encode(&signature), "publicKeyId": key_id }],
                    },
                }),
                token,
            )
            .await?;
        // The attestation exists: a failure to list or tidy now leaves at most a duplicate,
        // which verifies like the original, for a later delivery to tidy.
        match self.keep_one(note, &resource, digest, &key_id, token).await {
            Ok(kept) if kept.first().is_some_and(|first| *first != created.name) => {
                return Ok(Attested::AlreadyThere);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%resource, error = %e, "release attested; duplicates not checked")
            }
        }
        Ok(Attested::Created {
            occurrence: created.name,
        })
    }

    /// The names, sorted, of the relay's attestations of `digest` (signed with `key_id`) on
    /// `note` for `resource`; all but the first are deleted (a failed delete is logged and
    /// leaves a valid duplicate).
    async fn keep_one(
        &self,
        note: &str,
        resource: &str,
        digest: &Digest,
        key_id: &str,
        token: &str,
    ) -> Result<Vec<String>, ApiError> {
        let mut names: Vec<String> = self
            .occurrences(note, resource, token)
            .await?
            .into_iter()
            .filter(|o| {
                o.attestation.as_ref().is_some_and(|a| {
                    payload_digest(&a.serialized_payload).as_ref() == Some(digest)
                        && a.signatures.iter().any(|s| s.public_key_id == key_id)
                })
            })
            .map(|o| o.name)
            .collect();
        names.sort();
        for name in names.iter().skip(1) {
            let what = format!("deleting the duplicate release attestation {name}");
            match self
                .analysis
                .delete(&what, &format!("v1/{name}"), token)
                .await
            {
                Ok(()) => {
                    tracing::info!(%resource, occurrence = %name, "duplicate release attestation deleted")
                }
                Err(e) => {
                    tracing::warn!(%resource, error = %e, "duplicate release attestation kept")
                }
            }
        }
        Ok(names)
    }

    /// Sign `payload` with the KMS key version: KMS signs a digest of it, whose hash the key's
    /// algorithm fixes; the key never leaves KMS.
    async fn sign(
        &self,
        key: &KeyVersionName,
        payload: &[u8],
        token: &str,
    ) -> Result<Vec<u8>, ApiError> {
        let algorithm = self.algorithm(key, token).await?;
        let what = format!("signing with {key}");
        let digest = if algorithm.ends_with("SHA384") {
            json!({ "sha384": STANDARD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, payload)) })
        } else if algorithm.ends_with("SHA256") {
            json!({ "sha256": STANDARD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, payload)) })
        } else {
            return Err(ApiError::Protocol {
                what,
                detail: format!(
                    "the key's algorithm {algorithm} is not one Binary Authorization attestors verify with SHA-256 or SHA-384"
                ),
            });
        };
        #[derive(Deserialize)]
        struct Signed {
            signature: String,
        }
        let signed: Signed = self
            .kms
            .post(
                &what,
                &format!("v1/{key}:asymmetricSign"),
                &json!({ "digest": digest }),
                token,
            )
            .await?;
        STANDARD
            .decode(signed.signature.as_bytes())
            .map_err(|e| ApiError::Protocol {
                what,
                detail: format!("signature is not base64: {e}"),
            })
    }

    async fn algorithm(&self, key: &KeyVersionName, token: &str) -> Result<String, ApiError> {
        if let Some(a) = self
            .algorithms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            return Ok(a.clone());
        }
        #[derive(Deserialize)]
        struct PublicKey {
            algorithm: String,
        }
        let pk: PublicKey = self
            .kms
            .get(
                &format!("reading the public key of {key}"),
                &format!("v1/{key}/publicKey"),
                &[],
                token,
            )
            .await?;
        self.algorithms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), pk.algorithm.clone());
        Ok(pk.algorithm)
    }

    /// The occurrences of `note` on `resource`, through all pages.
    async fn occurrences(
        &self,
        note: &str,
        resource: &str,
        token: &str,
    ) -> Result<Vec<Occurrence>, ApiError> {
        let what = format!("listing the attestations of {resource} on {note}");
        let filter = format!(r#"resourceUrl="{resource}""#);
        let mut out = Vec::new();
        let mut page_token = String::new();
        for _ in 0..MAX_PAGES {
            let mut query = vec![("filter", filter.as_str()), ("pageSize", PAGE_SIZE)];
            if !page_token.is_empty() {
                query.push(("pageToken", page_token.as_str()));
            }
            let page: OccurrencePage = self
                .analysis
                .get(&what, &format!("v1/{note}/occurrences"), &query, token)
                .await?;
            out.extend(page.occurrences);
            if page.next_page_token.is_empty() || page.next_page_token == page_token {
                return Ok(out);
            }
            page_token = page.next_page_token;
        }
        Err(ApiError::Protocol {
            what,
            detail: format!("more than {MAX_PAGES} pages"),
        })
    }
}

/// A key as Binary Authorization lists it, parsed for the algorithms Cloud KMS produces.
fn parse_key(k: &AttestorKey) -> Key {
    let parsed = match (&k.pkix_public_key, &k.ascii_armored_pgp_public_key) {
        (Some(p), _) => verification_algorithm(&p.signature_algorithm).and_then(|alg| {
            let der = crate::signature::decode_pem(&p.public_key_pem)?;
            ParsedPublicKey::new(alg, &der).map_err(|e| {
                format!("not a {} public key ({e})", p.signature_algorithm)
            })
        }),
        (None, Some(_)) => Err(
            "a PGP key: the relay verifies PKIX keys (ECDSA P-256/P-384, RSA PKCS#1 or PSS with SHA-256), as Cloud KMS makes them"
                .into(),
        ),
        (None, None) => Err("no public key material".into()),
    };
    Key {
        id: k.id.clone(),
        parsed,
    }
}

/// Binary Authorization's `signatureAlgorithm` names, for the key types Cloud KMS offers.
fn verification_algorithm(name: &str) -> Result<&'static dyn VerificationAlgorithm, String> {
    Ok(match name {
        "ECDSA_P256_SHA256" | "EC_SIGN_P256_SHA256" => &signature::ECDSA_P256_SHA256_ASN1,
        "ECDSA_P384_SHA384" | "EC_SIGN_P384_SHA384" => &signature::ECDSA_P384_SHA384_ASN1,
        "RSA_SIGN_PKCS1_2048_SHA256"
        | "RSA_SIGN_PKCS1_3072_SHA256"
        | "RSA_SIGN_PKCS1_4096_SHA256" => &signature::RSA_PKCS1_2048_8192_SHA256,
        "RSA_PSS_2048_SHA256"
        | "RSA_PSS_3072_SHA256"
        | "RSA_PSS_4096_SHA256"
        | "RSA_SIGN_PSS_2048_SHA256"
        | "RSA_SIGN_PSS_3072_SHA256"
        | "RSA_SIGN_PSS_4096_SHA256" => &signature::RSA_PSS_2048_8192_SHA256,
        other => {
            return Err(format!(
                "signature algorithm {other:?} is not one the relay verifies (ECDSA P-256/P-384, RSA PKCS#1 or PSS with SHA-256)"
            ));
        }
    })
}

/// Whether one of `occurrences` is an attestation of `digest` signed by one of `keys`, or
/// the most telling reason there is none.
fn attested_by(occurrences: &[Occurrence], keys: &[Key], digest: &Digest) -> Result<(), String> {
    let mut other_digest = None;
    let mut unverified = None;
    for o in occurrences {
        let Some(a) = &o.attestation else { continue };
        let Ok(payload) = STANDARD.decode(a.serialized_payload.as_bytes()) else {
            continue;
        };
        let verified = a.signatures.iter().any(|s| {
            let Ok(sig) = STANDARD.decode(s.signature.as_bytes()) else {
                return false;
            };
            // The key the signature names first; any key of the attestor will do, as Binary
            // Authorization itself accepts.
            let mut candidates: Vec<&Key> =
                keys.iter().filter(|k| k.id == s.public_key_id).collect();
            candidates.extend(keys.iter().filter(|k| k.id != s.public_key_id));
            candidates
                .iter()
                .filter_map(|k| k.parsed.as_ref().ok())
                .any(|k| k.verify_sig(&payload, &sig).is_ok())
        });
        if !verified {
            unverified.get_or_insert_with(|| o.name.clone());
            continue;
        }
        match payload_digest(&a.serialized_payload) {
            Some(d) if &d == digest => return Ok(()),
            Some(d) => {
                other_digest.get_or_insert(d);
            }
            None => {
                unverified.get_or_insert_with(|| o.name.clone());
            }
        }
    }
    Err(match (other_digest, unverified) {
        (Some(d), _) => format!("its attestation names {d}, not this digest"),
        (None, Some(name)) => format!("an attestation ({name}) is signed by none of its keys"),
        (None, None) => "no attestation on its note for this image".into(),
    })
}

/// `critical.image.docker-manifest-digest` of a base64 simple-signing payload.
fn payload_digest(serialized: &str) -> Option<Digest> {
    let bytes = STANDARD.decode(serialized.as_bytes()).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["critical"]["image"]["docker-manifest-digest"]
        .as_str()?
        .parse()
        .ok()
}

/// The simple-signing payload `gcloud container binauthz attestations sign-and-create` signs.
pub fn simple_signing_payload(image: &Repository, digest: &Digest) -> Vec<u8> {
    json!({
        "critical": {
            "identity": { "docker-reference": format!("{}/{}", image.registry, image.path) },
            "image": { "docker-manifest-digest": digest.as_str() },
            "type": "Google cloud binauthz container signature",
        }
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_are_checked_for_their_shape() {
        assert!("projects/p/attestors/built".parse::<AttestorName>().is_ok());
        assert!("projects/p/notes/built".parse::<AttestorName>().is_err());
        assert!("projects//attestors/x".parse::<AttestorName>().is_err());
        let key: KeyVersionName =
            "projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"
                .parse()
                .unwrap();
        assert_eq!(
            key.public_key_id(),
            "//cloudkms.googleapis.com/v1/projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1"
        );
        let note: NoteName = "projects/partner/notes/released".parse().unwrap();
        assert_eq!(note.project(), "partner");
    }

    /// Signs a message with a test key.
    type Sign = Box<dyn Fn(&[u8]) -> Vec<u8>>;

    /// An attestor key entry and a signer for it, in each algorithm Cloud KMS offers that
    /// Binary Authorization verifies.
    fn keys() -> Vec<(AttestorKey, Sign)> {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair};
        let pem = |der: &[u8]| {
            format!(
                "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                STANDARD.encode(der)
            )
        };
        let entry = |id: &str, pem: String, alg: &str| AttestorKey {
            id: id.into(),
            pkix_public_key: Some(PkixKey {
                public_key_pem: pem,
                signature_algorithm: alg.into(),
            }),
            ascii_armored_pgp_public_key: None,
        };
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut out: Vec<(AttestorKey, Sign)> = Vec::new();
        for (alg, name) in [
            (
                &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                "EC_SIGN_P256_SHA256",
            ),
            (
                &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                "ECDSA_P384_SHA384",
            ),
        ] {
            let k = EcdsaKeyPair::generate(alg).unwrap();
            let e = entry(name, pem(k.public_key().as_der().unwrap().as_ref()), name);
            let rng = rng.clone();
            out.push((
                e,
                Box::new(move |m| k.sign(&rng, m).unwrap().as_ref().to_vec()),
            ));
        }
        for (pad, name) in [
            (
                &signature::RSA_PKCS1_SHA256 as &'static dyn signature::RsaEncoding,
                "RSA_SIGN_PKCS1_2048_SHA256",
            ),
            (&signature::RSA_PSS_SHA256, "RSA_SIGN_PSS_2048_SHA256"),
        ] {
            let k = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
            let e = entry(name, pem(k.public_key().as_der().unwrap().as_ref()), name);
            let rng = rng.clone();
            out.push((
                e,
                Box::new(move |m| {
                    let mut sig = vec![0; k.public_modulus_len()];
                    k.sign(pad, &rng, m, &mut sig).unwrap();
                    sig
                }),
            ));
        }
        out
    }

    fn occurrence(payload: &[u8], sig: &[u8], key_id: &str) -> Occurrence {
        Occurrence {
            name: "projects/p/occurrences/1".into(),
            attestation: Some(AttestationBody {
                serialized_payload: STANDARD.encode(payload),
                signatures: vec![Signature {
                    signature: STANDARD.encode(sig),
                    public_key_id: key_id.into(),
                }],
            }),
        }
    }

    #[test]
    fn attestations_verify_with_every_kms_key_type_and_only_for_their_digest() {
        let image = Repository::parse("r.example/team/app").unwrap();
        let digest = Digest::sha256_of(b"release");
        let other = Digest::sha256_of(b"another");
        for (entry, sign) in keys() {
            let alg = entry
                .pkix_public_key
                .as_ref()
                .unwrap()
                .signature_algorithm
                .clone();
            let key = parse_key(&entry);
            assert!(key.parsed.is_ok(), "{alg}: {:?}", key.parsed.err());
            let keys = [key];
            let good = simple_signing_payload(&image, &digest);
            let o = occurrence(&good, &sign(&good), &entry.id);
            assert_eq!(attested_by(&[o], &keys, &digest), Ok(()), "{alg}");
            let wrong = simple_signing_payload(&image, &other);
            let o = occurrence(&wrong, &sign(&wrong), &entry.id);
            let why = attested_by(&[o], &keys, &digest).unwrap_err();
            assert!(why.contains(other.as_str()), "{alg}: {why}");
            let forged = occurrence(&good, &sign(b"something else"), &entry.id);
            let why = attested_by(&[forged], &keys, &digest).unwrap_err();
            assert!(why.contains("signed by none of its keys"), "{alg}: {why}");
        }
    }

    #[test]
    fn pgp_keys_and_sha512_keys_are_named_as_unusable() {
        let pgp = AttestorKey {
            id: "ABC".into(),
            pkix_public_key: None,
            ascii_armored_pgp_public_key: Some("-----BEGIN PGP PUBLIC KEY BLOCK-----".into()),
        };
        assert!(parse_key(&pgp).parsed.err().unwrap().contains("PGP"));
        assert!(verification_algorithm("RSA_SIGN_PKCS1_4096_SHA512").is_err());
        assert!(verification_algorithm("EC_SIGN_P384_SHA384").is_ok());
    }
}
