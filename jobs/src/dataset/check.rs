//! Reading a dataset back in row order and checking it: the dataset hash and statistics, and
//! the zero-skew comparison of every row with the online audit record of the same decision.

use std::collections::VecDeque;

use anyhow::{anyhow, Context, Result};

use tidemark_operators::dataset::DatasetRow;
use tidemark_operators::decision::AuditRecord;
use tidemark_sinks::audit::decode_audit;
use tidemark_sinks::dataset::{DatasetHasher, DatasetLayout};
use tidemark_sinks::{SinkError, WriteOnceStore};

use super::manifest::{Certificate, DatasetStats};
use crate::replay::path_time;

type Batches = Box<dyn Iterator<Item = Result<Vec<DatasetRow>, SinkError>>>;

/// The rows of several bucket files, each sorted, merged into `(logical_time, event_id)` order.
pub struct MergedRows {
    sources: Vec<(Batches, VecDeque<DatasetRow>)>,
}

impl MergedRows {
    /// Opens `paths` (dataset files of `layout`) in `store`.
    pub fn open(store: &WriteOnceStore, paths: &[String], layout: &DatasetLayout) -> Result<Self> {
        let mut sources = Vec::new();
        for p in paths {
            let bytes = store.get(p)?;
            let batches: Batches = Box::new(layout.decode(bytes, p)?);
            sources.push((batches, VecDeque::new()));
        }
        Ok(MergedRows { sources })
    }
}

impl Iterator for MergedRows {
    type Item = Result<DatasetRow>;

    fn next(&mut self) -> Option<Self::Item> {
        for (batches, head) in &mut self.sources {
            while head.is_empty() {
                match batches.next() {
                    Some(Ok(rows)) => head.extend(rows),
                    Some(Err(e)) => return Some(Err(e.into())),
                    None => break,
                }
            }
        }
        let best = self
            .sources
            .iter()
            .enumerate()
            .filter_map(|(i, (_, head))| head.front().map(|r| (r.key(), i)))
            .min()
            .map(|(_, i)| i);
        best.and_then(|b| self.sources[b].1.pop_front()).map(Ok)
    }
}

/// The audit records of `[from, to)` under `store`, in `(logical_time, event_id)` order, one
/// audit interval decoded at a time.
pub struct AuditRows {
    store: WriteOnceStore,
    intervals: VecDeque<Vec<String>>,
    current: VecDeque<AuditRecord>,
    from: u64,
    to: u64,
}

impl AuditRows {
    /// Lists the audit files of the range (none when the root has no audit).
    pub fn open(store: &WriteOnceStore, from: u64, to: u64) -> Result<Self> {
        let mut by_interval: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
        for p in store.list("dla/audit")? {
            let t = path_time(&p).unwrap_or(0);
            if t < to {
                by_interval.entry(t).or_default().push(p);
            }
        }
        Ok(AuditRows {
            store: store.clone(),
            intervals: by_interval.into_values().collect(),
            current: VecDeque::new(),
            from,
            to,
        })
    }

    /// Whether the root has any audit file in the range.
    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }
}

impl Iterator for AuditRows {
    type Item = Result<AuditRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.current.is_empty() {
            let paths = self.intervals.pop_front()?;
            let mut rows = Vec::new();
            for p in &paths {
                let bytes = match self.store.get(p) {
                    Ok(b) => b,
                    Err(e) => return Some(Err(e.into())),
                };
                match decode_audit(bytes, p) {
                    Ok(r) => rows.extend(
                        r.into_iter()
                            .filter(|r| r.logical_time >= self.from && r.logical_time < self.to),
                    ),
                    Err(e) => return Some(Err(e.into())),
                }
            }
            rows.sort();
            self.current = rows.into();
        }
        self.current.pop_front().map(Ok)
    }
}

/// What DF used, read back from an audit record's `features` column: `[[name, value|null], …]`.
fn audit_features(a: &AuditRecord) -> Result<Vec<(String, Option<i64>)>> {
    serde_json::from_str(&a.features)
        .with_context(|| format!("audit record of {} has unreadable features", a.event_id))
}

