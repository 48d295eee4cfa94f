//! Who may push to `image-relay serve`: the check of the `Authorization` header that Pub/Sub
//! push subscriptions and Eventarc send with every delivery.
//!
//! Google signs a short-lived OIDC ID token (RS256) for the push service account and sends it as
//! `Authorization: Bearer <token>`; `aud` is the configured audience, `email` the service
//! account. Two deployments are supported: behind Cloud Run IAM, the platform has already
//! verified the token and replaced its signature with `SIGNATURE_REMOVED_BY_GOOGLE`, so only the
//! claims are read ([`PushAuthMode::Platform`]); anywhere else the token is verified here against
//! Google's published keys ([`PushAuthMode::Verify`]).
//!
//! Verification is done with `jsonwebtoken` and an own key cache rather than google-cloud-auth's
//! ID-token verifier, because that verifier fails concurrent calls
//! (googleapis/google-cloud-rust#6696) and a push endpoint is concurrent by nature.
//!
//! This module knows no HTTP framework: the edge passes the raw header value in and maps the
//! [`PushAuthError`] to a status.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::registry::body::read_capped;

/// Where Google publishes the keys that sign its OIDC ID tokens (a JWKS document).
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";

/// The issuers Google writes into ID tokens; older tokens omit the scheme.
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

/// What Cloud Run IAM puts in place of the signature of a token it has already verified.
pub const SIGNATURE_REMOVED_BY_GOOGLE: &str = "SIGNATURE_REMOVED_BY_GOOGLE";

/// Clock skew tolerated on `exp`, `iat` and `nbf`: Google's clock and ours may differ slightly.
const CLOCK_LEEWAY_SECS: u64 = 60;

/// How long keys stay cached when the JWKS response has no `Cache-Control: max-age`.
const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(3600);

/// Least time between two JWKS fetches. An attacker can put any `kid` into a token; without
/// this floor every forged token would cost a request to Google. It also bounds how often a
/// failing JWKS endpoint is retried, and is the least lifetime a `max-age` can give the cache.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// Upper bound on the cache lifetime whatever `max-age` says, so a removed key (Google
/// withdraws keys on rotation) stops being trusted within a day.
const MAX_JWKS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Deadline for one JWKS fetch: Pub/Sub's default ack deadline is 10 s, and a delivery waiting
/// on the keys should still be answered (with a retryable error) before it.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Google's JWKS is about 2 KiB; anything past 1 MiB is not a key set.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Google ID tokens are about 1 KiB; a longer header is refused before any decoding.
const MAX_TOKEN_BYTES: usize = 16 << 10;

/// How pushes are authenticated; chosen by the operator for the deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushAuthMode {
    /// No check (local use, tests).
    None,
    /// Behind Cloud Run IAM: the platform verified the token; read its claims without the
    /// signature and require `email` in the allow list (and `email_verified` true when present).
    Platform {
        /// Push service accounts whose deliveries are accepted.
        allowed_emails: Vec<String>,
    },
    /// Full verification: RS256 signature against the JWKS (fetched and cached by `kid`),
    /// issuer, audience, expiry, `email` in the allow list and `email_verified == true`.
    Verify {
        /// Push service accounts whose deliveries are accepted.
        allowed_emails: Vec<String>,
        /// The audience configured on the push subscription or trigger (by default the push URL).
        audience: String,
        /// Where the signing keys are published: [`GOOGLE_JWKS_URL`] outside tests.
        jwks_url: String,
    },
}

