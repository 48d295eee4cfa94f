//! Registry settings (not process configuration): the `[registry."HOST"]` tables shared by rule files and `copy --config`.
//!
//! ```toml
//! [registry."registry.partner.example"]
//! auth = "basic"
//! username = "relay"
//! password_env = "PARTNER_REGISTRY_PASSWORD"   # or password_file = "/secrets/partner"
//!
//! [registry."127.0.0.1:5002"]
//! auth = "none"
//! insecure = true
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::auth::{Credential, CredentialSource, DockerConfig, Secret, Static};
use super::endpoints::GoogleApis;
use super::google::{GoogleCredentials, GoogleIdentity};

/// A settings file that could not be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// TOML errors carry line, column and the offending key in their message.
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: registry {host:?}: {reason}")]
    Registry {
        path: String,
        host: String,
        reason: String,
    },
}

/// How the relay authenticates to one registry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AuthKind {
    /// Anonymous: no credentials are sent.
    None,
    /// Username and password, the password from `password_env` or `password_file`.
    Basic,
    /// The user's Docker `config.json` (`auths`, identity tokens, `credHelpers`, `credsStore`).
    DockerConfig,
    /// A static bearer token from `token_env` or `token_file`.
    Bearer,
    /// Google Application Default Credentials, optionally impersonating `impersonate`.
    Google,
}

impl AuthKind {
    /// The value as written in a rule file.
    pub fn name(&self) -> &'static str {
        match self {
            AuthKind::None => "\"none\"",
            AuthKind::Basic => "\"basic\"",
            AuthKind::DockerConfig => "\"docker-config\"",
            AuthKind::Bearer => "\"bearer\"",
            AuthKind::Google => "\"google\"",
        }
    }
}

/// One `[registry."HOST"]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// How to authenticate.
    pub auth: AuthKind,
    /// Plain HTTP instead of HTTPS. Loopback hosts default to plain HTTP (unless they name a
    /// `ca_file`); every other host must say so explicitly.
    #[serde(default)]
    pub insecure: Option<bool>,
    /// PEM bundle of certificate authorities trusted for this host on top of the system's
    /// (a registry with a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Basic auth user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the Basic auth password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the Basic auth password (trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding a bearer token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// File holding a bearer token (trailing newline ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Docker config file for `auth = "docker-config"` (default: `$DOCKER_CONFIG` or
    /// `~/.docker/config.json`).
    #[serde(default)]
    pub docker_config: Option<PathBuf>,
    /// With `auth = "google"`: the service account whose tokens to use, minted by the relay's
    /// own identity through IAM Credentials (it needs `roles/iam.serviceAccountTokenCreator`).
    #[serde(default)]
    pub impersonate: Option<String>,
}

/// Settings for every registry the relay talks to, by host (`host[:port]`).
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    pub registries: BTreeMap<String, RegistrySettings>,
}

#[derive(Deserialize)]
struct FileShape {
    #[serde(default)]
    registry: BTreeMap<String, RegistrySettings>,
    /// Rules live in the same files; `copy --config` reads only the registry tables.
    #[serde(default, rename = "rule")]
    _rules: Option<toml::Value>,
}

