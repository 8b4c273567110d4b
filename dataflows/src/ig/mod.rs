//! The Ingestion Gate (SPEC §5).
//!
//! IG runs in two steps:
//! 1. [`IgStamper`], called by the source operator for each record of a partition in offset
//!    order: stateless validation ([`crate::envelope::validate`]), `CLOCK_SKEW`, then lateness
//!    against the partition watermark (quarantine or clamp) and logical-time assignment.
//! 2. [`gate`]: windowed dedup by `event_id` over the candidates of all partitions, producing
//!    the admitted stream and exactly one [`Receipt`] per ingress record.

mod policy;
pub mod signing;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use timely::dataflow::operators::vec::{Filter, Map};
use timely::dataflow::operators::Concat;
use timely::dataflow::StreamVec;

use tidemark_operators::dedup::{DedupDecision, WindowedDedup};
pub use tidemark_operators::ingest::{Admitted, Candidate, Receipt, ReceiptStatus};
use tidemark_operators::{LogicalTime, PartitionClock, RawRecord, RecordStamper, Stamped};

use crate::envelope::strict::{Json, Object};
use crate::envelope::{validate, Rejection};
use tidemark_operators::ReasonCode;

pub use policy::{IgPolicy, LatePolicy};
pub use signing::{Keyring, SigningPolicy};

/// What the stamper emits per record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IgItem {
    /// Passed every stateless and time check; awaits dedup.
    Candidate(Candidate),
    /// Rejected; the receipt carries the raw bytes.
    Quarantined(Receipt),
}

/// Per-record IG logic run inside the source operator (offset order per partition).
#[derive(Clone, Debug)]
pub struct IgStamper {
    policy: Arc<IgPolicy>,
    policy_rev: Arc<str>,
    keys: Option<Arc<Keyring>>,
}

impl IgStamper {
    /// A stamper for `policy`, citing `policy_rev` in every receipt and envelope.
    pub fn new(policy: Arc<IgPolicy>, policy_rev: impl Into<Arc<str>>) -> Self {
        IgStamper {
            policy,
            policy_rev: policy_rev.into(),
            keys: None,
        }
    }

    /// Verifies producer signatures with `keys` where the policy requires them.
    pub fn with_keys(mut self, keys: Arc<Keyring>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Where signing is required: `Ok(Some(producer))` of the verifying key, or the
    /// `BAD_SIGNATURE` rejection. Records over the size limit are left to `validate`.
    fn signer(&self, rec: &RawRecord) -> Result<Option<String>, Rejection> {
        let signing = &self.policy.signing;
        if !signing.required || rec.bytes.len() > self.policy.max_record_bytes {
            return Ok(None);
        }
        let skew = tidemark_operators::time::millis(signing.max_skew);
        let verified = match &self.keys {
            Some(keys) => keys.verify(rec, skew).map(str::to_owned),
            None => Err("signing is required but this run holds no keys".to_owned()),
        };
        verified.map(Some).map_err(|detail| Rejection {
            reason: ReasonCode::BadSignature,
            detail,
        })
    }

    fn quarantine(&self, rec: RawRecord, rej: Rejection, id: Option<(String, String)>) -> IgItem {
        let (event_id, event_type) = id.unzip();
        IgItem::Quarantined(Receipt {
            coord: rec.coord,
            record_ts: rec.record_ts,
            status: ReceiptStatus::Quarantined,
            reason: Some(rej.reason),
            detail: rej.detail,
            event_id,
            event_type,
            logical_time: None,
            late_clamped: false,
            policy_rev: self.policy_rev.to_string(),
            raw: Some(rec.bytes),
        })
    }
}

impl RecordStamper for IgStamper {
    type Output = IgItem;

