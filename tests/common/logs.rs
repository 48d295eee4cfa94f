//! The relay's log events, captured in process: what a subprocess test reads from stderr, for
//! tests that drive the router without a subprocess.
//!
//! The capture is the calling thread's default subscriber, so it sees what runs on that thread:
//! everything a `#[tokio::test]` on the (default) current-thread runtime does, spawned tasks
//! included.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};

/// One event: its level and its fields (`message` among them), rendered as text.
#[derive(Debug, Clone)]
pub struct Logged {
    pub level: tracing::Level,
    pub fields: BTreeMap<String, String>,
}

impl Logged {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

impl fmt::Display for Logged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.level)?;
        for (k, v) in &self.fields {
            write!(f, " {k}={v:?}")?;
        }
        Ok(())
    }
}

/// Events logged on this thread while it is alive.
pub struct Logs {
    events: Arc<Mutex<Vec<Logged>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    /// Start capturing every event, at every level, on this thread.
    pub fn capture() -> Logs {
        let events = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(events.clone()));
        Logs {
            events,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    pub fn events(&self) -> Vec<Logged> {
        self.events.lock().unwrap().clone()
    }

    /// Every event, one a line, for assertion messages and for searching.
    pub fn text(&self) -> String {
        self.events()
            .iter()
            .map(|e| format!("{e}\n"))
            .collect::<String>()
    }
}

struct Capture(Arc<Mutex<Vec<Logged>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields(BTreeMap::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(Logged {
            level: *event.metadata().level(),
            fields: fields.0,
        });
    }
}

struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}
