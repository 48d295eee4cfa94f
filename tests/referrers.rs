//! Referrers that arrive after their image (an SBOM attached a day later, a signature pushed
//! through the referrers API): their digest-only INSERT is read, they go to every target that
//! holds their subject, and on a target without the referrers API they are entered in its
//! referrers tag index, where `oras discover` finds them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::app::App;
use common::service::*;
use common::*;
use serde_json::Value;

const SBOM: &str = "application/vnd.example.sbom.v1+json";

/// The referrers the target's `sha256-HEX` tag index lists for `subject`.
async fn indexed(dst: &Registry, repo: &str, subject: &Pushed) -> Vec<Value> {
    let Some(raw) = Seeder::for_registry(dst)
        .get_manifest_raw(repo, &format!("sha256-{}", subject.hex()))
        .await
    else {
        return Vec::new();
    };
    let index: Value = serde_json::from_slice(&raw.bytes).unwrap();
    index["manifests"].as_array().cloned().unwrap_or_default()
}

/// A peer tool from the shared harness, when this machine has it (the suite must pass
/// without: they check the fakes and the wire against real implementations).
fn peer(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../shared/bench/bin/{name}"));
    p.is_file().then_some(p)
}

/// What `oras discover` lists as referrers of `reference` (plain HTTP).
fn oras_discover(oras: &Path, reference: &str) -> String {
    let out = Command::new(oras)
        .args(["discover", "--plain-http", "--format", "json", reference])
        .output()
        .expect("oras runs");
    assert!(
        out.status.success(),
        "oras discover {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_referrer_pushed_later_by_digest_reaches_the_target_holding_its_subject_and_is_indexed_there()
 {
    with_timeout(90, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let s = Seeder::for_registry(&src);
        let app = App::start(&rules(
            &format!("{}/releases", src.host()),
            &[&format!("{}/partner", dst.host())],
            "",
        ));
        let repo = format!("{}/releases/app", src.host());
        let img = s
            .push_random_image("releases/app", Some("v1"), Format::Oci, 71)
            .await;
        let n = notification("INSERT", &repo, Some(&img.manifest.digest), Some("v1"));
        let reply = app.post(&deliver(Form::PubSubPush, &n, "m1")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());

        // A day later: an SBOM attached to the release, pushed by digest only.
        let sbom = s
            .push_artifact(
                "releases/app",
                &img.manifest,
                SBOM,
                br#"{"spdxVersion":"SPDX-2.3"}"#,
            )
            .await;
        let late = notification("INSERT", &repo, Some(&sbom.digest), None);
        let reply = app.post(&deliver(Form::PubSubPush, &late, "m2")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let body: Value = serde_json::from_str(&reply.text()).unwrap();
        let outcomes: Vec<&str> = body["targets"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["outcome"].as_str())
            .collect();
        assert!(
            outcomes.contains(&"copied"),
            "the referrer travelled: {body}"
        );
        let d = Seeder::for_registry(&dst);
        assert_eq!(
            d.get_manifest_raw("partner/app", &sbom.digest)
                .await
                .map(|m| m.bytes),
            Some(sbom.bytes.clone()),
            "the SBOM is at the target, byte for byte"
        );
        // distribution 2.8 has no referrers API: the relay keeps the tag index for it.
        let listed = indexed(&dst, "partner/app", &img.manifest).await;
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["digest"], sbom.digest.as_str());
        assert_eq!(listed[0]["artifactType"], SBOM);

        // A redelivery changes nothing: the referrer is listed once.
        let reply = app.post(&deliver(Form::PubSubPush, &late, "m2")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(indexed(&dst, "partner/app", &img.manifest).await.len(), 1);

        if let Some(oras) = peer("oras") {
            let found = oras_discover(
                &oras,
                &format!("{}/partner/app@{}", dst.host(), img.manifest.digest),
            );
            assert!(
                found.contains(&sbom.digest),
                "oras discover on the target: {found}"
            );
        } else {
            eprintln!("oras not on this machine: discovery checked through the index only");
        }
    })
    .await;
}

#[tokio::test]
async fn an_untagged_push_that_is_no_referrer_costs_one_source_read_per_manifest() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let src_proxy = Proxy::start(&src.host(), Fault::None).await;
        let dst_proxy = Proxy::start(&dst.host(), Fault::None).await;
        let app = App::start(&rules(
            &format!("{}/releases", src_proxy.host()),
            &[&format!("{}/partner", dst_proxy.host())],
            "",
        ));
        // A multi-arch push: Artifact Registry publishes a digest-only INSERT per child.
        let index = Seeder::for_registry(&src)
            .push_multiarch("releases/app", None, Format::Oci, 72)
            .await;
        let repo = format!("{}/releases/app", src_proxy.host());
        for (i, child) in index.children.iter().enumerate() {
            let n = notification("INSERT", &repo, Some(&child.manifest.digest), None);
            let reply = app
                .post(&deliver(Form::PubSubPush, &n, &format!("c{i}")))
                .await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
        let reads: Vec<_> = src_proxy.requests();
        assert_eq!(
            reads.len(),
            index.children.len(),
            "one manifest GET per child: {reads:?}"
        );
        assert!(
            reads
                .iter()
                .all(|r| r.method == "GET" && r.path.contains("/manifests/sha256:"))
        );
        assert!(
            dst_proxy.requests().is_empty(),
            "no target is contacted for what is not a referrer: {:?}",
            dst_proxy.requests()
        );
    })
    .await;
}

