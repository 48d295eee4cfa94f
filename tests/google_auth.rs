//! `auth = "google"` with no Google access: a fake metadata server and a fake IAM Credentials
//! endpoint on loopback (pointed at through `GCE_METADATA_HOST`, which google-cloud-auth
//! honours, and `RELAY_IAM_CREDENTIALS_URL`), and a real registry behind a small proxy that
//! accepts only tokens the fakes issued and that are still current. The relay runs as a
//! child process, so the environment it sees is its own.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use common::*;
use serde_json::json;

const RELAY: &str = env!("CARGO_BIN_EXE_image-relay");
const IMPERSONATED: &str = "partner-writer@partner-prj.iam.gserviceaccount.com";

/// What the fake Google issued and what the registry proxy accepts.
#[derive(Default)]
struct Google {
    mds_tokens: Mutex<Vec<String>>,
    iam_calls: Mutex<Vec<String>>,
    /// Tokens the registry proxy accepts as the password of `oauth2accesstoken`.
    accepted: Mutex<HashSet<String>>,
    /// Lifetime announced by the metadata server.
    expires_in: u64,
    /// The registry refuses every token (the identity lacks access).
    refuse_all: std::sync::atomic::AtomicBool,
}

async fn serve(router: Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
    addr
}

/// The metadata server's token endpoint, as google-cloud-auth calls it.
async fn mds(State(g): State<Arc<Google>>, headers: HeaderMap, req: Request) -> Response {
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return (StatusCode::FORBIDDEN, "missing Metadata-Flavor").into_response();
    }
    if !req
        .uri()
        .path()
        .ends_with("/service-accounts/default/token")
    {
        return StatusCode::NOT_FOUND.into_response();
    }
    let mut issued = g.mds_tokens.lock().unwrap();
    let token = format!("mds-token-{}", issued.len() + 1);
    issued.push(token.clone());
    g.accepted.lock().unwrap().insert(token.clone());
    axum::Json(json!({ "access_token": token, "expires_in": g.expires_in, "token_type": "Bearer" }))
        .into_response()
}

/// IAM Credentials `generateAccessToken`: only for a caller holding a metadata-server token.
async fn iam(State(g): State<Arc<Google>>, headers: HeaderMap, req: Request) -> Response {
    let caller = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    if !g.mds_tokens.lock().unwrap().contains(&caller) {
        return (StatusCode::UNAUTHORIZED, "caller has no valid token").into_response();
    }
    let path = req.uri().path().to_owned();
    let Some(email) = path
        .strip_prefix("/v1/projects/-/serviceAccounts/")
        .and_then(|p| p.strip_suffix(":generateAccessToken"))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut calls = g.iam_calls.lock().unwrap();
    calls.push(email.to_owned());
    let token = format!("impersonated-{email}-{}", calls.len());
    // Impersonated tokens are what the partner's registry accepts.
    g.accepted.lock().unwrap().insert(token.clone());
    let expire =
        humantime::format_rfc3339(std::time::SystemTime::now() + Duration::from_secs(3600))
            .to_string();
    axum::Json(json!({ "accessToken": token, "expireTime": expire })).into_response()
}

/// A registry that takes only current Google tokens as Basic `oauth2accesstoken` passwords.
async fn checking_proxy(
    State((g, upstream)): State<(Arc<Google>, String)>,
    req: Request,
) -> Response {
    let ok = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("oauth2accesstoken:").map(str::to_owned))
        .is_some_and(|t| g.accepted.lock().unwrap().contains(&t))
        && !g.refuse_all.load(std::sync::atomic::Ordering::Relaxed);
    if !ok {
        return Response::builder()
            .status(401)
            .header("www-authenticate", "Basic realm=\"fake-artifact-registry\"")
            .body(Body::from(
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"token not accepted"}]}"#,
            ))
            .unwrap();
    }
    let (parts, body) = req.into_parts();
    let url = format!(
        "http://{upstream}{}",
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut out = client.request(parts.method, url);
    for (k, v) in &parts.headers {
        if k != "host" && k != "authorization" {
            out = out.header(k, v);
        }
    }
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let resp = out.body(bytes).send().await.unwrap();
    let mut builder = Response::builder().status(resp.status().as_u16());
    for (k, v) in resp.headers() {
        let v = v
            .to_str()
            .unwrap_or("")
            .replace(&format!("http://{upstream}"), "");
        builder = builder.header(k.as_str(), v);
    }
    builder
        .body(Body::from(resp.bytes().await.unwrap()))
        .unwrap()
}

struct Fakes {
    google: Arc<Google>,
    mds: SocketAddr,
    iam: SocketAddr,
    registry_host: String,
    _registry: Registry,
    home: tempfile::TempDir,
}

async fn fakes(expires_in: u64) -> Fakes {
    let google = Arc::new(Google {
        expires_in,
        ..Google::default()
    });
    let mds = serve(Router::new().fallback(mds).with_state(google.clone())).await;
    let iam = serve(Router::new().fallback(iam).with_state(google.clone())).await;
    let registry = Registry::start().await;
    let proxy = serve(
        Router::new()
            .fallback(checking_proxy)
            .with_state((google.clone(), registry.host())),
    )
    .await;
    Fakes {
        google,
        mds,
        iam,
        registry_host: proxy.to_string(),
        _registry: registry,
        home: tempfile::tempdir().unwrap(),
    }
}

