//! The service's router in process, driven with `tower::ServiceExt::oneshot`: the same
//! handlers, relay and registries as `image-relay serve`, without a subprocess or a socket.
//! For what happens to one request (status, body, headers, metrics). Signals, reloads and
//! anything that needs the process stay with [`super::service`].
//!
//! This is the only place that builds the service from its parts: when they change, only
//! [`App::build`] changes.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use serde_json::Value;
use tower::ServiceExt as _;

use image_relay::http::{AppState, app};
use image_relay::push_auth::{PushAuth, PushAuthMode};
use image_relay::registry::endpoints::GoogleApis;
use image_relay::registry::retry::RetryPolicy;
use image_relay::relay::Relay;
use image_relay::rules::RuleSet;
use image_relay::telemetry::Metrics;

use super::service::Delivery;

/// How pushes are authenticated, as `serve --push-auth` chooses.
#[derive(Clone, Debug)]
pub enum PushAuthArg {
    None,
    /// Behind Cloud Run IAM: the token's email is checked, not its signature.
    Platform {
        emails: Vec<String>,
    },
    /// The signature against the key set at `jwks_url`, the audience and the email.
    Verify {
        emails: Vec<String>,
        audience: String,
        jwks_url: String,
    },
}

/// `serve`'s defaults, where the tests do not choose.
const MAX_COPIES: usize = 16;
const JOBS: usize = 8;

/// A response, read whole.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON, `Null` when it is not JSON (or empty, as a 204 is).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The service for one rule set.
pub struct App {
    state: Arc<AppState>,
    router: axum::Router,
}

impl App {
    /// The service for `rules` (a rule file's text) without push authentication.
    pub fn start(rules: &str) -> App {
        App::build(rules, PushAuthArg::None, MAX_COPIES)
    }

    /// The service for `rules` with `push_auth`, allowing `max_copies` copies at once.
    pub fn build(rules: &str, push_auth: PushAuthArg, max_copies: usize) -> App {
        let rules = RuleSet::parse(&[("rules.toml".to_owned(), rules.to_owned())])
            .unwrap_or_else(|errors| panic!("invalid rules: {errors:?}"));
        let metrics = Arc::new(Metrics::new());
        // No test of the router reaches a Google API: closed loopback ports make one that did
        // fail at once instead of leaving the machine.
        let apis = GoogleApis {
            container_analysis: "http://127.0.0.1:9".into(),
            artifact_registry: "http://127.0.0.1:9".into(),
            iam_credentials: "http://127.0.0.1:9".into(),
            binary_authorization: "http://127.0.0.1:9".into(),
            cloud_kms: "http://127.0.0.1:9".into(),
        };
        let relay = Relay::new(rules, apis, JOBS, RetryPolicy::default(), metrics.clone())
            .unwrap_or_else(|e| panic!("relay: {e}"));
        let mode = match push_auth {
            PushAuthArg::None => PushAuthMode::None,
            PushAuthArg::Platform { emails } => PushAuthMode::Platform {
                allowed_emails: emails,
            },
            PushAuthArg::Verify {
                emails,
                audience,
                jwks_url,
            } => PushAuthMode::Verify {
                allowed_emails: emails,
                audience,
                jwks_url,
            },
        };
        let state = Arc::new(AppState {
            relay: Arc::new(relay),
            push_auth: PushAuth::new(mode, reqwest::Client::new()),
            copies: Arc::new(tokio::sync::Semaphore::new(max_copies)),
            metrics,
            ready: AtomicBool::new(true),
            syncing: tokio::sync::Mutex::new(()),
            body_timeout: std::time::Duration::from_secs(10),
            trace_project: None,
        });
        App {
            router: app(state.clone()),
            state,
        }
    }

    /// What SIGTERM does first (src/serve.rs): `/readyz` turns 503 so that no more
    /// deliveries are sent here.
    pub fn begin_shutdown(&self) {
        self.state
            .ready
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    pub async fn request(&self, request: Request<Body>) -> Reply {
        let resp = self
            .router
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|e| match e {});
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("read the response body")
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// POSTs `delivery` to `path` as Google sends it.
    pub async fn post_to(&self, path: &str, delivery: &Delivery) -> Reply {
        let mut req = Request::post(path);
        for (k, v) in &delivery.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        self.request(req.body(Body::from(delivery.body.clone())).unwrap())
            .await
    }

    /// POSTs `delivery` to the push endpoint.
    pub async fn post(&self, delivery: &Delivery) -> Reply {
        self.post_to("/", delivery).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Request::get(path).body(Body::empty()).unwrap())
            .await
    }

    /// The `/metrics` scrape.
    pub async fn metrics(&self) -> String {
        let reply = self.get("/metrics").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.text()
    }
}
