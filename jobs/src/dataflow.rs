//! The online dataflow of one worker: ingress source → IG → decision stages → writers and
//! publishing, the durability barrier and the commit coordinator. A resumed run adds its
//! warm-up inputs (dedup candidates from receipts, decision state from the archive) and
//! emits only from the commit boundary on.

use std::sync::{Arc, Mutex};

use timely::dataflow::operators::vec::{Filter, Map, ToStream};
use timely::dataflow::operators::{Concat, Inspect, OkErr};
use timely::dataflow::StreamVec;
use timely::worker::Worker;

use tidemark_dataflows::ig::{gate_resumed, IgItem, IgStamper};
use tidemark_dataflows::pipeline::{decide, needed_from};
use tidemark_operators::hashing::bucket_of;
use tidemark_operators::ingest::Candidate;
use tidemark_operators::time::millis;
use tidemark_operators::{CloseIntervals, Failures, LogicalTime};
use tidemark_sinks::audit::{write_audit, write_snapshots};
use tidemark_sinks::commit::{
    commit_coordinator, durability_barrier, CommitEvent, CommitInput, CommitSeed, ManifestMeta,
};
use tidemark_sinks::kafka::{KafkaProducer, ProduceTo};
use tidemark_sinks::writers::{write_archive, write_receipts};
use tidemark_sinks::WriteOnceStore;
use tidemark_sources::archive::archive_source;
use tidemark_sources::{
    ingress_source, BoundaryHook, KafkaConn, OutputMark, PartitionedSource, SourceEvent,
    SourceOptions,
};

use crate::config::Profile;
use crate::publish::{admitted_record, decision_records, file_pointer, snapshot_pointer, Latency};
use crate::resume::Resume;
use crate::run::{decision_config, OutputStats};

/// Everything a worker needs to build the online dataflow (shared by the workers of a
/// process).
pub struct Wiring {
    /// The profile.
    pub profile: Profile,
    /// The ingress.
    pub src: Arc<dyn PartitionedSource>,
    /// The data root.
    pub store: WriteOnceStore,
    /// The process's producer, when publishing.
    pub producer: Option<Arc<KafkaProducer>>,
    /// The cluster published to.
    pub publish: Option<KafkaConn>,
    /// Run the decision stages.
    pub decisions: bool,
    /// The graceful-stop flag.
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    /// What a resumed run continues from.
    pub resume: Option<Arc<Resume>>,
    /// Commits at or below this boundary exist already (not written again).
    pub committed: LogicalTime,
    /// `(t, marks)`: an interrupted run already published outputs up to logical time `t`
    /// above these marks (the resumed commit's); boundaries up to `t` keep them.
    pub mark_cap: Option<(LogicalTime, Vec<OutputMark>)>,
    /// Failures of the run.
    pub failures: Failures,
    /// Output counters.
    pub stats: OutputStats,
    /// Decision latency.
    pub latency: Latency,
    /// Commits and the manifest, as the coordinator reports them.
    pub events: Arc<Mutex<Vec<CommitEvent>>>,
    /// Producer keys, where the IG policy requires signatures.
    pub keys: Option<Arc<tidemark_dataflows::ig::Keyring>>,
    /// Metrics served on `wiring.metrics_addr`, if any.
    pub metrics: Option<crate::metrics::Metrics>,
}

/// Unit stream carrying only the frontier of `s` (its data is dropped).
fn frontier_of<'s, D: Clone + 'static>(
    s: StreamVec<'s, LogicalTime, D>,
) -> StreamVec<'s, LogicalTime, ()> {
    s.filter(|_| false).map(|_| ())
}

fn boundary_hook(conn: &KafkaConn, cap: Option<(LogicalTime, Vec<OutputMark>)>) -> BoundaryHook {
    let conn = conn.clone();
    // One client for every boundary, made now (a new one per boundary cost ~0.2 s of the
    // worker thread at each commit boundary, which decisions waited for).
    let client = Mutex::new(tidemark_sinks::kafka::Watermarks::new(&conn.client_config()).ok());
    Arc::new(move |boundary| {
        // Copies of outputs of time >= boundary published by an interrupted run lie above the
        // resumed commit's marks, not above the topics' current ends.
        match &cap {
            Some((t, marks)) if boundary <= *t => Ok(marks.clone()),
            _ => {
                let mut client = client
                    .lock()
                    .map_err(|_| "marks client poisoned".to_owned())?;
                // Made again here if the broker was not reachable when the hook was built.
                let client = match &mut *client {
                    Some(c) => c,
                    none => none.insert(
                        tidemark_sinks::kafka::Watermarks::new(&conn.client_config())
                            .map_err(|e| e.to_string())?,
                    ),
                };
                crate::publish::output_marks_with(client, &conn).map_err(|e| e.to_string())
            }
        }
    })
}

