//! The OCI distribution protocol, as a small client on reqwest: the only module that knows
//! HTTP, status codes and registry quirks. Everything above it speaks in repositories,
//! references, digests and manifests.
//!
//! Why not oci-client: its credentials stick to a host for the life of a client (Google tokens
//! expire hourly), its streamed pushes are chunked (Artifact Registry refuses chunked uploads),
//! its mount neither asks for a two-repository scope nor accepts a 202, it has no retries and
//! loses statuses, and it drops the manifest `Content-Type` we must push back unchanged. Working
//! around all of that would leave little of it in use (`docs/design.md`).

pub mod artifact_registry;
pub mod auth;
pub mod body;
pub mod endpoints;
pub mod error;
pub mod google;
pub mod pace;
pub mod referrers;
pub mod retry;
pub mod settings;
pub mod status;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use crate::manifest::{self, Descriptor, Manifest};
use crate::reference::{Digest, ManifestRef, Repository, Tag};
use auth::{Challenge, HostAuth, Scope};
use endpoints::GoogleApis;
use error::{Op, RegistryError, parse_error_body};
use pace::Pace;
use retry::{Backoff, RetryPolicy, parse_retry_after};
use settings::{ConfigError, RegistryConfig};
use status::asks_to_slow_down;

/// Registries answer a manifest GET with the whole document; 4 MiB is the size the OCI
/// distribution spec asks registries to accept, so anything larger is not a manifest we can push.
const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Redirect hops followed on a blob GET (Artifact Registry and S3-backed registries use one).
const MAX_REDIRECTS: usize = 5;

/// One registry host: base URL, credentials and token cache, shared backoff and pace, request
/// count.
#[derive(Debug)]
pub struct Host {
    name: Arc<str>,
    base: String,
    /// The pools requests to this host use: the process's, or its own where the host is
    /// trusted with a `ca_file`.
    http: reqwest::Client,
    bulk: reqwest::Client,
    auth: HostAuth,
    backoff: Backoff,
    /// The pace this host has taught ([`pace`]).
    pace: Pace,
    requests: AtomicU64,
}

impl Host {
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Requests sent to this host so far (token exchanges with a separate realm excluded).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Every registry of one process: shared HTTP connection pools and per-host state.
///
/// Two pools, because one HTTP/2 connection is the wrong carrier for blob bodies: every
/// stream on it shares the server's connection receive window (1 MiB in Go's HTTP/2 server,
/// which distribution runs), so uploads cannot outrun window ÷ round trip however many run
/// at once, and the server spends several times the CPU per byte it spends on HTTP/1.1
/// (`docs/design.md`, "HTTP/2"). Manifests, `HEAD`s and upload sessions stay multiplexed on
/// HTTP/2 where the registry offers it; blob `GET`s and upload `PUT`s go over HTTP/1.1
/// connections, each with a TCP window of its own.
#[derive(Debug)]
pub struct Registries {
    http: reqwest::Client,
    /// HTTP/1.1 only, for blob bodies.
    bulk: reqwest::Client,
    config: RegistryConfig,
    retry: Arc<RetryPolicy>,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    /// Where the Google APIs beside the registries are (IAM Credentials, Artifact Registry).
    apis: GoogleApis,
    /// The relay's own Google identity, shared by every `auth = "google"` registry.
    google: Arc<google::GoogleIdentity>,
}

impl Registries {
    pub fn new(
        config: RegistryConfig,
        retry: RetryPolicy,
        apis: GoogleApis,
    ) -> Result<Self, reqwest::Error> {
        Ok(Registries {
            apis,
            http: client_builder().build()?,
            bulk: client_builder().http1_only().build()?,
            config,
            retry: Arc::new(retry),
            hosts: Mutex::new(HashMap::new()),
            google: Arc::new(google::GoogleIdentity::default()),
        })
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// An access token of the relay's own Google identity, for Google APIs beside the
    /// registries (Artifact Analysis).
    pub async fn google_token(&self) -> Result<auth::Secret, auth::AuthError> {
        self.google.access_token().await
    }

    /// The state of a host, created on first use.
    pub fn host(&self, name: &str) -> Result<Arc<Host>, ConfigError> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = hosts.get(name) {
            return Ok(h.clone());
        }
        let scheme = if self.config.insecure(name) {
            "http"
        } else {
            "https"
        };
        let (http, bulk) = match self.config.trusted_cas(name)? {
            None => (self.http.clone(), self.bulk.clone()),
            Some(cas) => {
                let build = |b: reqwest::ClientBuilder| {
                    b.tls_certs_merge(cas.clone())
                        .build()
                        .map_err(|e| ConfigError::Registry {
                            path: "settings".into(),
                            host: name.to_owned(),
                            reason: format!("ca_file: {}", error_chain(&e)),
                        })
                };
                (
                    build(client_builder())?,
                    build(client_builder().http1_only())?,
                )
            }
        };
        let h = Arc::new(Host {
            name: name.into(),
            base: format!("{scheme}://{name}"),
            http,
            bulk,
            auth: HostAuth::new(self.config.credentials(
                name,
                &self.google,
                &self.apis,
                &self.http,
            )?),
            backoff: Backoff::default(),
            pace: Pace::default(),
            requests: AtomicU64::new(0),
        });
        hosts.insert(name.to_owned(), h.clone());
        Ok(h)
    }

