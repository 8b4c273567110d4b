//! Commit points and the manifest (SPEC §10, §12).
//!
//! A commit at boundary `E` (a multiple of the commit interval) is a write-once record under
//! `ckpt/commits/` saying: every output of logical time `< E` is durable — archive, audit,
//! receipt and snapshot files written, every Kafka record acknowledged — and here is how to
//! continue: per ingress partition the offset to re-read from and its clock there
//! ([`PartitionResume`]), the output-topic marks below which no output of time `>= E` lies,
//! the basis start of the root and every primary-truth file written so far.
//!
//! Two operators build it:
//! - [`durability_barrier`] (every worker) watches the worker's published streams; when its
//!   frontier passes a boundary it flushes the Kafka producer and sends a token for it.
//! - [`commit_coordinator`] (worker 0) gathers file entries, partition bases, source commit
//!   parts and tokens; it writes commit `E` once its frontier has reached `E`, every worker's
//!   token has passed `E` and every partition has a resume point at or before `E`. When every
//!   input completes (a bounded run reached its end without a failure) it writes the manifest
//!   of the whole root: the basis from the root's first offsets and every file of every run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use tidemark_operators::commit::{CommitPart, OutputMark, PartitionResume};
use tidemark_operators::{Failures, LogicalTime, PartitionBasis};

use crate::kafka::KafkaProducer;
use crate::layout;
use crate::manifest::{basis_id, FileEntry, Manifest, ReceiptCounts, MANIFEST_FORMAT};
use crate::store::WriteOnceStore;
use crate::writers::put;

/// Commit record format identifier.
pub const COMMIT_FORMAT: &str = "tidemark.commit/v1";

/// A commit point (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRecord {
    /// [`COMMIT_FORMAT`].
    pub format: String,
    /// The boundary `E`: every output of logical time `< E` is durable.
    pub boundary: LogicalTime,
    /// The IG/archive policy revision of the run.
    pub policy_rev: String,
    /// The decision policy revision of the run.
    pub decision_policy_rev: String,
    /// Per ingress partition: where a resumed run re-reads from.
    pub partitions: Vec<PartitionResume>,
    /// Output topic marks: every output record of time `>= E` is at or above them.
    pub marks: Vec<OutputMark>,
    /// The first offset of each partition in this root (the basis start).
    pub basis_start: BTreeMap<u32, u64>,
    /// Every primary-truth file written in this root before `E`, sorted by path.
    pub files: Vec<FileEntry>,
}

impl CommitRecord {
    /// Canonical bytes: pretty JSON with a trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// What a coordinator continues from: the latest commit of a resumed root, or nothing.
#[derive(Clone, Debug, Default)]
pub struct CommitSeed {
    /// Files already written (from the commit).
    pub files: Vec<FileEntry>,
    /// The root's basis start per partition.
    pub basis_start: BTreeMap<u32, u64>,
    /// The commit's boundary (commits at or below it are not written again).
    pub boundary: LogicalTime,
}

/// Fixed facts the manifest and the commits record about a run's configuration.
#[derive(Clone, Debug)]
pub struct ManifestMeta {
    /// Policy revision.
    pub policy_rev: String,
    /// Decision policy revision (commits only).
    pub decision_policy_rev: String,
    /// Archive interval (ms).
    pub archive_interval_ms: u64,
    /// Archive buckets.
    pub buckets: u32,
    /// Receipts per receipt file.
    pub receipts_chunk: u64,
    /// Commit interval (ms); boundaries are its multiples.
    pub commit_ms: u64,
    /// Every ingress partition.
    pub partitions: Vec<u32>,
}

/// What the coordinator gathers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommitInput {
    /// A file was written.
    File(FileEntry),
    /// A partition reached its end (bounded runs).
    Basis(PartitionBasis),
    /// A source passed a boundary.
    Part(CommitPart),
    /// Worker `worker` made every output before `boundary` durable.
    Token {
        /// The worker index.
        worker: usize,
        /// The boundary.
        boundary: LogicalTime,
    },
}

/// Called after a commit is written (graceful stop waits for it) and after the manifest.
pub type OnCommit = Arc<dyn Fn(CommitEvent) + Send + Sync>;

/// What the coordinator reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitEvent {
    /// Commit at this boundary written.
    Committed(LogicalTime),
    /// The manifest was written.
    Manifest(Box<Manifest>),
}

/// The commit path of boundary `E`.
pub fn commit_file(boundary: LogicalTime) -> String {
    format!("{}/e={boundary:016}.json", layout::COMMIT_PREFIX)
}

