//! The `serve` process: load rules, listen, reload rules on file change or SIGHUP, and on
//! SIGTERM stop accepting, let in-flight copies finish within a grace period, then exit.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc};

use crate::http::{AppState, app};
use crate::push_auth::{PushAuth, PushAuthMode};
use crate::registry::endpoints::GoogleApis;
use crate::registry::retry::RetryPolicy;
use crate::relay::{LoadError, Relay};
use crate::rules::{RuleError, RuleSet};
use crate::telemetry::Metrics;

/// Several file events arrive for one save (write, rename, chmod): reload once they settle.
const RELOAD_DEBOUNCE: Duration = Duration::from_millis(200);

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub rules: PathBuf,
    pub listen: SocketAddr,
    pub push_auth: PushAuthMode,
    /// Copies at once; deliveries past it get 429.
    pub max_copies: usize,
    /// Concurrent blob transfers per copy.
    pub jobs: usize,
    /// How long in-flight copies may run after SIGTERM.
    pub grace: Duration,
    /// How long a client may take to send a request's headers.
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body once its headers are in.
    pub body_timeout: Duration,
    /// Where the Google APIs are.
    pub google: GoogleApis,
    /// The project whose Cloud Trace delivery trace ids belong to.
    pub trace_project: Option<String>,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid rules:\n{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Rules(Vec<RuleError>),
    #[error("{0}")]
    Config(#[from] crate::registry::settings::ConfigError),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("server: {0}")]
    Serve(std::io::Error),
}

impl From<LoadError> for ServeError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Config(e) => ServeError::Config(e),
            LoadError::Client(e) => ServeError::Http(e),
        }
    }
}

