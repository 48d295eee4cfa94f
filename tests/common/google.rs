//! The Google APIs the relay calls, faked on one loopback port: the metadata server (access
//! tokens for Application Default Credentials), IAM Credentials (`generateAccessToken`, for
//! impersonation), Container Analysis (`occurrences.list` for the vulnerability gate; notes'
//! occurrences, `occurrences.create` and `occurrences.delete` for attestations), Binary
//! Authorization (attestors), Cloud KMS (`getPublicKey`, `asymmetricSign` over a digest, with
//! keys the fake generates) and the JWKS that push tokens are verified against. Everything else in the tests is real.
//!
//! Each fake answers as the real API does where the relay could tell the difference: the
//! metadata server wants `Metadata-Flavor: Google`, IAM and Container Analysis want a bearer
//! token this fake minted, Container Analysis parses the filter exactly and pages its answers.
//!
//! The relay finds the fakes through the settings [`FakeGoogle::point_at`] sets:
//! `GCE_METADATA_HOST` (which google-cloud-auth honours), `RELAY_IAM_CREDENTIALS_URL`,
//! `RELAY_CONTAINER_ANALYSIS_URL`; push-token checks take [`FakeGoogle::jwks_url`].

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use super::tokens::GOOGLE_KEY;

/// A token the fake handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Minted {
    pub token: String,
    /// The service account it was minted for through IAM Credentials; `None` for the metadata
    /// server's own (the instance's default account).
    pub impersonating: Option<String>,
}

/// What one `occurrences.list` call asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OccurrencesCall {
    pub kind: String,
    pub resource: String,
    pub page_token: Option<String>,
}

/// The fake APIs on 127.0.0.1; stopped on drop.
pub struct FakeGoogle {
    addr: SocketAddr,
    state: Arc<Fake>,
    server: tokio::task::JoinHandle<()>,
}

struct Fake {
    /// Lifetime the metadata server announces for its tokens, in seconds.
    token_lifetime: AtomicU64,
    minted: Mutex<Vec<Minted>>,
    jwks: Value,
    jwks_fetches: AtomicUsize,
    /// The key set endpoint answers 503.
    jwks_failing: AtomicBool,
    /// Each key set answer is held this long (milliseconds).
    jwks_delay_ms: AtomicU64,
    /// Occurrences by resource URL, both kinds mixed, as Grafeas stores them.
    occurrences: Mutex<HashMap<String, Vec<Value>>>,
    /// Occurrences per page; 0 means all on one page.
    page_size: AtomicUsize,
    /// Container Analysis refuses every listing, as for a project without the viewer grant.
    denied: AtomicBool,
    /// Bearer tokens Container Analysis accepts besides those minted here.
    accepted: Mutex<HashSet<String>>,
    /// When set, the only project Container Analysis knows.
    project: Mutex<Option<String>>,
    calls: Mutex<Vec<OccurrencesCall>>,
    /// Binary Authorization attestors by name (`projects/P/attestors/A`).
    attestors: Mutex<HashMap<String, Value>>,
    /// ATTESTATION occurrences, each with its `noteName` and `resourceUri`.
    attestations: Mutex<Vec<Value>>,
    /// Occurrences created through the API, in order.
    created: AtomicUsize,
    /// Occurrences deleted through the API.
    deleted: AtomicUsize,
    /// Creates held until this many have arrived (0: none held), and how many have: a race
    /// of instances made certain.
    hold_creates: AtomicUsize,
    creates_arrived: tokio::sync::watch::Sender<usize>,
    /// Cloud KMS key versions by name, each a P-256 signing key.
    kms_keys: Mutex<HashMap<String, p256::ecdsa::SigningKey>>,
    /// These APIs answer 503 while set.
    binauthz_down: AtomicBool,
    notes_down: AtomicBool,
    kms_down: AtomicBool,
}

