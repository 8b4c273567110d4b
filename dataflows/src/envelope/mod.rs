//! The canonical envelope (SPEC §4): required fields, per-event-type payload schemas, and the
//! validation IG applies to raw bytes, in a fixed, documented order (docs/reason-codes.md).
//! [`strict`] parses JSON rejecting duplicate keys; [`rules`] holds the typed value rules.

pub mod rules;
pub mod strict;

use strict::{Json, Object};
use tidemark_operators::ingest::EventType;

use crate::ig::IgPolicy;
use tidemark_operators::ReasonCode;

/// Fields IG adds on admission; a producer may not set them.
pub const IG_FIELDS: [&str; 5] = [
    "logical_time",
    "late_clamped",
    "partition_key",
    "source",
    "policy_rev",
];

/// The JSON shape a field must have (`BAD_TYPE` otherwise) and, for some, the rule its value
/// must satisfy (`BAD_VALUE` otherwise, see [`rules`]).
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A string.
    Str,
    /// A string; value: 1..=128 bytes without control or bidi characters.
    Id,
    /// An integer that fits i64.
    Int,
    /// An integer that fits i64; value: `0 ..= ig.max_amount_minor`.
    Amount,
    /// A string; value: an ISO-4217 currency code.
    Currency,
    /// A string; value: an ISO-3166-1 alpha-2 country code.
    Country,
    /// A string; value: an IPv4 or IPv6 address.
    Ip,
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
    req("producer", Kind::Id),
    req("payload", Kind::Object),
    opt("parameter_hash", Kind::Id),
    opt("seed", Kind::Int),
    opt("scenario_id", Kind::Id),
    opt("run_id", Kind::Id),
    opt("trace_id", Kind::Id),
    opt("span_id", Kind::Id),
    opt("parent_event_id", Kind::Id),
];

const TXN: &[FieldSpec] = &[
    req("txn_id", Kind::Id),
    req("account_id", Kind::Id),
    req("card_id", Kind::Id),
    req("merchant_id", Kind::Id),
    req("device_id", Kind::Id),
    req("ip", Kind::Ip),
    req("email", Kind::Id),
    req("amount_minor", Kind::Amount),
    req("currency", Kind::Currency),
    req("mcc", Kind::Id),
    req("channel", Kind::Id),
    req("country", Kind::Country),
];
const LOGIN: &[FieldSpec] = &[
    req("account_id", Kind::Id),
    req("device_id", Kind::Id),
    req("ip", Kind::Ip),
    req("success", Kind::Bool),
];
const PROFILE_CHANGE: &[FieldSpec] = &[
    req("account_id", Kind::Id),
    req("device_id", Kind::Id),
    req("field", Kind::Str),
    opt("email", Kind::Id),
    opt("phone", Kind::Id),
];
const LABEL: &[FieldSpec] = &[
    req("subject_event_id", Kind::Id),
    req("account_id", Kind::Id),
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

/// The payload schema of an event type.
pub fn payload_schema(event_type: EventType) -> &'static [FieldSpec] {
    match event_type {
        EventType::Authorization => TXN,
        EventType::Login => LOGIN,
        EventType::ProfileChange => PROFILE_CHANGE,
        EventType::Label => LABEL,
        EventType::Posture => POSTURE,
        EventType::GovFact => GOV_FACT,
    }
}

/// An envelope that passed every stateless check, borrowing from the record's bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Validated<'a> {
    /// The parsed envelope object (keys sorted).
    pub object: Object<'a>,
    /// `event_id`.
    pub event_id: String,
    /// `event_type`.
    pub event_type: EventType,
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

fn type_ok(kind: Kind, v: &Json<'_>) -> bool {
    match kind {
        Kind::Str | Kind::Id | Kind::Currency | Kind::Country | Kind::Ip => v.as_str().is_some(),
        Kind::Int | Kind::Amount => v.as_i64().is_some(),
        Kind::Bool => matches!(v, Json::Bool(_)),
        Kind::Rfc3339 => v.as_str().and_then(parse_rfc3339_millis).is_some(),
        Kind::Hex64 => v
            .as_str()
            .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())),
        Kind::Object => v.as_object().is_some(),
        Kind::OneOf(options) => v.as_str().is_some_and(|s| options.contains(&s)),
    }
}

