//! Records the decision stages produce and the sinks persist: audit records, decision details
//! and snapshots; the [`Decision`] and [`Posture`] enums they carry; decision tags.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::spelled::spelled_enum;
pub use crate::spelled::UnknownName;
use crate::time::LogicalTime;

/// One audit record per decision (SPEC §9). List-valued fields are canonical JSON strings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Logical time of the triggering event (decision read state strictly before it).
    pub logical_time: LogicalTime,
    /// Triggering event id.
    pub event_id: String,
    /// Deterministic decision id.
    pub decision_id: String,
    /// Envelope trace id (may be empty).
    pub trace_id: String,
    /// Envelope ts_utc.
    pub ts_utc: String,
    /// ALLOW | REVIEW | BLOCK.
    pub decision: Decision,
    /// Score in [0, 1].
    pub score: f64,
    /// JSON array of reason codes (top 3 positive contributions).
    pub reasons: String,
    /// JSON array of `[name, value|null]` in bundle order: the exact vector used.
    pub features: String,
    /// sha256 hex of `features`.
    pub feature_snapshot_hash: String,
    /// Bundle id (shared by every record of a run, as are the next three).
    pub bundle_id: Arc<str>,
    /// Bundle version.
    pub bundle_version: Arc<str>,
    /// sha256 hex of the bundle file bytes.
    pub bundle_digest: Arc<str>,
    /// Policy revision.
    pub policy_rev: Arc<str>,
    /// Graph version in force (latest graph snapshot boundary at or before the decision).
    pub graph_version: String,
    /// NORMAL | DEGRADED | SAFE.
    pub posture: Posture,
    /// JSON array of masked feature names.
    pub degrade_mask: String,
    /// Ingress partition.
    pub source_partition: u32,
    /// Ingress offset.
    pub source_offset: u64,
    /// Ingress record timestamp (epoch ms): provenance, and the start of decision latency.
    pub source_record_ts: u64,
    /// Envelope run_id (may be empty).
    pub run_id: String,
    /// Envelope scenario_id (may be empty).
    pub scenario_id: String,
    /// JSON array of action intents `{"action":..,"idempotency_key":..}`.
    pub action_intents: String,
    /// Bucket (fixed hash of event_id), deciding the audit file.
    pub bucket: u32,
}

impl Eq for AuditRecord {}
impl PartialOrd for AuditRecord {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for AuditRecord {
    /// Audit rows sort by `(logical_time, event_id)` (unique after IG dedup), then decision id.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.logical_time, &self.event_id, &self.decision_id).cmp(&(
            other.logical_time,
            &other.event_id,
            &other.decision_id,
        ))
    }
}

/// Everything one decision saw and said, typed: what a training dataset row is built from
/// (`DecisionConfig::details` turns it on; the online run does not build it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionDetail {
    /// Logical time of the triggering event.
    pub logical_time: LogicalTime,
    /// Triggering event id.
    pub event_id: String,
    /// Deterministic decision id.
    pub decision_id: String,
    /// Envelope `ts_utc` as epoch milliseconds.
    pub ts_ms: u64,
    /// The values of the entity key fields the features use (`DecisionConfig::key_fields`).
    pub keys: Vec<Option<String>>,
    /// Every feature of the revision, in definition order (not only the bundle's).
    pub features: Vec<Option<i64>>,
    /// `cluster_size` as DF used it (null when the graph is off or masked).
    pub cluster_size: Option<i64>,
    /// `cluster_cards` as DF used it.
    pub cluster_cards: Option<i64>,
    /// Score in [0, 1].
    pub score: f64,
    /// ALLOW | REVIEW | BLOCK.
    pub decision: Decision,
    /// NORMAL | DEGRADED | SAFE.
    pub posture: Posture,
    /// Masked feature names.
    pub degrade_mask: Vec<String>,
}

/// A feature/graph state snapshot at a boundary `time` (SPEC §7).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The boundary (a multiple of the snapshot interval).
    pub time: LogicalTime,
    /// Hash of the whole feature state as of `time` (32 hex digits).
    pub feature_hash: String,
    /// Number of (feature, key) pairs with a non-empty window.
    pub keys: u64,
    /// Feature definition revision.
    pub feature_rev: String,
    /// `<time>:<hash>` of the (entity, cluster_id) set as of `time`.
    pub graph_version: String,
    /// Entities in live, non-hub edges as of `time`.
    pub graph_entities: u64,
}

/// Names one decision while its parts are gathered: the worker holding its trigger and a
/// sequence number there. Feature and graph answers are routed back to `origin`, so the
/// trigger (with its strings) never leaves the worker that parsed the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DecisionTag {
    /// The worker holding the trigger.
    pub origin: u32,
    /// Sequence number on that worker.
    pub seq: u64,
}

impl DecisionTag {
    /// The exchange route back to the origin worker (timely routes by `route % peers`).
    pub fn route(&self) -> u64 {
        u64::from(self.origin)
    }
}

spelled_enum!(
    /// What DF decided for one event (SPEC §8).
    Decision, "decision", {
        /// Let the transaction through.
        Allow => "ALLOW",
        /// Queue it for manual review.
        Review => "REVIEW",
        /// Decline it.
        Block => "BLOCK",
    }
);

spelled_enum!(
    /// The degrade ladder's posture in force at a decision (SPEC §8).
    Posture, "posture", {
        /// Every feature in use.
        Normal => "NORMAL",
        /// Graph features masked.
        Degraded => "DEGRADED",
        /// Score ignored: the amount alone decides (REVIEW above the fallback threshold).
        Safe => "SAFE",
    }
);
