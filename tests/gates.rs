//! Release gates through the real service: only images signed by a trusted key leave, their
//! signatures travel with them, and signing after pushing releases the image.

mod common;

use common::cosign::CosignKey;
use common::service::*;
use common::wait::eventually;
use common::*;
use serde_json::Value;

struct Setup {
    src: Registry,
    dst: Registry,
    svc: Service,
    key: CosignKey,
    _keys: tempfile::TempDir,
}

async fn setup() -> Setup {
    let src = Registry::start().await;
    let dst = Registry::start().await;
    let key = CosignKey::generate();
    let keys = tempfile::tempdir().unwrap();
    let pub_path = key.write_public(keys.path(), "release.pub");
    let gate = format!(
        "require_signature = {{ keys = [{:?}] }}",
        pub_path.display().to_string()
    );
    let svc = Service::start(
        &rules(
            &format!("{}/releases", src.host()),
            &[&format!("{}/partner", dst.host())],
            &gate,
        ),
        &["--push-auth", "none"],
    )
    .await;
    Setup {
        src,
        dst,
        svc,
        key,
        _keys: keys,
    }
}

impl Setup {
    async fn deliver(&self, repo: &str, digest: &str, tag: &str) -> (u16, Value) {
        let n = notification(
            "INSERT",
            &format!("{}/{repo}", self.src.host()),
            Some(digest),
            Some(tag),
        );
        let (status, body, _) = self.svc.post(&deliver(Form::PubSubPush, &n, "g")).await;
        (status, body)
    }

    async fn target_has(&self, repo: &str, tag: &str) -> bool {
        Seeder::for_registry(&self.dst)
            .get_manifest_raw(repo, tag)
            .await
            .is_some()
    }
}

#[tokio::test]
async fn a_signed_image_is_copied_with_its_signature() {
    with_timeout(60, async {
        let s = setup().await;
        let seed = Seeder::for_registry(&s.src);
        let index = seed
            .push_multiarch("releases/app", Some("v1.0"), Format::Oci, 91)
            .await;
        let sig = seed
            .cosign_sign("releases/app", &index.manifest, &s.key)
            .await;
        let (status, body) = s
            .deliver("releases/app", &index.manifest.digest, "v1.0")
            .await;
        assert_eq!(
            (status, body["targets"][0]["outcome"].as_str()),
            (200, Some("copied")),
            "{body}"
        );
        let d = Seeder::for_registry(&s.dst);
        assert_eq!(
            d.get_manifest_raw("partner/app", "v1.0")
                .await
                .unwrap()
                .bytes,
            index.manifest.bytes
        );
        // The signature travels along, so the target can verify it too.
        let sig_tag = format!("sha256-{}.sig", index.manifest.hex());
        assert_eq!(
            d.get_manifest_raw("partner/app", &sig_tag)
                .await
                .unwrap()
                .bytes,
            sig.bytes
        );
    })
    .await;
}

