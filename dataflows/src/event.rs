//! Admitted events as the decision stages see them: the canonical envelope parsed once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use tidemark_operators::ingest::Admitted;
use tidemark_operators::{LogicalTime, SourceCoord};

/// An admitted event with its payload fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Logical time assigned by IG.
    pub time: LogicalTime,
    /// `event_id`.
    pub event_id: String,
    /// `event_type`.
    pub event_type: String,
    /// Ingress coordinates.
    pub coord: SourceCoord,
    /// Ingress record timestamp (Kafka record timestamp), kept as provenance.
    pub record_ts: u64,
    /// `ts_utc` as sent.
    pub ts_utc: String,
    /// Optional envelope ids (empty when absent).
    pub trace_id: String,
    /// Envelope `run_id`.
    pub run_id: String,
    /// Envelope `scenario_id`.
    pub scenario_id: String,
    /// Payload fields rendered as strings (strings as-is, numbers and booleans in JSON form).
    pub fields: BTreeMap<String, String>,
}

impl Event {
    /// Parses an admitted row; `None` if its envelope is not the canonical JSON IG wrote.
    pub fn parse(a: &Admitted) -> Option<Event> {
        let Value::Object(o) = serde_json::from_str::<Value>(&a.envelope).ok()? else {
            return None;
        };
        let s = |k: &str| {
            o.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let mut fields = BTreeMap::new();
        if let Some(Value::Object(p)) = o.get("payload") {
            for (k, v) in p {
                let text = match v {
                    Value::String(x) => x.clone(),
                    Value::Null => continue,
                    other => other.to_string(),
                };
                fields.insert(k.clone(), text);
            }
        }
        Some(Event {
            time: a.logical_time,
            event_id: a.event_id.clone(),
            event_type: a.event_type.clone(),
            coord: a.coord,
            record_ts: a.record_ts,
            ts_utc: s("ts_utc"),
            trace_id: s("trace_id"),
            run_id: s("run_id"),
            scenario_id: s("scenario_id"),
            fields,
        })
    }

    /// A payload field as a string.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// A payload field as an integer.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.field(name).and_then(|v| v.parse().ok())
    }
}

/// The entity type of a payload field (SPEC §6): `card_id` → `card`, `account_id` → `account`,
/// `device_id` → `device`, `ip` → `ip`, `email` → `email`, anything else → the field name.
pub fn entity_type(field: &str) -> &str {
    field.strip_suffix("_id").unwrap_or(field)
}

/// The typed entity key of a field value, e.g. `card:card-17`.
pub fn entity_key(field: &str, value: &str) -> String {
    format!("{}:{value}", entity_type(field))
}
