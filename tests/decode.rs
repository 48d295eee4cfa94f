//! Every delivery form and every malformed body from Google's exact shapes (tests/fixtures,
//! copied from the shared fixtures; the audit-log ones built from Google's documented shapes)
//! decodes to the right event, the right error, or, for an audit entry that changes no image,
//! to an acknowledgement.

use std::path::PathBuf;

use image_relay::event::{
    Action, DecodeError, Decoded, DeliveryForm, DeliveryMeta, Event, Ignored, decode,
};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Body and headers of a delivery fixture, as the HTTP edge would hand them over.
fn delivery(name: &str) -> (DeliveryMeta, Vec<u8>) {
    let body = std::fs::read(fixture(&format!("{name}.json"))).unwrap();
    let mut meta = DeliveryMeta::default();
    if let Ok(h) = std::fs::read_to_string(fixture(&format!("{name}.headers"))) {
        for line in h.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = Some(v.trim().to_owned());
            match k.trim().to_ascii_lowercase().as_str() {
                "content-type" => meta.content_type = v,
                "ce-id" => meta.ce_id = v,
                "ce-time" => meta.ce_time = v,
                "x-goog-pubsub-message-id" => meta.pubsub_message_id = v,
                "x-goog-pubsub-publish-time" => meta.pubsub_publish_time = v,
                _ => {}
            }
        }
    }
    (meta, body)
}

fn decode_delivery(name: &str) -> Result<Event, DecodeError> {
    let (meta, body) = delivery(name);
    decode(&meta, &body)
}

const DIGEST: &str = "sha256:e48f32910efbe11528e691acacd675ee9af0a4cf16072e43d199d7b06de4bb49";

#[test]
fn pubsub_push_wrapped_decodes_with_tag_digest_and_ids() {
    let e = decode_delivery("delivery/pubsub-push").unwrap();
    assert_eq!(e.action, Action::Insert);
    assert_eq!(e.delivery, DeliveryForm::PubSubPush);
    assert_eq!(
        e.repo.to_string(),
        "us-docker.pkg.dev/src-proj/releases/team/app"
    );
    assert_eq!(e.tag.as_ref().unwrap().as_str(), "v1.2.3");
    assert_eq!(e.digest.as_ref().unwrap().as_str(), DIGEST);
    assert_eq!(e.message_id.as_deref(), Some("2070443601311541"));
    assert_eq!(e.publish_time.as_deref(), Some("2026-11-20T19:13:55.749Z"));
    let with_attempt = decode_delivery("delivery/pubsub-push-with-delivery-attempt").unwrap();
    assert_eq!(with_attempt.reference(), e.reference());
}

#[test]
fn eventarc_binary_mode_decodes_and_takes_ids_from_the_message() {
    let e = decode_delivery("delivery/eventarc-binary").unwrap();
    assert_eq!(e.delivery, DeliveryForm::EventarcBinary);
    assert_eq!(e.action, Action::Delete);
    assert_eq!(e.tag.as_ref().unwrap().as_str(), "v1.2.3");
    assert!(e.digest.is_none());
    assert_eq!(e.message_id.as_deref(), Some("2070443601311543"));
}

#[test]
fn cloudevents_structured_mode_decodes() {
    let e = decode_delivery("delivery/cloudevent-structured").unwrap();
    assert_eq!(e.delivery, DeliveryForm::CloudEventStructured);
    assert_eq!(e.action, Action::Insert);
    assert!(e.tag.is_none());
    assert_eq!(e.digest.as_ref().unwrap().as_str(), DIGEST);
    assert_eq!(e.message_id.as_deref(), Some("2070443601311544"));
}

#[test]
fn unwrapped_pubsub_payloads_decode_with_header_metadata() {
    let e = decode_delivery("delivery/pubsub-unwrapped").unwrap();
    assert_eq!(e.delivery, DeliveryForm::PubSubUnwrapped);
    assert_eq!(e.action, Action::Delete);
    assert_eq!(e.message_id.as_deref(), Some("2070443601311542"));
    assert_eq!(e.publish_time.as_deref(), Some("2026-11-20T19:13:55.749Z"));
}

