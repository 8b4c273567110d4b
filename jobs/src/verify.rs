//! `tidemark verify`: archive completeness against the manifests.
//!
//! For every manifest under `archive/manifests/`: every listed file exists with its size,
//! sha256 and row count; receipt files of each partition cover the basis offset range exactly,
//! without gaps or overlaps, one receipt per offset; admitted receipts equal archive rows; and
//! no file under `archive/` or `ig/` is left unlisted. A root without a manifest (a continuous
//! run stopped, failed or still running: only commits under `ckpt/`) or whose latest run record
//! says it failed is reported as incomplete.

use std::collections::BTreeSet;

use anyhow::{Context, Result};

use tidemark_operators::hashing::sha256_hex;
use tidemark_sinks::layout::{COMMIT_PREFIX, MANIFEST_PREFIX};
use tidemark_sinks::manifest::{FileKind, Manifest};
use tidemark_sinks::parquet::{decode_receipts, row_count};
use tidemark_sinks::{SinkError, WriteOnceStore};

/// What verify found.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    /// Manifests checked.
    pub manifests: usize,
    /// Files checked.
    pub files: usize,
    /// Archive rows.
    pub archive_rows: u64,
    /// Receipts.
    pub receipts: u64,
    /// Every problem found, precise and sorted.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.manifests > 0
    }
}

/// Verifies the data root behind `store`.
pub fn verify(store: &WriteOnceStore) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let manifests = store.list(MANIFEST_PREFIX).context("listing manifests")?;
    if let Some(problem) = last_run_problem(store)? {
        report.problems.push(problem);
    }
    if manifests.is_empty() {
        let commits = store.list(COMMIT_PREFIX)?;
        report.problems.push(match commits.last() {
            Some(c) => format!(
                "incomplete: no manifest; the root's latest commit is {c}: a continuous run was stopped, failed or is still running. `tidemark run` resumes it; a bounded run (--until latest) completes it and writes the manifest"
            ),
            None => format!("no manifest under {MANIFEST_PREFIX}/ in {}", store.description()),
        });
        return Ok(report);
    }
    let mut listed = BTreeSet::new();
    for mpath in &manifests {
        report.manifests += 1;
        let bytes = store.get(mpath)?;
        let m: Manifest = match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(e) => {
                report
                    .problems
                    .push(format!("{mpath}: unreadable manifest: {e}"));
                continue;
            }
        };
        check_manifest(store, mpath, &m, &mut report, &mut listed);
    }
    for prefix in ["archive", "ig", "dla"] {
        for path in store.list(prefix)? {
            if !path.starts_with(MANIFEST_PREFIX) && !listed.contains(&path) {
                report
                    .problems
                    .push(format!("{path}: file not listed in any manifest"));
            }
        }
    }
    report.problems.sort();
    Ok(report)
}

/// The newest run record, if it says the run failed.
fn last_run_problem(store: &WriteOnceStore) -> Result<Option<String>> {
    let runs = store.list("runs")?;
    let Some(last) = runs.last() else {
        return Ok(None);
    };
    let v: serde_json::Value = match serde_json::from_slice(&store.get(last)?) {
        Ok(v) => v,
        Err(e) => return Ok(Some(format!("{last}: unreadable run record: {e}"))),
    };
    Ok(match v.get("status").and_then(|s| s.as_str()) {
        Some("failed") => Some(format!(
            "incomplete: the latest run failed ({last}): {}",
            v.get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("no error recorded")
        )),
        _ => None,
    })
}

fn check_manifest(
    store: &WriteOnceStore,
    mpath: &str,
    m: &Manifest,
    report: &mut VerifyReport,
    listed: &mut BTreeSet<String>,
) {
    let mut archive_rows = 0u64;
    let mut admitted = 0u64;
    for f in &m.files {
        listed.insert(f.path.clone());
        report.files += 1;
        let bytes = match store.get(&f.path) {
            Ok(b) => b,
            Err(SinkError::NotFound(_)) => {
                report
                    .problems
                    .push(format!("{}: missing (listed in {mpath})", f.path));
                continue;
            }
            Err(e) => {
                report.problems.push(format!("{}: unreadable: {e}", f.path));
                continue;
            }
        };
        if bytes.len() as u64 != f.bytes {
            report.problems.push(format!(
                "{}: size {} bytes, manifest says {} (truncated or altered)",
                f.path,
                bytes.len(),
                f.bytes
            ));
        }
        let sha = sha256_hex(&bytes);
        if sha != f.sha256 {
            report.problems.push(format!(
                "{}: sha256 {sha}, manifest says {}",
                f.path, f.sha256
            ));
            continue;
        }
        match row_count(bytes.clone(), &f.path) {
            Ok(n) if n == f.rows => {}
            Ok(n) => report
                .problems
                .push(format!("{}: {n} rows, manifest says {}", f.path, f.rows)),
            Err(e) => report.problems.push(format!("{}: {e}", f.path)),
        }
        match f.kind {
            FileKind::Archive => archive_rows += f.rows,
            FileKind::Receipts => {
                report.receipts += f.rows;
                match decode_receipts(bytes, &f.path) {
                    Ok(rows) => {
                        let offsets: Vec<u64> = rows.iter().map(|r| r.coord.offset).collect();
                        let expect: Vec<u64> = match (f.first_offset, f.last_offset) {
                            (Some(a), Some(b)) if a <= b => (a..=b).collect(),
                            _ => Vec::new(),
                        };
                        if offsets != expect
                            || rows.iter().any(|r| Some(r.coord.partition) != f.partition)
                        {
                            report.problems.push(format!(
                                "{}: receipts do not cover offsets {:?}..={:?} of partition {:?} exactly once",
                                f.path, f.first_offset, f.last_offset, f.partition
                            ));
                        }
                        admitted += rows
                            .iter()
                            .filter(|r| {
                                r.status == tidemark_operators::ingest::ReceiptStatus::Admitted
                            })
                            .count() as u64;
                    }
                    Err(e) => report.problems.push(format!("{}: {e}", f.path)),
                }
            }
            FileKind::Quarantine | FileKind::Audit | FileKind::Dataset => {}
        }
    }
    report.archive_rows += archive_rows;
    if admitted != archive_rows {
        report.problems.push(format!(
            "{mpath}: {admitted} ADMITTED receipts but {archive_rows} archive rows"
        ));
    }
    for b in &m.basis {
        let mut chunks: Vec<(u64, u64)> = m
            .files
            .iter()
            .filter(|f| f.kind == FileKind::Receipts && f.partition == Some(b.partition))
            .filter_map(|f| Some((f.first_offset?, f.last_offset?)))
            .collect();
        chunks.sort_unstable();
        let mut next = b.start;
        for (lo, hi) in &chunks {
            if *lo != next {
                report.problems.push(format!(
                    "{mpath}: partition {} receipts jump from offset {next} to {lo} (gap or overlap)",
                    b.partition
                ));
            }
            next = hi + 1;
        }
        if next != b.end {
            report.problems.push(format!(
                "{mpath}: partition {} receipts end at offset {next}, basis end is {}",
                b.partition, b.end
            ));
        }
    }
}
