//! `image-relay copy` against real registries: Debian's docker-registry processes on loopback,
//! seeded by the tests, with small proxies where a registry behaviour or fault is needed.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::*;

const RELAY: &str = env!("CARGO_BIN_EXE_image-relay");

/// Run the real binary with a deadline.
async fn relay(args: &[&str]) -> Output {
    let child = tokio::process::Command::new(RELAY)
        .args(args)
        .env("RUST_LOG", "info")
        // Keep the tests independent of the machine's Docker credentials.
        .env("DOCKER_CONFIG", "/nonexistent")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("image-relay did not finish within 120 s")
        .expect("run image-relay")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "image-relay failed: {}\n{}",
        o.status,
        stderr(o)
    );
}

/// What a target serves under `reference`, or None.
async fn served(host: &str, repo: &str, reference: &str) -> Option<RawManifest> {
    Seeder::new(host, None)
        .get_manifest_raw(repo, reference)
        .await
}

async fn assert_same(target: &Seeder, repo: &str, reference: &str, want: &Pushed) {
    let got = target
        .get_manifest_raw(repo, reference)
        .await
        .unwrap_or_else(|| panic!("{repo}:{reference} missing on target"));
    assert_eq!(
        got.bytes, want.bytes,
        "{repo}:{reference}: manifest bytes differ"
    );
    assert_eq!(
        got.content_type, want.media_type,
        "{repo}:{reference}: media type differs"
    );
    assert_eq!(got.digest.as_deref(), Some(want.digest.as_str()));
}

#[tokio::test]
async fn every_manifest_shape_is_copied_byte_exact() {
    with_timeout(120, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let s = Seeder::for_registry(&src);
        let d = Seeder::for_registry(&dst);
        // Docker v2 schema 2 with gzip, uncompressed and empty layers.
        let docker = s
            .push_image(
                "shapes/docker",
                Some("v1"),
                Format::Docker,
                &Platform::linux_amd64(),
                &[
                    Layer::random_gzip(1, 5000),
                    Layer::random_tar(2, 7000),
                    Layer::empty_gzip(),
                ],
            )
            .await;
        let oci = s
            .push_random_image("shapes/oci", Some("v1"), Format::Oci, 3)
            .await;
        let index = s
            .push_multiarch("shapes/index", Some("v1"), Format::Oci, 4)
            .await;
        let list = s
            .push_multiarch("shapes/list", Some("v1"), Format::Docker, 5)
            .await;
        let artifact = s
            .push_artifact(
                "shapes/oci",
                &oci.manifest,
                "application/vnd.example.sbom+json",
                b"{\"sbom\":1}",
            )
            .await;
        let shapes = [
            ("shapes/docker:v1", &docker.manifest),
            ("shapes/oci:v1", &oci.manifest),
            ("shapes/index:v1", &index.manifest),
            ("shapes/list:v1", &list.manifest),
        ];
        for (reference, _) in shapes {
            let o = relay(&[
                "copy",
                &format!("{}/{reference}", src.host()),
                &format!("{}/{reference}", dst.host()),
            ])
            .await;
            assert_ok(&o);
        }
        for (reference, want) in shapes {
            let (repo, tag) = reference.split_once(':').unwrap();
            assert_same(&d, repo, tag, want).await;
        }
        let children = index.children.iter().map(|c| ("shapes/index", c));
        for (repo, child) in children.chain(list.children.iter().map(|c| ("shapes/list", c))) {
            assert_same(&d, repo, &child.manifest.digest, &child.manifest).await;
            for blob in child.layers.iter().chain([&child.config]) {
                assert!(
                    d.blob_exists(repo, &blob.digest).await,
                    "{repo} lacks {}",
                    blob.digest
                );
            }
        }
        // An OCI 1.1 artifact manifest, addressed by digest.
        let o = relay(&[
            "copy",
            &format!("{}/shapes/oci@{}", src.host(), artifact.digest),
            &format!("{}/shapes/oci", dst.host()),
        ])
        .await;
        assert_ok(&o);
        assert_same(&d, "shapes/oci", &artifact.digest, &artifact).await;
        // An independent client agrees.
        let raw = d.skopeo_inspect_raw("shapes/index", "v1").await;
        assert_eq!(sha256_digest(&raw), index.manifest.digest);
    })
    .await;
}

