//! The edge: an axum router that turns a push delivery into an [`Event`], hands it to the
//! [`Relay`], and maps the outcome to the one status Pub/Sub and Eventarc act on: 2xx to
//! acknowledge, anything else to redeliver later.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::event::{Decoded, DeliveryMeta, Event, decode_delivery};
use crate::push_auth::PushAuth;
use crate::relay::{Disposition, Relay, TargetStatus};
use crate::telemetry::Metrics;

/// Rejections the 204's reason header lists; the rest are counted. Five rules' reasons fit in
/// well under a kilobyte, whatever the size of the rule set.
const REASON_REJECTIONS: usize = 5;

/// Notifications are a few hundred bytes; anything near this is not one.
pub const MAX_BODY: usize = 1 << 20;

/// Everything the handlers share.
pub struct AppState {
    pub relay: Arc<Relay>,
    pub push_auth: PushAuth,
    /// Copies allowed at once; past it deliveries get 429 so Pub/Sub backs off.
    pub copies: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
    /// False while shutting down: `/readyz` says so.
    pub ready: AtomicBool,
    /// Held while a reconcile runs: one at a time per instance.
    pub syncing: tokio::sync::Mutex<()>,
    /// How long a client may take to send a request's body (a notification is a few hundred
    /// bytes; one that trickles in is holding a copy slot's worth of attention).
    pub body_timeout: std::time::Duration,
    /// Project whose Cloud Trace the delivery's trace id belongs to (`GOOGLE_CLOUD_PROJECT`):
    /// Cloud Logging links a log line to a trace only as `projects/P/traces/ID`.
    pub trace_project: Option<String>,
}

/// The service's routes; tests drive it without a socket.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", post(deliver))
        .route("/sync", post(sync))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// An acknowledgement with nothing to say in a body: a 204 carries none, so `detail` travels
/// in the `x-image-relay-reason` header.
fn no_content(detail: serde_json::Value) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&detail.to_string()) {
        resp.headers_mut().insert("x-image-relay-reason", v);
    }
    resp
}

fn json_reply(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The trace id of the delivery, from W3C `traceparent` (`00-TRACEID-SPANID-FLAGS`) or
/// `X-Cloud-Trace-Context` (`TRACEID/SPANID;o=1`), in the form Cloud Logging links to a trace.
fn trace_id(headers: &HeaderMap, project: Option<&str>) -> Option<String> {
    let id = header_string(headers, "traceparent")
        .and_then(|tp| tp.split('-').nth(1).map(str::to_owned))
        .or_else(|| {
            header_string(headers, "x-cloud-trace-context")
                .and_then(|v| v.split('/').next().map(str::to_owned))
        })
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()))?;
    Some(match project {
        Some(p) => format!("projects/{p}/traces/{id}"),
        None => id,
    })
}

/// The push-token check in front of `/` and `/sync`: the status to refuse with, and why.
/// Keys that cannot be fetched are the relay's problem, not the caller's: 503, retried.
async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(), (StatusCode, crate::push_auth::PushAuthError)> {
    let auth = header_string(headers, header::AUTHORIZATION.as_str());
    state
        .push_auth
        .check(auth.as_deref())
        .await
        .map(|_| ())
        .map_err(|e| {
            let status = if e.is_transient() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::UNAUTHORIZED
            };
            (status, e)
        })
}

/// The request body, at most [`MAX_BODY`] bytes and within the body timeout: 400 when it is
/// larger, 408 when it does not arrive in time (a slow client, or one that sent a length
/// and stopped).
async fn read_body(
    state: &AppState,
    body: Body,
) -> Result<axum::body::Bytes, (StatusCode, String)> {
    match tokio::time::timeout(state.body_timeout, to_bytes(body, MAX_BODY)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err((StatusCode::BAD_REQUEST, "larger than 1 MiB".into())),
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            format!("not received within {} s", state.body_timeout.as_secs_f64()),
        )),
    }
}

/// `POST /sync` (Cloud Scheduler): reconcile, with the options of `image-relay sync` as JSON.
async fn sync(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    if let Err((status, e)) = authorize(&state, &headers).await {
        return json_reply(status, json!({ "error": e.to_string() }));
    }
    let bytes = match read_body(&state, body).await {
        Ok(b) => b,
        Err((status, reason)) => {
            return json_reply(
                status,
                json!({ "error": { "field": "body", "reason": reason } }),
            );
        }
    };
    let opts: crate::reconcile::SyncOptions = if bytes.iter().all(u8::is_ascii_whitespace) {
        Default::default()
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(o) => o,
            Err(e) => {
                return json_reply(
                    StatusCode::BAD_REQUEST,
                    json!({ "error": { "field": "body", "reason": e.to_string() } }),
                );
            }
        }
    };
    let Ok(_running) = state.syncing.try_lock() else {
        return json_reply(
            StatusCode::CONFLICT,
            json!({ "error": "a sync is already running" }),
        );
    };
    let report = crate::reconcile::sync(&state.relay, &opts, Some(&state.copies)).await;
    tracing::info!(
        checked = report.checked,
        copied = report.copied,
        removed = report.removed,
        failed = report.failed,
        "sync finished"
    );
    let status = if report.failed == 0 {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    json_reply(status, serde_json::to_value(&report).unwrap_or_default())
}

