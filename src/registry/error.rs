//! One error type for everything a registry can answer, carrying enough to act on it: which
//! registry, repository and object, the HTTP status, the registry's error codes, and whether a
//! retry can help.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::auth::AuthError;
use super::body::BodyError;
pub use super::status::status_is_retryable;

/// What was being done when a registry failed: named in every error.
#[derive(Debug, Clone)]
pub struct Op {
    pub method: &'static str,
    pub registry: Arc<str>,
    pub repository: Arc<str>,
    /// `manifest v1`, `blob sha256:...`, `upload`, `tags`.
    pub object: String,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} on {}/{}",
            self.method, self.object, self.registry, self.repository
        )
    }
}

/// One entry of the distribution spec's error body `{"errors":[{"code":..,"message":..}]}`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ErrorCode {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

fn codes_suffix(codes: &[ErrorCode]) -> String {
    codes
        .iter()
        .map(|c| {
            if c.message.is_empty() {
                format!(" {}", c.code)
            } else {
                format!(" {}: {}", c.code, c.message)
            }
        })
        .collect()
}

/// A failed registry operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The registry answered with an unexpected status.
    #[error("{op}: HTTP {status}{}", codes_suffix(.codes))]
    Status {
        op: Op,
        status: u16,
        codes: Box<[ErrorCode]>,
        /// From `Retry-After`, already capped.
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused or reset, timeout, broken body stream.
    #[error("{op}: {detail}")]
    Transport { op: Op, detail: String },
    /// The bytes did not match their descriptor: never retried, never pushed.
    #[error("{op}: content does not match its descriptor: {detail}")]
    Content { op: Op, detail: String },
    /// The registry broke the protocol (missing header, unparsable answer).
    #[error("{op}: {detail}")]
    Protocol { op: Op, detail: String },
    /// The registry's TLS certificate could not be verified (unknown issuer, wrong name,
    /// expired): not retried, since trying again meets the same certificate.
    #[error("{op}: TLS: the certificate of {} cannot be verified: {detail}", .op.registry)]
    Untrusted { op: Op, detail: String },
    /// Credentials could not be obtained or were refused by the token service. The
    /// [`AuthError`] is kept whole: whether its token service was busy or refusing decides
    /// between retrying and giving up.
    // Boxed: inline, it would make every registry result larger than its other errors do.
    #[error("{op}: authentication failed: {auth}")]
    Auth { op: Op, auth: Box<AuthError> },
    /// The copy engine lost track of this operation's result: a bug, reported as one (never
    /// retried, never taken for success).
    #[error("{op}: internal error: {detail}")]
    Internal { op: Op, detail: String },
}

impl RegistryError {
    pub fn op(&self) -> &Op {
        match self {
            RegistryError::Status { op, .. }
            | RegistryError::Transport { op, .. }
            | RegistryError::Content { op, .. }
            | RegistryError::Protocol { op, .. }
            | RegistryError::Untrusted { op, .. }
            | RegistryError::Auth { op, .. }
            | RegistryError::Internal { op, .. } => op,
        }
    }

    /// HTTP status, when the registry answered. A token service's status is not the
    /// registry's (a 404 from it does not mean the object is missing): that one is in
    /// [`AuthError::status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether trying the same thing again later can succeed on its own: no answer, 408, 429,
    /// 5xx, from the registry or from its token service. 401/403 are not: they need someone to
    /// grant access first.
    pub fn is_retryable(&self) -> bool {
        match self {
            RegistryError::Transport { .. } => true,
            RegistryError::Status { status, .. } => status_is_retryable(*status),
            RegistryError::Auth { auth, .. } => auth.is_retryable(),
            _ => false,
        }
    }

    /// Whether the registry's certificate was refused: someone must renew it or trust its
    /// issuer (`ca_file`), then a later attempt can succeed.
    pub fn is_untrusted(&self) -> bool {
        matches!(self, RegistryError::Untrusted { .. })
    }

    /// Whether the object (or its repository) does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Whether the registry refused access: missing or insufficient permission, or credentials
    /// that could not be had for a reason no retry gets past.
    pub fn is_denied(&self) -> bool {
        matches!(self.status(), Some(401 | 403))
            || matches!(self, RegistryError::Auth { auth, .. } if auth.is_denied())
    }

