//! Types the Ingestion Gate produces and the sinks persist: receipts, candidates and admitted
//! events, and the [`EventType`]s IG admits.

use serde::{Deserialize, Serialize};

use crate::dedup::DedupKeyed;
use crate::reason::ReasonCode;
use crate::record::SourceCoord;
use crate::spelled::{spelled_enum, UnknownName};
use crate::time::LogicalTime;

/// Receipt status (SPEC §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReceiptStatus {
    /// Admitted to the traffic/control log.
    Admitted,
    /// Rejected with a reason; raw bytes kept under `ig/quarantine/`.
    Quarantined,
    /// Passed every check but is a duplicate of a record seen within the dedup window.
    Duplicate,
}

impl ReceiptStatus {
    /// Stable string form.
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptStatus::Admitted => "ADMITTED",
            ReceiptStatus::Quarantined => "QUARANTINED",
            ReceiptStatus::Duplicate => "DUPLICATE",
        }
    }
}

/// Exactly one per ingress record.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Receipt {
    /// Ingress coordinates.
    pub coord: SourceCoord,
    /// Ingress record timestamp (epoch ms).
    pub record_ts: u64,
    /// Outcome.
    pub status: ReceiptStatus,
    /// Reason code for QUARANTINED and DUPLICATE.
    pub reason: Option<ReasonCode>,
    /// Human-readable detail (field path, watermark, …); empty when admitted.
    pub detail: String,
    /// `event_id`, when the record got far enough to have one.
    pub event_id: Option<String>,
    /// `event_type`, when known.
    pub event_type: Option<String>,
    /// Assigned logical time (ADMITTED and DUPLICATE).
    pub logical_time: Option<LogicalTime>,
    /// Whether the logical time was clamped to the watermark.
    pub late_clamped: bool,
    /// The policy revision in force.
    pub policy_rev: String,
    /// Raw bytes, kept for QUARANTINED records only.
    pub raw: Option<Vec<u8>>,
}

/// A record that passed every check but dedup, with its canonical admitted envelope.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Candidate {
    /// Assigned logical time.
    pub logical_time: LogicalTime,
    /// `event_id`.
    pub event_id: String,
    /// Ingress coordinates.
    pub coord: SourceCoord,
    /// `event_type`.
    pub event_type: EventType,
    /// `payload.account_id` or the event type.
    pub partition_key: String,
    /// Ingress record timestamp.
    pub record_ts: u64,
    /// Clamped to the watermark.
    pub late_clamped: bool,
    /// Canonical admitted envelope: compact JSON, keys sorted, IG fields added.
    pub envelope: String,
}

impl DedupKeyed for Candidate {
    fn dedup_key(&self) -> &str {
        &self.event_id
    }
    fn time(&self) -> LogicalTime {
        self.logical_time
    }
    fn tiebreak(&self) -> (u32, u64) {
        (self.coord.partition, self.coord.offset)
    }
}

/// An admitted event (a candidate that was not a duplicate).
pub type Admitted = Candidate;

/// A candidate with its role in a resumed run: `warm == true` marks a candidate rebuilt from an
/// earlier receipt, which only fills dedup state (no receipt, no admission).
pub type Seen = (Candidate, bool);

impl DedupKeyed for Seen {
    fn dedup_key(&self) -> &str {
        &self.0.event_id
    }
    fn time(&self) -> LogicalTime {
        self.0.logical_time
    }
    fn tiebreak(&self) -> (u32, u64) {
        (self.0.coord.partition, self.0.coord.offset)
    }
}

impl Candidate {
    /// The dedup input a receipt stands for (ADMITTED and DUPLICATE receipts only): enough to
    /// rebuild dedup state, without the envelope.
    ///
    /// An event type that is not one of SPEC's on such a receipt is an error: IG admits only
    /// those, so the receipt was not written by IG.
    pub fn from_receipt(r: &Receipt) -> Result<Option<Candidate>, UnknownName> {
        if r.status == ReceiptStatus::Quarantined {
            return Ok(None);
        }
        let (Some(logical_time), Some(event_id)) = (r.logical_time, r.event_id.clone()) else {
            return Ok(None);
        };
        let event_type = r.event_type.as_deref().unwrap_or_default().parse()?;
        Ok(Some(Candidate {
            logical_time,
            event_id,
            coord: r.coord,
            event_type,
            partition_key: String::new(),
            record_ts: r.record_ts,
            late_clamped: r.late_clamped,
            envelope: String::new(),
        }))
    }
}

spelled_enum!(
    /// The event types of SPEC §4, the only ones IG admits (declared in spelling order, so the
    /// derived order is the order of the strings).
    EventType, "event type", {
        /// `account.login.v1` (traffic).
        Login => "account.login.v1",
        /// `account.profile_change.v1` (traffic).
        ProfileChange => "account.profile_change.v1",
        /// `dl.posture.v1` (control): sets the degrade ladder's posture.
        Posture => "dl.posture.v1",
        /// `gov.fact.v1` (control).
        GovFact => "gov.fact.v1",
        /// `label.assertion.v1` (control): a fraud/legit label.
        Label => "label.assertion.v1",
        /// `txn.authorization.v1` (traffic): the decision trigger.
        Authorization => "txn.authorization.v1",
    }
);

impl EventType {
    /// Whether the type goes to `fp.bus.control.v1` (else `fp.bus.traffic.v1`).
    pub fn is_control(self) -> bool {
        matches!(
            self,
            EventType::Posture | EventType::GovFact | EventType::Label
        )
    }
}
