//! A loopback reverse proxy in front of one upstream registry, recording
//! every request and injecting faults.
//!
//! Bodies are streamed both ways (axum body -> reqwest stream body, reqwest
//! response stream -> axum body), so 300 MB blobs pass with constant memory.
//! Redirects from upstream are passed to the client, never followed.
//!
//! Fault counting ("the first `times` requests") counts every request the
//! proxy receives after `start`/`set_fault`, whatever its path or method.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::task::JoinHandle;

/// Path prefix on which the proxy serves the targets of
/// [`Fault::RedirectBlobsRelative`]: `/download/v2/...` is forwarded
/// upstream as `/v2/...`. Always active, whatever the fault.
pub const DOWNLOAD_PREFIX: &str = "/download";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Pass everything through; just record.
    None,
    /// On a 200 `GET /v2/<repo>/blobs/sha256:...`, flip (xor 0xff) the byte
    /// at `offset` of the streamed body. Content-Length is kept, so only a
    /// digest check can notice. Every such GET is corrupted until the fault
    /// is changed; 206 range responses are left alone.
    CorruptBlobByte { offset: u64 },
    /// Answer the first `times` requests with 429 + `Retry-After:
    /// retry_after` (and an OCI TOOMANYREQUESTS body), then pass through.
    TooManyRequests { times: usize, retry_after: String },
    /// Answer the first `times` requests with 503, then pass through.
    ServerError { times: usize },
    /// POST/PUT/PATCH/DELETE get 403 with an OCI `DENIED` error body.
    RefuseWrites,
    /// `GET /v2/<repo>/blobs/<digest>` gets `307` with an absolute
    /// `Location: http://<to><same path>?X-Test-Signature=1` (like a
    /// presigned storage URL; the query checks the client keeps it). `to` is
    /// `host:port`: another [`Proxy`] (to record what the client sends
    /// there) or the upstream itself. HEAD passes through.
    RedirectBlobs { to: String },
    /// Like `RedirectBlobs` but with a relative `Location:
    /// /download/v2/<repo>/blobs/<digest>` served by this same proxy (see
    /// [`DOWNLOAD_PREFIX`]).
    RedirectBlobsRelative,
    /// Like Artifact Registry: an upload session accepts one PATCH; any
    /// further PATCH to the same upload path gets 416 with an OCI
    /// `BLOB_UPLOAD_INVALID` body. So a client must upload a blob in one
    /// PATCH + PUT, or one monolithic PUT.
    RejectChunkedUploads,
    /// The first `PUT .../manifests/<reference>` gets 400 with this OCI error `code` (say
    /// `MANIFEST_BLOB_UNKNOWN`, as a registry answers when children it needs are missing);
    /// later ones pass through.
    RejectManifestOnce { reference: String, code: String },
    /// A registry quota: `per_second` requests a second are admitted (a token bucket holding
    /// `burst`), the rest answered 429 with `Retry-After: 1`.
    Quota { per_second: u32, burst: u32 },
}

/// Which requests an armed fault ([`Proxy::arm`]) applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matcher {
    /// `PUT`, `DELETE`, ...; any method when `None`.
    pub method: Option<Method>,
    /// A substring of the path and query.
    pub path_contains: String,
    /// Only manifests addressed by tag (`/manifests/<tag>`, not `/manifests/sha256:...`).
    pub tags_only: bool,
}

impl Matcher {
    /// A manifest PUT by tag: a tag write.
    pub fn tag_put() -> Matcher {
        Matcher {
            method: Some(Method::PUT),
            path_contains: "/manifests/".into(),
            tags_only: true,
        }
    }

    /// Requests with this method whose path contains `path`.
    pub fn new(method: Method, path: &str) -> Matcher {
        Matcher {
            method: Some(method),
            path_contains: path.into(),
            tags_only: false,
        }
    }

    fn matches(&self, method: &Method, path_and_query: &str) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method)
            || !path_and_query.contains(&self.path_contains)
        {
            return false;
        }
        if self.tags_only {
            let path = path_and_query.split('?').next().unwrap_or("");
            return path
                .rsplit_once("/manifests/")
                .is_some_and(|(_, r)| !r.contains(':'));
        }
        true
    }
}

