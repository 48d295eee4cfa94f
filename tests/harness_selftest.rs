//! Checks the shared test harness itself (registry, proxy, seeding), so a
//! broken harness shows up here rather than as confusing relay failures.

mod common;

use common::{Fault, Format, Proxy, Registry, Seeder, media, sha256_digest, with_timeout};

#[tokio::test]
async fn the_seeder_pushes_images_indexes_and_artifacts_byte_exact() {
    with_timeout(120, async {
        let reg = Registry::start().await;
        let s = Seeder::for_registry(&reg);

        let img = s
            .push_random_image("app/one", Some("v1"), Format::Oci, 1)
            .await;
        let got = s
            .get_manifest_raw("app/one", "v1")
            .await
            .expect("v1 exists");
        assert_eq!(got.bytes, img.manifest.bytes);
        assert_eq!(got.content_type, media::OCI_MANIFEST);
        assert_eq!(got.digest.as_deref(), Some(img.manifest.digest.as_str()));
        assert_eq!(
            s.skopeo_inspect_raw("app/one", "v1").await,
            img.manifest.bytes
        );

        let idx = s
            .push_multiarch("app/multi", Some("latest"), Format::Oci, 7)
            .await;
        assert_eq!(idx.children.len(), 4);
        let got = s
            .get_manifest_raw("app/multi", &idx.manifest.digest)
            .await
            .expect("index exists");
        assert_eq!(got.bytes, idx.manifest.bytes);
        assert_eq!(got.content_type, media::OCI_INDEX);
        assert_eq!(
            s.skopeo_inspect_raw("app/multi", &idx.manifest.digest)
                .await,
            idx.manifest.bytes
        );
        // The base layer is shared by all children.
        assert!(
            idx.children
                .iter()
                .all(|c| c.layers[0] == idx.children[0].layers[0])
        );

        let list = s
            .push_multiarch("app/multi", Some("docker"), Format::Docker, 8)
            .await;
        let got = s
            .get_manifest_raw("app/multi", "docker")
            .await
            .expect("list exists");
        assert_eq!(got.bytes, list.manifest.bytes);
        assert_eq!(got.content_type, media::DOCKER_LIST);

        let sig = s.push_cosign_signature("app/one", &img.manifest).await;
        let art = s
            .push_artifact(
                "app/one",
                &img.manifest,
                "application/vnd.example.sbom+json",
                b"{\"sbom\":1}",
            )
            .await;
        s.push_referrers_tag_index("app/one", &img.manifest, &[&art])
            .await;
        let got = s
            .get_manifest_raw("app/one", &art.digest)
            .await
            .expect("artifact exists");
        assert_eq!(got.bytes, art.bytes);
        let sig_tag = format!("sha256-{}.sig", img.manifest.hex());
        assert_eq!(
            s.get_manifest_raw("app/one", &sig_tag)
                .await
                .map(|m| m.bytes),
            Some(sig.bytes)
        );
        let tags = s.list_tags("app/one").await;
        assert_eq!(
            tags,
            vec![
                format!("sha256-{}", img.manifest.hex()),
                sig_tag,
                "v1".to_string()
            ]
        );
        assert!(s.list_tags("app/missing").await.is_empty());
        assert!(s.get_manifest_raw("app/one", "nope").await.is_none());
    })
    .await;
}

#[tokio::test]
async fn an_auth_registry_refuses_bad_credentials_and_keeps_its_content_across_a_restart() {
    with_timeout(120, async {
        let mut reg = Registry::start_with_auth("alice", "s3cret").await;
        let authed = Seeder::for_registry(&reg);
        let anon = authed.with_creds(None);

        let err = anon
            .try_push_blob("secure/app", b"hello")
            .await
            .expect_err("anonymous push refused");
        assert_eq!(err.status, Some(401), "{err}");
        let wrong = authed.with_creds(Some(("alice".into(), "wrong".into())));
        assert_eq!(
            wrong
                .try_push_blob("secure/app", b"hello")
                .await
                .expect_err("bad password")
                .status,
            Some(401)
        );

        let img = authed
            .push_random_image("secure/app", Some("v1"), Format::Docker, 3)
            .await;
        let raw = common::skopeo_inspect_raw(&reg.host(), "secure/app", "v1", reg.creds()).await;
        assert_eq!(raw, img.manifest.bytes);

        // Down then up again: same port, same storage, same credentials.
        let host = reg.host();
        reg.stop();
        assert!(
            anon.try_push_blob("secure/app", b"x")
                .await
                .expect_err("registry down")
                .status
                .is_none()
        );
        reg.restart().await;
        assert_eq!(reg.host(), host);
        let got = authed
            .get_manifest_raw("secure/app", "v1")
            .await
            .expect("kept after restart");
        assert_eq!(got.bytes, img.manifest.bytes);
        assert_eq!(got.content_type, media::DOCKER_MANIFEST);
    })
    .await;
}