/// Why a push was refused. Messages name what was wrong and never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushAuthError {
    /// The request has no `Authorization` header.
    #[error(
        "no Authorization header: push deliveries must carry a Google-signed OIDC token \
         (give the push subscription or trigger an authentication service account)"
    )]
    Missing,
    /// The `Authorization` header uses another scheme than `Bearer`.
    #[error("the Authorization header is not a Bearer token")]
    NotBearer,
    /// The token is not a well-formed JWT, or a claim it must have is missing or mistyped.
    #[error("malformed push token: {0}")]
    Malformed(String),
    /// The token is signed with another algorithm than RS256 (including `none` and HMAC).
    #[error("push token uses algorithm {0:?}; only RS256 is accepted")]
    UnsupportedAlgorithm(String),
    /// The RS256 signature does not verify against the key the token names.
    #[error("push token signature does not verify against Google's published key")]
    BadSignature,
    /// The token names a signing key (`kid`) that Google's JWKS does not list.
    #[error("push token names signing key {0:?}, which Google's key set does not list")]
    UnknownKey(String),
    /// `exp` is past, by more than the clock leeway.
    #[error("push token has expired (exp is more than {CLOCK_LEEWAY_SECS} s in the past)")]
    Expired,
    /// `iat` or `nbf` is in the future, by more than the clock leeway.
    #[error(
        "push token is not valid yet (iat or nbf is more than {CLOCK_LEEWAY_SECS} s in the future)"
    )]
    NotYetValid,
    /// `aud` is not the configured audience.
    #[error("push token is for audience {got:?}, not the configured audience")]
    WrongAudience {
        /// The audience the token carries.
        got: String,
    },
    /// `iss` is not Google.
    #[error("push token was issued by {got:?}, not https://accounts.google.com")]
    WrongIssuer {
        /// The issuer the token carries.
        got: String,
    },
    /// `email` is not one of the allowed push service accounts.
    #[error("push token is for {0}, which is not an allowed push service account")]
    EmailNotAllowed(String),
    /// `email_verified` is not true.
    #[error("push token's email is not verified (email_verified is not true)")]
    EmailNotVerified,
    /// Platform mode got a token that still has a signature: the platform did not verify it.
    #[error(
        "push token still has its signature, so no platform verified it: platform mode needs \
         Cloud Run IAM in front of the service (or use verify mode)"
    )]
    SignatureNotRemoved,
    /// Google's signing keys could not be fetched or read; the token was not judged.
    #[error("cannot load Google's signing keys: {0}")]
    Jwks(String),
}

impl PushAuthError {
    /// True when the token was not judged (the keys were unavailable): answer with a status that
    /// makes Pub/Sub redeliver (5xx) rather than one that blames the sender.
    pub fn is_transient(&self) -> bool {
        matches!(self, PushAuthError::Jwks(_))
    }
}

/// The push-authentication check, built once and shared by all requests (cheap to clone).
#[derive(Debug, Clone)]
pub struct PushAuth {
    inner: Arc<Inner>,
}

#[derive(Debug)]
enum Inner {
    None,
    Platform { allowed_emails: Vec<String> },
    Verify(Box<Verifier>),
}

impl PushAuth {
    /// Builds the check for `mode`; `http` is used for JWKS fetches in [`PushAuthMode::Verify`].
    ///
    /// An empty allow list refuses every delivery.
    pub fn new(mode: PushAuthMode, http: reqwest::Client) -> PushAuth {
        let inner = match mode {
            PushAuthMode::None => Inner::None,
            PushAuthMode::Platform { allowed_emails } => Inner::Platform { allowed_emails },
            PushAuthMode::Verify {
                allowed_emails,
                audience,
                jwks_url,
            } => Inner::Verify(Box::new(Verifier::new(
                allowed_emails,
                audience,
                jwks_url,
                http,
            ))),
        };
        PushAuth {
            inner: Arc::new(inner),
        }
    }

