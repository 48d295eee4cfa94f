//! The signature gate against real registries: Debian's docker-registry (distribution 2.8, no
//! referrers API) on loopback, holding images signed the two ways cosign stores signatures,
//! with real ECDSA P-256 keys.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::cosign::CosignKey;
use common::*;
use image_relay::reference::{Digest, Repository};
use image_relay::registry::endpoints::GoogleApis;
use image_relay::registry::retry::RetryPolicy;
use image_relay::registry::settings::RegistryConfig;
use image_relay::registry::{Registries, RepoClient};
use image_relay::signature::{SignatureError, TrustedKeys, Verdict, check};

const REPO: &str = "release/app";

/// A client for `repo` on `host`, anonymous, with `retry`.
fn client_with(host: &str, repo: &str, retry: RetryPolicy) -> RepoClient {
    // An explicit table keeps the machine's Docker credentials out of the test.
    let config =
        RegistryConfig::parse(&format!("[registry.\"{host}\"]\nauth = \"none\"\n"), "test")
            .expect("registry settings");
    Registries::new(config, retry, GoogleApis::default())
        .expect("HTTP client")
        .repo(&Repository {
            registry: host.to_owned(),
            path: repo.to_owned(),
        })
        .expect("repository client")
}

fn client(reg: &Registry) -> RepoClient {
    client_with(&reg.host(), REPO, RetryPolicy::default())
}

fn digest(p: &Pushed) -> Digest {
    p.digest.parse().expect("pushed digest")
}