/// The value rule of a well-typed field (`Ok` for kinds without one).
fn value_ok(kind: Kind, v: &Json<'_>, policy: &IgPolicy) -> Result<(), String> {
    let s = || v.as_str().unwrap_or_default();
    match kind {
        Kind::Id => rules::id(s()),
        Kind::Amount => rules::amount(v.as_i64().unwrap_or_default(), policy.max_amount_minor),
        Kind::Currency => rules::currency(s()),
        Kind::Country => rules::country(s()),
        Kind::Ip => rules::ip(s()),
        _ => Ok(()),
    }
}

/// Checks `specs` against `obj` in three passes (presence, then types, then value rules), so
/// the reason of a record with several faults does not depend on field order. Each field is
/// looked up once.
fn check_fields(
    obj: &Object<'_>,
    specs: &[FieldSpec],
    prefix: &str,
    policy: &IgPolicy,
) -> Result<(), Rejection> {
    let found: Vec<(&FieldSpec, Option<&Json<'_>>)> = specs
        .iter()
        .map(|spec| (spec, obj.get(spec.name).filter(|v| !v.is_null())))
        .collect();
    if let Some((spec, _)) = found.iter().find(|(spec, v)| spec.required && v.is_none()) {
        return Err(reject(
            ReasonCode::MissingField,
            format!("{prefix}{}", spec.name),
        ));
    }
    let present = || found.iter().filter_map(|(spec, v)| Some((*spec, (*v)?)));
    if let Some((spec, _)) = present().find(|(spec, v)| !type_ok(spec.kind, v)) {
        return Err(reject(
            ReasonCode::BadType,
            format!("{prefix}{}: expected {:?}", spec.name, spec.kind),
        ));
    }
    for (spec, v) in present() {
        if let Err(why) = value_ok(spec.kind, v, policy) {
            return Err(reject(
                ReasonCode::BadValue,
                format!("{prefix}{}: {why}", spec.name),
            ));
        }
    }
    Ok(())
}

/// Applies every stateless IG check to raw bytes, in the documented order: size, JSON (strict:
/// duplicate keys are malformed), envelope presence, types and values, reserved fields, event
/// type, schema version, payload presence, types and values, producer allowlist.
/// Signature and time-dependent checks (skew, lateness, dedup) come after.
pub fn validate<'a>(bytes: &'a [u8], policy: &IgPolicy) -> Result<Validated<'a>, Rejection> {
    if bytes.len() > policy.max_record_bytes {
        return Err(reject(
            ReasonCode::PayloadTooLarge,
            format!("{} bytes > {}", bytes.len(), policy.max_record_bytes),
        ));
    }
    let value =
        strict::from_slice(bytes).map_err(|e| reject(ReasonCode::MalformedJson, e.to_string()))?;
    let Json::Object(object) = value else {
        return Err(reject(ReasonCode::MalformedJson, "not a JSON object"));
    };
    check_fields(&object, ENVELOPE, "", policy)?;
    if let Some(f) = IG_FIELDS.iter().find(|f| object.contains_key(f)) {
        return Err(reject(ReasonCode::BadType, format!("{f}: reserved for IG")));
    }
    let str_of = |k: &str| {
        object
            .get(k)
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let name = str_of("event_type");
    let Ok(event_type) = name.parse::<EventType>() else {
        return Err(reject(ReasonCode::UnknownEventType, name));
    };
    let schema = payload_schema(event_type);
    let version = object
        .get("schema_version")
        .and_then(Json::as_i64)
        .unwrap_or_default();
    if !policy.schema_versions.contains(&version) {
        return Err(reject(
            ReasonCode::UnsupportedSchemaVersion,
            format!("{event_type} schema_version {version}"),
        ));
    }
    let payload = match object.get("payload") {
        Some(Json::Object(p)) => p,
        _ => return Err(reject(ReasonCode::BadType, "payload: expected Object")),
    };
    check_fields(payload, schema, "payload.", policy)?;
    let producer = str_of("producer");
    if !policy.producer_allowed(event_type.as_str(), &producer) {
        return Err(reject(
            ReasonCode::ProducerNotAllowed,
            format!("{producer} may not send {event_type}"),
        ));
    }
    let partition_key = payload
        .get("account_id")
        .and_then(Json::as_str)
        .map_or_else(|| event_type.as_str().to_owned(), str::to_owned);
    let event_time = object
        .get("ts_utc")
        .and_then(Json::as_str)
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