/// The first difference between a dataset row and the audit record of the same decision, or
/// `None`. Features are compared by name (every feature the audit record carries); the
/// decision id only when the decision policy revisions are equal.
pub fn row_difference(
    r: &DatasetRow,
    a: &AuditRecord,
    layout: &DatasetLayout,
    same_policy: bool,
) -> Result<Option<String>> {
    let d = &r.detail;
    let at = || format!("event {} at {}", d.event_id, d.logical_time);
    let value = |name: &str| -> Option<Option<i64>> {
        match name {
            "cluster_size" => Some(d.cluster_size),
            "cluster_cards" => Some(d.cluster_cards),
            _ => layout
                .features
                .iter()
                .position(|f| f == name)
                .map(|i| d.features.get(i).copied().flatten()),
        }
    };
    for (name, online) in audit_features(a)? {
        match value(&name) {
            None => {
                return Ok(Some(format!(
                    "{}: the online decision used feature {name}, which the dataset lacks",
                    at()
                )))
            }
            Some(v) if v != online => {
                return Ok(Some(format!(
                    "{}: feature {name} is {v:?} in the dataset, {online:?} online",
                    at()
                )))
            }
            Some(_) => {}
        }
    }
    let mask = serde_json::to_string(&d.degrade_mask)?;
    let checks: [(&str, String, String, bool); 5] = [
        (
            "score",
            format!("{:?}", d.score),
            format!("{:?}", a.score),
            d.score.to_bits() == a.score.to_bits(),
        ),
        (
            "decision",
            d.decision.to_string(),
            a.decision.to_string(),
            d.decision == a.decision,
        ),
        (
            "posture",
            d.posture.to_string(),
            a.posture.to_string(),
            d.posture == a.posture,
        ),
        (
            "degrade_mask",
            mask.clone(),
            a.degrade_mask.clone(),
            mask == a.degrade_mask,
        ),
        (
            "decision_id",
            d.decision_id.clone(),
            a.decision_id.clone(),
            !same_policy || d.decision_id == a.decision_id,
        ),
    ];
    Ok(checks
        .into_iter()
        .find(|c| !c.3)
        .map(|(f, x, y, _)| format!("{}: {f} is {x} in the dataset, {y} online", at())))
}

/// One pass over a dataset in row order: its hash, statistics and (when `audit` is given) the
/// comparison with the online audit.
pub struct Check {
    /// Rows read.
    pub rows: u64,
    /// The dataset hash.
    pub hash: String,
    /// Statistics.
    pub stats: DatasetStats,
    /// The certificate, when an audit was compared.
    pub certificate: Option<Certificate>,
}

/// Reads `rows` (in order) once, hashing, counting and comparing with `audit`.
pub fn check_rows(
    rows: impl Iterator<Item = Result<DatasetRow>>,
    layout: &DatasetLayout,
    audit: Option<AuditRows>,
    policy_rev: &str,
    feature_rev: &str,
) -> Result<Check> {
    let mut hasher = DatasetHasher::new(layout);
    let mut stats = DatasetStats::new(layout);
    let mut audit = audit.map(|a| a.peekable());
    let mut cert = audit.as_ref().map(|_| Certificate {
        audit_rows: 0,
        rows: 0,
        mismatches: 0,
        first_difference: None,
        online_policy_rev: None,
        same_feature_revision: false,
    });
    let miss = |cert: &mut Certificate, what: String| cert.mismatch(what);
    let online_only = |cert: &mut Certificate, a: &AuditRecord| {
        cert.audit_rows += 1;
        cert.mismatch(format!(
            "event {} at {}: decided online, missing from the dataset",
            a.event_id, a.logical_time
        ));
    };
    for r in rows {
        let r = r?;
        hasher.add(&r).map_err(|e| anyhow!("dataset rows: {e}"))?;
        stats.add(&r);
        let (Some(audit), Some(cert)) = (audit.as_mut(), cert.as_mut()) else {
            continue;
        };
        cert.rows += 1;
        // Audit records before this row have no dataset row.
        loop {
            let before = match audit.peek() {
                Some(Ok(a)) => (a.logical_time, a.event_id.as_str()) < r.key(),
                Some(Err(_)) => true,
                None => false,
            };
            if !before {
                break;
            }
            if let Some(a) = audit.next() {
                online_only(cert, &a?);
            }
        }
        match audit.next_if(|a| {
            a.as_ref()
                .is_ok_and(|a| (a.logical_time, a.event_id.as_str()) == r.key())
        }) {
            Some(a) => {
                let a = a?;
                cert.audit_rows += 1;
                cert.online_policy_rev
                    .get_or_insert_with(|| a.policy_rev.to_string());
                if let Some(d) = row_difference(&r, &a, layout, *a.policy_rev == *policy_rev)? {
                    miss(cert, d);
                }
            }
            None => miss(
                cert,
                format!(
                    "event {} at {}: in the dataset, not decided online",
                    r.detail.event_id, r.detail.logical_time
                ),
            ),
        }
    }
    if let (Some(audit), Some(cert)) = (audit, cert.as_mut()) {
        for a in audit {
            online_only(cert, &a?);
        }
    }
    if let Some(c) = cert.as_mut() {
        // The feature revision is cited inside the decision policy revision.
        c.same_feature_revision = c
            .online_policy_rev
            .as_deref()
            .is_some_and(|p| p.split(',').any(|part| part == feature_rev));
    }
    stats.finish();
    let (n, hash) = hasher.finish();
    Ok(Check {
        rows: n,
        hash,
        stats,
        certificate: cert,
    })
}