impl RegistryConfig {
    /// Read registry tables from a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse registry tables; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let shape: FileShape = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        for (host, s) in &shape.registry {
            s.validate().map_err(|reason| ConfigError::Registry {
                path: origin.to_owned(),
                host: host.clone(),
                reason,
            })?;
        }
        Ok(RegistryConfig {
            registries: shape.registry,
        })
    }

    /// Whether to use plain HTTP for `host`: only when configured, or for loopback hosts that
    /// are not configured otherwise.
    pub fn insecure(&self, host: &str) -> bool {
        match self.registries.get(host) {
            Some(RegistrySettings {
                insecure: Some(v), ..
            }) => *v,
            Some(RegistrySettings {
                ca_file: Some(_), ..
            }) => false,
            _ => is_loopback(host),
        }
    }

    /// The extra certificate authorities `host` is trusted with (`ca_file`), if any.
    pub fn trusted_cas(
        &self,
        host: &str,
    ) -> Result<Option<Vec<reqwest::Certificate>>, ConfigError> {
        let Some(path) = self.registries.get(host).and_then(|s| s.ca_file.as_ref()) else {
            return Ok(None);
        };
        let err = |reason: String| ConfigError::Registry {
            path: "settings".into(),
            host: host.to_owned(),
            reason,
        };
        let pem =
            std::fs::read(path).map_err(|e| err(format!("ca_file {}: {e}", path.display())))?;
        let cas = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| err(format!("ca_file {}: {e}", path.display())))?;
        if cas.is_empty() {
            return Err(err(format!(
                "ca_file {}: no PEM certificate in it",
                path.display()
            )));
        }
        Ok(Some(cas))
    }

    /// `host` as the network sees it, for telling whether two names reach the same registry:
    /// lowercase, every loopback name (`localhost`, `127.0.0.0/8`, `[::1]`) as one, and the
    /// scheme's default port (443, or 80 for a plain-HTTP host) dropped.
    pub fn network_host(&self, host: &str) -> String {
        let default_port = if self.insecure(host) { "80" } else { "443" };
        let host = host.to_ascii_lowercase();
        let (name, port) = split_host_port(&host);
        let name = if is_loopback_name(name) {
            "loopback"
        } else {
            name
        };
        match port {
            Some(p) if p != default_port => format!("{name}:{p}"),
            _ => name.to_owned(),
        }
    }

    /// The credential source for `host`. Hosts without settings fall back to the Docker config,
    /// which yields anonymous access when it has no entry.
    pub fn credentials(
        &self,
        host: &str,
        google: &Arc<GoogleIdentity>,
        apis: &GoogleApis,
        http: &reqwest::Client,
    ) -> Result<Arc<dyn CredentialSource>, ConfigError> {
        let Some(s) = self.registries.get(host) else {
            return Ok(Arc::new(DockerConfig::new(host, None)));
        };
        let err = |reason: String| ConfigError::Registry {
            path: "settings".into(),
            host: host.to_owned(),
            reason,
        };
        Ok(match s.auth {
            AuthKind::None => Arc::new(Static(Credential::Anonymous)),
            AuthKind::DockerConfig => Arc::new(DockerConfig::new(host, s.docker_config.clone())),
            AuthKind::Basic => {
                let password = read_secret(s.password_env.as_deref(), s.password_file.as_deref())
                    .map_err(|e| err(format!("password: {e}")))?;
                Arc::new(Static(Credential::Basic {
                    username: s.username.clone().unwrap_or_default(),
                    password,
                }))
            }
            AuthKind::Bearer => {
                let token = read_secret(s.token_env.as_deref(), s.token_file.as_deref())
                    .map_err(|e| err(format!("token: {e}")))?;
                Arc::new(Static(Credential::Bearer(token)))
            }
            AuthKind::Google => Arc::new(GoogleCredentials::new(
                google.clone(),
                s.impersonate.clone(),
                &apis.iam_credentials,
                http.clone(),
            )),
        })
    }
}

impl RegistrySettings {
    /// Check that the keys present fit the auth kind.
    pub fn validate(&self) -> Result<(), String> {
        match self.auth {
            AuthKind::Basic => {
                if self.username.as_deref().is_none_or(str::is_empty) {
                    return Err("auth = \"basic\" needs username".into());
                }
                if self.password_env.is_some() == self.password_file.is_some() {
                    return Err(
                        "auth = \"basic\" needs exactly one of password_env, password_file".into(),
                    );
                }
            }
            AuthKind::Bearer => {
                if self.token_env.is_some() == self.token_file.is_some() {
                    return Err(
                        "auth = \"bearer\" needs exactly one of token_env, token_file".into(),
                    );
                }
            }
            AuthKind::Google => {
                if let Some(sa) = &self.impersonate
                    && !(sa.contains('@') && sa.ends_with(".gserviceaccount.com"))
                {
                    return Err(format!(
                        "impersonate = {sa:?} is not a service account email"
                    ));
                }
            }
            AuthKind::None | AuthKind::DockerConfig => {}
        }
        let stray = [
            (
                "username",
                self.username.is_some() && self.auth != AuthKind::Basic,
            ),
            (
                "password_env",
                self.password_env.is_some() && self.auth != AuthKind::Basic,
            ),
            (
                "password_file",
                self.password_file.is_some() && self.auth != AuthKind::Basic,
            ),
            (
                "token_env",
                self.token_env.is_some() && self.auth != AuthKind::Bearer,
            ),
            (
                "token_file",
                self.token_file.is_some() && self.auth != AuthKind::Bearer,
            ),
            (
                "docker_config",
                self.docker_config.is_some() && self.auth != AuthKind::DockerConfig,
            ),
            (
                "impersonate",
                self.impersonate.is_some() && self.auth != AuthKind::Google,
            ),
        ];
        if self.ca_file.is_some() && self.insecure == Some(true) {
            return Err(
                "ca_file does not apply to insecure = true (plain HTTP has no certificate)".into(),
            );
        }
        if let Some((key, _)) = stray.iter().find(|(_, bad)| *bad) {
            return Err(format!(
                "{key} does not apply to auth = {}",
                self.auth.name()
            ));
        }
        Ok(())
    }
}