    fn stamp(
        &mut self,
        mut rec: RawRecord,
        clock: &mut PartitionClock,
        floor: LogicalTime,
    ) -> Stamped<IgItem> {
        let signer = match self.signer(&rec) {
            Ok(s) => s,
            Err(rej) => return Stamped::Now(self.quarantine(rec, rej, None)),
        };
        // The checks borrow the bytes while the record itself moves into a receipt on
        // rejection: take them out, and put them back for the receipt.
        let bytes = std::mem::take(&mut rec.bytes);
        match self.admit(&bytes, signer, &rec, clock, floor) {
            Ok(candidate) => Stamped::At(candidate.logical_time, IgItem::Candidate(candidate)),
            Err((rej, id)) => {
                rec.bytes = bytes;
                Stamped::Now(self.quarantine(rec, rej, id))
            }
        }
    }
}

/// A rejection, with the (event_id, event_type) of the envelope when it was read that far.
type Refusal = (Rejection, Option<(String, String)>);

impl IgStamper {
    /// Every IG check after the signature, in order; on admission, the candidate with its canonical
    /// envelope (sorted keys, IG fields added) written straight from the parsed document.
    fn admit(
        &self,
        bytes: &[u8],
        signer: Option<String>,
        rec: &RawRecord,
        clock: &mut PartitionClock,
        floor: LogicalTime,
    ) -> Result<Candidate, Refusal> {
        let v = validate(bytes, &self.policy).map_err(|rej| (rej, None))?;
        let id = || Some((v.event_id.clone(), v.event_type.to_string()));
        if let Some(signer) = signer {
            let producer = v.object.get("producer").and_then(Json::as_str);
            if producer != Some(signer.as_str()) {
                let rej = Rejection {
                    reason: ReasonCode::BadSignature,
                    detail: format!(
                        "signed with a key of {signer}, but the envelope names producer {}",
                        producer.unwrap_or_default()
                    ),
                };
                return Err((rej, id()));
            }
        }
        clock_skew(v.event_time, rec.record_ts, &self.policy).map_err(|rej| (rej, id()))?;
        let watermark = clock.stamp_watermark().max(floor);
        let (logical_time, late_clamped) = if v.event_time >= watermark {
            // The watermark advances by the event time only as far as the record timestamp
            // justifies: a record stamped ahead of its record timestamp (within the allowed
            // skew) is admitted at its event time but cannot make later valid records late.
            clock.observe(v.event_time.min(rec.record_ts));
            (v.event_time, false)
        } else {
            match self.policy.late_policy {
                LatePolicy::Clamp => (watermark, true),
                LatePolicy::Quarantine => {
                    let detail = format!("event time {} < watermark {watermark}", v.event_time);
                    let rej = Rejection {
                        reason: ReasonCode::LateEvent,
                        detail,
                    };
                    return Err((rej, id()));
                }
            }
        };
        let mut object = v.object;
        let num = |n: u64| Json::Number(n.into());
        object.insert("logical_time", num(logical_time));
        object.insert("late_clamped", Json::Bool(late_clamped));
        object.insert(
            "partition_key",
            Json::Str(Cow::Borrowed(v.partition_key.as_str())),
        );
        let mut source = Object::default();
        source.insert("partition", num(u64::from(rec.coord.partition)));
        source.insert("offset", num(rec.coord.offset));
        object.insert("source", Json::Object(source));
        object.insert("policy_rev", Json::Str(Cow::Borrowed(&self.policy_rev)));
        let mut envelope = Vec::with_capacity(bytes.len() + 160);
        Json::Object(object).write_canonical(&mut envelope);
        // Canonical JSON of a document parsed from UTF-8 is UTF-8.
        let envelope = String::from_utf8(envelope).map_err(|e| {
            let rej = Rejection {
                reason: ReasonCode::MalformedJson,
                detail: format!("canonical envelope is not UTF-8: {e}"),
            };
            (rej, id())
        })?;
        Ok(Candidate {
            logical_time,
            event_id: v.event_id,
            coord: rec.coord,
            event_type: v.event_type,
            partition_key: v.partition_key,
            record_ts: rec.record_ts,
            late_clamped,
            envelope,
        })
    }
}

/// `CLOCK_SKEW` when the event time is more than `max_future_skew` ahead of the record
/// timestamp or more than `max_past_skew` behind it.
fn clock_skew(event_time: u64, record_ts: u64, policy: &IgPolicy) -> Result<(), Rejection> {
    let ahead = tidemark_operators::time::millis(policy.max_future_skew);
    let behind = tidemark_operators::time::millis(policy.max_past_skew);
    let detail = if event_time > record_ts.saturating_add(ahead) {
        format!(
            "event time {event_time} is {} ms ahead of record timestamp {record_ts} (max {ahead})",
            event_time - record_ts
        )
    } else if event_time < record_ts.saturating_sub(behind) {
        format!(
            "event time {event_time} is {} ms behind record timestamp {record_ts} (max {behind})",
            record_ts - event_time
        )
    } else {
        return Ok(());
    };
    Err(Rejection {
        reason: ReasonCode::ClockSkew,
        detail,
    })
}

/// The outputs of the gate.
pub struct IgOutputs<'scope> {
    /// Admitted events (logical time in the data).
    pub admitted: StreamVec<'scope, LogicalTime, Admitted>,
    /// One receipt per ingress record.
    pub receipts: StreamVec<'scope, LogicalTime, Receipt>,
}

