//! What the online run publishes to Kafka (SPEC §2, §4): admitted envelopes to
//! `fp.bus.traffic.v1` / `fp.bus.control.v1` keyed by `partition_key`, decisions and action
//! intents to `fp.bus.decisions.v1`, pointer events to `fp.bus.audit.v1`.
//!
//! Every record's Kafka timestamp is a logical time, never the wall clock, so the topics'
//! contents are a function of the admitted basis. Decision messages carry the full audit
//! record, so a consumer (or a test) can compare them field by field with a replay.

use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use tidemark_dataflows::envelope::is_control;
use tidemark_operators::decision::{AuditRecord, SnapshotRecord};
use tidemark_operators::ingest::Admitted;
use tidemark_sinks::kafka::KafkaRecord;
use tidemark_sinks::FileEntry;

use crate::broker::topics;

/// A message on `fp.bus.decisions.v1`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DecisionMessage {
    /// One per decision: the audit record exactly as DLA wrote it.
    #[serde(rename = "decision.v1")]
    Decision(Box<AuditRecord>),
    /// One per action intent of a decision.
    #[serde(rename = "action.intent.v1")]
    Intent {
        /// The decision that asks for it.
        decision_id: String,
        /// The triggering event.
        event_id: String,
        /// The action (`review_case`, `block_card`, …).
        action: String,
        /// Idempotency key: the executor applies an intent at most once.
        idempotency_key: String,
        /// Logical time of the decision.
        logical_time: u64,
    },
}

/// A pointer event on `fp.bus.audit.v1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum PointerEvent {
    /// A primary-truth file was written (archive, receipts, quarantine, audit).
    #[serde(rename = "file.written.v1")]
    File(FileEntry),
    /// A feature/graph snapshot hash at a boundary.
    #[serde(rename = "ofp.snapshot.v1")]
    Snapshot(SnapshotRecord),
}

/// An admitted envelope → traffic or control topic, keyed by `partition_key`, timestamped
/// with its logical time.
pub fn admitted_record(a: &Admitted, out: &mut Vec<KafkaRecord>) {
    out.push(KafkaRecord {
        topic: if is_control(&a.event_type) {
            topics::CONTROL
        } else {
            topics::TRAFFIC
        },
        key: a.partition_key.as_bytes().to_vec(),
        payload: a.envelope.as_bytes().to_vec(),
        timestamp: Some(a.logical_time as i64),
    });
}

#[derive(Deserialize)]
struct IntentJson {
    action: String,
    idempotency_key: String,
}

/// A decision → one decision message and one message per action intent, keyed by event id
/// (intents by idempotency key).
pub fn decision_records(r: &AuditRecord, out: &mut Vec<KafkaRecord>) {
    let ts = Some(r.logical_time as i64);
    let intents: Vec<IntentJson> = serde_json::from_str(&r.action_intents).unwrap_or_default();
    for i in intents {
        let msg = DecisionMessage::Intent {
            decision_id: r.decision_id.clone(),
            event_id: r.event_id.clone(),
            action: i.action,
            idempotency_key: i.idempotency_key.clone(),
            logical_time: r.logical_time,
        };
        if let Ok(payload) = serde_json::to_vec(&msg) {
            out.push(KafkaRecord {
                topic: topics::DECISIONS,
                key: i.idempotency_key.into_bytes(),
                payload,
                timestamp: ts,
            });
        }
    }
    if let Ok(payload) = serde_json::to_vec(&DecisionMessage::Decision(Box::new(r.clone()))) {
        out.push(KafkaRecord {
            topic: topics::DECISIONS,
            key: r.event_id.as_bytes().to_vec(),
            payload,
            timestamp: ts,
        });
    }
}

/// A written file → pointer event keyed by its path.
pub fn file_pointer(f: &FileEntry, out: &mut Vec<KafkaRecord>) {
    if let Ok(payload) = serde_json::to_vec(&PointerEvent::File(f.clone())) {
        out.push(KafkaRecord {
            topic: topics::AUDIT,
            key: f.path.as_bytes().to_vec(),
            payload,
            timestamp: f.max_logical_time.map(|t| t as i64),
        });
    }
}

/// A snapshot → pointer event keyed by its boundary.
pub fn snapshot_pointer(s: &SnapshotRecord, out: &mut Vec<KafkaRecord>) {
    if let Ok(payload) = serde_json::to_vec(&PointerEvent::Snapshot(s.clone())) {
        out.push(KafkaRecord {
            topic: topics::AUDIT,
            key: format!("snapshot/{}", s.time).into_bytes(),
            payload,
            timestamp: Some(s.time as i64),
        });
    }
}

/// Decision latency: wall clock when the decision is handed to the producer minus the ingress
/// record timestamp, in milliseconds. Shared by a process's workers.
#[derive(Clone)]
pub struct Latency(Arc<Mutex<Histogram<u64>>>);

impl Default for Latency {
    fn default() -> Self {
        // 1 ms .. 1 day, 3 significant digits; creation cannot fail for these bounds.
        let h = Histogram::new_with_bounds(1, 86_400_000, 3)
            .unwrap_or_else(|_| Histogram::new(3).expect("hdrhistogram with 3 sigfigs"));
        Latency(Arc::new(Mutex::new(h)))
    }
}

impl Latency {
    /// Records one decision of an event with ingress record timestamp `record_ts`.
    pub fn record(&self, record_ts: u64) {
        let now = crate::world::sink::wall_ms();
        if let Ok(mut h) = self.0.lock() {
            h.saturating_record(now.saturating_sub(record_ts).max(1));
        }
    }
    /// `(count, p50, p95, p99, max)` in ms.
    pub fn summary(&self) -> Option<(u64, u64, u64, u64, u64)> {
        let h = self.0.lock().ok()?;
        (!h.is_empty()).then(|| {
            (
                h.len(),
                h.value_at_quantile(0.50),
                h.value_at_quantile(0.95),
                h.value_at_quantile(0.99),
                h.max(),
            )
        })
    }
}