/// A key pair whose public half is written to a key file, as a rule would name it.
struct KeyFile {
    key: CosignKey,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl KeyFile {
    fn new(name: &str) -> KeyFile {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = CosignKey::generate();
        let path = key.write_public(dir.path(), name);
        KeyFile {
            key,
            path,
            _dir: dir,
        }
    }

    fn trusted(&self) -> TrustedKeys {
        TrustedKeys::load(std::slice::from_ref(&self.path)).expect("load key file")
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

fn unsigned_reason(v: Verdict) -> String {
    match v {
        Verdict::Unsigned { reason } => reason,
        Verdict::Signed { key } => panic!("expected Unsigned, got Signed by {key}"),
    }
}

#[tokio::test]
async fn an_image_signed_under_the_sig_tag_is_signed_by_the_key_file() {
    with_timeout(60, async {
        let reg = Registry::start().await;
        let seeder = Seeder::for_registry(&reg);
        let image = seeder
            .push_random_image(REPO, Some("v1"), Format::Oci, 1)
            .await;
        let release = KeyFile::new("release.pub");
        seeder
            .cosign_sign(REPO, &image.manifest, &release.key)
            .await;

        let v = check(&client(&reg), &digest(&image.manifest), &release.trusted())
            .await
            .expect("registry answers");
        assert_eq!(
            v,
            Verdict::Signed {
                key: release.name()
            }
        );
    })
    .await;
}

#[tokio::test]
async fn an_image_signed_as_an_oci_referrer_is_signed() {
    with_timeout(60, async {
        let reg = Registry::start().await;
        let seeder = Seeder::for_registry(&reg);
        let image = seeder
            .push_random_image(REPO, Some("v1"), Format::Docker, 2)
            .await;
        let release = KeyFile::new("release.pub");
        let sig = release
            .key
            .sign_image(&format!("{}/{REPO}", reg.host()), &image.manifest.digest);
        seeder
            .push_cosign_sig_referrer(REPO, &image.manifest, &sig)
            .await;
        // Only the referrer layout exists: the tag schema cannot be what verified.
        assert!(
            !seeder
                .list_tags(REPO)
                .await
                .iter()
                .any(|t| t.ends_with(".sig"))
        );

        let v = check(&client(&reg), &digest(&image.manifest), &release.trusted())
            .await
            .expect("registry answers");
        assert_eq!(
            v,
            Verdict::Signed {
                key: release.name()
            }
        );
    })
    .await;
}

#[tokio::test]
async fn an_unsigned_image_is_unsigned_because_no_signature_was_found() {
    with_timeout(60, async {
        let reg = Registry::start().await;
        let seeder = Seeder::for_registry(&reg);
        let image = seeder
            .push_random_image(REPO, Some("v1"), Format::Oci, 3)
            .await;
        let release = KeyFile::new("release.pub");

        let v = check(&client(&reg), &digest(&image.manifest), &release.trusted())
            .await
            .expect("registry answers");
        let reason = unsigned_reason(v);
        assert!(reason.starts_with("no signature found"), "{reason}");
        assert!(reason.contains(&image.manifest.digest), "{reason}");
    })
    .await;
}

#[tokio::test]
async fn a_signature_by_another_key_is_unsigned_naming_the_untrusted_key() {
    with_timeout(60, async {
        let reg = Registry::start().await;
        let seeder = Seeder::for_registry(&reg);
        let image = seeder
            .push_random_image(REPO, Some("v1"), Format::Oci, 4)
            .await;
        let release = KeyFile::new("release.pub");
        let stranger = CosignKey::generate();
        seeder.cosign_sign(REPO, &image.manifest, &stranger).await;

        let v = check(&client(&reg), &digest(&image.manifest), &release.trusted())
            .await
            .expect("registry answers");
        let reason = unsigned_reason(v);
        assert!(reason.contains("untrusted key"), "{reason}");
        assert!(reason.contains(&release.name()), "{reason}");
        assert!(reason.contains(".sig layer 1"), "{reason}");
    })
    .await;
}

#[tokio::test]
async fn a_signature_over_another_digest_is_unsigned_naming_that_digest() {
    with_timeout(60, async {
        let reg = Registry::start().await;
        let seeder = Seeder::for_registry(&reg);
        let image = seeder
            .push_random_image(REPO, Some("v2"), Format::Oci, 5)
            .await;
        let old = seeder
            .push_random_image(REPO, Some("v1"), Format::Oci, 6)
            .await;
        let release = KeyFile::new("release.pub");
        // A genuine signature of the old image, moved under the new image's signature tag.
        let sig = release
            .key
            .sign_image(&format!("{}/{REPO}", reg.host()), &old.manifest.digest);
        seeder
            .push_cosign_sig_tag(REPO, &image.manifest.digest, &[&sig])
            .await;

        let v = check(&client(&reg), &digest(&image.manifest), &release.trusted())
            .await
            .expect("registry answers");
        let reason = unsigned_reason(v);
        assert!(reason.contains("another digest"), "{reason}");
        assert!(reason.contains(&old.manifest.digest), "{reason}");
    })
    .await;
}

#[tokio::test]
async fn a_payload_changed_after_signing_is_unsigned() {
    with_timeout(60, async {
        let reg = Registry::start().await;
        let seeder = Seeder::for_registry(&reg);
        let image = seeder
            .push_random_image(REPO, Some("v1"), Format::Oci, 7)
            .await;
        let release = KeyFile::new("release.pub");
        let sig = release
            .key
            .sign_image(&format!("{}/{REPO}", reg.host()), &image.manifest.digest);
        // The blob and its descriptor digest agree (the seeder pushes the changed bytes under
        // their own digest); only the signature no longer fits.
        seeder
            .push_cosign_sig_tag(REPO, &image.manifest.digest, &[&sig.tampered()])
            .await;

        let v = check(&client(&reg), &digest(&image.manifest), &release.trusted())
            .await
            .expect("registry answers");
        let reason = unsigned_reason(v);
        assert!(reason.contains("altered"), "{reason}");
    })
    .await;
}

#[tokio::test]
async fn one_good_signature_among_bad_ones_is_enough() {
    with_timeout(60, async {
        let reg = Registry::start().await;
        let seeder = Seeder::for_registry(&reg);
        let image = seeder
            .push_random_image(REPO, Some("v1"), Format::Oci, 8)
            .await;
        let release = KeyFile::new("release.pub");
        let reference = format!("{}/{REPO}", reg.host());
        let stranger = CosignKey::generate().sign_image(&reference, &image.manifest.digest);
        let good = release.key.sign_image(&reference, &image.manifest.digest);
        // The tag holds only a stranger's signature; the good one is a referrer.
        seeder
            .push_cosign_sig_tag(REPO, &image.manifest.digest, &[&stranger])
            .await;
        seeder
            .push_cosign_sig_referrer(REPO, &image.manifest, &good)
            .await;

        let v = check(&client(&reg), &digest(&image.manifest), &release.trusted())
            .await
            .expect("registry answers");
        assert!(v.is_signed(), "{v:?}");
    })
    .await;
}

#[tokio::test]
async fn an_index_signed_by_its_index_digest_is_signed() {
    with_timeout(60, async {
        let reg = Registry::start().await;
        let seeder = Seeder::for_registry(&reg);
        let index = seeder
            .push_multiarch(REPO, Some("v1"), Format::Oci, 9)
            .await;
        let release = KeyFile::new("release.pub");
        seeder
            .cosign_sign(REPO, &index.manifest, &release.key)
            .await;
        let repo = client(&reg);
        let keys = release.trusted();

        let v = check(&repo, &digest(&index.manifest), &keys)
            .await
            .expect("registry answers");
        assert_eq!(
            v,
            Verdict::Signed {
                key: release.name()
            }
        );
        // `cosign sign` of an index signs the index: its children carry no signature of
        // their own, which is why the caller passes the index digest.
        let child = check(&repo, &digest(&index.children[0].manifest), &keys)
            .await
            .expect("registry answers");
        assert!(!child.is_signed(), "{child:?}");
    })
    .await;
}

#[tokio::test]
async fn a_registry_that_does_not_answer_is_an_error_not_a_verdict() {
    with_timeout(60, async {
        let mut reg = Registry::start().await;
        let host = reg.host();
        let release = KeyFile::new("release.pub");
        reg.stop();
        let quick = RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
            ..RetryPolicy::default()
        };
        let repo = client_with(&host, REPO, quick);

        let e = check(&repo, &Digest::sha256_of(b"image"), &release.trusted())
            .await
            .expect_err("nothing answers");
        assert!(e.is_retryable(), "{e}");
    })
    .await;
}

#[test]
fn a_key_file_that_is_not_a_p256_public_key_fails_to_load_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = CosignKey::generate().write_public(dir.path(), "good.pub");

    let rsa =
        aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA key pair");
    let rsa_der = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(
        aws_lc_rs::signature::KeyPair::public_key(&rsa),
    )
    .expect("RSA SubjectPublicKeyInfo");
    let rsa_path = dir.path().join("rsa.pub");
    std::fs::write(
        &rsa_path,
        common::cosign::pem("PUBLIC KEY", rsa_der.as_ref()),
    )
    .unwrap();

    let private = dir.path().join("cosign.key");
    std::fs::write(
        &private,
        common::cosign::pem("ENCRYPTED SIGSTORE PRIVATE KEY", b"sealed"),
    )
    .unwrap();
    let junk = dir.path().join("notes.txt");
    std::fs::write(&junk, "not a key\n").unwrap();

    for (bad, says) in [
        (&rsa_path, "RSA"),
        (&private, "private key"),
        (&junk, "not a PEM public key"),
    ] {
        let e = TrustedKeys::load(&[good.clone(), bad.clone()]).expect_err("refused");
        let text = e.to_string();
        assert!(
            matches!(&e, SignatureError::Key { path, .. } if *path == bad.display().to_string()),
            "{text}"
        );
        assert!(text.contains(says), "{text}");
    }

    let missing = dir.path().join("missing.pub");
    let e = TrustedKeys::load(std::slice::from_ref(&missing)).expect_err("refused");
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );
}
