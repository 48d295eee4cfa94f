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
                .map_err(|e| {
                    AuthError::Credentials(format!("Google application default credentials: {e}"))
                })?;
            *guard = Some(built);
        }
        let creds = guard.as_ref().expect("just built").clone();
        drop(guard);
        match creds.access_token().await {
            Ok(t) => Ok(Secret::new(t.token)),
            Err(e) => {
                *self.creds.lock().await = None;
                Err(AuthError::Google {
                    transient: e.is_transient(),
                    detail: format!("Google access token: {e}"),
                })
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
    /// Tokens of `identity`, or of the service account it may `impersonate` through the IAM
    /// Credentials API at `iam_credentials`.
    pub fn new(
        identity: Arc<GoogleIdentity>,
        impersonate: Option<String>,
        iam_credentials: &str,
        http: reqwest::Client,
    ) -> Self {
        GoogleCredentials {
            identity,
            impersonate: impersonate.map(|email| Impersonation {
                email,
                base: iam_credentials.to_owned(),
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
        let service = format!("impersonating {}: IAM Credentials", self.email);
        let body = serde_json::json!({ "scope": [CLOUD_PLATFORM], "lifetime": "3600s" });
        let sent = self
            .http
            .post(&url)
            .bearer_auth(own.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await;
        let text = AuthError::answer(
            &service,
            sent,
            Some("the relay's account needs roles/iam.serviceAccountTokenCreator on it"),
        )
        .await?;
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Generated {
            access_token: String,
            expire_time: String,
        }
        let g: Generated = match serde_json::from_slice(&text) {
            Ok(g) => g,
            Err(e) => {
                return Err(AuthError::Answer {
                    service,
                    detail: format!("unexpected answer: {e}"),
                });
            }
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An IAM Credentials fake answering every request with `status` and `body`.
    async fn impersonation(status: u16, body: &'static str) -> Impersonation {
        let app = axum::Router::new().fallback(move || async move {
            (axum::http::StatusCode::from_u16(status).unwrap(), body)
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        Impersonation {
            email: "partner@p.iam.gserviceaccount.com".into(),
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            cached: Mutex::new(None),
        }
    }

    #[tokio::test]
    async fn iam_credentials_keeps_its_status_and_hints_at_the_role_only_on_a_refusal() {
        let own = Secret::new("own");
        let e = impersonation(503, "").await.token(&own).await.unwrap_err();
        assert_eq!(e.status(), Some(503));
        assert!(e.is_retryable() && !e.is_denied(), "{e}");
        assert!(!e.to_string().contains("roles/"), "{e}");

        let e = impersonation(403, "").await.token(&own).await.unwrap_err();
        assert!(!e.is_retryable() && e.is_denied(), "{e}");
        assert_eq!(
            e.to_string(),
            "impersonating partner@p.iam.gserviceaccount.com: IAM Credentials answered HTTP 403 \
             (the relay's account needs roles/iam.serviceAccountTokenCreator on it)"
        );

        let e = impersonation(200, "{}")
            .await
            .token(&own)
            .await
            .unwrap_err();
        assert!(!e.is_retryable(), "{e}");
        assert!(e.to_string().contains("unexpected answer"), "{e}");
    }
}
