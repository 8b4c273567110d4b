//! `tidemark replay`: reruns IEG → OFP → DF → DLA over the archive and compares with the run.
//!
//! The replay reads the archive files listed in the manifests of the source data root,
//! verifying each file's sha256 as it reads it (an altered archive fails the replay loudly).
//! For a range `[T0, T1)` it feeds admitted events from `T0 - max_window` (posture events from
//! the beginning: posture is the latest one at or before `t`, however old), emits decisions and
//! snapshots only for `T0 <= t < T1`, and writes under a new root only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use timely::dataflow::operators::vec::{Filter, Map};
use timely::dataflow::operators::Inspect;

use tidemark_dataflows::pipeline::{decide, needed_from};
use tidemark_operators::decision::AuditRecord;
use tidemark_operators::hashing::sha256_hex;
use tidemark_operators::time::{interval_start, millis};
use tidemark_operators::{CloseIntervals, Failures};
use tidemark_sinks::audit::{decode_audit, write_audit, write_snapshots};
use tidemark_sinks::layout::MANIFEST_PREFIX;
use tidemark_sinks::manifest::{FileEntry, FileKind, Manifest};
use tidemark_sinks::parquet::{archive_batches, row_count};
use tidemark_sinks::{Root, WriteOnceStore};
use tidemark_sources::archive::{archive_source, ArchiveReader, RowBatches};

use crate::config::Profile;
use crate::run::{decision_config, OutputStats};

/// The outcome of a replay.
#[derive(Clone, Debug)]
pub struct ReplayOutcome {
    /// Decisions by outcome.
    pub decisions: BTreeMap<String, u64>,
    /// Snapshots written.
    pub snapshots: u64,
    /// `None` for MATCH, else the first divergence.
    pub divergence: Option<String>,
    /// Audit rows compared.
    pub compared: usize,
    /// Wall seconds of the dataflow.
    pub wall_secs: f64,
}

/// The profile the latest run of `data` used (`profile_source`, else `profile`, of the newest
/// run record under `runs/`): `replay` uses it unless told otherwise.
pub fn recorded_profile(data: impl Into<Root>) -> Result<String> {
    let data: Root = data.into();
    let rt = tokio::runtime::Runtime::new()?;
    let store = WriteOnceStore::open(&data, rt.handle().clone())?;
    let runs = store.list("runs")?;
    let Some(last) = runs.last() else {
        bail!("no run record under {data}/runs: pass --profile");
    };
    let v: serde_json::Value = serde_json::from_slice(&store.get(last)?)
        .with_context(|| format!("unreadable run record {last}"))?;
    v.get("profile_source")
        .and_then(|s| s.as_str())
        .or_else(|| v.get("profile").and_then(|s| s.as_str()))
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("run record {last} names no profile: pass --profile"))
}

/// The archive files among `entries` as `(interval start, path)` (what `archive_source`
/// reads) and a reader that checks each file's sha256 against its entry before decoding (an
/// altered archive fails loudly). `entries` pairs each file with its archive interval (ms).
pub fn archive_inputs<'a>(
    entries: impl IntoIterator<Item = (&'a FileEntry, u64)>,
    store: &WriteOnceStore,
) -> (Vec<(u64, String)>, ArchiveReader) {
    let mut files = Vec::new();
    let mut digests: BTreeMap<String, String> = BTreeMap::new();
    for (f, interval_ms) in entries {
        if f.kind == FileKind::Archive {
            files.push((
                interval_start(f.min_logical_time.unwrap_or(0), interval_ms),
                f.path.clone(),
            ));
            digests.insert(f.path.clone(), f.sha256.clone());
        }
    }
    let store = store.clone();
    let reader: ArchiveReader = Arc::new(move |path: &str| {
        tidemark_operators::failpoint::hit("during-recovery");
        let bytes = store.get(path).map_err(|e| e.to_string())?;
        let sha = sha256_hex(&bytes);
        match digests.get(path) {
            Some(d) if *d == sha => {}
            Some(d) => {
                return Err(format!(
                    "sha256 {sha} does not match its manifest or commit entry ({d}): the archive was altered"
                ))
            }
            None => return Err("not listed in any manifest".into()),
        }
        let batches = archive_batches(bytes, path).map_err(|e| e.to_string())?;
        Ok(Box::new(batches.map(|b| b.map_err(|e| e.to_string()))) as RowBatches)
    });
    (files, reader)
}

/// Reads every manifest under a data root.
pub fn manifests(store: &WriteOnceStore) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for p in store.list(MANIFEST_PREFIX)? {
        let bytes = store.get(&p)?;
        out.push(
            serde_json::from_slice(&bytes).with_context(|| format!("unreadable manifest {p}"))?,
        );
    }
    if out.is_empty() {
        bail!(
            "no manifest under {MANIFEST_PREFIX}/ in {}: nothing to replay",
            store.description()
        );
    }
    Ok(out)
}

