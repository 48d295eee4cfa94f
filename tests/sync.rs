//! Reconcile: images pushed while nobody was subscribed reach the targets through a sync, a
//! second sync writes nothing, and deleted tags are propagated when the rule says so.

mod common;

use std::time::Duration;

use common::service::*;
use common::*;
use serde_json::Value;

fn writes(p: &Proxy) -> Vec<RecordedRequest> {
    p.requests()
        .into_iter()
        .filter(|r| matches!(r.method.as_str(), "PUT" | "POST" | "PATCH" | "DELETE"))
        .collect()
}

async fn post_sync(svc: &Service, body: &str) -> (u16, Value) {
    let resp = svc
        .http
        .post(svc.url("/sync"))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_sync_brings_missed_images_over_and_a_second_one_writes_nothing() {
    with_timeout(120, async {
        let src = Registry::start().await;
        let a = Registry::start().await;
        let b = Registry::start().await;
        let a_proxy = Proxy::start(&a.host(), Fault::None).await;
        let b_proxy = Proxy::start(&b.host(), Fault::None).await;
        let s = Seeder::for_registry(&src);
        let svc = Service::start(
            &rules(
                &format!("{}/releases", src.host()),
                &[
                    &format!("{}/partner", a_proxy.host()),
                    &format!("{}/prod", b_proxy.host()),
                ],
                "",
            ),
            &["--push-auth", "none"],
        )
        .await;
        // Pushed straight to the source: no event reaches the service.
        let app = s
            .push_multiarch("releases/app", Some("v1.0"), Format::Oci, 71)
            .await;
        let latest = s
            .push_random_image("releases/app", Some("latest"), Format::Docker, 72)
            .await;
        s.push_random_image("releases/app", Some("v1.1-rc"), Format::Oci, 73)
            .await; // excluded
        s.push_random_image("releases/app", Some("nightly"), Format::Oci, 74)
            .await; // not selected
        let tool = s
            .push_random_image("releases/tools/lint", Some("v2"), Format::Oci, 75)
            .await;
        s.push_random_image("staging/app", Some("v1.0"), Format::Oci, 76)
            .await; // not under the source

        let (status, report) = post_sync(&svc, "").await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(
            report["checked"], 6,
            "3 selected tags x 2 targets: {report}"
        );
        assert_eq!(report["copied"], 6, "{report}");
        for (reg, prefix) in [(&a, "partner"), (&b, "prod")] {
            let t = Seeder::for_registry(reg);
            assert_eq!(
                t.get_manifest_raw(&format!("{prefix}/app"), "v1.0")
                    .await
                    .unwrap()
                    .bytes,
                app.manifest.bytes
            );
            assert_eq!(
                t.get_manifest_raw(&format!("{prefix}/app"), "latest")
                    .await
                    .unwrap()
                    .bytes,
                latest.manifest.bytes
            );
            assert_eq!(
                t.get_manifest_raw(&format!("{prefix}/tools/lint"), "v2")
                    .await
                    .unwrap()
                    .bytes,
                tool.manifest.bytes
            );
            assert_eq!(
                t.list_tags(&format!("{prefix}/app")).await,
                ["latest", "v1.0"]
            );
        }

        a_proxy.reset_requests();
        b_proxy.reset_requests();
        let (status, report) = post_sync(&svc, r#"{"rule": "releases"}"#).await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(
            (
                report["already_in_place"].as_u64(),
                report["copied"].as_u64()
            ),
            (Some(6), Some(0)),
            "{report}"
        );
        for p in [&a_proxy, &b_proxy] {
            assert!(
                writes(p).is_empty(),
                "a sync with nothing to do wrote: {:?}",
                writes(p)
            );
            let reqs = p.requests();
            assert_eq!(
                reqs.len(),
                3,
                "one manifest HEAD per selected tag: {reqs:?}"
            );
            assert!(reqs.iter().all(|r| r.method == "HEAD"));
        }
        let (status, body) = post_sync(&svc, r#"{"rule": 7}"#).await;
        assert_eq!(status, 400, "{body}");
    })
    .await;
}

#[tokio::test]
async fn dry_run_reports_without_writing_and_deletes_propagate_when_asked() {
    with_timeout(120, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let dst_proxy = Proxy::start(&dst.host(), Fault::None).await;
        let s = Seeder::for_registry(&src);
        let dir = tempfile::tempdir().unwrap();
        let rules_path = dir.path().join("rules.toml");
        std::fs::write(
            &rules_path,
            rules(
                &format!("{}/releases", src.host()),
                &[&format!("{}/partner", dst_proxy.host())],
                "on_delete = \"propagate\"",
            ),
        )
        .unwrap();
        let old = s
            .push_random_image("releases/app", Some("v1"), Format::Oci, 81)
            .await;
        s.push_random_image("releases/app", Some("v2"), Format::Oci, 82)
            .await;
        let run = |extra: &[&str]| {
            let mut c = tokio::process::Command::new(RELAY);
            c.args(["sync", "--rules", rules_path.to_str().unwrap(), "--json"])
                .args(extra)
                .env("DOCKER_CONFIG", "/nonexistent");
            c
        };
        let out = tokio::time::timeout(Duration::from_secs(60), run(&["--dry-run"]).output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let would: Vec<&str> = report["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["outcome"].as_str().unwrap())
            .collect();
        assert_eq!(would, ["would_copy", "would_copy"], "{report}");
        assert!(writes(&dst_proxy).is_empty(), "dry run wrote");

        let out = run(&[]).output().await.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let d = Seeder::for_registry(&dst);
        assert_eq!(d.list_tags("partner/app").await, ["v1", "v2"]);

        // v1 is deleted at the source while no event reaches the relay.
        s.delete_manifest("releases/app", &old.manifest.digest)
            .await;
        let out = run(&["--dry-run"]).output().await.unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["items"][0]["outcome"], "would_remove", "{report}");
        assert_eq!(
            d.list_tags("partner/app").await,
            ["v1", "v2"],
            "dry run removed"
        );
        let out = run(&[]).output().await.unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["removed"], 1, "{report}");
        assert_eq!(d.list_tags("partner/app").await, ["v2"]);
    })
    .await;
}

/// A registry that serves its catalog in small pages (distribution's `catalog.maxentries`)
/// refuses a large `?n=` and links page to page: sync still finds every repository.
#[tokio::test]
async fn sync_reads_a_catalog_served_in_small_linked_pages() {
    with_timeout(120, async {
        let src = Registry::start_with_catalog_page(2).await;
        let src_proxy = Proxy::start(&src.host(), Fault::None).await;
        let dst = Registry::start().await;
        let s = Seeder::for_registry(&src);
        let mut images = Vec::new();
        for i in 0..5u64 {
            let repo = format!("releases/app-{i}");
            let img = s
                .push_random_image(&repo, Some("v1"), Format::Oci, 90 + i)
                .await;
            images.push((repo, img));
        }
        // Sorts first in the catalog, outside the rule's source: filtered out.
        s.push_random_image("other/x", Some("v1"), Format::Oci, 99)
            .await;
        let svc = Service::start(
            &rules(
                &format!("{}/releases", src_proxy.host()),
                &[&format!("{}/mirror", dst.host())],
                "",
            ),
            &["--push-auth", "none"],
        )
        .await;

        let (status, report) = post_sync(&svc, "").await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["copied"], 5, "{report}");
        let t = Seeder::for_registry(&dst);
        for (repo, img) in &images {
            let mirrored = repo.replacen("releases/", "mirror/", 1);
            assert_eq!(
                t.get_manifest_raw(&mirrored, "v1").await.unwrap().bytes,
                img.manifest.bytes,
                "{mirrored}"
            );
        }
        assert!(t.get_manifest_raw("mirror/x", "v1").await.is_none());
        let catalog: Vec<(u16, String)> = src_proxy
            .requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/v2/_catalog"))
            .map(|r| (r.status, r.path))
            .collect();
        assert_eq!(
            catalog.first().map(|c| c.0),
            Some(400),
            "the page size asked first is refused: {catalog:?}"
        );
        assert!(
            catalog.len() >= 4 && catalog[1..].iter().all(|c| c.0 == 200),
            "then 3 linked pages of 2 for 6 repositories: {catalog:?}"
        );
    })
    .await;
}
