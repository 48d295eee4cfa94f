//! `image-relay serve` end to end: real registries, the real binary on a loopback port, and
//! deliveries shaped exactly as Pub/Sub and Eventarc send them, built from pushed digests.
//! Here are what needs the process: signals, rule reloads, logs as Cloud Logging reads them,
//! and whole scenarios. What one request gets back is in tests/router.rs, in process.

mod common;

use std::time::Duration;

use common::service::*;
use common::wait::eventually;
use common::*;
use serde_json::json;

async fn digest_of(host: &str, repo: &str, reference: &str) -> Option<String> {
    Seeder::new(host, None)
        .get_manifest_raw(repo, reference)
        .await
        .and_then(|m| m.digest)
}

#[tokio::test]
async fn all_four_delivery_forms_replicate_the_pushed_image() {
    with_timeout(120, async {
        let src = Registry::start().await;
        let a = Registry::start().await;
        let b = Registry::start().await;
        let s = Seeder::for_registry(&src);
        let svc = Service::start(
            &rules(&format!("{}/releases", src.host()), &[&format!("{}/partner", a.host()), &format!("{}/prod", b.host())], ""),
            &["--push-auth", "none"],
        )
        .await;
        for (i, form) in FORMS.into_iter().enumerate() {
            let repo = format!("releases/app{i}");
            let index = s.push_multiarch(&repo, Some("v1.0"), Format::Oci, 100 + i as u64).await;
            let n = notification("INSERT", &format!("{}/{repo}", src.host()), Some(&index.manifest.digest), Some("v1.0"));
            let (status, body, _) = svc.post(&deliver(form, &n, &format!("m{i}"))).await;
            assert_eq!(status, 200, "{form:?}: {body}\n{}", svc.log());
            assert_eq!(body["targets"].as_array().unwrap().len(), 2, "{body}");
            for (reg, prefix) in [(&a, "partner"), (&b, "prod")] {
                let got = Seeder::for_registry(reg).get_manifest_raw(&format!("{prefix}/app{i}"), "v1.0").await;
                assert_eq!(got.map(|m| m.bytes), Some(index.manifest.bytes.clone()), "{form:?} at {prefix}");
            }
        }
        let m = svc.metrics().await;
        assert!(m.contains("image_relay_events_total{delivery=\"eventarc_binary\",action=\"INSERT\",outcome=\"done\"} 1"), "{m}");
        // One series per configured target, counting every release that went there.
        for (reg, prefix) in [(&a, "partner"), (&b, "prod")] {
            let series = format!(
                "image_relay_copies_total{{rule=\"releases\",target=\"{}/{prefix}\",outcome=\"copied\"}}",
                reg.host()
            );
            assert_eq!(counter(&m, &series), Some(FORMS.len() as f64), "{m}");
        }
    })
    .await;
}

#[tokio::test]
async fn duplicates_are_idempotent_and_reversed_tag_moves_converge_on_the_source() {
    with_timeout(120, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let s = Seeder::for_registry(&src);
        let svc = Service::start(
            &rules(
                &format!("{}/releases", src.host()),
                &[&format!("{}/partner", dst.host())],
                "",
            ),
            &["--push-auth", "none"],
        )
        .await;
        let repo = format!("{}/releases/app", src.host());
        // The tag moves twice at the source: d1 -> d2 -> d3.
        let d1 = s
            .push_random_image("releases/app", Some("latest"), Format::Oci, 1)
            .await
            .manifest
            .digest;
        let d2 = s
            .push_random_image("releases/app", Some("latest"), Format::Oci, 2)
            .await
            .manifest
            .digest;
        let d3 = s
            .push_random_image("releases/app", Some("latest"), Format::Docker, 3)
            .await
            .manifest
            .digest;
        // Delivered newest first, then the older ones, then a duplicate of the newest.
        let mut outcomes = Vec::new();
        for (i, d) in [&d3, &d2, &d1, &d3].into_iter().enumerate() {
            let n = notification("INSERT", &repo, Some(d), Some("latest"));
            let (status, body, _) = svc
                .post(&deliver(Form::PubSubPush, &n, &format!("t{i}")))
                .await;
            assert_eq!(status, 200, "{body}");
            outcomes.push(body["targets"][0]["outcome"].as_str().unwrap().to_owned());
        }
        assert_eq!(
            outcomes,
            [
                "copied",
                "tag_superseded",
                "tag_superseded",
                "already_present"
            ]
        );
        assert_eq!(
            digest_of(&dst.host(), "partner/app", "latest")
                .await
                .as_deref(),
            Some(d3.as_str())
        );
        // The older images' content is there too, by digest: nothing half-written.
        for d in [&d1, &d2] {
            assert!(digest_of(&dst.host(), "partner/app", d).await.is_some());
        }
    })
    .await;
}