#[tokio::test]
async fn the_tag_is_written_only_after_everything_it_points_at() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let proxy = Proxy::start(&dst.host(), Fault::None).await;
        let index = Seeder::for_registry(&src)
            .push_multiarch("app", Some("v2"), Format::Oci, 7)
            .await;
        assert_ok(
            &relay(&[
                "copy",
                &format!("{}/app:v2", src.host()),
                &format!("{}/app:v2", proxy.host()),
            ])
            .await,
        );
        let writes: Vec<RecordedRequest> = proxy
            .requests()
            .into_iter()
            .filter(|r| r.method == "PUT")
            .collect();
        let tag_at = writes
            .iter()
            .position(|r| r.path.ends_with("/manifests/v2"))
            .expect("tag was pushed");
        assert_eq!(
            tag_at,
            writes.len() - 1,
            "the tag must be the last write: {writes:#?}"
        );
        // Children by digest, each once, before the index; the index once, under its tag.
        let manifest_puts = writes
            .iter()
            .filter(|r| r.path.contains("/manifests/"))
            .count();
        assert_eq!(
            manifest_puts,
            index.children.len() + 1,
            "one PUT per manifest: {writes:#?}"
        );
        for child in &index.children {
            let child_at = writes
                .iter()
                .position(|r| {
                    r.path
                        .ends_with(&format!("/manifests/{}", child.manifest.digest))
                })
                .expect("child pushed by digest");
            assert!(child_at < tag_at, "child after its index");
        }
        let last_blob = writes
            .iter()
            .rposition(|r| r.path.contains("/blobs/uploads/"))
            .unwrap();
        let first_manifest = writes
            .iter()
            .position(|r| r.path.contains("/manifests/"))
            .unwrap();
        assert!(
            last_blob < first_manifest,
            "a manifest was pushed before every blob was: {writes:#?}"
        );
        assert_same(&Seeder::for_registry(&dst), "app", "v2", &index.manifest).await;
    })
    .await;
}

#[tokio::test]
async fn a_copy_already_in_place_costs_at_most_two_requests_per_target() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let plain = Registry::start().await;
        let authed = Registry::start_with_auth("relay", "s3cret").await;
        let plain_proxy = Proxy::start(&plain.host(), Fault::None).await;
        let authed_proxy = Proxy::start(&authed.host(), Fault::None).await;
        Seeder::for_registry(&src)
            .push_multiarch("app", Some("v1"), Format::Oci, 9)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let config = dir.path().join("relay.toml");
        std::fs::write(
            &config,
            format!(
                "[registry.\"{}\"]\nauth = \"basic\"\nusername = \"relay\"\npassword_file = {:?}\n",
                authed_proxy.host(),
                pw.display().to_string()
            ),
        )
        .unwrap();
        let args = |_: ()| {
            vec![
                "copy".to_owned(),
                "--config".to_owned(),
                config.display().to_string(),
                format!("{}/app:v1", src.host()),
                format!("{}/app:v1", plain_proxy.host()),
                format!("{}/app:v1", authed_proxy.host()),
            ]
        };
        let first = args(());
        assert_ok(&relay(&first.iter().map(String::as_str).collect::<Vec<_>>()).await);
        plain_proxy.reset_requests();
        authed_proxy.reset_requests();
        let o = relay(&first.iter().map(String::as_str).collect::<Vec<_>>()).await;
        assert_ok(&o);
        assert!(stderr(&o).contains("present"), "{}", stderr(&o));
        for p in [&plain_proxy, &authed_proxy] {
            let reqs = p.requests();
            assert!(
                reqs.len() <= 2,
                "no-op copy sent {} requests: {reqs:#?}",
                reqs.len()
            );
            assert!(
                reqs.iter()
                    .all(|r| r.method == "HEAD" || r.path.contains("token")),
                "{reqs:#?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_corrupted_byte_fails_the_copy_and_nothing_is_tagged() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let corrupting = Proxy::start(&src.host(), Fault::CorruptBlobByte { offset: 100 }).await;
        let img = Seeder::for_registry(&src)
            .push_image(
                "app",
                Some("v1"),
                Format::Oci,
                &Platform::linux_amd64(),
                &[Layer::random_tar(11, 64 * 1024)],
            )
            .await;
        let o = relay(&[
            "copy",
            &format!("{}/app:v1", corrupting.host()),
            &format!("{}/app:v1", dst.host()),
        ])
        .await;
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&img.layers[0].digest) || err.contains(&img.config.digest),
            "error names no blob: {err}"
        );
        assert!(err.contains("does not match"), "{err}");
        let d = Seeder::for_registry(&dst);
        assert!(d.list_tags("app").await.is_empty(), "a tag was written");
        assert!(
            served(&dst.host(), "app", &img.manifest.digest)
                .await
                .is_none()
        );
        assert!(
            !d.blob_exists("app", &img.layers[0].digest).await,
            "corrupted layer stored"
        );
    })
    .await;
}