    /// `authorization` is the raw Authorization header value, if any. Returns the verified
    /// email (None in mode None).
    pub async fn check(
        &self,
        authorization: Option<&str>,
    ) -> Result<Option<String>, PushAuthError> {
        match &*self.inner {
            Inner::None => Ok(None),
            Inner::Platform { allowed_emails } => {
                let token = Token::parse(bearer_token(authorization)?)?;
                // Cloud Run strips the signature only from tokens it verified. A token that
                // still has one reached us without that check, so its claims prove nothing.
                // (Anyone can write the literal too: this catches a misconfiguration, the IAM
                // binding is what keeps strangers out.)
                if token.signature != SIGNATURE_REMOVED_BY_GOOGLE {
                    return Err(PushAuthError::SignatureNotRemoved);
                }
                let claims: Claims = decode_segment(token.payload, "payload")?;
                let email = allowed_email(&claims, allowed_emails)?;
                // The platform authenticated the token; what is left is authorising the
                // account, so a missing email_verified is not held against it, a false one is.
                if claims.email_verified.as_ref().is_some_and(|v| !v.is_true()) {
                    return Err(PushAuthError::EmailNotVerified);
                }
                Ok(Some(email))
            }
            Inner::Verify(verifier) => verifier
                .verify(bearer_token(authorization)?)
                .await
                .map(Some),
        }
    }
}

/// Full verification of Google-signed tokens.
#[derive(Debug)]
struct Verifier {
    allowed_emails: Vec<String>,
    audience: String,
    /// Signature and algorithm only: the claims are checked by hand afterwards so that each
    /// failure gets its own error (jsonwebtoken reports a bare `InvalidAudience`) and `iat`
    /// gets the leeway too (jsonwebtoken checks only `exp` and `nbf`).
    validation: Validation,
    keys: KeyCache,
}

impl Verifier {
    fn new(
        allowed_emails: Vec<String>,
        audience: String,
        jwks_url: String,
        http: reqwest::Client,
    ) -> Verifier {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        Verifier {
            allowed_emails,
            audience,
            validation,
            keys: KeyCache::new(jwks_url, http),
        }
    }

    async fn verify(&self, raw: &str) -> Result<String, PushAuthError> {
        let token = Token::parse(raw)?;
        let header: JwtHeader = decode_segment(token.header, "header")?;
        // Decide the algorithm before touching any key: `none` and HS256 signed with the
        // public key as HMAC secret are the classic forgeries.
        if header.alg != "RS256" {
            return Err(PushAuthError::UnsupportedAlgorithm(header.alg));
        }
        if token.signature.is_empty() {
            return Err(PushAuthError::Malformed("the signature is empty".into()));
        }
        let kid = header.kid.ok_or_else(|| {
            PushAuthError::Malformed(
                "the header has no kid (key id); Google always sets one".into(),
            )
        })?;
        let key = self.keys.key(&kid).await?;
        let claims = jsonwebtoken::decode::<Claims>(raw, &key, &self.validation)
            .map_err(from_jwt_error)?
            .claims;
        self.check_claims(&claims, unix_now())
    }

    /// The claim checks after the signature has verified; `now` is seconds since the epoch.
    fn check_claims(&self, claims: &Claims, now: u64) -> Result<String, PushAuthError> {
        let iss = claims.iss.as_deref().ok_or_else(|| missing_claim("iss"))?;
        if !GOOGLE_ISSUERS.contains(&iss) {
            return Err(PushAuthError::WrongIssuer {
                got: iss.to_owned(),
            });
        }
        let aud = claims.aud.as_ref().ok_or_else(|| missing_claim("aud"))?;
        if !aud.contains(&self.audience) {
            return Err(PushAuthError::WrongAudience {
                got: aud.describe(),
            });
        }
        let exp = claims.exp.ok_or_else(|| missing_claim("exp"))?;
        if now > exp.saturating_add(CLOCK_LEEWAY_SECS) {
            return Err(PushAuthError::Expired);
        }
        let mut not_before = [claims.iat, claims.nbf].into_iter().flatten();
        if not_before.any(|t| t > now.saturating_add(CLOCK_LEEWAY_SECS)) {
            return Err(PushAuthError::NotYetValid);
        }
        let email = allowed_email(claims, &self.allowed_emails)?;
        if !claims
            .email_verified
            .as_ref()
            .is_some_and(EmailVerified::is_true)
        {
            return Err(PushAuthError::EmailNotVerified);
        }
        Ok(email)
    }
}