#[tokio::test]
async fn fifty_deliveries_at_once_all_land() {
    with_timeout(180, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let s = Seeder::for_registry(&src);
        let svc = Service::start(
            &rules(
                &format!("{}/releases", src.host()),
                &[&format!("{}/partner", dst.host())],
                "",
            ),
            &["--push-auth", "none", "--max-copies", "64"],
        )
        .await;
        let mut deliveries = Vec::new();
        for i in 0..50u64 {
            let repo = format!("releases/app{}", i % 10);
            let tag = format!("v{i}");
            let img = s
                .push_random_image(&repo, Some(&tag), Format::Oci, 1000 + i)
                .await;
            let n = notification(
                "INSERT",
                &format!("{}/{repo}", src.host()),
                Some(&img.manifest.digest),
                Some(&tag),
            );
            deliveries.push((
                format!("partner/app{}", i % 10),
                tag,
                img.manifest.digest,
                deliver(FORMS[i as usize % 4], &n, &format!("c{i}")),
            ));
        }
        let results =
            futures_util::future::join_all(deliveries.iter().map(|(_, _, _, d)| svc.post(d))).await;
        for ((_, tag, _, _), (status, body, _)) in deliveries.iter().zip(&results) {
            assert_eq!(*status, 200, "{tag}: {body}");
        }
        for (repo, tag, digest, _) in &deliveries {
            assert_eq!(
                digest_of(&dst.host(), repo, tag).await.as_deref(),
                Some(digest.as_str()),
                "{repo}:{tag}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_target_that_is_down_gets_a_retry_and_then_the_image() {
    with_timeout(120, async {
        let src = Registry::start().await;
        let mut dst = Registry::start().await;
        let s = Seeder::for_registry(&src);
        let svc = Service::start(
            &rules(
                &format!("{}/releases", src.host()),
                &[&format!("{}/partner", dst.host())],
                "",
            ),
            &["--push-auth", "none"],
        )
        .await;
        let img = s
            .push_random_image("releases/app", Some("v2"), Format::Oci, 7)
            .await;
        let n = notification(
            "INSERT",
            &format!("{}/releases/app", src.host()),
            Some(&img.manifest.digest),
            Some("v2"),
        );
        let d = deliver(Form::EventarcBinary, &n, "down-1");
        dst.stop();
        let (status, body, _) = svc.post(&d).await;
        assert!(
            (500..600).contains(&status),
            "a retry can fix a down target: {status} {body}"
        );
        assert_eq!(body["targets"][0]["retryable"], json!(true), "{body}");
        dst.restart().await;
        let (status, body, _) = svc.post(&d).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            digest_of(&dst.host(), "partner/app", "v2").await.as_deref(),
            Some(img.manifest.digest.as_str())
        );
    })
    .await;
}

#[tokio::test]
async fn a_source_image_that_is_gone_is_acknowledged_with_the_failure() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let svc = Service::start(
            &rules(
                &format!("{}/releases", src.host()),
                &[&format!("{}/partner", dst.host())],
                "",
            ),
            &["--push-auth", "none"],
        )
        .await;
        let gone = "sha256:e48f32910efbe11528e691acacd675ee9af0a4cf16072e43d199d7b06de4bb49";
        let n = notification(
            "INSERT",
            &format!("{}/releases/app", src.host()),
            Some(gone),
            Some("v1"),
        );
        let (status, body, _) = svc.post(&deliver(Form::PubSubPush, &n, "gone-1")).await;
        assert_eq!(status, 200, "no retry can bring it back: {body}");
        assert_eq!(body["targets"][0]["outcome"], "failed", "{body}");
        assert!(svc.log().contains("\"severity\":\"ERROR\""));
        let m = svc.metrics().await;
        let failed = format!(
            "image_relay_copies_total{{rule=\"releases\",target=\"{}/partner\",outcome=\"failed\"}}",
            dst.host()
        );
        assert_eq!(counter(&m, &failed), Some(1.0), "{m}");
    })
    .await;
}

