//! Push authentication of `image-relay serve` end to end: the real binary on a loopback port,
//! real registries, a fake Google JWKS, and a real Pub/Sub push delivery built from a pushed
//! digest. Only the `Authorization` header changes between requests, so every refusal is the
//! token's doing, and a refused delivery must not reach the target registry.

mod common;

use base64::Engine as _;
use common::service::{Delivery, Service, free_port, serve_command};
use common::tokens::{
    FakeGoogle, GOOGLE_KEY, OTHER_KEY, assert_does_not_echo, bearer, push_claims, unix_now,
    with_claim,
};
use common::*;
use serde_json::{Value, json};

/// The push service account allowed to deliver.
const PUSHER: &str = "relay-push@proj.iam.gserviceaccount.com";
/// The audience configured on the push subscription.
const AUDIENCE: &str = "https://relay.example/";
/// A service account of another project, not on the allow list.
const STRANGER: &str = "someone@other-proj.iam.gserviceaccount.com";

/// POSTs the delivery `body` as Pub/Sub pushes it, with `authorization` as the
/// `Authorization` header when given; returns the status and the JSON reply.
async fn post(svc: &Service, body: &[u8], authorization: Option<&str>) -> (u16, Value) {
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    if let Some(value) = authorization {
        headers.push(("authorization".to_owned(), value.to_owned()));
    }
    let (status, reply, _) = svc
        .post(&Delivery {
            headers,
            body: body.to_vec(),
        })
        .await;
    (status, reply)
}

/// A Pub/Sub push body (the wrapped form) carrying the Artifact Registry notification that
/// `repo@digest` was pushed with `tag`.
fn pubsub_push(repo: &str, digest: &str, tag: &str, id: &str) -> Vec<u8> {
    let notification = json!({
        "action": "INSERT",
        "digest": format!("{repo}@{digest}"),
        "tag": format!("{repo}:{tag}"),
    });
    let data = base64::engine::general_purpose::STANDARD.encode(notification.to_string());
    let time = "2026-11-20T19:13:55.749Z";
    json!({
        "message": { "data": data, "messageId": id, "message_id": id, "publishTime": time, "publish_time": time },
        "subscription": "projects/src/subscriptions/relay",
    })
    .to_string()
    .into_bytes()
}

/// One rule copying `source/releases/*` tags `v*` to `target/partner/*`.
fn rules(source: &str, target: &str) -> String {
    format!(
        "[[rule]]\nname = \"releases\"\nsource = \"{source}/releases\"\nimages = [\".*\"]\n\
         tags = ['v[0-9.]+']\ntargets = [\"{target}/partner\"]\n\n\
         [registry.\"{source}\"]\nauth = \"none\"\n\n[registry.\"{target}\"]\nauth = \"none\"\n"
    )
}

/// A source with `releases/app:v1` pushed, a target behind a recording proxy, and the push
/// delivery that announces the image.
struct Scene {
    _src: Registry,
    dst: Registry,
    dst_proxy: Proxy,
    rules: String,
    delivery: Vec<u8>,
    manifest: Vec<u8>,
}

impl Scene {
    async fn start() -> Scene {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let dst_proxy = Proxy::start(&dst.host(), Fault::None).await;
        let img = Seeder::for_registry(&src)
            .push_random_image("releases/app", Some("v1"), Format::Oci, 31)
            .await;
        let repo = format!("{}/releases/app", src.host());
        Scene {
            rules: rules(&src.host(), &dst_proxy.host()),
            delivery: pubsub_push(&repo, &img.manifest.digest, "v1", "auth-1"),
            manifest: img.manifest.bytes,
            _src: src,
            dst,
            dst_proxy,
        }
    }

    /// Posts the delivery with `authorization` and asserts it is refused with 401, a message
    /// containing `says` and not the token, and no request to the target.
    async fn assert_refused(
        &self,
        svc: &Service,
        case: &str,
        authorization: Option<&str>,
        says: &str,
    ) {
        let (status, body) = post(svc, &self.delivery, authorization).await;
        assert_eq!(status, 401, "{case}: {body}\n{}", svc.log());
        let message = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{case}: no error message in {body}"));
        assert!(
            message.contains(says),
            "{case}: {message:?} does not say {says:?}"
        );
        if let Some(value) = authorization {
            let token = value.strip_prefix("Bearer ").unwrap_or(value);
            assert_does_not_echo(&body.to_string(), token);
            assert_does_not_echo(&svc.log(), token);
        }
        let seen = self.dst_proxy.requests();
        assert!(
            seen.is_empty(),
            "{case}: the target was contacted: {seen:?}"
        );
    }

    /// Asserts the target holds the pushed manifest, byte for byte.
    async fn assert_copied(&self) {
        // Also shows the refusals' empty request logs mean something: copies pass the proxy.
        assert!(
            !self.dst_proxy.requests().is_empty(),
            "the copy bypassed the proxy"
        );
        let got = Seeder::for_registry(&self.dst)
            .get_manifest_raw("partner/app", "v1")
            .await;
        assert_eq!(got.map(|m| m.bytes), Some(self.manifest.clone()));
    }
}