/// Per-worker durability barrier. `watch` carries the worker's published streams (their data
/// is ignored; only the frontier matters). When its frontier passes a boundary `B` (multiple
/// of `commit_ms`), every record of time `< B` has been handed to the producer; it flushes
/// the producer (waits for every acknowledgement) and emits a token for `B` (the highest
/// boundary passed), at a time `< B`.
pub fn durability_barrier<'scope>(
    watch: StreamVec<'scope, LogicalTime, ()>,
    commit_ms: u64,
    start: LogicalTime,
    producer: Option<Arc<KafkaProducer>>,
    failures: Failures,
) -> StreamVec<'scope, LogicalTime, CommitInput> {
    let commit_ms = commit_ms.max(1);
    let worker = watch.scope().index();
    watch.unary_frontier(Pipeline, "DurabilityBarrier", move |cap, _info| {
        let mut last = start / commit_ms * commit_ms;
        let mut cap = Some(cap);
        if let Some(c) = cap.as_mut() {
            c.downgrade(&last);
        }
        move |(input, frontier), output| {
            input.for_each(|_, _| {});
            let Some(c) = cap.as_mut() else { return };
            // Every input complete: everything is durable once flushed (boundary MAX).
            let due = match frontier.frontier().iter().min().copied() {
                Some(f) => Some(f / commit_ms * commit_ms).filter(|b| *b > last),
                None => Some(LogicalTime::MAX),
            };
            if let Some(b) = due {
                if let Some(p) = &producer {
                    if let Err(e) = p.flush(std::time::Duration::from_secs(300)) {
                        failures.push(format!("flushing before commit {b}: {e}"));
                        return;
                    }
                }
                output.session(&*c).give(CommitInput::Token {
                    worker,
                    boundary: b,
                });
                if worker == 1 {
                    tidemark_operators::failpoint::hit("after-token");
                }
                last = b;
                if b == LogicalTime::MAX {
                    cap = None;
                } else {
                    c.downgrade(&b);
                }
            }
        }
    })
}

struct Coordinator {
    meta: ManifestMeta,
    store: WriteOnceStore,
    failures: Failures,
    on_commit: OnCommit,
    peers: usize,
    files: BTreeMap<String, FileEntry>,
    basis_start: BTreeMap<u32, u64>,
    ends: Vec<PartitionBasis>,
    parts: BTreeMap<u32, BTreeMap<LogicalTime, (PartitionResume, Vec<OutputMark>)>>,
    tokens: BTreeMap<usize, LogicalTime>,
    committed: LogicalTime,
    boundaries: BTreeSet<LogicalTime>,
}

impl Coordinator {
    fn absorb(&mut self, input: CommitInput) {
        match input {
            CommitInput::File(f) => {
                self.files.insert(f.path.clone(), f);
            }
            CommitInput::Basis(b) => self.ends.push(b),
            CommitInput::Part(p) => {
                for r in p.partitions {
                    self.basis_start
                        .entry(r.partition)
                        .or_insert(r.first_offset);
                    self.parts
                        .entry(r.partition)
                        .or_default()
                        .insert(p.boundary, (r, p.marks.clone()));
                }
                if p.boundary > self.committed {
                    self.boundaries.insert(p.boundary);
                }
            }
            CommitInput::Token { worker, boundary } => {
                let t = self.tokens.entry(worker).or_default();
                *t = (*t).max(boundary);
            }
        }
    }

