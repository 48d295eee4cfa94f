//! Artifact Registry notifications, whichever way Google delivers them, decoded once into a
//! typed [`Event`]. Nothing past this module sees base64, JSON values or HTTP headers.
//!
//! The `gcr` topic carries `{"action":"INSERT"|"DELETE","digest":"HOST/PATH@sha256:..",
//! "tag":"HOST/PATH:TAG"}`, digest and tag each optional. It arrives in one of four envelopes:
//! Pub/Sub push (`{"message":{"data":BASE64,..},"subscription":..}`), Eventarc's CloudEvents
//! binary mode (the same body, `ce-*` headers), CloudEvents structured mode (the Pub/Sub
//! message under `data`), and Pub/Sub push with payload unwrapping (the notification itself,
//! metadata in `x-goog-pubsub-*` headers).
//!
//! The fifth form is not the `gcr` topic: Eventarc's Cloud Audit Logs trigger
//! (`google.cloud.audit.log.v1.written`) delivers Artifact Registry's Data Access audit entry of
//! the Docker API call itself, the LogEntry as the body (`protoPayload` an AuditLog naming
//! `serviceName`, `methodName` and `resourceName`). Such an entry may ask nothing of the relay
//! (a pull, another service, a request Artifact Registry refused): that is [`Decoded::Ignored`],
//! not a [`DecodeError`], because it is understood and no redelivery would change it.

use std::fmt;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use crate::reference::{Digest, Reference, Repository, Tag};

/// What happened in the source registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Insert,
    Delete,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Insert => "INSERT",
            Action::Delete => "DELETE",
        })
    }
}

/// The envelope a notification came in (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryForm {
    PubSubPush,
    EventarcBinary,
    CloudEventStructured,
    PubSubUnwrapped,
    /// Eventarc's Cloud Audit Logs trigger: the audit entry of the Docker API call.
    AuditLog,
    /// Not a delivery: found by reconciling a rule's source against its targets.
    Reconcile,
}

impl DeliveryForm {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryForm::PubSubPush => "pubsub_push",
            DeliveryForm::EventarcBinary => "eventarc_binary",
            DeliveryForm::CloudEventStructured => "cloudevent_structured",
            DeliveryForm::PubSubUnwrapped => "pubsub_unwrapped",
            DeliveryForm::AuditLog => "audit_log",
            DeliveryForm::Reconcile => "reconcile",
        }
    }
}

/// One decoded notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub action: Action,
    /// The image's repository in the source registry (`us-docker.pkg.dev/proj/repo/img`).
    pub repo: Repository,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
    /// Pub/Sub message id (equal to the CloudEvent id under Eventarc): names the delivery in logs.
    pub message_id: Option<String>,
    /// When Artifact Registry published it (RFC 3339), for the publish-to-replicated latency.
    pub publish_time: Option<String>,
    pub delivery: DeliveryForm,
}

impl Event {
    /// `repo:tag@digest`, for logs and replies.
    pub fn reference(&self) -> Reference {
        Reference {
            repo: self.repo.clone(),
            tag: self.tag.clone(),
            digest: self.digest.clone(),
        }
    }
}

/// A delivery that cannot be understood: the field and the reason, for a 400 reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct DecodeError {
    /// Dotted path of the offending field (`message.data`, `action`, `digest`).
    pub field: String,
    pub reason: String,
    /// The message id, when the envelope was readable enough to have one.
    pub message_id: Option<String>,
}

fn bad(field: &str, reason: impl Into<String>) -> DecodeError {
    DecodeError {
        field: field.to_owned(),
        reason: reason.into(),
        message_id: None,
    }
}

/// The request metadata decoding looks at, taken from HTTP headers by the edge.
#[derive(Debug, Clone, Default)]
pub struct DeliveryMeta {
    pub content_type: Option<String>,
    /// `ce-id`: present in CloudEvents binary mode.
    pub ce_id: Option<String>,
    pub ce_time: Option<String>,
    /// `x-goog-pubsub-message-id`: present with payload unwrapping.
    pub pubsub_message_id: Option<String>,
    pub pubsub_publish_time: Option<String>,
}