/// Run until SIGTERM or SIGINT.
pub async fn run(cfg: ServeConfig) -> Result<(), ServeError> {
    let rules = RuleSet::load(&cfg.rules).map_err(ServeError::Rules)?;
    for w in &rules.warnings {
        tracing::warn!("{w}");
    }
    let metrics = Arc::new(Metrics::new());
    let relay = Arc::new(Relay::new(
        rules,
        cfg.google.clone(),
        cfg.jobs,
        RetryPolicy::default(),
        metrics.clone(),
    )?);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let state = Arc::new(AppState {
        relay: relay.clone(),
        push_auth: PushAuth::new(cfg.push_auth.clone(), http),
        copies: Arc::new(Semaphore::new(cfg.max_copies.max(1))),
        metrics: metrics.clone(),
        ready: AtomicBool::new(true),
        syncing: tokio::sync::Mutex::new(()),
        body_timeout: cfg.body_timeout,
        trace_project: cfg.trace_project.clone().filter(|p| !p.is_empty()),
    });
    spawn_reloader(cfg.rules.clone(), relay, metrics);

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(cfg.listen);
    tracing::info!(address = %addr, rules = %cfg.rules.display(), "serving");

    let stopping = Arc::new(Notify::new());
    let on_signal = {
        let stopping = stopping.clone();
        let state = state.clone();
        async move {
            terminated().await;
            tracing::info!("stopping: no new deliveries, finishing those in flight");
            state.ready.store(false, Ordering::Relaxed);
            stopping.notify_waiters();
            stopping.notify_one();
        }
    };
    let server = accept(listener, app(state), cfg.header_timeout, on_signal);
    let grace = cfg.grace;
    tokio::select! {
        () = server => {}
        () = async {
            stopping.notified().await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!(grace_seconds = grace.as_secs(), "grace period over: exiting with copies in flight"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Serve connections until `stop` completes, then wait for the requests in flight.
///
/// Every connection must send a request's headers within `header_timeout` of being ready for
/// one (its first, or the next on a kept-alive connection), or it is closed: one slow or
/// silent client then holds a socket for seconds, not for ever, and two hundred of them do
/// not starve the deliveries behind them.
async fn accept(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    header_timeout: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, say: the next accept may succeed once some close.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client that goes away or times out ends its own connection, nothing else.
            let _ = conn.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Reload on changes under the rules path or to a file the rules name, and on SIGHUP. An
/// invalid edit (of a rule or of a key) keeps the rules in force, logs every error and counts
/// a failed reload.
fn spawn_reloader(path: PathBuf, relay: Arc<Relay>, metrics: Arc<Metrics>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<&'static str>();
    let mut watcher = Watch::start(&path, tx.clone());
    if let Some(w) = &mut watcher {
        w.name_files(relay.loaded().rules.named_files());
    }
    #[cfg(unix)]
    {
        // Installed before this returns, not inside the task: a SIGHUP that arrives before
        // a spawned task first runs would meet the default action and end the process.
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        let _ = tx.send("SIGHUP");
                    }
                });
            }
            Err(e) => tracing::warn!("rules will not reload on SIGHUP: {e}"),
        }
    }
    tokio::spawn(async move {
        // The watcher stops when dropped: keep it as long as this task lives.
        let mut watcher = watcher;
        while let Some(why) = rx.recv().await {
            tokio::time::sleep(RELOAD_DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            let errors: Vec<String> = match RuleSet::load(&path) {
                Ok(rules) => {
                    let n = rules.rules.len();
                    for w in &rules.warnings {
                        tracing::warn!(trigger = why, "{w}");
                    }
                    let files = rules.named_files();
                    match relay.replace_rules(rules) {
                        Ok(()) => {
                            if let Some(w) = &mut watcher {
                                w.name_files(files);
                            }
                            metrics.reload(true);
                            tracing::info!(trigger = why, rules = n, "rules reloaded");
                            continue;
                        }
                        Err(e) => vec![e.to_string()],
                    }
                }
                Err(errors) => errors.iter().map(ToString::to_string).collect(),
            };
            metrics.reload(false);
            for e in &errors {
                tracing::error!(
                    trigger = why,
                    "rules not reloaded, previous rules stay in force: {e}"
                );
            }
        }
    });
}

/// The files whose change reloads the rules: the rules file (or every `*.toml` of the rules
/// directory) and the files the rules in force name. Directories are watched, not files:
/// editors and secret mounts replace a file by renaming another over it, which a watch on
/// the file itself would not survive.
struct Watch {
    watcher: notify::RecommendedWatcher,
    /// Directories watched so far.
    dirs: HashSet<PathBuf>,
    /// Files named by the rules in force, as absolute paths.
    named: Arc<Mutex<HashSet<PathBuf>>>,
}

impl Watch {
    fn start(path: &Path, tx: mpsc::UnboundedSender<&'static str>) -> Option<Watch> {
        use notify::{RecursiveMode, Watcher};
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let (dir, file) = if path.is_dir() {
            (path.clone(), None)
        } else {
            (
                path.parent().unwrap_or(Path::new("/")).to_owned(),
                Some(path.clone()),
            )
        };
        let named: Arc<Mutex<HashSet<PathBuf>>> = Arc::default();
        let seen = named.clone();
        let rules_dir = dir.clone();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let Ok(ev) = res else { return };
            if ev.kind.is_access() {
                return;
            }
            let named = seen.lock().unwrap_or_else(|p| p.into_inner());
            let relevant = ev.paths.iter().any(|p| {
                named.contains(p)
                    || match &file {
                        Some(f) => p == f,
                        None => {
                            p.parent() == Some(rules_dir.as_path())
                                && p.extension().is_some_and(|x| x == "toml")
                        }
                    }
            });
            if relevant {
                let _ = tx.send("file change");
            }
        })
        .map_err(|e| tracing::warn!("rules will reload on SIGHUP only: cannot watch files: {e}"))
        .ok()?;
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::warn!(
                "rules will reload on SIGHUP only: cannot watch {}: {e}",
                dir.display()
            );
            return None;
        }
        Some(Watch {
            watcher,
            dirs: HashSet::from([dir]),
            named,
        })
    }

    /// Watch `files` (what the rules now in force name) from here on.
    fn name_files(&mut self, files: Vec<PathBuf>) {
        use notify::{RecursiveMode, Watcher};
        let files: HashSet<PathBuf> = files
            .into_iter()
            .map(|f| std::path::absolute(&f).unwrap_or(f))
            .collect();
        for dir in files.iter().filter_map(|f| f.parent()) {
            if self.dirs.contains(dir) {
                continue;
            }
            match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.dirs.insert(dir.to_owned());
                }
                Err(e) => tracing::warn!(
                    "a change to the files in {} reloads the rules only on SIGHUP: cannot watch it: {e}",
                    dir.display()
                ),
            }
        }
        *self.named.lock().unwrap_or_else(|p| p.into_inner()) = files;
    }
}