/// What an armed fault does to a request it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Injected {
    /// Hold the request this long, then pass it on: it reaches the registry late, after
    /// whatever others sent meanwhile.
    Hold(std::time::Duration),
    /// Answer with this status (and `Retry-After`, when given) instead of the registry.
    Answer {
        status: u16,
        retry_after: Option<String>,
    },
    /// Pass the request on and flip the byte at `offset` of the answer's body (a bit flipped
    /// in transit: the length is right, only a digest check notices).
    CorruptByte { offset: u64 },
}

struct Armed {
    when: Matcher,
    then: Injected,
    /// Requests it still applies to.
    left: usize,
    hits: usize,
}

/// One request as seen by the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query as received (e.g. `/v2/repo/blobs/uploads/x?_state=..`).
    pub path: String,
    /// Whether the client sent an `Authorization` header (of any scheme).
    pub authorization: bool,
    /// Status the proxy answered with (502 if upstream was unreachable).
    pub status: u16,
}

pub struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    server: JoinHandle<()>,
}

struct ProxyState {
    upstream: String,
    /// `http://127.0.0.1:PORT` of this proxy, for Location rewriting.
    self_url: String,
    client: reqwest::Client,
    /// Authorization added upstream when the client sent none (emulates a
    /// presigned storage host in front of an auth registry).
    inject_auth: Option<HeaderValue>,
    /// When set, the proxy plays a registry with the distribution token flow.
    token_auth: Option<TokenAuth>,
    inner: Mutex<Inner>,
}

/// The token flow of the distribution spec, as a token-auth registry runs it: `/v2/` requests
/// without a token that covers their repository and action get `401` with a `Bearer`
/// challenge; `GET /token?service=..&scope=..` with the right Basic credentials issues one.
struct TokenAuth {
    /// The Basic header `GET /token` must carry (`None`: that login is refused).
    basic: Option<String>,
    /// The refresh token `POST /token` accepts in an OAuth2 `refresh_token` grant.
    refresh_token: Option<String>,
    /// token -> granted scopes (`repository:NAME:pull,push`).
    granted: Mutex<HashMap<String, Vec<String>>>,
    /// Scopes asked for, one entry per token request.
    requests: Mutex<Vec<Vec<String>>>,
}

struct Inner {
    fault: Fault,
    /// Faults armed for a number of matching requests, on top of `fault`; the first one that
    /// matches and has requests left applies.
    armed: Vec<Armed>,
    /// Requests answered by a counted fault (429/503) so far.
    faulted: usize,
    /// Token bucket of `Quota`: tokens, and when they were counted.
    tokens: Option<(f64, std::time::Instant)>,
    /// PATCH count per upload path, for `RejectChunkedUploads`.
    patches: HashMap<String, usize>,
    log: Vec<RecordedRequest>,
}

/// What the handler does with a request, decided under the lock.
enum Action {
    Forward {
        upstream_path: String,
        corrupt_at: Option<u64>,
    },
    Answer(Response),
}

impl Proxy {
    /// Proxy on a fresh 127.0.0.1 port in front of `upstream_host`
    /// (`127.0.0.1:PORT`).
    pub async fn start(upstream_host: &str, fault: Fault) -> Proxy {
        Self::start_inner(upstream_host, fault, None).await
    }

