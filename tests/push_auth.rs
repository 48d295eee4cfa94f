//! Push authentication against a fake Google: a JWKS served on loopback with a key generated
//! here, tokens signed with jsonwebtoken exactly as Google signs push tokens (RS256, `kid`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::KeyPair as _;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use image_relay::push_auth::{PushAuth, PushAuthError, PushAuthMode, SIGNATURE_REMOVED_BY_GOOGLE};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const PUSHER: &str = "pusher@relay-project.iam.gserviceaccount.com";
const AUDIENCE: &str = "https://relay.example.run.app/push";

/// Google's signing key, listed in the fake JWKS.
static GOOGLE_KEY: LazyLock<TestKey> = LazyLock::new(|| TestKey::generate("google-key-1"));
/// Someone else's key, never listed.
static OTHER_KEY: LazyLock<TestKey> = LazyLock::new(|| TestKey::generate("other-key"));

async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .expect("test body did not finish within 60 s")
}

struct TestKey {
    kid: String,
    encoding: EncodingKey,
    /// Modulus and exponent, base64url, as a JWK carries them.
    n: String,
    e: String,
}

impl TestKey {
    fn generate(kid: &str) -> TestKey {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = pair.as_der().unwrap();
        let public = pair.public_key();
        TestKey {
            kid: kid.to_owned(),
            // jsonwebtoken's aws-lc signer wants PKCS#1 (RSAPrivateKey); aws-lc-rs exports only
            // PKCS#8, which wraps the PKCS#1 key in an OCTET STRING.
            encoding: EncodingKey::from_rsa_der(&pkcs8_to_pkcs1(pkcs8.as_ref())),
            n: URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            e: URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        }
    }

    /// The JWK as Google's https://www.googleapis.com/oauth2/v3/certs lists it.
    fn jwk(&self) -> Value {
        json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": self.n, "e": self.e})
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// Signs with this key but names `kid` in the header.
    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// One DER element: (tag, contents, what follows).
fn der_element(der: &[u8]) -> (u8, &[u8], &[u8]) {
    let (tag, first) = (der[0], der[1]);
    let (len, start) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        let len = der[2..2 + n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | *b as usize);
        (len, 2 + n)
    };
    (tag, &der[start..start + len], &der[start + len..])
}

/// PrivateKeyInfo ::= SEQUENCE { version, algorithm, privateKey OCTET STRING } (RFC 5208).
fn pkcs8_to_pkcs1(pkcs8: &[u8]) -> Vec<u8> {
    let (_, info, _) = der_element(pkcs8);
    let (_, _version, rest) = der_element(info);
    let (_, _algorithm, rest) = der_element(rest);
    let (tag, private_key, _) = der_element(rest);
    assert_eq!(tag, 0x04, "PKCS#8 privateKey is an OCTET STRING");
    private_key.to_vec()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The claims of a Pub/Sub push token, issued a minute ago, valid for an hour.
fn push_claims() -> Value {
    let now = unix_now();
    json!({
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "azp": "108246189154284763427",
        "sub": "108246189154284763427",
        "email": PUSHER,
        "email_verified": true,
        "iat": now - 60,
        "exp": now + 3540,
    })
}

fn push_claims_with(field: &str, value: Value) -> Value {
    let mut claims = push_claims();
    claims[field] = value;
    claims
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The token as Cloud Run IAM forwards it: claims intact, signature replaced.
fn stripped(claims: &Value) -> String {
    let signed = GOOGLE_KEY.sign(claims);
    let (message, _signature) = signed.rsplit_once('.').unwrap();
    format!("{message}.{SIGNATURE_REMOVED_BY_GOOGLE}")
}

/// Checks `token`, expects a refusal, and that the message does not echo the token.
async fn refused(auth: &PushAuth, token: &str) -> PushAuthError {
    let err = auth
        .check(Some(&bearer(token)))
        .await
        .expect_err("token should be refused");
    let message = err.to_string();
    for part in token.split('.').filter(|p| p.len() > 8) {
        assert!(!message.contains(part), "{message:?} echoes the token");
    }
    err
}

/// Google's JWKS endpoint on 127.0.0.1, counting fetches.
struct FakeGoogle {
    jwks_url: String,
    state: Arc<FakeState>,
    server: tokio::task::JoinHandle<()>,
}

struct FakeState {
    jwks: Value,
    fetches: AtomicUsize,
    /// Answer 503 instead of the key set.
    failing: AtomicBool,
    /// Hold each answer this long, so concurrent checks pile up behind the first fetch.
    delay: Duration,
}

impl FakeGoogle {
    async fn start(keys: &[&TestKey]) -> FakeGoogle {
        FakeGoogle::start_with_delay(keys, Duration::ZERO).await
    }

    async fn start_with_delay(keys: &[&TestKey], delay: Duration) -> FakeGoogle {
        let state = Arc::new(FakeState {
            jwks: json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}),
            fetches: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            delay,
        });
        let app = axum::Router::new()
            .route("/oauth2/v3/certs", axum::routing::get(certs))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeGoogle {
            jwks_url: format!("http://{addr}/oauth2/v3/certs"),
            state,
            server,
        }
    }

    fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// A check in verify mode for the push service account and audience above.
    fn verifier(&self) -> PushAuth {
        PushAuth::new(
            PushAuthMode::Verify {
                allowed_emails: vec![PUSHER.to_owned()],
                audience: AUDIENCE.to_owned(),
                jwks_url: self.jwks_url.clone(),
            },
            reqwest::Client::new(),
        )
    }
}

impl Drop for FakeGoogle {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn certs(
    axum::extract::State(state): axum::extract::State<Arc<FakeState>>,
) -> axum::response::Response {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    if state.failing.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "application/json; charset=UTF-8"),
            // What Google sends (the number varies).
            (
                header::CACHE_CONTROL,
                "public, max-age=19770, must-revalidate, no-transform",
            ),
        ],
        state.jwks.to_string(),
    )
        .into_response()
}