impl FakeGoogle {
    /// All the APIs, with hour-long tokens and a key set listing [`GOOGLE_KEY`].
    pub async fn start() -> FakeGoogle {
        let state = Arc::new(Fake {
            token_lifetime: AtomicU64::new(3600),
            minted: Mutex::default(),
            jwks: json!({ "keys": [GOOGLE_KEY.jwk()] }),
            jwks_fetches: AtomicUsize::new(0),
            jwks_failing: AtomicBool::new(false),
            jwks_delay_ms: AtomicU64::new(0),
            occurrences: Mutex::default(),
            page_size: AtomicUsize::new(0),
            denied: AtomicBool::new(false),
            accepted: Mutex::default(),
            project: Mutex::default(),
            calls: Mutex::default(),
            attestors: Mutex::default(),
            attestations: Mutex::default(),
            created: AtomicUsize::new(0),
            deleted: AtomicUsize::new(0),
            hold_creates: AtomicUsize::new(0),
            creates_arrived: tokio::sync::watch::Sender::new(0),
            kms_keys: Mutex::default(),
            binauthz_down: AtomicBool::new(false),
            notes_down: AtomicBool::new(false),
            kms_down: AtomicBool::new(false),
        });
        let router = axum::Router::new()
            .fallback(dispatch)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        FakeGoogle {
            addr,
            state,
            server,
        }
    }

    /// Points a relay process at these fakes, with `home` as its home directory so that no
    /// real credentials of the machine are found instead.
    pub fn point_at(&self, cmd: &mut std::process::Command, home: &Path) {
        cmd.env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env("HOME", home)
            .env("GCE_METADATA_HOST", self.metadata_host())
            .env("RELAY_IAM_CREDENTIALS_URL", self.iam_credentials_url())
            .env(
                "RELAY_CONTAINER_ANALYSIS_URL",
                self.container_analysis_url(),
            )
            .env("RELAY_BINARY_AUTHORIZATION_URL", self.base_url())
            .env("RELAY_CLOUD_KMS_URL", self.base_url());
    }

    /// `http://HOST:PORT`: every fake API answers there.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Binary Authorization lists `attestor` (`projects/P/attestors/A`) with its note and keys
    /// (`pkixPublicKey` entries, as [`pkix_key`] makes them).
    pub fn add_attestor(&self, attestor: &str, note: &str, keys: Vec<Value>) {
        self.state.attestors.lock().unwrap().insert(
            attestor.to_owned(),
            json!({
                "name": attestor,
                "userOwnedGrafeasNote": { "noteReference": note, "publicKeys": keys },
                "updateTime": "2026-11-30T10:00:00Z",
            }),
        );
    }

    /// Container Analysis records an ATTESTATION occurrence on `note` for `resource_url`.
    pub fn add_attestation(&self, note: &str, resource_url: &str, attestation: Value) {
        let mut all = self.state.attestations.lock().unwrap();
        let n = all.len() + 1;
        all.push(json!({
            "name": format!("projects/{}/occurrences/seeded-{n}", project_of_name(note)),
            "kind": "ATTESTATION",
            "noteName": note,
            "resourceUri": resource_url,
            "attestation": attestation,
        }));
    }

    /// The ATTESTATION occurrences on `note` for `resource_url`.
    pub fn attestations(&self, note: &str, resource_url: &str) -> Vec<Value> {
        self.state
            .attestations
            .lock()
            .unwrap()
            .iter()
            .filter(|o| o["noteName"] == note && o["resourceUri"] == resource_url)
            .cloned()
            .collect()
    }

    /// Occurrences created through `occurrences.create` so far.
    pub fn created_occurrences(&self) -> usize {
        self.state.created.load(Ordering::SeqCst)
    }

    /// Occurrences deleted through `occurrences.delete` so far.
    pub fn deleted_occurrences(&self) -> usize {
        self.state.deleted.load(Ordering::SeqCst)
    }

