//! Registry authentication: where credentials come from, and how they become an
//! `Authorization` header for one repository scope.
//!
//! Registries either take credentials directly (Basic, or a bearer token such as a Google access
//! token) or run the token flow of the distribution spec: a `401` with
//! `WWW-Authenticate: Bearer realm=..,service=..,scope=..` sends the client to the realm for a
//! token valid for that scope. Tokens are cached per scope until shortly before they expire.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::sync::Mutex;

use super::body::{BodyError, MAX_TOKEN_RESPONSE_BYTES, read_capped};
use super::error_chain;
use super::status::status_is_retryable;

/// A secret string whose `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What a registry is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Anonymous,
    Basic {
        username: String,
        password: Secret,
    },
    /// Sent as `Authorization: Bearer` as is, and as the password of the token flow's Basic
    /// login with user `oauth2accesstoken` when a registry asks for a token exchange.
    Bearer(Secret),
    /// An OAuth2 refresh token for the registry's token service (Docker config
    /// `identitytoken`, or a credential helper answering user `<token>`): exchanged for an
    /// access token per scope with the `refresh_token` grant, never sent to the registry.
    IdentityToken(Secret),
}

/// Why credentials could not be had. What the token service answered is kept, not only said:
/// a busy token service (a retry helps) and a refusing one (someone must grant access first)
/// call for opposite reactions from the caller.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// A token service (a registry's token realm, IAM Credentials) answered with an error
    /// status. `hint` says what a refusal usually means there; it is left out of the message
    /// when the status is retryable, since it would misdirect the reader then.
    #[error("{service} answered HTTP {status}{}", hint_suffix(*.status, *.hint))]
    Status {
        /// The token service, named as in every message about it (`token service https://..`).
        service: String,
        status: u16,
        hint: Option<&'static str>,
    },
    /// No answer from a token service: connection refused or reset, timeout, broken body.
    #[error("{service}: {detail}")]
    Transport { service: String, detail: String },
    /// The token service, or the registry's challenge naming it, answered with something that
    /// is not usable: a realm that is not a URL, a body that is not a token. The same answer
    /// would come back.
    #[error("{service}: {detail}")]
    Answer { service: String, detail: String },
    /// Google's credentials library found no token. It has already retried the metadata server
    /// on its own and says whether later attempts may succeed; the status behind that is not in
    /// its public error type.
    #[error("{detail}")]
    Google { detail: String, transient: bool },
    /// The credentials themselves are missing, unreadable or unusable (Docker config, a
    /// credential helper, application default credentials): someone must fix them.
    #[error("{0}")]
    Credentials(String),
}

fn hint_suffix(status: u16, hint: Option<&str>) -> String {
    match hint {
        Some(h) if !status_is_retryable(status) => format!(" ({h})"),
        _ => String::new(),
    }
}

impl AuthError {
    /// The token service's HTTP status, when it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            AuthError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether asking again later can succeed on its own: a token service status that
    /// [`status_is_retryable`] (408, 429, 5xx), or what Google's library calls transient.
    pub fn is_retryable(&self) -> bool {
        match self {
            AuthError::Status { status, .. } => status_is_retryable(*status),
            AuthError::Google { transient, .. } => *transient,
            // Unlike a registry's, no answer from a token service is not retried: a realm whose
            // certificate nobody trusts ends up here too, and fails the same way every time.
            AuthError::Transport { .. } => false,
            AuthError::Answer { .. } | AuthError::Credentials(_) => false,
        }
    }

    /// Whether someone must grant access or fix the credentials before a token can be had: a
    /// 401/403 from the token service, and every other failure no retry gets past.
    pub fn is_denied(&self) -> bool {
        !self.is_retryable()
    }

