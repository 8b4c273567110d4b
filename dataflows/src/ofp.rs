//! OFP — the Online Feature Plane (SPEC §7): feature definitions and their window inputs.
//!
//! For an event at `t` with key `k`, a feature aggregates the admitted events `x` of its listed
//! types with `x.key == k` (and the optional filter) and `t - window <= x.logical_time < t`.
//! Features keyed by the same payload field form one window group (one state and one message
//! per key value and event); the windows themselves are
//! [`tidemark_operators::keyed::KeyedWindows`].

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use tidemark_operators::hashing::{key_id, state_digest};
use tidemark_operators::keyed::{GroupInput, KeyId, WindowSpec};
use tidemark_operators::time::millis;
use tidemark_operators::window::{Agg, Value};

use crate::event::{Event, EventSchema, FieldId, TypeId};

/// One feature definition (`[[features]]` in a profile).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureDef {
    /// Unique name.
    pub name: String,
    /// Event types that contribute.
    pub event_types: Vec<String>,
    /// Payload field that keys the aggregate.
    pub key: String,
    /// count | sum | min | max | distinct_count | last_gap.
    pub agg: Agg,
    /// Payload field aggregated (sum, min, max: integer; distinct_count: any).
    #[serde(default)]
    pub value: Option<String>,
    /// Window over logical time.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Optional `field=value` filter on contributing events (e.g. `success=false`).
    #[serde(default)]
    pub filter: Option<String>,
}

/// OFP policy section (`[ofp]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OfpPolicy {
    /// Revision of the feature definitions. Default 1.
    pub revision: u32,
    /// Snapshot boundaries every this much logical time. Default `10m`.
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
}

impl Default for OfpPolicy {
    fn default() -> Self {
        OfpPolicy {
            revision: 1,
            snapshot_interval: Duration::from_secs(600),
        }
    }
}

/// Checks feature definitions; returns a message for the first problem.
pub fn validate_features(defs: &[FeatureDef]) -> Result<(), String> {
    let mut names = std::collections::BTreeSet::new();
    for d in defs {
        if !names.insert(d.name.as_str()) {
            return Err(format!("feature {} defined twice", d.name));
        }
        let needs_value = matches!(d.agg, Agg::Sum | Agg::Min | Agg::Max | Agg::DistinctCount);
        if needs_value && d.value.is_none() {
            return Err(format!(
                "feature {}: agg {:?} needs a value field",
                d.name, d.agg
            ));
        }
        if let Some(f) = &d.filter {
            if !f.contains('=') {
                return Err(format!("feature {}: filter must be field=value", d.name));
            }
        }
        if d.event_types.is_empty() {
            return Err(format!("feature {}: no event_types", d.name));
        }
    }
    Ok(())
}

/// How one feature reads an event: resolved against the [`EventSchema`] once.
#[derive(Clone, Debug)]
struct Reader {
    types: Vec<TypeId>,
    filter: Option<(FieldId, String)>,
    value: Option<FieldId>,
}

/// One group of features: every feature keyed by the same payload field shares one state per
/// key value (one lookup per (key, event) serves them all).
#[derive(Clone, Debug)]
struct Group {
    /// The payload field keying the group.
    key: FieldId,
    /// How each slot reads an event.
    readers: Vec<Reader>,
    /// Feature indices (into the definitions) of the group's slots.
    features: Vec<u16>,
    /// (agg, window ms) per slot.
    slots: Vec<(Agg, u64)>,
    /// `key_id(feature name)` per slot: the feature's part of the snapshot digest.
    names: Vec<u128>,
}

/// The [`WindowSpec`] of a set of feature definitions: features grouped by key field, in
/// order of first appearance.
#[derive(Clone, Debug)]
pub struct FeatureSpec {
    defs: Arc<Vec<FeatureDef>>,
    groups: Arc<Vec<Group>>,
}

