//! Governance facts (SPEC §10, §11): what was decided about the data, recorded under `gov/` and
//! published as `gov.fact.v1` on `fp.bus.control.v1` when a broker is configured.
//!
//! Facts are write-once JSON objects at paths named by their subject, never by time:
//! `gov/policy/rev=<sha256(policy_rev)[..16]>.json` (a decision policy revision activated
//! under the root), `gov/backfills/<id>/declaration.json` and `…/receipt.json`. A fact's
//! `recorded_at` is the wall-clock time of the act; everything else in it is a function of
//! what was decided, so repeating an act finds its fact and changes nothing. `gov list` orders
//! facts by `(recorded_at, path)`.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use tidemark_operators::hashing::sha256_hex;
use tidemark_sinks::kafka::KafkaProducer;
use tidemark_sinks::WriteOnceStore;
use tidemark_sources::KafkaConn;

use crate::wallclock;

/// Format identifier of a stored fact.
pub const GOV_FORMAT: &str = "tidemark.gov.fact/v1";

/// The topic facts are published on.
pub const CONTROL_TOPIC: &str = "fp.bus.control.v1";

/// What a fact records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GovKind {
    /// A decision policy revision was used under this root for the first time.
    #[serde(rename = "policy.activated")]
    PolicyActivated,
    /// A backfill was declared.
    #[serde(rename = "backfill.declared")]
    BackfillDeclared,
    /// A backfill ran to completion.
    #[serde(rename = "backfill.completed")]
    BackfillCompleted,
}

impl GovKind {
    /// The `kind` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            GovKind::PolicyActivated => "policy.activated",
            GovKind::BackfillDeclared => "backfill.declared",
            GovKind::BackfillCompleted => "backfill.completed",
        }
    }
}

/// A governance fact as stored under `gov/`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovFact {
    /// [`GOV_FORMAT`].
    pub format: String,
    /// What it records.
    pub kind: GovKind,
    /// What it is about: a policy revision or a backfill id.
    pub subject: String,
    /// When the act happened (RFC 3339, wall clock).
    pub recorded_at: String,
    /// Kind-specific content.
    pub detail: serde_json::Value,
}

impl GovFact {
    /// A fact recorded now.
    pub fn now(kind: GovKind, subject: &str, detail: serde_json::Value) -> Self {
        GovFact {
            format: GOV_FORMAT.to_owned(),
            kind,
            subject: subject.to_owned(),
            recorded_at: wallclock::now_rfc3339(),
            detail,
        }
    }

    /// Canonical bytes: pretty JSON and a trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// True when `other` records the same act (everything but `recorded_at` equal).
    pub fn same_act(&self, other: &GovFact) -> bool {
        (self.kind, &self.subject, &self.detail) == (other.kind, &other.subject, &other.detail)
    }

    /// The `gov.fact.v1` envelope (SPEC §4) that publishes this fact. Its `event_id` is a hash
    /// of the act (not of the time), so a republished fact is recognisable as the same one.
    pub fn envelope(&self) -> serde_json::Value {
        let act = serde_json::to_vec(&(self.kind, &self.subject, &self.detail)).unwrap_or_default();
        serde_json::json!({
            "event_id": format!("gov-{}", &sha256_hex(&act)[..32]),
            "event_type": "gov.fact.v1",
            "ts_utc": self.recorded_at,
            "manifest_fingerprint": sha256_hex(&self.to_bytes()),
            "schema_version": 1,
            "producer": "governance",
            "payload": {
                "kind": self.kind.as_str(),
                "detail": {"subject": self.subject, "fact": self.detail},
            },
        })
    }
}

/// What [`record`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// The fact was written.
    Written,
    /// The same act was already recorded: nothing written.
    Existing,
}

/// Writes `fact` at `path` unless the same act is already there; a different act at the same
/// path is an error (a conflicting declaration under one id).
pub fn record(store: &WriteOnceStore, path: &str, fact: &GovFact) -> Result<Recorded> {
    if let Some(existing) = read(store, path)? {
        if existing.same_act(fact) {
            return Ok(Recorded::Existing);
        }
        bail!(
            "{path} already records a different {} for {}: a conflicting fact under the same id is refused",
            existing.kind.as_str(),
            existing.subject
        );
    }
    store.put_once(path, fact.to_bytes())?;
    Ok(Recorded::Written)
}

/// Reads one fact.
pub fn read(store: &WriteOnceStore, path: &str) -> Result<Option<GovFact>> {
    match store.get(path) {
        Ok(bytes) => {
            Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("unreadable governance fact {path}")
            })?))
        }
        Err(tidemark_sinks::SinkError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Every fact under `gov/`, ordered by `(recorded_at, path)`.
pub fn list(store: &WriteOnceStore) -> Result<Vec<(String, GovFact)>> {
    let mut out = Vec::new();
    for p in store.list("gov")? {
        if p.ends_with(".json") {
            if let Some(f) = read(store, &p)? {
                out.push((p, f));
            }
        }
    }
    out.sort_by(|a, b| (&a.1.recorded_at, &a.0).cmp(&(&b.1.recorded_at, &b.0)));
    Ok(out)
}

/// Publishes facts on [`CONTROL_TOPIC`] (keyed `gov.fact/<subject>`) and waits for the
/// broker's acknowledgement.
pub fn publish(conn: &KafkaConn, facts: &[&GovFact]) -> Result<()> {
    let producer = KafkaProducer::new(&conn.client_config())?;
    for f in facts {
        let payload = serde_json::to_vec(&f.envelope())?;
        let mut key = tidemark_sinks::kafka::GOV_FACT_KEY_PREFIX.to_vec();
        key.extend_from_slice(f.subject.as_bytes());
        producer.send(CONTROL_TOPIC, None, &key, &payload, None)?;
    }
    producer
        .finish(Duration::from_secs(30))
        .map_err(|e| anyhow!("governance facts not delivered to {CONTROL_TOPIC}: {e}"))?;
    Ok(())
}

/// The path of a policy activation fact.
pub fn policy_path(policy_rev: &str) -> String {
    format!(
        "gov/policy/rev={}.json",
        &sha256_hex(policy_rev.as_bytes())[..16]
    )
}

/// Records that a run uses `policy_rev` under this root, if no run did before: a
/// `policy.activated` fact whose `before` is the most recently activated revision. The fact is
/// handed to `publish` before it is written, so a failure in between publishes it again on the
/// next run (at least once, with the same `event_id`). Returns the fact when it is new.
pub fn activate_policy(
    store: &WriteOnceStore,
    policy_rev: &str,
    profile: &str,
    publish: impl FnOnce(&GovFact) -> Result<()>,
) -> Result<Option<GovFact>> {
    let path = policy_path(policy_rev);
    if read(store, &path)?.is_some() {
        return Ok(None);
    }
    let before = list(store)?
        .into_iter()
        .rfind(|(_, f)| f.kind == GovKind::PolicyActivated)
        .map(|(_, f)| f.subject);
    let fact = GovFact::now(
        GovKind::PolicyActivated,
        policy_rev,
        serde_json::json!({"before": before, "after": policy_rev, "profile": profile}),
    );
    publish(&fact)?;
    match record(store, &path, &fact)? {
        Recorded::Written => Ok(Some(fact)),
        Recorded::Existing => Ok(None),
    }
}
