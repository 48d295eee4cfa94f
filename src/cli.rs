//! The command line: argument parsing and thin adapters from commands to the engine. Outcomes
//! become exit codes here and nowhere else.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

use crate::copy::progress::Progress;
use crate::copy::{CopyOptions, CopyReport, CopyRequest, Engine, TargetOutcome};
use crate::event::DeliveryMeta;
use crate::manifest::PlatformFilter;
use crate::push_auth::PushAuthMode;
use crate::reference::Reference;
use crate::registry::Registries;
use crate::registry::endpoints::GoogleApis;
use crate::registry::retry::RetryPolicy;
use crate::registry::settings::RegistryConfig;
use crate::rules::RuleSet;
use crate::serve::{ServeConfig, ServeError};

/// Exit code when every target succeeded.
pub const EXIT_OK: u8 = 0;
/// Exit code when at least one target failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for bad arguments or settings: nothing was attempted.
pub const EXIT_USAGE: u8 = 2;

/// Relay container images between OCI registries: byte-exact, streaming, verified.
#[derive(Debug, Parser)]
#[command(name = "image-relay", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy an image (manifests, blobs, tag) from one registry to one or more others.
    Copy(CopyArgs),
    /// Serve the push endpoint for Artifact Registry notifications (Pub/Sub push, Eventarc).
    Serve(ServeArgs),
    /// Work with rule files.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Show, without writing anything, what the rules make of one event.
    Plan(PlanArgs),
    /// Reconcile: copy what every rule selects in its source and the targets lack.
    Sync(SyncArgs),
}

/// Where the Google APIs are; tests point them at fakes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Google APIs")]
pub struct GoogleArgs {
    /// Container Analysis API base URL (vulnerability gate).
    #[arg(long, env = "RELAY_CONTAINER_ANALYSIS_URL", value_name = "URL",
          default_value = crate::registry::endpoints::CONTAINER_ANALYSIS_URL)]
    pub container_analysis_url: String,
    /// Artifact Registry API base URL (repository listing for sync).
    #[arg(long, env = "RELAY_ARTIFACT_REGISTRY_URL", value_name = "URL",
          default_value = crate::registry::endpoints::ARTIFACT_REGISTRY_URL)]
    pub artifact_registry_url: String,
    /// IAM Credentials API base URL (`impersonate` in registry settings).
    #[arg(long, env = "RELAY_IAM_CREDENTIALS_URL", value_name = "URL",
          default_value = crate::registry::endpoints::IAM_CREDENTIALS_URL)]
    pub iam_credentials_url: String,
    /// Binary Authorization API base URL (attestation gate).
    #[arg(long, env = "RELAY_BINARY_AUTHORIZATION_URL", value_name = "URL",
          default_value = crate::registry::endpoints::BINARY_AUTHORIZATION_URL)]
    pub binary_authorization_url: String,
    /// Cloud KMS API base URL (release attestations).
    #[arg(long, env = "RELAY_CLOUD_KMS_URL", value_name = "URL",
          default_value = crate::registry::endpoints::CLOUD_KMS_URL)]
    pub cloud_kms_url: String,
}