#[tokio::test]
async fn an_invalid_rule_edit_keeps_the_rules_in_force_and_a_valid_one_replaces_them() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let s = Seeder::for_registry(&src);
        let good = rules(
            &format!("{}/releases", src.host()),
            &[&format!("{}/partner", dst.host())],
            "",
        );
        let svc = Service::start(&good, &["--push-auth", "none"]).await;
        std::fs::write(
            &svc.rules,
            good.replace("images = [\".*\"]", "images = [\"(\"]"),
        )
        .unwrap();
        // One edit, one failed reload, and the invalid rules were not put in force.
        assert_eq!(wait_for_counter(&svc, RELOAD_FAILURES, 1.0).await, 1.0);
        assert_eq!(
            counter(&svc.metrics().await, RELOAD_SUCCESSES).unwrap_or(0.0),
            0.0
        );
        assert!(svc.log().contains("bad pattern"), "{}", svc.log());
        // Still served by the previous rules.
        let img = s
            .push_random_image("releases/app", Some("v1"), Format::Oci, 9)
            .await;
        let n = notification(
            "INSERT",
            &format!("{}/releases/app", src.host()),
            Some(&img.manifest.digest),
            Some("v1"),
        );
        let (status, body, _) = svc.post(&deliver(Form::PubSubPush, &n, "r1")).await;
        assert_eq!(status, 200, "{body}");
        // A valid edit (now only tag "stable") replaces them.
        std::fs::write(
            &svc.rules,
            good.replace("tags = ['v[0-9.]+', \"latest\"]", "tags = [\"stable\"]"),
        )
        .unwrap();
        wait_for_counter(&svc, RELOAD_SUCCESSES, 1.0).await;
        // SIGHUP reloads too, without any change to the file.
        unsafe { libc::kill(svc.child.id() as i32, libc::SIGHUP) };
        eventually(
            Duration::from_secs(10),
            "a reload triggered by SIGHUP",
            || async {
                let log = svc.log();
                if log
                    .lines()
                    .any(|l| l.contains("rules reloaded") && l.contains("\"trigger\":\"SIGHUP\""))
                {
                    Ok(())
                } else {
                    Err(log)
                }
            },
        )
        .await;
        let img2 = s
            .push_random_image("releases/app", Some("v2"), Format::Oci, 10)
            .await;
        let n = notification(
            "INSERT",
            &format!("{}/releases/app", src.host()),
            Some(&img2.manifest.digest),
            Some("v2"),
        );
        let (status, _, _) = svc.post(&deliver(Form::PubSubPush, &n, "r2")).await;
        assert_eq!(status, 204, "v2 no longer matches the new rules");
    })
    .await;
}

const RELOAD_FAILURES: &str = "image_relay_rule_reloads_total{result=\"failure\"}";
const RELOAD_SUCCESSES: &str = "image_relay_rule_reloads_total{result=\"success\"}";

