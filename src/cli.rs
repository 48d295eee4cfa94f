//! The command line: argument parsing and thin adapters from commands to the engine. Outcomes
//! become exit codes here and nowhere else.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

use crate::config::RegistryConfig;
use crate::copy::progress::Progress;
use crate::copy::{CopyOptions, CopyReport, CopyRequest, Engine, TargetOutcome};
use crate::manifest::PlatformFilter;
use crate::reference::Reference;
use crate::registry::Registries;
use crate::registry::retry::RetryPolicy;

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
}

/// Parse arguments, run the command, return its exit code.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Copy(args) => copy(args).await,
    }
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
    let registries = match Registries::new(config, RetryPolicy::default()) {
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
        if let Some(from) = &r.filtered_from {
            if !quiet {
                eprintln!(
                    "note: {}: platforms filtered, index digest {from} became the new index below",
                    r.source
                );
            }
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