    /// Hold every `occurrences.create` until `n` of them have arrived (for at most 20 s):
    /// `n` instances that each found no attestation all create one.
    pub fn hold_creates_until(&self, n: usize) {
        self.state.hold_creates.store(n, Ordering::SeqCst);
    }

    /// Cloud KMS holds an EC_SIGN_P256_SHA256 key version `name`; returns its public key, PEM.
    pub fn add_kms_key(&self, name: &str) -> String {
        use p256::pkcs8::{EncodePublicKey, LineEnding};
        let key = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        self.state
            .kms_keys
            .lock()
            .unwrap()
            .insert(name.to_owned(), key);
        pem
    }

    /// While `down`, Binary Authorization answers 503.
    pub fn set_binauthz_down(&self, down: bool) {
        self.state.binauthz_down.store(down, Ordering::SeqCst);
    }

    /// While `down`, notes' occurrences (list and create) answer 503.
    pub fn set_notes_down(&self, down: bool) {
        self.state.notes_down.store(down, Ordering::SeqCst);
    }

    /// While `down`, Cloud KMS answers 503.
    pub fn set_kms_down(&self, down: bool) {
        self.state.kms_down.store(down, Ordering::SeqCst);
    }

    /// `HOST:PORT`, as `GCE_METADATA_HOST` takes it.
    pub fn metadata_host(&self) -> String {
        self.addr.to_string()
    }

    pub fn iam_credentials_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn container_analysis_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where the push-token signing keys are published (`--jwks-url`).
    pub fn jwks_url(&self) -> String {
        format!("http://{}/oauth2/v3/certs", self.addr)
    }

    /// Lifetime the metadata server announces for the tokens it mints from now on.
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.state.token_lifetime.store(seconds, Ordering::SeqCst);
    }

    /// Every token minted so far, in order.
    pub fn minted(&self) -> Vec<Minted> {
        self.state.minted.lock().unwrap().clone()
    }

    /// The metadata server's tokens so far, in order.
    pub fn metadata_tokens(&self) -> Vec<String> {
        self.minted()
            .into_iter()
            .filter(|m| m.impersonating.is_none())
            .map(|m| m.token)
            .collect()
    }

    /// The accounts IAM Credentials minted tokens for, one entry a call.
    pub fn impersonations(&self) -> Vec<String> {
        self.minted()
            .into_iter()
            .filter_map(|m| m.impersonating)
            .collect()
    }

    /// Key set fetches so far.
    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// From now on the key set endpoint answers 503 (`true`) or the key set (`false`).
    pub fn set_jwks_failing(&self, failing: bool) {
        self.state.jwks_failing.store(failing, Ordering::SeqCst);
    }

    /// Hold each key set answer `delay`, so that concurrent checks pile up behind one fetch.
    pub fn set_jwks_delay(&self, delay: Duration) {
        self.state
            .jwks_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Container Analysis records `occurrence` for the image at `resource_url`.
    pub fn add_occurrence(&self, resource_url: &str, occurrence: Value) {
        self.state
            .occurrences
            .lock()
            .unwrap()
            .entry(resource_url.to_owned())
            .or_default()
            .push(occurrence);
    }

    /// The scan of the image at `resource_url` is now in `status` (`SCANNING`,
    /// `FINISHED_SUCCESS`...): its discovery occurrence is replaced.
    pub fn set_scan_status(&self, resource_url: &str, status: &str) {
        let mut all = self.state.occurrences.lock().unwrap();
        let list = all.entry(resource_url.to_owned()).or_default();
        list.retain(|o| o["kind"] != "DISCOVERY");
        list.push(discovery_occurrence(resource_url, status));
    }

    /// Container Analysis answers `n` occurrences a page (0: all on one page).
    pub fn set_page_size(&self, n: usize) {
        self.state.page_size.store(n, Ordering::SeqCst);
    }

    /// Container Analysis refuses every listing with 403 (`true`) or answers (`false`).
    pub fn set_denied(&self, denied: bool) {
        self.state.denied.store(denied, Ordering::SeqCst);
    }

    /// Container Analysis also accepts `token`, for callers that bring their own.
    pub fn accept_token(&self, token: &str) {
        self.state.accepted.lock().unwrap().insert(token.to_owned());
    }

    /// Container Analysis knows only `project`: listings under another get 404.
    pub fn only_project(&self, project: &str) {
        *self.state.project.lock().unwrap() = Some(project.to_owned());
    }

    /// The `occurrences.list` calls so far, in order.
    pub fn occurrence_calls(&self) -> Vec<OccurrencesCall> {
        self.state.calls.lock().unwrap().clone()
    }
}