#[tokio::test]
async fn a_google_signed_push_token_is_accepted_and_names_the_service_account() {
    within(async {
        let google = FakeGoogle::start(&[&GOOGLE_KEY]).await;
        let auth = google.verifier();
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
        assert_eq!(google.fetches(), 1, "the key set is cached");
    })
    .await;
}

#[tokio::test]
async fn a_token_expired_beyond_the_minute_of_leeway_is_refused() {
    within(async {
        let google = FakeGoogle::start(&[&GOOGLE_KEY]).await;
        let auth = google.verifier();
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
    within(async {
        let google = FakeGoogle::start(&[&GOOGLE_KEY]).await;
        let claims = push_claims_with("aud", "https://other-service.run.app/".into());
        assert_eq!(
            refused(&google.verifier(), &GOOGLE_KEY.sign(&claims)).await,
            PushAuthError::WrongAudience {
                got: "https://other-service.run.app/".to_owned()
            }
        );
    })
    .await;
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused() {
    within(async {
        let google = FakeGoogle::start(&[&GOOGLE_KEY]).await;
        let claims = push_claims_with("iss", "https://sts.windows.net/tenant/".into());
        assert_eq!(
            refused(&google.verifier(), &GOOGLE_KEY.sign(&claims)).await,
            PushAuthError::WrongIssuer {
                got: "https://sts.windows.net/tenant/".to_owned()
            }
        );
    })
    .await;
}

#[tokio::test]
async fn a_token_for_a_service_account_not_on_the_allow_list_is_refused() {
    within(async {
        let google = FakeGoogle::start(&[&GOOGLE_KEY]).await;
        let stranger = "someone@other-project.iam.gserviceaccount.com";
        let claims = push_claims_with("email", stranger.into());
        assert_eq!(
            refused(&google.verifier(), &GOOGLE_KEY.sign(&claims)).await,
            PushAuthError::EmailNotAllowed(stranger.to_owned())
        );
    })
    .await;
}

#[tokio::test]
async fn a_token_whose_email_is_not_verified_is_refused() {
    within(async {
        let google = FakeGoogle::start(&[&GOOGLE_KEY]).await;
        let auth = google.verifier();
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
    within(async {
        let google = FakeGoogle::start(&[&GOOGLE_KEY]).await;
        let forged = OTHER_KEY.sign_as(&GOOGLE_KEY.kid, &push_claims());
        assert_eq!(
            refused(&google.verifier(), &forged).await,
            PushAuthError::BadSignature
        );
        // A genuine token whose claims were edited after signing fails the same way.
        let genuine = GOOGLE_KEY.sign(&push_claims());
        let mut parts: Vec<&str> = genuine.split('.').collect();
        let edited =
            URL_SAFE_NO_PAD.encode(push_claims_with("aud", AUDIENCE.into()).to_string() + " ");
        parts[1] = &edited;
        assert_eq!(
            refused(&google.verifier(), &parts.join(".")).await,
            PushAuthError::BadSignature
        );
    })
    .await;
}

#[tokio::test]
async fn unknown_kids_are_refused_and_fetch_the_key_set_at_most_once_per_thirty_seconds() {
    within(async {
        let google = FakeGoogle::start(&[&GOOGLE_KEY]).await;
        let auth = google.verifier();
        for i in 0..10 {
            let kid = format!("forged-{i}");
            let token = OTHER_KEY.sign_as(&kid, &push_claims());
            assert_eq!(refused(&auth, &token).await, PushAuthError::UnknownKey(kid));
        }
        // The first unknown kid found an empty cache and fetched; the other nine came within
        // 30 s of that fetch and were refused from the cache.
        assert_eq!(google.fetches(), 1);
        let token = GOOGLE_KEY.sign(&push_claims());
        assert_eq!(
            auth.check(Some(&bearer(&token))).await,
            Ok(Some(PUSHER.to_owned()))
        );
        assert_eq!(google.fetches(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_request_without_authorization_is_refused() {
    within(async {
        let google = FakeGoogle::start(&[&GOOGLE_KEY]).await;
        let auth = google.verifier();
        assert_eq!(auth.check(None).await, Err(PushAuthError::Missing));
        assert_eq!(auth.check(Some("")).await, Err(PushAuthError::Missing));
        assert_eq!(google.fetches(), 0);
    })
    .await;
}

#[tokio::test]
async fn an_authorization_that_is_not_a_bearer_token_is_refused() {
    within(async {
        let google = FakeGoogle::start(&[&GOOGLE_KEY]).await;
        let auth = google.verifier();
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
        assert_eq!(google.fetches(), 0);
    })
    .await;
}

#[tokio::test]
async fn unsigned_and_hmac_tokens_are_refused_before_any_key_is_fetched() {
    within(async {
        let google = FakeGoogle::start(&[&GOOGLE_KEY]).await;
        let auth = google.verifier();
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
        assert_eq!(google.fetches(), 0);
    })
    .await;
}

#[tokio::test]
async fn platform_mode_accepts_a_stripped_token_only_from_an_allowed_account() {
    within(async {
        // No JWKS anywhere: platform mode never fetches keys.
        let auth = PushAuth::new(
            PushAuthMode::Platform {
                allowed_emails: vec![PUSHER.to_owned()],
            },
            reqwest::Client::new(),
        );
        let token = stripped(&push_claims());
        assert_eq!(
            auth.check(Some(&bearer(&token))).await,
            Ok(Some(PUSHER.to_owned()))
        );

        let stranger = "someone@other-project.iam.gserviceaccount.com";
        let token = stripped(&push_claims_with("email", stranger.into()));
        assert_eq!(
            refused(&auth, &token).await,
            PushAuthError::EmailNotAllowed(stranger.to_owned())
        );
        let token = stripped(&push_claims_with("email_verified", false.into()));
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
async fn mode_none_accepts_anything() {
    within(async {
        let auth = PushAuth::new(PushAuthMode::None, reqwest::Client::new());
        assert_eq!(auth.check(None).await, Ok(None));
        assert_eq!(auth.check(Some("Basic eDp5")).await, Ok(None));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_checks_on_a_cold_cache_share_one_key_fetch() {
    within(async {
        // The fake holds its answer, so all twenty checks are waiting while the first fetches.
        let google = FakeGoogle::start_with_delay(&[&GOOGLE_KEY], Duration::from_millis(300)).await;
        let auth = google.verifier();
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
        assert_eq!(google.fetches(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_failing_key_endpoint_is_a_transient_error_and_is_not_hammered() {
    within(async {
        let google = FakeGoogle::start(&[&GOOGLE_KEY]).await;
        google.state.failing.store(true, Ordering::SeqCst);
        let auth = google.verifier();
        let token = GOOGLE_KEY.sign(&push_claims());
        for _ in 0..5 {
            let err = refused(&auth, &token).await;
            assert!(
                matches!(&err, PushAuthError::Jwks(m) if m.contains("503")),
                "{err}"
            );
            assert!(err.is_transient(), "Pub/Sub should redeliver: {err}");
        }
        assert_eq!(google.fetches(), 1);
    })
    .await;
}
