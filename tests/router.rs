//! The HTTP edge in process: the service's router with its real relay, real registries on
//! loopback and a fake Google only for push-token keys, driven request by request without a
//! subprocess (tests/common/app.rs). What one request gets back: 400 for a delivery that does
//! not decode, 401 and 503 from the push-token check, 204 for events no rule wants, 429 past
//! the copy bound, and the health, readiness and metrics endpoints. Signals, reloads and the
//! scenarios that need the process are in tests/serve.rs.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use common::app::{App, PushAuthArg, Reply};
use common::google::FakeGoogle;
use common::logs::Logs;
use common::service::{Delivery, Form, Service, deliver, notification, rules};
use common::tokens::{
    GOOGLE_KEY, OTHER_KEY, assert_does_not_echo, bearer, push_claims, unix_now, with_claim,
};
use common::wait::eventually;
use common::*;
use serde_json::{Value, json};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// A digest of the right form that no registry here holds.
const ABSENT: &str = "sha256:e48f32910efbe11528e691acacd675ee9af0a4cf16072e43d199d7b06de4bb49";

#[tokio::test]
async fn malformed_deliveries_get_400_naming_the_field_and_copy_nothing() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let dst_proxy = Proxy::start(&dst.host(), Fault::None).await;
        let app = App::start(&rules(
            &format!("{}/releases", src.host()),
            &[&format!("{}/partner", dst_proxy.host())],
            "",
        ));
        let logs = Logs::capture();
        for entry in std::fs::read_dir(fixture("malformed")).unwrap() {
            let path = entry.unwrap().path();
            let d = Delivery {
                headers: vec![("content-type".into(), "application/json".into())],
                body: std::fs::read(&path).unwrap(),
            };
            let reply = app.post(&d).await;
            let body = reply.json();
            assert_eq!(reply.status, 400, "{}: {body}", path.display());
            assert!(
                body["error"]["field"].is_string() && body["error"]["reason"].is_string(),
                "{body}"
            );
        }
        let big = Delivery {
            headers: vec![],
            body: vec![b' '; (1 << 20) + 1],
        };
        let reply = app.post(&big).await;
        assert_eq!(
            (reply.status, reply.json()["error"]["field"].as_str()),
            (400, Some("body"))
        );
        assert!(dst_proxy.requests().is_empty());
        // Whoever reads the error log must be able to find the message in Pub/Sub.
        assert!(
            logs.events()
                .iter()
                .any(|e| e.level == tracing::Level::ERROR && e.field("message_id") == Some("1")),
            "ERROR events carry the message id:\n{}",
            logs.text()
        );
    })
    .await;
}

#[tokio::test]
async fn every_delivery_fixture_is_accepted_with_its_headers() {
    with_timeout(60, async {
        // The fixtures name us-docker.pkg.dev, which no rule here watches: each must decode
        // (or it would be 400) and be turned away without a registry being asked.
        let src = Registry::start().await;
        let src_proxy = Proxy::start(&src.host(), Fault::None).await;
        let app = App::start(&rules(
            &format!("{}/releases", src_proxy.host()),
            &[&format!("{}/partner", src_proxy.host())],
            "",
        ));
        let mut seen = 0;
        for entry in std::fs::read_dir(fixture("delivery")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let headers = std::fs::read_to_string(path.with_extension("headers"))
                .unwrap_or_else(|_| "content-type: application/json\n".into())
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect();
            let d = Delivery {
                headers,
                body: std::fs::read(&path).unwrap(),
            };
            let reply = app.post(&d).await;
            assert_eq!(reply.status, 204, "{}: {}", path.display(), reply.text());
            let reason: Value =
                serde_json::from_str(reply.header("x-image-relay-reason").unwrap()).unwrap();
            assert_eq!(
                reason["reason"],
                "no rule watches us-docker.pkg.dev/src-proj/releases/team/app",
                "{}",
                path.display()
            );
            seen += 1;
        }
        assert_eq!(seen, 5, "one per delivery fixture");
        assert!(src_proxy.requests().is_empty());
    })
    .await;
}

