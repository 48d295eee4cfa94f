//! Binary Authorization through the real service and real registries, with Binary
//! Authorization, Container Analysis and Cloud KMS faked on loopback (tests/common/google.rs):
//! attestations gate the release, and the relay attests what it placed, for the partner's
//! policy to require.

mod common;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING,
    EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair, RSA_PKCS1_SHA256, UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::cosign::pem;
use common::google::{FakeGoogle, pkix_key};
use common::service::*;
use common::*;
use serde_json::{Value, json};

const BUILT: &str = "projects/build/attestors/built";
const BUILT_NOTE: &str = "projects/build/notes/built";
const APPROVED: &str = "projects/sec/attestors/approved";
const APPROVED_NOTE: &str = "projects/sec/notes/approved";
const RELEASE_KEY: &str =
    "projects/relay/locations/global/keyRings/release/cryptoKeys/attest/cryptoKeyVersions/1";
const RELEASE_NOTE: &str = "projects/partner/notes/released-by-relay";

/// A signing key of an attestor, in one of the algorithms Cloud KMS offers.
enum Signer {
    Ec(EcdsaKeyPair, &'static str),
    Rsa(aws_lc_rs::rsa::KeyPair),
}

impl Signer {
    fn ec(alg: &'static EcdsaSigningAlgorithm, name: &'static str) -> Signer {
        Signer::Ec(EcdsaKeyPair::generate(alg).unwrap(), name)
    }

    fn rsa() -> Signer {
        Signer::Rsa(aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap())
    }

    /// The attestor's entry for this key.
    fn key_entry(&self, id: &str) -> Value {
        match self {
            Signer::Ec(k, alg) => {
                let der = k.public_key().as_der().unwrap();
                pkix_key(id, &pem("PUBLIC KEY", der.as_ref()), alg)
            }
            Signer::Rsa(k) => {
                let der = k.public_key().as_der().unwrap();
                pkix_key(
                    id,
                    &pem("PUBLIC KEY", der.as_ref()),
                    "RSA_SIGN_PKCS1_2048_SHA256",
                )
            }
        }
    }

    fn sign(&self, payload: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Ec(k, _) => k.sign(&rng, payload).unwrap().as_ref().to_vec(),
            Signer::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, payload, &mut sig).unwrap();
                sig
            }
        }
    }
}

/// The simple-signing payload `gcloud container binauthz attestations sign-and-create` signs.
fn payload(image: &str, digest: &str) -> Vec<u8> {
    json!({
        "critical": {
            "identity": { "docker-reference": image },
            "image": { "docker-manifest-digest": digest },
            "type": "Google cloud binauthz container signature",
        }
    })
    .to_string()
    .into_bytes()
}

/// An occurrence's `attestation`: `payload` signed by `signer` as key `key_id`.
fn attestation(signer: &Signer, key_id: &str, payload: &[u8]) -> Value {
    json!({
        "serializedPayload": STANDARD.encode(payload),
        "signatures": [{ "signature": STANDARD.encode(signer.sign(payload)), "publicKeyId": key_id }],
    })
}

struct Scene {
    src: Registry,
    dst: Registry,
    dst_proxy: Proxy,
    google: FakeGoogle,
    svc: Service,
    built: Signer,
    approved: Signer,
    /// The release key's public key, as KMS `getPublicKey` gives it.
    kms_pem: String,
    rules: String,
}

/// The DER inside a PEM block.
fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(b64).unwrap()
}

/// A rule requiring the `built` (ECDSA P-256) and `approved` (RSA) attestors, attesting at
/// the target on the partner's note with a KMS key; the target behind a recording proxy.
async fn scene() -> Scene {
    scene_with(Signer::ec(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        "ECDSA_P256_SHA256",
    ))
    .await
}