/// The Pub/Sub message inside the wrapped envelopes. Pub/Sub sends both spellings of the ids
/// in one message, so they are separate fields (a serde alias would call them duplicates).
#[derive(Deserialize)]
struct PubsubMessage {
    #[serde(default)]
    data: Option<String>,
    #[serde(default, rename = "messageId")]
    message_id: Option<String>,
    #[serde(default, rename = "message_id")]
    message_id_snake: Option<String>,
    #[serde(default, rename = "publishTime")]
    publish_time: Option<String>,
    #[serde(default, rename = "publish_time")]
    publish_time_snake: Option<String>,
}

/// The notification Artifact Registry publishes.
#[derive(Deserialize)]
struct Notification {
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

/// What a delivery asks of the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// An image changed in the source registry: relay it.
    Event(Event),
    /// Understood, and there is nothing to relay: to be acknowledged, since redelivering it
    /// would only bring the same answer back (and an unacknowledged delivery is retried until
    /// it is dead-lettered, as if it were broken).
    Ignored(Ignored),
}

/// A delivery with nothing to relay, and why: for a log line and a 204's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub delivery: DeliveryForm,
    pub message_id: Option<String>,
    /// Dotted path of the field that decided (`protoPayload.methodName`, `protoPayload.status`).
    pub field: String,
    pub reason: String,
}

/// Decode a delivery into an event; one with nothing to relay is refused like a malformed one,
/// naming the field that decided. This is what the edge (`http.rs`) acts on today, which
/// answers every error with 400, so an ignorable audit entry is retried and dead-lettered
/// rather than acknowledged: [`decode_delivery`] tells the two apart, for an edge that answers
/// [`Decoded::Ignored`] with 204. Refusing is the safe side until then: nothing is ever relayed
/// that did not happen.
pub fn decode(meta: &DeliveryMeta, body: &[u8]) -> Result<Event, DecodeError> {
    match decode_delivery(meta, body)? {
        Decoded::Event(e) => Ok(e),
        Decoded::Ignored(i) => Err(DecodeError {
            field: i.field,
            reason: format!("{}: nothing to relay", i.reason),
            message_id: i.message_id,
        }),
    }
}

/// Decode a delivery: an event to relay, one to acknowledge and ignore, or an error naming
/// what cannot be understood.
pub fn decode_delivery(meta: &DeliveryMeta, body: &[u8]) -> Result<Decoded, DecodeError> {
    let structured = meta.content_type.as_deref().is_some_and(|c| {
        c.trim_start()
            .to_ascii_lowercase()
            .starts_with("application/cloudevents+json")
    });
    if meta.pubsub_message_id.is_some() && !structured {
        let n = parse_notification(body).map_err(|e| with_id(e, meta.pubsub_message_id.clone()))?;
        return build(
            n,
            meta.pubsub_message_id.clone(),
            meta.pubsub_publish_time.clone(),
            DeliveryForm::PubSubUnwrapped,
        )
        .map(Decoded::Event)
        .map_err(|e| with_id(e, meta.pubsub_message_id.clone()));
    }
    let root: Value =
        serde_json::from_slice(body).map_err(|e| bad("body", format!("not JSON: {e}")))?;
    if let Some(path) = repeated_key(body, "") {
        return Err(duplicate(path));
    }
    let (wrapped, form, fallback_id, fallback_time) = if structured {
        let data = root.get("data").ok_or_else(|| {
            bad(
                "data",
                "missing: a CloudEvent must carry the Pub/Sub message under data",
            )
        })?;
        (
            data,
            DeliveryForm::CloudEventStructured,
            root.get("id").and_then(Value::as_str).map(str::to_owned),
            root.get("time").and_then(Value::as_str).map(str::to_owned),
        )
    } else if meta.ce_id.is_some() {
        (
            &root,
            DeliveryForm::EventarcBinary,
            meta.ce_id.clone(),
            meta.ce_time.clone(),
        )
    } else {
        (&root, DeliveryForm::PubSubPush, None, None)
    };
    // The audit-log form's body is the LogEntry itself: it has a protoPayload where the
    // Pub/Sub forms have their message.
    if wrapped.get("message").is_none() && wrapped.get("protoPayload").is_some() {
        return audit_log(wrapped, fallback_id, fallback_time);
    }
    let message = wrapped
        .get("message")
        .ok_or_else(|| bad("message", "missing"))?;
    if !message.is_object() {
        return Err(bad("message", "must be an object"));
    }
    let message: PubsubMessage =
        PubsubMessage::deserialize(message).map_err(|e| bad("message", e.to_string()))?;
    let id = message
        .message_id
        .or(message.message_id_snake)
        .or(fallback_id);
    let time = message
        .publish_time
        .or(message.publish_time_snake)
        .or(fallback_time);
    let data = message.data.ok_or_else(|| {
        with_id(
            bad("message.data", "missing: the notification travels in data"),
            id.clone(),
        )
    })?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| with_id(bad("message.data", format!("not base64: {e}")), id.clone()))?;
    let n = parse_notification(&raw).map_err(|mut e| {
        if e.field == "body" {
            e.field = "message.data".into();
        }
        with_id(e, id.clone())
    })?;
    build(n, id.clone(), time, form)
        .map(Decoded::Event)
        .map_err(|e| with_id(e, id))
}