#[tokio::test]
async fn a_read_damaged_once_is_read_again_from_the_source_and_the_copy_lands() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let flaky = Proxy::start(&src.host(), Fault::None).await;
        let img = Seeder::for_registry(&src)
            .push_image(
                "app",
                Some("v1"),
                Format::Oci,
                &Platform::linux_amd64(),
                &[Layer::random_tar(12, 256 * 1024)],
            )
            .await;
        let layer = &img.layers[0].digest;
        let damaged = flaky.arm(
            Matcher::new(axum::http::Method::GET, &format!("/blobs/{layer}")),
            Injected::CorruptByte { offset: 1000 },
            1,
        );
        let o = relay(&[
            "copy",
            &format!("{}/app:v1", flaky.host()),
            &format!("{}/app:v1", dst.host()),
        ])
        .await;
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(flaky.hits(damaged), 1, "the first read was damaged");
        let gets = flaky
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains(&format!("/blobs/{layer}")))
            .count();
        assert_eq!(gets, 2, "one damaged read, one good one");
        assert_eq!(
            served(&dst.host(), "app", "v1").await.map(|m| m.bytes),
            Some(img.manifest.bytes.clone())
        );
        assert!(Seeder::for_registry(&dst).blob_exists("app", layer).await);
    })
    .await;
}

#[tokio::test]
async fn a_registry_quota_is_learnt_and_ridden_with_few_429s() {
    with_timeout(120, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        // 40 requests a second, little burst: a copier that sends as fast as it can meets
        // a 429 every few requests.
        let quota = Proxy::start(
            &dst.host(),
            Fault::Quota {
                per_second: 40,
                burst: 4,
            },
        )
        .await;
        let s = Seeder::for_registry(&src);
        let mut images = Vec::new();
        let mut list = String::new();
        for i in 0..12 {
            let repo = format!("app{i}");
            images.push((
                repo.clone(),
                s.push_random_image(&repo, Some("v1"), Format::Oci, 500 + i)
                    .await,
            ));
            list.push_str(&format!(
                "{}/{repo}:v1 {}/{repo}:v1\n",
                src.host(),
                quota.host()
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list");
        std::fs::write(&path, list).unwrap();
        assert_ok(&relay(&["copy", "--from-list", path.to_str().unwrap()]).await);
        for (repo, img) in &images {
            assert_same(&Seeder::for_registry(&dst), repo, "v1", &img.manifest).await;
        }
        let reqs = quota.requests();
        let refused = reqs.iter().filter(|r| r.status == 429).count();
        println!("{refused} of {} requests answered 429", reqs.len());
        // Without pacing, about half of them are (each 429 pauses the host for its
        // Retry-After, and the burst at its end meets the quota again).
        assert!(
            refused * 10 <= reqs.len(),
            "the pace was not learnt: {refused} of {} requests answered 429",
            reqs.len()
        );
    })
    .await;
}

#[tokio::test]
async fn too_many_requests_with_retry_after_is_waited_out() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let limited = Proxy::start(
            &dst.host(),
            Fault::TooManyRequests {
                times: 2,
                retry_after: "1".into(),
            },
        )
        .await;
        let img = Seeder::for_registry(&src)
            .push_random_image("app", Some("v1"), Format::Oci, 13)
            .await;
        let t0 = Instant::now();
        let o = relay(&[
            "copy",
            &format!("{}/app:v1", src.host()),
            &format!("{}/app:v1", limited.host()),
        ])
        .await;
        assert_ok(&o);
        assert!(
            t0.elapsed() >= Duration::from_secs(1),
            "Retry-After was not honoured"
        );
        assert_eq!(
            limited
                .requests()
                .iter()
                .filter(|r| r.status == 429)
                .count(),
            2
        );
        assert_same(&Seeder::for_registry(&dst), "app", "v1", &img.manifest).await;
    })
    .await;
}