    /// A client for one repository.
    pub fn repo(&self, repo: &Repository) -> Result<RepoClient, ConfigError> {
        let host = self.host(&repo.registry)?;
        Ok(RepoClient {
            http: host.http.clone(),
            bulk: host.bulk.clone(),
            host,
            path: repo.path.as_str().into(),
            retry: self.retry.clone(),
        })
    }

    /// Repositories on `host` whose path starts with `prefix/`: from the registry catalog
    /// (`/v2/_catalog`, paginated), or, where an Artifact Registry host refuses the catalog,
    /// from Artifact Registry's own image listing with the same Google token.
    pub async fn catalog(&self, host: &str, prefix: &str) -> Result<Vec<String>, RegistryError> {
        match self.registry_catalog(host, prefix).await {
            Err(e)
                if matches!(e.status(), Some(401 | 403 | 404))
                    && artifact_registry::location(host).is_some() =>
            {
                let hostref = self.host(host).map_err(|c| RegistryError::Protocol {
                    op: e.op().clone(),
                    detail: c.to_string(),
                })?;
                let token = hostref
                    .auth
                    .bearer_token()
                    .await
                    .map_err(|a| RegistryError::Auth {
                        op: e.op().clone(),
                        auth: Box::new(a),
                    })?;
                let Some(token) = token else { return Err(e) };
                let api = &self.apis.artifact_registry;
                artifact_registry::list_repositories(&self.http, api, host, prefix, &token).await
            }
            r => r,
        }
    }

    async fn registry_catalog(
        &self,
        host: &str,
        prefix: &str,
    ) -> Result<Vec<String>, RegistryError> {
        let client = self
            .repo(&Repository {
                registry: host.to_owned(),
                path: prefix.to_owned(),
            })
            .map_err(|e| RegistryError::Protocol {
                op: Op {
                    method: "GET",
                    registry: host.into(),
                    repository: "".into(),
                    object: "catalog".into(),
                },
                detail: e.to_string(),
            })?;
        let op = client.op("GET", "catalog");
        let scope = Scope::catalog();
        let base = format!("{}/v2/_catalog", client.host.base);
        let mut pending = Some(client.first_list_page(&op, &base, &scope).await?);
        let mut repos = Vec::new();
        let want = format!("{prefix}/");
        while let Some((body, link)) = pending.take() {
            #[derive(serde::Deserialize)]
            struct Catalog {
                #[serde(default)]
                repositories: Vec<String>,
            }
            let page: Catalog =
                serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                    op: op.clone(),
                    detail: format!("catalog is not JSON of the expected shape: {e}"),
                })?;
            repos.extend(
                page.repositories
                    .into_iter()
                    .filter(|r| r.starts_with(&want)),
            );
            if let Some(url) = link {
                pending = Some(client.list_page(&op, &url, &scope).await?);
            }
        }
        Ok(repos)
    }

    /// Requests sent to each host so far, by host name.
    pub fn request_counts(&self) -> Vec<(String, u64)> {
        let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = hosts
            .values()
            .map(|h| (h.name.to_string(), h.requests()))
            .collect();
        v.sort();
        v
    }
}

/// How every pool of the relay is built.
/// A client for the Google APIs beside the registries (Container Analysis), with the same
/// timeouts and identity as the registry clients.
pub fn api_client() -> Result<reqwest::Client, reqwest::Error> {
    client_builder().build()
}

fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        // Redirects are followed by hand on blob GETs only, to decide per hop whether the
        // registry's credentials may go along (never to another host).
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        // A stalled stream fails the attempt (and is retried) instead of hanging a copy.
        .read_timeout(Duration::from_secs(120))
        .tcp_nodelay(true)
        .user_agent(concat!("image-relay/", env!("CARGO_PKG_VERSION")))
}