/// olareg: a real registry with the referrers API, as Artifact Registry has it.
struct Olareg {
    child: std::process::Child,
    host: String,
}

impl Drop for Olareg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn olareg(bin: &Path) -> Olareg {
    let port = free_port();
    let child = Command::new(bin)
        .args(["serve", "--addr", "127.0.0.1", "--port", &port.to_string()])
        .args(["--store-type", "mem", "--api-delete"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("olareg starts");
    let host = format!("127.0.0.1:{port}");
    let http = reqwest::Client::new();
    common::wait::eventually(
        std::time::Duration::from_secs(10),
        "olareg answers /v2/",
        || {
            let http = http.clone();
            let url = format!("http://{host}/v2/");
            async move {
                match http.get(url).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    Olareg { child, host }
}

#[tokio::test]
async fn a_referrer_attached_with_oras_on_a_registry_with_the_api_is_discoverable_on_one_without() {
    let (Some(olareg_bin), Some(oras)) = (peer("olareg"), peer("oras")) else {
        eprintln!("olareg or oras not on this machine: the interoperability check is skipped");
        return;
    };
    with_timeout(90, async {
        let src = olareg(&olareg_bin).await;
        let dst = Registry::start().await;
        let s = Seeder::new(&src.host, None);
        let app = App::start(&rules(
            &format!("{}/releases", src.host),
            &[&format!("{}/partner", dst.host())],
            "",
        ));
        let repo = format!("{}/releases/app", src.host);
        let img = s
            .push_random_image("releases/app", Some("v1"), Format::Oci, 73)
            .await;
        let n = notification("INSERT", &repo, Some(&img.manifest.digest), Some("v1"));
        let reply = app.post(&deliver(Form::PubSubPush, &n, "o1")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sbom.json");
        std::fs::write(&file, br#"{"spdxVersion":"SPDX-2.3"}"#).unwrap();
        let out = Command::new(&oras)
            .current_dir(dir.path())
            .args([
                "attach",
                "--plain-http",
                "--artifact-type",
                SBOM,
                "--format",
                "json",
            ])
            .arg(format!("{repo}@{}", img.manifest.digest))
            .arg("sbom.json")
            .output()
            .expect("oras runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let attached: Value = serde_json::from_slice(&out.stdout).unwrap();
        let digest = attached["digest"]
            .as_str()
            .expect("oras names the referrer")
            .to_owned();

        // Artifact Registry announces the attachment as a digest-only INSERT.
        let late = notification("INSERT", &repo, Some(&digest), None);
        let reply = app.post(&deliver(Form::PubSubPush, &late, "o2")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let found = oras_discover(
            &oras,
            &format!("{}/partner/app@{}", dst.host(), img.manifest.digest),
        );
        assert!(
            found.contains(&digest),
            "oras discover on the target: {found}"
        );
    })
    .await;
}