#[tokio::test]
async fn a_target_that_refuses_writes_fails_alone() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let good = Registry::start().await;
        let bad = Registry::start().await;
        let refusing = Proxy::start(&bad.host(), Fault::RefuseWrites).await;
        let img = Seeder::for_registry(&src)
            .push_random_image("app", Some("v1"), Format::Docker, 17)
            .await;
        let o = relay(&[
            "copy",
            &format!("{}/app:v1", src.host()),
            &format!("{}/app:v1", refusing.host()),
            &format!("{}/app:v1", good.host()),
        ])
        .await;
        assert_eq!(o.status.code(), Some(1));
        let err = stderr(&o);
        let failed: Vec<&str> = err.lines().filter(|l| l.starts_with("FAILED")).collect();
        assert_eq!(failed.len(), 1, "{err}");
        assert!(
            failed[0].contains(&refusing.host())
                && failed[0].contains("403")
                && failed[0].contains("DENIED"),
            "{err}"
        );
        assert_same(&Seeder::for_registry(&good), "app", "v1", &img.manifest).await;
    })
    .await;
}

#[tokio::test]
async fn an_index_refused_for_missing_children_gets_its_children_pushed_again() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let index = Seeder::for_registry(&src)
            .push_multiarch("app", Some("v1"), Format::Oci, 59)
            .await;
        let proxy = Proxy::start(
            &dst.host(),
            // The index goes once, under its tag: that is the PUT refused.
            Fault::RejectManifestOnce {
                reference: "v1".into(),
                code: "MANIFEST_BLOB_UNKNOWN".into(),
            },
        )
        .await;
        assert_ok(
            &relay(&[
                "copy",
                &format!("{}/app:v1", src.host()),
                &format!("{}/app:v1", proxy.host()),
            ])
            .await,
        );
        let puts = |digest: &str| {
            proxy
                .requests()
                .iter()
                .filter(|r| r.method == "PUT" && r.path.ends_with(&format!("/manifests/{digest}")))
                .count()
        };
        assert_eq!(puts("v1"), 2, "index retried once");
        assert_eq!(
            puts(&index.manifest.digest),
            0,
            "the index goes by tag only"
        );
        for child in &index.children {
            assert_eq!(puts(&child.manifest.digest), 2, "child pushed again");
        }
        assert_same(&Seeder::for_registry(&dst), "app", "v1", &index.manifest).await;
    })
    .await;
}