/// Page size asked of listings; registries may return fewer and link to the next page.
const LIST_PAGE: usize = 1000;

/// A repository's tags, with their digests when the registry tells them in the listing
/// (Artifact Registry and Container Registry add a `manifest` map to `tags/list`).
#[derive(Debug, Clone, Default)]
pub struct TagListing {
    pub tags: Vec<String>,
    pub digests: HashMap<String, Digest>,
}

/// What a manifest HEAD tells.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    /// `Docker-Content-Digest`; registries are asked to send it, a few do not.
    pub digest: Option<Digest>,
    pub media_type: Option<String>,
}

/// What [`RepoClient::delete_tag`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagDeletion {
    Deleted,
    /// The repository had no such tag.
    Absent,
    /// Not deleted: the registry cannot delete a tag alone, and deleting its manifest
    /// (`digest`) would take `other` along: `other` points at it, or at the index `via` that
    /// lists it.
    Shared {
        other: Tag,
        digest: Digest,
        via: Option<Digest>,
    },
}

/// The answer to a mount request.
#[derive(Debug)]
pub enum Mount {
    /// 201: the blob is now in the target repository.
    Mounted,
    /// 202: the registry would not mount and opened an upload session instead.
    Upload(String),
}

/// Client for one repository on one registry.
#[derive(Debug, Clone)]
pub struct RepoClient {
    /// Requests go here; for blob bodies it is [`RepoClient::bodies`]'s HTTP/1.1 pool.
    http: reqwest::Client,
    bulk: reqwest::Client,
    host: Arc<Host>,
    path: Arc<str>,
    retry: Arc<RetryPolicy>,
}

impl RepoClient {
    pub fn registry(&self) -> &str {
        &self.host.name
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn repository(&self) -> Repository {
        Repository {
            registry: self.host.name.to_string(),
            path: self.path.to_string(),
        }
    }

    pub fn op(&self, method: &'static str, object: impl Into<String>) -> Op {
        Op {
            method,
            registry: self.host.name.clone(),
            repository: self.path.clone(),
            object: object.into(),
        }
    }

    /// This client on the HTTP/1.1 pool, for requests that carry a blob's bytes.
    fn bodies(&self) -> RepoClient {
        RepoClient {
            http: self.bulk.clone(),
            ..self.clone()
        }
    }

    fn url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{}", self.host.base, self.path, rest)
    }

    /// Run `f` under the retry policy.
    pub async fn retrying<T, F, Fut>(&self, f: F) -> Result<T, RegistryError>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = Result<T, RegistryError>>,
    {
        self.retry.run(f).await
    }

