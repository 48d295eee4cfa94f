//! The audit trail of a scenario, read back from the service's log output field by field:
//! one image released, one held by severity, one held while its scan is pending and then
//! released, one ignored. Artifact Analysis and the metadata server are fakes on loopback.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use common::service::{Form, RELAY, deliver, free_port, notification, wait_ready};
use common::*;
use serde_json::{Value, json};

/// resourceUrl -> (scan status, vulnerability occurrences).
type Findings = Arc<Mutex<HashMap<String, (String, Vec<Value>)>>>;

async fn serve(router: axum::Router) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
    addr
}

async fn metadata_token(headers: HeaderMap) -> Response {
    if headers.get("metadata-flavor").is_none() {
        return axum::http::StatusCode::FORBIDDEN.into_response();
    }
    axum::Json(json!({ "access_token": "scan-token", "expires_in": 3600, "token_type": "Bearer" }))
        .into_response()
}

/// `GET /v1/projects/P/occurrences?filter=kind="K" AND resourceUrl="U"`.
async fn occurrences(
    State(f): State<Findings>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer scan-token") {
        return axum::http::StatusCode::UNAUTHORIZED.into_response();
    }
    let filter = q.get("filter").cloned().unwrap_or_default();
    let url = filter
        .split("resourceUrl=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
        .to_owned();
    let state = f.lock().unwrap().get(&url).cloned();
    let occ: Vec<Value> = match state {
        None => Vec::new(),
        Some((status, vulns)) => {
            if filter.contains("kind=\"DISCOVERY\"") {
                vec![
                    json!({ "kind": "DISCOVERY", "resourceUri": url, "discovery": { "analysisStatus": status } }),
                ]
            } else {
                vulns
            }
        }
    };
    axum::Json(json!({ "occurrences": occ })).into_response()
}

fn vuln(url: &str, cve: &str, severity: &str, package: &str) -> Value {
    json!({
        "kind": "VULNERABILITY", "resourceUri": url, "noteName": format!("projects/goog-vulnz/notes/{cve}"),
        "vulnerability": {
            "effectiveSeverity": severity, "shortDescription": cve, "fixAvailable": true,
            "packageIssue": [{ "affectedPackage": package, "fixAvailable": true, "effectiveSeverity": severity }]
        }
    })
}

fn audit_records(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "audit")
        .map(|v| v["audit"].clone())
        .collect()
}