impl Drop for FakeGoogle {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A VULNERABILITY occurrence shaped like Artifact Analysis's (proto3 JSON: a false
/// `fixAvailable` is left out).
pub fn vulnerability_occurrence(
    resource_url: &str,
    cve: &str,
    severity: &str,
    package: &str,
    fix: bool,
) -> Value {
    let mut issue = json!({
        "affectedCpeUri": "cpe:/o:debian:debian_linux:12",
        "affectedPackage": package,
        "affectedVersion": {"name": "1.0", "kind": "NORMAL", "fullName": "1.0"},
        "fixedCpeUri": "cpe:/o:debian:debian_linux:12",
        "fixedPackage": package,
        "fixedVersion": if fix { json!({"name": "1.1", "kind": "NORMAL"}) } else { json!({"kind": "MAXIMUM"}) },
        "packageType": "OS",
        "effectiveSeverity": severity,
    });
    let mut v = json!({
        "severity": "MEDIUM",
        "cvssScore": 7.5,
        "packageIssue": [],
        "shortDescription": cve,
        "effectiveSeverity": severity,
        "relatedUrls": [{"url": format!("https://security-tracker.debian.org/tracker/{cve}")}],
    });
    if fix {
        issue["fixAvailable"] = json!(true);
        v["fixAvailable"] = json!(true);
    }
    v["packageIssue"] = json!([issue]);
    json!({
        "name": format!("projects/-/occurrences/{cve}-{}", short_id(resource_url)),
        "resourceUri": resource_url,
        "noteName": format!("projects/goog-vulnz/notes/{cve}"),
        "kind": "VULNERABILITY",
        "createTime": "2025-01-01T00:00:00Z",
        "vulnerability": v,
    })
}

/// The DISCOVERY occurrence that carries an image's scan status.
pub fn discovery_occurrence(resource_url: &str, status: &str) -> Value {
    json!({
        "name": format!("projects/-/occurrences/discovery-{}", short_id(resource_url)),
        "resourceUri": resource_url,
        "noteName": "projects/goog-analysis/notes/PACKAGE_VULNERABILITY",
        "kind": "DISCOVERY",
        "discovery": {"continuousAnalysis": "ACTIVE", "analysisStatus": status, "cpe": "cpe:/o:debian:debian_linux:12"},
    })
}

/// The last characters of a resource URL (its digest's), to make occurrence names unique.
fn short_id(resource_url: &str) -> &str {
    &resource_url[resource_url.len().saturating_sub(8)..]
}

async fn dispatch(State(fake): State<Arc<Fake>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    if path.starts_with("/computeMetadata/") {
        metadata(&fake, &req)
    } else if path.ends_with(":generateAccessToken") {
        generate_access_token(&fake, &req)
    } else if path == "/oauth2/v3/certs" {
        jwks(&fake).await
    } else if path.starts_with("/v1/projects/") && path.contains("/attestors/") {
        attestor(&fake, &req)
    } else if path.contains("/notes/") && path.ends_with("/occurrences") {
        note_occurrences(&fake, &req)
    } else if req.method() == axum::http::Method::POST && path.ends_with("/occurrences") {
        create_occurrence(fake, req).await
    } else if req.method() == axum::http::Method::DELETE && path.contains("/occurrences/") {
        delete_occurrence(&fake, &req)
    } else if path.contains("/cryptoKeyVersions/") {
        kms(&fake, req).await
    } else if path.ends_with("/occurrences") {
        occurrences(&fake, &req)
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn mint(fake: &Fake, impersonating: Option<&str>) -> String {
    let mut minted = fake.minted.lock().unwrap();
    let token = match impersonating {
        None => format!("mds-token-{}", minted.len() + 1),
        Some(email) => format!("impersonated-{email}-{}", minted.len() + 1),
    };
    minted.push(Minted {
        token: token.clone(),
        impersonating: impersonating.map(str::to_owned),
    });
    token
}

fn is_minted(fake: &Fake, token: &str) -> bool {
    fake.minted.lock().unwrap().iter().any(|m| m.token == token)
}

/// The metadata server's token endpoint, as google-cloud-auth calls it.
fn metadata(fake: &Fake, req: &Request) -> Response {
    let flavor = req.headers().get("metadata-flavor");
    if flavor.and_then(|v| v.to_str().ok()) != Some("Google") {
        return (StatusCode::FORBIDDEN, "missing Metadata-Flavor").into_response();
    }
    if !req
        .uri()
        .path()
        .ends_with("/service-accounts/default/token")
    {
        return StatusCode::NOT_FOUND.into_response();
    }
    let token = mint(fake, None);
    let lifetime = fake.token_lifetime.load(Ordering::SeqCst);
    axum::Json(json!({ "access_token": token, "expires_in": lifetime, "token_type": "Bearer" }))
        .into_response()
}

/// IAM Credentials `generateAccessToken`: only for a caller holding a metadata-server token.
fn generate_access_token(fake: &Fake, req: &Request) -> Response {
    let caller = bearer(req).unwrap_or("");
    let from_metadata = fake
        .minted
        .lock()
        .unwrap()
        .iter()
        .any(|m| m.token == caller && m.impersonating.is_none());
    if !from_metadata {
        return (StatusCode::UNAUTHORIZED, "caller has no valid token").into_response();
    }
    let Some(email) = req
        .uri()
        .path()
        .strip_prefix("/v1/projects/-/serviceAccounts/")
        .and_then(|p| p.strip_suffix(":generateAccessToken"))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let token = mint(fake, Some(email));
    let expire = humantime::format_rfc3339(SystemTime::now() + Duration::from_secs(3600));
    axum::Json(json!({ "accessToken": token, "expireTime": expire.to_string() })).into_response()
}

/// Google's https://www.googleapis.com/oauth2/v3/certs.
async fn jwks(fake: &Fake) -> Response {
    fake.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let delay = fake.jwks_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if fake.jwks_failing.load(Ordering::SeqCst) {
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
        fake.jwks.to_string(),
    )
        .into_response()
}

fn google_error(status: StatusCode, name: &str, message: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": message, "status": name}});
    (status, axum::Json(body)).into_response()
}

/// `kind="KIND" AND resourceUrl="URL"`, exactly as the gate must send it.
fn parse_filter(filter: &str) -> Option<(String, String)> {
    let re = regex::Regex::new(r#"^kind="([A-Z_]+)" AND resourceUrl="(https://[^"]+)"$"#).ok()?;
    let c = re.captures(filter)?;
    Some((c[1].to_owned(), c[2].to_owned()))
}

fn query(req: &Request) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// Container Analysis `GET /v1/projects/PROJECT/occurrences`.
fn occurrences(fake: &Fake, req: &Request) -> Response {
    let Some(project) = req
        .uri()
        .path()
        .strip_prefix("/v1/projects/")
        .and_then(|p| p.strip_suffix("/occurrences"))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let token = bearer(req).unwrap_or("");
    if !is_minted(fake, token) && !fake.accepted.lock().unwrap().contains(token) {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        );
    }
    if fake.denied.load(Ordering::SeqCst) {
        return google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Permission 'containeranalysis.occurrences.list' denied on resource",
        );
    }
    if fake
        .project
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|p| p != project)
    {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such project");
    }
    let q = query(req);
    let Some((kind, resource)) = q.get("filter").and_then(|f| parse_filter(f)) else {
        return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "bad filter");
    };
    if q.get("pageSize")
        .and_then(|s| s.parse::<usize>().ok())
        .is_none()
    {
        return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "bad pageSize");
    }
    let page_token = q.get("pageToken").cloned();
    fake.calls.lock().unwrap().push(OccurrencesCall {
        kind: kind.clone(),
        resource: resource.clone(),
        page_token: page_token.clone(),
    });
    let matching: Vec<Value> = fake
        .occurrences
        .lock()
        .unwrap()
        .get(&resource)
        .into_iter()
        .flatten()
        .filter(|o| o["kind"] == kind.as_str())
        .cloned()
        .collect();
    let start: usize = match page_token.as_deref().map(str::parse) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "bad token");
        }
    };
    let size = match fake.page_size.load(Ordering::SeqCst) {
        0 => matching.len().max(1),
        n => n,
    };
    let end = (start + size).min(matching.len());
    let page = matching.get(start..end).unwrap_or_default();
    // Like the real API, an empty list and the last page leave their fields out entirely.
    let mut body = serde_json::Map::new();
    if !page.is_empty() {
        body.insert("occurrences".into(), Value::Array(page.to_vec()));
    }
    if end < matching.len() {
        body.insert("nextPageToken".into(), Value::String(end.to_string()));
    }
    axum::Json(Value::Object(body)).into_response()
}