    /// Like [`Proxy::start`], but requests that arrive without an
    /// Authorization header are sent upstream with basic `user:pass`.
    /// Use it as the redirect target of [`Fault::RedirectBlobs`] in front of
    /// an auth registry: it plays a storage host that needs no client
    /// credentials, while `requests()` still shows what the client sent.
    pub async fn start_injecting_auth(
        upstream_host: &str,
        fault: Fault,
        user: &str,
        pass: &str,
    ) -> Proxy {
        let token = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{user}:{pass}"),
        );
        let value = HeaderValue::from_str(&format!("Basic {token}")).expect("valid header value");
        Self::start_inner(upstream_host, fault, Some(value)).await
    }

    /// A token-auth registry in front of `upstream_host`: the client must log in to the
    /// proxy's `/token` realm with `user:pass` and present a bearer token per scope.
    pub async fn start_token_auth(upstream_host: &str, user: &str, pass: &str) -> Proxy {
        let basic = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{user}:{pass}")
            )
        );
        let auth = TokenAuth {
            basic: Some(basic),
            refresh_token: None,
            granted: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
        };
        Self::start_full(upstream_host, Fault::None, None, Some(auth)).await
    }

    /// A token-auth registry whose token service only accepts an OAuth2 `refresh_token`
    /// grant (`POST /token`) with this refresh token: what a Docker config `identitytoken` is.
    pub async fn start_token_auth_refresh(upstream_host: &str, refresh_token: &str) -> Proxy {
        let auth = TokenAuth {
            basic: None,
            refresh_token: Some(refresh_token.to_string()),
            granted: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
        };
        Self::start_full(upstream_host, Fault::None, None, Some(auth)).await
    }

    /// Scopes of every token request so far (token-auth proxies only).
    pub fn token_requests(&self) -> Vec<Vec<String>> {
        self.state
            .token_auth
            .as_ref()
            .map(|t| t.requests.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    async fn start_inner(
        upstream_host: &str,
        fault: Fault,
        inject_auth: Option<HeaderValue>,
    ) -> Proxy {
        Self::start_full(upstream_host, fault, inject_auth, None).await
    }

    async fn start_full(
        upstream_host: &str,
        fault: Fault,
        inject_auth: Option<HeaderValue>,
        token_auth: Option<TokenAuth>,
    ) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy on 127.0.0.1:0");
        let addr = listener.local_addr().expect("proxy local_addr");
        let client = reqwest::Client::builder()
            // The client must see upstream redirects itself.
            .redirect(reqwest::redirect::Policy::none())
            // No pooled connections: after a registry restart a stale
            // pooled connection would turn into a spurious error.
            .pool_max_idle_per_host(0)
            .build()
            .expect("build proxy upstream client");
        let state = Arc::new(ProxyState {
            upstream: upstream_host.to_string(),
            self_url: format!("http://{addr}"),
            client,
            inject_auth,
            token_auth,
            inner: Mutex::new(Inner {
                fault,
                armed: Vec::new(),
                tokens: None,
                faulted: 0,
                patches: HashMap::new(),
                log: Vec::new(),
            }),
        });
        let app = Router::new()
            .fallback(handle)
            // Blobs can be hundreds of MB; the handler streams them anyway.
            .layer(DefaultBodyLimit::disable())
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            // Only ends on an accept error or when aborted on Drop.
            let _ = axum::serve(listener, app).await;
        });
        Proxy {
            addr,
            state,
            server,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Replace the fault; resets the 429/503 and PATCH counters.
    pub fn set_fault(&self, fault: Fault) {
        let mut inner = self.state.lock();
        inner.fault = fault;
        inner.faulted = 0;
        inner.patches.clear();
    }

    /// Apply `then` to the next `times` requests that match `when`; returns a handle for
    /// [`Proxy::hits`].
    pub fn arm(&self, when: Matcher, then: Injected, times: usize) -> usize {
        let mut inner = self.state.lock();
        inner.armed.push(Armed {
            when,
            then,
            left: times,
            hits: 0,
        });
        inner.armed.len() - 1
    }

    /// Requests the armed fault `id` has applied to so far.
    pub fn hits(&self, id: usize) -> usize {
        self.state.lock().armed.get(id).map_or(0, |a| a.hits)
    }

    /// Wait (up to 30 s) until the armed fault `id` has applied to `n` requests.
    pub async fn wait_hits(&self, id: usize, n: usize) {
        for _ in 0..3000 {
            if self.hits(id) >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!(
            "armed fault {id} applied to {} of {n} requests",
            self.hits(id)
        );
    }

    /// Requests so far, in the order their responses started.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().log.clone()
    }

    pub fn reset_requests(&self) {
        self.state.lock().log.clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Stops accepting; connections in flight end with the runtime.
        self.server.abort();
    }
}

