//! HTTPS registries, as production runs them (Artifact Registry is HTTPS only and offers
//! HTTP/2): a private CA trusted through `ca_file`, blob bodies over HTTP/1.1 while the rest
//! is multiplexed on HTTP/2, and certificates that cannot be verified failing at once.

mod common;

use std::process::Output;

use common::tls::{ServerCert, TestCa};
use common::*;

async fn relay(args: &[&str]) -> Output {
    tokio::process::Command::new(common::service::RELAY)
        .args(args)
        .env("RUST_LOG", "info")
        .env("DOCKER_CONFIG", "/nonexistent")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run image-relay")
}

/// Registry settings for a plain-HTTP source and an HTTPS target trusted with `ca_file`.
fn config(
    dir: &std::path::Path,
    source: &Registry,
    target: &Registry,
    ca_pem: Option<&str>,
) -> String {
    let ca = match ca_pem {
        Some(pem) => {
            let path = dir.join("ca.pem");
            std::fs::write(&path, pem).unwrap();
            format!("ca_file = {:?}\n", path.display().to_string())
        }
        // Loopback hosts default to plain HTTP: say HTTPS.
        None => "insecure = false\n".into(),
    };
    let text = format!(
        "[registry.\"{}\"]\nauth = \"none\"\n[registry.\"{}\"]\nauth = \"none\"\n{ca}",
        source.host(),
        target.host()
    );
    let path = dir.join("registries.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn a_private_ca_in_ca_file_is_trusted_and_blob_bodies_go_over_http1_beside_h2() {
    with_timeout(90, async {
        let ca = TestCa::new("relay test CA");
        let src = Registry::start().await;
        let dst = Registry::start_tls(ca.server(&["127.0.0.1"]), true).await;
        let img = Seeder::for_registry(&src)
            .push_random_image("app", Some("v1"), Format::Oci, 31)
            .await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), &src, &dst, Some(&ca.pem));
        let o = relay(&[
            "copy",
            "--config",
            &cfg,
            &format!("{}/app:v1", src.host()),
            &format!("{}/app:v1", dst.host()),
        ])
        .await;
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let got = Seeder::for_tls_registry(&dst, &ca.pem)
            .get_manifest_raw("app", "v1")
            .await
            .expect("copied over HTTPS");
        assert_eq!(got.bytes, img.manifest.bytes);
        // The registry offers HTTP/2: manifests and HEADs use it, blob bodies do not.
        let log = dst.log();
        let line = |needle: &str, proto: &str| {
            log.lines().any(|l| l.contains(needle) && l.contains(proto))
        };
        assert!(line("\"PUT /v2/app/manifests/v1 ", "HTTP/2.0"), "{log}");
        assert!(line("\"HEAD /v2/app/blobs/", "HTTP/2.0"), "{log}");
        assert!(line("\"PUT /v2/app/blobs/uploads/", "HTTP/1.1"), "{log}");
        assert!(
            !log.lines()
                .any(|l| l.contains("\"PUT /v2/app/blobs/uploads/") && l.contains("HTTP/2.0")),
            "a blob body went over HTTP/2:\n{log}"
        );
    })
    .await;
}

#[tokio::test]
async fn certificates_that_cannot_be_verified_fail_at_once_naming_the_host_and_the_reason() {
    with_timeout(90, async {
        let ca = TestCa::new("relay test CA");
        let stranger = TestCa::new("nobody's CA");
        let src = Registry::start().await;
        Seeder::for_registry(&src)
            .push_random_image("app", Some("v1"), Format::Oci, 32)
            .await;
        let cases: [(&str, ServerCert, Option<&str>, &str); 3] = [
            (
                "unknown issuer",
                stranger.server(&["127.0.0.1"]),
                None,
                "UnknownIssuer",
            ),
            (
                "wrong name",
                ca.server(&["registry.example"]),
                Some(&ca.pem),
                "not valid for name",
            ),
            (
                "expired",
                ca.expired_server(&["127.0.0.1"]),
                Some(&ca.pem),
                "expired",
            ),
        ];
        for (what, cert, trusted, reason) in cases {
            let dst = Registry::start_tls(cert, false).await;
            let dir = tempfile::tempdir().unwrap();
            let cfg = config(dir.path(), &src, &dst, trusted);
            let o = relay(&[
                "copy",
                "--config",
                &cfg,
                &format!("{}/app:v1", src.host()),
                &format!("{}/app:v1", dst.host()),
            ])
            .await;
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{what}: copied anyway");
            assert!(
                err.contains(&format!(
                    "the certificate of {} cannot be verified",
                    dst.host()
                )),
                "{what}: {err}"
            );
            assert!(err.contains(reason), "{what}: want {reason:?} in: {err}");
            // One attempt: nothing a retry could change.
            assert!(!err.contains("retrying"), "{what} was retried: {err}");
        }
    })
    .await;
}