#[tokio::test]
async fn unsigned_wrongly_signed_and_misdirected_images_are_held() {
    with_timeout(60, async {
        let s = setup().await;
        let seed = Seeder::for_registry(&s.src);
        let unsigned = seed
            .push_random_image("releases/unsigned", Some("v1"), Format::Oci, 92)
            .await;
        let other_key = seed
            .push_random_image("releases/otherkey", Some("v1"), Format::Oci, 93)
            .await;
        seed.cosign_sign(
            "releases/otherkey",
            &other_key.manifest,
            &CosignKey::generate(),
        )
        .await;
        // A valid signature by the trusted key, but over another image's digest.
        let elsewhere = seed
            .push_random_image("releases/elsewhere", Some("v1"), Format::Oci, 94)
            .await;
        let decoy = seed
            .push_random_image("releases/elsewhere", Some("decoy"), Format::Oci, 95)
            .await;
        let wrong = s.key.sign_image(
            &format!("{}/releases/elsewhere", s.src.host()),
            &decoy.manifest.digest,
        );
        seed.push_cosign_sig_tag("releases/elsewhere", &elsewhere.manifest.digest, &[&wrong])
            .await;

        for (repo, img, why) in [
            ("unsigned", &unsigned, "no signature"),
            ("otherkey", &other_key, "untrusted key"),
            ("elsewhere", &elsewhere, "another digest"),
        ] {
            let (status, body) = s
                .deliver(&format!("releases/{repo}"), &img.manifest.digest, "v1")
                .await;
            assert_eq!(status, 200, "held images are acknowledged: {body}");
            let t = &body["targets"][0];
            assert_eq!(t["outcome"], "held", "{body}");
            assert!(
                t["reason"].as_str().unwrap().contains(why),
                "{repo}: {body}"
            );
            assert!(
                !s.target_has(&format!("partner/{repo}"), "v1").await,
                "{repo} leaked"
            );
        }
        let log = s.svc.log();
        assert!(
            log.contains("\"severity\":\"WARNING\"") && log.contains("held by the signature gate"),
            "{log}"
        );
        let m = s.svc.metrics().await;
        assert!(
            m.contains("image_relay_held_total{rule=\"releases\",gate=\"signature\"} 3"),
            "{m}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_signature_pushed_after_the_image_releases_it() {
    with_timeout(60, async {
        let s = setup().await;
        let seed = Seeder::for_registry(&s.src);
        let img = seed
            .push_random_image("releases/app", Some("v2.0"), Format::Docker, 96)
            .await;
        let (_, body) = s
            .deliver("releases/app", &img.manifest.digest, "v2.0")
            .await;
        assert_eq!(body["targets"][0]["outcome"], "held", "{body}");
        // The signature arrives later: its own INSERT event names the .sig tag.
        let sig = seed
            .cosign_sign("releases/app", &img.manifest, &s.key)
            .await;
        let sig_tag = format!("sha256-{}.sig", img.manifest.hex());
        let (status, body) = s.deliver("releases/app", &sig.digest, &sig_tag).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["targets"][0]["outcome"], "copied", "{body}");
        assert_eq!(
            body["targets"][0]["target"],
            format!("{}/partner/app:v2.0", s.dst.host()),
            "{body}"
        );
        let d = Seeder::for_registry(&s.dst);
        assert_eq!(
            d.get_manifest_raw("partner/app", "v2.0")
                .await
                .unwrap()
                .bytes,
            img.manifest.bytes
        );
        assert!(
            s.target_has("partner/app", &sig_tag).await,
            "the signature came along"
        );
    })
    .await;
}

/// cosign with `--registry-referrers-mode=oci-1-1` pushes the signature untagged and, on a
/// registry without the referrers API, re-tags the referrers tag index `sha256-HEX`: that
/// INSERT alone releases the held image, and the signature and the index come along (the
/// signature's own digest-only INSERT would too: tests/referrers.rs).
#[tokio::test]
async fn a_signature_pushed_later_as_an_oci_referrer_releases_the_image() {
    with_timeout(60, async {
        let s = setup().await;
        let seed = Seeder::for_registry(&s.src);
        let index = seed
            .push_multiarch("releases/app", Some("v3.0"), Format::Oci, 97)
            .await;
        let (_, body) = s
            .deliver("releases/app", &index.manifest.digest, "v3.0")
            .await;
        assert_eq!(body["targets"][0]["outcome"], "held", "{body}");

        let sig = s.key.sign_image(
            &format!("{}/releases/app", s.src.host()),
            &index.manifest.digest,
        );
        let referrer = seed
            .push_cosign_sig_referrer("releases/app", &index.manifest, &sig)
            .await;
        let index_tag = format!("sha256-{}", index.manifest.hex());
        let tag_index = seed
            .get_manifest_raw("releases/app", &index_tag)
            .await
            .unwrap();
        let tag_index_digest = tag_index.digest.clone().expect("Docker-Content-Digest");
        let (status, body) = s
            .deliver("releases/app", &tag_index_digest, &index_tag)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["targets"][0]["outcome"], "copied", "{body}");
        assert_eq!(
            body["targets"][0]["target"],
            format!("{}/partner/app:v3.0", s.dst.host()),
            "{body}"
        );
        let d = Seeder::for_registry(&s.dst);
        assert_eq!(
            d.get_manifest_raw("partner/app", "v3.0")
                .await
                .unwrap()
                .bytes,
            index.manifest.bytes
        );
        assert_eq!(
            d.get_manifest_raw("partner/app", &referrer.digest)
                .await
                .expect("the signature came along")
                .bytes,
            referrer.bytes
        );
        assert_eq!(
            d.get_manifest_raw("partner/app", &index_tag)
                .await
                .expect("the referrers tag index came along")
                .bytes,
            tag_index.bytes
        );
    })
    .await;
}

#[tokio::test]
async fn plan_and_sync_dry_run_show_what_the_gate_would_hold() {
    with_timeout(60, async {
        let s = setup().await;
        let seed = Seeder::for_registry(&s.src);
        let signed = seed
            .push_random_image("releases/ok", Some("v1"), Format::Oci, 97)
            .await;
        seed.cosign_sign("releases/ok", &signed.manifest, &s.key)
            .await;
        let unsigned = seed
            .push_random_image("releases/nope", Some("v1"), Format::Oci, 98)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let event = dir.path().join("event.json");
        let n = notification(
            "INSERT",
            &format!("{}/releases/nope", s.src.host()),
            Some(&unsigned.manifest.digest),
            Some("v1"),
        );
        std::fs::write(&event, n.to_string()).unwrap();
        let out = std::process::Command::new(RELAY)
            .args([
                "plan",
                "--rules",
                s.svc.rules.to_str().unwrap(),
                event.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("held by the signature gate") && text.contains("no signature"),
            "{text}"
        );

        let out = std::process::Command::new(RELAY)
            .args([
                "sync",
                "--dry-run",
                "--json",
                "--rules",
                s.svc.rules.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        let items = report["items"].as_array().unwrap();
        let outcome = |repo: &str| {
            items
                .iter()
                .find(|i| i["source"].as_str().unwrap().contains(repo))
                .map(|i| i["outcome"].as_str().unwrap().to_owned())
        };
        assert_eq!(
            outcome("releases/nope").as_deref(),
            Some("held"),
            "{report}"
        );
        assert_eq!(
            outcome("releases/ok").as_deref(),
            Some("would_copy"),
            "{report}"
        );
        assert!(!s.target_has("partner/ok", "v1").await, "dry run wrote");
    })
    .await;
}

#[tokio::test]
async fn production_needs_the_approvers_signature_on_top_of_the_builds() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let staging = Registry::start().await;
        let prod = Registry::start().await;
        let build = CosignKey::generate();
        let alice = CosignKey::generate();
        let bob = CosignKey::generate();
        let keys = tempfile::tempdir().unwrap();
        build.write_public(keys.path(), "build.pub");
        std::fs::create_dir(keys.path().join("approvers")).unwrap();
        alice.write_public(&keys.path().join("approvers"), "alice.pub");
        bob.write_public(&keys.path().join("approvers"), "bob.pub");
        // The shape of rules/approval.example.toml, with key paths relative to the rule file.
        let rules_text = format!(
            r#"
[[rule]]
name = "staging"
source = "{src}/releases"
images = [".*"]
tags = ['v[0-9.]+']
targets = ["{staging}/staging"]
require_signature = {{ keys = ["build.pub"] }}

[[rule]]
name = "production"
source = "{src}/releases"
images = [".*"]
tags = ['v[0-9.]+']
targets = ["{prod}/prod"]
require_signature = [
  {{ keys = ["build.pub"] }},
  {{ keys = ["approvers/alice.pub", "approvers/bob.pub"] }},
]

[registry."{src}"]
auth = "none"
[registry."{staging}"]
auth = "none"
[registry."{prod}"]
auth = "none"
"#,
            src = src.host(),
            staging = staging.host(),
            prod = prod.host()
        );
        let rules_path = keys.path().join("rules.toml");
        std::fs::write(&rules_path, &rules_text).unwrap();
        let out = std::process::Command::new(RELAY)
            .args(["rules", "check", rules_path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let svc = Service::start(
            &rules_text
                .replace(
                    "\"build.pub\"",
                    &format!("{:?}", keys.path().join("build.pub").display().to_string()),
                )
                .replace(
                    "\"approvers/",
                    &format!("\"{}/approvers/", keys.path().display()),
                ),
            &["--push-auth", "none"],
        )
        .await;
        let seed = Seeder::for_registry(&src);
        let img = seed
            .push_random_image("releases/app", Some("v3.1"), Format::Oci, 111)
            .await;
        let repo = format!("{}/releases/app", src.host());
        let build_sig = build.sign_image(&repo, &img.manifest.digest);
        seed.push_cosign_sig_tag("releases/app", &img.manifest.digest, &[&build_sig])
            .await;
        let n = notification("INSERT", &repo, Some(&img.manifest.digest), Some("v3.1"));
        let (status, body, _) = svc.post(&deliver(Form::PubSubPush, &n, "p1")).await;
        assert_eq!(status, 200, "{body}");
        let outcome = |rule: &str| {
            body["targets"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["rule"] == rule)
                .unwrap()["outcome"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(outcome("staging"), "copied", "{body}");
        assert_eq!(outcome("production"), "held", "{body}");
        assert!(body.to_string().contains("key set 2 of 2"), "{body}");
        assert!(
            Seeder::for_registry(&prod)
                .get_manifest_raw("prod/app", "v3.1")
                .await
                .is_none()
        );

        // After review, Bob signs the digest; cosign adds his signature to the same .sig tag.
        let bob_sig = bob.sign_image(&repo, &img.manifest.digest);
        let sig = seed
            .push_cosign_sig_tag(
                "releases/app",
                &img.manifest.digest,
                &[&build_sig, &bob_sig],
            )
            .await;
        let sig_tag = format!("sha256-{}.sig", img.manifest.hex());
        let n = notification("INSERT", &repo, Some(&sig.digest), Some(&sig_tag));
        let (status, body, _) = svc.post(&deliver(Form::PubSubPush, &n, "p2")).await;
        assert_eq!(status, 200, "{body}");
        let got = Seeder::for_registry(&prod)
            .get_manifest_raw("prod/app", "v3.1")
            .await;
        assert_eq!(
            got.map(|m| m.bytes),
            Some(img.manifest.bytes.clone()),
            "{body}"
        );
        // Both signatures went along, so production can verify the approval itself.
        let prod_sig = Seeder::for_registry(&prod)
            .get_manifest_raw("prod/app", &sig_tag)
            .await
            .unwrap();
        assert_eq!(prod_sig.bytes, sig.bytes);
    })
    .await;
}

/// `image_relay_rule_reloads_total{result}` once it reaches `at_least`.
async fn reloads(svc: &Service, result: &str, at_least: f64) -> f64 {
    let series = format!("image_relay_rule_reloads_total{{result=\"{result}\"}}");
    eventually(
        std::time::Duration::from_secs(10),
        &format!("{series} >= {at_least}"),
        || async {
            let m = svc.metrics().await;
            match counter(&m, &series) {
                Some(n) if n >= at_least => Ok(n),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

#[tokio::test]
async fn a_key_file_replaced_while_serving_is_the_key_in_force() {
    with_timeout(90, async {
        let s = setup().await;
        let seed = Seeder::for_registry(&s.src);
        let rotated = CosignKey::generate();
        let img = seed
            .push_random_image("releases/app", Some("v3.0"), Format::Oci, 97)
            .await;
        seed.cosign_sign("releases/app", &img.manifest, &rotated)
            .await;
        let (_, body) = s
            .deliver("releases/app", &img.manifest.digest, "v3.0")
            .await;
        assert_eq!(
            body["targets"][0]["outcome"], "held",
            "signed by the next key: {body}"
        );

        // The key is rotated the way a secret mount does it: a new file renamed over the old.
        let key_path = s._keys.path().join("release.pub");
        let staged = rotated.write_public(s._keys.path(), "release.pub.new");
        std::fs::rename(&staged, &key_path).unwrap();
        reloads(&s.svc, "success", 1.0).await;
        let (status, body) = s
            .deliver("releases/app", &img.manifest.digest, "v3.0")
            .await;
        assert_eq!(
            (status, &body["targets"][0]["outcome"]),
            (200, &Value::from("copied")),
            "{body}"
        );

        // A broken key keeps the rules in force: counted, logged, and images still released.
        std::fs::write(&key_path, "-----BEGIN PUBLIC KEY-----\nnot a key\n").unwrap();
        reloads(&s.svc, "failure", 1.0).await;
        assert!(
            s.svc.log().contains("previous rules stay in force"),
            "{}",
            s.svc.log()
        );
        let next = seed
            .push_random_image("releases/app", Some("v3.1"), Format::Oci, 98)
            .await;
        seed.cosign_sign("releases/app", &next.manifest, &rotated)
            .await;
        let (_, body) = s
            .deliver("releases/app", &next.manifest.digest, "v3.1")
            .await;
        assert_eq!(body["targets"][0]["outcome"], "copied", "{body}");
    })
    .await;
}
