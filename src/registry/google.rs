//! Google credentials for registries: Application Default Credentials (the metadata server on
//! Cloud Run and GCE, a key file in `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's user
//! credentials) through `google-cloud-auth`, optionally exchanged for a token of another
//! service account (`impersonate`) so a partner can grant access to an account it controls.
//!
//! Artifact Registry and Container Registry take the access token as the password of the
//! fixed user `oauth2accesstoken`, directly or in their token exchange.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use google_cloud_auth::credentials::{AccessTokenCredentials, Builder};
use tokio::sync::Mutex;

use super::auth::{AuthError, BoxFuture, Credential, CredentialSource, Secret};

/// The scope registries need; IAM decides what the token may actually do.
const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Where IAM Credentials lives; overridable so tests can run a fake on loopback.
pub const IAM_CREDENTIALS_URL_ENV: &str = "RELAY_IAM_CREDENTIALS_URL";
const IAM_CREDENTIALS_URL: &str = "https://iamcredentials.googleapis.com";
/// Impersonated tokens are renewed this long before they expire, so a token handed to a long
/// blob upload does not expire half-way through the exchange that uses it.
const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// The relay's own Google identity, shared by every registry that uses it.
#[derive(Default)]
pub struct GoogleIdentity {
    // Built lazily: google-cloud-auth must be built inside a Tokio runtime. Rebuilt after an
    // error, because a non-transient refresh error ends the crate's background refresh for good.
    creds: Mutex<Option<AccessTokenCredentials>>,
}

impl std::fmt::Debug for GoogleIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GoogleIdentity")
    }
}

impl GoogleIdentity {
    /// A current access token of the relay's own identity.
    pub async fn access_token(&self) -> Result<Secret, AuthError> {
        let mut guard = self.creds.lock().await;
        if guard.is_none() {
            let built = Builder::default()
                .with_scopes([CLOUD_PLATFORM])
                .build_access_token_credentials()
                .map_err(|e| AuthError(format!("Google application default credentials: {e}")))?;
            *guard = Some(built);
        }
        let creds = guard.as_ref().expect("just built").clone();
        drop(guard);
        match creds.access_token().await {
            Ok(t) => Ok(Secret::new(t.token)),
            Err(e) => {
                *self.creds.lock().await = None;
                Err(AuthError(format!("Google access token: {e}")))
            }
        }
    }
}

/// Credentials for one registry with `auth = "google"`.
#[derive(Debug)]
pub struct GoogleCredentials {
    identity: Arc<GoogleIdentity>,
    impersonate: Option<Impersonation>,
}

impl GoogleCredentials {
    pub fn new(
        identity: Arc<GoogleIdentity>,
        impersonate: Option<String>,
        http: reqwest::Client,
    ) -> Self {
        GoogleCredentials {
            identity,
            impersonate: impersonate.map(|email| Impersonation {
                email,
                base: std::env::var(IAM_CREDENTIALS_URL_ENV)
                    .unwrap_or_else(|_| IAM_CREDENTIALS_URL.to_owned()),
                http,
                cached: Mutex::new(None),
            }),
        }
    }
}

impl CredentialSource for GoogleCredentials {
    fn credential(&self) -> BoxFuture<'_, Result<Credential, AuthError>> {
        Box::pin(async move {
            let own = self.identity.access_token().await?;
            let token = match &self.impersonate {
                None => own,
                Some(imp) => imp.token(&own).await?,
            };
            Ok(Credential::Basic {
                username: "oauth2accesstoken".to_owned(),
                password: token,
            })
        })
    }
}

/// IAM Credentials `generateAccessToken` for a service account the relay may impersonate
/// (it needs `roles/iam.serviceAccountTokenCreator` on it).
struct Impersonation {
    email: String,
    base: String,
    http: reqwest::Client,
    cached: Mutex<Option<(Secret, Instant)>>,
}

impl std::fmt::Debug for Impersonation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Impersonation")
            .field("email", &self.email)
            .finish()
    }
}

impl Impersonation {
    async fn token(&self, own: &Secret) -> Result<Secret, AuthError> {
        let mut cached = self.cached.lock().await;
        if let Some((t, renew_at)) = cached.as_ref()
            && Instant::now() < *renew_at
        {
            return Ok(t.clone());
        }
        let url = format!(
            "{}/v1/projects/-/serviceAccounts/{}:generateAccessToken",
            self.base.trim_end_matches('/'),
            self.email
        );
        let body = serde_json::json!({ "scope": [CLOUD_PLATFORM], "lifetime": "3600s" });
        let resp = self
            .http
            .post(&url)
            .bearer_auth(own.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| AuthError(format!("impersonating {}: {e}", self.email)))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(AuthError(format!(
                "impersonating {}: IAM Credentials answered HTTP {} (the relay's account needs roles/iam.serviceAccountTokenCreator on it)",
                self.email,
                status.as_u16()
            )));
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Generated {
            access_token: String,
            expire_time: String,
        }
        let g: Generated = serde_json::from_str(&text).map_err(|e| {
            AuthError(format!(
                "impersonating {}: unexpected answer: {e}",
                self.email
            ))
        })?;
        let lifetime = humantime::parse_rfc3339_weak(&g.expire_time)
            .ok()
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::ZERO);
        let token = Secret::new(g.access_token);
        *cached = Some((
            token.clone(),
            Instant::now() + lifetime.saturating_sub(RENEW_BEFORE_EXPIRY),
        ));
        Ok(token)
    }
}
