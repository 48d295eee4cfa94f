//! Seeding and reading registries with plain reqwest (fast, no skopeo), plus
//! `skopeo inspect --raw` as an independent oracle for what a registry serves.

use super::images::*;
use super::registry::Registry;
use super::sha256_digest;
use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

/// Chunk size of streamed blobs: memory use of `push_blob_stream` is a few
/// of these, whatever the blob size.
pub const STREAM_CHUNK: u64 = 1 << 20;

/// A push or read that the registry refused (status) or that failed at the
/// transport level (`status: None`).
#[derive(Debug, Clone)]
pub struct SeedError {
    pub status: Option<u16>,
    pub message: String,
}

impl fmt::Display for SeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => write!(f, "HTTP {s}: {}", self.message),
            None => write!(f, "transport error: {}", self.message),
        }
    }
}

impl From<reqwest::Error> for SeedError {
    fn from(e: reqwest::Error) -> Self {
        SeedError {
            status: e.status().map(|s| s.as_u16()),
            message: format!("{e:#}"),
        }
    }
}

/// A manifest as served: exact bytes, Content-Type and Docker-Content-Digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawManifest {
    pub bytes: Vec<u8>,
    pub content_type: String,
    pub digest: Option<String>,
}

/// Talks to one registry (directly or through a [`super::Proxy`]) with
/// optional basic auth. The non-`try_` methods panic with a message on
/// failure: they are setup steps, not the thing under test.
#[derive(Clone)]
pub struct Seeder {
    client: reqwest::Client,
    host: String,
    creds: Option<(String, String)>,
    scheme: &'static str,
}

impl Seeder {
    /// `host` is `127.0.0.1:PORT`; `creds` is `(user, pass)` for basic auth.
    pub fn new(host: &str, creds: Option<(String, String)>) -> Seeder {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("build seeder HTTP client");
        Seeder {
            client,
            host: host.to_string(),
            creds,
            scheme: "http",
        }
    }

    /// Seeder for a TLS registry whose certificate `ca_pem` signed.
    pub fn for_tls_registry(reg: &Registry, ca_pem: &str) -> Seeder {
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM");
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tls_certs_merge([ca])
            .build()
            .expect("build seeder HTTPS client");
        Seeder {
            client,
            host: reg.host(),
            creds: reg.creds(),
            scheme: "https",
        }
    }

    /// Seeder for a harness registry, with its credentials if it has any.
    pub fn for_registry(reg: &Registry) -> Seeder {
        Seeder::new(&reg.host(), reg.creds())
    }

