//! Push-authentication settings of the `image-relay serve` command line: refused when
//! incomplete, and in force in the running process when given. Every kind of token and what
//! the service answers for it is in tests/router.rs, in process.

mod common;

use common::google::FakeGoogle;
use common::service::{Delivery, Form, Service, deliver, free_port, notification, serve_command};
use common::tokens::{GOOGLE_KEY, assert_does_not_echo, bearer, push_claims};
use common::*;

/// The push service account allowed to deliver.
const PUSHER: &str = "relay-push@proj.iam.gserviceaccount.com";
/// The audience configured on the push subscription.
const AUDIENCE: &str = "https://relay.example/";

/// A service account of another project, not on the allow list.
const STRANGER: &str = "someone@other-proj.iam.gserviceaccount.com";

/// One rule copying `source/releases/*` tags `v*` to `target/partner/*`.
fn rules(source: &str, target: &str) -> String {
    format!(
        "[[rule]]\nname = \"releases\"\nsource = \"{source}/releases\"\nimages = [\".*\"]\n\
         tags = ['v[0-9.]+']\ntargets = [\"{target}/partner\"]\n\n\
         [registry.\"{source}\"]\nauth = \"none\"\n\n[registry.\"{target}\"]\nauth = \"none\"\n"
    )
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

/// A delivery of an image no rule watches, carrying `authorization`: once past the token check
/// it gets 204 without any registry being asked, so none is needed here.
fn unwatched(authorization: Option<&str>) -> Delivery {
    let n = notification(
        "INSERT",
        "us-docker.pkg.dev/other-proj/releases/app",
        None,
        Some("v1"),
    );
    let mut d = deliver(Form::PubSubPush, &n, "flags-1");
    if let Some(value) = authorization {
        d.headers.push(("authorization".into(), value.to_owned()));
    }
    d
}

#[tokio::test]
async fn the_push_auth_flags_reach_the_check_of_the_running_service() {
    with_timeout(60, async {
        let google = FakeGoogle::start().await;
        let jwks_url = google.jwks_url();
        let verify = Service::start(
            &rules("127.0.0.1:9", "127.0.0.1:10"),
            &[
                "--push-auth",
                "verify",
                "--push-email",
                PUSHER,
                "--push-audience",
                AUDIENCE,
                "--jwks-url",
                &jwks_url,
            ],
        )
        .await;
        let good = GOOGLE_KEY.sign(&push_claims(PUSHER, AUDIENCE));
        // Each refusal needs one flag to have arrived: the audience, the allow list.
        let other_audience = GOOGLE_KEY.sign(&push_claims(PUSHER, "https://other.example/"));
        let stranger = GOOGLE_KEY.sign(&push_claims(STRANGER, AUDIENCE));
        for (token, says) in [
            (&other_audience, "audience"),
            (&stranger, "not an allowed push service account"),
        ] {
            let (status, body, _) = verify.post(&unwatched(Some(&bearer(token)))).await;
            assert_eq!(status, 401, "{body}\n{}", verify.log());
            assert!(
                body["error"].as_str().unwrap_or("").contains(says),
                "{body}"
            );
            assert_does_not_echo(&verify.log(), token);
        }
        // Accepted only with keys from --jwks-url.
        let (status, body, _) = verify.post(&unwatched(Some(&bearer(&good)))).await;
        assert_eq!(status, 204, "{body}\n{}", verify.log());
        assert_eq!(google.jwks_fetches(), 1);

        let platform = Service::start(
            &rules("127.0.0.1:9", "127.0.0.1:10"),
            &["--push-auth", "platform", "--push-email", PUSHER],
        )
        .await;
        let stripped = |email: &str| bearer(&GOOGLE_KEY.stripped(&push_claims(email, AUDIENCE)));
        let (status, body, _) = platform.post(&unwatched(Some(&stripped(STRANGER)))).await;
        assert_eq!(status, 401, "{body}");
        let (status, body, _) = platform.post(&unwatched(Some(&stripped(PUSHER)))).await;
        assert_eq!(status, 204, "{body}\n{}", platform.log());
    })
    .await;
}
