//! DLA files: audit records as Parquet under `dla/audit/`, snapshot records as JSON under
//! `ofp/snapshots/`.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, StringArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use tidemark_operators::decision::{AuditRecord, SnapshotRecord};
use tidemark_operators::{Failures, IntervalChunk, LogicalTime};

use crate::error::SinkError;
use crate::manifest::{FileEntry, FileKind};
use crate::parquet::{col, encode_columns, read_batches};
use crate::store::WriteOnceStore;
use crate::writers::{write_closed, ClosedFormat};

/// `dla/audit/t=<interval start ms, 16 digits>/bucket=<b, 3 digits>.parquet`
pub fn audit_file(interval_start: u64, bucket: u32) -> String {
    format!("dla/audit/t={interval_start:016}/bucket={bucket:03}.parquet")
}

/// `ofp/snapshots/t=<T, 16 digits>.json`
pub fn snapshot_file(time: u64) -> String {
    format!("ofp/snapshots/t={time:016}.json")
}

const STR_COLS: [&str; 18] = [
    "event_id",
    "decision_id",
    "trace_id",
    "ts_utc",
    "decision",
    "reasons",
    "features",
    "feature_snapshot_hash",
    "bundle_id",
    "bundle_version",
    "bundle_digest",
    "policy_rev",
    "graph_version",
    "posture",
    "degrade_mask",
    "run_id",
    "scenario_id",
    "action_intents",
];

fn str_col(r: &AuditRecord, i: usize) -> &str {
    match i {
        0 => &r.event_id,
        1 => &r.decision_id,
        2 => &r.trace_id,
        3 => &r.ts_utc,
        4 => r.decision.as_str(),
        5 => &r.reasons,
        6 => &r.features,
        7 => &r.feature_snapshot_hash,
        8 => r.bundle_id.as_ref(),
        9 => r.bundle_version.as_ref(),
        10 => r.bundle_digest.as_ref(),
        11 => r.policy_rev.as_ref(),
        12 => &r.graph_version,
        13 => r.posture.as_str(),
        14 => &r.degrade_mask,
        15 => &r.run_id,
        16 => &r.scenario_id,
        _ => &r.action_intents,
    }
}

/// Schema of audit files.
pub fn audit_schema() -> SchemaRef {
    let mut fields = vec![Field::new("logical_time", DataType::UInt64, false)];
    fields.extend(
        STR_COLS
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, false)),
    );
    fields.push(Field::new("score", DataType::Float64, false));
    fields.push(Field::new("source_partition", DataType::UInt32, false));
    fields.push(Field::new("source_offset", DataType::UInt64, false));
    fields.push(Field::new("source_record_ts", DataType::UInt64, false));
    fields.push(Field::new("bucket", DataType::UInt32, false));
    Arc::new(Schema::new(fields))
}

/// Encodes sorted audit records.
pub fn encode_audit(rows: &[AuditRecord], path: &str) -> Result<Vec<u8>, SinkError> {
    encode_columns(audit_schema(), audit_columns(rows), path)
}

/// The audit columns of `rows`.
pub fn audit_columns(rows: &[AuditRecord]) -> Vec<ArrayRef> {
    let mut cols: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from_iter_values(
        rows.iter().map(|r| r.logical_time),
    ))];
    for i in 0..STR_COLS.len() {
        cols.push(Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| str_col(r, i)),
        )));
    }
    cols.push(Arc::new(Float64Array::from_iter_values(
        rows.iter().map(|r| r.score),
    )));
    cols.push(Arc::new(UInt32Array::from_iter_values(
        rows.iter().map(|r| r.source_partition),
    )));
    cols.push(Arc::new(UInt64Array::from_iter_values(
        rows.iter().map(|r| r.source_offset),
    )));
    cols.push(Arc::new(UInt64Array::from_iter_values(
        rows.iter().map(|r| r.source_record_ts),
    )));
    cols.push(Arc::new(UInt32Array::from_iter_values(
        rows.iter().map(|r| r.bucket),
    )));
    cols
}

