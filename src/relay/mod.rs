//! The relay's decision about one event, in the order it is made: [`plan`] (which rules match,
//! which turned it away) → [`gate`] (may the image leave?) → [`converge`] (copy, or propagate a
//! tag deletion, until the targets hold what the source names) or [`release`] (a referrer
//! arrived for an image held back) → [`outcome`] (per target, and how to answer) → [`audit`]
//! (one record per decision). No HTTP here: the edge calls [`Relay::plan`], takes a copy slot,
//! calls [`Relay::run`] and maps the [`Disposition`] to a status once; `sync`, `plan` and `copy`
//! reach the same functions.

pub mod audit;
mod converge;
pub mod gate;
mod locks;
pub mod outcome;
pub mod plan;
mod release;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::event::{Action, Event};
use crate::reference::Repository;
use crate::registry::Registries;
use crate::registry::endpoints::GoogleApis;
use crate::registry::retry::RetryPolicy;
use crate::registry::settings::ConfigError;
use crate::rules::RuleSet;
use crate::telemetry::Metrics;

use converge::Cargo;
pub use gate::Gates;
pub use outcome::{Disposition, Outcome, TargetResult, TargetStatus};
pub use plan::{Arrival, Match, Plan, Rejection, plan};

/// Why rules could not be put in force.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP stack could not be set up (no usable root certificates, say): nothing an
    /// edit of the rules can fix.
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Rules in force and the registry clients built from their settings.
pub struct Loaded {
    pub rules: RuleSet,
    pub registries: Arc<Registries>,
}

/// The service's domain: rules in force, registries, release gates, per-tag locks, metrics.
pub struct Relay {
    loaded: ArcSwap<Loaded>,
    locks: locks::TagLocks,
    gates: Gates,
    jobs: usize,
    retry: RetryPolicy,
    apis: GoogleApis,
    metrics: Arc<Metrics>,
}

impl Relay {
    /// The relay for `rules`, calling the Google APIs at `apis`, with `jobs` blob transfers
    /// per copy.
    pub fn new(
        rules: RuleSet,
        apis: GoogleApis,
        jobs: usize,
        retry: RetryPolicy,
        metrics: Arc<Metrics>,
    ) -> Result<Self, LoadError> {
        let loaded = Self::build(rules, &retry, &apis)?;
        Ok(Relay {
            loaded: ArcSwap::from_pointee(loaded),
            locks: locks::TagLocks::default(),
            gates: Gates::new(&apis, metrics.clone())?,
            jobs,
            retry,
            apis,
            metrics,
        })
    }

    fn build(rules: RuleSet, retry: &RetryPolicy, apis: &GoogleApis) -> Result<Loaded, LoadError> {
        let registries = Registries::new(rules.registries.clone(), retry.clone(), apis.clone())?;
        // Credentials are resolved now, so a missing password variable fails the load, not
        // the first copy.
        for host in rules.registries.registries.keys() {
            registries.host(host)?;
        }
        Ok(Loaded {
            rules,
            registries: Arc::new(registries),
        })
    }

    /// Put new rules in force; work in flight finishes with the rules it started with.
    pub fn replace_rules(&self, rules: RuleSet) -> Result<(), LoadError> {
        let loaded = Self::build(rules, &self.retry, &self.apis)?;
        self.loaded.store(Arc::new(loaded));
        Ok(())
    }

    /// The rules in force.
    pub fn loaded(&self) -> Arc<Loaded> {
        self.loaded.load_full()
    }

    /// What the rules in force make of `event`: no I/O.
    pub fn plan(&self, event: &Event) -> Plan {
        plan(&self.loaded().rules, event)
    }

    /// Carry out `plan` for `event`: copies, tag guards, deletions, and the audit record of
    /// the decision (matched or turned away alike). Only sources named in matching rules are
    /// contacted; an event no rule matches touches no registry.
    pub async fn run(&self, event: &Event, plan: &Plan) -> Outcome {
        let started = Instant::now();
        let loaded = self.loaded();
        let mut targets = Vec::new();
        let mut bytes = 0;
        for m in &plan.matches {
            let done = match (event.action, &m.arrival) {
                (Action::Insert, Arrival::ReferrerOf(subject)) => {
                    self.release(&loaded, event, m, subject).await
                }
                (Action::Insert, Arrival::Untagged) => self.untagged(&loaded, event, m).await,
                (Action::Insert, Arrival::Image) => {
                    self.copy(&loaded, event, m, Cargo::Image).await
                }
                (Action::Delete, _) => self.delete(&loaded, event, m).await,
            };
            bytes += done.bytes;
            for (repo, target, status) in done.targets {
                // The target as the rule names it, never the tag or the image below it: one
                // series per configured target, however many releases go there.
                let configured = m.rule.target_prefix(&repo).unwrap_or(&repo);
                self.metrics
                    .copy(&m.rule.name, &configured.to_string(), status.label());
                targets.push(TargetResult {
                    rule: m.rule.name.clone(),
                    target,
                    status,
                });
            }
        }
        let outcome = Outcome {
            message_id: event.message_id.clone(),
            source: event.reference().to_string(),
            targets,
            rejections: plan.rejections.clone(),
            bytes,
        };
        if let Some(r) = audit::record(event, plan, &outcome, started.elapsed().as_millis() as u64)
        {
            audit::emit(&r);
        }
        outcome
    }

    /// The release gates of `m`'s rule for the event's image, without copying: what `plan`
    /// and `sync --dry-run` report.
    pub async fn gate(&self, event: &Event, m: &Match) -> Option<TargetStatus> {
        let loaded = self.loaded();
        self.gates.check(&loaded.registries, event, &m.rule).await
    }
}

/// What one match did: each target (its repository, and its name in replies and logs) with
/// its status, and the blob bytes its copies read from the source (each copy once, however
/// many targets it served).
struct Done {
    targets: Vec<(Repository, String, TargetStatus)>,
    bytes: u64,
}

impl Done {
    /// Every target of `m` ends the same way, before anything was read.
    fn all(m: &Match, tag: Option<&crate::reference::Tag>, status: TargetStatus) -> Done {
        Done {
            targets: m
                .targets
                .iter()
                .map(|t| (t.clone(), converge::target_name(t, tag), status.clone()))
                .collect(),
            bytes: 0,
        }
    }

    fn extend(&mut self, other: Done) {
        self.targets.extend(other.targets);
        self.bytes += other.bytes;
    }
}