impl GoogleArgs {
    pub fn apis(&self) -> GoogleApis {
        GoogleApis {
            container_analysis: self.container_analysis_url.clone(),
            artifact_registry: self.artifact_registry_url.clone(),
            iam_credentials: self.iam_credentials_url.clone(),
            binary_authorization: self.binary_authorization_url.clone(),
            cloud_kms: self.cloud_kms_url.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// A rule file, or a directory of *.toml rule files.
    #[arg(long, env = "RELAY_RULES")]
    pub rules: PathBuf,
    /// Only this rule.
    #[arg(long)]
    pub rule: Option<String>,
    /// Report what would change without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Concurrent blob transfers per copy.
    #[arg(long, default_value_t = 8)]
    pub jobs: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub google: GoogleArgs,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Validate rule files; exits non-zero and prints file:line:column for each problem.
    Check {
        /// A rule file, or a directory of *.toml rule files.
        path: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// A rule file, or a directory of *.toml rule files.
    #[arg(long)]
    pub rules: PathBuf,
    /// A notification (`{"action":..}`) or a whole push delivery body (Pub/Sub or CloudEvent).
    pub event_file: PathBuf,
    #[command(flatten)]
    pub google: GoogleArgs,
}

/// How pushes are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PushAuthKind {
    /// Accept every request (local use only).
    None,
    /// Behind Cloud Run IAM: check the token's email against the allow list.
    Platform,
    /// Verify the Google-signed token: signature, issuer, audience, expiry, email.
    Verify,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    /// JSON unless stderr is a terminal.
    Auto,
    Json,
    Text,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A rule file, or a directory of *.toml rule files; reloaded on change and on SIGHUP.
    #[arg(long, env = "RELAY_RULES")]
    pub rules: PathBuf,
    /// Port to listen on (Cloud Run sets PORT).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "RELAY_LISTEN_ADDRESS", default_value = "0.0.0.0")]
    pub listen_address: std::net::IpAddr,
    /// How push requests are authenticated.
    #[arg(long, env = "RELAY_PUSH_AUTH", value_enum, default_value_t = PushAuthKind::Verify)]
    pub push_auth: PushAuthKind,
    /// Push service account allowed to deliver (repeatable; comma-separated in the variable).
    #[arg(long = "push-email", env = "RELAY_PUSH_EMAILS", value_delimiter = ',')]
    pub push_emails: Vec<String>,
    /// Audience the push token must carry (`verify`): the push endpoint URL by default in Google.
    #[arg(long, env = "RELAY_PUSH_AUDIENCE")]
    pub push_audience: Option<String>,
    /// Where Google publishes its token-signing keys.
    #[arg(long, env = "RELAY_JWKS_URL", default_value = crate::push_auth::GOOGLE_JWKS_URL)]
    pub jwks_url: String,
    /// Copies running at once; further deliveries are answered 429 so Pub/Sub backs off.
    #[arg(long, env = "RELAY_MAX_COPIES", default_value_t = 16)]
    pub max_copies: usize,
    /// Concurrent blob transfers per copy.
    #[arg(long, env = "RELAY_JOBS", default_value_t = 8)]
    pub jobs: usize,
    /// Seconds in-flight copies may run after SIGTERM (Cloud Run allows 10).
    #[arg(long, env = "RELAY_SHUTDOWN_GRACE", default_value_t = 9)]
    pub shutdown_grace: u64,
    /// Seconds a client may take to send a request's headers; slower connections are closed.
    #[arg(long, env = "RELAY_HEADER_TIMEOUT", default_value = "10", value_parser = seconds)]
    pub header_timeout: std::time::Duration,
    /// Seconds a client may take to send a request's body; slower ones get 408.
    #[arg(long, env = "RELAY_BODY_TIMEOUT", default_value = "10", value_parser = seconds)]
    pub body_timeout: std::time::Duration,
    /// Log line format.
    #[arg(long, env = "RELAY_LOG_FORMAT", value_enum, default_value_t = LogFormatArg::Auto)]
    pub log_format: LogFormatArg,
    /// Project whose Cloud Trace the deliveries' trace ids belong to: Cloud Logging links a
    /// log line to its trace only as `projects/P/traces/ID` (Cloud Run sets nothing; the
    /// Terraform module passes the project).
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT", value_name = "PROJECT")]
    pub trace_project: Option<String>,
    #[command(flatten)]
    pub google: GoogleArgs,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Source image: host[:port]/path[:tag][@digest].
    #[arg(required_unless_present = "from_list")]
    pub source: Option<String>,
    /// Target images or repositories; the source tag is kept unless a target names its own.
    #[arg(required_unless_present = "from_list")]
    pub targets: Vec<String>,
    /// File with one `SRC DST` pair per line, all copied in one run (blank lines and
    /// `#` comments are skipped).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["source", "targets"])]
    pub from_list: Option<PathBuf>,
    /// Concurrent blob transfers at most (and concurrent images with --from-list).
    #[arg(long, short = 'j', default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Copy only this platform of an index (os/arch[/variant]; repeatable). The copied index
    /// then has a new digest.
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]")]
    pub platforms: Vec<PlatformFilter>,
    /// Also copy referrers: OCI 1.1 referrers and cosign `.sig`/`.att`/`.sbom` tags.
    #[arg(long)]
    pub referrers: bool,
    /// Registry settings (`[registry."HOST"]` tables, as in rule files). Hosts without
    /// settings use the Docker config's credentials, or none.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print only errors and the final summary.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub google: GoogleArgs,
}

/// Parse arguments, run the command, return its exit code.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Copy(args) => copy(args).await,
        Command::Serve(args) => serve(args).await,
        Command::Rules(RulesCommand::Check { path }) => rules_check(&path),
        Command::Plan(args) => plan(&args).await,
        Command::Sync(args) => sync(args).await,
    }
}

