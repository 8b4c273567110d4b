//! Stable reason codes (SPEC §5). Their string forms are public surface: never rename them.

use serde::{Deserialize, Serialize};

/// Why a record was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReasonCode {
    /// The value is not a JSON object.
    MalformedJson,
    /// A required envelope or payload field is absent.
    MissingField,
    /// A field has the wrong JSON type or an invalid format.
    BadType,
    /// A well-typed value outside its rule (amount range, ISO-4217 currency, ISO-3166 country,
    /// IP address, id length and characters).
    BadValue,
    /// `event_type` is not one tidemark knows.
    UnknownEventType,
    /// `schema_version` is not supported for this event type by the policy.
    UnsupportedSchemaVersion,
    /// The producer is not on the policy's allowlist for this event type.
    ProducerNotAllowed,
    /// The policy requires a producer signature and the record's is missing, names an unknown
    /// key, does not verify, belongs to another producer, or was made outside the allowed skew.
    BadSignature,
    /// The raw record exceeds the policy's size limit.
    PayloadTooLarge,
    /// The event time is below the watermark and the late policy quarantines.
    LateEvent,
    /// The event time is ahead of the record timestamp by more than `max_future_skew`, or behind
    /// it by more than `max_past_skew`.
    ClockSkew,
    /// Another record with the same event_id was seen within the dedup window.
    Duplicate,
}

impl ReasonCode {
    /// Every reason code, in documentation order.
    pub const ALL: [ReasonCode; 12] = [
        ReasonCode::MalformedJson,
        ReasonCode::MissingField,
        ReasonCode::BadType,
        ReasonCode::BadValue,
        ReasonCode::UnknownEventType,
        ReasonCode::UnsupportedSchemaVersion,
        ReasonCode::ProducerNotAllowed,
        ReasonCode::BadSignature,
        ReasonCode::PayloadTooLarge,
        ReasonCode::LateEvent,
        ReasonCode::ClockSkew,
        ReasonCode::Duplicate,
    ];

    /// The stable string form, e.g. `MALFORMED_JSON`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::MalformedJson => "MALFORMED_JSON",
            ReasonCode::MissingField => "MISSING_FIELD",
            ReasonCode::BadType => "BAD_TYPE",
            ReasonCode::BadValue => "BAD_VALUE",
            ReasonCode::UnknownEventType => "UNKNOWN_EVENT_TYPE",
            ReasonCode::UnsupportedSchemaVersion => "UNSUPPORTED_SCHEMA_VERSION",
            ReasonCode::ProducerNotAllowed => "PRODUCER_NOT_ALLOWED",
            ReasonCode::BadSignature => "BAD_SIGNATURE",
            ReasonCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ReasonCode::LateEvent => "LATE_EVENT",
            ReasonCode::ClockSkew => "CLOCK_SKEW",
            ReasonCode::Duplicate => "DUPLICATE",
        }
    }

    /// Parses the stable string form.
    pub fn parse(s: &str) -> Option<ReasonCode> {
        ReasonCode::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