/// [`scene`] with the `built` attestor signing with `built`.
async fn scene_with(built: Signer) -> Scene {
    let src = Registry::start().await;
    let dst = Registry::start().await;
    let dst_proxy = Proxy::start(&dst.host(), Fault::None).await;
    let google = FakeGoogle::start().await;
    let approved = Signer::rsa();
    google.add_attestor(BUILT, BUILT_NOTE, vec![built.key_entry("built-key")]);
    google.add_attestor(
        APPROVED,
        APPROVED_NOTE,
        vec![approved.key_entry("approved-key")],
    );
    let kms_pem = google.add_kms_key(RELEASE_KEY);
    let gates = format!(
        "require_attestation = {{ attestors = [\"{BUILT}\", \"{APPROVED}\"] }}\n\
         attest = {{ key = \"{RELEASE_KEY}\", note = \"{RELEASE_NOTE}\" }}"
    );
    let rules = rules(
        &format!("{}/releases", src.host()),
        &[&format!("{}/partner", dst_proxy.host())],
        &gates,
    );
    let svc = start_instance(&rules, &google).await;
    Scene {
        src,
        dst,
        dst_proxy,
        google,
        svc,
        built,
        approved,
        kms_pem,
        rules,
    }
}

/// One relay service on `rules`, pointed at the fake Google APIs.
async fn start_instance(rules: &str, google: &FakeGoogle) -> Service {
    Service::start_with(rules, &["--push-auth", "none"], |cmd, home| {
        google.point_at(cmd, home)
    })
    .await
}

impl Scene {
    fn source_url(&self, repo: &str, digest: &str) -> String {
        format!("https://{}/{repo}@{digest}", self.src.host())
    }

    fn target_url(&self, repo: &str, digest: &str) -> String {
        format!("https://{}/{repo}@{digest}", self.dst_proxy.host())
    }

    /// Both attestors attest `digest` of `repo` at the source.
    fn attest_both(&self, repo: &str, digest: &str) {
        let p = payload(&format!("{}/{repo}", self.src.host()), digest);
        let url = self.source_url(repo, digest);
        self.google
            .add_attestation(BUILT_NOTE, &url, attestation(&self.built, "built-key", &p));
        self.google.add_attestation(
            APPROVED_NOTE,
            &url,
            attestation(&self.approved, "approved-key", &p),
        );
    }

    async fn push(&self, repo: &str, tag: &str, seed: u64) -> Pushed {
        Seeder::for_registry(&self.src)
            .push_random_image(repo, Some(tag), Format::Oci, seed)
            .await
            .manifest
    }

    async fn deliver(&self, repo: &str, m: &Pushed, tag: &str) -> (u16, Value) {
        self.deliver_to(&self.svc, repo, m, tag).await
    }

    async fn deliver_to(&self, svc: &Service, repo: &str, m: &Pushed, tag: &str) -> (u16, Value) {
        let n = notification(
            "INSERT",
            &format!("{}/{repo}", self.src.host()),
            Some(&m.digest),
            Some(tag),
        );
        let (status, body, _) = svc.post(&deliver(Form::PubSubPush, &n, tag)).await;
        (status, body)
    }

    async fn target_has(&self, repo: &str, tag: &str) -> bool {
        Seeder::for_registry(&self.dst)
            .get_manifest_raw(repo, tag)
            .await
            .is_some()
    }
}

fn outcome(body: &Value) -> &str {
    body["targets"][0]["outcome"].as_str().unwrap_or("none")
}

#[tokio::test]
async fn an_image_every_attestor_attested_is_released_and_attested_at_the_target_once() {
    with_timeout(90, async {
        let s = scene().await;
        let img = s.push("releases/app", "v1", 81).await;
        s.attest_both("releases/app", &img.digest);
        let (status, body) = s.deliver("releases/app", &img, "v1").await;
        assert_eq!((status, outcome(&body)), (200, "copied"), "{body}");
        assert!(s.target_has("partner/app", "v1").await);

        // The release attestation: on the partner's note, for the target's resource URL,
        // naming the digest, verifiable with the KMS key's public key.
        let at = s.target_url("partner/app", &img.digest);
        let made = s.google.attestations(RELEASE_NOTE, &at);
        assert_eq!(made.len(), 1, "{made:?}");
        let a = &made[0]["attestation"];
        let payload = STANDARD
            .decode(a["serializedPayload"].as_str().unwrap())
            .unwrap();
        let doc: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(
            doc["critical"]["image"]["docker-manifest-digest"],
            img.digest.as_str()
        );
        let sig = &a["signatures"][0];
        assert_eq!(
            sig["publicKeyId"],
            format!("//cloudkms.googleapis.com/v1/{RELEASE_KEY}").as_str()
        );
        // The public key the partner's attestor lists: KMS's, for the key version.
        let der = pem_der(&s.kms_pem);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &der)
            .verify(
                &payload,
                &STANDARD.decode(sig["signature"].as_str().unwrap()).unwrap(),
            )
            .expect("the release attestation verifies with the KMS public key");

        // A redelivery copies nothing and attests nothing again.
        let (status, body) = s.deliver("releases/app", &img, "v1").await;
        assert_eq!((status, outcome(&body)), (200, "already_present"), "{body}");
        assert_eq!(s.google.created_occurrences(), 1);
    })
    .await;
}