/// Refuse JSON that names a key twice in one object. Parsers disagree on which one wins
/// (serde_json keeps the last, others the first), so `{"action":"DELETE","action":"INSERT"}`
/// could mean one thing to the relay and another to whoever checked it; it means nothing.
/// Returns the dotted path of the first repeated key (`prefix` before it).
fn repeated_key(raw: &[u8], prefix: &str) -> Option<String> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

    struct Unique<'a>(&'a str);

    impl<'de> DeserializeSeed<'de> for Unique<'_> {
        type Value = Option<String>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Unique<'_> {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = std::collections::HashSet::new();
            let mut found = None;
            while let Some(key) = map.next_key::<String>()? {
                let path = if self.0.is_empty() {
                    key.clone()
                } else {
                    format!("{}.{key}", self.0)
                };
                let inner = map.next_value_seed(Unique(&path))?;
                if found.is_none() {
                    found = if seen.insert(key) { inner } else { Some(path) };
                }
            }
            Ok(found)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(inner) = seq.next_element_seed(Unique(self.0))? {
                found = found.or(inner);
            }
            Ok(found)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    let mut d = serde_json::Deserializer::from_slice(raw);
    Unique(prefix).deserialize(&mut d).ok().flatten()
}

fn duplicate(path: String) -> DecodeError {
    DecodeError {
        reason: format!("the key {path:?} appears more than once in one object: ambiguous"),
        field: path,
        message_id: None,
    }
}

fn with_id(mut e: DecodeError, id: Option<String>) -> DecodeError {
    e.message_id = e.message_id.or(id);
    e
}

fn parse_notification(raw: &[u8]) -> Result<Notification, DecodeError> {
    let v: Value = serde_json::from_slice(raw)
        .map_err(|e| bad("body", format!("notification is not JSON: {e}")))?;
    if let Some(path) = repeated_key(raw, "") {
        return Err(duplicate(path));
    }
    if !v.is_object() {
        return Err(bad("body", "notification must be a JSON object"));
    }
    Notification::deserialize(v).map_err(|e| bad("body", format!("not a notification: {e}")))
}

fn build(
    n: Notification,
    message_id: Option<String>,
    publish_time: Option<String>,
    delivery: DeliveryForm,
) -> Result<Event, DecodeError> {
    let action = match n.action.as_deref() {
        Some("INSERT") => Action::Insert,
        Some("DELETE") => Action::Delete,
        Some(other) => {
            return Err(bad(
                "action",
                format!("unknown action {other:?}: expected INSERT or DELETE"),
            ));
        }
        None => return Err(bad("action", "missing")),
    };
    let digest_ref = n
        .digest
        .as_deref()
        .map(|d| {
            let r: Reference = d.parse().map_err(|e| bad("digest", format!("{e}")))?;
            if r.digest.is_none() || r.tag.is_some() {
                return Err(bad("digest", format!("{d:?} is not HOST/PATH@sha256:HEX")));
            }
            Ok(r)
        })
        .transpose()?;
    let tag_ref = n
        .tag
        .as_deref()
        .map(|t| {
            let r: Reference = t.parse().map_err(|e| bad("tag", format!("{e}")))?;
            if r.tag.is_none() || r.digest.is_some() {
                return Err(bad("tag", format!("{t:?} is not HOST/PATH:TAG")));
            }
            Ok(r)
        })
        .transpose()?;
    let repo = match (&digest_ref, &tag_ref) {
        (Some(d), Some(t)) if d.repo != t.repo => {
            return Err(bad(
                "tag",
                format!("names repository {} but digest names {}", t.repo, d.repo),
            ));
        }
        (Some(d), _) => d.repo.clone(),
        (None, Some(t)) => t.repo.clone(),
        (None, None) => return Err(bad("digest", "neither digest nor tag is present")),
    };
    Ok(Event {
        action,
        repo,
        tag: tag_ref.and_then(|r| r.tag),
        digest: digest_ref.and_then(|r| r.digest),
        message_id,
        publish_time,
        delivery,
    })
}

