//! The audit trail: exactly one record per decision about an image, as a JSON log entry with a
//! stable shape (`message` = `audit`, the record under `audit`), so that "what left the
//! organization, when, and why" is one query over the exported logs.
//!
//! A decision is what the relay made of one event (a delivery, or a tag found by reconcile)
//! whose repository some rule watches. Events under no rule's source are the rest of the
//! project's pushes: they are not decisions and are not audited.
//!
//! Nothing secret goes in: references, digests, rule names, outcomes and reasons only.

use std::time::SystemTime;

use serde::Serialize;

use super::outcome::{Outcome, TargetResult, TargetStatus};
use super::plan::Plan;
use crate::event::Event;

/// Record format version: bump when a field changes meaning.
pub const AUDIT_VERSION: u32 = 1;

/// One audit record.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub version: u32,
    pub time: String,
    pub message_id: Option<String>,
    pub delivery: &'static str,
    pub action: String,
    /// The source reference as the event named it (`host/path:tag@digest`).
    pub source: String,
    pub digest: Option<String>,
    /// `copied`, `already_present`, `held`, `pending`, `failed`, `ignored`, `deleted`, ...:
    /// the most telling target outcome (a failure over a hold over a copy).
    pub decision: String,
    /// Rules that matched.
    pub rules: Vec<String>,
    pub targets: Vec<TargetRecord>,
    /// Rules that watch the source but turned the event away, with the clause.
    pub ignored: Vec<Ignored>,
    /// Blob bytes read from the source for this decision.
    pub bytes: u64,
    pub duration_ms: u64,
}

/// One target's part of a decision.
#[derive(Debug, Clone, Serialize)]
pub struct TargetRecord {
    pub rule: String,
    pub target: String,
    pub outcome: &'static str,
    /// The gate that held the image back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub bytes: u64,
    pub duration_ms: u64,
}

/// A rule that turned the event away.
#[derive(Debug, Clone, Serialize)]
pub struct Ignored {
    pub rule: String,
    pub clause: String,
    pub reason: String,
}

/// Build the record of one decision. `None` when no rule watches the event's source.
pub fn record(event: &Event, plan: &Plan, outcome: &Outcome, duration_ms: u64) -> Option<Record> {
    if !plan.watched() {
        return None;
    }
    let ignored: Vec<Ignored> = plan
        .rejections
        .iter()
        .filter(|r| !r.unwatched())
        .map(|r| Ignored {
            rule: r.rule.clone(),
            clause: r.clause.to_string(),
            reason: r.reason.clone(),
        })
        .collect();
    let decision = outcome
        .targets
        .iter()
        .map(|t| &t.status)
        .max_by_key(|s| s.weight())
        .map(|s| s.outcome().to_owned())
        .unwrap_or_else(|| {
            if plan.is_empty() {
                "ignored".into()
            } else {
                "nothing_to_do".into()
            }
        });
    Some(Record {
        version: AUDIT_VERSION,
        time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        message_id: event.message_id.clone(),
        delivery: event.delivery.as_str(),
        action: event.action.to_string(),
        source: event.reference().to_string(),
        digest: event.digest.as_ref().map(|d| d.to_string()),
        decision,
        rules: plan.matches.iter().map(|m| m.rule.name.clone()).collect(),
        targets: outcome.targets.iter().map(target_record).collect(),
        ignored,
        bytes: outcome.bytes,
        duration_ms,
    })
}

fn target_record(t: &TargetResult) -> TargetRecord {
    let (bytes, duration_ms) = match &t.status {
        TargetStatus::Copied { bytes, duration_ms } => (*bytes, *duration_ms),
        _ => (0, 0),
    };
    TargetRecord {
        rule: t.rule.clone(),
        target: t.target.clone(),
        outcome: t.status.outcome(),
        gate: t.status.gate().map(str::to_owned),
        reason: t.status.reason().map(str::to_owned),
        bytes,
        duration_ms,
    }
}

/// Write the record: one INFO line, `message` = `audit`, the record as an object under `audit`.
pub fn emit(record: &Record) {
    if let Ok(json) = serde_json::to_string(record) {
        tracing::info!(audit = %json, "audit");
    }
}