    /// Send a request, going through the auth dance once if the registry answers 401.
    /// `build` adds headers and a re-sendable body.
    async fn send(
        &self,
        op: &Op,
        method: Method,
        url: &str,
        scope: &Scope,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let mut resp = self
            .send_once(op, method.clone(), url, scope, &build)
            .await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(Challenge::parse);
            if let Some(c) = challenge {
                self.host.auth.learn(c);
                self.host.auth.forget(scope).await;
                resp = self.send_once(op, method, url, scope, &build).await?;
            }
        }
        Ok(resp)
    }

    async fn send_once(
        &self,
        op: &Op,
        method: Method,
        url: &str,
        scope: &Scope,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let header = self
            .host
            .auth
            .header(&self.http, scope)
            .await
            .map_err(|e| RegistryError::Auth {
                op: op.clone(),
                auth: Box::new(e),
            })?;
        // Another worker may have been told to slow down by this host: everyone waits, then
        // takes a turn at the pace this host has taught.
        let pace = &self.host.pace;
        let sent = loop {
            self.host.backoff.wait().await;
            let sent = pace.turn().await;
            // A turn that came up during a pause is given up: after the pause, turns are
            // spaced again rather than all taken at its end.
            if !self.host.backoff.is_paused() {
                break sent;
            }
        };
        let mut req = self.http.request(method, url);
        if let Some(h) = header {
            req = req.header(AUTHORIZATION, h);
        }
        self.host.requests.fetch_add(1, Ordering::Relaxed);
        let resp = build(req).send().await.map_err(|e| transport(op, &e))?;
        if asks_to_slow_down(resp.status().as_u16()) {
            let before = pace.rate();
            let now = pace.slow_down(sent);
            if before != Some(now) {
                tracing::info!(
                    registry = %self.host.name, status = resp.status().as_u16(),
                    "registry asked to slow down: pacing requests to it at {now:.1}/s"
                );
            }
        } else {
            pace.admitted();
        }
        Ok(resp)
    }

    /// Turn an unexpected status into an error carrying the registry's error codes.
    async fn fail(&self, op: &Op, resp: Response) -> RegistryError {
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, self.retry.max_retry_after));
        if let Some(d) = retry_after.filter(|_| asks_to_slow_down(status)) {
            self.host.backoff.pause(d);
            self.host.pace.paused_until(tokio::time::Instant::now() + d);
        }
        // The status decides what happens next; the body only adds the registry's error codes,
        // so a body that cannot be read costs the codes, never the status.
        let body = match body::read_capped(resp, body::MAX_ERROR_BODY_BYTES).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(%op, status, "error body not read: {e}");
                bytes::Bytes::new()
            }
        };
        RegistryError::Status {
            op: op.clone(),
            status,
            codes: parse_error_body(&body),
            retry_after,
        }
    }

    /// HEAD a manifest by tag or digest; `None` when absent.
    pub async fn head_manifest<'r>(
        &self,
        reference: impl Into<ManifestRef<'r>>,
    ) -> Result<Option<ManifestHead>, RegistryError> {
        let reference = reference.into();
        let op = self.op("HEAD", format!("manifest {reference}"));
        let url = self.url(&format!("manifests/{reference}"));
        let scope = Scope::pull(&self.path);
        self.retrying(|_| async {
            let resp = self
                .send(&op, Method::HEAD, &url, &scope, |r| {
                    r.header(ACCEPT, manifest::ACCEPT)
                })
                .await?;
            match resp.status() {
                s if s.is_success() => Ok(Some(ManifestHead {
                    digest: header_str(&resp, "docker-content-digest").and_then(|d| d.parse().ok()),
                    media_type: header_str(&resp, CONTENT_TYPE.as_str()).map(str::to_owned),
                })),
                StatusCode::NOT_FOUND => Ok(None),
                _ => Err(self.fail(&op, resp).await),
            }
        })
        .await
    }

    /// GET a manifest. The bytes are hashed: when `reference` is a digest they must match it,
    /// and a `Docker-Content-Digest` the registry sends must match them too.
    pub async fn get_manifest<'r>(
        &self,
        reference: impl Into<ManifestRef<'r>>,
    ) -> Result<Manifest, RegistryError> {
        let reference = reference.into();
        let op = self.op("GET", format!("manifest {reference}"));
        let url = self.url(&format!("manifests/{reference}"));
        let scope = Scope::pull(&self.path);
        let pinned: Option<Digest> = reference.digest().cloned();
        self.retrying(|_| async {
            let resp = self
                .send(&op, Method::GET, &url, &scope, |r| {
                    r.header(ACCEPT, manifest::ACCEPT)
                })
                .await?;
            if !resp.status().is_success() {
                return Err(self.fail(&op, resp).await);
            }
            let content_type = header_str(&resp, CONTENT_TYPE.as_str()).map(str::to_owned);
            let announced: Option<Digest> =
                header_str(&resp, "docker-content-digest").and_then(|d| d.parse().ok());
            let bytes = body::read_capped(resp, MAX_MANIFEST_BYTES)
                .await
                .map_err(|e| e.for_op(&op))?;
            let want = pinned.clone().or(announced.clone());
            let digest = match want {
                Some(d) => {
                    if !d.matches(&bytes) {
                        return Err(RegistryError::Content {
                            op: op.clone(),
                            detail: format!("manifest bytes do not hash to {d}"),
                        });
                    }
                    d
                }
                None => Digest::sha256_of(&bytes),
            };
            Manifest::parse(digest, content_type.as_deref(), bytes).map_err(|e| {
                RegistryError::Protocol {
                    op: op.clone(),
                    detail: e.to_string(),
                }
            })
        })
        .await
    }

    /// PUT a manifest under its own digest, with its own bytes and media type: how children
    /// and referrers go, before any tag names them. Returns whether the registry answered
    /// with `OCI-Subject` (it indexes referrers itself).
    pub async fn put_manifest_by_digest(&self, m: &Manifest) -> Result<bool, RegistryError> {
        self.put_manifest_at(ManifestRef::Digest(&m.digest), m)
            .await
    }

    /// PUT a manifest under `tag` (everything it points to must already be in place).
    pub async fn put_manifest(&self, tag: &Tag, m: &Manifest) -> Result<bool, RegistryError> {
        self.put_manifest_at(ManifestRef::Tag(tag), m).await
    }

    async fn put_manifest_at(
        &self,
        reference: ManifestRef<'_>,
        m: &Manifest,
    ) -> Result<bool, RegistryError> {
        let op = self.op("PUT", format!("manifest {reference}"));
        self.retrying(|_| self.put_manifest_once(&op, reference, m))
            .await
    }

    /// PUT a manifest under `tag` unless `stop` gives a reason not to. `stop` is asked right
    /// before every attempt, the first and each retry after a 429, a 5xx or a reset, once any
    /// pause this host asked for is over: a tag write that waited seconds for its turn must not
    /// land on what was true before the wait. `Ok(None)`: written; `Ok(Some(why))`: not sent.
    pub async fn put_manifest_unless<W, S, Fut>(
        &self,
        tag: &Tag,
        m: &Manifest,
        stop: S,
    ) -> Result<Option<W>, RegistryError>
    where
        S: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<W>, RegistryError>>,
    {
        let op = self.op("PUT", format!("manifest {tag}"));
        // A failure of `stop` itself travels inside `Ok`, so this loop does not retry what
        // `stop`'s own requests already retried.
        self.retrying(|_| async {
            self.host.backoff.wait().await;
            match stop().await {
                Err(e) => Ok(Err(e)),
                Ok(Some(why)) => Ok(Ok(Some(why))),
                Ok(None) => self
                    .put_manifest_once(&op, ManifestRef::Tag(tag), m)
                    .await
                    .map(|_| Ok(None)),
            }
        })
        .await?
    }

    async fn put_manifest_once(
        &self,
        op: &Op,
        reference: ManifestRef<'_>,
        m: &Manifest,
    ) -> Result<bool, RegistryError> {
        let url = self.url(&format!("manifests/{reference}"));
        let scope = Scope::push(&self.path);
        let resp = self
            .send(op, Method::PUT, &url, &scope, |r| {
                r.header(CONTENT_TYPE, &m.media_type).body(m.bytes.clone())
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self.fail(op, resp).await);
        }
        if let Some(d) =
            header_str(&resp, "docker-content-digest").and_then(|d| d.parse::<Digest>().ok())
            && d.algorithm() == m.digest.algorithm()
            && d != m.digest
        {
            return Err(RegistryError::Protocol {
                op: op.clone(),
                detail: format!("registry stored the manifest as {d}, expected {}", m.digest),
            });
        }
        Ok(resp.headers().contains_key("oci-subject"))
    }

    /// Remove a tag, and nothing else. Registries implementing distribution-spec 1.1 delete a
    /// tag by name; older ones (distribution 2.x) answer 400/405 `UNSUPPORTED` and can only
    /// delete the manifest the tag points at, which takes every other tag pointing at it (and
    /// breaks every index that lists it) along. That fallback is taken only when no other tag
    /// of the repository needs the manifest; otherwise the answer is [`TagDeletion::Shared`].
    pub async fn delete_tag(&self, tag: &Tag) -> Result<TagDeletion, RegistryError> {
        let Some(head) = self.head_manifest(tag).await? else {
            return Ok(TagDeletion::Absent);
        };
        let refused = match self.delete_manifest(tag).await {
            Ok(()) => return Ok(TagDeletion::Deleted),
            Err(e) if matches!(e.status(), Some(400 | 405)) || e.has_code("UNSUPPORTED") => e,
            Err(e) => return Err(e),
        };
        let Some(digest) = head.digest else {
            return Err(refused);
        };
        if let Some((other, via)) = self.tag_needing(&digest, tag).await? {
            return Ok(TagDeletion::Shared { other, digest, via });
        }
        self.delete_manifest(&digest).await?;
        Ok(TagDeletion::Deleted)
    }

    /// A tag other than `except` that points at `digest`, or at an index listing it (and
    /// that index).
    async fn tag_needing(
        &self,
        digest: &Digest,
        except: &Tag,
    ) -> Result<Option<(Tag, Option<Digest>)>, RegistryError> {
        let listing = self.list_tags().await?;
        for name in listing.tags.iter().filter(|t| *t != except.as_str()) {
            let Ok(tag) = name.parse::<Tag>() else {
                continue;
            };
            let (at, media_type) = match listing.digests.get(name) {
                Some(d) => (Some(d.clone()), None),
                None => match self.head_manifest(&tag).await? {
                    Some(h) => (h.digest, h.media_type),
                    None => continue,
                },
            };
            if at.as_ref() == Some(digest) {
                return Ok(Some((tag, None)));
            }
            let maybe_index = media_type
                .as_deref()
                .is_none_or(|t| t == manifest::OCI_INDEX || t == manifest::DOCKER_MANIFEST_LIST);
            if maybe_index {
                let m = match &at {
                    Some(d) => self.get_manifest(d).await?,
                    None => self.get_manifest(&tag).await?,
                };
                if let manifest::Contents::Index { manifests } = &m.contents
                    && manifests.iter().any(|c| &c.digest == digest)
                {
                    return Ok(Some((tag, Some(m.digest.clone()))));
                }
            }
        }
        Ok(None)
    }

    /// DELETE a manifest or tag; a missing one counts as deleted.
    pub async fn delete_manifest<'r>(
        &self,
        reference: impl Into<ManifestRef<'r>>,
    ) -> Result<(), RegistryError> {
        let reference = reference.into();
        let op = self.op("DELETE", format!("manifest {reference}"));
        let url = self.url(&format!("manifests/{reference}"));
        let scope = Scope::push(&self.path);
        self.retrying(|_| async {
            let resp = self.send(&op, Method::DELETE, &url, &scope, |r| r).await?;
            match resp.status() {
                s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
                _ => Err(self.fail(&op, resp).await),
            }
        })
        .await
    }

    /// Whether a blob is present. A redirect means it is (the registry would serve it).
    pub async fn blob_exists(&self, digest: &Digest) -> Result<bool, RegistryError> {
        let op = self.op("HEAD", format!("blob {digest}"));
        let url = self.url(&format!("blobs/{digest}"));
        let scope = Scope::push(&self.path);
        self.retrying(|_| async {
            let resp = self.send(&op, Method::HEAD, &url, &scope, |r| r).await?;
            match resp.status() {
                s if s.is_success() || s.is_redirection() => Ok(true),
                StatusCode::NOT_FOUND => Ok(false),
                _ => Err(self.fail(&op, resp).await),
            }
        })
        .await
    }

    /// Open a blob for reading: the 200 response whose body is the blob. Redirects are
    /// followed, relative `Location` included; credentials go only to the registry's own origin.
    /// Not retried here: the caller retries the whole transfer.
    pub async fn open_blob(&self, digest: &Digest) -> Result<Response, RegistryError> {
        self.bodies().open_blob_here(digest).await
    }

    async fn open_blob_here(&self, digest: &Digest) -> Result<Response, RegistryError> {
        let op = self.op("GET", format!("blob {digest}"));
        let scope = Scope::pull(&self.path);
        let origin = url::Url::parse(&self.host.base).map_err(|e| RegistryError::Protocol {
            op: op.clone(),
            detail: e.to_string(),
        })?;
        let mut url = self.url(&format!("blobs/{digest}"));
        let mut resp = self.send(&op, Method::GET, &url, &scope, |r| r).await?;
        for _ in 0..MAX_REDIRECTS {
            if !resp.status().is_redirection() {
                break;
            }
            let location =
                header_str(&resp, LOCATION.as_str()).ok_or_else(|| RegistryError::Protocol {
                    op: op.clone(),
                    detail: format!("HTTP {} without Location", resp.status().as_u16()),
                })?;
            let next = url::Url::parse(&url)
                .and_then(|u| u.join(location))
                .map_err(|e| RegistryError::Protocol {
                    op: op.clone(),
                    detail: format!("bad redirect Location {location:?}: {e}"),
                })?;
            url = next.to_string();
            resp = if next.origin() == origin.origin() {
                self.send(&op, Method::GET, &url, &scope, |r| r).await?
            } else {
                // Another host (a storage bucket's signed URL): it authorises by its URL alone,
                // and the registry's credentials must not leak to it.
                self.host.requests.fetch_add(1, Ordering::Relaxed);
                self.http
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| transport(&op, &e))?
            };
        }
        if resp.status() != StatusCode::OK {
            return Err(self.fail(&op, resp).await);
        }
        Ok(resp)
    }

    /// Ask the registry to mount `digest` from repository `from` on the same host.
    pub async fn mount_blob(&self, digest: &Digest, from: &str) -> Result<Mount, RegistryError> {
        let op = self.op("POST", format!("blob {digest} (mount from {from})"));
        let url = self.url(&format!("blobs/uploads/?mount={digest}&from={from}"));
        let scope = Scope::mount(&self.path, from);
        self.retrying(|_| async {
            let resp = self
                .send(&op, Method::POST, &url, &scope, |r| {
                    r.header(CONTENT_LENGTH, "0")
                })
                .await?;
            match resp.status() {
                StatusCode::CREATED => Ok(Mount::Mounted),
                StatusCode::ACCEPTED => Ok(Mount::Upload(self.location(&op, &resp)?)),
                _ => Err(self.fail(&op, resp).await),
            }
        })
        .await
    }

    /// Open an upload session; returns its absolute URL.
    pub async fn start_upload(&self, digest: &Digest) -> Result<String, RegistryError> {
        let op = self.op("POST", format!("blob {digest} (upload)"));
        let url = self.url("blobs/uploads/");
        let scope = Scope::push(&self.path);
        let resp = self
            .send(&op, Method::POST, &url, &scope, |r| {
                r.header(CONTENT_LENGTH, "0")
            })
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.fail(&op, resp).await);
        }
        self.location(&op, &resp)
    }

    /// Finish an upload session with the whole blob in one PUT with a Content-Length: the
    /// monolithic form every registry accepts (Artifact Registry refuses chunked uploads).
    pub async fn put_upload(
        &self,
        session: &str,
        digest: &Digest,
        size: u64,
        body: reqwest::Body,
    ) -> Result<(), RegistryError> {
        let op = self.op("PUT", format!("blob {digest}"));
        let mut url = url::Url::parse(session).map_err(|e| RegistryError::Protocol {
            op: op.clone(),
            detail: format!("upload location {session:?}: {e}"),
        })?;
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        let scope = Scope::push(&self.path);
        // A streamed body cannot be sent twice, so no 401 dance here: the session was opened
        // with the same scope a moment ago.
        let resp = self
            .bodies()
            .send_once(&op, Method::PUT, url.as_str(), &scope, |r| {
                r.header(CONTENT_LENGTH, size)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(body)
            })
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.fail(&op, resp).await);
        }
        Ok(())
    }

    /// Abandon an upload session so the registry frees it (best effort).
    pub async fn cancel_upload(&self, session: &str) {
        let op = self.op("DELETE", "upload session");
        let scope = Scope::push(&self.path);
        let _ = self
            .send_once(&op, Method::DELETE, session, &scope, |r| r)
            .await;
    }

    /// Every tag of the repository (`/v2/NAME/tags/list`, following `Link` pagination). A
    /// repository that does not exist has no tags.
    pub async fn list_tags(&self) -> Result<TagListing, RegistryError> {
        let op = self.op("GET", "tags");
        let mut out = TagListing::default();
        let scope = Scope::pull(&self.path);
        let mut pending = match self
            .first_list_page(&op, &self.url("tags/list"), &scope)
            .await
        {
            Err(e) if e.is_not_found() => return Ok(out),
            first => Some(first?),
        };
        while let Some((body, link)) = pending.take() {
            #[derive(serde::Deserialize)]
            struct Page {
                #[serde(default)]
                tags: Option<Vec<String>>,
                /// Google's extension: digest -> {tag: [..], ..}.
                #[serde(default)]
                manifest: HashMap<String, GoogleManifestInfo>,
            }
            #[derive(serde::Deserialize)]
            struct GoogleManifestInfo {
                #[serde(default)]
                tag: Vec<String>,
            }
            let page: Page =
                serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                    op: op.clone(),
                    detail: format!("tag list is not JSON of the expected shape: {e}"),
                })?;
            out.tags.extend(page.tags.unwrap_or_default());
            for (digest, info) in page.manifest {
                if let Ok(d) = digest.parse::<Digest>() {
                    for t in info.tag {
                        out.digests.insert(t, d.clone());
                    }
                }
            }
            if let Some(url) = link {
                pending = Some(self.list_page(&op, &url, &scope).await?);
            }
        }
        Ok(out)
    }

    /// The first page of a listing at `base`. It asks for `LIST_PAGE` entries to keep big
    /// listings to few requests; a registry whose page limit is lower refuses that with
    /// `PAGINATION_NUMBER_INVALID` (distribution with `catalog.maxentries` below it), so it is
    /// asked again without `n`: it then picks its own page size and links to the next page.
    async fn first_list_page(
        &self,
        op: &Op,
        base: &str,
        scope: &Scope,
    ) -> Result<(bytes::Bytes, Option<String>), RegistryError> {
        let sized = format!("{base}?n={LIST_PAGE}");
        match self.list_page(op, &sized, scope).await {
            Err(e) if e.has_code("PAGINATION_NUMBER_INVALID") => {
                self.list_page(op, base, scope).await
            }
            first => first,
        }
    }

    /// One page of a listing: the body and the next page's URL from the `Link` header.
    async fn list_page(
        &self,
        op: &Op,
        url: &str,
        scope: &Scope,
    ) -> Result<(bytes::Bytes, Option<String>), RegistryError> {
        self.retrying(|_| async {
            let resp = self.send(op, Method::GET, url, scope, |r| r).await?;
            if !resp.status().is_success() {
                return Err(self.fail(op, resp).await);
            }
            let next = header_str(&resp, "link").and_then(|l| next_link(url, l));
            let body = body::read_capped(resp, body::MAX_LISTING_BYTES)
                .await
                .map_err(|e| e.for_op(op))?;
            Ok((body, next))
        })
        .await
    }

    /// OCI 1.1 referrers of `digest`: `None` when the registry has no referrers API (404).
    pub async fn referrers(
        &self,
        digest: &Digest,
    ) -> Result<Option<Vec<Descriptor>>, RegistryError> {
        let op = self.op("GET", format!("referrers of {digest}"));
        let url = self.url(&format!("referrers/{digest}"));
        let scope = Scope::pull(&self.path);
        self.retrying(|_| async {
            let resp = self
                .send(&op, Method::GET, &url, &scope, |r| {
                    r.header(ACCEPT, manifest::OCI_INDEX)
                })
                .await?;
            match resp.status() {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND => return Ok(None),
                _ => return Err(self.fail(&op, resp).await),
            }
            #[derive(serde::Deserialize)]
            struct Index {
                #[serde(default)]
                manifests: Vec<Descriptor>,
            }
            let body = body::read_capped(resp, body::MAX_LISTING_BYTES)
                .await
                .map_err(|e| e.for_op(&op))?;
            let idx: Index =
                serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                    op: op.clone(),
                    detail: format!("referrers response is not an index: {e}"),
                })?;
            Ok(Some(idx.manifests))
        })
        .await
    }

    fn location(&self, op: &Op, resp: &Response) -> Result<String, RegistryError> {
        let loc = header_str(resp, LOCATION.as_str()).ok_or_else(|| RegistryError::Protocol {
            op: op.clone(),
            detail: "upload response without Location".into(),
        })?;
        let base = url::Url::parse(resp.url().as_str()).map_err(|e| RegistryError::Protocol {
            op: op.clone(),
            detail: e.to_string(),
        })?;
        base.join(loc)
            .map(|u| u.to_string())
            .map_err(|e| RegistryError::Protocol {
                op: op.clone(),
                detail: format!("bad upload Location {loc:?}: {e}"),
            })
    }
}

