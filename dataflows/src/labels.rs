//! Labels as known at a cut-off (SPEC §10): the label-as-of rule of training datasets.
//!
//! An event's label as of `labels_as_of` is decided by its `label.assertion.v1` events with
//! `observed_ts <= labels_as_of` alone (however late they were archived): the one with the
//! greatest `(observed_ts, effective_ts, assertion event_id)` wins — the latest observation,
//! then the latest effective time, then the byte-wise greatest assertion id, so ties never
//! depend on arrival order or worker count. An event with no such assertion has no label.

use std::collections::BTreeMap;

use tidemark_operators::dataset::{KnownLabel, LabelValue};
use tidemark_operators::ingest::{Admitted, EventType};

use crate::envelope::parse_rfc3339_millis;
use crate::event::{Event, EventSchema, FieldId, TypeId};

/// The label assertion event type.
pub const LABEL_TYPE: EventType = EventType::Label;

/// Collects label assertions and keeps, per subject event, the winner of the label-as-of rule.
#[derive(Clone, Debug)]
pub struct LabelBook {
    as_of: u64,
    schema: EventSchema,
    ty: TypeId,
    fields: [FieldId; 4],
    best: BTreeMap<String, KnownLabel>,
    seen: u64,
    after_cutoff: u64,
}

/// What the book did with one assertion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Not a label assertion.
    NotALabel,
    /// Observed after the cut-off: ignored.
    AfterCutoff,
    /// Considered (it may or may not be the winner).
    Considered,
}

impl LabelBook {
    /// An empty book for the cut-off `labels_as_of` (epoch ms, inclusive).
    pub fn new(labels_as_of: u64) -> Self {
        let mut schema = EventSchema::default();
        let ty = schema.ty(LABEL_TYPE.as_str());
        let fields = [
            schema.field("subject_event_id"),
            schema.field("label"),
            schema.field("effective_ts"),
            schema.field("observed_ts"),
        ];
        LabelBook {
            as_of: labels_as_of,
            schema,
            ty,
            fields,
            best: BTreeMap::new(),
            seen: 0,
            after_cutoff: 0,
        }
    }

    /// Offers an admitted event. A label assertion whose envelope is not the canonical one IG
    /// writes is an error (the archive was not written by IG).
    pub fn offer(&mut self, a: &Admitted) -> Result<Offer, String> {
        if a.event_type != LABEL_TYPE {
            return Ok(Offer::NotALabel);
        }
        let bad = || {
            format!(
                "label assertion {} has a non-canonical envelope",
                a.event_id
            )
        };
        let e = Event::parse(a, &self.schema).ok_or_else(bad)?;
        if !e.is(self.ty) {
            return Err(bad());
        }
        let [subject, label, effective, observed] = self.fields;
        let subject = e.field(subject).ok_or_else(bad)?;
        let label = e.field(label).and_then(LabelValue::parse).ok_or_else(bad)?;
        let effective_ms = e
            .field(effective)
            .and_then(parse_rfc3339_millis)
            .ok_or_else(bad)?;
        let observed_ms = e
            .field(observed)
            .and_then(parse_rfc3339_millis)
            .ok_or_else(bad)?;
        self.seen += 1;
        if observed_ms > self.as_of {
            self.after_cutoff += 1;
            return Ok(Offer::AfterCutoff);
        }
        let candidate = KnownLabel {
            label,
            effective_ms,
            observed_ms,
            assertion_id: a.event_id.clone(),
        };
        let rank = |k: &KnownLabel| (k.observed_ms, k.effective_ms, k.assertion_id.clone());
        match self.best.get_mut(subject) {
            Some(cur) if rank(cur) >= rank(&candidate) => {}
            Some(cur) => *cur = candidate,
            None => {
                self.best.insert(subject.to_owned(), candidate);
            }
        }
        Ok(Offer::Considered)
    }

    /// The label of `event_id` as known at the cut-off.
    pub fn get(&self, event_id: &str) -> Option<&KnownLabel> {
        self.best.get(event_id)
    }

    /// Assertions seen, and how many of them were observed after the cut-off.
    pub fn counts(&self) -> (u64, u64) {
        (self.seen, self.after_cutoff)
    }

    /// Subjects with a label as of the cut-off.
    pub fn len(&self) -> usize {
        self.best.len()
    }

    /// True when no subject has a label.
    pub fn is_empty(&self) -> bool {
        self.best.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_operators::SourceCoord;

    fn assertion(id: &str, subject: &str, label: &str, eff: &str, obs: &str) -> Admitted {
        Admitted {
            logical_time: 1,
            event_id: id.into(),
            event_type: LABEL_TYPE,
            coord: SourceCoord {
                partition: 0,
                offset: 0,
            },
            partition_key: String::new(),
            record_ts: 0,
            late_clamped: false,
            envelope: format!(
                r#"{{"payload":{{"account_id":"a","effective_ts":"{eff}","label":"{label}","observed_ts":"{obs}","source":"s","subject_event_id":"{subject}"}},"ts_utc":"{obs}"}}"#
            ),
        }
    }

    #[test]
    fn latest_observation_wins_then_effective_then_id() {
        let mut b = LabelBook::new(parse_rfc3339_millis("2026-01-02T00:00:00Z").unwrap_or(0));
        let t = |h: u32| format!("2026-01-01T{h:02}:00:00Z");
        for a in [
            assertion("l1", "e1", "fraud", &t(1), &t(2)),
            assertion("l2", "e1", "legit", &t(1), &t(5)),
            assertion("l3", "e2", "fraud", &t(1), &t(3)),
            assertion("l9", "e2", "legit", &t(1), &t(3)),
            assertion("l4", "e3", "legit", &t(1), "2026-01-03T00:00:00Z"),
        ] {
            b.offer(&a).expect("canonical");
        }
        assert_eq!(b.get("e1").map(|k| k.label), Some(LabelValue::Legit));
        // Equal observed and effective: the greater assertion id wins.
        assert_eq!(b.get("e2").map(|k| k.assertion_id.as_str()), Some("l9"));
        // Observed after the cut-off: unknown.
        assert!(b.get("e3").is_none());
        assert_eq!(b.counts(), (5, 1));
        let mut bad = assertion("x", "e4", "maybe", &t(1), &t(1));
        assert!(b.offer(&bad).is_err());
        bad.event_type = EventType::Authorization;
        assert_eq!(b.offer(&bad), Ok(Offer::NotALabel));
    }
}
