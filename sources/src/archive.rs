//! The archive source: replays admitted events from the Parquet archive.
//!
//! Files are given as `(interval_start, path)`; worker `w` reads the files at positions
//! `i ≡ w (mod peers)` of the list sorted by (interval, path), in interval order, and holds its
//! capability at the start of the interval it is reading, so downstream frontiers advance
//! interval by interval exactly as they would online. Rows outside `[from, until)` are skipped.
//! Reading a file is delegated to a caller-supplied reader (which verifies its digest), keeping
//! this crate independent of the sinks' encodings.

use std::sync::Arc;

use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, StreamVec};

use tidemark_operators::ingest::Admitted;
use tidemark_operators::{Failures, LogicalTime};

/// Reads one archive file into rows, or explains why it cannot.
pub type ArchiveReader = Arc<dyn Fn(&str) -> Result<Vec<Admitted>, String> + Send + Sync>;

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
        let mut rows: std::collections::VecDeque<Admitted> = std::collections::VecDeque::new();
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            if rows.is_empty() {
                if let Some((start, paths)) = groups.get(next) {
                    if *start > *c.time() {
                        c.downgrade(start);
                    }
                    let mut loaded = Vec::new();
                    for path in paths {
                        match reader(path) {
                            Ok(r) => loaded.extend(r.into_iter().filter(|r| {
                                r.logical_time >= from && until.is_none_or(|u| r.logical_time < u)
                            })),
                            Err(e) => failures.push(format!("archive {path}: {e}")),
                        }
                    }
                    loaded.sort();
                    rows = loaded.into();
                    next += 1;
                }
            }
            if let Some(first) = rows.front() {
                if first.logical_time > *c.time() {
                    c.downgrade(&first.logical_time);
                }
                let n = rows.len().min(CHUNK);
                output.session(&*c).give_iterator(rows.drain(..n));
            }
            if rows.is_empty() && next >= groups.len() {
                cap = None;
            } else {
                activator.activate();
            }
        }
    })
}

/// Rows emitted per activation.
const CHUNK: usize = 4096;
