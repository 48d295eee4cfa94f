//! `auth = "google"` with no Google access: the fake metadata server and IAM Credentials of
//! tests/common/google.rs, and a real registry behind a small proxy that, like Artifact
//! Registry, takes only Google tokens, here only those the fakes minted and the test still
//! accepts. The relay runs as a child process, so the environment it sees is its own.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine as _;
use common::google::FakeGoogle;
use common::service::{Form, RELAY, Service, deliver, notification};
use common::wait::eventually;
use common::*;

const IMPERSONATED: &str = "partner-writer@partner-prj.iam.gserviceaccount.com";

/// Which tokens the registry takes as the password of `oauth2accesstoken`.
#[derive(Clone, Debug)]
enum Accepts {
    /// Any token the fake Google minted: the identity has access.
    Minted,
    /// Only tokens minted by impersonating this account: only the partner has access.
    ImpersonatedFor(String),
    /// Only metadata-server tokens minted after the first `n`: older ones have expired.
    MintedAfter(usize),
    /// None: the identity lacks access.
    Nothing,
}

struct Gate {
    google: Arc<FakeGoogle>,
    accepts: Mutex<Accepts>,
    upstream: String,
}

impl Gate {
    fn set(&self, accepts: Accepts) {
        *self.accepts.lock().unwrap() = accepts;
    }

    fn takes(&self, token: &str) -> bool {
        let minted = self.google.minted();
        match &*self.accepts.lock().unwrap() {
            Accepts::Minted => minted.iter().any(|m| m.token == token),
            Accepts::ImpersonatedFor(email) => minted
                .iter()
                .any(|m| m.token == token && m.impersonating.as_ref() == Some(email)),
            Accepts::MintedAfter(n) => self.google.metadata_tokens()[*n..]
                .iter()
                .any(|t| t == token),
            Accepts::Nothing => false,
        }
    }
}

async fn serve(router: Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
    addr
}

/// A registry that takes only the Google tokens [`Gate`] accepts, as Basic
/// `oauth2accesstoken` passwords.
async fn checking_proxy(State(gate): State<Arc<Gate>>, req: Request) -> Response {
    let ok = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("oauth2accesstoken:").map(str::to_owned))
        .is_some_and(|t| gate.takes(&t));
    if !ok {
        return Response::builder()
            .status(401)
            .header("www-authenticate", "Basic realm=\"fake-artifact-registry\"")
            .body(Body::from(
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"token not accepted"}]}"#,
            ))
            .unwrap();
    }
    let upstream = &gate.upstream;
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
    google: Arc<FakeGoogle>,
    gate: Arc<Gate>,
    /// The registry behind the gate, as the relay reaches it.
    registry_host: String,
    registry: Registry,
    home: tempfile::TempDir,
}

async fn fakes() -> Fakes {
    let google = Arc::new(FakeGoogle::start().await);
    let registry = Registry::start().await;
    let gate = Arc::new(Gate {
        google: google.clone(),
        accepts: Mutex::new(Accepts::Minted),
        upstream: registry.host(),
    });
    let proxy = serve(
        Router::new()
            .fallback(checking_proxy)
            .with_state(gate.clone()),
    )
    .await;
    Fakes {
        google,
        gate,
        registry_host: proxy.to_string(),
        registry,
        home: tempfile::tempdir().unwrap(),
    }
}

impl Fakes {
    /// The relay's environment: ADC falls through to the (fake) metadata server.
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = std::process::Command::new(RELAY);
        c.args(args).env("DOCKER_CONFIG", "/nonexistent");
        self.google.point_at(&mut c, self.home.path());
        let mut c = tokio::process::Command::from(c);
        c.kill_on_drop(true);
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
        let f = fakes().await;
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
            f.google.metadata_tokens().len(),
            1,
            "one token for the whole copy"
        );

        // Impersonation: the registry now takes only the partner account's tokens, so the
        // copy goes through only if the relay presents the token minted for it.
        f.gate
            .set(Accepts::ImpersonatedFor(IMPERSONATED.to_owned()));
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
            f.google.impersonations(),
            [IMPERSONATED],
            "one generateAccessToken call"
        );
        let got = Seeder::new(&f.registry.host(), None)
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
        let f = fakes().await;
        let src = Registry::start().await;
        Seeder::for_registry(&src)
            .push_random_image("app", Some("v1"), Format::Oci, 62)
            .await;
        let (_d, config) = f.config(&src.host(), None);
        f.gate.set(Accepts::Nothing);
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
        // The relay did get a token: the refusal is the registry's.
        assert!(!f.google.metadata_tokens().is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_long_running_service_picks_up_refreshed_tokens() {
    with_timeout(90, async {
        let f = fakes().await;
        // 242 s tokens: google-cloud-auth refreshes tokens with less than 240 s left, so the
        // fake metadata server sees a refresh about 2 s after each issue.
        f.google.set_token_lifetime(242);
        let src = Registry::start().await;
        let s = Seeder::for_registry(&src);
        let rules = format!(
            "[[rule]]\nname = \"r\"\nsource = \"{src}/releases\"\nimages = [\".*\"]\ntags = [\".*\"]\n\
             targets = [\"{dst}/partner\"]\n\n[registry.\"{src}\"]\nauth = \"none\"\n\n[registry.\"{dst}\"]\nauth = \"google\"\n",
            src = src.host(),
            dst = f.registry_host
        );
        let svc = Service::start_with(&rules, &["--push-auth", "none"], |cmd, home| f.google.point_at(cmd, home)).await;
        let deliver = |repo: &str, digest: &str| {
            let n = notification("INSERT", &format!("{}/{repo}", src.host()), Some(digest), Some("v1"));
            let d = deliver(Form::PubSubPush, &n, "1");
            let svc = &svc;
            async move { svc.post(&d).await }
        };
        let a = s.push_random_image("releases/a", Some("v1"), Format::Oci, 63).await;
        let (status, body, _) = deliver("releases/a", &a.manifest.digest).await;
        assert_eq!(status, 200, "{body}");
        // Wait for a refresh, then make the registry refuse every token the first copy could
        // have used.
        let used = f.google.metadata_tokens().len();
        assert!(used >= 1, "the first copy used no metadata token");
        eventually(Duration::from_secs(30), "a token refresh", || async {
            let issued = f.google.metadata_tokens();
            if issued.len() > used {
                Ok(())
            } else {
                Err(format!("{issued:?}"))
            }
        })
        .await;
        f.gate.set(Accepts::MintedAfter(used));
        let b = s.push_random_image("releases/b", Some("v1"), Format::Oci, 64).await;
        let (status, body, _) = deliver("releases/b", &b.manifest.digest).await;
        assert_eq!(status, 200, "{body}");
    })
    .await;
}
