//! The canonical envelope (SPEC §4): required fields, per-event-type payload schemas, and the
//! validation IG applies to raw bytes, in a fixed, documented order (docs/reason-codes.md).

use serde_json::{Map, Value};

use crate::ig::IgPolicy;
use tidemark_operators::ReasonCode;

/// Event types routed to `fp.bus.traffic.v1`.
pub const TRAFFIC_TYPES: [&str; 3] = [
    "txn.authorization.v1",
    "account.login.v1",
    "account.profile_change.v1",
];
/// Event types routed to `fp.bus.control.v1`.
pub const CONTROL_TYPES: [&str; 3] = ["label.assertion.v1", "dl.posture.v1", "gov.fact.v1"];

/// Fields IG adds on admission; a producer may not set them.
pub const IG_FIELDS: [&str; 5] = [
    "logical_time",
    "late_clamped",
    "partition_key",
    "source",
    "policy_rev",
];

/// The JSON shape a field must have.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A string.
    Str,
    /// A non-empty string of at most 128 bytes.
    Id,
    /// An integer that fits i64.
    Int,
    /// A boolean.
    Bool,
    /// An RFC 3339 timestamp at or after the epoch.
    Rfc3339,
    /// Exactly 64 hex digits.
    Hex64,
    /// A JSON object.
    Object,
    /// One of the listed strings.
    OneOf(&'static [&'static str]),
}

/// One field of a schema.
#[derive(Clone, Copy, Debug)]
pub struct FieldSpec {
    /// Field name.
    pub name: &'static str,
    /// Required shape.
    pub kind: Kind,
    /// Whether the field must be present.
    pub required: bool,
}

const fn req(name: &'static str, kind: Kind) -> FieldSpec {
    FieldSpec {
        name,
        kind,
        required: true,
    }
}
const fn opt(name: &'static str, kind: Kind) -> FieldSpec {
    FieldSpec {
        name,
        kind,
        required: false,
    }
}

/// Envelope fields, in validation order.
pub const ENVELOPE: &[FieldSpec] = &[
    req("event_id", Kind::Id),
    req("event_type", Kind::Str),
    req("ts_utc", Kind::Rfc3339),
    req("manifest_fingerprint", Kind::Hex64),
    req("schema_version", Kind::Int),
    req("producer", Kind::Str),
    req("payload", Kind::Object),
    opt("parameter_hash", Kind::Str),
    opt("seed", Kind::Int),
    opt("scenario_id", Kind::Str),
    opt("run_id", Kind::Str),
    opt("trace_id", Kind::Str),
    opt("span_id", Kind::Str),
    opt("parent_event_id", Kind::Str),
];

const TXN: &[FieldSpec] = &[
    req("txn_id", Kind::Str),
    req("account_id", Kind::Str),
    req("card_id", Kind::Str),
    req("merchant_id", Kind::Str),
    req("device_id", Kind::Str),
    req("ip", Kind::Str),
    req("email", Kind::Str),
    req("amount_minor", Kind::Int),
    req("currency", Kind::Str),
    req("mcc", Kind::Str),
    req("channel", Kind::Str),
    req("country", Kind::Str),
];
const LOGIN: &[FieldSpec] = &[
    req("account_id", Kind::Str),
    req("device_id", Kind::Str),
    req("ip", Kind::Str),
    req("success", Kind::Bool),
];
const PROFILE_CHANGE: &[FieldSpec] = &[
    req("account_id", Kind::Str),
    req("device_id", Kind::Str),
    req("field", Kind::Str),
    opt("email", Kind::Str),
    opt("phone", Kind::Str),
];
const LABEL: &[FieldSpec] = &[
    req("subject_event_id", Kind::Id),
    req("account_id", Kind::Str),
    req("label", Kind::OneOf(&["fraud", "legit"])),
    req("effective_ts", Kind::Rfc3339),
    req("observed_ts", Kind::Rfc3339),
    req("source", Kind::Str),
];
const POSTURE: &[FieldSpec] = &[
    req("posture", Kind::OneOf(&["NORMAL", "DEGRADED", "SAFE"])),
    req("reason", Kind::Str),
];
const GOV_FACT: &[FieldSpec] = &[req("kind", Kind::Str), opt("detail", Kind::Object)];

/// The payload schema of a known event type.
pub fn payload_schema(event_type: &str) -> Option<&'static [FieldSpec]> {
    match event_type {
        "txn.authorization.v1" => Some(TXN),
        "account.login.v1" => Some(LOGIN),
        "account.profile_change.v1" => Some(PROFILE_CHANGE),
        "label.assertion.v1" => Some(LABEL),
        "dl.posture.v1" => Some(POSTURE),
        "gov.fact.v1" => Some(GOV_FACT),
        _ => None,
    }
}

/// Whether an event type is a control type (goes to `fp.bus.control.v1`).
pub fn is_control(event_type: &str) -> bool {
    CONTROL_TYPES.contains(&event_type)
}