#[tokio::test]
async fn ten_thousand_rules_turn_an_event_away_with_a_reason_header_under_8_kib() {
    with_timeout(120, async {
        // Every rule watches the repository and turns the tag away: the most a reason can say.
        let mut text = String::new();
        for i in 0..10_000 {
            text.push_str(&format!(
                "[[rule]]\nname = \"partner-{i:05}\"\nsource = \"r.example/releases\"\n\
                 images = [\"app\"]\ntags = ['v[0-9]+\\.[0-9]+\\.[0-9]+']\n\
                 targets = [\"t.example/incoming-{i}\"]\n\n"
            ));
        }
        text.push_str("[registry.\"r.example\"]\nauth = \"none\"\n");
        text.push_str("[registry.\"t.example\"]\nauth = \"none\"\n");
        let app = App::start(&text);
        let n = notification(
            "INSERT",
            "r.example/releases/app",
            Some(ABSENT),
            Some("nightly"),
        );
        let reply = app.post(&deliver(Form::PubSubPush, &n, "m1")).await;
        assert_eq!(reply.status, 204, "{}", reply.text());
        let header = reply
            .header("x-image-relay-reason")
            .expect("a reason header");
        assert!(header.len() < 8 << 10, "{} bytes", header.len());
        let reason: Value = serde_json::from_str(header).unwrap();
        assert_eq!(reason["rejections_total"], 10_000, "{reason}");
        let shown = reason["rejections"].as_array().unwrap();
        assert!(!shown.is_empty() && shown.len() < 10, "{reason}");
        assert_eq!(shown[0]["clause"], "tag", "{reason}");
    })
    .await;
}

#[tokio::test]
async fn events_no_rule_watches_touch_no_registry() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let src_proxy = Proxy::start(&src.host(), Fault::None).await;
        let dst_proxy = Proxy::start(&dst.host(), Fault::None).await;
        // Without referrers to bring, an untagged push is none of the rule's business (with
        // them it is read once: it may be a referrer, tests/referrers.rs).
        let app = App::start(&rules(
            &format!("{}/releases", src_proxy.host()),
            &[&format!("{}/partner", dst_proxy.host())],
            "referrers = false",
        ));
        let releases = format!("{}/releases/app", src_proxy.host());
        let others = [
            notification(
                "INSERT",
                "us-docker.pkg.dev/other-proj/releases/app",
                Some(ABSENT),
                Some("v1"),
            ),
            notification(
                "INSERT",
                &format!("{}/staging/app", src_proxy.host()),
                Some(ABSENT),
                Some("v1"),
            ),
            notification("INSERT", &releases, Some(ABSENT), Some("v1-rc")),
            notification("INSERT", &releases, Some(ABSENT), None),
            notification("DELETE", &releases, None, Some("v1")),
        ];
        for (i, n) in others.iter().enumerate() {
            let reply = app
                .post(&deliver(Form::PubSubPush, n, &format!("x{i}")))
                .await;
            assert_eq!(reply.status, 204, "{n}");
            // A 204 has no body: the reason travels in a header.
            let reason = reply
                .header("x-image-relay-reason")
                .unwrap_or_else(|| panic!("no reason header for {n}"));
            let reason: Value = serde_json::from_str(reason).unwrap();
            assert!(reason["reason"].is_string(), "{reason}");
        }
        assert!(
            src_proxy.requests().is_empty(),
            "source contacted: {:?}",
            src_proxy.requests()
        );
        assert!(
            dst_proxy.requests().is_empty(),
            "target contacted: {:?}",
            dst_proxy.requests()
        );
    })
    .await;
}