    /// A broken or oversized answer of the token service `service`.
    /// The body of a token service's answer to `sent`, read with a cap; a failure keeps the
    /// service's status (and `hint`, what to grant when it refused), so the caller can tell a
    /// busy service from a refusal.
    pub(super) async fn answer(
        service: &str,
        sent: Result<reqwest::Response, reqwest::Error>,
        hint: Option<&'static str>,
    ) -> Result<bytes::Bytes, AuthError> {
        let resp = sent.map_err(|e| AuthError::Transport {
            service: service.to_owned(),
            detail: error_chain(&e),
        })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(AuthError::Status {
                service: service.to_owned(),
                status: status.as_u16(),
                hint,
            });
        }
        read_capped(resp, MAX_TOKEN_RESPONSE_BYTES)
            .await
            .map_err(|e| AuthError::body(service.to_owned(), e))
    }

    pub(super) fn body(service: String, e: BodyError) -> AuthError {
        match e {
            BodyError::Read(e) => AuthError::Transport {
                service,
                detail: error_chain(&e),
            },
            e @ BodyError::TooLarge { .. } => AuthError::Answer {
                service,
                detail: e.to_string(),
            },
        }
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A source of credentials for one registry. Sources that mint short-lived tokens (Google's
/// metadata server, IAM impersonation) implement this and are asked again on every new token
/// exchange and after a `401`, so a token refreshed in the middle of a long copy is picked up.
pub trait CredentialSource: Send + Sync + fmt::Debug {
    fn credential(&self) -> BoxFuture<'_, Result<Credential, AuthError>>;
}

/// Credentials known up front (anonymous, basic from a file or env var, a static token).
#[derive(Debug)]
pub struct Static(pub Credential);

impl CredentialSource for Static {
    fn credential(&self) -> BoxFuture<'_, Result<Credential, AuthError>> {
        let c = self.0.clone();
        Box::pin(async move { Ok(c) })
    }
}

/// Credentials from a Docker `config.json`: `auths` entries, `credHelpers` and `credsStore`
/// (running `docker-credential-NAME get`). Looked up once per process and kept.
#[derive(Debug)]
pub struct DockerConfig {
    host: String,
    path: Option<PathBuf>,
    cached: Mutex<Option<Credential>>,
}

impl DockerConfig {
    /// Credentials for `host` from the Docker config at `path`, or the default location
    /// (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`).
    pub fn new(host: &str, path: Option<PathBuf>) -> Self {
        DockerConfig {
            host: host.to_owned(),
            path,
            cached: Mutex::new(None),
        }
    }

    fn default_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
    }

    async fn lookup(&self) -> Result<Credential, AuthError> {
        let Some(path) = self.path.clone().or_else(Self::default_path) else {
            return Ok(Credential::Anonymous);
        };
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Credential::Anonymous),
            Err(e) => {
                return Err(AuthError::Credentials(format!(
                    "reading {}: {e}",
                    path.display()
                )));
            }
        };
        let file: DockerConfigFile = serde_json::from_str(&text)
            .map_err(|e| AuthError::Credentials(format!("{}: {e}", path.display())))?;
        file.credential_for(&self.host, &path).await
    }
}