impl ProxyState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not hide the log from other asserts.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, method: &Method, path: &str, authorization: bool, status: StatusCode) {
        self.lock().log.push(RecordedRequest {
            method: method.to_string(),
            path: path.to_string(),
            authorization,
            status: status.as_u16(),
        });
    }

    /// The armed fault for this request, if one applies (it is counted).
    fn armed(&self, method: &Method, path_and_query: &str) -> Option<Injected> {
        let mut inner = self.lock();
        let a = inner
            .armed
            .iter_mut()
            .find(|a| a.left > 0 && a.when.matches(method, path_and_query))?;
        a.left -= 1;
        a.hits += 1;
        Some(a.then.clone())
    }

    fn decide(&self, method: &Method, path_and_query: &str) -> Action {
        let path = path_and_query.split('?').next().unwrap_or("");
        if let Some(rest) = path_and_query.strip_prefix(DOWNLOAD_PREFIX)
            && rest.starts_with("/v2/")
        {
            return Action::Forward {
                upstream_path: rest.to_string(),
                corrupt_at: None,
            };
        }
        let blob_get = *method == Method::GET && is_blob_path(path);
        let forward = |corrupt_at| Action::Forward {
            upstream_path: path_and_query.to_string(),
            corrupt_at,
        };
        let mut inner = self.lock();
        match inner.fault.clone() {
            Fault::None => forward(None),
            Fault::CorruptBlobByte { offset } => forward(blob_get.then_some(offset)),
            Fault::TooManyRequests { times, retry_after } if inner.faulted < times => {
                inner.faulted += 1;
                let mut resp = oci_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TOOMANYREQUESTS",
                    "rate limited by test proxy",
                );
                if let Ok(v) = HeaderValue::from_str(&retry_after) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
                Action::Answer(resp)
            }
            Fault::ServerError { times } if inner.faulted < times => {
                inner.faulted += 1;
                Action::Answer(oci_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "unavailable (test proxy)",
                ))
            }
            Fault::TooManyRequests { .. } | Fault::ServerError { .. } => forward(None),
            Fault::RefuseWrites
                if matches!(
                    *method,
                    Method::POST | Method::PUT | Method::PATCH | Method::DELETE
                ) =>
            {
                Action::Answer(oci_error(
                    StatusCode::FORBIDDEN,
                    "DENIED",
                    "writes refused by test proxy",
                ))
            }
            Fault::RefuseWrites => forward(None),
            Fault::RedirectBlobs { to } if blob_get => {
                let sep = if path_and_query.contains('?') {
                    '&'
                } else {
                    '?'
                };
                Action::Answer(redirect(&format!(
                    "http://{to}{path_and_query}{sep}X-Test-Signature=1"
                )))
            }
            Fault::RedirectBlobsRelative if blob_get => {
                Action::Answer(redirect(&format!("{DOWNLOAD_PREFIX}{path_and_query}")))
            }
            Fault::RedirectBlobs { .. } | Fault::RedirectBlobsRelative => forward(None),
            Fault::RejectChunkedUploads
                if *method == Method::PATCH && path.contains("/blobs/uploads/") =>
            {
                let n = inner.patches.entry(path.to_string()).or_insert(0);
                *n += 1;
                if *n > 1 {
                    Action::Answer(oci_error(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "BLOB_UPLOAD_INVALID",
                        "chunked uploads not supported (test proxy): one PATCH per session",
                    ))
                } else {
                    forward(None)
                }
            }
            Fault::RejectChunkedUploads => forward(None),
            Fault::RejectManifestOnce { reference, code }
                if *method == Method::PUT
                    && inner.faulted == 0
                    && path.ends_with(&format!("/manifests/{reference}")) =>
            {
                inner.faulted += 1;
                Action::Answer(oci_error(
                    StatusCode::BAD_REQUEST,
                    &code,
                    "refused once by test proxy",
                ))
            }
            Fault::RejectManifestOnce { .. } => forward(None),
            Fault::Quota { per_second, burst } => {
                let (per_second, burst) = (f64::from(per_second), f64::from(burst));
                let now = std::time::Instant::now();
                let (tokens, at) = inner.tokens.unwrap_or((burst, now));
                let tokens =
                    (tokens + now.duration_since(at).as_secs_f64() * per_second).min(burst);
                if tokens >= 1.0 {
                    inner.tokens = Some((tokens - 1.0, now));
                    forward(None)
                } else {
                    inner.tokens = Some((tokens, now));
                    inner.faulted += 1;
                    let mut resp = oci_error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TOOMANYREQUESTS",
                        "quota exceeded (test proxy)",
                    );
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    Action::Answer(resp)
                }
            }
        }
    }

    async fn forward(
        &self,
        req: Request,
        upstream_path: &str,
        corrupt_at: Option<u64>,
    ) -> Response {
        let (parts, body) = req.into_parts();
        let mut headers = strip_hop_by_hop(&parts.headers);
        if let Some(auth) = &self.inject_auth
            && !headers.contains_key(header::AUTHORIZATION)
        {
            headers.insert(header::AUTHORIZATION, auth.clone());
        }
        // Attach a body only when the client sent one: a stream body on a
        // GET would go out as `Transfer-Encoding: chunked`.
        let content_length = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let has_body = content_length.is_some_and(|n| n > 0)
            || parts.headers.contains_key(header::TRANSFER_ENCODING);
        let url = format!("http://{}{}", self.upstream, upstream_path);
        let mut rb = self
            .client
            .request(parts.method.clone(), url)
            .headers(headers);
        if has_body {
            rb = rb.body(reqwest::Body::wrap_stream(body.into_data_stream()));
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            Err(e) => {
                return oci_error(
                    StatusCode::BAD_GATEWAY,
                    "UNAVAILABLE",
                    &format!("upstream: {e:#}"),
                );
            }
        };
        let status = resp.status();
        let mut out_headers = strip_hop_by_hop(resp.headers());
        if let Some(loc) = out_headers
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
        {
            let upstream_url = format!("http://{}", self.upstream);
            if let Some(rest) = loc.strip_prefix(&upstream_url) {
                let rewritten = format!("{}{rest}", self.self_url);
                if let Ok(v) = HeaderValue::from_str(&rewritten) {
                    out_headers.insert(header::LOCATION, v);
                }
            }
        }
        let stream = resp.bytes_stream();
        let body = match corrupt_at {
            Some(offset) if status == StatusCode::OK => Body::from_stream(corrupt(stream, offset)),
            _ => Body::from_stream(stream),
        };
        let mut out = Response::new(body);
        *out.status_mut() = status;
        // An explicit Content-Length is kept by hyper even for a stream body.
        *out.headers_mut() = out_headers;
        out
    }
}