#[tokio::test]
async fn past_the_copy_bound_deliveries_get_429_so_pubsub_backs_off() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        // The target makes the first copy wait 2 s (429 + Retry-After), holding the only slot.
        let slow = Proxy::start(
            &dst.host(),
            Fault::TooManyRequests {
                times: 1,
                retry_after: "2".into(),
            },
        )
        .await;
        let s = Seeder::for_registry(&src);
        let app = App::build(
            &rules(
                &format!("{}/releases", src.host()),
                &[&format!("{}/partner", slow.host())],
                "",
            ),
            PushAuthArg::None,
            1,
        );
        let a = s
            .push_random_image("releases/a", Some("v1"), Format::Oci, 21)
            .await;
        let b = s
            .push_random_image("releases/b", Some("v1"), Format::Oci, 22)
            .await;
        let na = notification(
            "INSERT",
            &format!("{}/releases/a", src.host()),
            Some(&a.manifest.digest),
            Some("v1"),
        );
        let nb = notification(
            "INSERT",
            &format!("{}/releases/b", src.host()),
            Some(&b.manifest.digest),
            Some("v1"),
        );
        let da = deliver(Form::PubSubPush, &na, "q1");
        let first = app.post(&da);
        let second = async {
            // Until the first copy reaches the target it may not hold the slot yet.
            eventually(
                Duration::from_secs(20),
                "the first copy reaches the target",
                || async {
                    if slow.requests().is_empty() {
                        Err("no request at the target".to_owned())
                    } else {
                        Ok(())
                    }
                },
            )
            .await;
            app.post(&deliver(Form::PubSubPush, &nb, "q2")).await
        };
        let (first, second) = tokio::join!(first, second);
        assert_eq!(first.status, 200, "{}", first.text());
        assert_eq!(second.status, 429, "{}", second.text());
        // A 429 only defers: redelivered once the slot is free, it goes through.
        let again = app.post(&deliver(Form::PubSubPush, &nb, "q2")).await;
        assert_eq!(again.status, 200, "{}", again.text());
    })
    .await;
}

#[tokio::test]
async fn healthz_answers_ok_whatever_the_rules() {
    with_timeout(30, async {
        // Nothing listens on these hosts: liveness must not depend on any registry.
        let app = App::start(&rules("127.0.0.1:1/releases", &["127.0.0.1:1/partner"], ""));
        let reply = app.get("/healthz").await;
        assert_eq!((reply.status, reply.text().as_str()), (200, "ok\n"));
    })
    .await;
}

#[tokio::test]
async fn readyz_says_shutting_down_once_the_service_stops_taking_deliveries() {
    with_timeout(30, async {
        let app = App::start(&rules("127.0.0.1:1/releases", &["127.0.0.1:1/partner"], ""));
        let reply = app.get("/readyz").await;
        assert_eq!((reply.status, reply.text().as_str()), (200, "ready\n"));
        app.begin_shutdown();
        let reply = app.get("/readyz").await;
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (503, "shutting down\n")
        );
    })
    .await;
}

#[tokio::test]
async fn metrics_count_each_delivery_by_form_action_and_outcome() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let s = Seeder::for_registry(&src);
        let app = App::start(&rules(
            &format!("{}/releases", src.host()),
            &[&format!("{}/partner", dst.host())],
            "",
        ));
        let repo = format!("{}/releases/app", src.host());
        let img = s
            .push_random_image("releases/app", Some("v1"), Format::Oci, 51)
            .await;
        let copied = notification("INSERT", &repo, Some(&img.manifest.digest), Some("v1"));
        let ignored = notification("INSERT", &repo, Some(&img.manifest.digest), Some("nightly"));
        let posts = [
            (deliver(Form::EventarcBinary, &copied, "m1"), 200),
            (deliver(Form::PubSubPush, &ignored, "m2"), 204),
            (deliver(Form::PubSubPush, &ignored, "m3"), 204),
            (
                Delivery {
                    headers: vec![],
                    body: b"not json".to_vec(),
                },
                400,
            ),
        ];
        for (d, want) in &posts {
            let reply = app.post(d).await;
            assert_eq!(reply.status, *want, "{}", reply.text());
        }

        let reply = app.get("/metrics").await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("content-type"),
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
        );
        let m = reply.text();
        let events = |labels: &str| counter(&m, &format!("image_relay_events_total{{{labels}}}"));
        assert_eq!(
            events("delivery=\"eventarc_binary\",action=\"INSERT\",outcome=\"done\""),
            Some(1.0),
            "{m}"
        );
        assert_eq!(
            events("delivery=\"pubsub_push\",action=\"INSERT\",outcome=\"ignored\""),
            Some(2.0),
            "{m}"
        );
        assert_eq!(
            events("delivery=\"unknown\",action=\"unknown\",outcome=\"malformed\""),
            Some(1.0),
            "{m}"
        );
        assert_eq!(
            counter(
                &m,
                &format!(
                    "image_relay_copies_total{{rule=\"releases\",target=\"{}/partner\",outcome=\"copied\"}}",
                    dst.host()
                )
            ),
            Some(1.0),
            "{m}"
        );
        assert_eq!(counter(&m, "image_relay_copies_in_flight"), Some(0.0), "{m}");
        assert!(m.ends_with("# EOF\n"), "an OpenMetrics scrape ends with # EOF: {m}");
    })
    .await;
}