fn receipt_for(c: &Candidate, status: ReceiptStatus, policy_rev: &str) -> Receipt {
    Receipt {
        coord: c.coord,
        record_ts: c.record_ts,
        status,
        reason: (status == ReceiptStatus::Duplicate).then_some(ReasonCode::Duplicate),
        detail: String::new(),
        event_id: Some(c.event_id.clone()),
        event_type: Some(c.event_type.to_string()),
        logical_time: Some(c.logical_time),
        late_clamped: c.late_clamped,
        policy_rev: policy_rev.to_owned(),
        raw: None,
    }
}

/// Dedups stamped IG items and produces the admitted stream and all receipts.
pub fn gate<'scope>(
    items: StreamVec<'scope, LogicalTime, IgItem>,
    dedup_window_ms: u64,
    policy_rev: Arc<str>,
) -> IgOutputs<'scope> {
    let scope = items.scope();
    let none =
        timely::dataflow::operators::vec::ToStream::to_stream(Vec::<Candidate>::new(), scope);
    gate_resumed(items, none, 0, dedup_window_ms, policy_rev)
}

// `ok_err` routes with a `Result` whose `Err` side is a receipt, not an error.
#[allow(clippy::result_large_err)]
/// [`gate`] for a run resuming from a commit at `resume_at`: `warm` carries the candidates of
/// earlier receipts that dedup must have seen (they produce nothing), and re-read records
/// stamped before `resume_at` get their receipts again but are not admitted a second time
/// (their archive files and decisions are already durable).
pub fn gate_resumed<'scope>(
    items: StreamVec<'scope, LogicalTime, IgItem>,
    warm: StreamVec<'scope, LogicalTime, Candidate>,
    resume_at: LogicalTime,
    dedup_window_ms: u64,
    policy_rev: Arc<str>,
) -> IgOutputs<'scope> {
    use timely::dataflow::operators::OkErr;
    type Split<'s, D> = StreamVec<'s, LogicalTime, D>;
    let (candidates, quarantined): (Split<'scope, (Candidate, bool)>, Split<'scope, Receipt>) =
        items.ok_err(|item| match item {
            IgItem::Candidate(c) => Ok((c, false)),
            IgItem::Quarantined(r) => Err(r),
        });
    let decided = candidates
        .concat(warm.map(|c| (c, true)))
        .dedup_window(dedup_window_ms)
        .filter(|((_, warm), _)| !warm);
    let rev = policy_rev.clone();
    // Each decided candidate yields its receipt and, when admitted, itself: one pass, so the
    // candidate moves on instead of being copied for a second consumer.
    let (admitted, dedup_receipts): (Split<'scope, Candidate>, Split<'scope, Receipt>) = decided
        .flat_map(move |((c, _), d)| {
            let status = match d {
                DedupDecision::First => ReceiptStatus::Admitted,
                DedupDecision::Duplicate => ReceiptStatus::Duplicate,
            };
            let receipt = Err(receipt_for(&c, status, &rev));
            let admit = (d == DedupDecision::First && c.logical_time >= resume_at).then_some(Ok(c));
            std::iter::once(receipt).chain(admit)
        })
        .ok_err(|r| r);
    IgOutputs {
        admitted,
        receipts: quarantined.concat(dedup_receipts),
    }
}