    /// Writes every commit that is due, newest first wins: only the highest due boundary is
    /// written (older ones are subsumed).
    fn commit_due(&mut self, frontier_reached: impl Fn(LogicalTime) -> bool) {
        let tokens_min = if self.tokens.len() >= self.peers {
            self.tokens.values().min().copied()
        } else {
            None
        };
        tracing::debug!(tokens = ?self.tokens, boundaries = ?self.boundaries, committed = self.committed, "commit_due");
        let Some(tokens_min) = tokens_min else { return };
        let due: Vec<LogicalTime> = self
            .boundaries
            .iter()
            .copied()
            .filter(|e| *e <= tokens_min && frontier_reached(*e))
            .collect();
        let Some(&e) = due.last() else { return };
        let mut partitions = Vec::new();
        let mut marks: BTreeMap<(String, u32), u64> = BTreeMap::new();
        for p in &self.meta.partitions {
            let Some((r, m)) = self
                .parts
                .get(p)
                .and_then(|m| m.range(..=e).next_back())
                .map(|(_, v)| v)
            else {
                return;
            };
            partitions.push(r.clone());
            for mk in m {
                let slot = marks
                    .entry((mk.topic.clone(), mk.partition))
                    .or_insert(mk.offset);
                *slot = (*slot).min(mk.offset);
            }
        }
        if self.failures.any() {
            return;
        }
        let record = CommitRecord {
            format: COMMIT_FORMAT.to_owned(),
            boundary: e,
            policy_rev: self.meta.policy_rev.clone(),
            decision_policy_rev: self.meta.decision_policy_rev.clone(),
            partitions,
            marks: marks
                .into_iter()
                .map(|((topic, partition), offset)| OutputMark {
                    topic,
                    partition,
                    offset,
                })
                .collect(),
            basis_start: self.basis_start.clone(),
            files: self.files.values().cloned().collect(),
        };
        if put(
            &self.store,
            &self.failures,
            &commit_file(e),
            record.to_bytes(),
        )
        .is_none()
        {
            return;
        }
        self.committed = e;
        self.boundaries.retain(|b| *b > e);
        // Older resume points are no longer needed: keep the one used and later ones.
        for m in self.parts.values_mut() {
            if let Some((&used, _)) = m.range(..=e).next_back() {
                *m = m.split_off(&used);
            }
        }
        tracing::info!(boundary = e, files = record.files.len(), "commit written");
        (self.on_commit)(CommitEvent::Committed(e));
    }

    fn manifest(&mut self) -> Option<Manifest> {
        if self.failures.any() || (self.files.is_empty() && self.ends.is_empty()) {
            return None;
        }
        let ended: BTreeSet<u32> = self.ends.iter().map(|b| b.partition).collect();
        if self.meta.partitions.iter().any(|p| !ended.contains(p)) {
            // A partition that failed or never finished: no manifest claims completeness.
            return None;
        }
        let mut basis: Vec<PartitionBasis> = self
            .ends
            .iter()
            .map(|b| PartitionBasis {
                partition: b.partition,
                start: self
                    .basis_start
                    .get(&b.partition)
                    .copied()
                    .unwrap_or(b.start)
                    .min(b.start),
                end: b.end,
            })
            .collect();
        basis.sort();
        let files: Vec<FileEntry> = self.files.values().cloned().collect();
        let mut totals = ReceiptCounts::default();
        for f in &files {
            if let Some(c) = &f.counts {
                totals.add(c);
            }
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT.to_owned(),
            basis_id: basis_id(&basis),
            policy_rev: self.meta.policy_rev.clone(),
            archive_interval_ms: self.meta.archive_interval_ms,
            buckets: self.meta.buckets,
            receipts_chunk: self.meta.receipts_chunk,
            basis,
            totals,
            files,
        };
        let path = layout::manifest_file(&manifest.basis_id);
        put(&self.store, &self.failures, &path, manifest.to_bytes())?;
        (self.on_commit)(CommitEvent::Manifest(Box::new(manifest.clone())));
        Some(manifest)
    }
}

/// Gathers everything on worker 0, writes commits as they become due and, once every input is
/// complete, the manifest (see the module docs). Emits the manifest on worker 0.
pub fn commit_coordinator<'scope>(
    input: StreamVec<'scope, LogicalTime, CommitInput>,
    meta: ManifestMeta,
    seed: CommitSeed,
    store: WriteOnceStore,
    failures: Failures,
    on_commit: OnCommit,
) -> StreamVec<'scope, LogicalTime, Manifest> {
    let peers = input.scope().peers();
    input.unary_frontier(
        Exchange::new(|_: &CommitInput| 0),
        "CommitCoordinator",
        move |cap, _info| {
            let mut cap = Some(cap);
            let mut c = Coordinator {
                meta,
                store,
                failures,
                on_commit,
                peers,
                files: seed
                    .files
                    .into_iter()
                    .map(|f| (f.path.clone(), f))
                    .collect(),
                basis_start: seed.basis_start,
                ends: Vec::new(),
                parts: BTreeMap::new(),
                tokens: BTreeMap::new(),
                committed: seed.boundary,
                boundaries: BTreeSet::new(),
            };
            move |(input, frontier), output| {
                input.for_each(|_, data| {
                    for d in data.drain(..) {
                        c.absorb(d);
                    }
                });
                if frontier.frontier().is_empty() {
                    if let Some(cap) = cap.take() {
                        c.commit_due(|_| true);
                        if let Some(m) = c.manifest() {
                            output.session(&cap).give(m);
                        }
                    }
                } else {
                    c.commit_due(|e| !frontier.less_than(&e));
                }
            }
        },
    )
}
