//! The outcome vocabulary: what happened at each target, and how the whole delivery is to be
//! answered. The only table of outcome labels: the reply, the logs, the audit trail, the sync
//! report and the metrics all read them from here.

use serde::Serialize;

use crate::copy::CopyError;
use crate::registry::error::RegistryError;

/// What happened at one target.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum TargetStatus {
    /// Written: `bytes` read from the source for the copy that served this target (shared by
    /// the targets of one copy: the source is read once), over `duration_ms`.
    Copied {
        bytes: u64,
        duration_ms: u64,
    },
    AlreadyPresent,
    /// Content copied; the tag was left alone because the source tag has moved on.
    TagSuperseded,
    Deleted,
    /// Nothing to delete: the target lacks the tag, or the source has it again.
    NothingToDelete {
        reason: String,
    },
    /// Not copied: a release gate held the image back. Acknowledged: a retry cannot help, a
    /// later event (the signature arriving) can.
    Held {
        gate: String,
        reason: String,
    },
    /// Not copied yet: a gate cannot decide (a vulnerability scan still running). Pub/Sub is
    /// asked to redeliver later.
    Pending {
        gate: String,
        reason: String,
    },
    /// The source tag kept moving while the target was written: Pub/Sub is asked to redeliver,
    /// and the redelivery copies what the source names then.
    Unsettled {
        reason: String,
    },
    Failed {
        error: String,
        retryable: bool,
    },
}

impl TargetStatus {
    /// The outcome as replies, logs, audit records and metrics name it.
    pub fn label(&self) -> &'static str {
        match self {
            TargetStatus::Copied { .. } => "copied",
            TargetStatus::AlreadyPresent => "already_present",
            TargetStatus::TagSuperseded => "tag_superseded",
            TargetStatus::Deleted => "deleted",
            TargetStatus::NothingToDelete { .. } => "nothing_to_delete",
            TargetStatus::Held { .. } => "held",
            TargetStatus::Pending { .. } => "pending",
            TargetStatus::Unsettled { .. } => "unsettled",
            TargetStatus::Failed {
                retryable: true, ..
            } => "failed_retryable",
            TargetStatus::Failed {
                retryable: false, ..
            } => "failed",
        }
    }

    /// The outcome without its retryability, as audit records name it: whether a failure is
    /// retried shows in the delivery's answer, the record says what happened.
    pub fn outcome(&self) -> &'static str {
        match self {
            TargetStatus::Failed { .. } => "failed",
            s => s.label(),
        }
    }

    /// The word a `sync` report gives the outcome, with its reason; `None` when the target
    /// was already in place (counted, not listed). A sync speaks of what it did to the
    /// target: a delete is a removal, a tag left to a newer copy is still a copy, and a
    /// delivery that could not settle failed this run.
    pub fn sync_item(&self) -> Option<(&'static str, Option<String>)> {
        let gated = |gate: &str, reason: &str| Some(format!("{gate} gate: {reason}"));
        match self {
            TargetStatus::AlreadyPresent | TargetStatus::NothingToDelete { .. } => None,
            TargetStatus::Copied { .. } => Some(("copied", None)),
            TargetStatus::TagSuperseded => Some((
                "copied",
                Some(
                    "content copied; the source tag moved meanwhile, its own copy sets the tag"
                        .into(),
                ),
            )),
            TargetStatus::Deleted => Some(("removed", None)),
            TargetStatus::Failed { error: why, .. } | TargetStatus::Unsettled { reason: why } => {
                Some(("failed", Some(why.clone())))
            }
            TargetStatus::Held { gate, reason } => Some(("held", gated(gate, reason))),
            TargetStatus::Pending { gate, reason } => Some(("pending", gated(gate, reason))),
        }
    }

    /// How much the outcome says about a decision, for the one word an audit record sums a
    /// delivery up in: a failure over a hold over a wait over a write over "nothing to do".
    pub fn weight(&self) -> u8 {
        match self {
            TargetStatus::Failed { .. } => 5,
            TargetStatus::Held { .. } => 4,
            TargetStatus::Pending { .. } | TargetStatus::Unsettled { .. } => 3,
            TargetStatus::Copied { .. } | TargetStatus::Deleted => 2,
            TargetStatus::AlreadyPresent
            | TargetStatus::TagSuperseded
            | TargetStatus::NothingToDelete { .. } => 1,
        }
    }

    /// The gate that decided, for a held or pending image.
    pub fn gate(&self) -> Option<&str> {
        match self {
            TargetStatus::Held { gate, .. } | TargetStatus::Pending { gate, .. } => Some(gate),
            _ => None,
        }
    }

    /// Why, in words, for every outcome that is not self-explanatory.
    pub fn reason(&self) -> Option<&str> {
        match self {
            TargetStatus::TagSuperseded => {
                Some("content copied; the source tag had moved on, so the tag was left alone")
            }
            TargetStatus::NothingToDelete { reason }
            | TargetStatus::Held { reason, .. }
            | TargetStatus::Pending { reason, .. }
            | TargetStatus::Unsettled { reason } => Some(reason),
            TargetStatus::Failed { error, .. } => Some(error),
            TargetStatus::Copied { .. } | TargetStatus::AlreadyPresent | TargetStatus::Deleted => {
                None
            }
        }
    }

    /// The target holds what the source names (or lacks what the source lacks) and this
    /// delivery changed nothing there.
    pub fn in_place(&self) -> bool {
        matches!(
            self,
            TargetStatus::AlreadyPresent | TargetStatus::NothingToDelete { .. }
        )
    }

    /// This delivery wrote to the target.
    pub fn acted(&self) -> bool {
        matches!(
            self,
            TargetStatus::Copied { .. } | TargetStatus::TagSuperseded | TargetStatus::Deleted
        )
    }

    /// A failure that a later delivery of the same event can fix, or not.
    pub fn failed(error: impl Into<String>, retryable: bool) -> TargetStatus {
        TargetStatus::Failed {
            error: error.into(),
            retryable,
        }
    }

    /// A target that failed on a registry error.
    pub fn registry_failure(e: &RegistryError) -> TargetStatus {
        TargetStatus::failed(e.to_string(), redelivery_can_help(e))
    }

    /// A target that failed on a copy error.
    pub fn copy_failure(e: &CopyError) -> TargetStatus {
        TargetStatus::failed(e.to_string(), retry_can_help(e))
    }
}