    /// Same registry, different (or no) credentials.
    pub fn with_creds(&self, creds: Option<(String, String)>) -> Seeder {
        Seeder {
            client: self.client.clone(),
            host: self.host.clone(),
            creds,
            scheme: self.scheme,
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn request(&self, method: Method, url: impl reqwest::IntoUrl) -> RequestBuilder {
        let rb = self.client.request(method, url);
        match &self.creds {
            Some((u, p)) => rb.basic_auth(u, Some(p)),
            None => rb,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.host, path)
    }

    // ---- blobs ----------------------------------------------------------

    /// POST an upload session; returns the absolute upload URL. The
    /// registry's Location may be relative and may carry a query string.
    async fn start_upload(&self, repo: &str) -> Result<Url, SeedError> {
        let resp = self
            .request(
                Method::POST,
                self.url(&format!("/v2/{repo}/blobs/uploads/")),
            )
            .header(CONTENT_LENGTH, "0")
            .send()
            .await?;
        let resp = expect_status(resp, StatusCode::ACCEPTED, "start blob upload").await?;
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| SeedError {
                status: None,
                message: "upload without Location".into(),
            })?;
        let base = Url::parse(&self.url("/")).expect("seeder base URL");
        base.join(loc).map_err(|e| SeedError {
            status: None,
            message: format!("bad Location {loc}: {e}"),
        })
    }

    /// Monolithic upload: POST, then one PUT `?digest=` with the whole body.
    pub async fn try_push_blob(&self, repo: &str, bytes: &[u8]) -> Result<Blob, SeedError> {
        let digest = sha256_digest(bytes);
        let mut url = self.start_upload(repo).await?;
        url.query_pairs_mut().append_pair("digest", &digest);
        let resp = self
            .request(Method::PUT, url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await?;
        expect_status(resp, StatusCode::CREATED, "finish blob upload").await?;
        Ok(Blob {
            digest,
            size: bytes.len() as u64,
        })
    }

    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> Blob {
        self.try_push_blob(repo, bytes)
            .await
            .unwrap_or_else(|e| panic!("push blob to {}/{repo}: {e}", self.host))
    }

    /// Push a large deterministic blob of `size` bytes generated from `seed`
    /// (see [`stream_blob_chunks`]) without holding it in memory: a first
    /// pass hashes it, the second streams it in the PUT body.
    pub async fn push_blob_stream(&self, repo: &str, size: u64, seed: u64) -> Blob {
        // Hashing hundreds of MB is CPU-bound: keep it off the async thread.
        let digest = tokio::task::spawn_blocking(move || stream_blob_digest(size, seed))
            .await
            .expect("hashing task panicked");
        let mut url = self
            .start_upload(repo)
            .await
            .unwrap_or_else(|e| panic!("start streamed upload to {}/{repo}: {e}", self.host));
        url.query_pairs_mut().append_pair("digest", &digest);
        let chunks = stream_blob_chunks(size, seed).map(Ok::<Bytes, std::io::Error>);
        let resp = self
            .request(Method::PUT, url)
            .header(CONTENT_TYPE, "application/octet-stream")
            // Explicit length: otherwise a stream body goes out chunked.
            .header(CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .unwrap_or_else(|e| panic!("streamed PUT to {}/{repo}: {e:#}", self.host));
        expect_status(resp, StatusCode::CREATED, "finish streamed upload")
            .await
            .unwrap_or_else(|e| panic!("streamed upload to {}/{repo}: {e}", self.host));
        Blob { digest, size }
    }

    /// HEAD the blob: true on 200, false on 404, panics otherwise.
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> bool {
        let resp = self
            .request(
                Method::HEAD,
                self.url(&format!("/v2/{repo}/blobs/{digest}")),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("HEAD blob {digest}: {e:#}"));
        match resp.status() {
            StatusCode::OK => true,
            StatusCode::NOT_FOUND => false,
            s => panic!("HEAD blob {digest} in {}/{repo}: unexpected {s}", self.host),
        }
    }

    /// GET the whole blob (small blobs only); None on 404.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Option<Vec<u8>> {
        let resp = self
            .request(Method::GET, self.url(&format!("/v2/{repo}/blobs/{digest}")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET blob {digest}: {e:#}"));
        if resp.status() == StatusCode::NOT_FOUND {
            return None;
        }
        let resp = expect_status(resp, StatusCode::OK, "get blob")
            .await
            .unwrap_or_else(|e| panic!("GET blob {digest} from {}/{repo}: {e}", self.host));
        Some(resp.bytes().await.expect("read blob body").to_vec())
    }

    // ---- manifests ------------------------------------------------------

    /// PUT manifest bytes verbatim; returns their digest (checked against
    /// the registry's Docker-Content-Digest).
    pub async fn try_push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String, SeedError> {
        let digest = sha256_digest(bytes);
        let resp = self
            .request(
                Method::PUT,
                self.url(&format!("/v2/{repo}/manifests/{reference}")),
            )
            .header(CONTENT_TYPE, media_type)
            .body(bytes.to_vec())
            .send()
            .await?;
        let resp = expect_status(resp, StatusCode::CREATED, "push manifest").await?;
        if let Some(served) = resp.headers().get("docker-content-digest") {
            assert_eq!(
                served.to_str().ok(),
                Some(digest.as_str()),
                "registry digest differs"
            );
        }
        Ok(digest)
    }

    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> String {
        self.try_push_manifest(repo, reference, media_type, bytes)
            .await
            .unwrap_or_else(|e| panic!("push manifest {}/{repo}:{reference}: {e}", self.host))
    }

    /// Push a built manifest under `tag`, or by digest when `tag` is None.
    pub async fn push_pushed(&self, repo: &str, tag: Option<&str>, m: &Pushed) {
        self.push_manifest(repo, tag.unwrap_or(&m.digest), &m.media_type, &m.bytes)
            .await;
    }

    /// GET a manifest with an Accept header listing every manifest type, so
    /// the registry serves it verbatim. None on 404.
    pub async fn get_manifest_raw(&self, repo: &str, reference: &str) -> Option<RawManifest> {
        let resp = self
            .request(
                Method::GET,
                self.url(&format!("/v2/{repo}/manifests/{reference}")),
            )
            .header(ACCEPT, media::MANIFEST_ACCEPT)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET manifest {repo}:{reference}: {e:#}"));
        if resp.status() == StatusCode::NOT_FOUND {
            return None;
        }
        let resp = expect_status(resp, StatusCode::OK, "get manifest")
            .await
            .unwrap_or_else(|e| panic!("GET manifest {}/{repo}:{reference}: {e}", self.host));
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type").unwrap_or_default();
        let digest = header("docker-content-digest");
        let bytes = resp.bytes().await.expect("read manifest body").to_vec();
        Some(RawManifest {
            bytes,
            content_type,
            digest,
        })
    }

    /// DELETE a manifest by digest (the registry has deletes enabled).
    pub async fn delete_manifest(&self, repo: &str, digest: &str) {
        let resp = self
            .request(
                Method::DELETE,
                self.url(&format!("/v2/{repo}/manifests/{digest}")),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("DELETE manifest {digest}: {e:#}"));
        expect_status(resp, StatusCode::ACCEPTED, "delete manifest")
            .await
            .unwrap_or_else(|e| panic!("DELETE manifest {}/{repo}@{digest}: {e}", self.host));
    }

    /// Tags of `repo`, sorted; empty if the repository does not exist.
    pub async fn list_tags(&self, repo: &str) -> Vec<String> {
        let resp = self
            .request(Method::GET, self.url(&format!("/v2/{repo}/tags/list")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("list tags of {repo}: {e:#}"));
        if resp.status() == StatusCode::NOT_FOUND {
            return Vec::new();
        }
        let resp = expect_status(resp, StatusCode::OK, "list tags")
            .await
            .unwrap_or_else(|e| panic!("list tags of {}/{repo}: {e}", self.host));
        let body: Value = serde_json::from_slice(&resp.bytes().await.expect("read tags body"))
            .expect("tags list is JSON");
        let mut tags: Vec<String> = body["tags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        tags.sort();
        tags
    }

    pub async fn skopeo_inspect_raw(&self, repo: &str, reference: &str) -> Vec<u8> {
        skopeo_inspect_raw(&self.host, repo, reference, self.creds.clone()).await
    }

    // ---- whole images ---------------------------------------------------

    /// Push `layers`, a config for `platform`, and a manifest referencing
    /// them; tag it with `tag`, or push by digest only when `tag` is None.
    /// Passing the same [`Layer`] to several images shares that blob.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: Option<&str>,
        format: Format,
        platform: &Platform,
        layers: &[Layer],
    ) -> Image {
        let mut layer_blobs = Vec::with_capacity(layers.len());
        for layer in layers {
            layer_blobs.push(self.push_blob(repo, &layer.bytes).await);
        }
        let config = self.push_blob(repo, &config_json(platform, layers)).await;
        let refs: Vec<(&str, &Blob)> = layers
            .iter()
            .zip(&layer_blobs)
            .map(|(l, b)| (format.layer_type(l.compressed), b))
            .collect();
        let manifest = Pushed::new(
            format.manifest_type(),
            image_manifest_json(format, &config, &refs),
        );
        self.push_pushed(repo, tag, &manifest).await;
        Image {
            manifest,
            config,
            layers: layer_blobs,
            platform: platform.clone(),
        }
    }

    /// linux/amd64 image with two small random gzip layers from `seed`.
    pub async fn push_random_image(
        &self,
        repo: &str,
        tag: Option<&str>,
        format: Format,
        seed: u64,
    ) -> Image {
        let layers = [
            Layer::random_gzip(seed, 3000),
            Layer::random_gzip(seed.wrapping_add(1), 5000),
        ];
        self.push_image(repo, tag, format, &Platform::linux_amd64(), &layers)
            .await
    }

    /// Multi-platform image: one child per platform (pushed by digest), each
    /// with a base layer shared by all children, the well-known empty layer,
    /// and a platform-specific layer; then the index/list under `tag` (or
    /// by digest if None).
    pub async fn push_index(
        &self,
        repo: &str,
        tag: Option<&str>,
        format: Format,
        seed: u64,
        platforms: &[Platform],
    ) -> Index {
        let base = Layer::random_gzip(seed, 4000);
        let mut children = Vec::with_capacity(platforms.len());
        for p in platforms {
            let own = Layer::random_gzip(seed ^ p.salt(), 2000);
            let layers = [base.clone(), Layer::empty_gzip(), own];
            children.push(self.push_image(repo, None, format, p, &layers).await);
        }
        let manifest = Pushed::new(format.index_type(), index_json(format, &children));
        self.push_pushed(repo, tag, &manifest).await;
        Index { manifest, children }
    }

    /// [`Seeder::push_index`] over linux/amd64, linux/arm64/v8, linux/arm/v7
    /// and linux/s390x.
    pub async fn push_multiarch(
        &self,
        repo: &str,
        tag: Option<&str>,
        format: Format,
        seed: u64,
    ) -> Index {
        self.push_index(repo, tag, format, seed, &Platform::four())
            .await
    }

    /// Cosign-style signature of `subject`, tagged `sha256-<hex>.sig`: OCI
    /// manifest with one simplesigning layer carrying the signature
    /// annotation (the signature itself is fake but deterministic).
    pub async fn push_cosign_signature(&self, repo: &str, subject: &Pushed) -> Pushed {
        let payload = cosign_payload(&format!("{}/{repo}", self.host), &subject.digest);
        let layer = self.push_blob(repo, &payload).await;
        let config_bytes = serde_json::to_vec(&json!({
            "architecture": "",
            "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{ "created": "0001-01-01T00:00:00Z" }],
            "os": "",
            "rootfs": { "type": "layers", "diff_ids": [layer.digest] },
        }))
        .expect("serialize cosign config");
        let config = self.push_blob(repo, &config_bytes).await;
        let signature = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            Sha256::digest(subject.digest.as_bytes()),
        );
        let mut layer_desc = descriptor(media::COSIGN_SIMPLESIGNING, &layer.digest, layer.size);
        layer_desc["annotations"] = json!({ media::COSIGN_SIGNATURE_ANNOTATION: signature });
        let bytes = to_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": descriptor(media::OCI_CONFIG, &config.digest, config.size),
            "layers": [layer_desc],
        }));
        let m = Pushed::new(media::OCI_MANIFEST, bytes);
        self.push_pushed(repo, Some(&format!("sha256-{}.sig", subject.hex())), &m)
            .await;
        m
    }

    /// OCI 1.1 artifact: image manifest with `artifactType`, the empty `{}`
    /// config, one layer holding `payload` (media type = `artifact_type`),
    /// and `subject` = `subject`'s descriptor. Pushed by digest only (a
    /// referrer is found through its subject, not a tag).
    pub async fn push_artifact(
        &self,
        repo: &str,
        subject: &Pushed,
        artifact_type: &str,
        payload: &[u8],
    ) -> Pushed {
        self.push_blob(repo, EMPTY_JSON).await;
        let layer = self.push_blob(repo, payload).await;
        let bytes = to_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": descriptor(media::OCI_EMPTY, EMPTY_JSON_DIGEST, EMPTY_JSON.len() as u64),
            "layers": [descriptor(artifact_type, &layer.digest, layer.size)],
            "subject": subject.descriptor(),
            "annotations": { "org.opencontainers.image.created": "2024-01-01T00:00:00Z" },
        }));
        let m = Pushed::new(media::OCI_MANIFEST, bytes);
        self.push_pushed(repo, None, &m).await;
        m
    }

