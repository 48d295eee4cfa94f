//! The audit trail of a scenario, read back from the service's log output field by field:
//! one image released, one held by severity, one held while its scan is pending and then
//! released, one ignored. Artifact Analysis and the metadata server are the fakes of
//! tests/common/google.rs.

mod common;

use common::google::{FakeGoogle, vulnerability_occurrence};
use common::service::{Form, Service, deliver, notification};
use common::*;
use serde_json::{Value, json};

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
        let google = FakeGoogle::start().await;
        let s = Seeder::for_registry(&src);
        let url = |digest: &str| format!("https://{}/acme/releases/{}", src.host(), digest);

        let clean = s.push_random_image("acme/releases/clean", Some("v1"), Format::Oci, 121).await;
        let vulnerable = s.push_random_image("acme/releases/vulnerable", Some("v1"), Format::Oci, 122).await;
        let scanning = s.push_random_image("acme/releases/scanning", Some("v1"), Format::Oci, 123).await;
        let nightly = s.push_random_image("acme/releases/clean", Some("nightly"), Format::Oci, 124).await;
        google.set_scan_status(&url(&format!("clean@{}", clean.manifest.digest)), "FINISHED_SUCCESS");
        let v = url(&format!("vulnerable@{}", vulnerable.manifest.digest));
        google.set_scan_status(&v, "FINISHED_SUCCESS");
        google.add_occurrence(&v, vulnerability_occurrence(&v, "CVE-2026-0001", "CRITICAL", "openssl", true));
        google.set_scan_status(&url(&format!("scanning@{}", scanning.manifest.digest)), "SCANNING");

        let rules = format!(
            "[[rule]]\nname = \"to-partner\"\nsource = \"{src}/acme/releases\"\nimages = [\".*\"]\ntags = ['v[0-9]+']\n\
             targets = [\"{dst}/partner\"]\nvulnerabilities = {{ block = \"HIGH\", require_scan = true }}\n\n\
             [registry.\"{src}\"]\nauth = \"none\"\n[registry.\"{dst}\"]\nauth = \"none\"\n",
            src = src.host(),
            dst = dst.host()
        );
        let mut svc = Service::start_with(&rules, &["--push-auth", "none", "--log-format", "json"], |cmd, home| {
            google.point_at(cmd, home)
        })
        .await;
        let post = |repo: &str, digest: &str, tag: &str, id: &str| {
            let n = notification("INSERT", &format!("{}/acme/releases/{repo}", src.host()), Some(digest), Some(tag));
            let d = deliver(Form::PubSubPush, &n, id);
            let svc = &svc;
            async move { svc.post(&d).await.0 }
        };
        assert_eq!(post("clean", &clean.manifest.digest, "v1", "m-released").await, 200);
        assert_eq!(post("vulnerable", &vulnerable.manifest.digest, "v1", "m-held").await, 200);
        assert_eq!(post("scanning", &scanning.manifest.digest, "v1", "m-pending").await, 503, "Pub/Sub must come back");
        google.set_scan_status(&url(&format!("scanning@{}", scanning.manifest.digest)), "FINISHED_SUCCESS");
        assert_eq!(post("scanning", &scanning.manifest.digest, "v1", "m-pending").await, 200);
        assert_eq!(post("clean", &nightly.manifest.digest, "nightly", "m-ignored").await, 204);
        // A signature pushed after the released image follows it, without a scan of its own.
        let sig = s.push_cosign_signature("acme/releases/clean", &clean.manifest).await;
        let sig_tag = format!("sha256-{}.sig", clean.manifest.hex());
        assert_eq!(post("clean", &sig.digest, &sig_tag, "m-signature").await, 200);
        svc.stop();

        let log = svc.log();
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

        // Nothing secret: no token the metadata server minted appears.
        let tokens = google.metadata_tokens();
        assert!(!tokens.is_empty(), "the gate asked for no token");
        for t in &tokens {
            assert!(!log.contains(t.as_str()), "the log shows {t}");
        }
        assert!(Seeder::for_registry(&dst).get_manifest_raw("partner/vulnerable", "v1").await.is_none());
        assert!(Seeder::for_registry(&dst).get_manifest_raw("partner/scanning", "v1").await.is_some());
    })
    .await;
}
