//! Timely operators that write primary truths and assemble the manifest.
//!
//! Each writer holds one capability that trails its input frontier, so downstream (the
//! commit coordinator, [`crate::commit`]) sees its file entries before the frontier passes
//! them. Failures are recorded
//! in [`Failures`] instead of panicking the worker.

use std::collections::BTreeMap;

use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use tidemark_operators::hashing::sha256_hex;
use tidemark_operators::ingest::{Admitted, Receipt, ReceiptStatus};
use tidemark_operators::{Failures, IntervalChunk, LogicalTime};

use crate::layout;
use crate::manifest::{FileEntry, FileKind, ReceiptCounts};
use crate::parquet::{
    archive_columns, archive_schema, encode_quarantine, encode_receipts, BackgroundParquet,
};
use crate::store::WriteOnceStore;

fn trail(
    cap: &mut Option<Capability<LogicalTime>>,
    frontier: &timely::progress::frontier::MutableAntichain<LogicalTime>,
) {
    if let Some(c) = cap.as_mut() {
        match frontier.frontier().iter().min() {
            Some(t) if t > c.time() => c.downgrade(t),
            Some(_) => {}
            None => *cap = None,
        }
    }
}

pub(crate) fn put(
    store: &WriteOnceStore,
    failures: &Failures,
    path: &str,
    bytes: Vec<u8>,
) -> Option<(String, u64)> {
    let sha = sha256_hex(&bytes);
    let len = bytes.len() as u64;
    match store.put_once(path, bytes) {
        Ok(_) => {
            tidemark_operators::failpoint::hit("after-file-write");
            Some((sha, len))
        }
        Err(e) => {
            failures.push(e.to_string());
            None
        }
    }
}

/// How a kind of interval file is encoded: its path, its columns, its rows' logical time.
pub struct ClosedFormat<R> {
    /// Operator name.
    pub name: &'static str,
    /// What the files hold.
    pub kind: FileKind,
    /// Path of the file for `(interval_start, bucket)`.
    pub path: Box<dyn Fn(u64, u32) -> String>,
    /// The Parquet schema.
    pub schema: arrow::datatypes::SchemaRef,
    /// The columns of sorted rows.
    pub columns: crate::parquet::Columns<R>,
    /// A row's logical time.
    pub time: fn(&R) -> LogicalTime,
}

/// One file being written: its encoder and what its entry will say.
struct OpenFile<R> {
    parquet: BackgroundParquet<R>,
    rows: u64,
    min: Option<LogicalTime>,
    max: Option<LogicalTime>,
}

/// Encodes `(interval, bucket)` files from their chunks as they arrive (a file's rows never
/// wait in memory for its interval to close) and writes each write-once when its last chunk
/// arrives; emits one [`FileEntry`] per file. Shared by the archive and the audit log.
pub fn write_closed<'scope, R: Clone + Send + 'static>(
    chunks: StreamVec<'scope, LogicalTime, IntervalChunk<R>>,
    format: ClosedFormat<R>,
    store: WriteOnceStore,
    failures: Failures,
) -> StreamVec<'scope, LogicalTime, FileEntry> {
    chunks.unary(Pipeline, format.name, move |_cap, _info| {
        let mut open: BTreeMap<(LogicalTime, u32), Option<OpenFile<R>>> = BTreeMap::new();
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                let Some(cap) = cap.retain_least(output.output_index()) else {
                    return;
                };
                let mut session = output.session(&cap);
                for c in data.flat_map(|batch| batch.drain(..)) {
                    let path = (format.path)(c.interval_start, c.bucket);
                    let slot = open.entry((c.interval_start, c.bucket)).or_insert_with(|| {
                        match BackgroundParquet::new(
                            format.schema.clone(),
                            format.columns.clone(),
                            &path,
                        ) {
                            Ok(parquet) => Some(OpenFile {
                                parquet,
                                rows: 0,
                                min: None,
                                max: None,
                            }),
                            Err(e) => {
                                failures.push(e.to_string());
                                None
                            }
                        }
                    });
                    // A file whose encoding failed is dropped (the failure is reported).
                    let Some(f) = slot.as_mut() else {
                        if c.last {
                            open.remove(&(c.interval_start, c.bucket));
                        }
                        continue;
                    };
                    f.rows += c.rows.len() as u64;
                    if let (Some(first), Some(last)) = (c.rows.first(), c.rows.last()) {
                        f.min = f.min.or(Some((format.time)(first)));
                        f.max = Some((format.time)(last));
                    }
                    if let Err(e) = f.parquet.push(c.rows) {
                        failures.push(e.to_string());
                        *slot = None;
                    }
                    if !c.last {
                        continue;
                    }
                    let Some(Some(f)) = open.remove(&(c.interval_start, c.bucket)) else {
                        continue;
                    };
                    let bytes = match f.parquet.finish() {
                        Ok(bytes) => bytes,
                        Err(e) => {
                            failures.push(e.to_string());
                            continue;
                        }
                    };
                    if let Some((sha256, len)) = put(&store, &failures, &path, bytes) {
                        session.give(FileEntry {
                            path,
                            kind: format.kind,
                            sha256,
                            bytes: len,
                            rows: f.rows,
                            min_logical_time: f.min,
                            max_logical_time: f.max,
                            partition: None,
                            first_offset: None,
                            last_offset: None,
                            counts: None,
                        });
                    }
                }
            });
        }
    })
}