impl CredentialSource for DockerConfig {
    fn credential(&self) -> BoxFuture<'_, Result<Credential, AuthError>> {
        Box::pin(async move {
            let mut cached = self.cached.lock().await;
            if let Some(c) = cached.as_ref() {
                return Ok(c.clone());
            }
            let c = self.lookup().await?;
            *cached = Some(c.clone());
            Ok(c)
        })
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfigFile {
    #[serde(default)]
    auths: HashMap<String, DockerAuthEntry>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct DockerAuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// `https://host/v1/` and `host` name the same registry in `auths`.
fn normalize_auth_key(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

impl DockerConfigFile {
    async fn credential_for(
        &self,
        host: &str,
        path: &std::path::Path,
    ) -> Result<Credential, AuthError> {
        if let Some(helper) = self.cred_helpers.get(host) {
            return run_credential_helper(helper, host).await;
        }
        let entry = self
            .auths
            .iter()
            .find(|(k, _)| normalize_auth_key(k) == host)
            .map(|(_, v)| v);
        if let Some(e) = entry {
            if let Some(t) = &e.registrytoken {
                return Ok(Credential::Bearer(Secret::new(t.clone())));
            }
            // Beside an identity token, `auth` holds only a placeholder user name.
            if let Some(t) = e.identitytoken.as_ref().filter(|t| !t.is_empty()) {
                return Ok(Credential::IdentityToken(Secret::new(t.clone())));
            }
            if let Some(a) = &e.auth {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(a.trim())
                    .map_err(|err| {
                        AuthError::Credentials(format!(
                            "{}: auths.{host}.auth is not base64: {err}",
                            path.display()
                        ))
                    })?;
                let s = String::from_utf8(raw).map_err(|_| {
                    AuthError::Credentials(format!(
                        "{}: auths.{host}.auth is not UTF-8",
                        path.display()
                    ))
                })?;
                let (u, p) = s.split_once(':').ok_or_else(|| {
                    AuthError::Credentials(format!(
                        "{}: auths.{host}.auth is not user:password",
                        path.display()
                    ))
                })?;
                return Ok(Credential::Basic {
                    username: u.to_owned(),
                    password: Secret::new(p),
                });
            }
            if let (Some(u), Some(p)) = (&e.username, &e.password) {
                return Ok(Credential::Basic {
                    username: u.clone(),
                    password: Secret::new(p.clone()),
                });
            }
        }
        if let Some(store) = &self.creds_store {
            return run_credential_helper(store, host).await;
        }
        Ok(Credential::Anonymous)
    }
}

/// Runs `docker-credential-NAME get` with the host on stdin, as Docker does.
async fn run_credential_helper(name: &str, host: &str) -> Result<Credential, AuthError> {
    use tokio::io::AsyncWriteExt;
    let program = format!("docker-credential-{name}");
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| AuthError::Credentials(format!("running {program}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(host.as_bytes())
            .await
            .map_err(|e| AuthError::Credentials(format!("writing to {program}: {e}")))?;
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .map_err(|_| AuthError::Credentials(format!("{program} did not answer within 30 s")))?
        .map_err(|e| AuthError::Credentials(format!("running {program}: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "credentials not found" is how helpers say "no entry": fall back to anonymous.
        if stdout.contains("credentials not found") {
            return Ok(Credential::Anonymous);
        }
        return Err(AuthError::Credentials(format!(
            "{program} get failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    #[derive(serde::Deserialize)]
    struct HelperOut {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let h: HelperOut = serde_json::from_str(&stdout).map_err(|e| {
        AuthError::Credentials(format!("{program} printed no credentials JSON: {e}"))
    })?;
    // Docker's convention for helpers that hold an identity token instead of a password.
    if h.username == "<token>" {
        return Ok(Credential::IdentityToken(Secret::new(h.secret)));
    }
    Ok(Credential::Basic {
        username: h.username,
        password: Secret::new(h.secret),
    })
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Challenge {
    /// Parse `Bearer realm="..",service="..",scope=".."` or `Basic realm=".."`.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(rest);
        let realm = params.get("realm")?.clone();
        Some(Challenge::Bearer {
            realm,
            service: params.get("service").cloned(),
        })
    }
}

/// `k="v", k2=v2` with commas allowed inside quotes (scopes contain them).
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    out
}

/// The access one request needs, as token-flow scopes (`repository:team/app:pull,push`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope(Vec<String>);

impl Scope {
    pub fn pull(repo: &str) -> Scope {
        Scope(vec![format!("repository:{repo}:pull")])
    }
    pub fn push(repo: &str) -> Scope {
        Scope(vec![format!("repository:{repo}:pull,push")])
    }
    /// A cross-repository mount needs push on the target and pull on the source.
    pub fn mount(target: &str, from: &str) -> Scope {
        Scope(vec![
            format!("repository:{target}:pull,push"),
            format!("repository:{from}:pull"),
        ])
    }
    /// Registry-wide listing (`/v2/_catalog`).
    pub fn catalog() -> Scope {
        Scope(vec!["registry:catalog:*".to_owned()])
    }
    pub fn parts(&self) -> &[String] {
        &self.0
    }
}

/// Tokens must be refreshed a little before the registry stops accepting them.
const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// The distribution token spec says to assume 60 s when `expires_in` is missing.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Who asks, in a `refresh_token` grant (the token spec requires a client id).
const OAUTH_CLIENT_ID: &str = "image-relay";

/// Authentication state for one registry host: its credential source, the challenge it
/// answered with, and tokens per scope.
#[derive(Debug)]
pub struct HostAuth {
    source: Arc<dyn CredentialSource>,
    challenge: std::sync::Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<Scope, (Secret, Instant)>>,
}

impl HostAuth {
    pub fn new(source: Arc<dyn CredentialSource>) -> Self {
        HostAuth {
            source,
            challenge: std::sync::Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn challenge(&self) -> Option<Challenge> {
        self.challenge.lock().map(|c| c.clone()).unwrap_or(None)
    }

    /// Remember what the registry asked for in its last `401`.
    pub fn learn(&self, challenge: Challenge) {
        if let Ok(mut c) = self.challenge.lock() {
            *c = Some(challenge);
        }
    }

    /// The access token behind this host's credentials, for Google APIs beside the registry
    /// (a Google token is the password of `oauth2accesstoken`, or a bearer token).
    pub async fn bearer_token(&self) -> Result<Option<String>, AuthError> {
        Ok(match self.source.credential().await? {
            Credential::Bearer(t) => Some(t.expose().to_owned()),
            Credential::Basic { username, password } if username == "oauth2accesstoken" => {
                Some(password.expose().to_owned())
            }
            _ => None,
        })
    }

    /// Drop a cached token the registry has just refused.
    pub async fn forget(&self, scope: &Scope) {
        self.tokens.lock().await.remove(scope);
    }

    /// The `Authorization` header value for a request needing `scope`, or `None` to go
    /// anonymously. Before any challenge is known, Basic credentials are sent up front so that a
    /// Basic-auth registry costs no extra round trip.
    pub async fn header(
        &self,
        http: &reqwest::Client,
        scope: &Scope,
    ) -> Result<Option<String>, AuthError> {
        let challenge = self.challenge();
        match challenge {
            Some(Challenge::Bearer { realm, service }) => {
                let mut tokens = self.tokens.lock().await;
                if let Some((t, until)) = tokens.get(scope)
                    && Instant::now() < *until
                {
                    return Ok(Some(format!("Bearer {}", t.expose())));
                }
                let cred = self.source.credential().await?;
                let (token, lifetime) =
                    fetch_token(http, &realm, service.as_deref(), scope, &cred).await?;
                let until = Instant::now() + lifetime.saturating_sub(TOKEN_EXPIRY_MARGIN);
                let header = format!("Bearer {}", token.expose());
                tokens.insert(scope.clone(), (token, until));
                Ok(Some(header))
            }
            Some(Challenge::Basic) => match self.source.credential().await? {
                Credential::IdentityToken(_) => Err(AuthError::Credentials(
                    "the registry asks for Basic auth, but the credential is an identity token, \
                     which only a token service accepts"
                        .into(),
                )),
                cred => Ok(direct_header(&cred)),
            },
            None => Ok(direct_header(&self.source.credential().await?)),
        }
    }
}

/// The header sent before the registry has challenged, or after it asked for Basic auth. An
/// identity token is not sent: the registry's `401` names the token service to exchange it at.
fn direct_header(cred: &Credential) -> Option<String> {
    match cred {
        Credential::Anonymous | Credential::IdentityToken(_) => None,
        Credential::Basic { username, password } => Some(basic_header(username, password.expose())),
        Credential::Bearer(t) => Some(format!("Bearer {}", t.expose())),
    }
}

fn basic_header(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The Basic login a `GET` to the token service carries, if any. A bearer credential (an OAuth
/// access token) logs in the way Google's registries document it: Basic with the fixed user
/// `oauth2accesstoken`.
fn token_login(cred: &Credential) -> Option<String> {
    match cred {
        Credential::Basic { username, password } => Some(basic_header(username, password.expose())),
        Credential::Bearer(t) => Some(basic_header("oauth2accesstoken", t.expose())),
        Credential::Anonymous | Credential::IdentityToken(_) => None,
    }
}

/// The distribution token flow: `GET realm?service=..&scope=..`, Basic credentials if any; an
/// identity token is exchanged with the OAuth2 `refresh_token` grant instead (`POST realm`).
async fn fetch_token(
    http: &reqwest::Client,
    realm: &str,
    service: Option<&str>,
    scope: &Scope,
    cred: &Credential,
) -> Result<(Secret, Duration), AuthError> {
    let url = url::Url::parse(realm).map_err(|e| AuthError::Answer {
        service: format!("token realm {realm:?}"),
        detail: e.to_string(),
    })?;
    let req = match cred {
        // The refresh token goes in a form body, never in a URL.
        Credential::IdentityToken(refresh) => {
            let scopes = scope.parts().join(" ");
            let mut form = vec![
                ("grant_type", "refresh_token"),
                ("client_id", OAUTH_CLIENT_ID),
                ("refresh_token", refresh.expose()),
                ("scope", scopes.as_str()),
            ];
            if let Some(s) = service {
                form.push(("service", s));
            }
            http.post(url.clone()).form(&form)
        }
        _ => {
            let mut get = url.clone();
            {
                let mut q = get.query_pairs_mut();
                if let Some(s) = service {
                    q.append_pair("service", s);
                }
                for s in scope.parts() {
                    q.append_pair("scope", s);
                }
            }
            match token_login(cred) {
                Some(login) => http.get(get).header("Authorization", login),
                None => http.get(get),
            }
        }
    };
    let service = format!(
        "token service {}://{}{}",
        url.scheme(),
        url.authority(),
        url.path()
    );
    let body = AuthError::answer(&service, req.send().await, None).await?;
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        access_token: Option<String>,
        #[serde(default)]
        expires_in: Option<u64>,
    }
    let t: TokenResponse = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => {
            return Err(AuthError::Answer {
                service,
                detail: format!("not a token response: {e}"),
            });
        }
    };
    let Some(token) = t.token.or(t.access_token).filter(|t| !t.is_empty()) else {
        return Err(AuthError::Answer {
            service,
            detail: "response has no token".into(),
        });
    };
    let lifetime = t
        .expires_in
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TOKEN_LIFETIME)
        .max(DEFAULT_TOKEN_LIFETIME);
    Ok((Secret::new(token), lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::error::{Op, RegistryError};

    #[test]
    fn bearer_challenge_with_quoted_commas_parses() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into())
            }
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate"), None);
        // Artifact Registry sends no service parameter.
        assert!(matches!(
            Challenge::parse(r#"Bearer realm="https://us-docker.pkg.dev/v2/token""#),
            Some(Challenge::Bearer { service: None, .. })
        ));
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let c = Credential::Basic {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    /// A token service on loopback answering every request with `status` and `body`.
    async fn token_service(status: u16, body: &'static str) -> String {
        let app = axum::Router::new().fallback(move || async move {
            (axum::http::StatusCode::from_u16(status).unwrap(), body)
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        format!("http://{addr}/token")
    }

    /// What a request for a pull token meets at `realm`, as the registry client sees it.
    async fn token_error(realm: String) -> RegistryError {
        let auth = HostAuth::new(Arc::new(Static(Credential::Basic {
            username: "relay".into(),
            password: Secret::new("s3cret"),
        })));
        auth.learn(Challenge::Bearer {
            realm,
            service: Some("registry.example".into()),
        });
        let e = auth
            .header(&reqwest::Client::new(), &Scope::pull("team/app"))
            .await
            .unwrap_err();
        RegistryError::Auth {
            op: Op {
                method: "GET",
                registry: "registry.example".into(),
                repository: "team/app".into(),
                object: "manifest v1".into(),
            },
            auth: Box::new(e),
        }
    }

    #[tokio::test]
    async fn a_busy_token_service_is_retried_and_a_refusing_one_is_not() {
        let e = token_error(token_service(503, "busy").await).await;
        assert!(e.is_retryable() && !e.is_denied(), "{e}");
        assert!(e.to_string().contains("answered HTTP 503"), "{e}");
        let e = token_error(token_service(429, "").await).await;
        assert!(e.is_retryable() && !e.is_denied(), "{e}");

        let e = token_error(token_service(401, "no").await).await;
        assert!(!e.is_retryable() && e.is_denied(), "{e}");
        let RegistryError::Auth { auth, .. } = &e else {
            panic!("not an auth error: {e}")
        };
        assert_eq!(auth.status(), Some(401));
        // The token service's status is not the registry's.
        assert_eq!(e.status(), None);
        let e = token_error(token_service(403, "no").await).await;
        assert!(!e.is_retryable() && e.is_denied(), "{e}");
    }

    #[tokio::test]
    async fn unusable_token_answers_fail_for_good_naming_the_service() {
        let e = token_error(token_service(200, "<html>").await).await;
        assert!(!e.is_retryable() && e.is_denied(), "{e}");
        assert!(e.to_string().contains("not a token response"), "{e}");

        let huge: &'static str = "x".repeat(MAX_TOKEN_RESPONSE_BYTES + 1).leak();
        let e = token_error(token_service(200, huge).await).await;
        let s = e.to_string();
        assert!(!e.is_retryable(), "{s}");
        assert!(
            s.contains("token service http://127.0.0.1:") && s.contains("limit of 1 MiB"),
            "{s}"
        );
    }

    #[tokio::test]
    async fn docker_config_auths_and_keys_with_scheme_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("relay:s3cret");
        std::fs::write(
            &path,
            format!(r#"{{"auths":{{"https://reg.example:5000/v1/":{{"auth":"{auth}"}}}}}}"#),
        )
        .unwrap();
        let c = DockerConfig::new("reg.example:5000", Some(path.clone()))
            .credential()
            .await
            .unwrap();
        assert_eq!(
            c,
            Credential::Basic {
                username: "relay".into(),
                password: Secret::new("s3cret")
            }
        );
        let none = DockerConfig::new("other.example", Some(path))
            .credential()
            .await
            .unwrap();
        assert_eq!(none, Credential::Anonymous);
    }
}