#[tokio::test]
async fn instances_that_race_to_attest_leave_one_release_attestation() {
    with_timeout(90, async {
        let s = scene().await;
        let other = start_instance(&s.rules, &s.google).await;
        let img = s.push("releases/app", "v1", 84).await;
        s.attest_both("releases/app", &img.digest);
        // Both instances find no release attestation, and both create one.
        s.google.hold_creates_until(2);
        let (a, b) = tokio::join!(
            s.deliver("releases/app", &img, "v1"),
            s.deliver_to(&other, "releases/app", &img, "v1"),
        );
        for (status, body) in [&a, &b] {
            assert_eq!(*status, 200, "{body}");
            assert!(
                ["copied", "already_present"].contains(&outcome(body)),
                "{body}"
            );
        }
        assert_eq!(s.google.created_occurrences(), 2, "the race happened");
        let at = s.target_url("partner/app", &img.digest);
        let left: Vec<Value> = s
            .google
            .attestations(RELEASE_NOTE, &at)
            .iter()
            .map(|o| o["name"].clone())
            .collect();
        assert_eq!(left.len(), 1, "one release attestation stays: {left:?}");
        assert_eq!(s.google.deleted_occurrences(), 1);

        // Later deliveries to either instance find it and create nothing.
        s.google.hold_creates_until(0);
        for svc in [&s.svc, &other] {
            let (status, body) = s.deliver_to(svc, "releases/app", &img, "v1").await;
            assert_eq!((status, outcome(&body)), (200, "already_present"), "{body}");
        }
        assert_eq!(s.google.created_occurrences(), 2);
        assert_eq!(s.google.attestations(RELEASE_NOTE, &at).len(), 1);
    })
    .await;
}

#[tokio::test]
async fn missing_foreign_misdirected_and_misfiled_attestations_hold_the_image() {
    with_timeout(90, async {
        let s = scene().await;
        let stranger = Signer::ec(&ECDSA_P256_SHA256_ASN1_SIGNING, "ECDSA_P256_SHA256");
        let cases = [
            ("none", 82),
            ("other-key", 83),
            ("other-digest", 84),
            ("other-note", 85),
        ];
        for (case, seed) in cases {
            let repo = format!("releases/{case}");
            let img = s.push(&repo, "v1", seed).await;
            let url = s.source_url(&repo, &img.digest);
            let image = format!("{}/{repo}", s.src.host());
            let good = payload(&image, &img.digest);
            // The approver always attested: each case is about the build attestor.
            s.google.add_attestation(
                APPROVED_NOTE,
                &url,
                attestation(&s.approved, "approved-key", &good),
            );
            match case {
                "other-key" => s.google.add_attestation(
                    BUILT_NOTE,
                    &url,
                    attestation(&stranger, "built-key", &good),
                ),
                "other-digest" => {
                    let other = "sha256:".to_owned() + &"ab".repeat(32);
                    s.google.add_attestation(
                        BUILT_NOTE,
                        &url,
                        attestation(&s.built, "built-key", &payload(&image, &other)),
                    )
                }
                "other-note" => s.google.add_attestation(
                    "projects/build/notes/something-else",
                    &url,
                    attestation(&s.built, "built-key", &good),
                ),
                _ => {}
            }
            let (status, body) = s.deliver(&repo, &img, "v1").await;
            assert_eq!((status, outcome(&body)), (200, "held"), "{case}: {body}");
            assert_eq!(body["targets"][0]["gate"], "attestation", "{case}: {body}");
            let reason = body["targets"][0]["reason"].as_str().unwrap();
            assert!(reason.contains(BUILT), "{case}: {reason}");
            assert!(
                !reason.contains(APPROVED),
                "{case}: the approver did attest: {reason}"
            );
            assert!(
                !s.target_has(&format!("partner/{case}"), "v1").await,
                "{case}"
            );
        }
        let m = s.svc.metrics().await;
        assert_eq!(
            counter(
                &m,
                "image_relay_held_total{rule=\"releases\",gate=\"attestation\"}"
            ),
            Some(4.0),
            "{m}"
        );
        assert_eq!(
            s.google.created_occurrences(),
            0,
            "nothing released, nothing attested"
        );
    })
    .await;
}

