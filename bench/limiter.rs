//! A registry quota on loopback, for the pacing benchmark (`bench/run.sh`, "pacing"): a
//! reverse proxy that admits `--rate` requests per second (a token bucket holding `--burst`
//! of them, one second's worth by default) and answers the rest `429 Too Many Requests` with
//! `Retry-After`, as Artifact Registry does past its quota. Bodies stream both ways.
//!
//!   cargo run --release --example limiter -- --listen 127.0.0.1:5301 \
//!       --upstream 127.0.0.1:5001 --rate 100 [--burst 10]
//!
//! `GET /limiter/stats` answers `{"admitted":N,"refused":M}` and `POST /limiter/reset` zeroes
//! the counts and fills the bucket.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

struct Bucket {
    tokens: f64,
    at: Instant,
    admitted: u64,
    refused: u64,
}

struct Limiter {
    upstream: String,
    rate: f64,
    burst: f64,
    client: reqwest::Client,
    bucket: Mutex<Bucket>,
}

impl Limiter {
    /// Take a token, or say how long until the next one.
    fn admit(&self) -> Result<(), Duration> {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            b.admitted += 1;
            Ok(())
        } else {
            b.refused += 1;
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let listen = arg("--listen").unwrap_or_else(|| "127.0.0.1:5301".into());
    let upstream = arg("--upstream").expect("--upstream HOST:PORT");
    let rate: f64 = arg("--rate")
        .and_then(|r| r.parse().ok())
        .expect("--rate REQUESTS_PER_SECOND");
    let burst: f64 = arg("--burst").and_then(|b| b.parse().ok()).unwrap_or(rate);
    let limiter = Arc::new(Limiter {
        upstream,
        rate,
        burst,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client"),
        bucket: Mutex::new(Bucket {
            tokens: burst,
            at: Instant::now(),
            admitted: 0,
            refused: 0,
        }),
    });
    let app = axum::Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::disable())
        .with_state(limiter);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .expect("bind --listen");
    axum::serve(listener, app).await.expect("serve");
}

async fn handle(State(l): State<Arc<Limiter>>, req: Request) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    match path.as_str() {
        "/limiter/stats" => {
            let b = l.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let body = format!(r#"{{"admitted":{},"refused":{}}}"#, b.admitted, b.refused);
            return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
        }
        "/limiter/reset" => {
            let mut b = l.bucket.lock().unwrap_or_else(|p| p.into_inner());
            *b = Bucket {
                tokens: l.burst,
                at: Instant::now(),
                admitted: 0,
                refused: 0,
            };
            return StatusCode::NO_CONTENT.into_response();
        }
        _ => {}
    }
    if let Err(wait) = l.admit() {
        // Read the body first: answering mid-upload shows the client a reset, not a 429.
        let _ = axum::body::to_bytes(req.into_body(), usize::MAX).await;
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut resp = (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"quota exceeded (bench limiter)"}]}"#,
        )
            .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return resp;
    }
    let (parts, body) = req.into_parts();
    let headers = hop_by_hop_removed(&parts.headers);
    let has_body = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > 0)
        || parts.headers.contains_key(header::TRANSFER_ENCODING);
    let mut rb = l
        .client
        .request(parts.method, format!("http://{}{path}", l.upstream))
        .headers(headers);
    if has_body {
        rb = rb.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("upstream: {e}")).into_response(),
    };
    let status = resp.status();
    let mut headers = hop_by_hop_removed(resp.headers());
    // Upload sessions point at the upstream: keep the client on this proxy.
    if let Some(loc) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) {
        let upstream = format!("http://{}", l.upstream);
        if let Some(rest) = loc.strip_prefix(&upstream)
            && let Ok(v) = HeaderValue::from_str(rest)
        {
            headers.insert(header::LOCATION, v);
        }
    }
    let mut out = Response::new(Body::from_stream(resp.bytes_stream()));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

fn hop_by_hop_removed(src: &HeaderMap) -> HeaderMap {
    let mut out = src.clone();
    for h in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    ] {
        out.remove(h);
    }
    out
}
