//! Calls to the Google APIs beside the registries (Binary Authorization, Container Analysis,
//! Cloud KMS): JSON in and out with the relay's access token, bodies read with a cap, and one
//! error type that knows whether waiting can help.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::registry::body::{BodyError, MAX_ERROR_BODY_BYTES, read_capped};
use crate::registry::status::status_is_retryable;

/// A Google API answer this large is none these calls expect: the largest, a full page of
/// 1000 occurrences, is a few MiB of JSON; the cap bounds what a broken answer can make the
/// relay buffer.
pub const MAX_ANSWER_BYTES: usize = 32 << 20;

/// Google's error messages can quote whole requests; an operator's log line needs the gist.
const MAX_MESSAGE_CHARS: usize = 300;

/// Why a call to a Google API failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// No answer: connection refused or reset, timeout, broken body.
    #[error("{what}: {detail}")]
    Transport { what: String, detail: String },
    /// The API answered with an error status.
    #[error("{what}: HTTP {status}{}{}", message_suffix(.message), .hint.map(|h| format!(": {h}")).unwrap_or_default())]
    Status {
        what: String,
        status: u16,
        /// Google's `error.status` and `error.message`, when the body had them.
        message: String,
        /// What to grant or enable, for a refusal.
        hint: Option<&'static str>,
    },
    /// The answer was not what the API documents.
    #[error("{what}: unexpected answer: {detail}")]
    Protocol { what: String, detail: String },
}

pub(crate) fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(" ({message})")
    }
}

impl ApiError {
    /// Whether trying again later can succeed on its own: no answer, 408, 429, 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Transport { .. } => true,
            ApiError::Status { status, .. } => status_is_retryable(*status),
            ApiError::Protocol { .. } => false,
        }
    }

    /// Whether the API refused the relay's credentials or their permissions: an IAM grant
    /// makes a later attempt succeed.
    pub fn is_denied(&self) -> bool {
        matches!(
            self,
            ApiError::Status {
                status: 401 | 403,
                ..
            }
        )
    }

    /// Whether the object asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Status { status: 404, .. })
    }
}

/// A client for one Google API at a base URL (its production URL, or a fake's in tests).
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    /// Named in refusals: the role or API that is missing when this API says 403.
    hint: &'static str,
}

impl Api {
    pub fn new(http: reqwest::Client, base: &str, hint: &'static str) -> Api {
        Api {
            http,
            base: base.trim_end_matches('/').to_owned(),
            hint,
        }
    }

    /// `GET {base}/{path}?{query}`, the answer parsed as `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, &str)],
        token: &str,
    ) -> Result<T, ApiError> {
        let req = self
            .http
            .get(format!("{}/{path}", self.base))
            .bearer_auth(token)
            .query(query);
        self.call(what, req).await
    }

    /// `POST {base}/{path}` with a JSON body, the answer parsed as `T`.
    pub async fn post<T: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        body: &serde_json::Value,
        token: &str,
    ) -> Result<T, ApiError> {
        let req = self
            .http
            .post(format!("{}/{path}", self.base))
            .bearer_auth(token)
            .json(body);
        self.call(what, req).await
    }

    /// `DELETE {base}/{path}`. What is already gone counts as deleted: another instance may
    /// have deleted it first.
    pub async fn delete(&self, what: &str, path: &str, token: &str) -> Result<(), ApiError> {
        let req = self
            .http
            .delete(format!("{}/{path}", self.base))
            .bearer_auth(token);
        match self.call::<serde_json::Value>(what, req).await {
            Err(e) if e.is_not_found() => Ok(()),
            r => r.map(drop),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let resp = req.send().await.map_err(|e| ApiError::Transport {
            what: what.to_owned(),
            detail: crate::registry::error_chain(&e),
        })?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            // The status decides retry or denial; the body only adds Google's message, so a
            // body that cannot be read costs the message, never the status.
            let body = read_capped(resp, MAX_ERROR_BODY_BYTES)
                .await
                .unwrap_or_default();
            return Err(ApiError::Status {
                what: what.to_owned(),
                status,
                message: error_message(&body),
                hint: matches!(status, 401 | 403).then_some(self.hint),
            });
        }
        let body = match read_capped(resp, MAX_ANSWER_BYTES).await {
            Ok(b) => b,
            Err(BodyError::Read(e)) => {
                return Err(ApiError::Transport {
                    what: what.to_owned(),
                    detail: crate::registry::error_chain(&e),
                });
            }
            Err(e @ BodyError::TooLarge { .. }) => {
                return Err(ApiError::Protocol {
                    what: what.to_owned(),
                    detail: e.to_string(),
                });
            }
        };
        serde_json::from_slice(&body).map_err(|e| ApiError::Protocol {
            what: what.to_owned(),
            detail: e.to_string(),
        })
    }
}

/// `error.status: error.message` of a Google error body, shortened; empty when there is none.
pub fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        message: String,
        #[serde(default)]
        status: String,
    }
    let Ok(b) = serde_json::from_slice::<Body>(body) else {
        return String::new();
    };
    let text = match (b.error.status.is_empty(), b.error.message.is_empty()) {
        (false, false) => format!("{}: {}", b.error.status, b.error.message),
        (false, true) => b.error.status,
        (true, _) => b.error.message,
    };
    if text.chars().count() > MAX_MESSAGE_CHARS {
        let cut: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
        format!("{cut}...")
    } else {
        text
    }
}
