//! The push-token check on its own, against the fake Google's JWKS (tests/common/google.rs)
//! listing a key generated here, with tokens signed exactly as Google signs push tokens
//! (RS256, `kid`). What the HTTP edge answers for them is in tests/router.rs.

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::google::FakeGoogle;
use common::tokens::{GOOGLE_KEY, OTHER_KEY, assert_does_not_echo, bearer, unix_now, with_claim};
use common::with_timeout;
use image_relay::push_auth::{PushAuth, PushAuthError, PushAuthMode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const PUSHER: &str = "pusher@relay-project.iam.gserviceaccount.com";
const AUDIENCE: &str = "https://relay.example.run.app/push";

/// The claims of a push token for the service account and audience above.
fn push_claims() -> Value {
    common::tokens::push_claims(PUSHER, AUDIENCE)
}

fn push_claims_with(field: &str, value: Value) -> Value {
    with_claim(push_claims(), field, value)
}

/// A check in verify mode for the push service account and audience above, against `google`.
fn verifier(google: &FakeGoogle) -> PushAuth {
    PushAuth::new(
        PushAuthMode::Verify {
            allowed_emails: vec![PUSHER.to_owned()],
            audience: AUDIENCE.to_owned(),
            jwks_url: google.jwks_url(),
        },
        reqwest::Client::new(),
    )
}

/// Checks `token`, expects a refusal, and that the message does not echo the token.
async fn refused(auth: &PushAuth, token: &str) -> PushAuthError {
    let err = auth
        .check(Some(&bearer(token)))
        .await
        .expect_err("token should be refused");
    assert_does_not_echo(&err.to_string(), token);
    err
}

#[tokio::test]
async fn a_google_signed_push_token_is_accepted_and_names_the_service_account() {
    with_timeout(60, async {
        let google = FakeGoogle::start().await;
        let auth = verifier(&google);
        let token = GOOGLE_KEY.sign(&push_claims());
        assert_eq!(
            auth.check(Some(&bearer(&token))).await,
            Ok(Some(PUSHER.to_owned()))
        );
        // The short issuer spelling that older tokens carry is Google's too.
        let token = GOOGLE_KEY.sign(&push_claims_with("iss", "accounts.google.com".into()));
        assert_eq!(
            auth.check(Some(&bearer(&token))).await,
            Ok(Some(PUSHER.to_owned()))
        );
        assert_eq!(google.jwks_fetches(), 1, "the key set is cached");
    })
    .await;
}

#[tokio::test]
async fn a_token_expired_beyond_the_minute_of_leeway_is_refused() {
    with_timeout(60, async {
        let google = FakeGoogle::start().await;
        let auth = verifier(&google);
        let now = unix_now();
        let mut claims = push_claims();
        claims["iat"] = (now - 3720).into();
        claims["exp"] = (now - 120).into();
        assert_eq!(
            refused(&auth, &GOOGLE_KEY.sign(&claims)).await,
            PushAuthError::Expired
        );

        // Expired 30 s ago by Google's clock: within the leeway for clock skew.
        claims["exp"] = (now - 30).into();
        let token = GOOGLE_KEY.sign(&claims);
        assert_eq!(
            auth.check(Some(&bearer(&token))).await,
            Ok(Some(PUSHER.to_owned()))
        );

        let issued_later = push_claims_with("iat", (now + 600).into());
        assert_eq!(
            refused(&auth, &GOOGLE_KEY.sign(&issued_later)).await,
            PushAuthError::NotYetValid
        );
    })
    .await;
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    with_timeout(60, async {
        let google = FakeGoogle::start().await;
        let claims = push_claims_with("aud", "https://other-service.run.app/".into());
        assert_eq!(
            refused(&verifier(&google), &GOOGLE_KEY.sign(&claims)).await,
            PushAuthError::WrongAudience {
                got: "https://other-service.run.app/".to_owned()
            }
        );
    })
    .await;
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused() {
    with_timeout(60, async {
        let google = FakeGoogle::start().await;
        let claims = push_claims_with("iss", "https://sts.windows.net/tenant/".into());
        assert_eq!(
            refused(&verifier(&google), &GOOGLE_KEY.sign(&claims)).await,
            PushAuthError::WrongIssuer {
                got: "https://sts.windows.net/tenant/".to_owned()
            }
        );
    })
    .await;
}

#[tokio::test]
async fn a_token_for_a_service_account_not_on_the_allow_list_is_refused() {
    with_timeout(60, async {
        let google = FakeGoogle::start().await;
        let stranger = "someone@other-project.iam.gserviceaccount.com";
        let claims = push_claims_with("email", stranger.into());
        assert_eq!(
            refused(&verifier(&google), &GOOGLE_KEY.sign(&claims)).await,
            PushAuthError::EmailNotAllowed(stranger.to_owned())
        );
    })
    .await;
}

#[tokio::test]
async fn a_token_whose_email_is_not_verified_is_refused() {
    with_timeout(60, async {
        let google = FakeGoogle::start().await;
        let auth = verifier(&google);
        let claims = push_claims_with("email_verified", false.into());
        assert_eq!(
            refused(&auth, &GOOGLE_KEY.sign(&claims)).await,
            PushAuthError::EmailNotVerified
        );
        let mut claims = push_claims();
        claims.as_object_mut().unwrap().remove("email_verified");
        assert_eq!(
            refused(&auth, &GOOGLE_KEY.sign(&claims)).await,
            PushAuthError::EmailNotVerified
        );
    })
    .await;
}

#[tokio::test]
async fn a_token_signed_by_another_key_under_googles_kid_is_refused() {
    with_timeout(60, async {
        let google = FakeGoogle::start().await;
        let forged = OTHER_KEY.sign_as(&GOOGLE_KEY.kid, &push_claims());
        assert_eq!(
            refused(&verifier(&google), &forged).await,
            PushAuthError::BadSignature
        );
        // A genuine token whose claims were edited after signing fails the same way.
        let genuine = GOOGLE_KEY.sign(&push_claims());
        let mut parts: Vec<&str> = genuine.split('.').collect();
        let edited =
            URL_SAFE_NO_PAD.encode(push_claims_with("aud", AUDIENCE.into()).to_string() + " ");
        parts[1] = &edited;
        assert_eq!(
            refused(&verifier(&google), &parts.join(".")).await,
            PushAuthError::BadSignature
        );
    })
    .await;
}

#[tokio::test]
async fn unknown_kids_are_refused_and_fetch_the_key_set_at_most_once_per_thirty_seconds() {
    with_timeout(60, async {
        let google = FakeGoogle::start().await;
        let auth = verifier(&google);
        for i in 0..10 {
            let kid = format!("forged-{i}");
            let token = OTHER_KEY.sign_as(&kid, &push_claims());
            assert_eq!(refused(&auth, &token).await, PushAuthError::UnknownKey(kid));
        }
        // The first unknown kid found an empty cache and fetched; the other nine came within
        // 30 s of that fetch and were refused from the cache.
        assert_eq!(google.jwks_fetches(), 1);
        let token = GOOGLE_KEY.sign(&push_claims());
        assert_eq!(
            auth.check(Some(&bearer(&token))).await,
            Ok(Some(PUSHER.to_owned()))
        );
        assert_eq!(google.jwks_fetches(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_request_without_authorization_is_refused() {
    with_timeout(60, async {
        let google = FakeGoogle::start().await;
        let auth = verifier(&google);
        assert_eq!(auth.check(None).await, Err(PushAuthError::Missing));
        assert_eq!(auth.check(Some("")).await, Err(PushAuthError::Missing));
        assert_eq!(google.jwks_fetches(), 0);
    })
    .await;
}

#[tokio::test]
async fn an_authorization_that_is_not_a_bearer_token_is_refused() {
    with_timeout(60, async {
        let google = FakeGoogle::start().await;
        let auth = verifier(&google);
        let token = GOOGLE_KEY.sign(&push_claims());
        assert_eq!(
            auth.check(Some("Basic cHVzaGVyOnNlY3JldA==")).await,
            Err(PushAuthError::NotBearer)
        );
        // The token without its scheme is not a Bearer header either.
        assert_eq!(
            auth.check(Some(&token)).await,
            Err(PushAuthError::NotBearer)
        );
        assert!(matches!(
            refused(&auth, "not-a-jwt").await,
            PushAuthError::Malformed(_)
        ));
        assert_eq!(google.jwks_fetches(), 0);
    })
    .await;
}

#[tokio::test]
async fn unsigned_and_hmac_tokens_are_refused_before_any_key_is_fetched() {
    with_timeout(60, async {
        let google = FakeGoogle::start().await;
        let auth = verifier(&google);
        let encode = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());

        let header = json!({"alg": "none", "typ": "JWT", "kid": GOOGLE_KEY.kid});
        let unsigned = format!("{}.{}.", encode(&header), encode(&push_claims()));
        assert_eq!(
            refused(&auth, &unsigned).await,
            PushAuthError::UnsupportedAlgorithm("none".to_owned())
        );

        // Algorithm confusion: HS256 keyed with the RSA public key, which anyone can fetch.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(GOOGLE_KEY.kid.clone());
        let secret = EncodingKey::from_secret(GOOGLE_KEY.jwk().to_string().as_bytes());
        let hmac = jsonwebtoken::encode(&header, &push_claims(), &secret).unwrap();
        assert_eq!(
            refused(&auth, &hmac).await,
            PushAuthError::UnsupportedAlgorithm("HS256".to_owned())
        );
        assert_eq!(google.jwks_fetches(), 0);
    })
    .await;
}

#[tokio::test]
async fn platform_mode_accepts_a_stripped_token_only_from_an_allowed_account() {
    with_timeout(60, async {
        // No JWKS anywhere: platform mode never fetches keys.
        let auth = PushAuth::new(
            PushAuthMode::Platform {
                allowed_emails: vec![PUSHER.to_owned()],
            },
            reqwest::Client::new(),
        );
        let token = GOOGLE_KEY.stripped(&push_claims());
        assert_eq!(
            auth.check(Some(&bearer(&token))).await,
            Ok(Some(PUSHER.to_owned()))
        );

        let stranger = "someone@other-project.iam.gserviceaccount.com";
        let token = GOOGLE_KEY.stripped(&push_claims_with("email", stranger.into()));
        assert_eq!(
            refused(&auth, &token).await,
            PushAuthError::EmailNotAllowed(stranger.to_owned())
        );
        let token = GOOGLE_KEY.stripped(&push_claims_with("email_verified", false.into()));
        assert_eq!(
            refused(&auth, &token).await,
            PushAuthError::EmailNotVerified
        );

        // A token that still carries a signature did not pass Cloud Run IAM.
        let token = GOOGLE_KEY.sign(&push_claims());
        assert_eq!(
            refused(&auth, &token).await,
            PushAuthError::SignatureNotRemoved
        );
        assert_eq!(auth.check(None).await, Err(PushAuthError::Missing));
    })
    .await;
}

#[tokio::test]
async fn without_push_auth_any_authorization_is_accepted() {
    with_timeout(60, async {
        let auth = PushAuth::new(PushAuthMode::None, reqwest::Client::new());
        assert_eq!(auth.check(None).await, Ok(None));
        assert_eq!(auth.check(Some("Basic eDp5")).await, Ok(None));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_checks_on_a_cold_cache_share_one_key_fetch() {
    with_timeout(60, async {
        // The fake holds its answer, so all twenty checks are waiting while the first fetches.
        let google = FakeGoogle::start().await;
        google.set_jwks_delay(Duration::from_millis(300));
        let auth = verifier(&google);
        let checks: Vec<_> = (0..20)
            .map(|_| {
                let auth = auth.clone();
                let header = bearer(&GOOGLE_KEY.sign(&push_claims()));
                tokio::spawn(async move { auth.check(Some(&header)).await })
            })
            .collect();
        for check in checks {
            assert_eq!(check.await.unwrap(), Ok(Some(PUSHER.to_owned())));
        }
        assert_eq!(google.jwks_fetches(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_failing_key_endpoint_is_a_transient_error_and_is_not_hammered() {
    with_timeout(60, async {
        let google = FakeGoogle::start().await;
        google.set_jwks_failing(true);
        let auth = verifier(&google);
        let token = GOOGLE_KEY.sign(&push_claims());
        for _ in 0..5 {
            let err = refused(&auth, &token).await;
            assert!(
                matches!(&err, PushAuthError::Jwks(m) if m.contains("503")),
                "{err}"
            );
            assert!(err.is_transient(), "Pub/Sub should redeliver: {err}");
        }
        assert_eq!(google.jwks_fetches(), 1);
    })
    .await;
}