    /// The OCI 1.1 referrers tag-schema fallback for registries without the
    /// referrers API (like distribution 2.8): an OCI index tagged
    /// `sha256-<subject hex>` listing `referrers` with their artifactType.
    pub async fn push_referrers_tag_index(
        &self,
        repo: &str,
        subject: &Pushed,
        referrers: &[&Pushed],
    ) -> Pushed {
        let manifests: Vec<Value> = referrers
            .iter()
            .map(|r| {
                let mut d = r.descriptor();
                if let Some(at) = r.json().get("artifactType") {
                    d["artifactType"] = at.clone();
                }
                d
            })
            .collect();
        let bytes = to_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": manifests,
        }));
        let m = Pushed::new(media::OCI_INDEX, bytes);
        self.push_pushed(repo, Some(&format!("sha256-{}", subject.hex())), &m)
            .await;
        m
    }
}

/// Check the status; on mismatch return the body text in the error.
async fn expect_status(
    resp: reqwest::Response,
    want: StatusCode,
    what: &str,
) -> Result<reqwest::Response, SeedError> {
    if resp.status() == want {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    Err(SeedError {
        status: Some(status.as_u16()),
        message: format!("{what}: expected {want}, got {status}: {body}"),
    })
}

/// The deterministic content of a streamed blob, in [`STREAM_CHUNK`]-sized
/// pieces. Chunk `i` is one pseudo-random 1 MiB block (from `seed`) rotated
/// by an `i`-dependent amount and stamped with `i` in its first 8 bytes: no
/// two chunks are equal, yet making one costs only memcpys, which matters
/// in unoptimized test builds (filling 300 MB from a PRNG takes seconds).
pub fn stream_blob_chunks(size: u64, seed: u64) -> impl Iterator<Item = Bytes> + Send + 'static {
    let block = random_bytes(seed, STREAM_CHUNK as usize);
    (0..size.div_ceil(STREAM_CHUNK)).map(move |i| {
        let len = STREAM_CHUNK.min(size - i * STREAM_CHUNK) as usize;
        let rot = (i.wrapping_mul(0x9e37_79b9) % STREAM_CHUNK) as usize;
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(&block[rot..]);
        buf.extend_from_slice(&block[..rot]);
        buf.truncate(len);
        let stamp = i.to_le_bytes();
        let n = stamp.len().min(len);
        buf[..n].copy_from_slice(&stamp[..n]);
        Bytes::from(buf)
    })
}