/// Writes archive files from their chunks; emits one [`FileEntry`] per file.
pub fn write_archive<'scope>(
    batches: StreamVec<'scope, LogicalTime, IntervalChunk<Admitted>>,
    store: WriteOnceStore,
    failures: Failures,
) -> StreamVec<'scope, LogicalTime, FileEntry> {
    let format = ClosedFormat {
        name: "WriteArchive",
        kind: FileKind::Archive,
        path: Box::new(layout::archive_file),
        schema: archive_schema(),
        columns: std::sync::Arc::new(archive_columns),
        time: |r: &Admitted| r.logical_time,
    };
    write_closed(batches, format, store, failures)
}

fn write_receipt_chunk(
    rows: &mut [Receipt],
    store: &WriteOnceStore,
    failures: &Failures,
) -> Vec<FileEntry> {
    rows.sort();
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Vec::new();
    };
    let (p, lo, hi) = (first.coord.partition, first.coord.offset, last.coord.offset);
    let mut counts = ReceiptCounts::default();
    for r in rows.iter() {
        match r.status {
            ReceiptStatus::Admitted => counts.admitted += 1,
            ReceiptStatus::Quarantined => counts.quarantined += 1,
            ReceiptStatus::Duplicate => counts.duplicate += 1,
        }
    }
    let mut out = Vec::new();
    // The logical-time range of the chunk's candidates: a resumed run rebuilds dedup state
    // from the receipt files whose range reaches into its dedup window.
    let min_t = rows.iter().filter_map(|r| r.logical_time).min();
    let max_t = rows.iter().filter_map(|r| r.logical_time).max();
    let entry = |path: String, kind, sha256, bytes, rows, counts| FileEntry {
        path,
        kind,
        sha256,
        bytes,
        rows,
        min_logical_time: min_t,
        max_logical_time: max_t,
        partition: Some(p),
        first_offset: Some(lo),
        last_offset: Some(hi),
        counts,
    };
    let path = layout::receipts_file(p, lo, hi);
    match encode_receipts(rows, &path) {
        Ok(bytes) => {
            if let Some((sha, len)) = put(store, failures, &path, bytes) {
                out.push(entry(
                    path,
                    FileKind::Receipts,
                    sha,
                    len,
                    rows.len() as u64,
                    Some(counts),
                ));
            }
        }
        Err(e) => failures.push(e.to_string()),
    }
    let quarantined: Vec<Receipt> = rows
        .iter()
        .filter(|r| r.status == ReceiptStatus::Quarantined)
        .cloned()
        .collect();
    if !quarantined.is_empty() {
        let path = layout::quarantine_file(p, lo, hi);
        match encode_quarantine(&quarantined, &path) {
            Ok(bytes) => {
                if let Some((sha, len)) = put(store, failures, &path, bytes) {
                    out.push(entry(
                        path,
                        FileKind::Quarantine,
                        sha,
                        len,
                        quarantined.len() as u64,
                        None,
                    ));
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    out
}

/// Writes receipts (and quarantine records) per partition in chunks of `chunk` offsets:
/// chunk `k` of partition `p` covers offsets `[k*chunk, (k+1)*chunk)` and is written as soon
/// as all its receipts are in; the last, partial chunk when the input completes.
pub fn write_receipts<'scope>(
    receipts: StreamVec<'scope, LogicalTime, Receipt>,
    chunk: u64,
    store: WriteOnceStore,
    failures: Failures,
) -> StreamVec<'scope, LogicalTime, FileEntry> {
    let chunk = chunk.max(1);
    let pact = Exchange::new(|r: &Receipt| u64::from(r.coord.partition));
    receipts.unary_frontier(pact, "WriteReceipts", move |cap, _info| {
        let mut cap = Some(cap);
        let mut open: BTreeMap<(u32, u64), Vec<Receipt>> = BTreeMap::new();
        move |(input, frontier), output| {
            let mut done = Vec::new();
            input.for_each_stamp(|_cap, data| {
                for batch in data {
                    for r in batch.drain(..) {
                        let key = (r.coord.partition, r.coord.offset / chunk);
                        let rows = open.entry(key).or_default();
                        rows.push(r);
                        if rows.len() as u64 == chunk {
                            done.push(key);
                        }
                    }
                }
            });
            let finished = frontier.frontier().is_empty();
            if finished {
                done = open.keys().copied().collect();
            }
            if let Some(c) = cap.as_ref() {
                let mut session = output.session(c);
                for key in done {
                    if let Some(mut rows) = open.remove(&key) {
                        for e in write_receipt_chunk(&mut rows, &store, &failures) {
                            session.give(e);
                        }
                    }
                }
            }
            trail(&mut cap, frontier);
        }
    })
}