#[tokio::test]
async fn an_attestation_created_later_releases_the_image_on_the_next_delivery() {
    with_timeout(90, async {
        // Cloud KMS's P-384 keys, as Binary Authorization names them.
        let s = scene_with(Signer::ec(
            &ECDSA_P384_SHA384_ASN1_SIGNING,
            "EC_SIGN_P384_SHA384",
        ))
        .await;
        let img = s.push("releases/app", "v2", 86).await;
        let (_, body) = s.deliver("releases/app", &img, "v2").await;
        assert_eq!(outcome(&body), "held", "{body}");
        s.attest_both("releases/app", &img.digest);
        let (status, body) = s.deliver("releases/app", &img, "v2").await;
        assert_eq!((status, outcome(&body)), (200, "copied"), "{body}");
        assert!(s.target_has("partner/app", "v2").await);
    })
    .await;
}

#[tokio::test]
async fn google_apis_unavailable_while_gating_get_a_retry_and_copy_nothing() {
    with_timeout(90, async {
        let s = scene().await;
        let img = s.push("releases/app", "v3", 87).await;
        s.attest_both("releases/app", &img.digest);
        s.google.set_binauthz_down(true);
        let (status, body) = s.deliver("releases/app", &img, "v3").await;
        assert_eq!((status, outcome(&body)), (503, "failed"), "{body}");
        assert_eq!(body["targets"][0]["retryable"], true, "{body}");
        s.google.set_binauthz_down(false);
        s.google.set_notes_down(true);
        let (status, body) = s.deliver("releases/app", &img, "v3").await;
        assert_eq!((status, outcome(&body)), (503, "failed"), "{body}");
        assert_eq!(body["targets"][0]["retryable"], true, "{body}");
        assert!(
            s.dst_proxy
                .requests()
                .iter()
                .all(|r| r.method == "GET" || r.method == "HEAD"),
            "nothing written while the gate cannot decide: {:?}",
            s.dst_proxy.requests()
        );
        assert!(!s.target_has("partner/app", "v3").await);
    })
    .await;
}

#[tokio::test]
async fn kms_unavailable_after_the_copy_gets_a_retry_that_attests_without_copying_again() {
    with_timeout(90, async {
        let s = scene().await;
        let img = s.push("releases/app", "v4", 88).await;
        s.attest_both("releases/app", &img.digest);
        s.google.set_kms_down(true);
        let (status, body) = s.deliver("releases/app", &img, "v4").await;
        assert_eq!((status, outcome(&body)), (503, "failed"), "{body}");
        assert_eq!(body["targets"][0]["retryable"], true, "{body}");
        let error = body["targets"][0]["error"].as_str().unwrap();
        assert!(error.contains("copied, but not attested"), "{error}");
        assert!(
            s.target_has("partner/app", "v4").await,
            "the image is in place"
        );
        let writes_before = s
            .dst_proxy
            .requests()
            .iter()
            .filter(|r| r.method != "GET" && r.method != "HEAD")
            .count();

        s.google.set_kms_down(false);
        let (status, body) = s.deliver("releases/app", &img, "v4").await;
        assert_eq!((status, outcome(&body)), (200, "already_present"), "{body}");
        let writes_after = s
            .dst_proxy
            .requests()
            .iter()
            .filter(|r| r.method != "GET" && r.method != "HEAD")
            .count();
        assert_eq!(
            writes_after, writes_before,
            "the redelivery copies nothing again"
        );
        let at = s.target_url("partner/app", &img.digest);
        assert_eq!(s.google.attestations(RELEASE_NOTE, &at).len(), 1);
    })
    .await;
}