/// Waits until the counter `series` is at least `at_least`, and returns its value then.
async fn wait_for_counter(svc: &Service, series: &str, at_least: f64) -> f64 {
    let what = format!("{series} reaching {at_least}");
    eventually(Duration::from_secs(10), &what, || async {
        let m = svc.metrics().await;
        match counter(&m, series) {
            Some(v) if v >= at_least => Ok(v),
            _ => Err(format!("scrape:\n{m}\nlog:\n{}", svc.log())),
        }
    })
    .await
}

#[tokio::test]
async fn tag_deletes_propagate_only_when_the_rule_says_so_and_the_source_lost_the_tag() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let s = Seeder::for_registry(&src);
        let svc = Service::start(
            &rules(
                &format!("{}/releases", src.host()),
                &[&format!("{}/partner", dst.host())],
                "on_delete = \"propagate\"",
            ),
            &["--push-auth", "none"],
        )
        .await;
        let repo = format!("{}/releases/app", src.host());
        let img = s
            .push_random_image("releases/app", Some("v3"), Format::Oci, 11)
            .await;
        let n = notification("INSERT", &repo, Some(&img.manifest.digest), Some("v3"));
        assert_eq!(svc.post(&deliver(Form::PubSubPush, &n, "d1")).await.0, 200);
        // A DELETE while the source still has the tag (a stale delivery) changes nothing.
        let del = notification("DELETE", &repo, None, Some("v3"));
        let (status, body, _) = svc.post(&deliver(Form::PubSubUnwrapped, &del, "d2")).await;
        assert_eq!(
            (status, body["targets"][0]["outcome"].as_str()),
            (200, Some("nothing_to_delete")),
            "{body}"
        );
        assert!(digest_of(&dst.host(), "partner/app", "v3").await.is_some());
        s.delete_manifest("releases/app", &img.manifest.digest)
            .await;
        let (status, body, _) = svc.post(&deliver(Form::PubSubUnwrapped, &del, "d3")).await;
        assert_eq!(
            (status, body["targets"][0]["outcome"].as_str()),
            (200, Some("deleted")),
            "{body}"
        );
        assert!(digest_of(&dst.host(), "partner/app", "v3").await.is_none());
    })
    .await;
}