#[tokio::test]
async fn platform_filter_copies_only_the_selected_children_under_a_new_digest() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let index = Seeder::for_registry(&src)
            .push_multiarch("app", Some("v1"), Format::Oci, 19)
            .await;
        let o = relay(&[
            "copy",
            "--platform",
            "linux/arm64",
            "--platform",
            "linux/s390x",
            &format!("{}/app:v1", src.host()),
            &format!("{}/app:v1", dst.host()),
        ])
        .await;
        assert_ok(&o);
        assert!(stderr(&o).contains("digest"), "{}", stderr(&o));
        let got = served(&dst.host(), "app", "v1").await.unwrap();
        assert_ne!(got.digest.as_deref(), Some(index.manifest.digest.as_str()));
        let v: serde_json::Value = serde_json::from_slice(&got.bytes).unwrap();
        let archs: Vec<&str> = v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["platform"]["architecture"].as_str().unwrap())
            .collect();
        assert_eq!(archs, ["arm64", "s390x"]);
        let amd64 = index
            .children
            .iter()
            .find(|c| c.platform.architecture == "amd64")
            .unwrap();
        assert!(
            served(&dst.host(), "app", &amd64.manifest.digest)
                .await
                .is_none()
        );
    })
    .await;
}

#[tokio::test]
async fn referrers_and_cosign_tags_follow_their_subject() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let s = Seeder::for_registry(&src);
        let index = s.push_multiarch("app", Some("v1"), Format::Oci, 23).await;
        let sig = s.push_cosign_signature("app", &index.manifest).await;
        let child = &index.children[0].manifest;
        let child_sig = s.push_cosign_signature("app", child).await;
        let sbom = s
            .push_artifact(
                "app",
                &index.manifest,
                "application/spdx+json",
                b"{\"spdx\":true}",
            )
            .await;
        let fallback = s
            .push_referrers_tag_index("app", &index.manifest, &[&sbom])
            .await;

        // Without --referrers only the image travels.
        let d = Seeder::for_registry(&dst);
        assert_ok(
            &relay(&[
                "copy",
                &format!("{}/app:v1", src.host()),
                &format!("{}/plain:v1", dst.host()),
            ])
            .await,
        );
        assert_eq!(d.list_tags("plain").await, ["v1"]);

        assert_ok(
            &relay(&[
                "copy",
                "--referrers",
                &format!("{}/app:v1", src.host()),
                &format!("{}/app:v1", dst.host()),
            ])
            .await,
        );
        assert_same(
            &d,
            "app",
            &format!("sha256-{}.sig", index.manifest.hex()),
            &sig,
        )
        .await;
        assert_same(
            &d,
            "app",
            &format!("sha256-{}.sig", child.hex()),
            &child_sig,
        )
        .await;
        assert_same(&d, "app", &sbom.digest, &sbom).await;
        assert_same(
            &d,
            "app",
            &format!("sha256-{}", index.manifest.hex()),
            &fallback,
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn blob_redirects_are_followed_without_leaking_credentials() {
    with_timeout(60, async {
        let src = Registry::start_with_auth("relay", "s3cret").await;
        let dst = Registry::start().await;
        // The "storage host": needs no credentials from the client (the proxy adds them
        // upstream), and records whether the client sent any.
        let storage = Proxy::start_injecting_auth(&src.host(), Fault::None, "relay", "s3cret").await;
        let front = Proxy::start(&src.host(), Fault::RedirectBlobs { to: storage.host() }).await;
        let img = Seeder::for_registry(&src).push_random_image("app", Some("v1"), Format::Oci, 29).await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("relay.toml");
        std::fs::write(
            &config,
            format!("[registry.\"{}\"]\nauth = \"basic\"\nusername = \"relay\"\npassword_env = \"SRC_PW\"\n", front.host()),
        )
        .unwrap();
        let o = tokio::process::Command::new(RELAY)
            .args([
                "copy",
                "--config",
                config.to_str().unwrap(),
                &format!("{}/app:v1", front.host()),
                &format!("{}/app:v1", dst.host()),
            ])
            .env("SRC_PW", "s3cret")
            .env("DOCKER_CONFIG", "/nonexistent")
            .output()
            .await
            .unwrap();
        assert_ok(&o);
        assert_same(&Seeder::for_registry(&dst), "app", "v1", &img.manifest).await;
        let downloads = storage.requests();
        assert!(!downloads.is_empty(), "redirect not followed");
        assert!(downloads.iter().all(|r| !r.authorization), "credentials sent to another host: {downloads:#?}");
        assert!(front.requests().iter().any(|r| r.status == 307));

        // A relative Location stays on the registry's own origin.
        let dst2 = Registry::start().await;
        let relative = Proxy::start(&src.host(), Fault::RedirectBlobsRelative).await;
        std::fs::write(
            &config,
            format!("[registry.\"{}\"]\nauth = \"basic\"\nusername = \"relay\"\npassword_env = \"SRC_PW\"\n", relative.host()),
        )
        .unwrap();
        let o = tokio::process::Command::new(RELAY)
            .args([
                "copy",
                "--config",
                config.to_str().unwrap(),
                &format!("{}/app:v1", relative.host()),
                &format!("{}/app:v1", dst2.host()),
            ])
            .env("SRC_PW", "s3cret")
            .env("DOCKER_CONFIG", "/nonexistent")
            .output()
            .await
            .unwrap();
        assert_ok(&o);
        assert!(relative.requests().iter().any(|r| r.path.starts_with("/download/")));
        assert_same(&Seeder::for_registry(&dst2), "app", "v1", &img.manifest).await;
    })
    .await;
}

#[tokio::test]
async fn fan_out_reads_each_source_blob_once_and_never_chunks_uploads() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let a = Registry::start().await;
        let b = Registry::start().await;
        let src_proxy = Proxy::start(&src.host(), Fault::None).await;
        let a_proxy = Proxy::start(&a.host(), Fault::RejectChunkedUploads).await;
        let b_proxy = Proxy::start(&b.host(), Fault::RejectChunkedUploads).await;
        let index = Seeder::for_registry(&src)
            .push_multiarch("app", Some("v1"), Format::Docker, 31)
            .await;
        assert_ok(
            &relay(&[
                "copy",
                &format!("{}/app:v1", src_proxy.host()),
                &format!("{}/app:v1", a_proxy.host()),
                &format!("{}/app:v1", b_proxy.host()),
            ])
            .await,
        );
        let gets: Vec<String> = src_proxy
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.contains("/blobs/"))
            .map(|r| r.path)
            .collect();
        let mut unique = gets.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            gets.len(),
            unique.len(),
            "a source blob was read twice: {gets:#?}"
        );
        for p in [&a_proxy, &b_proxy] {
            assert!(
                p.requests().iter().all(|r| r.method != "PATCH"),
                "chunked upload"
            );
        }
        assert_same(&Seeder::for_registry(&a), "app", "v1", &index.manifest).await;
        assert_same(&Seeder::for_registry(&b), "app", "v1", &index.manifest).await;
    })
    .await;
}