/// `P` of `projects/P/...`.
fn project_of_name(name: &str) -> &str {
    name.split('/').nth(1).unwrap_or_default()
}

/// A caller the fake knows: a token it minted, or one accepted on purpose.
fn authorized(fake: &Fake, req: &Request) -> bool {
    let token = bearer(req).unwrap_or("");
    is_minted(fake, token) || fake.accepted.lock().unwrap().contains(token)
}

fn unavailable() -> Response {
    google_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "The service is currently unavailable.",
    )
}

/// Binary Authorization `attestors.get`.
fn attestor(fake: &Fake, req: &Request) -> Response {
    if fake.binauthz_down.load(Ordering::SeqCst) {
        return unavailable();
    }
    if !authorized(fake, req) {
        return google_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "no token");
    }
    let name = req.uri().path().trim_start_matches("/v1/");
    match fake.attestors.lock().unwrap().get(name) {
        Some(a) => axum::Json(a.clone()).into_response(),
        None => google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "attestor not found"),
    }
}

/// Container Analysis `notes.occurrences.list` with a `resourceUrl="..."` filter.
fn note_occurrences(fake: &Fake, req: &Request) -> Response {
    if fake.notes_down.load(Ordering::SeqCst) {
        return unavailable();
    }
    if !authorized(fake, req) {
        return google_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "no token");
    }
    let note = req
        .uri()
        .path()
        .trim_start_matches("/v1/")
        .trim_end_matches("/occurrences")
        .to_owned();
    let q = query(req);
    let Some(resource) = q
        .get("filter")
        .and_then(|f| f.strip_prefix("resourceUrl=\""))
        .and_then(|f| f.strip_suffix('"'))
    else {
        return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "bad filter");
    };
    let found: Vec<Value> = fake
        .attestations
        .lock()
        .unwrap()
        .iter()
        .filter(|o| o["noteName"] == note.as_str() && o["resourceUri"] == resource)
        .cloned()
        .collect();
    let mut body = serde_json::Map::new();
    if !found.is_empty() {
        body.insert("occurrences".into(), Value::Array(found));
    }
    axum::Json(Value::Object(body)).into_response()
}