#[tokio::test]
async fn metric_labels_name_rules_and_configured_targets_never_a_tag_or_digest() {
    with_timeout(90, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let s = Seeder::for_registry(&src);
        let app = App::start(&rules(
            &format!("{}/releases", src.host()),
            &[&format!("{}/partner", dst.host())],
            "",
        ));
        let tags = ["v1", "v2", "v3", "v4"];
        let mut digests = Vec::new();
        for (i, tag) in tags.iter().enumerate() {
            let repo = format!("releases/app{i}");
            let img = s
                .push_random_image(&repo, Some(tag), Format::Oci, 60 + i as u64)
                .await;
            let n = notification(
                "INSERT",
                &format!("{}/{repo}", src.host()),
                Some(&img.manifest.digest),
                Some(tag),
            );
            let reply = app.post(&deliver(Form::PubSubPush, &n, &format!("m{i}"))).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            digests.push(img.manifest.digest.clone());
        }
        let m = app.get("/metrics").await.text();
        // Every label value of every series: none may name a tag, a digest or an image below
        // the configured target, or the series would grow with every release.
        for line in m.lines().filter(|l| !l.starts_with('#')) {
            let Some(labels) = line.split_once('{').and_then(|(_, rest)| rest.split_once('}'))
            else {
                continue;
            };
            for value in labels.0.split(',').filter_map(|kv| kv.split_once('=')) {
                let v = value.1.trim_matches('"');
                assert!(
                    !tags.iter().any(|t| v.ends_with(&format!(":{t}")))
                        && !v.contains("sha256:")
                        && !v.contains("/app"),
                    "label {}={v} grows with releases: {line}",
                    value.0
                );
            }
        }
        let copied = format!(
            "image_relay_copies_total{{rule=\"releases\",target=\"{}/partner\",outcome=\"copied\"}}",
            dst.host()
        );
        assert_eq!(counter(&m, &copied), Some(tags.len() as f64), "{m}");
        let series = m
            .lines()
            .filter(|l| l.starts_with("image_relay_copies_total{"))
            .count();
        assert_eq!(series, 1, "four releases to one target are one series: {m}");
    })
    .await;
}

// Push authentication: only the Authorization header changes between requests, so every
// refusal is the token's doing, and a refused delivery must not reach the target registry.