/// The token out of `Authorization: Bearer <token>`.
fn bearer_token(authorization: Option<&str>) -> Result<&str, PushAuthError> {
    let value = authorization.map(str::trim).unwrap_or_default();
    if value.is_empty() {
        return Err(PushAuthError::Missing);
    }
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    // RFC 9110 §11.1: the auth scheme is case-insensitive.
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(PushAuthError::NotBearer);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(PushAuthError::Malformed("the Bearer token is empty".into()));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(PushAuthError::Malformed(format!(
            "the token is {} bytes, more than the {MAX_TOKEN_BYTES} accepted",
            token.len()
        )));
    }
    Ok(token)
}

/// The three dot-separated segments of a JWS compact serialization, still encoded.
struct Token<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

impl<'a> Token<'a> {
    fn parse(raw: &'a str) -> Result<Token<'a>, PushAuthError> {
        let mut parts = raw.split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(header), Some(payload), Some(signature), None) => Ok(Token {
                header,
                payload,
                signature,
            }),
            _ => Err(PushAuthError::Malformed(
                "not a JWT (expected header.payload.signature)".into(),
            )),
        }
    }
}

/// Decodes one base64url JSON segment; `what` names it in the error.
fn decode_segment<T: DeserializeOwned>(segment: &str, what: &str) -> Result<T, PushAuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| PushAuthError::Malformed(format!("the {what} is not base64url")))?;
    // serde_json's message names the field and position, never the whole segment.
    serde_json::from_slice(&bytes)
        .map_err(|e| PushAuthError::Malformed(format!("the {what} is not the expected JSON: {e}")))
}

fn missing_claim(name: &str) -> PushAuthError {
    PushAuthError::Malformed(format!("the token has no {name} claim"))
}

/// The token's `email`, if it is one of `allowed` (service-account emails are lower case, but a
/// hand-typed allow list may not be).
fn allowed_email(claims: &Claims, allowed: &[String]) -> Result<String, PushAuthError> {
    let email = claims
        .email
        .as_deref()
        .ok_or_else(|| missing_claim("email"))?;
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(email)) {
        Ok(email.to_owned())
    } else {
        Err(PushAuthError::EmailNotAllowed(email.to_owned()))
    }
}

fn unix_now() -> u64 {
    // A clock before 1970 is a broken host; 0 then makes every token look expired.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn from_jwt_error(err: jsonwebtoken::errors::Error) -> PushAuthError {
    use jsonwebtoken::errors::ErrorKind;
    match err.kind() {
        ErrorKind::InvalidSignature => PushAuthError::BadSignature,
        ErrorKind::InvalidAlgorithm => PushAuthError::UnsupportedAlgorithm("not RS256".into()),
        // The remaining kinds are decoding failures; their messages carry no token bytes.
        _ => PushAuthError::Malformed(format!("the token could not be decoded: {err}")),
    }
}

#[derive(Debug, Deserialize)]
struct JwtHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// The claims of a Google ID token that the check reads.
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<EmailVerified>,
}

/// `aud` is one string in Google's tokens; RFC 7519 §4.1.3 also allows an array.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, expected: &str) -> bool {
        match self {
            Audience::One(a) => a == expected,
            Audience::Many(all) => all.iter().any(|a| a == expected),
        }
    }

    fn describe(&self) -> String {
        match self {
            Audience::One(a) => a.clone(),
            Audience::Many(all) => all.join(", "),
        }
    }
}

/// `email_verified` is a JSON boolean in ID tokens, but Google's tokeninfo renders it as the
/// string "true"; both spellings are read so neither refuses a verified account.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EmailVerified {
    Bool(bool),
    Text(String),
}

impl EmailVerified {
    fn is_true(&self) -> bool {
        match self {
            EmailVerified::Bool(b) => *b,
            EmailVerified::Text(s) => s == "true",
        }
    }
}