#[tokio::test]
async fn a_registry_that_cannot_delete_a_tag_alone_keeps_the_tags_that_need_its_manifest() {
    with_timeout(90, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let s = Seeder::for_registry(&src);
        let t = Seeder::for_registry(&dst);
        let svc = Service::start(
            &rules(
                &format!("{}/releases", src.host()),
                &[&format!("{}/partner", dst.host())],
                "on_delete = \"propagate\"",
            ),
            &["--push-auth", "none"],
        )
        .await;
        let insert = |repo: &str, digest: &str, tag: &str, id: &str| {
            let n = notification("INSERT", &format!("{}/{repo}", src.host()), Some(digest), Some(tag));
            deliver(Form::PubSubPush, &n, id)
        };
        let delete = |repo: &str, id: &str| {
            let n = notification("DELETE", &format!("{}/{repo}", src.host()), None, Some("v1"));
            deliver(Form::PubSubPush, &n, id)
        };
        // `app`: v1 and latest name one image. `multi`: latest names an index, v1 one child.
        let img = s.push_random_image("releases/app", Some("v1"), Format::Oci, 21).await;
        s.push_pushed("releases/app", Some("latest"), &img.manifest).await;
        let index = s.push_multiarch("releases/multi", Some("latest"), Format::Oci, 22).await;
        let child = &index.children[0].manifest;
        s.push_pushed("releases/multi", Some("v1"), child).await;
        for (i, d) in [
            insert("releases/app", &img.manifest.digest, "v1", "a1"),
            insert("releases/app", &img.manifest.digest, "latest", "a2"),
            insert("releases/multi", &index.manifest.digest, "latest", "m1"),
            insert("releases/multi", &child.digest, "v1", "m2"),
        ]
        .iter()
        .enumerate()
        {
            let (status, body, _) = svc.post(d).await;
            assert_eq!(status, 200, "{i}: {body}");
        }
        // The source deletes v1 and keeps latest (distribution can only delete manifests, so
        // the test deletes the manifest and pushes back what latest needs).
        s.delete_manifest("releases/app", &img.manifest.digest).await;
        s.push_pushed("releases/app", Some("latest"), &img.manifest).await;
        s.delete_manifest("releases/multi", &child.digest).await;
        s.push_pushed("releases/multi", None, child).await;

        let (status, body, _) = svc.post(&delete("releases/app", "d1")).await;
        assert_eq!(status, 200, "no retry can help: {body}");
        assert_eq!(body["targets"][0]["outcome"], "failed", "{body}");
        let error = body["targets"][0]["error"].as_str().unwrap();
        assert!(error.contains("cannot delete a tag alone"), "{error}");
        assert!(
            error.contains(&format!("`latest` still points at {}", img.manifest.digest)),
            "{error}"
        );
        let (status, body, _) = svc.post(&delete("releases/multi", "d2")).await;
        assert_eq!((status, body["targets"][0]["outcome"].as_str()), (200, Some("failed")), "{body}");
        let error = body["targets"][0]["error"].as_str().unwrap();
        assert!(
            error.contains(&format!(
                "`latest` points at the index {}, which lists {}",
                index.manifest.digest, child.digest
            )),
            "{error}"
        );

        // Nothing was taken: every tag and its content are still in the target.
        for (repo, tag, digest) in [
            ("partner/app", "latest", &img.manifest.digest),
            ("partner/app", "v1", &img.manifest.digest),
            ("partner/multi", "latest", &index.manifest.digest),
            ("partner/multi", "v1", &child.digest),
        ] {
            assert_eq!(digest_of(&dst.host(), repo, tag).await.as_ref(), Some(digest), "{repo}:{tag}");
        }
        for c in &index.children {
            assert!(t.get_manifest_raw("partner/multi", &c.manifest.digest).await.is_some());
        }
        // Logged at ERROR, counted, audited.
        let log = svc.log();
        assert!(
            log.lines().any(|l| l.contains("\"severity\":\"ERROR\"") && l.contains("cannot delete a tag alone")),
            "{log}"
        );
        assert!(
            log.lines().any(|l| l.contains("\"message\":\"audit\"")
                && l.contains("\"decision\":\"failed\"")
                && l.contains("cannot delete a tag alone")),
            "{log}"
        );
        let m = svc.metrics().await;
        assert!(
            m.contains(&format!(
                "image_relay_copies_total{{rule=\"releases\",target=\"{}/partner\",outcome=\"failed\"}} 2",
                dst.host()
            )),
            "{m}"
        );
    })
    .await;
}