/// The push service account allowed to deliver.
const PUSHER: &str = "relay-push@proj.iam.gserviceaccount.com";
/// The audience configured on the push subscription.
const AUDIENCE: &str = "https://relay.example/";
/// A service account of another project, not on the allow list.
const STRANGER: &str = "someone@other-proj.iam.gserviceaccount.com";

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
fn auth_rules(source: &str, target: &str) -> String {
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
            rules: auth_rules(&src.host(), &dst_proxy.host()),
            delivery: pubsub_push(&repo, &img.manifest.digest, "v1", "auth-1"),
            manifest: img.manifest.bytes,
            _src: src,
            dst,
            dst_proxy,
        }
    }

    /// POSTs the delivery with `authorization` as the `Authorization` header when given.
    async fn post(&self, app: &App, authorization: Option<&str>) -> Reply {
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        if let Some(value) = authorization {
            headers.push(("authorization".to_owned(), value.to_owned()));
        }
        app.post(&Delivery {
            headers,
            body: self.delivery.clone(),
        })
        .await
    }

    /// Posts the delivery with `authorization` and asserts it is refused with 401, a message
    /// containing `says` and not the token (in the reply or the log), and no request to the
    /// target.
    async fn assert_refused(
        &self,
        app: &App,
        logs: &Logs,
        case: &str,
        authorization: Option<&str>,
        says: &str,
    ) {
        let reply = self.post(app, authorization).await;
        let body = reply.json();
        assert_eq!(reply.status, 401, "{case}: {body}\n{}", logs.text());
        let message = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{case}: no error message in {body}"));
        assert!(
            message.contains(says),
            "{case}: {message:?} does not say {says:?}"
        );
        // The log must hold the refusal, or not echoing the token there would prove nothing.
        assert!(
            logs.events()
                .iter()
                .any(|e| e.field("message") == Some("push request refused")
                    && e.field("error").is_some_and(|m| m.contains(says))),
            "{case}: the refusal is not logged:\n{}",
            logs.text()
        );
        if let Some(value) = authorization {
            let token = value.strip_prefix("Bearer ").unwrap_or(value);
            assert_does_not_echo(&body.to_string(), token);
            assert_does_not_echo(&logs.text(), token);
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

fn verify(google: &FakeGoogle) -> PushAuthArg {
    PushAuthArg::Verify {
        emails: vec![PUSHER.to_owned()],
        audience: AUDIENCE.to_owned(),
        jwks_url: google.jwks_url(),
    }
}

#[tokio::test]
async fn only_a_google_signed_token_for_the_push_account_gets_the_image_copied() {
    with_timeout(120, async {
        let scene = Scene::start().await;
        let google = FakeGoogle::start().await;
        let app = App::build(&scene.rules, verify(&google), 16);
        let logs = Logs::capture();
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
                .assert_refused(&app, &logs, case, authorization.as_deref(), says)
                .await;
        }

        // The same delivery with the good token goes through: the refusals were the token's.
        let reply = scene.post(&app, Some(&bearer(&good))).await;
        let body = reply.json();
        assert_eq!(reply.status, 200, "{body}\n{}", logs.text());
        assert_eq!(body["targets"][0]["outcome"], "copied", "{body}");
        scene.assert_copied().await;
        assert_eq!(
            google.jwks_fetches(),
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
        let google = FakeGoogle::start().await;
        google.set_jwks_failing(true);
        let app = App::build(&scene.rules, verify(&google), 16);
        let token = GOOGLE_KEY.sign(&push_claims(PUSHER, AUDIENCE));
        let reply = scene.post(&app, Some(&bearer(&token))).await;
        let body = reply.json();
        assert_eq!(reply.status, 503, "{body}");
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
        let app = App::build(
            &scene.rules,
            PushAuthArg::Platform {
                emails: vec![PUSHER.to_owned()],
            },
            16,
        );
        let logs = Logs::capture();
        let stranger = GOOGLE_KEY.stripped(&push_claims(STRANGER, AUDIENCE));
        scene
            .assert_refused(
                &app,
                &logs,
                "disallowed email",
                Some(&bearer(&stranger)),
                "not an allowed push service account",
            )
            .await;

        let pusher = GOOGLE_KEY.stripped(&push_claims(PUSHER, AUDIENCE));
        let reply = scene.post(&app, Some(&bearer(&pusher))).await;
        let body = reply.json();
        assert_eq!(reply.status, 200, "{body}\n{}", logs.text());
        assert_eq!(body["targets"][0]["outcome"], "copied", "{body}");
        scene.assert_copied().await;
    })
    .await;
}

#[tokio::test]
async fn sync_refuses_a_caller_without_a_push_token_before_touching_a_registry() {
    with_timeout(60, async {
        let scene = Scene::start().await;
        let google = FakeGoogle::start().await;
        let app = App::build(&scene.rules, verify(&google), 16);
        let reply = app
            .post_to(
                "/sync",
                &Delivery {
                    headers: vec![],
                    body: b"{}".to_vec(),
                },
            )
            .await;
        assert_eq!(reply.status, 401, "{}", reply.text());
        let message = reply.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains("no Authorization header"), "{message}");
        assert!(scene.dst_proxy.requests().is_empty());
    })
    .await;
}

/// Eventarc's audit-log form names its image as Artifact Registry serves it
/// (`us-docker.pkg.dev/src-proj/releases/team/app`, from the entry's `resourceName`), so only a
/// registry answering to that name can show the copy. The router therefore runs in
/// `image-relay serve`, whose HTTP proxy is a loopback proxy in front of the source registry:
/// the relay reaches "us-docker.pkg.dev" without leaving the machine, and the in-process router
/// could not be given a proxy without giving it to every other test here.
#[tokio::test]
async fn an_audit_log_delivery_through_the_router_copies_the_image_its_resource_name_names() {
    with_timeout(90, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let src_proxy = Proxy::start(&src.host(), Fault::None).await;
        let img = Seeder::for_registry(&src)
            .push_random_image("src-proj/releases/team/app", Some("v1.2.3"), Format::Oci, 77)
            .await;
        let rule_file = format!(
            "[[rule]]\nname = \"releases\"\nsource = \"us-docker.pkg.dev/src-proj/releases\"\n\
             images = [\".*\"]\ntags = ['v[0-9.]+']\ntargets = [\"{dst}/partner\"]\n\n\
             [registry.\"us-docker.pkg.dev\"]\nauth = \"none\"\n# plain HTTP, to the proxy\n\
             insecure = true\n\n[registry.\"{dst}\"]\nauth = \"none\"\n",
            dst = dst.host()
        );
        // The test's own client has no proxy: it talks to the relay on loopback.
        let svc = Service::start_with(&rule_file, &["--push-auth", "none"], |cmd, _| {
            cmd.env("HTTP_PROXY", format!("http://{}", src_proxy.host()))
                // The target is reached directly, as are its loopback neighbours.
                .env("NO_PROXY", "127.0.0.1,localhost");
        })
        .await;

        // The push by tag, as Eventarc delivers its audit entry.
        let name = fixture("delivery/audit-log/put-manifest-tag.json");
        let mut req = svc.http.post(svc.url("/")).body(std::fs::read(&name).unwrap());
        for line in std::fs::read_to_string(name.with_extension("headers"))
            .unwrap()
            .lines()
        {
            let (k, v) = line.split_once(':').unwrap();
            req = req.header(k.trim(), v.trim());
        }
        let reply = req.send().await.unwrap();
        let status = reply.status().as_u16();
        let body: Value = reply.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "{body}\n{}", svc.log());
        assert_eq!(body["targets"][0]["outcome"], "copied", "{body}");

        let copied = Seeder::for_registry(&dst)
            .get_manifest_raw("partner/team/app", "v1.2.3")
            .await
            .expect("the tag the entry names is at the target");
        assert_eq!(copied.digest.as_deref(), Some(img.manifest.digest.as_str()));
        // The source was read under the name the entry gave it, through the proxy.
        let reads = src_proxy.requests();
        assert!(
            reads
                .iter()
                .any(|r| r.path.starts_with("/v2/src-proj/releases/team/app/manifests/")),
            "{reads:?}"
        );
        let m = svc.metrics().await;
        assert_eq!(
            counter(
                &m,
                "image_relay_events_total{delivery=\"audit_log\",action=\"INSERT\",outcome=\"done\"}"
            ),
            Some(1.0),
            "{m}"
        );
    })
    .await;
}