/// `protoPayload.serviceName` of Artifact Registry's audit entries.
const ARTIFACT_REGISTRY: &str = "artifactregistry.googleapis.com";

/// `protoPayload.@type` of a Cloud Audit Logs entry.
const AUDIT_LOG_TYPE: &str = "type.googleapis.com/google.cloud.audit.AuditLog";

/// The Docker API methods that change an image, as Artifact Registry's audit logging names
/// them (all DATA_WRITE, so Data Access entries), and what each did. A push is one
/// `Docker-PutManifest` whether by tag or by digest (each child of a multi-platform push too);
/// the other DATA_WRITE methods move blobs (`Docker-StartUpload`, `-FinishUpload`,
/// `-CancelUpload`, `-DeleteBlob`, `-HeadBlob`), which no rule acts on until a manifest names
/// them, and the DATA_READ ones (`Docker-GetManifest`, `-HeadManifest`, `-GetTags`,
/// `-ServeBlob`, `-Catalog`) change nothing.
const IMAGE_CHANGES: [(&str, Action); 3] = [
    ("Docker-PutManifest", Action::Insert),
    ("Docker-DeleteTag", Action::Delete),
    ("Docker-DeleteManifest", Action::Delete),
];

/// Artifact Registry repositories that serve a Container Registry domain: their images are
/// `DOMAIN/PROJECT/IMAGE`, with no repository segment and no `LOCATION-docker.pkg.dev` host.
const GCR_DOMAINS: [&str; 4] = ["gcr.io", "us.gcr.io", "eu.gcr.io", "asia.gcr.io"];

