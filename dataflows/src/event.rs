//! Admitted events as the decision stages see them: the canonical envelope parsed once into a
//! compact typed event.
//!
//! An [`EventSchema`] names the event types and payload fields the decision stages read (it is
//! built from the profile: feature keys, values and filters, graph edges, the DF's fields).
//! [`Event::parse`] keeps exactly those fields, in a vector indexed by [`FieldId`], so every
//! lookup on the hot path is an index, not a string comparison; every other payload field is
//! skipped without being copied.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserializer;
use serde_json::value::RawValue;

use tidemark_operators::ingest::Admitted;
use tidemark_operators::{LogicalTime, SourceCoord};

use crate::envelope::strict::Str;

/// A payload field the schema knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldId(pub u16);

/// An event type the schema knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TypeId(pub u16);

/// The event types and payload fields the decision stages read.
#[derive(Clone, Debug, Default)]
pub struct EventSchema {
    types: Vec<String>,
    fields: Vec<String>,
}

impl EventSchema {
    /// Registers (or finds) a payload field.
    pub fn field(&mut self, name: &str) -> FieldId {
        match self.field_id(name) {
            Some(f) => f,
            None => {
                self.fields.push(name.to_owned());
                FieldId((self.fields.len() - 1) as u16)
            }
        }
    }

    /// Registers (or finds) an event type.
    pub fn ty(&mut self, name: &str) -> TypeId {
        match self.types.iter().position(|t| t == name) {
            Some(i) => TypeId(i as u16),
            None => {
                self.types.push(name.to_owned());
                TypeId((self.types.len() - 1) as u16)
            }
        }
    }

    /// A registered field's id.
    pub fn field_id(&self, name: &str) -> Option<FieldId> {
        self.fields
            .iter()
            .position(|f| f == name)
            .map(|i| FieldId(i as u16))
    }

    /// A registered field's name.
    pub fn field_name(&self, f: FieldId) -> &str {
        self.fields.get(f.0 as usize).map_or("", String::as_str)
    }
}

/// An admitted event with the payload fields its schema names.
///
/// The event owns its envelope text (moved from the admitted row, not copied); every string it
/// exposes is a span of that text, except a JSON string with escapes, which is unescaped once
/// into its own buffer. Parsing an event therefore allocates its field vector and nothing per
/// field.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Logical time assigned by IG.
    pub time: LogicalTime,
    /// `event_id`.
    pub event_id: String,
    /// `event_type`, when the schema knows it.
    pub kind: Option<TypeId>,
    /// Ingress coordinates.
    pub coord: SourceCoord,
    /// Ingress record timestamp (Kafka record timestamp), kept as provenance.
    pub record_ts: u64,
    /// The canonical envelope the spans below point into.
    envelope: String,
    /// `ts_utc` as sent; `trace_id`, `run_id`, `scenario_id` (empty when absent).
    ids: [Option<Text>; 4],
    /// Payload fields by [`FieldId`], rendered as strings (strings as-is, numbers and booleans
    /// in their canonical JSON form); `None` when absent or null.
    values: Vec<Option<Text>>,
}

/// A string of an [`Event`]: a byte range of its envelope, or (a JSON string with escapes)
/// the unescaped text.
#[derive(Clone, Debug, PartialEq)]
enum Text {
    Span(u32, u32),
    Owned(Box<str>),
}

impl Text {
    /// `s`, borrowed from `base` (a span) when it lies inside it, else owned.
    fn of(s: Cow<'_, str>, base: &str) -> Text {
        if let Cow::Borrowed(b) = &s {
            let start = (b.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
            if start <= base.len() && b.len() <= base.len() - start {
                if let (Ok(x), Ok(y)) = (u32::try_from(start), u32::try_from(start + b.len())) {
                    return Text::Span(x, y);
                }
            }
        }
        Text::Owned(s.into_owned().into())
    }

    fn get<'a>(&'a self, base: &'a str) -> &'a str {
        match self {
            Text::Span(x, y) => base.get(*x as usize..*y as usize).unwrap_or(""),
            Text::Owned(s) => s,
        }
    }
}

/// Deserializes an envelope object in one pass: the four ids as text of the envelope, the
/// payload through [`Payload`]; every other member is skipped without a copy.
struct EnvelopeSeed<'s> {
    schema: &'s EventSchema,
    base: &'s str,
    ids: &'s mut [Option<Text>; 4],
    values: &'s mut Vec<Option<Text>>,
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an envelope object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Str(key)) = map.next_key()? {
            let id = match key.as_ref() {
                "ts_utc" => 0,
                "trace_id" => 1,
                "run_id" => 2,
                "scenario_id" => 3,
                "payload" => {
                    map.next_value_seed(Payload {
                        schema: self.schema,
                        base: self.base,
                        values: &mut *self.values,
                    })?;
                    continue;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let value: Option<Str<'de>> = map.next_value()?;
            self.ids[id] = value.map(|v| Text::of(v.0, self.base));
        }
        Ok(())
    }
}

/// Deserializes a payload object into the schema's field vector.
struct Payload<'s> {
    schema: &'s EventSchema,
    base: &'s str,
    values: &'s mut Vec<Option<Text>>,
}

impl<'de> DeserializeSeed<'de> for Payload<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Payload<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a payload object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Str(key)) = map.next_key()? {
            let Some(f) = self.schema.field_id(&key) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let raw: &'de RawValue = map.next_value()?;
            let text = raw.get();
            let value = match text.as_bytes().first() {
                // A JSON string without escapes is its bytes between the quotes.
                Some(b'"') if !text.contains('\\') && text.len() >= 2 => text
                    .get(1..text.len() - 1)
                    .map(|inner| Text::of(Cow::Borrowed(inner), self.base)),
                Some(b'"') => Some(Text::Owned(
                    serde_json::from_str::<String>(text)
                        .map_err(serde::de::Error::custom)?
                        .into(),
                )),
                _ if text == "null" => None,
                _ => Some(Text::of(Cow::Borrowed(text), self.base)),
            };
            if let Some(slot) = self.values.get_mut(f.0 as usize) {
                *slot = value;
            }
        }
        Ok(())
    }
}