/// Google's signing keys by `kid`, fetched on demand and cached for the response's `max-age`.
///
/// Reads take a snapshot (`Arc`) under a short std lock, so concurrent verifications never wait
/// on each other. Fetches happen under a tokio mutex held across the request: it makes the
/// refresh single-flight (twenty deliveries arriving on a cold cache cause one fetch, the
/// others wait and find the new keys) and carries the rate limit for unknown `kid`s.
#[derive(Debug)]
struct KeyCache {
    url: String,
    http: reqwest::Client,
    current: RwLock<Option<Arc<KeySet>>>,
    refresh: tokio::sync::Mutex<RefreshState>,
}

/// One fetched key set and when it stops being fresh.
#[derive(Debug)]
struct KeySet {
    keys: HashMap<String, Arc<DecodingKey>>,
    expires_at: Instant,
}

/// What the last fetch attempt left behind; guarded by the refresh mutex.
#[derive(Debug, Default)]
struct RefreshState {
    last_attempt: Option<Instant>,
    /// The failure of the last attempt, repeated to callers until the next one is allowed.
    last_error: Option<String>,
}

/// What to do for a `kid` given the cache and the refresh state.
#[derive(Debug)]
enum Plan {
    Use(Arc<DecodingKey>),
    Fetch,
    Refuse(PushAuthError),
}

/// Decides between the cached key, a fetch, and a refusal. Pure so the rate limit can be tested
/// with a synthetic clock.
fn plan(current: Option<&KeySet>, state: &RefreshState, kid: &str, now: Instant) -> Plan {
    let fresh = current.filter(|set| now < set.expires_at);
    if let Some(key) = fresh.and_then(|set| set.keys.get(kid)) {
        return Plan::Use(key.clone());
    }
    let may_fetch = state
        .last_attempt
        .is_none_or(|t| now.saturating_duration_since(t) >= MIN_REFETCH_INTERVAL);
    if may_fetch {
        return Plan::Fetch;
    }
    // Fetched less than MIN_REFETCH_INTERVAL ago: answer from that attempt rather than
    // asking Google again, whatever kid the token claims.
    if let Some(err) = &state.last_error {
        return Plan::Refuse(PushAuthError::Jwks(format!(
            "{err} (retrying at most every {} s)",
            MIN_REFETCH_INTERVAL.as_secs()
        )));
    }
    if fresh.is_none() {
        // Unreachable while a successful fetch stays fresh for at least MIN_REFETCH_INTERVAL,
        // but a stale set is never used as a fallback.
        return Plan::Refuse(PushAuthError::Jwks("the cached keys have expired".into()));
    }
    Plan::Refuse(PushAuthError::UnknownKey(kid.to_owned()))
}

impl KeyCache {
    fn new(url: String, http: reqwest::Client) -> KeyCache {
        KeyCache {
            url,
            http,
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
        }
    }