impl Fakes {
    /// The relay's environment: ADC falls through to the (fake) metadata server.
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(RELAY);
        c.args(args)
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env("HOME", self.home.path())
            .env("GCE_METADATA_HOST", self.mds.to_string())
            .env("RELAY_IAM_CREDENTIALS_URL", format!("http://{}", self.iam))
            .env("DOCKER_CONFIG", "/nonexistent")
            .kill_on_drop(true);
        c
    }

    fn config(&self, src: &str, impersonate: Option<&str>) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        let imp = impersonate
            .map(|e| format!("impersonate = \"{e}\"\n"))
            .unwrap_or_default();
        std::fs::write(
            &path,
            format!(
                "[registry.\"{src}\"]\nauth = \"none\"\n\n[registry.\"{}\"]\nauth = \"google\"\n{imp}",
                self.registry_host
            ),
        )
        .unwrap();
        (dir, path.display().to_string())
    }
}

#[tokio::test]
async fn metadata_server_tokens_copy_and_impersonation_mints_the_partners_token() {
    with_timeout(90, async {
        let f = fakes(3600).await;
        let src = Registry::start().await;
        let img = Seeder::for_registry(&src)
            .push_random_image("app", Some("v1"), Format::Oci, 61)
            .await;
        let (_d, config) = f.config(&src.host(), None);
        let out = f
            .command(&[
                "copy",
                "--config",
                &config,
                &format!("{}/app:v1", src.host()),
                &format!("{}/app:v1", f.registry_host),
            ])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            f.google.mds_tokens.lock().unwrap().len(),
            1,
            "one token for the whole copy"
        );

        // Impersonation: the registry now accepts only the partner account's tokens.
        f.google.accepted.lock().unwrap().clear();
        let (_d2, config) = f.config(&src.host(), Some(IMPERSONATED));
        let out = f
            .command(&[
                "copy",
                "--config",
                &config,
                &format!("{}/app:v1", src.host()),
                &format!("{}/imp/app:v1", f.registry_host),
            ])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            *f.google.iam_calls.lock().unwrap(),
            [IMPERSONATED],
            "one generateAccessToken call"
        );
        let got = Seeder::new(&f._registry.host(), None)
            .get_manifest_raw("imp/app", "v1")
            .await
            .unwrap();
        assert_eq!(got.bytes, img.manifest.bytes);
    })
    .await;
}

#[tokio::test]
async fn a_refused_token_fails_with_an_error_naming_the_registry() {
    with_timeout(60, async {
        let f = fakes(3600).await;
        let src = Registry::start().await;
        Seeder::for_registry(&src)
            .push_random_image("app", Some("v1"), Format::Oci, 62)
            .await;
        let (_d, config) = f.config(&src.host(), None);
        f.google
            .refuse_all
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let out = f
            .command(&[
                "copy",
                "--config",
                &config,
                &format!("{}/app:v1", src.host()),
                &format!("{}/app:v1", f.registry_host),
            ])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&f.registry_host) && err.contains("401"),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_long_running_service_picks_up_refreshed_tokens() {
    with_timeout(90, async {
        // 242 s tokens: google-cloud-auth refreshes tokens with less than 240 s left, so the
        // fake metadata server sees a refresh about 2 s after each issue.
        let f = fakes(242).await;
        let src = Registry::start().await;
        let s = Seeder::for_registry(&src);
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.toml");
        std::fs::write(
            &rules,
            format!(
                "[[rule]]\nname = \"r\"\nsource = \"{src}/releases\"\nimages = [\".*\"]\ntags = [\".*\"]\n\
                 targets = [\"{dst}/partner\"]\n\n[registry.\"{src}\"]\nauth = \"none\"\n\n[registry.\"{dst}\"]\nauth = \"google\"\n",
                src = src.host(),
                dst = f.registry_host
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = f
            .command(&["serve", "--rules", rules.to_str().unwrap(), "--push-auth", "none", "--listen-address", "127.0.0.1", "--port", &port.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/");
        for _ in 0..200 {
            if http.get(format!("{url}readyz")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let deliver = |repo: &str, digest: &str| {
            let n = json!({ "action": "INSERT", "digest": format!("{}/{repo}@{digest}", src.host()), "tag": format!("{}/{repo}:v1", src.host()) });
            let data = base64::engine::general_purpose::STANDARD.encode(n.to_string());
            http.post(&url).body(json!({ "message": { "data": data, "messageId": "1" } }).to_string()).send()
        };
        let a = s.push_random_image("releases/a", Some("v1"), Format::Oci, 63).await;
        assert_eq!(deliver("releases/a", &a.manifest.digest).await.unwrap().status(), 200);
        // Wait for the background refresh, then make the registry refuse every older token.
        for _ in 0..400 {
            if f.google.mds_tokens.lock().unwrap().len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let issued = f.google.mds_tokens.lock().unwrap().clone();
        assert!(issued.len() >= 2, "no refresh: {issued:?}");
        *f.google.accepted.lock().unwrap() = HashSet::from([issued.last().unwrap().clone()]);
        let b = s.push_random_image("releases/b", Some("v1"), Format::Oci, 64).await;
        let resp = deliver("releases/b", &b.manifest.digest).await.unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert_eq!(status, 200, "{body}");
        unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
        let _ = child.wait().await;
    })
    .await;
}