async fn deliver(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let trace = trace_id(&headers, state.trace_project.as_deref()).unwrap_or_default();
    if let Err((status, e)) = authorize(&state, &headers).await {
        let outcome = if status == StatusCode::UNAUTHORIZED {
            "unauthorized"
        } else {
            "auth_unavailable"
        };
        tracing::warn!(trace = %trace, error = %e, "push request refused");
        state.metrics.event("unknown", "unknown", outcome);
        return json_reply(status, json!({ "error": e.to_string() }));
    }
    let bytes = match read_body(&state, body).await {
        Ok(b) => b,
        Err((status, reason)) => {
            tracing::error!(trace = %trace, "delivery refused: body {reason}");
            state.metrics.event("unknown", "unknown", "malformed");
            return json_reply(
                status,
                json!({ "error": { "field": "body", "reason": reason } }),
            );
        }
    };
    let meta = DeliveryMeta {
        content_type: header_string(&headers, header::CONTENT_TYPE.as_str()),
        ce_id: header_string(&headers, "ce-id"),
        ce_time: header_string(&headers, "ce-time"),
        pubsub_message_id: header_string(&headers, "x-goog-pubsub-message-id"),
        pubsub_publish_time: header_string(&headers, "x-goog-pubsub-publish-time"),
    };
    let event = match decode_delivery(&meta, &bytes) {
        Ok(Decoded::Event(e)) => e,
        Ok(Decoded::Ignored(i)) => {
            // Understood, and nothing to relay (a pull, a failed request, another service's
            // entry): acknowledged, since a redelivery would only bring the same answer.
            tracing::info!(
                trace = %trace,
                message_id = i.message_id.as_deref().unwrap_or(""),
                field = %i.field,
                "nothing to relay: {}", i.reason
            );
            state
                .metrics
                .event(i.delivery.as_str(), "unknown", "ignored");
            return no_content(json!({ "reason": i.reason, "field": i.field }));
        }
        Err(e) => {
            tracing::error!(
                trace = %trace,
                message_id = e.message_id.as_deref().unwrap_or(""),
                field = %e.field,
                reason = %e.reason,
                "delivery refused: {e}"
            );
            state.metrics.event("unknown", "unknown", "malformed");
            return json_reply(
                StatusCode::BAD_REQUEST,
                json!({ "error": { "field": e.field, "reason": e.reason }, "message_id": e.message_id }),
            );
        }
    };
    handle(&state, event, &trace).await
}

async fn handle(state: &AppState, event: Event, trace: &str) -> Response {
    let message_id = event.message_id.clone().unwrap_or_default();
    let form = event.delivery.as_str();
    let action = event.action.to_string();
    let plan = state.relay.plan(&event);
    if plan.is_empty() {
        let reason = plan.unmatched_reason(&event);
        // The topic carries every push of the project: most events are someone else's.
        tracing::debug!(trace = %trace, message_id = %message_id, source = %event.reference(), "{reason}");
        state.metrics.event(form, &action, "ignored");
        // Contacts no registry; records the decision when a rule watching the source turned
        // the event away.
        state.relay.run(&event, &plan).await;
        // The header is capped at a few KiB by clients and proxies: the first rejections
        // (rules that watch this repository first, they say the most) and how many there were.
        let mut shown: Vec<_> = plan.rejections.iter().collect();
        shown.sort_by_key(|r| r.unwatched());
        shown.truncate(REASON_REJECTIONS);
        return no_content(json!({
            "reason": reason,
            "rejections": shown,
            "rejections_total": plan.rejections.len(),
        }));
    }
    let Ok(_permit) = state.copies.clone().try_acquire_owned() else {
        tracing::warn!(trace = %trace, message_id = %message_id, "too many copies in flight: asking for redelivery");
        state.metrics.event(form, &action, "throttled");
        return json_reply(
            StatusCode::TOO_MANY_REQUESTS,
            json!({ "error": "too many copies in flight", "message_id": message_id }),
        );
    };
    let outcome = state.relay.run(&event, &plan).await;
    for t in &outcome.targets {
        match &t.status {
            TargetStatus::Held { gate, reason } => tracing::warn!(
                trace = %trace, message_id = %message_id, rule = %t.rule, target = %t.target,
                gate = %gate, source = %outcome.source, "held by the {gate} gate: {reason}"
            ),
            TargetStatus::Unsettled { reason } => tracing::warn!(
                trace = %trace, message_id = %message_id, rule = %t.rule, target = %t.target,
                source = %outcome.source, "asking for redelivery: {reason}"
            ),
            TargetStatus::Failed { error, retryable } => tracing::error!(
                trace = %trace, message_id = %message_id, rule = %t.rule, target = %t.target,
                retryable = *retryable, "copy failed: {error}"
            ),
            s => tracing::info!(
                trace = %trace, message_id = %message_id, rule = %t.rule, target = %t.target,
                source = %outcome.source, "{}", s.label()
            ),
        }
    }
    let (status, label) = match outcome.disposition() {
        Disposition::NothingMatched | Disposition::Done => (StatusCode::OK, "done"),
        Disposition::RetryLater => (StatusCode::SERVICE_UNAVAILABLE, "retry"),
        Disposition::FailedPermanently => (StatusCode::OK, "failed"),
    };
    state.metrics.event(form, &action, label);
    json_reply(status, serde_json::to_value(&outcome).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_traceparent_or_the_cloud_header_in_cloud_logging_form() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(
            trace_id(&h, Some("src-proj")).as_deref(),
            Some("projects/src-proj/traces/4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let mut h = HeaderMap::new();
        h.insert(
            "x-cloud-trace-context",
            HeaderValue::from_static("105445aa7843bc8bf206b12000100000/1;o=1"),
        );
        assert_eq!(
            trace_id(&h, None).as_deref(),
            Some("105445aa7843bc8bf206b12000100000")
        );
        let mut h = HeaderMap::new();
        h.insert(
            "x-cloud-trace-context",
            HeaderValue::from_static("not hex/1"),
        );
        assert_eq!(trace_id(&h, None), None);
    }
}
