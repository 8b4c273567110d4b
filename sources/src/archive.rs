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
    source(scope, "ArchiveSource", move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut cap = Some(cap);
        let mut next = 0usize;
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            if let Some((start, path)) = mine.get(next) {
                if *start > *c.time() {
                    c.downgrade(start);
                }
                match reader(path) {
                    Ok(rows) => {
                        let mut session = output.session(&*c);
                        for r in rows {
                            if r.logical_time >= from && until.is_none_or(|u| r.logical_time < u) {
                                session.give(r);
                            }
                        }
                    }
                    Err(e) => failures.push(format!("archive {path}: {e}")),
                }
                next += 1;
            }
            if next >= mine.len() {
                cap = None;
            } else {
                activator.activate();
            }
        }
    })
}