#[test]
fn every_notification_shape_decodes() {
    let meta = DeliveryMeta {
        pubsub_message_id: Some("1".into()),
        ..DeliveryMeta::default()
    };
    let cases = [
        (
            "ar-insert-tag",
            "us-docker.pkg.dev/src-proj/releases/team/app",
            Some("v1.2.3"),
            true,
        ),
        (
            "ar-insert-digest",
            "us-docker.pkg.dev/src-proj/releases/team/app",
            None,
            true,
        ),
        (
            "ar-delete-tag",
            "us-docker.pkg.dev/src-proj/releases/team/app",
            Some("v1.2.3"),
            false,
        ),
        (
            "ar-delete-digest",
            "us-docker.pkg.dev/src-proj/releases/team/app",
            None,
            true,
        ),
        (
            "ar-domain-scoped-project",
            "us-west1-docker.pkg.dev/example.com/my-project/my-repo/image-name",
            Some("2.0"),
            true,
        ),
        (
            "ar-multiregion-nested",
            "europe-docker.pkg.dev/src-proj/mirror/a/b/c/tool",
            Some("latest"),
            true,
        ),
        (
            "gcr-insert-tag",
            "gcr.io/my-project/hello-world",
            Some("1.1"),
            true,
        ),
        (
            "ar-insert-signature-tag",
            "us-docker.pkg.dev/src-proj/releases/team/app",
            Some("sha256-e48f32910efbe11528e691acacd675ee9af0a4cf16072e43d199d7b06de4bb49.sig"),
            true,
        ),
    ];
    for (name, repo, tag, has_digest) in cases {
        let body = std::fs::read(fixture(&format!("notifications/{name}.json"))).unwrap();
        let e = decode(&meta, &body).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(e.repo.to_string(), repo, "{name}");
        assert_eq!(e.tag.as_ref().map(|t| t.as_str()), tag, "{name}");
        assert_eq!(e.digest.is_some(), has_digest, "{name}");
    }
}

#[test]
fn every_malformed_fixture_is_refused_naming_the_field() {
    let cases = [
        ("not-json", "body", "not JSON"),
        ("message-not-object", "message", "object"),
        ("attributes-only", "message.data", "missing"),
        ("data-not-base64", "message.data", "base64"),
        ("data-not-json", "message.data", "not JSON"),
        ("missing-action", "action", "missing"),
        ("unknown-action", "action", "UPSERT"),
        ("no-digest-no-tag", "digest", "neither"),
        ("bad-digest", "digest", "digest"),
        ("bad-reference", "tag", "path"),
    ];
    let files: Vec<_> = std::fs::read_dir(fixture("malformed")).unwrap().collect();
    assert_eq!(
        files.len(),
        cases.len(),
        "a malformed fixture has no case here"
    );
    for (name, field, reason) in cases {
        let body = std::fs::read(fixture(&format!("malformed/{name}.json"))).unwrap();
        let err = decode(&DeliveryMeta::default(), &body).expect_err(name);
        assert_eq!(err.field, field, "{name}: {err}");
        assert!(err.reason.contains(reason), "{name}: {err}");
        if name != "not-json" && name != "message-not-object" {
            assert_eq!(
                err.message_id.as_deref(),
                Some("1"),
                "{name}: message id kept for the log"
            );
        }
    }
}