/// sha256 digest of the streamed blob (size, seed), computed chunk by chunk
/// and cached per process (hashing 300 MB with an unoptimized sha2 takes
/// ~10 s; see the note on `[profile.dev.package.sha2]` in the harness docs).
pub fn stream_blob_digest(size: u64, seed: u64) -> String {
    static CACHE: Mutex<Option<HashMap<(u64, u64), String>>> = Mutex::new(None);
    let cached = CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(&(size, seed))
        .cloned();
    if let Some(d) = cached {
        return d;
    }
    let mut h = Sha256::new();
    for chunk in stream_blob_chunks(size, seed) {
        h.update(&chunk);
    }
    let digest = format!("sha256:{}", hex::encode(h.finalize()));
    CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert((size, seed), digest.clone());
    digest
}

/// `skopeo inspect --raw` of `HOST/REPO:REF` (or `@sha256:...`): the exact
/// manifest bytes as skopeo sees them. Panics with skopeo's stderr on
/// failure.
pub async fn skopeo_inspect_raw(
    host: &str,
    repo: &str,
    reference: &str,
    creds: Option<(String, String)>,
) -> Vec<u8> {
    let sep = if reference.starts_with("sha256:") {
        '@'
    } else {
        ':'
    };
    let image = format!("docker://{host}/{repo}{sep}{reference}");
    let mut cmd = tokio::process::Command::new("skopeo");
    cmd.args(["inspect", "--raw", "--tls-verify=false"]);
    if let Some((u, p)) = &creds {
        cmd.arg("--creds").arg(format!("{u}:{p}"));
    }
    cmd.arg(&image).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("skopeo inspect {image} timed out"))
        .expect("run skopeo (apt-get install skopeo)");
    assert!(
        out.status.success(),
        "skopeo inspect --raw {image} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