#[tokio::test]
async fn only_a_google_signed_token_for_the_push_account_gets_the_image_copied() {
    with_timeout(120, async {
        let scene = Scene::start().await;
        let google = FakeGoogle::start(&[&GOOGLE_KEY]).await;
        let svc = Service::start(
            &scene.rules,
            &[
                "--push-auth",
                "verify",
                "--push-email",
                PUSHER,
                "--push-audience",
                AUDIENCE,
                "--jwks-url",
                &google.jwks_url,
            ],
        )
        .await;
        let claims = push_claims(PUSHER, AUDIENCE);
        let now = unix_now();
        let expired = with_claim(
            with_claim(claims.clone(), "iat", now - 7200),
            "exp",
            now - 3600,
        );
        let other_audience = with_claim(claims.clone(), "aud", "https://other.example/");
        let other_email = with_claim(claims.clone(), "email", STRANGER);
        let good = GOOGLE_KEY.sign(&claims);
        let refusals: [(&str, Option<String>, &str); 6] = [
            (
                "expired",
                Some(bearer(&GOOGLE_KEY.sign(&expired))),
                "expired",
            ),
            (
                "wrong audience",
                Some(bearer(&GOOGLE_KEY.sign(&other_audience))),
                "audience",
            ),
            (
                "wrong email",
                Some(bearer(&GOOGLE_KEY.sign(&other_email))),
                "not an allowed push service account",
            ),
            (
                "bad signature",
                Some(bearer(&OTHER_KEY.sign_as(&GOOGLE_KEY.kid, &claims))),
                "signature does not verify",
            ),
            ("missing", None, "no Authorization header"),
            // The good token itself, but without its scheme.
            ("not Bearer", Some(good.clone()), "not a Bearer token"),
        ];
        for (case, authorization, says) in &refusals {
            scene
                .assert_refused(&svc, case, authorization.as_deref(), says)
                .await;
        }

        // The same delivery with the good token goes through: the refusals were the token's.
        let (status, body) = post(&svc, &scene.delivery, Some(&bearer(&good))).await;
        assert_eq!(status, 200, "{body}\n{}", svc.log());
        assert_eq!(body["targets"][0]["outcome"], "copied", "{body}");
        scene.assert_copied().await;
        assert_eq!(
            google.fetches(),
            1,
            "the key set is fetched once and cached"
        );
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_key_set_gets_503_so_pubsub_redelivers_and_copies_nothing() {
    with_timeout(60, async {
        let scene = Scene::start().await;
        let google = FakeGoogle::start(&[&GOOGLE_KEY]).await;
        google.set_failing(true);
        let svc = Service::start(
            &scene.rules,
            &[
                "--push-auth",
                "verify",
                "--push-email",
                PUSHER,
                "--push-audience",
                AUDIENCE,
                "--jwks-url",
                &google.jwks_url,
            ],
        )
        .await;
        let token = GOOGLE_KEY.sign(&push_claims(PUSHER, AUDIENCE));
        let (status, body) = post(&svc, &scene.delivery, Some(&bearer(&token))).await;
        assert_eq!(status, 503, "{body}\n{}", svc.log());
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains("signing keys"), "{body}");
        assert_does_not_echo(message, &token);
        assert!(scene.dst_proxy.requests().is_empty());
    })
    .await;
}

#[tokio::test]
async fn behind_cloud_run_iam_a_stripped_token_is_judged_by_its_email() {
    with_timeout(120, async {
        let scene = Scene::start().await;
        // No JWKS anywhere: platform mode trusts Cloud Run IAM to have checked the signature.
        let svc = Service::start(
            &scene.rules,
            &["--push-auth", "platform", "--push-email", PUSHER],
        )
        .await;
        let stranger = GOOGLE_KEY.stripped(&push_claims(STRANGER, AUDIENCE));
        scene
            .assert_refused(
                &svc,
                "disallowed email",
                Some(&bearer(&stranger)),
                "not an allowed push service account",
            )
            .await;

        let pusher = GOOGLE_KEY.stripped(&push_claims(PUSHER, AUDIENCE));
        let (status, body) = post(&svc, &scene.delivery, Some(&bearer(&pusher))).await;
        assert_eq!(status, 200, "{body}\n{}", svc.log());
        assert_eq!(body["targets"][0]["outcome"], "copied", "{body}");
        scene.assert_copied().await;
    })
    .await;
}

#[tokio::test]
async fn verify_mode_without_an_allow_list_or_an_audience_is_a_usage_error() {
    with_timeout(60, async {
        let dir = tempfile::tempdir().unwrap();
        let rules_path = dir.path().join("rules.toml");
        std::fs::write(&rules_path, rules("127.0.0.1:9", "127.0.0.1:10")).unwrap();
        let cases: [(&str, &[&str]); 2] = [
            ("--push-email", &["--push-audience", AUDIENCE]),
            ("--push-audience", &["--push-email", PUSHER]),
        ];
        for (missing, flags) in cases {
            let mut cmd = serve_command(&rules_path, free_port(), &["--push-auth", "verify"]);
            cmd.args(flags);
            // tokio's process, so a relay that starts serving anyway is killed at the timeout
            // rather than hanging the test.
            let out = tokio::process::Command::from(cmd)
                .kill_on_drop(true)
                .output()
                .await
                .expect("run image-relay serve");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "without {missing}: {stderr}");
            assert!(stderr.contains(missing), "without {missing}: {stderr}");
        }
    })
    .await;
}