async fn handle(State(state): State<Arc<ProxyState>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let authorization = req.headers().contains_key(header::AUTHORIZATION);
    if let Some(t) = &state.token_auth
        && method == Method::POST
        && path.split('?').next() == Some("/token")
    {
        let form = axum::body::to_bytes(req.into_body(), 1 << 16)
            .await
            .unwrap_or_default();
        let resp = t.refresh_grant(&form);
        state.record(&method, &path, authorization, resp.status());
        return resp;
    }
    if let Some(t) = &state.token_auth
        && let Some(resp) = t.check(&state.self_url, &method, &path, req.headers())
    {
        state.record(&method, &path, authorization, resp.status());
        return resp;
    }
    let injected = state.armed(&method, &path);
    if let Some(Injected::Hold(d)) = &injected {
        tokio::time::sleep(*d).await;
    }
    if let Some(Injected::Answer {
        status,
        retry_after,
    }) = injected
    {
        let mut body = req.into_body().into_data_stream();
        while let Some(Ok(_)) = body.next().await {}
        let code = match status {
            429 => "TOOMANYREQUESTS",
            s if s >= 500 => "UNAVAILABLE",
            _ => "DENIED",
        };
        let status = StatusCode::from_u16(status).expect("valid status");
        let mut resp = oci_error(status, code, "injected by test proxy");
        if let Some(v) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        state.record(&method, &path, authorization, resp.status());
        return resp;
    }
    let resp = match state.decide(&method, &path) {
        Action::Forward {
            upstream_path,
            corrupt_at,
        } => {
            let corrupt_at = match injected {
                Some(Injected::CorruptByte { offset }) => Some(offset),
                _ => corrupt_at,
            };
            state.forward(req, &upstream_path, corrupt_at).await
        }
        Action::Answer(resp) => {
            // Read the request body before answering: replying while the
            // client is still sending makes it see a reset, not our status.
            let mut body = req.into_body().into_data_stream();
            while let Some(Ok(_)) = body.next().await {}
            resp
        }
    };
    state.record(&method, &path, authorization, resp.status());
    resp
}

/// `/v2/<name>/blobs/sha256:<hex>` (not an upload path).
fn is_blob_path(path: &str) -> bool {
    path.starts_with("/v2/")
        && path
            .rsplit_once("/blobs/")
            .is_some_and(|(_, d)| d.starts_with("sha256:") && !d.contains('/'))
}

fn strip_hop_by_hop(src: &HeaderMap) -> HeaderMap {
    const HOP: [&str; 10] = [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        // Host is set by reqwest from the upstream URL; upstream Locations
        // then point at the upstream and are rewritten on the way back.
        "host",
    ];
    let mut out = src.clone();
    for h in HOP {
        out.remove(HeaderName::from_static(h));
    }
    out
}