#[test]
fn a_key_named_twice_is_refused_naming_it_not_decided_by_the_last_one() {
    let unwrapped = DeliveryMeta {
        pubsub_message_id: Some("7".into()),
        ..Default::default()
    };
    let twice = br#"{"action":"DELETE","action":"INSERT","tag":"r.example/p/app:v1"}"#;
    let e = decode(&unwrapped, twice).unwrap_err();
    assert_eq!(e.field, "action", "{e}");
    assert_eq!(e.message_id.as_deref(), Some("7"));

    // Inside the base64 data of a push envelope, and in the envelope itself.
    use base64::Engine as _;
    let data = base64::engine::general_purpose::STANDARD.encode(twice);
    let push = format!(r#"{{"message":{{"data":"{data}","messageId":"8"}},"subscription":"s"}}"#);
    let e = decode(&DeliveryMeta::default(), push.as_bytes()).unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.message_id.as_deref()),
        ("action", Some("8"))
    );
    let once = base64::engine::general_purpose::STANDARD
        .encode(br#"{"action":"INSERT","tag":"r.example/p/app:v1"}"#);
    let envelope = format!(
        r#"{{"message":{{"data":"{once}","messageId":"9","messageId":"10"}},"subscription":"s"}}"#
    );
    let e = decode(&DeliveryMeta::default(), envelope.as_bytes()).unwrap_err();
    assert_eq!(e.field, "message.messageId", "{e}");
    // Keys alike in different objects are not repeats.
    let fine = format!(r#"{{"message":{{"data":"{once}","messageId":"9"}},"subscription":"s"}}"#);
    assert!(decode(&DeliveryMeta::default(), fine.as_bytes()).is_ok());
}

// Eventarc's Cloud Audit Logs form: the Data Access entry of the Docker API call is the body.

/// The image every audit-log fixture names: `team%2Fapp` in repository `releases` of
/// `src-proj`, location `us`.
const AUDIT_REPO: &str = "us-docker.pkg.dev/src-proj/releases/team/app";

/// `ce-id` of an audit-log event: the log, then the entry's insertId and time.
fn audit_ce_id(insert_id: &str, micros: &str) -> String {
    format!("projects/src-proj/logs/cloudaudit.googleapis.com%2Fdata_access-{insert_id}{micros}")
}

fn audit_event(name: &str) -> Event {
    let e = decode_delivery(&format!("delivery/audit-log/{name}"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(e.delivery, DeliveryForm::AuditLog, "{name}");
    assert_eq!(e.repo.to_string(), AUDIT_REPO, "{name}");
    e
}

#[test]
fn an_audit_log_push_by_tag_is_an_insert_of_the_tag() {
    let e = audit_event("put-manifest-tag");
    assert_eq!(e.delivery.as_str(), "audit_log");
    assert_eq!(e.action, Action::Insert);
    assert_eq!(e.tag.as_ref().map(|t| t.as_str()), Some("v1.2.3"));
    // The entry names the tag only; the copy reads what the source tag names.
    assert!(e.digest.is_none());
    assert_eq!(
        e.message_id.as_deref(),
        Some(audit_ce_id("1q2w3e4r5t6y", "1795202035749000").as_str())
    );
    assert_eq!(e.publish_time.as_deref(), Some("2026-11-20T19:13:55.749Z"));
}

#[test]
fn an_audit_log_push_by_digest_is_an_insert_of_the_digest_named_by_ce_id_or_insert_id() {
    let e = audit_event("put-manifest-digest");
    assert_eq!(e.action, Action::Insert);
    assert!(e.tag.is_none());
    assert_eq!(e.digest.as_ref().unwrap().as_str(), DIGEST);
    assert_eq!(
        e.message_id.as_deref(),
        Some(audit_ce_id("7u8i9o0p1a2s", "1795202041002000").as_str())
    );
    // The bare entry, without CloudEvents headers (as local tooling posts it): the entry's
    // own insertId and timestamp name it.
    let (_, body) = delivery("delivery/audit-log/put-manifest-digest");
    let bare = decode(&DeliveryMeta::default(), &body).unwrap();
    assert_eq!(bare.reference(), e.reference());
    assert_eq!(bare.delivery, DeliveryForm::AuditLog);
    assert_eq!(bare.message_id.as_deref(), Some("7u8i9o0p1a2s"));
    assert_eq!(
        bare.publish_time.as_deref(),
        Some("2026-11-20T19:14:01.002Z")
    );
    // CloudEvents structured mode: the entry under data, the id beside it.
    let s = decode_delivery("delivery/audit-log/structured-put-manifest-digest").unwrap();
    assert_eq!(
        (s.delivery, s.reference()),
        (DeliveryForm::AuditLog, e.reference())
    );
    assert_eq!(s.message_id, e.message_id);
}

#[test]
fn an_audit_log_tag_delete_is_a_delete_of_the_tag() {
    let e = audit_event("delete-tag");
    assert_eq!(e.action, Action::Delete);
    assert_eq!(e.tag.as_ref().map(|t| t.as_str()), Some("v1.2.3"));
    assert!(e.digest.is_none());
    assert_eq!(e.publish_time.as_deref(), Some("2026-11-20T19:15:12.310Z"));
}

#[test]
fn an_audit_log_manifest_delete_is_a_delete_of_the_digest() {
    let e = audit_event("delete-manifest");
    assert_eq!(e.action, Action::Delete);
    assert!(e.tag.is_none());
    assert_eq!(e.digest.as_ref().unwrap().as_str(), DIGEST);
}

#[test]
fn audit_entries_that_change_no_image_are_ignored_and_decode_refuses_them_for_todays_edge() {
    let cases = [
        (
            "get-manifest",
            "protoPayload.methodName",
            "Docker-GetManifest changes no image",
        ),
        (
            "put-manifest-denied",
            "protoPayload.status",
            "Docker-PutManifest request failed (PERMISSION_DENIED, 7): Permission",
        ),
        (
            "other-service",
            "protoPayload.serviceName",
            "an audit entry of storage.googleapis.com",
        ),
    ];
    let files = std::fs::read_dir(fixture("delivery/audit-log/ignored"))
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(files, cases.len(), "an ignored fixture has no case here");
    for (name, field, reason) in cases {
        let (meta, body) = delivery(&format!("delivery/audit-log/ignored/{name}"));
        let decoded = image_relay::event::decode_delivery(&meta, &body)
            .unwrap_or_else(|e| panic!("{name}: understood, not malformed: {e}"));
        let Decoded::Ignored(Ignored {
            delivery,
            message_id,
            field: decided_by,
            reason: why,
        }) = decoded
        else {
            panic!("{name}: {decoded:?} relays nothing that happened");
        };
        assert_eq!(delivery, DeliveryForm::AuditLog, "{name}");
        assert_eq!(decided_by, field, "{name}: {why}");
        assert!(why.contains(reason), "{name}: {why}");
        assert_eq!(message_id.as_deref(), meta.ce_id.as_deref(), "{name}");
        // The edge acts on decode(), which answers every error with 400: until it tells an
        // ignored entry from a broken one, the entry is refused naming the same field.
        let err = decode(&meta, &body).expect_err(name);
        assert_eq!(err.field, field, "{name}: {err}");
        assert!(
            err.reason.contains(reason) && err.reason.ends_with("nothing to relay"),
            "{name}: {err}"
        );
        assert_eq!(err.message_id, message_id, "{name}");
    }
}

#[test]
fn malformed_audit_entries_are_refused_naming_the_field() {
    let cases = [
        ("protopayload-not-object", "protoPayload", "object"),
        ("not-an-audit-log", "protoPayload.@type", "not an audit log"),
        ("no-service-name", "protoPayload.serviceName", "missing"),
        ("no-method-name", "protoPayload.methodName", "missing"),
        (
            "method-name-not-a-string",
            "protoPayload.methodName",
            "string",
        ),
        (
            "method-name-twice",
            "protoPayload.methodName",
            "more than once",
        ),
        ("no-resource-name", "protoPayload.resourceName", "missing"),
        (
            "resource-names-a-repository",
            "protoPayload.resourceName",
            "names no image",
        ),
        ("resource-bad-digest", "protoPayload.resourceName", "digest"),
        ("status-not-object", "protoPayload.status", "object"),
        (
            "status-code-not-a-number",
            "protoPayload.status.code",
            "google.rpc.Code",
        ),
    ];
    let files: Vec<_> = std::fs::read_dir(fixture("delivery/audit-log/malformed"))
        .unwrap()
        .collect();
    assert_eq!(
        files.len(),
        cases.len(),
        "a malformed fixture has no case here"
    );
    // As Eventarc delivers them: binary mode, the entry as the body.
    let (meta, _) = delivery("delivery/audit-log/put-manifest-tag");
    for (name, field, reason) in cases {
        let body = std::fs::read(fixture(&format!(
            "delivery/audit-log/malformed/{name}.json"
        )))
        .unwrap();
        let err = decode(&meta, &body).expect_err(name);
        assert_eq!(err.field, field, "{name}: {err}");
        assert!(err.reason.contains(reason), "{name}: {err}");
        if name != "method-name-twice" {
            assert_eq!(
                err.message_id, meta.ce_id,
                "{name}: message id kept for the log"
            );
        }
    }
}