#[tokio::test]
async fn the_proxy_records_requests_and_injects_429s_and_refused_writes() {
    with_timeout(120, async {
        let reg = Registry::start().await;
        let proxy = Proxy::start(&reg.host(), Fault::None).await;
        let via = Seeder::new(&proxy.host(), None);

        // Uploads through the proxy exercise Location rewriting.
        let blob = via.push_blob("p/app", b"through the proxy").await;
        let reqs = proxy.requests();
        assert_eq!(reqs.len(), 2, "{reqs:?}");
        assert_eq!((reqs[0].method.as_str(), reqs[0].status), ("POST", 202));
        assert_eq!((reqs[1].method.as_str(), reqs[1].status), ("PUT", 201));
        assert!(reqs[1].path.contains("digest=sha256"), "{reqs:?}");
        assert!(reqs.iter().all(|r| !r.authorization));

        proxy.reset_requests();
        proxy.set_fault(Fault::TooManyRequests {
            times: 1,
            retry_after: "1".into(),
        });
        let client = reqwest::Client::new();
        let url = format!("http://{}/v2/p/app/blobs/{}", proxy.host(), blob.digest);
        let first = client.get(&url).send().await.expect("first GET");
        assert_eq!(first.status(), 429);
        assert_eq!(first.headers()["retry-after"], "1");
        let second = client
            .get(&url)
            .basic_auth("u", Some("p"))
            .send()
            .await
            .expect("second GET");
        assert_eq!(second.status(), 200);
        assert_eq!(
            &second.bytes().await.expect("body")[..],
            b"through the proxy"
        );
        let statuses: Vec<(u16, bool)> = proxy
            .requests()
            .iter()
            .map(|r| (r.status, r.authorization))
            .collect();
        assert_eq!(statuses, vec![(429, false), (200, true)]);

        proxy.set_fault(Fault::RefuseWrites);
        let err = via
            .try_push_blob("p/app", b"nope")
            .await
            .expect_err("writes refused");
        assert_eq!(err.status, Some(403));
        assert!(err.message.contains("DENIED"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn large_blobs_stream_through_the_proxy_and_the_corrupt_fault_changes_their_digest() {
    with_timeout(300, async {
        let reg = Registry::start().await;
        let s = Seeder::for_registry(&reg);
        // Big enough to span several chunks both ways through the proxy.
        let size = 8 * 1024 * 1024 + 123;
        let proxy = Proxy::start(&reg.host(), Fault::None).await;
        let blob = Seeder::new(&proxy.host(), None)
            .push_blob_stream("big/app", size, 42)
            .await;
        assert_eq!(blob.digest, common::seed::stream_blob_digest(size, 42));
        assert!(s.blob_exists("big/app", &blob.digest).await);

        proxy.set_fault(Fault::CorruptBlobByte {
            offset: 5 * 1024 * 1024 + 7,
        });
        let url = format!("http://{}/v2/big/app/blobs/{}", proxy.host(), blob.digest);
        let resp = reqwest::get(&url).await.expect("GET via proxy");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.content_length(), Some(size));
        let body = resp.bytes().await.expect("body");
        assert_eq!(body.len() as u64, size);
        assert_ne!(sha256_digest(&body), blob.digest);

        proxy.set_fault(Fault::None);
        let body = reqwest::get(&url)
            .await
            .expect("GET")
            .bytes()
            .await
            .expect("body");
        assert_eq!(sha256_digest(&body), blob.digest);
    })
    .await;
}
