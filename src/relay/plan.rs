//! What the rules make of an event, before anything is contacted: pure, and what
//! `image-relay plan` prints.

use serde::Serialize;

use crate::event::Event;
use crate::reference::{Digest, Repository};
use crate::rules::{Clause, Rule, RuleSet, Verdict};

/// A rule that matched, and where the event's image goes.
#[derive(Debug, Clone)]
pub struct Match {
    pub rule: Rule,
    pub targets: Vec<Repository>,
    pub arrival: Arrival,
}

/// What the event brought, as far as the rules can tell without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// An image (or its tag) to copy.
    Image,
    /// A referrer (a signature, say) of this digest, by its tag: release the image's tags,
    /// then bring the referrer along.
    ReferrerOf(Digest),
    /// An untagged manifest, under a rule that cares about referrers: read it, and when it
    /// has a `subject`, handle it as a referrer of that.
    Untagged,
}

/// A rule that did not match, and the clause that turned the event away.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    pub rule: String,
    #[serde(serialize_with = "as_text")]
    pub clause: Clause,
    pub reason: String,
}

fn as_text<S: serde::Serializer>(clause: &Clause, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(clause)
}

impl Rejection {
    /// Turned away only because the rule does not watch the event's repository: the topic
    /// carries every push of the project, and most are none of the relay's business.
    pub fn unwatched(&self) -> bool {
        self.clause == Clause::Source
    }
}

/// What the rules make of an event.
#[derive(Debug, Clone)]
pub struct Plan {
    pub matches: Vec<Match>,
    pub rejections: Vec<Rejection>,
}

impl Plan {
    /// No rule matched: nothing will be contacted.
    pub fn is_empty(&self) -> bool {
        self.matches.is_empty()
    }

    /// Some rule watches the event's repository, matched or not: the event is a decision the
    /// audit trail records.
    pub fn watched(&self) -> bool {
        !self.matches.is_empty() || self.rejections.iter().any(|r| !r.unwatched())
    }

    /// Why nothing matched, in a sentence.
    pub fn unmatched_reason(&self, event: &Event) -> String {
        if self.rejections.iter().all(Rejection::unwatched) {
            format!("no rule watches {}", event.repo)
        } else {
            "no rule matches".to_owned()
        }
    }
}

/// Match `event` against `rules`.
pub fn plan(rules: &RuleSet, event: &Event) -> Plan {
    let mut matches = Vec::new();
    let mut rejections = Vec::new();
    for (rule, verdict) in rules.evaluate(event) {
        match verdict {
            Verdict::Match { targets } => matches.push(Match {
                rule: rule.clone(),
                targets,
                arrival: Arrival::Image,
            }),
            Verdict::ReferrerArrived { subject, targets } => matches.push(Match {
                rule: rule.clone(),
                targets,
                arrival: Arrival::ReferrerOf(subject),
            }),
            Verdict::UntaggedArrived { targets } => matches.push(Match {
                rule: rule.clone(),
                targets,
                arrival: Arrival::Untagged,
            }),
            Verdict::Rejected { clause, reason } => rejections.push(Rejection {
                rule: rule.name.clone(),
                clause,
                reason,
            }),
        }
    }
    Plan {
        matches,
        rejections,
    }
}