/// The names of `google.rpc.Code`, which an AuditLog's `status.code` holds.
const RPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// An audit entry (the `google.cloud.audit.log.v1.written` event's data, a LogEntry) as an
/// event. `ce_id`/`ce_time` name the delivery when CloudEvents headers (or the structured
/// envelope) came with it; a bare entry is named by its own `insertId` and `timestamp`.
fn audit_log(
    entry: &Value,
    ce_id: Option<String>,
    ce_time: Option<String>,
) -> Result<Decoded, DecodeError> {
    let own = |key: &str| entry.get(key).and_then(Value::as_str).map(str::to_owned);
    let id = ce_id.or_else(|| own("insertId"));
    let time = ce_time.or_else(|| own("timestamp"));
    let fail = |field: &str, reason: String| with_id(bad(field, reason), id.clone());
    let payload = entry
        .get("protoPayload")
        .filter(|p| p.is_object())
        .ok_or_else(|| fail("protoPayload", "must be an object (an AuditLog)".into()))?;
    if let Some(t) = payload.get("@type")
        && t.as_str() != Some(AUDIT_LOG_TYPE)
    {
        return Err(fail(
            "protoPayload.@type",
            format!("{t} is not an audit log ({AUDIT_LOG_TYPE})"),
        ));
    }
    let text = |key: &str| -> Result<&str, DecodeError> {
        let field = format!("protoPayload.{key}");
        match payload.get(key) {
            None => Err(fail(&field, "missing".into())),
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            Some(_) => Err(fail(&field, "must be a non-empty string".into())),
        }
    };
    let ignore = |field: &str, reason: String| {
        Ok(Decoded::Ignored(Ignored {
            delivery: DeliveryForm::AuditLog,
            message_id: id.clone(),
            field: field.to_owned(),
            reason,
        }))
    };
    let service = text("serviceName")?;
    let method = text("methodName")?;
    if service != ARTIFACT_REGISTRY {
        return ignore(
            "protoPayload.serviceName",
            format!("an audit entry of {service}, not of Artifact Registry ({ARTIFACT_REGISTRY})"),
        );
    }
    let Some(&(_, action)) = IMAGE_CHANGES.iter().find(|(m, _)| *m == method) else {
        let changes: Vec<&str> = IMAGE_CHANGES.iter().map(|(m, _)| *m).collect();
        return ignore(
            "protoPayload.methodName",
            format!("{method} changes no image (only {} do)", changes.join(", ")),
        );
    };
    // Failed requests are audited too (a push without the permission, a tag move an
    // immutable-tags repository turned down): they changed nothing, so nothing is relayed; a
    // delete that failed must above all not reach the targets as one. A failure that may have
    // landed all the same (DEADLINE_EXCEEDED, say) is left to reconcile, like a lost delivery.
    if let Some(status) = payload.get("status").filter(|s| !s.is_null()) {
        if !status.is_object() {
            return Err(fail("protoPayload.status", "must be an object".into()));
        }
        // proto3 JSON leaves a zero out: `{}` is OK.
        let code = match status.get("code") {
            None | Some(Value::Null) => 0,
            Some(c) => c.as_u64().ok_or_else(|| {
                fail(
                    "protoPayload.status.code",
                    format!("{c} is not a google.rpc.Code"),
                )
            })?,
        };
        if code != 0 {
            let name = usize::try_from(code)
                .ok()
                .and_then(|c| RPC_CODES.get(c))
                .copied()
                .unwrap_or("an unknown code");
            let mut reason = format!("the {method} request failed ({name}, {code})");
            if let Some(m) = status
                .get("message")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
            {
                reason.push_str(": ");
                reason.push_str(m);
            }
            return ignore("protoPayload.status", reason);
        }
    }
    let resource = text("resourceName")?;
    let image = image_of(resource).map_err(|reason| fail("protoPayload.resourceName", reason))?;
    Ok(Decoded::Event(Event {
        action,
        repo: image.repo,
        tag: image.tag,
        digest: image.digest,
        message_id: id,
        publish_time: time,
        delivery: DeliveryForm::AuditLog,
    }))
}

/// The image an audit entry's `resourceName` names, in the form the registry serves it
/// (`LOCATION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE`), with its tag or digest. Artifact
/// Registry names images in its API's resource names, image and package ids URL-escaped
/// (`team%2Fapp`):
/// - `projects/P/locations/L/repositories/R/dockerImages/IMAGE@DIGEST` (a DockerImage; a
///   `:TAG` there is taken too),
/// - `projects/P/locations/L/repositories/R/packages/PACKAGE/tags/TAG` (a Tag),
/// - `projects/P/locations/L/repositories/R/packages/PACKAGE/versions/DIGEST` (a Version).
fn image_of(resource: &str) -> Result<Reference, String> {
    const FORMS: &str = "expected projects/P/locations/L/repositories/R/ then \
                         dockerImages/IMAGE@DIGEST, packages/PACKAGE/tags/TAG or \
                         packages/PACKAGE/versions/DIGEST";
    let parts: Vec<&str> = resource.split('/').collect();
    let [
        "projects",
        project,
        "locations",
        location,
        "repositories",
        repository,
        rest @ ..,
    ] = parts.as_slice()
    else {
        return Err(format!("{resource:?} names no repository: {FORMS}"));
    };
    let image = match rest {
        ["dockerImages", image @ ..] if !image.is_empty() => unescape(&image.join("/"))?,
        ["packages", package @ .., "tags", tag] if !package.is_empty() => {
            format!("{}:{}", unescape(&package.join("/"))?, unescape(tag)?)
        }
        ["packages", package @ .., "versions", version] if !package.is_empty() => {
            format!("{}@{}", unescape(&package.join("/"))?, unescape(version)?)
        }
        _ => return Err(format!("{resource:?} names no image: {FORMS}")),
    };
    if location.is_empty() || repository.is_empty() || project.is_empty() {
        return Err(format!("{resource:?} has an empty segment: {FORMS}"));
    }
    // A domain-scoped project (`example.com:my-project`) is two path segments in an image name.
    let project = project.replace(':', "/");
    let name = if GCR_DOMAINS.contains(repository) {
        format!("{repository}/{project}/{image}")
    } else {
        format!("{location}-docker.pkg.dev/{project}/{repository}/{image}")
    };
    let r: Reference = name.parse().map_err(|e| format!("{resource:?}: {e}"))?;
    if r.tag.is_none() && r.digest.is_none() {
        return Err(format!("{resource:?} names neither a tag nor a digest"));
    }
    Ok(r)
}