#[tokio::test]
async fn a_list_shares_blobs_across_repositories_by_mounting() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let dst_proxy = Proxy::start(&dst.host(), Fault::None).await;
        let s = Seeder::for_registry(&src);
        let base = Layer::random_gzip(37, 20_000);
        let mut pairs = String::new();
        let mut images = Vec::new();
        for i in 0..5u64 {
            let repo = format!("team/app-{i}");
            let img = s
                .push_image(
                    &repo,
                    Some("v1"),
                    Format::Oci,
                    &Platform::linux_amd64(),
                    &[base.clone(), Layer::random_gzip(100 + i, 3000)],
                )
                .await;
            pairs.push_str(&format!(
                "{}/{repo}:v1 {}/{repo}:v1\n",
                src.host(),
                dst_proxy.host()
            ));
            images.push((repo, img));
        }
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("pairs.txt");
        std::fs::write(
            &list,
            format!("# five images sharing a base layer\n\n{pairs}"),
        )
        .unwrap();
        assert_ok(&relay(&["copy", "--from-list", list.to_str().unwrap()]).await);
        let base_digest = &images[0].1.layers[0].digest;
        let reqs = dst_proxy.requests();
        // The upload PUT carries `?digest=sha256%3A...`.
        let encoded = base_digest.replace(':', "%3A");
        let uploads = reqs
            .iter()
            .filter(|r| {
                r.method == "PUT"
                    && (r.path.contains(&encoded) || r.path.contains(base_digest.as_str()))
            })
            .count();
        let mounts = reqs
            .iter()
            .filter(|r| r.method == "POST" && r.path.contains("mount="))
            .count();
        assert_eq!(uploads, 1, "base layer uploaded {uploads} times");
        assert_eq!(mounts, 4, "{reqs:#?}");
        let d = Seeder::for_registry(&dst);
        for (repo, img) in &images {
            assert_same(&d, repo, "v1", &img.manifest).await;
        }
    })
    .await;
}