fn read_secret(env: Option<&str>, file: Option<&Path>) -> Result<Secret, String> {
    match (env, file) {
        (Some(var), _) => std::env::var(var)
            .map(Secret::new)
            .map_err(|_| format!("environment variable {var} is not set")),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|s| Secret::new(s.trim_end_matches(['\n', '\r'])))
            .map_err(|e| format!("{}: {e}", path.display())),
        (None, None) => Err("no source configured".into()),
    }
}

/// `host[:port]` or `[v6]:port` into the name (brackets kept off) and the port.
fn split_host_port(host: &str) -> (&str, Option<&str>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((name, after)) => (name, after.strip_prefix(':')),
            None => (rest, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    }
}

/// `127.0.0.0/8`, `localhost` and `[::1]`, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    is_loopback_name(split_host_port(host).0)
}

/// A host name without port (and without brackets) that names this machine.
fn is_loopback_name(name: &str) -> bool {
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_default_to_plain_http_others_do_not() {
        let c = RegistryConfig::default();
        assert!(c.insecure("127.0.0.1:5000"));
        assert!(c.insecure("localhost:5000"));
        assert!(c.insecure("[::1]:5000"));
        assert!(!c.insecure("registry.example"));
        assert!(!c.insecure("127.0.0.1.nip.io"));
    }

    #[test]
    fn network_hosts_compare_as_the_network_does() {
        let c = RegistryConfig::default();
        let same = |a: &str, b: &str| c.network_host(a) == c.network_host(b);
        assert!(same("localhost:5000", "127.0.0.1:5000"));
        assert!(same("[::1]:5000", "127.0.0.1:5000"));
        assert!(same("LOCALHOST:5000", "127.0.0.2:5000"));
        assert!(same("Registry.Example", "registry.example:443"));
        assert!(
            same("127.0.0.1", "localhost:80"),
            "loopback is plain HTTP by default"
        );
        assert!(!same("127.0.0.1:5000", "127.0.0.1:5001"));
        assert!(!same("registry.example", "registry.example:80"));
        assert!(!same("registry.example", "other.example"));
    }

    #[test]
    fn unknown_keys_are_errors_with_line_and_column() {
        let e = RegistryConfig::parse(
            "[registry.\"r.example\"]\nauth = \"none\"\npasword_env = \"X\"\n",
            "relay.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("relay.toml"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("pasword_env"), "{e}");
    }

    #[test]
    fn basic_auth_needs_username_and_one_password_source() {
        let e = RegistryConfig::parse(
            "[registry.\"r\"]\nauth = \"basic\"\nusername = \"u\"\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("password_env"), "{e}");
        let e = RegistryConfig::parse(
            "[registry.\"r\"]\nauth = \"none\"\nusername = \"u\"\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("username does not apply"), "{e}");
    }

    #[test]
    fn the_shipped_registry_example_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/registries.example.toml");
        let c = RegistryConfig::load(Path::new(path)).unwrap();
        assert!(!c.insecure("registry.internal.example"));
        assert!(c.registries["registry.internal.example"].ca_file.is_some());
    }

    #[test]
    fn a_ca_file_means_https_must_hold_certificates_and_does_not_fit_plain_http() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        let toml = |extra: &str| {
            format!(
                "[registry.\"127.0.0.1:5000\"]\nauth = \"none\"\nca_file = {:?}\n{extra}",
                pem.display().to_string()
            )
        };
        let e = RegistryConfig::parse(&toml("insecure = true\n"), "f.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ca_file does not apply to insecure = true"),
            "{e}"
        );
        let c = RegistryConfig::parse(&toml(""), "f.toml").unwrap();
        assert!(
            !c.insecure("127.0.0.1:5000"),
            "a loopback host with a CA speaks HTTPS"
        );
        let e = c.trusted_cas("127.0.0.1:5000").unwrap_err().to_string();
        assert!(e.contains("127.0.0.1:5000") && e.contains("ca.pem"), "{e}");
        std::fs::write(&pem, "not a certificate\n").unwrap();
        let e = c.trusted_cas("127.0.0.1:5000").unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn password_file_is_read_without_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        let toml = format!(
            "[registry.\"r\"]\nauth = \"basic\"\nusername = \"u\"\npassword_file = {:?}\n",
            p.display().to_string()
        );
        let c = RegistryConfig::parse(&toml, "f.toml").unwrap();
        let google = Arc::new(GoogleIdentity::default());
        assert!(
            c.credentials(
                "r",
                &google,
                &GoogleApis::default(),
                &reqwest::Client::new()
            )
            .is_ok()
        );
    }
}
