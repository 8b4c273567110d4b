//! Training-dataset rows (SPEC §10): a decision's detail joined with its label as known at a
//! cut-off, and the time split. The encoding lives in `tidemark-sinks`, the label-as-of rule in
//! `tidemark-dataflows`; these are the shared types.

use serde::{Deserialize, Serialize};

use crate::decision::DecisionDetail;
use crate::time::LogicalTime;

/// A label value of `label.assertion.v1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelValue {
    /// `fraud`.
    Fraud,
    /// `legit`.
    Legit,
}

impl LabelValue {
    /// The wire and column spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LabelValue::Fraud => "fraud",
            LabelValue::Legit => "legit",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<LabelValue> {
        match s {
            "fraud" => Some(LabelValue::Fraud),
            "legit" => Some(LabelValue::Legit),
            _ => None,
        }
    }
}

/// The label of an event as known at a cut-off: the assertion that won the label-as-of rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KnownLabel {
    /// fraud | legit.
    pub label: LabelValue,
    /// `effective_ts` of the assertion (epoch ms).
    pub effective_ms: u64,
    /// `observed_ts` of the assertion (epoch ms).
    pub observed_ms: u64,
    /// The assertion's own event id (the last tie-breaker).
    pub assertion_id: String,
}

/// Which side of a time split a row falls on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// `logical_time < split_at`.
    Train,
    /// `logical_time >= split_at`.
    Test,
}

impl Split {
    /// The split of a row at `t` for a split point.
    pub fn of(t: LogicalTime, split_at: LogicalTime) -> Split {
        if t < split_at {
            Split::Train
        } else {
            Split::Test
        }
    }

    /// The column spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// One dataset row: a decision, its label as known at the cut-off and its split.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetRow {
    /// What the decision saw and said.
    pub detail: DecisionDetail,
    /// The label as known at `labels_as_of`, if any assertion was observed by then.
    pub label: Option<KnownLabel>,
    /// The split, when the dataset has one.
    pub split: Option<Split>,
}

impl DatasetRow {
    /// The row's sort key: `(logical_time, event_id)` (unique after IG dedup).
    pub fn key(&self) -> (LogicalTime, &str) {
        (self.detail.logical_time, &self.detail.event_id)
    }
}

impl PartialEq for DatasetRow {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for DatasetRow {}
impl PartialOrd for DatasetRow {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for DatasetRow {
    /// Rows sort by `(logical_time, event_id)`.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}