    /// Whether the registry named this error code (`MANIFEST_BLOB_UNKNOWN`, `DENIED`...).
    pub fn has_code(&self, code: &str) -> bool {
        matches!(self, RegistryError::Status { codes, .. } if codes.iter().any(|c| c.code == code))
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RegistryError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl BodyError {
    /// As a failure of the registry operation `op`: a broken body is a transport failure (a
    /// retry can help), an oversized one a protocol failure (the same answer would come back).
    pub fn for_op(self, op: &Op) -> RegistryError {
        match self {
            BodyError::Read(e) => super::transport(op, &e),
            e @ BodyError::TooLarge { .. } => RegistryError::Protocol {
                op: op.clone(),
                detail: e.to_string(),
            },
        }
    }
}

/// Parse the distribution error body; anything else yields no codes.
pub fn parse_error_body(body: &[u8]) -> Box<[ErrorCode]> {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<ErrorCode>,
    }
    serde_json::from_slice::<Body>(body)
        .map(|b| b.errors.into_boxed_slice())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op() -> Op {
        Op {
            method: "PUT",
            registry: "r.example".into(),
            repository: "team/app".into(),
            object: "manifest v1".into(),
        }
    }

    #[test]
    fn oversized_bodies_fail_the_operation_naming_it_and_the_limit() {
        let op = Op {
            method: "GET",
            registry: "r.example".into(),
            repository: "team/app".into(),
            object: "tags".into(),
        };
        let e = BodyError::TooLarge {
            limit: crate::registry::body::MAX_LISTING_BYTES,
        }
        .for_op(&op);
        assert_eq!(
            e.to_string(),
            "GET tags on r.example/team/app: the body is larger than the limit of 16 MiB"
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn status_errors_name_registry_repository_object_status_and_codes() {
        let e = RegistryError::Status {
            op: op(),
            status: 400,
            codes: parse_error_body(
                br#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown"}]}"#,
            ),
            retry_after: None,
        };
        assert_eq!(
            e.to_string(),
            "PUT manifest v1 on r.example/team/app: HTTP 400 MANIFEST_BLOB_UNKNOWN: blob unknown"
        );
        assert!(e.has_code("MANIFEST_BLOB_UNKNOWN"));
        assert!(!e.is_retryable());
    }

    #[test]
    fn retryable_statuses_are_408_429_and_5xx() {
        for (s, want) in [
            (408, true),
            (429, true),
            (500, true),
            (503, true),
            (401, false),
            (403, false),
            (404, false),
        ] {
            let e = RegistryError::Status {
                op: op(),
                status: s,
                codes: Box::new([]),
                retry_after: None,
            };
            assert_eq!(e.is_retryable(), want, "status {s}");
        }
    }

    #[test]
    fn token_service_failures_are_retryable_or_denied_by_their_status() {
        let auth = |auth: AuthError| RegistryError::Auth {
            op: op(),
            auth: Box::new(auth),
        };
        let status = |status| {
            auth(AuthError::Status {
                service: "token service https://auth.example/token".into(),
                status,
                hint: None,
            })
        };
        for s in [408, 429, 500, 503] {
            let e = status(s);
            assert!(e.is_retryable() && !e.is_denied(), "{e}");
        }
        for s in [400, 401, 403, 404] {
            let e = status(s);
            assert!(!e.is_retryable() && e.is_denied(), "{e}");
            // A 404 from the token service is not a missing manifest.
            assert!(!e.is_not_found(), "{e}");
        }
        assert_eq!(
            status(503).to_string(),
            "PUT manifest v1 on r.example/team/app: authentication failed: \
             token service https://auth.example/token answered HTTP 503"
        );
        let e = auth(AuthError::Credentials("no credentials".into()));
        assert!(!e.is_retryable() && e.is_denied(), "{e}");
        let e = auth(AuthError::Google {
            detail: "Google access token: busy".into(),
            transient: true,
        });
        assert!(e.is_retryable() && !e.is_denied(), "{e}");
    }
}