/// Decodes an audit file.
pub fn decode_audit(bytes: Bytes, path: &str) -> Result<Vec<AuditRecord>, SinkError> {
    let mut out = Vec::new();
    // The four run-wide columns share one string per distinct value, as the records the
    // pipeline makes do.
    let mut shared: [Option<Arc<str>>; 4] = Default::default();
    for b in read_batches(bytes, path)? {
        let lt = col::<UInt64Array>(&b, "logical_time", path)?;
        let sc = col::<Float64Array>(&b, "score", path)?;
        let sp = col::<UInt32Array>(&b, "source_partition", path)?;
        let so = col::<UInt64Array>(&b, "source_offset", path)?;
        let srt = col::<UInt64Array>(&b, "source_record_ts", path)?;
        let bk = col::<UInt32Array>(&b, "bucket", path)?;
        let strs = STR_COLS
            .iter()
            .map(|n| col::<StringArray>(&b, n, path))
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..b.num_rows() {
            let s = |c: usize| strs[c].value(i).to_owned();
            let mut run_wide = |c: usize| -> Arc<str> {
                let v = strs[c].value(i);
                let slot = &mut shared[c - 8];
                match slot {
                    Some(a) if a.as_ref() == v => a.clone(),
                    _ => slot.insert(Arc::from(v)).clone(),
                }
            };
            let corrupt = |e: tidemark_operators::decision::UnknownName| SinkError::Corrupt {
                path: path.to_owned(),
                message: format!("row {i}: {e}"),
            };
            out.push(AuditRecord {
                logical_time: lt.value(i),
                event_id: s(0),
                decision_id: s(1),
                trace_id: s(2),
                ts_utc: s(3),
                decision: strs[4].value(i).parse().map_err(corrupt)?,
                reasons: s(5),
                features: s(6),
                feature_snapshot_hash: s(7),
                bundle_id: run_wide(8),
                bundle_version: run_wide(9),
                bundle_digest: run_wide(10),
                policy_rev: run_wide(11),
                graph_version: s(12),
                posture: strs[13].value(i).parse().map_err(corrupt)?,
                degrade_mask: s(14),
                run_id: s(15),
                scenario_id: s(16),
                action_intents: s(17),
                score: sc.value(i),
                source_partition: sp.value(i),
                source_offset: so.value(i),
                source_record_ts: srt.value(i),
                bucket: bk.value(i),
            });
        }
    }
    Ok(out)
}

/// Writes audit files from their chunks; emits file entries.
pub fn write_audit<'scope>(
    batches: StreamVec<'scope, LogicalTime, IntervalChunk<AuditRecord>>,
    store: WriteOnceStore,
    failures: Failures,
) -> StreamVec<'scope, LogicalTime, FileEntry> {
    let format = ClosedFormat {
        name: "WriteAudit",
        kind: FileKind::Audit,
        path: Box::new(audit_file),
        schema: audit_schema(),
        columns: std::sync::Arc::new(audit_columns),
        time: |r: &AuditRecord| r.logical_time,
    };
    write_closed(batches, format, store, failures)
}

/// Canonical bytes of a snapshot record: pretty JSON with a trailing newline.
pub fn snapshot_bytes(s: &SnapshotRecord) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(s).unwrap_or_default();
    v.push(b'\n');
    v
}

/// Writes snapshot records under `ofp/snapshots/` (write-once); passes them through.
pub fn write_snapshots<'scope>(
    snapshots: StreamVec<'scope, LogicalTime, SnapshotRecord>,
    store: WriteOnceStore,
    failures: Failures,
) -> StreamVec<'scope, LogicalTime, SnapshotRecord> {
    snapshots.unary(
        Exchange::new(|_: &SnapshotRecord| 0),
        "WriteSnapshots",
        move |_cap, _info| {
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    let mut session = output.session(&cap);
                    for batch in data {
                        for s in batch.drain(..) {
                            if let Err(e) =
                                store.put_once(&snapshot_file(s.time), snapshot_bytes(&s))
                            {
                                failures.push(e.to_string());
                            }
                            session.give(s);
                        }
                    }
                });
            }
        },
    )
}
