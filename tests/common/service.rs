//! The real `image-relay serve` binary on a loopback port, and deliveries shaped exactly as
//! Pub/Sub and Eventarc send them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

pub const RELAY: &str = env!("CARGO_BIN_EXE_image-relay");

/// A running `image-relay serve`, stopped with SIGTERM on drop.
pub struct Service {
    pub child: Child,
    pub port: u16,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
    pub rules: PathBuf,
    log: PathBuf,
}

/// Push-auth settings the environment could otherwise hand the relay under test.
const PUSH_AUTH_ENV: [&str; 4] = [
    "RELAY_PUSH_AUTH",
    "RELAY_PUSH_EMAILS",
    "RELAY_PUSH_AUDIENCE",
    "RELAY_JWKS_URL",
];

/// `image-relay serve` for `rules` on `127.0.0.1:port` with `extra` flags, with no Docker
/// credentials and no push-auth settings from the environment.
pub fn serve_command(rules: &std::path::Path, port: u16, extra: &[&str]) -> Command {
    let mut cmd = Command::new(RELAY);
    cmd.args([
        "serve",
        "--rules",
        rules.to_str().unwrap(),
        "--listen-address",
        "127.0.0.1",
    ])
    .args(["--port", &port.to_string()])
    .args(extra)
    .env("DOCKER_CONFIG", "/nonexistent");
    for var in PUSH_AUTH_ENV {
        cmd.env_remove(var);
    }
    cmd
}

/// Whether `serve` on `port` answers `/readyz` with 200 within 10 s; false at once if it exits.
pub async fn wait_ready(http: &reqwest::Client, child: &mut Child, port: u16) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && r.status() == 200
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Service {
    pub async fn start(rules: &str, extra: &[&str]) -> Service {
        Service::start_with(rules, extra, |_, _| {}).await
    }

    /// [`Service::start`], with `configure` adjusting the command (given the service's own
    /// directory, a home for it): pointing it at fake Google APIs, say.
    pub async fn start_with(
        rules: &str,
        extra: &[&str],
        configure: impl Fn(&mut Command, &std::path::Path),
    ) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let rules_path = dir.path().join("rules.toml");
        std::fs::write(&rules_path, rules).unwrap();
        let log = dir.path().join("relay.log");
        let http = reqwest::Client::new();
        // A free port can be taken between probing and binding: try a few.
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = serve_command(&rules_path, port, extra);
            cmd.stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            configure(&mut cmd, dir.path());
            let mut child = cmd.spawn().expect("start image-relay serve");
            if wait_ready(&http, &mut child, port).await {
                return Service {
                    child,
                    port,
                    http,
                    _dir: dir,
                    rules: rules_path,
                    log,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                text.contains("Address already in use"),
                "serve did not start:\n{text}"
            );
        }
        panic!("no free port for image-relay serve");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn post(&self, delivery: &Delivery) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.post(self.url("/")).body(delivery.body.clone());
        for (k, v) in &delivery.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.send().await.expect("POST delivery");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.unwrap_or_default();
        (
            status,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
            headers,
        )
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Service {
    /// SIGTERM, as Cloud Run stops an instance, and wait for the exit: its log is complete.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An HTTP request as Google sends it.
#[derive(Clone)]
pub struct Delivery {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Clone, Copy, Debug)]
pub enum Form {
    PubSubPush,
    EventarcBinary,
    CloudEventStructured,
    PubSubUnwrapped,
}

pub const FORMS: [Form; 4] = [
    Form::PubSubPush,
    Form::EventarcBinary,
    Form::CloudEventStructured,
    Form::PubSubUnwrapped,
];

pub fn notification(action: &str, repo: &str, digest: Option<&str>, tag: Option<&str>) -> Value {
    let mut n = json!({ "action": action });
    if let Some(d) = digest {
        n["digest"] = json!(format!("{repo}@{d}"));
    }
    if let Some(t) = tag {
        n["tag"] = json!(format!("{repo}:{t}"));
    }
    n
}

pub fn deliver(form: Form, notification: &Value, id: &str) -> Delivery {
    let data = base64::engine::general_purpose::STANDARD.encode(notification.to_string());
    let time = "2026-11-20T19:13:55.749Z";
    let message = json!({ "data": data, "messageId": id, "message_id": id, "publishTime": time, "publish_time": time });
    let wrapped = json!({ "message": message, "subscription": "projects/src/subscriptions/relay" });
    let json_ct = ("content-type".to_owned(), "application/json".to_owned());
    match form {
        Form::PubSubPush => Delivery {
            headers: vec![json_ct],
            body: wrapped.to_string().into_bytes(),
        },
        Form::EventarcBinary => Delivery {
            headers: vec![
                json_ct,
                ("ce-id".into(), id.into()),
                (
                    "ce-source".into(),
                    "//pubsub.googleapis.com/projects/src/topics/gcr".into(),
                ),
                ("ce-specversion".into(), "1.0".into()),
                (
                    "ce-type".into(),
                    "google.cloud.pubsub.topic.v1.messagePublished".into(),
                ),
                ("ce-time".into(), time.into()),
            ],
            body: wrapped.to_string().into_bytes(),
        },
        Form::CloudEventStructured => Delivery {
            headers: vec![(
                "content-type".into(),
                "application/cloudevents+json; charset=utf-8".into(),
            )],
            body: json!({
                "specversion": "1.0", "type": "google.cloud.pubsub.topic.v1.messagePublished",
                "source": "//pubsub.googleapis.com/projects/src/topics/gcr", "id": id, "time": time,
                "datacontenttype": "application/json", "data": wrapped,
            })
            .to_string()
            .into_bytes(),
        },
        Form::PubSubUnwrapped => Delivery {
            headers: vec![
                json_ct,
                ("x-goog-pubsub-message-id".into(), id.into()),
                ("x-goog-pubsub-publish-time".into(), time.into()),
                (
                    "x-goog-pubsub-subscription-name".into(),
                    "projects/src/subscriptions/relay".into(),
                ),
            ],
            body: notification.to_string().into_bytes(),
        },
    }
}

pub fn rules(source: &str, targets: &[&str], extra: &str) -> String {
    let mut hosts: Vec<&str> = std::iter::once(source)
        .chain(targets.iter().copied())
        .map(|r| r.split('/').next().unwrap())
        .collect();
    hosts.sort();
    hosts.dedup();
    let registries: String = hosts
        .iter()
        .map(|h| format!("[registry.\"{h}\"]\nauth = \"none\"\n"))
        .collect();
    let targets: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "[[rule]]\nname = \"releases\"\nsource = \"{source}\"\nimages = [\".*\"]\ntags = ['v[0-9.]+', \"latest\"]\n\
         exclude_tags = [\".*-rc\"]\ntargets = [{}]\n{extra}\n\n{registries}",
        targets.join(", ")
    )
}