/// Builds the online dataflow on `worker`.
// `ok_err` routes with a `Result` whose `Err` side is commit progress, not an error.
#[allow(clippy::result_large_err)]
pub fn build(worker: &mut Worker, w: &Wiring) {
    let profile = &w.profile;
    let failures = w.failures.clone();
    let policy_rev: Arc<str> = profile.policy_rev().into();
    let policy = Arc::new(profile.ig.clone());
    let commit_ms = millis(profile.wiring.commit_interval);
    let resume_at = w.resume.as_ref().map_or(0, |r| r.commit.boundary);
    let mut sopts = SourceOptions::new(
        millis(policy.allowed_lateness),
        policy.idle_timeout,
        profile.wiring.source_batch.max(1),
    );
    sopts.commit_ms = commit_ms;
    sopts.chunk = profile.archive.receipts_chunk;
    sopts.stop = w.stop.clone();
    sopts.resume = w.resume.as_ref().map(|r| Arc::new(r.source.clone()));
    sopts.journal = Some(crate::resume::idle_journal(w.store.clone()));
    sopts.on_boundary = w
        .publish
        .as_ref()
        .map(|c| boundary_hook(c, w.mark_cap.clone()));
    sopts.on_poll = w.producer.is_some().then(|| w.latency.poll_hook());
    if let Some(m) = &w.metrics {
        let (m, index) = (m.clone(), worker.index());
        sopts.on_progress = Some(Arc::new(move |parts, frontier| {
            m.source(index, parts, frontier)
        }));
    }
    let start_floor = w
        .resume
        .as_ref()
        .and_then(|r| r.commit.partitions.iter().map(|p| p.floor).min())
        .unwrap_or(0);
    let dcfg = match decision_config(profile, resume_at, None) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            failures.push(format!("decision configuration: {e:#}"));
            return;
        }
    };
    let meta = ManifestMeta {
        policy_rev: policy_rev.to_string(),
        decision_policy_rev: dcfg.policy_rev.clone(),
        archive_interval_ms: millis(profile.archive.interval),
        buckets: profile.archive.buckets,
        receipts_chunk: profile.archive.receipts_chunk,
        commit_ms,
        partitions: w.src.partitions().unwrap_or_default(),
    };
    let seed = w
        .resume
        .as_ref()
        .map(|r| r.seed.clone())
        .unwrap_or(CommitSeed {
            boundary: w.committed,
            ..CommitSeed::default()
        });
    let dedup_ms = millis(policy.dedup_window);
    let interval_ms = millis(profile.archive.interval);
    let buckets = profile.archive.buckets;
    let chunk = profile.archive.receipts_chunk;
    let audit_ms = millis(profile.dla.audit_interval);
    let decisions = w.decisions;
    let index = worker.index();
    let peers = worker.peers();
    worker.dataflow::<u64, _, _>(|scope| {
        let mut stamper = IgStamper::new(policy.clone(), policy_rev.clone());
        if let Some(keys) = &w.keys {
            stamper = stamper.with_keys(keys.clone());
        }
        let events = ingress_source(scope, w.src.clone(), stamper, sopts, failures.clone());
        let (items, progress): (
            StreamVec<'_, LogicalTime, IgItem>,
            StreamVec<'_, LogicalTime, CommitInput>,
        ) = events.ok_err(|e| match e {
            SourceEvent::Item(i) => Ok(i),
            SourceEvent::Basis(b) => Err(CommitInput::Basis(b)),
            SourceEvent::Commit(p) => Err(CommitInput::Part(p)),
        });
        // Warm-up inputs of a resumed run, split over the workers.
        let warm: Vec<Candidate> = w
            .resume
            .as_ref()
            .map(|r| {
                r.dedup_warm
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| i % peers == index)
                    .map(|(_, c)| c.clone())
                    .collect()
            })
            .unwrap_or_default();
        let warm = warm.to_stream(scope);
        let ig = gate_resumed(items, warm, resume_at, dedup_ms, policy_rev.clone());
        let mut admitted = ig.admitted;
        if let Some(p) = &w.producer {
            admitted = admitted.produce_to(p.clone(), failures.clone(), admitted_record);
        }
        // Decision state of a resumed run from the archive. Built on every run (empty when
        // not resuming): every worker of every process must build the same dataflow, and the
        // processes of a cluster may see the root before and after the genesis commit.
        let (files, reader) = match &w.resume {
            Some(r) => (r.archive_files.clone(), r.archive_reader.clone()),
            None => (
                Vec::new(),
                Arc::new(|_: &str| {
                    Ok(Box::new(std::iter::empty()) as tidemark_sources::archive::RowBatches)
                }) as tidemark_sources::archive::ArchiveReader,
            ),
        };
        let warm_from = resume_at.saturating_sub(dcfg.max_window_ms());
        let rows = archive_source(scope, files, reader, 0, Some(resume_at), failures.clone())
            .filter(move |a| decisions && needed_from(a, warm_from));
        let state_input = admitted.clone().filter(move |_| decisions).concat(rows);
        let outs = decide(state_input, dcfg.clone(), failures.clone());
        let (st1, st2) = (w.stats.clone(), w.stats.clone());
        let m = w.metrics.clone();
        let mut audit = outs.audit.inspect(move |r| {
            tracing::debug!(
                target: "tidemark::decision",
                event_id = %r.event_id,
                decision_id = %r.decision_id,
                trace_id = %r.trace_id,
                partition = r.source_partition,
                offset = r.source_offset,
                logical_time = r.logical_time,
                decision = %r.decision,
                score = r.score,
                "decision"
            );
            st1.decision(r);
            if let Some(m) = &m {
                m.decision(r, crate::wallclock::now_ms());
            }
        });
        let mut snapshots = outs.snapshots;
        if let Some(p) = &w.producer {
            let lat = w.latency.clone();
            audit = audit
                .inspect(move |r| {
                    lat.record(r.source_record_ts, r.source_partition, r.source_offset)
                })
                .produce_to(p.clone(), failures.clone(), decision_records);
            snapshots = snapshots.produce_to(p.clone(), failures.clone(), snapshot_pointer);
        }
        let audit_files = write_audit(
            audit.close_intervals("CloseAudit", audit_ms, |r| (r.logical_time, r.bucket)),
            w.store.clone(),
            failures.clone(),
        );
        let snapshots_written = write_snapshots(snapshots, w.store.clone(), failures.clone())
            .inspect(move |_| st2.snapshot());
        let closed = admitted.close_intervals("CloseArchive", interval_ms, move |a| {
            (a.logical_time, bucket_of(&a.partition_key, buckets))
        });
        let archive_files = write_archive(closed, w.store.clone(), failures.clone());
        let m = w.metrics.clone();
        let receipts = ig.receipts.inspect(move |r| {
            if let Some(reason) = r.reason {
                tracing::debug!(
                    target: "tidemark::ig",
                    status = r.status.as_str(),
                    reason = reason.as_str(),
                    event_id = r.event_id.as_deref().unwrap_or_default(),
                    partition = r.coord.partition,
                    offset = r.coord.offset,
                    detail = %r.detail,
                    "not admitted"
                );
            }
            if let Some(m) = &m {
                m.receipt(r);
            }
        });
        let receipt_files = write_receipts(receipts, chunk, w.store.clone(), failures.clone());
        let m = w.metrics.clone();
        let mut files = archive_files
            .concat(receipt_files)
            .concat(audit_files)
            .inspect(move |f| {
                tracing::info!(
                    target: "tidemark::files",
                    path = %f.path,
                    kind = ?f.kind,
                    rows = f.rows,
                    bytes = f.bytes,
                    sha256 = %f.sha256,
                    "file written"
                );
                if let Some(m) = &m {
                    m.file(f);
                }
            });
        if let Some(p) = &w.producer {
            files = files.produce_to(p.clone(), failures.clone(), file_pointer);
        }
        // The barrier watches the two ends of the dataflow. Every published stream (admitted
        // records, decisions, snapshot pointers, file pointers) is upstream of one of them, and
        // a stream's frontier never runs ahead of the frontiers upstream of it, so once these
        // pass B so has every published stream. Watching the ends rather than each published
        // stream spares a copy of every admitted record and decision (timely clones a
        // stream's data for each extra consumer).
        let watched = frontier_of(files.clone()).concat(frontier_of(snapshots_written));
        let tokens = durability_barrier(
            watched,
            commit_ms,
            start_floor,
            w.producer.clone(),
            failures.clone(),
        );
        let sink = w.events.clone();
        let m = w.metrics.clone();
        let on_commit = Arc::new(move |e: CommitEvent| {
            match &e {
                CommitEvent::Committed(boundary) => {
                    tracing::info!(target: "tidemark::commit", boundary = *boundary, "commit written");
                    if let Some(m) = &m {
                        m.commit();
                    }
                }
                CommitEvent::Manifest(mf) => tracing::info!(
                    target: "tidemark::commit",
                    files = mf.files.len(),
                    "manifest written"
                ),
            }
            if let Ok(mut g) = sink.lock() {
                g.push(e);
            }
        });
        commit_coordinator(
            files.map(CommitInput::File).concat(progress).concat(tokens),
            meta,
            seed,
            w.store.clone(),
            failures.clone(),
            on_commit,
        );
    });
}