async fn sync(args: SyncArgs) -> ExitCode {
    let rules = match load_rules(&args.rules) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if let Some(name) = &args.rule
        && !rules.rules.iter().any(|r| &r.name == name)
    {
        return usage_error(format!("--rule {name:?}: no such rule"));
    }
    let relay = match relay(rules, &args.google.apis(), args.jobs.max(1)) {
        Ok(r) => r,
        Err(e) => return usage_error(e),
    };
    let opts = crate::reconcile::SyncOptions {
        rule: args.rule.clone(),
        dry_run: args.dry_run,
    };
    let report = crate::reconcile::sync(&relay, &opts, None).await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        for i in &report.items {
            let target = i
                .target
                .as_deref()
                .map(|t| format!(" -> {t}"))
                .unwrap_or_default();
            let reason = i
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            println!(
                "{:<12} [{}] {}{target}{reason}",
                i.outcome, i.rule, i.source
            );
        }
        println!(
            "{}checked {}, already in place {}, copied {}, removed {}, failed {}",
            if report.dry_run { "dry run: " } else { "" },
            report.checked,
            report.already_in_place,
            report.copied,
            report.removed,
            report.failed
        );
    }
    ExitCode::from(if report.failed == 0 {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

async fn serve(args: ServeArgs) -> ExitCode {
    let push_auth = match args.push_auth {
        PushAuthKind::None => {
            tracing::warn!(
                "push authentication is off: anyone who can reach this port can trigger copies"
            );
            PushAuthMode::None
        }
        PushAuthKind::Platform | PushAuthKind::Verify if args.push_emails.is_empty() => {
            return usage_error(
                "--push-email (RELAY_PUSH_EMAILS) is required with --push-auth platform or verify",
            );
        }
        PushAuthKind::Platform => PushAuthMode::Platform {
            allowed_emails: args.push_emails.clone(),
        },
        PushAuthKind::Verify => match &args.push_audience {
            None => {
                return usage_error(
                    "--push-audience (RELAY_PUSH_AUDIENCE) is required with --push-auth verify",
                );
            }
            Some(aud) => PushAuthMode::Verify {
                allowed_emails: args.push_emails.clone(),
                audience: aud.clone(),
                jwks_url: args.jwks_url.clone(),
            },
        },
    };
    let cfg = ServeConfig {
        rules: args.rules,
        listen: std::net::SocketAddr::new(args.listen_address, args.port),
        push_auth,
        max_copies: args.max_copies,
        jobs: args.jobs.max(1),
        grace: std::time::Duration::from_secs(args.shutdown_grace),
        header_timeout: args.header_timeout,
        body_timeout: args.body_timeout,
        google: args.google.apis(),
        trace_project: args.trace_project.clone(),
    };
    match crate::serve::run(cfg).await {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e @ (ServeError::Rules(_) | ServeError::Config(_))) => {
            tracing::error!("{e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn rules_check(path: &Path) -> ExitCode {
    match RuleSet::load(path) {
        Ok(set) => {
            for w in &set.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: {} rule(s), {} registr{} configured: OK",
                path.display(),
                set.rules.len(),
                set.registries.registries.len(),
                if set.registries.registries.len() == 1 {
                    "y"
                } else {
                    "ies"
                }
            );
            ExitCode::from(EXIT_OK)
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{} error(s)", errors.len());
            ExitCode::from(EXIT_FAILED)
        }
    }
}

async fn plan(args: &PlanArgs) -> ExitCode {
    let rules = match load_rules(&args.rules) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let body = match std::fs::read(&args.event_file) {
        Ok(b) => b,
        Err(e) => return usage_error(format!("{}: {e}", args.event_file.display())),
    };
    let event = match decode_any(&body) {
        Ok(e) => e,
        Err(e) => return usage_error(format!("{}: {e}", args.event_file.display())),
    };
    let plan = crate::relay::plan(&rules, &event);
    // Gates read the source (signatures); nothing is ever written.
    let gated = plan
        .matches
        .iter()
        .any(|m| m.rule.gated() && m.arrival == crate::relay::Arrival::Image);
    let relay = if gated {
        match relay(rules.clone(), &args.google.apis(), 1) {
            Ok(r) => Some(r),
            Err(e) => return usage_error(e),
        }
    } else {
        None
    };
    println!("event: {} {}", event.action, event.reference());
    for m in &plan.matches {
        let r = &m.rule;
        if let crate::relay::Arrival::ReferrerOf(subject) = &m.arrival {
            let targets: Vec<String> = m.targets.iter().map(|t| t.to_string()).collect();
            println!(
                "rule {}: referrer of {subject} arrived: release the tags it selects that point there, and the referrer, to {}",
                r.name,
                targets.join(", ")
            );
            continue;
        }
        if m.arrival == crate::relay::Arrival::Untagged {
            let targets: Vec<String> = m.targets.iter().map(|t| t.to_string()).collect();
            println!(
                "rule {}: untagged manifest: read it (one GET); if it is a referrer, release the tags its subject has and bring it to the targets holding the subject ({})",
                r.name,
                targets.join(", ")
            );
            continue;
        }
        if let (Some(relay), true) = (&relay, r.gated()) {
            match relay.gate(&event, m).await {
                None => println!("rule {}: release gates passed", r.name),
                Some(crate::relay::TargetStatus::Held { gate, reason }) => {
                    println!("rule {}: held by the {gate} gate: {reason}", r.name);
                    continue;
                }
                Some(crate::relay::TargetStatus::Pending { gate, reason }) => {
                    println!(
                        "rule {}: the {gate} gate cannot decide yet: {reason}",
                        r.name
                    );
                    continue;
                }
                Some(other) => {
                    println!(
                        "rule {}: the release gates could not be checked: {}",
                        r.name,
                        other.reason().unwrap_or(other.label())
                    );
                    continue;
                }
            }
        }
        let mut how = Vec::new();
        if !r.platforms.is_empty() {
            how.push(format!(
                "platforms {}",
                r.platforms
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        if r.referrers {
            how.push("with referrers".into());
        }
        if let Some(a) = &r.attest {
            how.push(format!("then attested on {} with {}", a.note, a.key));
        }
        let verb = match event.action {
            crate::event::Action::Insert => "copy to",
            crate::event::Action::Delete => "delete tag from",
        };
        for t in &m.targets {
            let tag = event
                .tag
                .as_ref()
                .map(|t| format!(":{t}"))
                .unwrap_or_default();
            let extra = if how.is_empty() {
                String::new()
            } else {
                format!(" ({})", how.join(", "))
            };
            println!("rule {}: {verb} {t}{tag}{extra}", r.name);
        }
    }
    for rej in &plan.rejections {
        println!(
            "rule {}: no match: {} clause: {}",
            rej.rule, rej.clause, rej.reason
        );
    }
    if plan.matches.is_empty() {
        println!("nothing would be copied");
    }
    ExitCode::from(EXIT_OK)
}

/// An event file as an operator has it: a bare notification, a Pub/Sub push body, or a
/// structured CloudEvent.
fn decode_any(body: &[u8]) -> Result<crate::event::Event, crate::event::DecodeError> {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let mut meta = DeliveryMeta::default();
    if value.get("specversion").is_some() {
        meta.content_type = Some("application/cloudevents+json".into());
    } else if value.get("message").is_none() {
        meta.pubsub_message_id = Some("plan".into());
    }
    crate::event::decode(&meta, body)
}

/// Load rule files for a command; on errors print each (file:line:column) and give the exit code.
fn load_rules(path: &Path) -> Result<RuleSet, ExitCode> {
    RuleSet::load(path).map_err(|errors| {
        for e in &errors {
            eprintln!("{e}");
        }
        ExitCode::from(EXIT_USAGE)
    })
}

/// A positive number of seconds, fractions allowed (`0.5`).
fn seconds(s: &str) -> Result<std::time::Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(std::time::Duration::from_secs_f64(v)),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}

/// The relay for a one-shot command (`sync`, `plan`), with metrics nobody scrapes.
fn relay(
    rules: RuleSet,
    apis: &GoogleApis,
    jobs: usize,
) -> Result<crate::relay::Relay, crate::relay::LoadError> {
    let metrics = Arc::new(crate::telemetry::Metrics::new());
    crate::relay::Relay::new(rules, apis.clone(), jobs, RetryPolicy::default(), metrics)
}

fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(EXIT_USAGE)
}

async fn copy(args: CopyArgs) -> ExitCode {
    let requests = match copy_requests(&args) {
        Ok(r) => r,
        Err(e) => return usage_error(e),
    };
    let config = match &args.config {
        Some(p) => match RegistryConfig::load(p) {
            Ok(c) => c,
            Err(e) => return usage_error(e),
        },
        None => RegistryConfig::default(),
    };
    let registries = match Registries::new(config, RetryPolicy::default(), args.google.apis()) {
        Ok(r) => Arc::new(r),
        Err(e) => return usage_error(format!("HTTP client: {e}")),
    };
    let progress = Progress::for_terminal(args.quiet);
    let opts = CopyOptions {
        jobs: usize::from(args.jobs),
        platforms: args.platforms.clone(),
        referrers: args.referrers,
    };
    let engine = Engine::new(registries, opts, progress.clone());
    let started = Instant::now();
    let reports = engine.copy_all(requests).await;
    progress.clear();
    let ok = print_reports(&reports, args.quiet);
    eprintln!("{}", engine.stats().summary(started.elapsed()));
    let counts: Vec<String> = engine
        .registries()
        .request_counts()
        .into_iter()
        .map(|(h, n)| format!("{h}: {n}"))
        .collect();
    eprintln!("requests: {}", counts.join(", "));
    ExitCode::from(if ok { EXIT_OK } else { EXIT_FAILED })
}

fn print_reports(reports: &[CopyReport], quiet: bool) -> bool {
    let mut ok = true;
    for r in reports {
        if let Some(from) = &r.filtered_from
            && !quiet
        {
            eprintln!(
                "note: {}: platforms filtered, index digest {from} became the new index below",
                r.source
            );
        }
        for (target, outcome) in &r.targets {
            let digest = r.digest.as_ref().map(|d| d.to_string()).unwrap_or_default();
            match outcome {
                Ok(TargetOutcome::Copied) if !quiet => eprintln!("copied   {target} {digest}"),
                Ok(TargetOutcome::AlreadyPresent) if !quiet => {
                    eprintln!("present  {target} {digest}")
                }
                Ok(_) => {}
                Err(e) => {
                    ok = false;
                    eprintln!("FAILED   {target}: {e}");
                }
            }
        }
    }
    ok
}

/// The requests of a `copy`: from arguments, or grouped by source from `--from-list` so that
/// one source image going to several targets is read once.
fn copy_requests(args: &CopyArgs) -> Result<Vec<CopyRequest>, String> {
    let pairs: Vec<(String, String)> = match &args.from_list {
        Some(path) => read_list(path)?,
        None => {
            let src = args.source.clone().ok_or("missing SRC")?;
            if args.targets.is_empty() {
                return Err("missing DST".into());
            }
            args.targets
                .iter()
                .map(|t| (src.clone(), t.clone()))
                .collect()
        }
    };
    let mut requests: Vec<CopyRequest> = Vec::new();
    for (src, dst) in pairs {
        let source: Reference = src.parse().map_err(|e| format!("SRC: {e}"))?;
        let target: Reference = dst.parse().map_err(|e| format!("DST: {e}"))?;
        if target.repo == source.repo && target.tag == source.tag {
            return Err(format!("DST {dst} is the source itself"));
        }
        match requests.iter_mut().find(|r| r.source == source) {
            Some(r) => r.targets.push(target),
            None => requests.push(CopyRequest::new(source, vec![target])),
        }
    }
    Ok(requests)
}

fn read_list(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [s, d] => out.push(((*s).to_owned(), (*d).to_owned())),
            _ => {
                return Err(format!(
                    "{}:{}: expected `SRC DST`, found {} field(s)",
                    path.display(),
                    n + 1,
                    fields.len()
                ));
            }
        }
    }
    if out.is_empty() {
        return Err(format!("{}: no `SRC DST` lines", path.display()));
    }
    Ok(out)
}