impl Event {
    /// Parses an admitted row; `None` if its envelope is not the canonical JSON IG wrote.
    pub fn parse(a: &Admitted, schema: &EventSchema) -> Option<Event> {
        Event::parse_owned(a.clone(), schema).ok()
    }

    /// [`Event::parse`] taking the row, whose envelope text the event then owns (no copy);
    /// `Err(event_id)` if its envelope is not canonical.
    pub fn parse_owned(a: Admitted, schema: &EventSchema) -> Result<Event, String> {
        let base = a.envelope.as_str();
        let mut values = vec![None; schema.fields.len()];
        let mut ids: [Option<Text>; 4] = Default::default();
        let mut de = serde_json::Deserializer::from_str(base);
        let parsed = EnvelopeSeed {
            schema,
            base,
            ids: &mut ids,
            values: &mut values,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end());
        if parsed.is_err() {
            return Err(a.event_id);
        }
        let kind = schema
            .types
            .iter()
            .position(|t| t == a.event_type.as_str())
            .map(|i| TypeId(i as u16));
        Ok(Event {
            time: a.logical_time,
            event_id: a.event_id,
            kind,
            coord: a.coord,
            record_ts: a.record_ts,
            envelope: a.envelope,
            ids,
            values,
        })
    }

    fn id(&self, i: usize) -> &str {
        self.ids[i].as_ref().map_or("", |t| t.get(&self.envelope))
    }

    /// `ts_utc` as sent.
    pub fn ts_utc(&self) -> &str {
        self.id(0)
    }

    /// Envelope `trace_id` (empty when absent).
    pub fn trace_id(&self) -> &str {
        self.id(1)
    }

    /// Envelope `run_id` (empty when absent).
    pub fn run_id(&self) -> &str {
        self.id(2)
    }

    /// Envelope `scenario_id` (empty when absent).
    pub fn scenario_id(&self) -> &str {
        self.id(3)
    }

    /// A payload field as a string.
    pub fn field(&self, f: FieldId) -> Option<&str> {
        self.values
            .get(f.0 as usize)?
            .as_ref()
            .map(|t| t.get(&self.envelope))
    }

    /// A payload field as an integer.
    pub fn int(&self, f: FieldId) -> Option<i64> {
        self.field(f).and_then(|v| v.parse().ok())
    }

    /// True when the event's type is `t`.
    pub fn is(&self, t: TypeId) -> bool {
        self.kind == Some(t)
    }
}

/// The entity type of a payload field (SPEC §6): `card_id` → `card`, `account_id` → `account`,
/// `device_id` → `device`, `ip` → `ip`, `email` → `email`, anything else → the field name.
pub fn entity_type(field: &str) -> &str {
    field.strip_suffix("_id").unwrap_or(field)
}

/// The typed entity key of a field value, e.g. `card:card-17`.
pub fn entity_key(field: &str, value: &str) -> String {
    typed_key(entity_type(field), value)
}

/// `ty:value` built in one allocation (the graph's entity keys, on the hot path).
pub fn typed_key(ty: &str, value: &str) -> String {
    let mut k = String::with_capacity(ty.len() + 1 + value.len());
    k.push_str(ty);
    k.push(':');
    k.push_str(value);
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_operators::ingest::EventType;

    fn admitted(envelope: &str) -> Admitted {
        Admitted {
            logical_time: 5,
            event_id: "e1".into(),
            event_type: EventType::Authorization,
            coord: SourceCoord {
                partition: 0,
                offset: 1,
            },
            partition_key: String::new(),
            record_ts: 9,
            late_clamped: false,
            envelope: envelope.into(),
        }
    }

    #[test]
    fn keeps_only_schema_fields_in_canonical_form() {
        let mut s = EventSchema::default();
        let (card, amt, ok, note, gone) = (
            s.field("card_id"),
            s.field("amount_minor"),
            s.field("success"),
            s.field("note"),
            s.field("missing"),
        );
        let txn = s.ty("txn.authorization.v1");
        let e = Event::parse(
            &admitted(r#"{"ts_utc":"2026-01-01T00:00:00Z","trace_id":"t","payload":{"card_id":"c\u00e9\"1","amount_minor":-12,"success":false,"note":null,"other":{"x":[1,2]}}}"#),
            &s,
        )
        .expect("parses");
        assert!(e.is(txn));
        assert_eq!(e.field(card), Some("cé\"1"));
        assert_eq!(e.int(amt), Some(-12));
        assert_eq!(e.field(ok), Some("false"));
        assert_eq!(e.field(note), None);
        assert_eq!(e.field(gone), None);
        assert_eq!(e.ts_utc(), "2026-01-01T00:00:00Z");
        assert_eq!(e.trace_id(), "t");
        assert_eq!(e.run_id(), "");
        assert_eq!(e.scenario_id(), "");
        // Escaped strings are unescaped, in the envelope ids too.
        let e = Event::parse(
            &admitted(r#"{"ts_utc":"2026-01-01T00:00:00Z","trace_id":"a\/b","payload":{"card_id":"x\ty","amount_minor":7}}"#),
            &s,
        )
        .expect("parses");
        assert_eq!(e.trace_id(), "a/b");
        assert_eq!(e.field(card), Some("x\ty"));
        assert_eq!(e.int(amt), Some(7));
        assert!(Event::parse(&admitted("not json"), &s).is_none());
    }
}
