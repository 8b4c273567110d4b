//! What the online run publishes to Kafka (SPEC §2, §4): admitted envelopes to
//! `fp.bus.traffic.v1` / `fp.bus.control.v1` keyed by `partition_key`, decisions and action
//! intents to `fp.bus.decisions.v1`, pointer events to `fp.bus.audit.v1`.
//!
//! Every record's Kafka timestamp is a logical time, never the wall clock, so the topics'
//! contents are a function of the admitted basis. Decision messages carry the full audit
//! record, so a consumer (or a test) can compare them field by field with a replay.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use tidemark_operators::decision::{AuditRecord, SnapshotRecord};
use tidemark_operators::ingest::Admitted;
use tidemark_sinks::kafka::Emit;
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

/// The wire form of a message of a tagged type without cloning its body: `{"type": kind,
/// ...body's fields}`, the same JSON as the [`DecisionMessage`] / [`PointerEvent`] variants.
#[derive(Serialize)]
struct Tagged<'a, T> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    body: &'a T,
}

fn tagged<T: Serialize>(kind: &'static str, body: &T) -> Option<Vec<u8>> {
    serde_json::to_vec(&Tagged { kind, body }).ok()
}

/// An admitted envelope → traffic or control topic, keyed by `partition_key`, timestamped
/// with its logical time.
pub fn admitted_record(a: &Admitted, emit: &mut Emit<'_>) {
    let topic = if a.event_type.is_control() {
        topics::CONTROL
    } else {
        topics::TRAFFIC
    };
    emit.send(
        topic,
        a.partition_key.as_bytes(),
        a.envelope.as_bytes(),
        Some(a.logical_time as i64),
    );
}

#[derive(Deserialize)]
struct IntentJson {
    action: String,
    idempotency_key: String,
}

/// A decision → one message per action intent (keyed by idempotency key) and one decision
/// message (keyed by event id).
pub fn decision_records(r: &AuditRecord, emit: &mut Emit<'_>) {
    let ts = Some(r.logical_time as i64);
    let intents: Vec<IntentJson> = serde_json::from_str(&r.action_intents).unwrap_or_default();
    for i in intents {
        let key = i.idempotency_key.clone();
        let msg = DecisionMessage::Intent {
            decision_id: r.decision_id.clone(),
            event_id: r.event_id.clone(),
            action: i.action,
            idempotency_key: i.idempotency_key,
            logical_time: r.logical_time,
        };
        if let Ok(payload) = serde_json::to_vec(&msg) {
            emit.send(topics::DECISIONS, key.as_bytes(), &payload, ts);
        }
    }
    if let Some(payload) = tagged("decision.v1", r) {
        emit.send(topics::DECISIONS, r.event_id.as_bytes(), &payload, ts);
    }
}

/// A written file → pointer event keyed by its path.
pub fn file_pointer(f: &FileEntry, emit: &mut Emit<'_>) {
    if let Some(payload) = tagged("file.written.v1", f) {
        // Always a logical time (never the broker's clock): restarts read it back.
        let ts = Some(f.max_logical_time.unwrap_or(0) as i64);
        emit.send(topics::AUDIT, f.path.as_bytes(), &payload, ts);
    }
}

/// A snapshot → pointer event keyed by its boundary.
pub fn snapshot_pointer(s: &SnapshotRecord, emit: &mut Emit<'_>) {
    if let Some(payload) = tagged("ofp.snapshot.v1", s) {
        let key = format!("snapshot/{}", s.time);
        emit.send(topics::AUDIT, key.as_bytes(), &payload, Some(s.time as i64));
    }
}

/// Percentiles of a latency histogram: `(count, p50, p95, p99, max)`.
pub type Percentiles = (u64, u64, u64, u64, u64);

fn histogram() -> Histogram<u64> {
    // 1 .. 1 day in ms (or 1 µs .. 1 day in µs), 3 significant digits; creation cannot fail
    // for these bounds.
    Histogram::new_with_bounds(1, 86_400_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("hdrhistogram with 3 sigfigs"))
}

