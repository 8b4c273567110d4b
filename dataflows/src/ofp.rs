//! OFP — the Online Feature Plane (SPEC §7): feature definitions and their window inputs.
//!
//! For an event at `t` with key `k`, a feature aggregates the admitted events `x` of its listed
//! types with `x.key == k` (and the optional filter) and `t - window <= x.logical_time < t`.
//! The windows themselves are [`tidemark_operators::keyed::KeyedWindows`].

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use tidemark_operators::hashing::stable_hash;
use tidemark_operators::keyed::{WindowInput, WindowSpec};
use tidemark_operators::time::millis;
use tidemark_operators::window::{Agg, Value};

use crate::event::Event;

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

/// Key of a feature window: (feature index, key value).
pub type FeatureKey = (u16, String);

/// The [`WindowSpec`] of a set of feature definitions.
#[derive(Clone, Debug)]
pub struct FeatureSpec {
    defs: Arc<Vec<FeatureDef>>,
}

impl FeatureSpec {
    /// Wraps feature definitions.
    pub fn new(defs: Arc<Vec<FeatureDef>>) -> Self {
        FeatureSpec { defs }
    }

    /// The definitions.
    pub fn defs(&self) -> &[FeatureDef] {
        &self.defs
    }

    /// Window contributions of `e` (one per matching feature).
    pub fn contributions<Q>(&self, e: &Event, out: &mut Vec<WindowInput<FeatureKey, Q>>) {
        for (i, d) in self.defs.iter().enumerate() {
            if !d.event_types.contains(&e.event_type) {
                continue;
            }
            if let Some((f, v)) = d.filter.as_deref().and_then(|f| f.split_once('=')) {
                if e.field(f) != Some(v) {
                    continue;
                }
            }
            let Some(key) = e.field(&d.key) else { continue };
            let value = match (d.agg, d.value.as_deref()) {
                (Agg::Count | Agg::LastGap, _) => Value::Unit,
                (Agg::DistinctCount, Some(f)) => match e.field(f) {
                    Some(v) => Value::Str(v.to_owned()),
                    None => continue,
                },
                (_, Some(f)) => match e.int(f) {
                    Some(v) => Value::Int(v),
                    None => continue,
                },
                (_, None) => continue,
            };
            out.push(WindowInput::Add {
                key: (i as u16, key.to_owned()),
                time: e.time,
                value,
            });
        }
    }

    /// Point-in-time queries for a decision event `e`: one per feature whose key field `e` has.
    pub fn queries<Q: Clone>(
        &self,
        e: &Event,
        tag: impl Fn(u16) -> Q,
        out: &mut Vec<WindowInput<FeatureKey, Q>>,
    ) {
        for (i, d) in self.defs.iter().enumerate() {
            if let Some(key) = e.field(&d.key) {
                out.push(WindowInput::Query {
                    key: (i as u16, key.to_owned()),
                    time: e.time,
                    tag: tag(i as u16),
                });
            }
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

/// 128-bit digest of a canonical byte string: the first 16 bytes of its BLAKE3 hash, little
/// endian. State digests are wrapping sums of these.
pub fn digest128(bytes: &[u8]) -> u128 {
    let h = blake3::hash(bytes);
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.as_bytes()[..16]);
    u128::from_le_bytes(b)
}

impl WindowSpec<FeatureKey> for FeatureSpec {
    fn spec(&self, key: &FeatureKey) -> (Agg, u64) {
        match self.defs.get(key.0 as usize) {
            Some(d) => (d.agg, millis(d.window)),
            None => (Agg::Count, 0),
        }
    }

    /// Canonical encoding: `feature name 0x1F key 0x1F value (decimal)`.
    fn digest(&self, key: &FeatureKey, value: i64) -> u128 {
        let name = self
            .defs
            .get(key.0 as usize)
            .map_or("", |d| d.name.as_str());
        digest128(format!("{name}\u{1f}{}\u{1f}{value}", key.1).as_bytes())
    }

    fn route(&self, key: &FeatureKey) -> u64 {
        stable_hash(key.1.as_bytes()) ^ u64::from(key.0).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}