#[tokio::test]
async fn same_registry_copies_mount_instead_of_reading_blobs() {
    with_timeout(60, async {
        let reg = Registry::start().await;
        let proxy = Proxy::start(&reg.host(), Fault::None).await;
        let img = Seeder::for_registry(&reg)
            .push_random_image("build/app", Some("v1"), Format::Oci, 41)
            .await;
        assert_ok(
            &relay(&[
                "copy",
                &format!("{}/build/app:v1", proxy.host()),
                &format!("{}/release/app:v1", proxy.host()),
            ])
            .await,
        );
        let reqs = proxy.requests();
        assert!(
            reqs.iter()
                .all(|r| !(r.method == "GET" && r.path.contains("/blobs/"))),
            "blob read: {reqs:#?}"
        );
        assert_eq!(
            reqs.iter()
                .filter(|r| r.path.contains("mount=") && r.status == 201)
                .count(),
            3
        );
        assert_same(
            &Seeder::for_registry(&reg),
            "release/app",
            "v1",
            &img.manifest,
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn basic_auth_registries_work_and_a_wrong_password_is_named() {
    with_timeout(60, async {
        let src = Registry::start_with_auth("builder", "b-pass").await;
        let dst = Registry::start_with_auth("relay", "r-pass").await;
        let img = Seeder::for_registry(&src).push_random_image("app", Some("v1"), Format::Oci, 43).await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("relay.toml");
        let write = |dst_pw: &str| {
            std::fs::write(
                &config,
                format!(
                    "[registry.\"{}\"]\nauth = \"basic\"\nusername = \"builder\"\npassword_env = \"SRC_PW\"\n\n\
                     [registry.\"{}\"]\nauth = \"basic\"\nusername = \"relay\"\npassword_env = \"{dst_pw}\"\n",
                    src.host(),
                    dst.host()
                ),
            )
            .unwrap()
        };
        let run = || {
            tokio::process::Command::new(RELAY)
                .args(["copy", "--config", config.to_str().unwrap(), &format!("{}/app:v1", src.host()), &format!("{}/app:v1", dst.host())])
                .env("SRC_PW", "b-pass")
                .env("DST_PW", "r-pass")
                .env("BAD_PW", "nope")
                .env("DOCKER_CONFIG", "/nonexistent")
                .output()
        };
        write("BAD_PW");
        let o = run().await.unwrap();
        assert_eq!(o.status.code(), Some(1));
        let err = stderr(&o);
        assert!(err.contains(&dst.host()) && err.contains("401"), "{err}");
        write("DST_PW");
        assert_ok(&run().await.unwrap());
        assert_same(&Seeder::for_registry(&dst), "app", "v1", &img.manifest).await;
    })
    .await;
}

#[tokio::test]
async fn a_missing_source_and_bad_arguments_are_clear_errors() {
    with_timeout(30, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let o = relay(&[
            "copy",
            &format!("{}/nothing:here", src.host()),
            &format!("{}/x:y", dst.host()),
        ])
        .await;
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
        let o = relay(&["copy", "ubuntu", &format!("{}/x:y", dst.host())]).await;
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("registry host"), "{}", stderr(&o));
        let o = relay(&[
            "copy",
            "--platform",
            "linux",
            &format!("{}/a:b", src.host()),
            &format!("{}/x:y", dst.host()),
        ])
        .await;
        assert_eq!(o.status.code(), Some(2));
    })
    .await;
}
