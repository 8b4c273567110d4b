//! The archive source: replays admitted events from the Parquet archive.
//!
//! Files are given as `(interval_start, path)`; worker `w` reads the files at positions
//! `i ≡ w (mod peers)` of the list sorted by (interval, path), in interval order, and holds its
//! capability at the start of the interval it is reading, so downstream frontiers advance
//! interval by interval exactly as they would online. Rows outside `[from, until)` are skipped.
//! Reading a file is delegated to a caller-supplied reader (which verifies its digest), keeping
//! this crate independent of the sinks' encodings. The reader yields a file's rows in batches
//! (each file is sorted); the files of an interval are merged batch by batch, so memory holds
//! one batch per open file, not an interval's rows.

use std::sync::Arc;

use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, StreamVec};

use tidemark_operators::ingest::Admitted;
use tidemark_operators::{Failures, LogicalTime};

/// A file's rows in sorted batches.
pub type RowBatches = Box<dyn Iterator<Item = Result<Vec<Admitted>, String>>>;

/// Opens one archive file as sorted row batches, or explains why it cannot.
pub type ArchiveReader = Arc<dyn Fn(&str) -> Result<RowBatches, String> + Send + Sync>;

/// One open file of the interval being merged: its next rows and the rest of its batches.
struct Cursor {
    path: String,
    rows: std::collections::VecDeque<Admitted>,
    rest: RowBatches,
}

impl Cursor {
    /// Refills `rows` from the next batches while empty; false when the file is exhausted.
    fn fill(&mut self, failures: &Failures) -> bool {
        while self.rows.is_empty() {
            match self.rest.next() {
                Some(Ok(batch)) => self.rows = batch.into(),
                Some(Err(e)) => {
                    failures.push(format!("archive {}: {e}", self.path));
                    return false;
                }
                None => return false,
            }
        }
        true
    }
}

/// Builds the archive source on this worker.
pub fn archive_source<'scope>(
    scope: Scope<'scope, LogicalTime>,
    mut files: Vec<(LogicalTime, String)>,
    reader: ArchiveReader,
    from: LogicalTime,
    until: Option<LogicalTime>,
    failures: Failures,
) -> StreamVec<'scope, LogicalTime, Admitted> {
    let (index, peers) = (scope.index(), scope.peers());
    files.sort();
    let mine: Vec<(LogicalTime, String)> = files
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % peers == index)
        .map(|(_, f)| f)
        .collect();
    // Group this worker's files by interval: an interval's rows are merged and emitted in
    // time order, in chunks, with the capability following the rows, so downstream operators
    // see a steadily advancing frontier (as online) instead of one interval-sized batch.
    let mut groups: Vec<(LogicalTime, Vec<String>)> = Vec::new();
    for (start, path) in mine {
        match groups.last_mut() {
            Some((s, paths)) if *s == start => paths.push(path),
            _ => groups.push((start, vec![path])),
        }
    }
    source(scope, "ArchiveSource", move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut cap = Some(cap);
        let mut next = 0usize;
        let mut open: Vec<Cursor> = Vec::new();
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            if open.is_empty() {
                if let Some((start, paths)) = groups.get(next) {
                    if *start > *c.time() {
                        c.downgrade(start);
                    }
                    for path in paths {
                        match reader(path) {
                            Ok(rest) => open.push(Cursor {
                                path: path.clone(),
                                rows: Default::default(),
                                rest,
                            }),
                            Err(e) => failures.push(format!("archive {path}: {e}")),
                        }
                    }
                    next += 1;
                }
            }
            // Merge the open files (each sorted) into one sorted run of up to CHUNK rows.
            let mut out = Vec::with_capacity(CHUNK);
            while out.len() < CHUNK {
                open.retain_mut(|f| f.fill(&failures));
                let Some(i) =
                    (0..open.len()).min_by(|a, b| open[*a].rows[0].cmp(&open[*b].rows[0]))
                else {
                    break;
                };
                let Some(row) = open[i].rows.pop_front() else {
                    break;
                };
                if row.logical_time >= from && until.is_none_or(|u| row.logical_time < u) {
                    out.push(row);
                }
            }
            if let Some(first) = out.first() {
                if first.logical_time > *c.time() {
                    c.downgrade(&first.logical_time);
                }
                output.session(&*c).give_iterator(out.into_iter());
            }
            if open.is_empty() && next >= groups.len() {
                cap = None;
            } else {
                activator.activate();
            }
        }
    })
}

/// Rows emitted per activation.
const CHUNK: usize = 4096;
