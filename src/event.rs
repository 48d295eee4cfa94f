//! Artifact Registry notifications, whichever way Google delivers them, decoded once into a
//! typed [`Event`]. Nothing past this module sees base64, JSON values or HTTP headers.
//!
//! The `gcr` topic carries `{"action":"INSERT"|"DELETE","digest":"HOST/PATH@sha256:..",
//! "tag":"HOST/PATH:TAG"}`, digest and tag each optional. It arrives in one of four envelopes:
//! Pub/Sub push (`{"message":{"data":BASE64,..},"subscription":..}`), Eventarc's CloudEvents
//! binary mode (the same body, `ce-*` headers), CloudEvents structured mode (the Pub/Sub
//! message under `data`), and Pub/Sub push with payload unwrapping (the notification itself,
//! metadata in `x-goog-pubsub-*` headers).

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

/// Decode a delivery into an event.
pub fn decode(meta: &DeliveryMeta, body: &[u8]) -> Result<Event, DecodeError> {
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
    build(n, id.clone(), time, form).map_err(|e| with_id(e, id))
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