/// `Link: </v2/_catalog?last=x&n=100>; rel="next"`, resolved against the current page.
fn next_link(current: &str, header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        if !params.replace(' ', "").contains("rel=\"next\"") {
            return None;
        }
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        url::Url::parse(current)
            .ok()?
            .join(target)
            .ok()
            .map(|u| u.to_string())
    })
}

fn header_str<'a>(resp: &'a Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// An error with its chain of causes, flattened: reqwest's top-level message alone says only
/// "error sending request".
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut detail = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        src = s.source();
    }
    detail
}

/// A transport failure, with the error chain flattened; a certificate that could not be
/// verified is told apart, since no retry gets past it.
pub fn transport(op: &Op, e: &(dyn std::error::Error + 'static)) -> RegistryError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(tls @ rustls::Error::InvalidCertificate(_)) = s.downcast_ref::<rustls::Error>()
        {
            return RegistryError::Untrusted {
                op: op.clone(),
                detail: tls.to_string(),
            };
        }
        // rustls's error travels inside io::Errors, whose `source()` skips what they wrap.
        src = match s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => s.source(),
        };
    }
    RegistryError::Transport {
        op: op.clone(),
        detail: error_chain(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_resolve_relative_to_the_current_page() {
        assert_eq!(
            next_link(
                "http://r.example/v2/_catalog?n=2",
                r#"</v2/_catalog?last=b&n=2>; rel="next""#
            )
            .as_deref(),
            Some("http://r.example/v2/_catalog?last=b&n=2")
        );
        assert_eq!(
            next_link("http://r.example/v2/x/tags/list", r#"</a>; rel="prev""#),
            None
        );
    }
}