/// Container Analysis `occurrences.create` of an ATTESTATION.
async fn create_occurrence(fake: Arc<Fake>, req: Request) -> Response {
    if fake.notes_down.load(Ordering::SeqCst) {
        return unavailable();
    }
    if !authorized(&fake, &req) {
        return google_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "no token");
    }
    let project = req
        .uri()
        .path()
        .trim_start_matches("/v1/projects/")
        .trim_end_matches("/occurrences")
        .to_owned();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let Ok(mut o) = serde_json::from_slice::<Value>(&body) else {
        return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", "not JSON");
    };
    let note = o["noteName"].as_str().unwrap_or_default().to_owned();
    if project_of_name(&note) != project
        || o["resourceUri"].as_str().is_none()
        || o["attestation"]["serializedPayload"].as_str().is_none()
    {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "an attestation occurrence needs noteName (in this project), resourceUri and attestation",
        );
    }
    let hold = fake.hold_creates.load(Ordering::SeqCst);
    if hold > 0 {
        fake.creates_arrived.send_modify(|n| *n += 1);
        let mut arrived = fake.creates_arrived.subscribe();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            arrived.wait_for(|&n| n >= hold),
        )
        .await;
    }
    let n = fake.created.fetch_add(1, Ordering::SeqCst) + 1;
    o["name"] = json!(format!("projects/{project}/occurrences/created-{n}"));
    o["kind"] = json!("ATTESTATION");
    fake.attestations.lock().unwrap().push(o.clone());
    axum::Json(o).into_response()
}