/// Replays `[from, to)` of the run in `data` into `out` with `workers` threads and compares.
pub fn replay(
    profile: &Profile,
    data: impl Into<Root>,
    out: impl Into<Root>,
    from: u64,
    to: Option<u64>,
    workers: usize,
) -> Result<ReplayOutcome> {
    let (data, out): (Root, Root) = (data.into(), out.into());
    let canonical = |r: &Root| match r {
        Root::Local(p) => p
            .canonicalize()
            .map(Root::Local)
            .unwrap_or_else(|_| r.clone()),
        s3 => s3.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let src = WriteOnceStore::open(&data, rt.handle().clone())?;
    let dst = WriteOnceStore::open(&out, rt.handle().clone())?;
    if !dst.list("")?.is_empty() {
        bail!("replay output {out} is not empty: a replay never writes over existing outputs");
    }
    if canonical(&out) == canonical(&data) {
        bail!("replay output must differ from the data root");
    }
    let ms = manifests(&src)?;
    let (files, reader) = archive_inputs(
        ms.iter()
            .flat_map(|m| m.files.iter().map(|f| (f, m.archive_interval_ms))),
        &src,
    );
    let dcfg = Arc::new(decision_config(profile, from, to)?);
    let warm = from.saturating_sub(dcfg.max_window_ms());
    let failures = Failures::default();
    let stats = OutputStats::default();
    let audit_ms = millis(profile.dla.audit_interval);
    let t0 = Instant::now();
    {
        let (failures, stats, dst) = (failures.clone(), stats.clone(), dst.clone());
        let guards = timely::execute(timely::Config::process(workers.max(1)), move |worker| {
            let (files, reader, dcfg) = (files.clone(), reader.clone(), dcfg.clone());
            worker.dataflow::<u64, _, _>(|scope| {
                let rows = archive_source(scope, files, reader, 0, to, failures.clone())
                    .filter(move |a| needed_from(a, warm));
                let outs = decide(rows, dcfg, failures.clone());
                let (st1, st2) = (stats.clone(), stats.clone());
                let audit = outs
                    .audit
                    .inspect(move |r| st1.decision(r))
                    .close_intervals("CloseAudit", audit_ms, |r| (r.logical_time, r.bucket));
                write_audit(audit, dst.clone(), failures.clone()).map(|_| ());
                write_snapshots(outs.snapshots, dst.clone(), failures.clone())
                    .inspect(move |_| st2.snapshot());
            });
        })
        .map_err(|e| anyhow!("cannot start timely workers: {e}"))?;
        for r in guards.join() {
            r.map_err(|e| anyhow!("worker failed: {e}"))?;
        }
    }
    let wall_secs = t0.elapsed().as_secs_f64();
    let errors = failures.take_sorted();
    if !errors.is_empty() {
        bail!("replay failed:\n  {}", errors.join("\n  "));
    }
    let (decisions, snapshots) = stats.take();
    let (divergence, compared) = compare(&src, &dst, from, to, audit_ms)?;
    Ok(ReplayOutcome {
        decisions,
        snapshots,
        divergence,
        compared,
        wall_secs,
    })
}

/// Every audit file under `dla/audit`, decoded: path → rows.
pub fn read_audit(store: &WriteOnceStore) -> Result<BTreeMap<String, Vec<AuditRecord>>> {
    let mut out = BTreeMap::new();
    for p in store.list("dla/audit")? {
        let bytes = store.get(&p)?;
        out.insert(p.clone(), decode_audit(bytes, &p)?);
    }
    Ok(out)
}

/// The interval start in a `…/t=<16 digits>…` path.
pub fn path_time(path: &str) -> Option<u64> {
    path.split("t=").nth(1)?.get(..16)?.parse().ok()
}

/// The first difference between two rows of the same position.
fn row_difference(x: &AuditRecord, y: &AuditRecord) -> Result<String> {
    if x.event_id != y.event_id {
        return Ok(format!(
            "run has event {} at {}, replay has event {} at {}",
            x.event_id, x.logical_time, y.event_id, y.logical_time
        ));
    }
    let ja = serde_json::to_value(x)?;
    let jb = serde_json::to_value(y)?;
    let field = ja
        .as_object()
        .and_then(|o| {
            o.iter()
                .find(|(k, v)| jb.get(k.as_str()) != Some(v))
                .map(|(k, _)| k.clone())
        })
        .unwrap_or_default();
    Ok(format!(
        "decision for event {} ({}) differs in {field}: run {} / replay {}",
        x.event_id, x.decision_id, ja[&field], jb[&field]
    ))
}

/// Compares the replay in `dst` with the run in `src` over `[from, to)`: audit rows in order,
/// byte-identical audit files for intervals inside the range, byte-identical snapshots.
///
/// Streams one audit interval at a time (rows of interval `i` all sort before those of `i+1`),
/// so memory is bounded by an interval, not by the run. An interval inside the range whose
/// files are byte-identical on both sides is counted from the Parquet footers without decoding
/// (identical bytes hold identical rows); any other is decoded and compared row by row.
pub fn compare(
    src: &WriteOnceStore,
    dst: &WriteOnceStore,
    from: u64,
    to: Option<u64>,
    audit_ms: u64,
) -> Result<(Option<String>, usize)> {
    let in_range = |t: u64| t >= from && to.is_none_or(|u| t < u);
    // Interval start → (run files, replay files).
    let mut intervals: BTreeMap<u64, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for p in src.list("dla/audit")? {
        let t = path_time(&p).unwrap_or(0);
        if t + audit_ms > from && to.is_none_or(|u| t < u) {
            intervals.entry(t).or_default().0.push(p);
        }
    }
    for p in dst.list("dla/audit")? {
        intervals
            .entry(path_time(&p).unwrap_or(0))
            .or_default()
            .1
            .push(p);
    }
    let read =
        |store: &WriteOnceStore, paths: &[String], filter: bool| -> Result<Vec<AuditRecord>> {
            let mut rows = Vec::new();
            for p in paths {
                let bytes = store.get(p)?;
                rows.extend(
                    decode_audit(bytes, p)?
                        .into_iter()
                        .filter(|r| !filter || in_range(r.logical_time)),
                );
            }
            rows.sort();
            Ok(rows)
        };
    let mut compared = 0usize;
    for (start, (paths_a, paths_b)) in &intervals {
        let inside = from <= *start && to.is_none_or(|u| start + audit_ms <= u);
        // An interval inside the range whose files are byte-identical holds identical rows:
        // count them from the footers instead of decoding both sides.
        if inside && paths_a == paths_b {
            let mut rows = 0u64;
            let mut same = true;
            for p in paths_a {
                let (x, y) = (src.get(p)?, dst.get(p)?);
                if x != y {
                    same = false;
                    break;
                }
                rows += row_count(y, p)?;
            }
            if same {
                compared += rows as usize;
                continue;
            }
        }
        let rows_a = read(src, paths_a, true)?;
        let rows_b = read(dst, paths_b, false)?;
        if let Some((x, y)) = rows_a.iter().zip(&rows_b).find(|(x, y)| x != y) {
            return Ok((Some(row_difference(x, y)?), compared + rows_a.len()));
        }
        compared += rows_a.len();
        if rows_a.len() != rows_b.len() {
            return Ok((
                Some(format!(
                    "run has {} decisions in the audit interval starting at {start}, replay has {}",
                    rows_a.len(),
                    rows_b.len()
                )),
                compared,
            ));
        }
        // Audit files whose interval lies inside the range must be byte-identical, with
        // identical names.
        if inside {
            for path in paths_b {
                match src.get(path) {
                    Ok(x) if x == dst.get(path)? => {}
                    Ok(_) => {
                        return Ok((
                            Some(format!("audit file {path} differs byte-wise")),
                            compared,
                        ))
                    }
                    Err(_) => {
                        return Ok((
                            Some(format!("audit file {path} exists only in the replay")),
                            compared,
                        ))
                    }
                }
            }
        }
    }
    let snaps_b = dst.list("ofp/snapshots")?;
    let snaps_a: Vec<String> = src
        .list("ofp/snapshots")?
        .into_iter()
        .filter(|p| path_time(p).is_some_and(in_range))
        .collect();
    if snaps_a != snaps_b {
        return Ok((
            Some(format!(
                "snapshot sets differ: run {} in range, replay {}",
                snaps_a.len(),
                snaps_b.len()
            )),
            compared,
        ));
    }
    for p in &snaps_a {
        if src.get(p)? != dst.get(p)? {
            return Ok((
                Some(format!(
                    "snapshot {p} differs (feature hash or graph_version)"
                )),
                compared,
            ));
        }
    }
    Ok((None, compared))
}

/// Finds the audit record of an event id or decision id.
pub fn find_audit(store: &WriteOnceStore, id: &str) -> Result<Option<AuditRecord>> {
    for rows in read_audit(store)?.into_values() {
        if let Some(r) = rows
            .into_iter()
            .find(|r| r.event_id == id || r.decision_id == id)
        {
            return Ok(Some(r));
        }
    }
    Ok(None)
}