#[tokio::test]
async fn audit_entries_that_change_no_image_are_acknowledged_and_touch_no_registry() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let src_proxy = Proxy::start(&src.host(), Fault::None).await;
        let dst_proxy = Proxy::start(&dst.host(), Fault::None).await;
        // The fixtures name us-docker.pkg.dev/src-proj/releases; a rule watches it, so only
        // the decoder's verdict keeps the relay away from the registries.
        let app = App::start(&rules(
            "us-docker.pkg.dev/src-proj/releases",
            &[&format!("{}/partner", dst_proxy.host())],
            "",
        ));
        let mut seen = 0;
        for entry in std::fs::read_dir(fixture("delivery/audit-log/ignored")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let headers = std::fs::read_to_string(path.with_extension("headers"))
                .unwrap()
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect();
            let d = Delivery {
                headers,
                body: std::fs::read(&path).unwrap(),
            };
            let reply = app.post(&d).await;
            assert_eq!(reply.status, 204, "{}: {}", path.display(), reply.text());
            let reason: Value =
                serde_json::from_str(reply.header("x-image-relay-reason").unwrap()).unwrap();
            assert!(
                reason["field"].as_str().unwrap().starts_with("protoPayload."),
                "{}: {reason}",
                path.display()
            );
            seen += 1;
        }
        assert_eq!(seen, 3, "one per ignored fixture");
        let m = app.get("/metrics").await.text();
        assert_eq!(
            counter(
                &m,
                "image_relay_events_total{delivery=\"audit_log\",action=\"unknown\",outcome=\"ignored\"}"
            ),
            Some(3.0),
            "{m}"
        );
        assert!(src_proxy.requests().is_empty());
        assert!(dst_proxy.requests().is_empty());
    })
    .await;
}