    fn snapshot(&self) -> Option<Arc<KeySet>> {
        // The lock only guards an Arc swap, which cannot be left half done: a poisoned lock
        // still holds a consistent value.
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, PushAuthError> {
        let now = Instant::now();
        if let Some(key) = self
            .snapshot()
            .filter(|set| now < set.expires_at)
            .and_then(|set| set.keys.get(kid).cloned())
        {
            return Ok(key);
        }
        let mut state = self.refresh.lock().await;
        // Whoever held the mutex before us may have just fetched what we need.
        let now = Instant::now();
        match plan(self.snapshot().as_deref(), &state, kid, now) {
            Plan::Use(key) => Ok(key),
            Plan::Refuse(err) => Err(err),
            Plan::Fetch => {
                state.last_attempt = Some(now);
                match self.fetch().await {
                    Ok(set) => {
                        state.last_error = None;
                        let key = set.keys.get(kid).cloned();
                        *self.current.write().unwrap_or_else(PoisonError::into_inner) =
                            Some(Arc::new(set));
                        key.ok_or_else(|| PushAuthError::UnknownKey(kid.to_owned()))
                    }
                    Err(err) => {
                        tracing::warn!(url = %self.url, error = %err, "fetching the JWKS failed");
                        state.last_error = Some(err.clone());
                        Err(PushAuthError::Jwks(err))
                    }
                }
            }
        }
    }

    /// One GET of the JWKS; the error text names the URL and what went wrong.
    async fn fetch(&self) -> Result<KeySet, String> {
        let url = &self.url;
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(JWKS_FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", response.status()));
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let max_age = freshness(
            header(reqwest::header::CACHE_CONTROL).as_deref(),
            header(reqwest::header::AGE).as_deref(),
        );
        let body = read_capped(response, MAX_JWKS_BYTES)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let keys = parse_jwks(&body).map_err(|e| format!("GET {url}: {e}"))?;
        tracing::info!(url = %url, keys = keys.len(), max_age_secs = max_age.as_secs(), "fetched the JWKS");
        Ok(KeySet {
            keys,
            // Counted from the end of the fetch so a slow response does not shorten the
            // lifetime below MIN_REFETCH_INTERVAL.
            expires_at: Instant::now() + max_age,
        })
    }
}

/// The cache lifetime from `Cache-Control: max-age` less `Age` (RFC 9111 §4.2), defaulting to
/// an hour and kept between MIN_REFETCH_INTERVAL and MAX_JWKS_MAX_AGE.
fn freshness(cache_control: Option<&str>, age: Option<&str>) -> Duration {
    let max_age = cache_control.and_then(|cc| {
        cc.split(',').find_map(|directive| {
            let (name, value) = directive.trim().split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("max-age") {
                return None;
            }
            value.trim().trim_matches('"').parse::<u64>().ok()
        })
    });
    let Some(max_age) = max_age else {
        return DEFAULT_JWKS_MAX_AGE;
    };
    let age = age.and_then(|a| a.trim().parse::<u64>().ok()).unwrap_or(0);
    Duration::from_secs(max_age.saturating_sub(age)).clamp(MIN_REFETCH_INTERVAL, MAX_JWKS_MAX_AGE)
}

/// The RS256 signing keys of a JWKS document, by `kid`. Keys of other types or uses are
/// skipped (a key set may grow EC keys); a set with no usable key is an error, so it is not
/// cached for an hour.
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, Arc<DecodingKey>>, String> {
    #[derive(Deserialize)]
    struct Jwks {
        keys: Vec<Jwk>,
    }
    #[derive(Deserialize)]
    struct Jwk {
        #[serde(default)]
        kty: Option<String>,
        #[serde(default)]
        kid: Option<String>,
        #[serde(default)]
        alg: Option<String>,
        #[serde(default, rename = "use")]
        key_use: Option<String>,
        #[serde(default)]
        n: Option<String>,
        #[serde(default)]
        e: Option<String>,
    }

    let jwks: Jwks =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let keys: HashMap<_, _> = jwks
        .keys
        .into_iter()
        .filter(|k| k.kty.as_deref() == Some("RSA"))
        .filter(|k| k.alg.as_deref().is_none_or(|a| a == "RS256"))
        .filter(|k| k.key_use.as_deref().is_none_or(|u| u == "sig"))
        .filter_map(|k| {
            let key = DecodingKey::from_rsa_components(k.n.as_deref()?, k.e.as_deref()?).ok()?;
            Some((k.kid?, Arc::new(key)))
        })
        .collect();
    if keys.is_empty() {
        return Err("the JWKS has no RS256 signing key with a kid".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: serde_json::Value) -> Claims {
        serde_json::from_value(json).unwrap()
    }

    fn verifier() -> Verifier {
        Verifier::new(
            vec!["pusher@p.iam.gserviceaccount.com".into()],
            "https://relay.example/push".into(),
            "http://127.0.0.1:9/certs".into(),
            reqwest::Client::new(),
        )
    }

    const NOW: u64 = 1_800_000_000;

    fn good() -> serde_json::Value {
        serde_json::json!({
            "iss": "https://accounts.google.com",
            "aud": "https://relay.example/push",
            "exp": NOW + 3000,
            "iat": NOW - 600,
            "email": "pusher@p.iam.gserviceaccount.com",
            "email_verified": true,
        })
    }

    fn with(field: &str, value: serde_json::Value) -> Claims {
        let mut c = good();
        c[field] = value;
        claims(c)
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_other_schemes_are_refused() {
        assert_eq!(bearer_token(Some("bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("Bearer  abc ")), Ok("abc"));
        assert_eq!(bearer_token(None), Err(PushAuthError::Missing));
        assert_eq!(bearer_token(Some("  ")), Err(PushAuthError::Missing));
        assert_eq!(
            bearer_token(Some("Basic dXNlcjpwdw==")),
            Err(PushAuthError::NotBearer)
        );
        assert!(matches!(
            bearer_token(Some("Bearer")),
            Err(PushAuthError::Malformed(_))
        ));
        let huge = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert!(matches!(
            bearer_token(Some(&huge)),
            Err(PushAuthError::Malformed(_))
        ));
    }

    #[test]
    fn claim_checks_name_what_is_wrong() {
        let v = verifier();
        assert_eq!(
            v.check_claims(&claims(good()), NOW).as_deref(),
            Ok("pusher@p.iam.gserviceaccount.com")
        );
        assert!(
            v.check_claims(&with("iss", "accounts.google.com".into()), NOW)
                .is_ok()
        );
        assert_eq!(
            v.check_claims(&with("iss", "https://evil.example".into()), NOW),
            Err(PushAuthError::WrongIssuer {
                got: "https://evil.example".into()
            })
        );
        assert_eq!(
            v.check_claims(&with("aud", "https://other.example".into()), NOW),
            Err(PushAuthError::WrongAudience {
                got: "https://other.example".into()
            })
        );
        let list = serde_json::json!(["x", "https://relay.example/push"]);
        assert!(v.check_claims(&with("aud", list), NOW).is_ok());
        assert_eq!(
            v.check_claims(&with("email_verified", "true".into()), NOW)
                .as_deref(),
            Ok("pusher@p.iam.gserviceaccount.com")
        );
        assert_eq!(
            v.check_claims(&with("email_verified", false.into()), NOW),
            Err(PushAuthError::EmailNotVerified)
        );
        let mut unverified = good();
        unverified.as_object_mut().unwrap().remove("email_verified");
        assert_eq!(
            v.check_claims(&claims(unverified), NOW),
            Err(PushAuthError::EmailNotVerified)
        );
        assert_eq!(
            v.check_claims(
                &with("email", "other@p.iam.gserviceaccount.com".into()),
                NOW
            ),
            Err(PushAuthError::EmailNotAllowed(
                "other@p.iam.gserviceaccount.com".into()
            ))
        );
        let mut no_exp = good();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(matches!(
            v.check_claims(&claims(no_exp), NOW),
            Err(PushAuthError::Malformed(m)) if m.contains("exp")
        ));
    }

    #[test]
    fn time_claims_get_sixty_seconds_of_leeway() {
        let v = verifier();
        let exp = |secs_ago: u64| with("exp", (NOW - secs_ago).into());
        assert!(v.check_claims(&exp(59), NOW).is_ok());
        assert!(v.check_claims(&exp(60), NOW).is_ok());
        assert_eq!(v.check_claims(&exp(61), NOW), Err(PushAuthError::Expired));
        assert!(v.check_claims(&with("iat", (NOW + 60).into()), NOW).is_ok());
        assert_eq!(
            v.check_claims(&with("iat", (NOW + 61).into()), NOW),
            Err(PushAuthError::NotYetValid)
        );
        assert_eq!(
            v.check_claims(&with("nbf", (NOW + 61).into()), NOW),
            Err(PushAuthError::NotYetValid)
        );
    }

    #[test]
    fn cache_lifetime_follows_max_age_within_bounds() {
        let h = |s| Duration::from_secs(s);
        assert_eq!(freshness(None, None), DEFAULT_JWKS_MAX_AGE);
        assert_eq!(freshness(Some("no-cache"), None), DEFAULT_JWKS_MAX_AGE);
        assert_eq!(
            freshness(
                Some("public, max-age=19770, must-revalidate, no-transform"),
                None
            ),
            h(19770)
        );
        assert_eq!(
            freshness(Some("public, MAX-AGE=19770"), Some("770")),
            h(19000)
        );
        assert_eq!(freshness(Some("max-age=0"), None), MIN_REFETCH_INTERVAL);
        assert_eq!(freshness(Some("max-age=99999999"), None), MAX_JWKS_MAX_AGE);
    }

    fn key_set(kids: &[&str], expires_at: Instant) -> KeySet {
        let key = Arc::new(DecodingKey::from_rsa_raw_components(
            &[0xc5; 256],
            &[1, 0, 1],
        ));
        KeySet {
            keys: kids.iter().map(|k| (k.to_string(), key.clone())).collect(),
            expires_at,
        }
    }

    #[test]
    fn unknown_kids_refetch_at_most_every_thirty_seconds() {
        let t0 = Instant::now();
        let fetched = RefreshState {
            last_attempt: Some(t0),
            last_error: None,
        };
        let set = key_set(&["k1"], t0 + Duration::from_secs(3600));

        assert!(matches!(
            plan(None, &RefreshState::default(), "k1", t0),
            Plan::Fetch
        ));
        assert!(matches!(plan(Some(&set), &fetched, "k1", t0), Plan::Use(_)));
        // A forged kid right after a fetch is refused without asking Google again...
        let soon = t0 + Duration::from_secs(29);
        assert!(matches!(
            plan(Some(&set), &fetched, "forged", soon),
            Plan::Refuse(PushAuthError::UnknownKey(k)) if k == "forged"
        ));
        // ...and 30 s later an unknown kid may fetch again, so a rotated key is found.
        let later = t0 + MIN_REFETCH_INTERVAL;
        assert!(matches!(
            plan(Some(&set), &fetched, "new", later),
            Plan::Fetch
        ));
    }

    #[test]
    fn expired_keys_are_refetched_and_a_failed_fetch_is_not_retried_for_thirty_seconds() {
        let t0 = Instant::now();
        let stale = key_set(&["k1"], t0);
        let fetched = RefreshState {
            last_attempt: Some(t0 - Duration::from_secs(3600)),
            last_error: None,
        };
        assert!(matches!(
            plan(Some(&stale), &fetched, "k1", t0),
            Plan::Fetch
        ));

        let failed = RefreshState {
            last_attempt: Some(t0),
            last_error: Some("GET x: HTTP 503".into()),
        };
        let soon = t0 + Duration::from_secs(10);
        assert!(matches!(
            plan(Some(&stale), &failed, "k1", soon),
            Plan::Refuse(PushAuthError::Jwks(m)) if m.contains("HTTP 503")
        ));
        assert!(matches!(
            plan(Some(&stale), &failed, "k1", t0 + MIN_REFETCH_INTERVAL),
            Plan::Fetch
        ));
    }

    #[test]
    fn jwks_parsing_keeps_only_rs256_signing_keys() {
        let body = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "a", "alg": "RS256", "use": "sig", "n": "xQ", "e": "AQAB"},
            {"kty": "RSA", "kid": "b", "n": "xQ", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "xQ", "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": "xQ", "e": "AQAB"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "RSA", "n": "xQ", "e": "AQAB"},
            {"kty": "RSA", "kid": "bad", "n": "!!", "e": "AQAB"},
        ]});
        let keys = parse_jwks(body.to_string().as_bytes()).unwrap();
        let mut kids: Vec<_> = keys.keys().map(String::as_str).collect();
        kids.sort();
        assert_eq!(kids, ["a", "b"]);
        assert!(parse_jwks(br#"{"keys": []}"#).is_err());
        assert!(parse_jwks(b"<html>").is_err());
    }
}