/// An envelope that passed every stateless check.
#[derive(Clone, Debug, PartialEq)]
pub struct Validated {
    /// The parsed envelope object (keys sorted).
    pub object: Map<String, Value>,
    /// `event_id`.
    pub event_id: String,
    /// `event_type`.
    pub event_type: String,
    /// `ts_utc` as epoch milliseconds (sub-millisecond digits truncated).
    pub event_time: u64,
    /// `payload.account_id` if present, else the event type.
    pub partition_key: String,
}

/// Why a record was rejected by a stateless check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The reason code.
    pub reason: ReasonCode,
    /// Human-readable detail, e.g. the field path.
    pub detail: String,
}

fn reject(reason: ReasonCode, detail: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        detail: detail.into(),
    }
}

/// Parses an RFC 3339 timestamp to epoch milliseconds (`None` if invalid or before 1970).
pub fn parse_rfc3339_millis(s: &str) -> Option<u64> {
    let dt = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    u64::try_from(dt.timestamp_millis()).ok()
}

fn kind_ok(kind: Kind, v: &Value) -> bool {
    match kind {
        Kind::Str => v.is_string(),
        Kind::Id => v.as_str().is_some_and(|s| !s.is_empty() && s.len() <= 128),
        Kind::Int => v.is_i64(),
        Kind::Bool => v.is_boolean(),
        Kind::Rfc3339 => v.as_str().and_then(parse_rfc3339_millis).is_some(),
        Kind::Hex64 => v
            .as_str()
            .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())),
        Kind::Object => v.is_object(),
        Kind::OneOf(options) => v.as_str().is_some_and(|s| options.contains(&s)),
    }
}

fn check_fields(
    obj: &Map<String, Value>,
    specs: &[FieldSpec],
    prefix: &str,
) -> Result<(), Rejection> {
    for spec in specs.iter().filter(|s| s.required) {
        if obj.get(spec.name).is_none_or(Value::is_null) {
            return Err(reject(
                ReasonCode::MissingField,
                format!("{prefix}{}", spec.name),
            ));
        }
    }
    for spec in specs {
        match obj.get(spec.name) {
            Some(Value::Null) | None => {}
            Some(v) if kind_ok(spec.kind, v) => {}
            Some(_) => {
                return Err(reject(
                    ReasonCode::BadType,
                    format!("{prefix}{}: expected {:?}", spec.name, spec.kind),
                ))
            }
        }
    }
    Ok(())
}

/// Applies every stateless IG check to raw bytes, in the documented order: size, JSON, envelope
/// presence, envelope types, reserved fields, event type, schema version, payload presence and
/// types, producer allowlist. Time-dependent checks (skew, lateness, dedup) come after.
pub fn validate(bytes: &[u8], policy: &IgPolicy) -> Result<Validated, Rejection> {
    if bytes.len() > policy.max_record_bytes {
        return Err(reject(
            ReasonCode::PayloadTooLarge,
            format!("{} bytes > {}", bytes.len(), policy.max_record_bytes),
        ));
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| reject(ReasonCode::MalformedJson, e.to_string()))?;
    let Value::Object(object) = value else {
        return Err(reject(ReasonCode::MalformedJson, "not a JSON object"));
    };
    check_fields(&object, ENVELOPE, "")?;
    if let Some(f) = IG_FIELDS.iter().find(|f| object.contains_key(**f)) {
        return Err(reject(ReasonCode::BadType, format!("{f}: reserved for IG")));
    }
    let str_of = |k: &str| {
        object
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let event_type = str_of("event_type");
    let Some(schema) = payload_schema(&event_type) else {
        return Err(reject(ReasonCode::UnknownEventType, event_type));
    };
    let version = object
        .get("schema_version")
        .and_then(Value::as_i64)
        .unwrap_or_default();
    if !policy.schema_versions.contains(&version) {
        return Err(reject(
            ReasonCode::UnsupportedSchemaVersion,
            format!("{event_type} schema_version {version}"),
        ));
    }
    let payload = match object.get("payload") {
        Some(Value::Object(p)) => p,
        _ => return Err(reject(ReasonCode::BadType, "payload: expected Object")),
    };
    check_fields(payload, schema, "payload.")?;
    let producer = str_of("producer");
    if !policy.producer_allowed(&event_type, &producer) {
        return Err(reject(
            ReasonCode::ProducerNotAllowed,
            format!("{producer} may not send {event_type}"),
        ));
    }
    let partition_key = payload
        .get("account_id")
        .and_then(Value::as_str)
        .map_or_else(|| event_type.clone(), str::to_owned);
    let event_time = object
        .get("ts_utc")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339_millis)
        .ok_or_else(|| reject(ReasonCode::BadType, "ts_utc"))?;
    Ok(Validated {
        event_id: str_of("event_id"),
        event_type,
        event_time,
        partition_key,
        object,
    })
}