fn oci_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errors": [{ "code": code, "message": message }] }).to_string();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn redirect(location: &str) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    let v = HeaderValue::from_str(location).expect("redirect location is a valid header");
    resp.headers_mut().insert(header::LOCATION, v);
    resp
}

/// Pass `stream` through, flipping the byte at absolute `offset`.
fn corrupt<S, E>(stream: S, offset: u64) -> impl futures_util::Stream<Item = Result<Bytes, E>>
where
    S: futures_util::Stream<Item = Result<Bytes, E>>,
{
    let mut pos = 0u64;
    stream.map(move |chunk| {
        chunk.map(|b| {
            let start = pos;
            pos += b.len() as u64;
            if (start..pos).contains(&offset) {
                let mut m = BytesMut::from(&b[..]);
                m[(offset - start) as usize] ^= 0xff;
                m.freeze()
            } else {
                b
            }
        })
    })
}

impl TokenAuth {
    /// A token for `scopes`, in the response field `field` (`token`, or the OAuth2
    /// `access_token`).
    fn issue(&self, scopes: Vec<String>, field: &str) -> Response {
        let mut granted = self.granted.lock().unwrap_or_else(|e| e.into_inner());
        let token = format!("token-{}", granted.len() + 1);
        granted.insert(token.clone(), scopes.clone());
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(scopes);
        let body = serde_json::json!({ field: token, "expires_in": 300 }).to_string();
        Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .expect("token response")
    }

    /// `POST /token` with an OAuth2 `refresh_token` grant (form-encoded; the scopes are one
    /// space-separated `scope` field).
    fn refresh_grant(&self, form: &[u8]) -> Response {
        let pairs: HashMap<String, String> =
            url::form_urlencoded::parse(form).into_owned().collect();
        let field = |k: &str| pairs.get(k).map(String::as_str);
        if field("grant_type") != Some("refresh_token")
            || field("client_id").is_none_or(str::is_empty)
            || field("service") != Some("test-registry")
            || self.refresh_token.is_none()
            || field("refresh_token") != self.refresh_token.as_deref()
        {
            return oci_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "bad refresh_token grant",
            );
        }
        let scopes = field("scope")
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        self.issue(scopes, "access_token")
    }

    /// `Some(response)` when the proxy answers itself (a token, or a 401 challenge); `None`
    /// when the request carries a token that covers it and may go upstream.
    fn check(
        &self,
        self_url: &str,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
    ) -> Option<Response> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let header = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if path == "/token" {
            if self.basic.as_deref() != Some(header) {
                return Some(oci_error(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "bad credentials for the token service",
                ));
            }
            let scopes: Vec<String> = pairs
                .iter()
                .filter(|(k, _)| k == "scope")
                .map(|(_, v)| v.clone())
                .collect();
            return Some(self.issue(scopes, "token"));
        }
        // Which repository and action this request needs.
        let rest = path.strip_prefix("/v2/")?;
        let name = ["/manifests/", "/blobs/", "/tags/", "/referrers/"]
            .iter()
            .filter_map(|k| rest.find(k).map(|i| &rest[..i]))
            .next()
            .unwrap_or("");
        let action = if matches!(*method, Method::GET | Method::HEAD) {
            "pull"
        } else {
            "push"
        };
        let mut needed = Vec::new();
        if !name.is_empty() {
            needed.push((name.to_string(), action));
        }
        if let Some((_, from)) = pairs.iter().find(|(k, _)| k == "from") {
            needed.push((from.clone(), "pull"));
        }
        let ok = header.strip_prefix("Bearer ").is_some_and(|tok| {
            let granted = self.granted.lock().unwrap_or_else(|e| e.into_inner());
            granted.get(tok).is_some_and(|scopes| {
                needed.iter().all(|(repo, act)| {
                    scopes.iter().any(|s| {
                        let mut parts = s.splitn(3, ':');
                        parts.next() == Some("repository")
                            && parts.next() == Some(repo.as_str())
                            && parts
                                .next()
                                .is_some_and(|acts| acts.split(',').any(|a| a == *act))
                    })
                })
            })
        });
        if ok {
            return None;
        }
        let scope = needed
            .first()
            .map(|(r, a)| format!(",scope=\"repository:{r}:{a}\""))
            .unwrap_or_default();
        let mut resp = oci_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        );
        let challenge =
            format!("Bearer realm=\"{self_url}/token\",service=\"test-registry\"{scope}");
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&challenge).expect("challenge header"),
        );
        Some(resp)
    }
}