impl FeatureSpec {
    /// Groups feature definitions, registering the fields and types they read in `schema`.
    pub fn new(defs: Arc<Vec<FeatureDef>>, schema: &mut EventSchema) -> Self {
        let mut groups: Vec<Group> = Vec::new();
        for (i, d) in defs.iter().enumerate() {
            let key = schema.field(&d.key);
            let g = match groups.iter().position(|g| g.key == key) {
                Some(g) => g,
                None => {
                    groups.push(Group {
                        key,
                        readers: Vec::new(),
                        features: Vec::new(),
                        slots: Vec::new(),
                        names: Vec::new(),
                    });
                    groups.len() - 1
                }
            };
            let g = &mut groups[g];
            g.readers.push(Reader {
                types: d.event_types.iter().map(|t| schema.ty(t)).collect(),
                filter: d
                    .filter
                    .as_deref()
                    .and_then(|f| f.split_once('='))
                    .map(|(f, v)| (schema.field(f), v.to_owned())),
                value: d.value.as_deref().map(|v| schema.field(v)),
            });
            g.features.push(i as u16);
            g.slots.push((d.agg, millis(d.window)));
            g.names.push(key_id(d.name.as_bytes()));
        }
        FeatureSpec {
            defs,
            groups: Arc::new(groups),
        }
    }

    /// The definitions.
    pub fn defs(&self) -> &[FeatureDef] {
        &self.defs
    }

    /// The feature indices of `group`'s slots (what a [`GroupAnswer`](tidemark_operators::keyed::GroupAnswer)'s values are).
    pub fn group_features(&self, group: u16) -> &[u16] {
        self.groups
            .get(group as usize)
            .map_or(&[], |g| g.features.as_slice())
    }

    /// The window inputs of `e`: per group whose key field `e` has, one [`GroupInput`] with
    /// its contributions (features whose event types and filter match) and, when `query` is
    /// given, a query of every feature of the group.
    pub fn inputs<Q: Clone>(&self, e: &Event, query: Option<Q>, out: &mut Vec<GroupInput<Q>>) {
        for (gi, g) in self.groups.iter().enumerate() {
            let Some(key) = e.field(g.key) else {
                continue;
            };
            let mut adds = Vec::new();
            for (slot, (r, (agg, _))) in g.readers.iter().zip(&g.slots).enumerate() {
                if !e.kind.is_some_and(|k| r.types.contains(&k)) {
                    continue;
                }
                if let Some((f, v)) = &r.filter {
                    if e.field(*f) != Some(v.as_str()) {
                        continue;
                    }
                }
                let value = match (*agg, r.value) {
                    (Agg::Count | Agg::LastGap, _) => Value::Unit,
                    (Agg::DistinctCount, Some(f)) => match e.field(f) {
                        Some(v) => Value::Id(key_id(v.as_bytes())),
                        None => continue,
                    },
                    (_, Some(f)) => match e.int(f) {
                        Some(v) => Value::Int(v),
                        None => continue,
                    },
                    (_, None) => continue,
                };
                adds.push((slot as u16, value));
            }
            if adds.is_empty() && query.is_none() {
                continue;
            }
            out.push(GroupInput {
                group: gi as u16,
                key: key_id(key.as_bytes()),
                time: e.time,
                adds,
                query: query.clone(),
            });
        }
    }

    /// The longest feature window (ms).
    pub fn max_window_ms(&self) -> u64 {
        self.defs
            .iter()
            .map(|d| millis(d.window))
            .max()
            .unwrap_or(0)
    }
}

impl WindowSpec for FeatureSpec {
    fn slots(&self, group: u16) -> &[(Agg, u64)] {
        self.groups
            .get(group as usize)
            .map_or(&[], |g| g.slots.as_slice())
    }

    /// Canonical encoding (docs/hashing.md): `state_digest(key_id(feature name), key id,
    /// state)`, where the key id is `key_id(key value)` and the state is the aggregate (the
    /// latest contribution time for last_gap).
    fn digest(&self, group: u16, slot: u16, key: KeyId, state: i64) -> u128 {
        let name = self
            .groups
            .get(group as usize)
            .and_then(|g| g.names.get(slot as usize))
            .copied()
            .unwrap_or(0);
        state_digest(name, key, state)
    }
}