#[tokio::test]
async fn rules_that_loop_or_name_a_target_twice_are_refused_by_check_at_start_and_on_reload() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let port = src.addr().port();
        let dir = tempfile::tempdir().unwrap();
        let check = |text: &str| {
            let path = dir.path().join("rules.toml");
            std::fs::write(&path, text).unwrap();
            let out = std::process::Command::new(RELAY)
                .args(["rules", "check", path.to_str().unwrap()])
                .output()
                .unwrap();
            (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
        };
        let source = format!("127.0.0.1:{port}/releases");
        let twice = rules(&source, &["127.0.0.1:1/dup", "127.0.0.1:1/dup"], "");
        let (ok, err) = check(&twice);
        assert!(!ok && err.contains("rules.toml:7:31: ") && err.contains("listed twice"), "{err}");
        // The target is inside the source, under another name for the same host.
        let mirror = rules(&source, &[&format!("localhost:{port}/releases/mirror")], "");
        let (ok, err) = check(&mirror);
        assert!(!ok && err.contains("lies under it") && err.contains("same registry"), "{err}");
        let back_and_forth = format!(
            "{}\n[[rule]]\nname = \"back\"\nsource = \"127.0.0.1:1/partner\"\nimages = [\".*\"]\ntags = [\"v1\"]\ntargets = [\"{source}/back\"]\n",
            rules(&source, &["127.0.0.1:1/partner"], "")
        );
        let (ok, err) = check(&back_and_forth);
        assert!(!ok && err.contains("copy into each other's sources"), "{err}");

        // `serve` refuses to start on them, and keeps the rules in force when edited to them.
        for bad in [&twice, &mirror, &back_and_forth] {
            let path = dir.path().join("serve.toml");
            std::fs::write(&path, bad).unwrap();
            let out = serve_command(&path, free_port(), &["--push-auth", "none"])
                .output()
                .unwrap();
            assert!(!out.status.success(), "serve started on:\n{bad}");
        }
        let good = rules(&source, &["127.0.0.1:1/partner"], "");
        let svc = Service::start(&good, &["--push-auth", "none"]).await;
        std::fs::write(&svc.rules, &mirror).unwrap();
        assert_eq!(wait_for_counter(&svc, RELOAD_FAILURES, 1.0).await, 1.0);
        assert_eq!(counter(&svc.metrics().await, RELOAD_SUCCESSES).unwrap_or(0.0), 0.0);
        assert!(svc.log().contains("lies under it"), "{}", svc.log());
        let n = notification("INSERT", &format!("{source}/app"), None, Some("v1"));
        let (_, body, _) = svc.post(&deliver(Form::PubSubPush, &n, "r")).await;
        // Still the good rule: the event goes to the partner, not into the source.
        assert_eq!(body["targets"][0]["target"], "127.0.0.1:1/partner/app:v1", "{body}");
    })
    .await;
}

#[tokio::test]
async fn sigterm_lets_the_copy_in_flight_finish_then_exits() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let slow = Proxy::start(
            &dst.host(),
            Fault::TooManyRequests {
                times: 1,
                retry_after: "2".into(),
            },
        )
        .await;
        let s = Seeder::for_registry(&src);
        let mut svc = Service::start(
            &rules(
                &format!("{}/releases", src.host()),
                &[&format!("{}/partner", slow.host())],
                "",
            ),
            &["--push-auth", "none", "--shutdown-grace", "30"],
        )
        .await;
        let img = s
            .push_random_image("releases/app", Some("v1"), Format::Oci, 31)
            .await;
        let n = notification(
            "INSERT",
            &format!("{}/releases/app", src.host()),
            Some(&img.manifest.digest),
            Some("v1"),
        );
        let d = deliver(Form::PubSubPush, &n, "term-1");
        let post = svc.post(&d);
        let term = async {
            // Only once the copy is under way is there something in flight to let finish.
            eventually(
                Duration::from_secs(20),
                "the copy reaches the target",
                || async {
                    if slow.requests().is_empty() {
                        Err("no request at the target".to_owned())
                    } else {
                        Ok(())
                    }
                },
            )
            .await;
            unsafe { libc::kill(svc.child.id() as i32, libc::SIGTERM) };
        };
        let ((status, body, _), ()) = tokio::join!(post, term);
        assert_eq!(status, 200, "the copy in flight finished: {body}");
        let exit = eventually(Duration::from_secs(20), "serve exits after SIGTERM", || {
            let status = svc.child.try_wait().unwrap();
            async move { status.ok_or_else(|| "still running".to_owned()) }
        })
        .await;
        assert!(exit.success(), "{exit}\n{}", svc.log());
        assert_eq!(
            digest_of(&dst.host(), "partner/app", "v1").await.as_deref(),
            Some(img.manifest.digest.as_str())
        );
        assert!(svc.log().contains("stopping"));
    })
    .await;
}