#[tokio::test]
async fn every_decision_leaves_one_audit_record() {
    with_timeout(120, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let findings: Findings = Arc::default();
        let mds = serve(axum::Router::new().fallback(metadata_token)).await;
        let ca = serve(axum::Router::new().fallback(occurrences).with_state(findings.clone())).await;
        let s = Seeder::for_registry(&src);
        let url = |digest: &str| format!("https://{}/acme/releases/{}", src.host(), digest);

        let clean = s.push_random_image("acme/releases/clean", Some("v1"), Format::Oci, 121).await;
        let vulnerable = s.push_random_image("acme/releases/vulnerable", Some("v1"), Format::Oci, 122).await;
        let scanning = s.push_random_image("acme/releases/scanning", Some("v1"), Format::Oci, 123).await;
        let nightly = s.push_random_image("acme/releases/clean", Some("nightly"), Format::Oci, 124).await;
        {
            let mut f = findings.lock().unwrap();
            f.insert(url(&format!("clean@{}", clean.manifest.digest)), ("FINISHED_SUCCESS".into(), vec![]));
            let v = url(&format!("vulnerable@{}", vulnerable.manifest.digest));
            f.insert(v.clone(), ("FINISHED_SUCCESS".into(), vec![vuln(&v, "CVE-2026-0001", "CRITICAL", "openssl")]));
            f.insert(url(&format!("scanning@{}", scanning.manifest.digest)), ("SCANNING".into(), vec![]));
        }

        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.toml");
        std::fs::write(
            &rules,
            format!(
                "[[rule]]\nname = \"to-partner\"\nsource = \"{src}/acme/releases\"\nimages = [\".*\"]\ntags = ['v[0-9]+']\n\
                 targets = [\"{dst}/partner\"]\nvulnerabilities = {{ block = \"HIGH\", require_scan = true }}\n\n\
                 [registry.\"{src}\"]\nauth = \"none\"\n[registry.\"{dst}\"]\nauth = \"none\"\n",
                src = src.host(),
                dst = dst.host()
            ),
        )
        .unwrap();
        let log_path = dir.path().join("relay.log");
        let port = free_port();
        let mut child: Child = Command::new(RELAY)
            .args(["serve", "--rules", rules.to_str().unwrap(), "--push-auth", "none", "--listen-address", "127.0.0.1"])
            .args(["--port", &port.to_string(), "--log-format", "json"])
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .env("HOME", dir.path())
            .env("GCE_METADATA_HOST", mds.to_string())
            .env("RELAY_CONTAINER_ANALYSIS_URL", format!("http://{ca}"))
            .env("DOCKER_CONFIG", "/nonexistent")
            .stderr(std::fs::File::create(&log_path).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let http = reqwest::Client::new();
        assert!(wait_ready(&http, &mut child, port).await);
        let post = |repo: &str, digest: &str, tag: &str, id: &str| {
            let n = notification("INSERT", &format!("{}/acme/releases/{repo}", src.host()), Some(digest), Some(tag));
            let d = deliver(Form::PubSubPush, &n, id);
            let req = http.post(format!("http://127.0.0.1:{port}/")).header("content-type", "application/json").body(d.body);
            async move { req.send().await.unwrap().status().as_u16() }
        };
        assert_eq!(post("clean", &clean.manifest.digest, "v1", "m-released").await, 200);
        assert_eq!(post("vulnerable", &vulnerable.manifest.digest, "v1", "m-held").await, 200);
        assert_eq!(post("scanning", &scanning.manifest.digest, "v1", "m-pending").await, 503, "Pub/Sub must come back");
        findings.lock().unwrap().get_mut(&url(&format!("scanning@{}", scanning.manifest.digest))).unwrap().0 = "FINISHED_SUCCESS".into();
        assert_eq!(post("scanning", &scanning.manifest.digest, "v1", "m-pending").await, 200);
        assert_eq!(post("clean", &nightly.manifest.digest, "nightly", "m-ignored").await, 204);
        // A signature pushed after the released image follows it, without a scan of its own.
        let sig = s.push_cosign_signature("acme/releases/clean", &clean.manifest).await;
        let sig_tag = format!("sha256-{}.sig", clean.manifest.hex());
        assert_eq!(post("clean", &sig.digest, &sig_tag, "m-signature").await, 200);
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();

        let log = std::fs::read_to_string(&log_path).unwrap();
        let records = audit_records(&log);
        assert_eq!(records.len(), 6, "one record per decision:\n{log}");
        let by = |id: &str| records.iter().filter(|r| r["message_id"] == id).cloned().collect::<Vec<_>>();

        let released = &by("m-released")[0];
        assert_eq!(released["version"], 1);
        assert_eq!(released["action"], "INSERT");
        assert_eq!(released["delivery"], "pubsub_push");
        assert_eq!(released["source"], format!("{}/acme/releases/clean:v1@{}", src.host(), clean.manifest.digest));
        assert_eq!(released["digest"], clean.manifest.digest.as_str());
        assert_eq!(released["decision"], "copied");
        assert_eq!(released["rules"], json!(["to-partner"]));
        let t = &released["targets"][0];
        assert_eq!(t["rule"], "to-partner");
        assert_eq!(t["target"], format!("{}/partner/clean:v1", dst.host()));
        assert_eq!(t["outcome"], "copied");
        assert!(t["bytes"].as_u64().unwrap() > 0 && released["bytes"] == t["bytes"], "{released}");
        assert!(released["time"].as_str().unwrap().ends_with('Z'));
        assert!(released["duration_ms"].is_u64());

        let held = &by("m-held")[0];
        assert_eq!(held["decision"], "held");
        assert_eq!(held["targets"][0]["outcome"], "held");
        assert_eq!(held["targets"][0]["gate"], "vulnerabilities");
        let reason = held["targets"][0]["reason"].as_str().unwrap();
        assert!(reason.contains("CVE-2026-0001") && reason.contains("CRITICAL") && reason.contains("openssl"), "{reason}");
        assert_eq!(held["bytes"], 0);

        let pending = by("m-pending");
        assert_eq!(pending.len(), 2, "the pending delivery and its redelivery");
        assert_eq!(pending[0]["decision"], "pending");
        assert_eq!(pending[0]["targets"][0]["gate"], "vulnerabilities");
        assert_eq!(pending[1]["decision"], "copied");

        let ignored = &by("m-ignored")[0];
        assert_eq!(ignored["decision"], "ignored");
        assert_eq!(ignored["targets"], json!([]));
        assert_eq!(ignored["ignored"][0]["rule"], "to-partner");
        assert_eq!(ignored["ignored"][0]["clause"], "tag");

        let signature = &by("m-signature")[0];
        assert_eq!(signature["decision"], "copied", "{signature}");
        assert!(
            Seeder::for_registry(&dst).get_manifest_raw("partner/clean", &sig_tag).await.is_some(),
            "the signature followed its image"
        );

        // Nothing secret: the metadata token never appears.
        assert!(!log.contains("scan-token"));
        assert!(Seeder::for_registry(&dst).get_manifest_raw("partner/vulnerable", "v1").await.is_none());
        assert!(Seeder::for_registry(&dst).get_manifest_raw("partner/scanning", "v1").await.is_some());
    })
    .await;
}
