//! The Ingestion Gate policy section of a profile (`[ig]`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::signing::SigningPolicy;

/// What to do with a record whose event time is below its watermark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    /// Quarantine with reason `LATE_EVENT` (default).
    #[default]
    Quarantine,
    /// Admit at logical time `W_p`, flagged `late_clamped`.
    Clamp,
}

/// IG policy: validation limits, producer allowlists, lateness and dedup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IgPolicy {
    /// Revision number of this policy section; cited in `policy_rev`. Default 1.
    pub revision: u32,
    /// `W_p = max_p - allowed_lateness`. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// `quarantine` (default) or `clamp`.
    pub late_policy: LatePolicy,
    /// Quarantine `CLOCK_SKEW` when event time > record timestamp + this. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Quarantine `CLOCK_SKEW` when event time < record timestamp - this. Default `1h`.
    #[serde(with = "humantime_serde")]
    pub max_past_skew: Duration,
    /// The largest `amount_minor` admitted (`BAD_VALUE` above it or below 0).
    /// Default 10_000_000_000 (100 million in a two-decimal currency).
    pub max_amount_minor: i64,
    /// Dedup window over logical time. Default `24h`.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// A partition silent for this long (wall clock) stops holding the frontier. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Records larger than this many bytes are `PAYLOAD_TOO_LARGE`. Default 16384.
    pub max_record_bytes: usize,
    /// Supported `schema_version` values. Default `[1]`.
    pub schema_versions: Vec<i64>,
    /// Allowed producers per event type; an event type without an entry admits no producer.
    pub producers: BTreeMap<String, Vec<String>>,
    /// Producer signatures (`[ig.signing]`); off by default.
    pub signing: SigningPolicy,
}

impl Default for IgPolicy {
    fn default() -> Self {
        let producers = [
            ("txn.authorization.v1", vec!["card-switch"]),
            ("account.login.v1", vec!["auth-service"]),
            ("account.profile_change.v1", vec!["account-service"]),
            ("label.assertion.v1", vec!["case-mgmt", "chargeback-feed"]),
            ("dl.posture.v1", vec!["degrade-ladder"]),
            ("gov.fact.v1", vec!["governance"]),
        ]
        .into_iter()
        .map(|(t, ps)| (t.to_owned(), ps.into_iter().map(str::to_owned).collect()))
        .collect();
        IgPolicy {
            revision: 1,
            allowed_lateness: Duration::from_secs(5),
            late_policy: LatePolicy::Quarantine,
            max_future_skew: Duration::from_secs(300),
            max_past_skew: Duration::from_secs(3600),
            max_amount_minor: 10_000_000_000,
            dedup_window: Duration::from_secs(24 * 3600),
            idle_timeout: Duration::from_secs(30),
            max_record_bytes: 16 * 1024,
            schema_versions: vec![1],
            producers,
            signing: SigningPolicy::default(),
        }
    }
}

impl IgPolicy {
    /// Whether `producer` may send `event_type`.
    pub fn producer_allowed(&self, event_type: &str, producer: &str) -> bool {
        self.producers
            .get(event_type)
            .is_some_and(|ps| ps.iter().any(|p| p == producer))
    }
}