/// Container Analysis `occurrences.delete`: `DELETE /v1/projects/P/occurrences/ID`.
fn delete_occurrence(fake: &Fake, req: &Request) -> Response {
    if fake.notes_down.load(Ordering::SeqCst) {
        return unavailable();
    }
    if !authorized(fake, req) {
        return google_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "no token");
    }
    let name = req.uri().path().trim_start_matches("/v1/");
    let mut all = fake.attestations.lock().unwrap();
    let before = all.len();
    all.retain(|o| o["name"] != name);
    if all.len() == before {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "occurrence not found");
    }
    fake.deleted.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({})).into_response()
}

/// Cloud KMS `getPublicKey` and `asymmetricSign` (which signs the digest it is given).
async fn kms(fake: &Fake, req: Request) -> Response {
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use p256::pkcs8::{EncodePublicKey, LineEnding};
    if fake.kms_down.load(Ordering::SeqCst) {
        return unavailable();
    }
    if !authorized(fake, &req) {
        return google_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "no token");
    }
    let path = req.uri().path().trim_start_matches("/v1/").to_owned();
    if let Some(name) = path.strip_suffix("/publicKey") {
        let keys = fake.kms_keys.lock().unwrap();
        let Some(key) = keys.get(name) else {
            return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such key version");
        };
        let pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        return axum::Json(json!({ "pem": pem, "algorithm": "EC_SIGN_P256_SHA256", "name": name }))
            .into_response();
    }
    let Some(name) = path.strip_suffix(":asymmetricSign").map(str::to_owned) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let body = axum::body::to_bytes(req.into_body(), 1 << 16)
        .await
        .unwrap_or_default();
    let digest = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["digest"]["sha256"].as_str().map(str::to_owned))
        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok());
    let Some(digest) = digest.filter(|d| d.len() == 32) else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "EC_SIGN_P256_SHA256 signs a 32-byte digest.sha256",
        );
    };
    let keys = fake.kms_keys.lock().unwrap();
    let Some(key) = keys.get(&name) else {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such key version");
    };
    let sig: p256::ecdsa::Signature = key.sign_prehash(&digest).unwrap();
    let der = sig.to_der();
    axum::Json(json!({
        "signature": base64::engine::general_purpose::STANDARD.encode(der.as_bytes()),
        "name": name,
    }))
    .into_response()
}

/// An attestor key entry for a PKIX public key, as `gcloud container binauthz attestors
/// public-keys add --pkix-public-key-file` writes it.
pub fn pkix_key(id: &str, pem: &str, algorithm: &str) -> Value {
    json!({
        "id": id,
        "pkixPublicKey": { "publicKeyPem": pem, "signatureAlgorithm": algorithm },
    })
}
