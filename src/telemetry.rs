//! Logs and metrics. Logs: one JSON object per line in the shape Cloud Logging reads natively
//! (`severity`, `message`, fields beside them), or readable lines on a terminal. Metrics:
//! Prometheus text format at `/metrics`.

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::copy::progress::Stats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    delivery: String,
    action: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CopyLabels {
    rule: String,
    target: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    events: Family<EventLabels, Counter>,
    copies: Family<CopyLabels, Counter>,
    blobs: Family<ResultLabel, Counter>,
    bytes: Counter,
    copy_seconds: Histogram,
    replication_seconds: Histogram,
    /// Copies running now.
    pub in_flight: Gauge,
    reloads: Family<ResultLabel, Counter>,
    held: Family<GateLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GateLabels {
    rule: String,
    gate: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("image_relay");
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Deliveries by form, action and outcome",
            events.clone(),
        );
        let copies = Family::<CopyLabels, Counter>::default();
        registry.register(
            "copies",
            "Copies by rule, target (as the rule names it: never a tag) and outcome",
            copies.clone(),
        );
        let blobs = Family::<ResultLabel, Counter>::default();
        registry.register(
            "blobs",
            "Blobs copied, skipped (present) and mounted",
            blobs.clone(),
        );
        let bytes = Counter::default();
        registry.register(
            "copied_bytes",
            "Blob bytes read from sources and verified",
            bytes.clone(),
        );
        // 50 ms .. ~27 min: a manifest-only copy up to a multi-GiB image.
        let copy_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 16));
        registry.register(
            "copy_duration_seconds",
            "Duration of one event's copies",
            copy_seconds.clone(),
        );
        let replication_seconds = Histogram::new(exponential_buckets(0.25, 2.0, 16));
        registry.register(
            "replication_latency_seconds",
            "From the source's publish time to the image being in place at a target",
            replication_seconds.clone(),
        );
        let in_flight = Gauge::default();
        registry.register("copies_in_flight", "Copies running now", in_flight.clone());
        let reloads = Family::<ResultLabel, Counter>::default();
        registry.register("rule_reloads", "Rule reloads by result", reloads.clone());
        let held = Family::<GateLabels, Counter>::default();
        registry.register(
            "held",
            "Images a release gate held back, by rule and gate",
            held.clone(),
        );
        Metrics {
            registry,
            events,
            copies,
            blobs,
            bytes,
            copy_seconds,
            replication_seconds,
            in_flight,
            reloads,
            held,
        }
    }

    /// Count one delivery.
    pub fn event(&self, delivery: &str, action: &str, outcome: &str) {
        self.events
            .get_or_create(&EventLabels {
                delivery: delivery.to_owned(),
                action: action.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Count one target's copy outcome.
    pub fn copy(&self, rule: &str, target: &str, outcome: &str) {
        self.copies
            .get_or_create(&CopyLabels {
                rule: rule.to_owned(),
                target: target.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Add one copy run's blob counters and duration.
    pub fn observe_copy(&self, stats: &Stats, took: Duration) {
        for (result, n) in [
            ("copied", stats.blobs_copied.load(Ordering::Relaxed)),
            ("skipped", stats.blobs_skipped.load(Ordering::Relaxed)),
            ("mounted", stats.blobs_mounted.load(Ordering::Relaxed)),
        ] {
            self.blobs
                .get_or_create(&ResultLabel {
                    result: result.into(),
                })
                .inc_by(n);
        }
        self.bytes.inc_by(stats.bytes.load(Ordering::Relaxed));
        self.copy_seconds.observe(took.as_secs_f64());
    }

    /// An image is in place at a target: observe the delay since the source published it.
    pub fn replicated(&self, publish_time: Option<&str>) {
        let Some(t) = publish_time.and_then(|t| humantime::parse_rfc3339_weak(t).ok()) else {
            return;
        };
        if let Ok(d) = SystemTime::now().duration_since(t) {
            self.replication_seconds.observe(d.as_secs_f64());
        }
    }

    /// Count an image a release gate held back.
    pub fn held(&self, rule: &str, gate: &str) {
        self.held
            .get_or_create(&GateLabels {
                rule: rule.to_owned(),
                gate: gate.to_owned(),
            })
            .inc();
    }

    /// Count a rule reload.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (Cloud Logging).
    Json,
    /// Readable lines for a terminal.
    Text,
}

/// Start logging to stderr. `default_level` applies unless `RUST_LOG` says otherwise.
pub fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.event_format(CloudLogging).init(),
        LogFormat::Text => builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// Cloud Logging's structured shape: `severity` (not `level`), `message`, `time`; other
/// fields beside them. `trace` and `labels` fields land in the keys Cloud Logging indexes.
struct CloudLogging;

struct JsonFields(Map<String, Value>);

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        // The audit record is JSON already: embed it as an object, not a string, so that log
        // queries and the BigQuery export see its fields.
        if field.name() == "audit"
            && let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(&text)
        {
            self.0.insert("audit".to_owned(), v);
            return;
        }
        self.0.insert(field.name().to_owned(), Value::String(text));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
}

impl<S, N> FormatEvent<S, N> for CloudLogging
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let severity = match *event.metadata().level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARNING",
            tracing::Level::INFO => "INFO",
            tracing::Level::DEBUG | tracing::Level::TRACE => "DEBUG",
        };
        let mut fields = JsonFields(Map::new());
        event.record(&mut fields);
        let mut out = Map::new();
        out.insert("severity".into(), severity.into());
        out.insert(
            "message".into(),
            fields.0.remove("message").unwrap_or_else(|| "".into()),
        );
        out.insert(
            "time".into(),
            humantime::format_rfc3339_millis(SystemTime::now())
                .to_string()
                .into(),
        );
        if let Some(trace) = fields.0.remove("trace").filter(|t| t.as_str() != Some("")) {
            out.insert("logging.googleapis.com/trace".into(), trace);
        }
        let mut labels = Map::new();
        for key in ["rule", "target"] {
            if let Some(v) = fields.0.get(key) {
                labels.insert(key.into(), v.clone());
            }
        }
        if !labels.is_empty() {
            out.insert(
                "logging.googleapis.com/labels".into(),
                Value::Object(labels),
            );
        }
        out.extend(fields.0);
        writeln!(writer, "{}", Value::Object(out))
    }
}