fn percentiles(h: &Histogram<u64>) -> Option<Percentiles> {
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

/// Polled batches per partition: (first offset, last offset, when polled), in offset order.
type PollLog = BTreeMap<u32, VecDeque<(u64, u64, Instant)>>;

/// Batches remembered per partition for the engine latency (older ones are forgotten).
const POLL_LOG_BATCHES: usize = 1 << 16;

/// Decision latency, two ways, shared by a process's workers:
/// - end to end: wall clock when the decision is handed to the producer minus the ingress
///   record timestamp (set by the producing client), in ms: includes the producer's linger,
///   the broker, the consumer's fetch and the engine;
/// - engine: monotonic time from the poll that returned the decision's ingress record to the
///   decision handed to the producer, in µs: the engine's own latency (waiting for the
///   frontier included), without the broker round trip.
#[derive(Clone)]
pub struct Latency {
    e2e: Arc<Mutex<Histogram<u64>>>,
    engine: Arc<Mutex<Histogram<u64>>>,
    polled: Arc<Mutex<PollLog>>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            e2e: Arc::new(Mutex::new(histogram())),
            engine: Arc::new(Mutex::new(histogram())),
            polled: Arc::default(),
        }
    }
}

impl Latency {
    /// The source hook noting when each batch was polled.
    pub fn poll_hook(&self) -> tidemark_sources::PollHook {
        let polled = self.polled.clone();
        Arc::new(move |partition, first, last| {
            if let Ok(mut log) = polled.lock() {
                let q = log.entry(partition).or_default();
                if q.len() >= POLL_LOG_BATCHES {
                    q.pop_front();
                }
                q.push_back((first, last, Instant::now()));
            }
        })
    }

    /// Records one decision of the ingress record at `(partition, offset)` with timestamp
    /// `record_ts`.
    pub fn record(&self, record_ts: u64, partition: u32, offset: u64) {
        let now = crate::wallclock::now_ms();
        if let Ok(mut h) = self.e2e.lock() {
            h.saturating_record(now.saturating_sub(record_ts).max(1));
        }
        let polled = self.polled.lock().ok().and_then(|log| {
            let q = log.get(&partition)?;
            let i = q.partition_point(|b| b.0 <= offset).checked_sub(1)?;
            let (_, last, at) = q.get(i)?;
            (offset <= *last).then_some(*at)
        });
        if let (Some(at), Ok(mut h)) = (polled, self.engine.lock()) {
            h.saturating_record((at.elapsed().as_micros() as u64).max(1));
        }
    }

    /// End-to-end percentiles in ms.
    pub fn summary(&self) -> Option<Percentiles> {
        percentiles(&*self.e2e.lock().ok()?)
    }

    /// Engine percentiles in µs.
    pub fn engine_summary(&self) -> Option<Percentiles> {
        percentiles(&*self.engine.lock().ok()?)
    }
}

/// The high watermark of every partition of the four output topics: a commit's marks.
pub fn output_marks(
    conn: &tidemark_sources::KafkaConn,
) -> Result<Vec<tidemark_operators::commit::OutputMark>, tidemark_sinks::SinkError> {
    output_marks_with(
        &tidemark_sinks::kafka::Watermarks::new(&conn.client_config())?,
        conn,
    )
}

/// [`output_marks`] through a kept client.
pub fn output_marks_with(
    client: &tidemark_sinks::kafka::Watermarks,
    conn: &tidemark_sources::KafkaConn,
) -> Result<Vec<tidemark_operators::commit::OutputMark>, tidemark_sinks::SinkError> {
    let marks = client.read(
        &[
            topics::TRAFFIC,
            topics::CONTROL,
            topics::DECISIONS,
            topics::AUDIT,
        ],
        conn.request_timeout,
    )?;
    Ok(marks
        .into_iter()
        .map(
            |(topic, partition, offset)| tidemark_operators::commit::OutputMark {
                topic,
                partition,
                offset,
            },
        )
        .collect())
}