#[tokio::test]
async fn a_signature_pushed_after_its_image_was_copied_follows_it() {
    with_timeout(60, async {
        let src = Registry::start().await;
        let dst = Registry::start().await;
        let s = Seeder::for_registry(&src);
        let svc = Service::start(
            &rules(
                &format!("{}/releases", src.host()),
                &[&format!("{}/partner", dst.host())],
                "",
            ),
            &["--push-auth", "none"],
        )
        .await;
        let repo = format!("{}/releases/app", src.host());
        let img = s
            .push_random_image("releases/app", Some("v1"), Format::Oci, 41)
            .await;
        let n = notification("INSERT", &repo, Some(&img.manifest.digest), Some("v1"));
        assert_eq!(svc.post(&deliver(Form::PubSubPush, &n, "s1")).await.0, 200);
        let sig = s.push_cosign_signature("releases/app", &img.manifest).await;
        let sig_tag = format!("sha256-{}.sig", img.manifest.hex());
        let n = notification("INSERT", &repo, Some(&sig.digest), Some(&sig_tag));
        let (status, body, _) = svc.post(&deliver(Form::PubSubPush, &n, "s2")).await;
        assert_eq!(status, 200, "{body}");
        let got = Seeder::for_registry(&dst)
            .get_manifest_raw("partner/app", &sig_tag)
            .await;
        assert_eq!(got.map(|m| m.bytes), Some(sig.bytes), "{body}");
        // A signature of an image the rule never released goes nowhere.
        let other = s
            .push_random_image("releases/app", Some("nightly"), Format::Oci, 42)
            .await;
        let other_sig = s
            .push_cosign_signature("releases/app", &other.manifest)
            .await;
        let other_tag = format!("sha256-{}.sig", other.manifest.hex());
        let n = notification("INSERT", &repo, Some(&other_sig.digest), Some(&other_tag));
        assert_eq!(svc.post(&deliver(Form::PubSubPush, &n, "s3")).await.0, 200);
        assert!(
            Seeder::for_registry(&dst)
                .get_manifest_raw("partner/app", &other_tag)
                .await
                .is_none()
        );
    })
    .await;
}

/// A client that opens a connection and sends its request slowly: the headers a few bytes at
/// a time, or the headers and then less body than it announced.
async fn slow_client(port: u16, headers_done: bool) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    if headers_done {
        s.write_all(b"POST / HTTP/1.1\r\nhost: relay\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{\"message\":")
            .await
            .unwrap();
    } else {
        s.write_all(b"POST / HTTP/1.1\r\nhost: re").await.unwrap();
    }
    s
}

/// Reads what the server sends until it closes the connection, or `None` if it is still open
/// after `within`.
async fn answer_before_close(s: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, s.read_to_end(&mut got)).await;
    match read {
        Ok(_) => Some(String::from_utf8_lossy(&got).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_the_relay_keeps_serving_others() {
    with_timeout(60, async {
        let rules = rules("127.0.0.1:9/releases", &["127.0.0.1:9/partner"], "");
        let svc = Service::start(
            &rules,
            &[
                "--push-auth",
                "none",
                "--header-timeout",
                "1",
                "--body-timeout",
                "1",
            ],
        )
        .await;
        // Many clients stall in their headers, a few in their bodies.
        let mut heads = Vec::new();
        for _ in 0..50 {
            heads.push(slow_client(svc.port, false).await);
        }
        let mut bodies = Vec::new();
        for _ in 0..5 {
            bodies.push(slow_client(svc.port, true).await);
        }
        // Meanwhile everyone else is served at once.
        let r = svc.http.get(svc.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);

        for s in &mut bodies {
            let answer = answer_before_close(s, Duration::from_secs(5))
                .await
                .expect("a slow body is answered within the body timeout");
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
            assert!(answer.contains("not received within"), "{answer}");
        }
        for s in &mut heads {
            let answer = answer_before_close(s, Duration::from_secs(5)).await;
            assert!(
                answer.is_some(),
                "a connection still sending its headers after the timeout must be closed"
            );
        }
        let r = svc.http.get(svc.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    })
    .await;
}