/// `%XX` escapes of a resource name segment decoded.
fn unescape(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{s:?}: a % that is not an escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?}: escapes that are not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e48f32910efbe11528e691acacd675ee9af0a4cf16072e43d199d7b06de4bb49";

    #[test]
    fn resource_names_become_the_image_names_the_registry_serves() {
        let base = "projects/src-proj/locations/us/repositories/releases";
        let cases = [
            // (resourceName below the repository, repository, tag, digest?)
            (
                format!("{base}/dockerImages/team%2Fapp@sha256:{HEX}"),
                "us-docker.pkg.dev/src-proj/releases/team/app",
                None,
                true,
            ),
            (
                format!("{base}/packages/team%2Fapp/tags/v1.2.3"),
                "us-docker.pkg.dev/src-proj/releases/team/app",
                Some("v1.2.3"),
                false,
            ),
            (
                format!("{base}/packages/team%2Fapp/versions/sha256:{HEX}"),
                "us-docker.pkg.dev/src-proj/releases/team/app",
                None,
                true,
            ),
            // Unescaped slashes are unambiguous: the id is everything after its collection.
            (
                format!("{base}/dockerImages/team/app:v1@sha256:{HEX}"),
                "us-docker.pkg.dev/src-proj/releases/team/app",
                Some("v1"),
                true,
            ),
            (
                "projects/example.com:my-project/locations/us-west1/repositories/my-repo/packages/image-name/tags/2.0"
                    .to_owned(),
                "us-west1-docker.pkg.dev/example.com/my-project/my-repo/image-name",
                Some("2.0"),
                false,
            ),
            (
                "projects/my-project/locations/us/repositories/gcr.io/dockerImages/hello-world%3A1.1"
                    .to_owned(),
                "gcr.io/my-project/hello-world",
                Some("1.1"),
                false,
            ),
        ];
        for (resource, repo, tag, has_digest) in cases {
            let r = image_of(&resource).unwrap_or_else(|e| panic!("{resource}: {e}"));
            assert_eq!(r.repo.to_string(), repo, "{resource}");
            assert_eq!(r.tag.as_ref().map(Tag::as_str), tag, "{resource}");
            assert_eq!(r.digest.is_some(), has_digest, "{resource}");
        }
    }

    #[test]
    fn resource_names_that_name_no_image_are_refused_saying_why() {
        let base = "projects/src-proj/locations/us/repositories/releases";
        let cases = [
            (base.to_owned(), "names no image"),
            (format!("{base}/packages/team%2Fapp"), "names no image"),
            (
                format!("{base}/dockerImages/team%2Fapp"),
                "neither a tag nor a digest",
            ),
            (
                format!("{base}/dockerImages/team%zzapp:v1"),
                "not an escape",
            ),
            (format!("{base}/packages/app/tags/v1%2"), "not an escape"),
            (
                format!("{base}/dockerImages/team%+1app:v1"),
                "not an escape",
            ),
            (format!("{base}/dockerImages/app@sha256:123"), "digest"),
            (
                "projects/src-proj/repositories/releases/dockerImages/app:v1".to_owned(),
                "names no repository",
            ),
            (
                "projects/src-proj/locations//repositories/releases/packages/app/tags/v1"
                    .to_owned(),
                "empty segment",
            ),
        ];
        for (resource, reason) in cases {
            let e = image_of(&resource).expect_err(&resource);
            assert!(e.contains(reason), "{resource}: {e}");
        }
    }
}