/// One target's result, for the reply and the logs.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    pub rule: String,
    pub target: String,
    #[serde(flatten)]
    pub status: TargetStatus,
}

/// How the delivery should be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// No rule matched: acknowledge, nothing was contacted.
    NothingMatched,
    /// Everything is in place (or deliberately left alone): acknowledge.
    Done,
    /// Some target failed in a way a later delivery can fix: ask Pub/Sub to retry.
    RetryLater,
    /// Some target failed in a way no retry can fix: acknowledge, report, alert.
    FailedPermanently,
}

/// The result of handling one event.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub message_id: Option<String>,
    pub source: String,
    pub targets: Vec<TargetResult>,
    pub rejections: Vec<super::Rejection>,
    /// Blob bytes read from the source for this event, every copy counted once (the targets
    /// of one copy share its reads). For the audit record; replies carry it per target.
    #[serde(skip)]
    pub bytes: u64,
}

impl Outcome {
    pub fn disposition(&self) -> Disposition {
        if self.targets.is_empty() {
            return Disposition::NothingMatched;
        }
        let failed = |retryable: bool| {
            self.targets.iter().any(
                |t| matches!(t.status, TargetStatus::Failed { retryable: r, .. } if r == retryable),
            )
        };
        let pending = self.targets.iter().any(|t| {
            matches!(
                t.status,
                TargetStatus::Pending { .. } | TargetStatus::Unsettled { .. }
            )
        });
        if failed(true) || pending {
            Disposition::RetryLater
        } else if failed(false) {
            Disposition::FailedPermanently
        } else {
            Disposition::Done
        }
    }
}

/// Whether a later delivery of the same event can succeed where this one failed. Network
/// trouble, 5xx, 429 and 401/403 (an IAM grant fixes those) can; a missing source, content
/// that fails verification, or a target refusing the manifest (an immutable tag holding
/// another digest, say) cannot.
pub fn retry_can_help(e: &CopyError) -> bool {
    match e {
        CopyError::Registry(r) => redelivery_can_help(r),
        CopyError::Config(_) => false,
        // A bug repeats on redelivery; failing for good is what gets it noticed.
        CopyError::Internal(_) => false,
        CopyError::SourceNotFound(_)
        | CopyError::DigestMismatch { .. }
        | CopyError::Source { .. } => false,
    }
}

/// Whether a later delivery can succeed where this registry request failed: no answer, 408,
/// 429 and 5xx on their own; 401/403 once someone grants access, and a refused certificate
/// once it is renewed or its issuer trusted.
pub fn redelivery_can_help(e: &RegistryError) -> bool {
    e.is_retryable() || e.is_denied() || e.is_untrusted()
}
