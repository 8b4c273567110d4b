//! The online run: ingress log → IG (stamp, dedup) → archive, receipts, quarantine, manifest,
//! and a run record under `runs/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use timely::dataflow::operators::vec::{Filter, Map, Partition};
use timely::dataflow::operators::{Concat, Inspect};

use tidemark_dataflows::ig::{gate, IgStamper};
use tidemark_dataflows::pipeline::{decide, DecisionConfig};
use tidemark_operators::decision::AuditRecord;
use tidemark_operators::hashing::bucket_of;
use tidemark_operators::time::millis;
use tidemark_operators::{CloseIntervals, Failures, PartitionBasis};
use tidemark_sinks::audit::{write_audit, write_snapshots};
use tidemark_sinks::kafka::{KafkaProducer, ProduceTo};
use tidemark_sinks::writers::{write_archive, write_manifest, write_receipts, ManifestMeta};
use tidemark_sinks::{Manifest, WriteOnceStore};
use tidemark_sources::{
    ingress_source, FileLog, KafkaConn, KafkaEnd, KafkaSource, KafkaStart, PartitionedSource,
    SourceEvent, SourceOptions,
};

use crate::config::Profile;
use crate::publish::{admitted_record, decision_records, file_pointer, snapshot_pointer, Latency};

/// Where ingress comes from.
#[derive(Clone, Debug)]
pub enum Ingress {
    /// A partitioned file log directory (`file:DIR`).
    File(PathBuf),
    /// A Kafka topic.
    Kafka {
        /// Brokers and client settings.
        conn: KafkaConn,
        /// The ingress topic (`fp.bus.ingress.v1`).
        topic: String,
        /// Where each partition starts.
        start: KafkaStart,
        /// Where each partition ends (bounded runs) or [`KafkaEnd::Unbounded`].
        end: KafkaEnd,
    },
}

impl Ingress {
    /// Parses `file:DIR`.
    pub fn parse(s: &str) -> Result<Ingress> {
        match s.split_once(':') {
            Some(("file", dir)) if !dir.is_empty() => Ok(Ingress::File(PathBuf::from(dir))),
            _ => bail!("unsupported ingress {s:?}: expected file:DIR or kafka"),
        }
    }

    fn describe(&self) -> String {
        match self {
            Ingress::File(d) => format!("file:{}", d.display()),
            Ingress::Kafka {
                conn,
                topic,
                start,
                end,
                ..
            } => format!(
                "kafka:{}/{topic} from {start:?} until {end:?}",
                conn.brokers
            ),
        }
    }

    fn open(&self) -> Result<Arc<dyn PartitionedSource>> {
        Ok(match self {
            Ingress::File(dir) => Arc::new(
                FileLog::open(dir)
                    .with_context(|| format!("cannot open ingress {}", dir.display()))?,
            ),
            Ingress::Kafka {
                conn,
                topic,
                start,
                end,
            } => {
                let src = KafkaSource::new(conn.clone(), topic.clone(), start.clone(), end.clone());
                // Fail before starting workers if the broker or topic is not there.
                src.partition_count().with_context(|| {
                    format!("cannot read ingress {topic} from {}", conn.brokers)
                })?;
                Arc::new(src)
            }
        })
    }
}

/// Timely cluster layout: `threads` workers in each of `addresses.len()` processes (one
/// process when `addresses` is empty); this is process `process`.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    /// Worker threads per process.
    pub threads: usize,
    /// This process's index.
    pub process: usize,
    /// `host:port` of every process (timely's hostfile), empty for a single process.
    pub addresses: Vec<String>,
}

impl Cluster {
    /// One process with `threads` workers.
    pub fn threads(threads: usize) -> Self {
        Cluster {
            threads: threads.max(1),
            ..Default::default()
        }
    }

    /// Total workers.
    pub fn peers(&self) -> usize {
        self.threads.max(1) * self.addresses.len().max(1)
    }

    fn config(&self) -> timely::Config {
        let communication = if self.addresses.len() > 1 {
            timely::CommunicationConfig::Cluster {
                threads: self.threads.max(1),
                process: self.process,
                addresses: self.addresses.clone(),
                report: false,
                zerocopy: false,
            }
        } else {
            timely::CommunicationConfig::Process(self.threads.max(1))
        };
        timely::Config {
            communication,
            worker: timely::WorkerConfig::default(),
        }
    }
}

/// Options of a run beyond the profile.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Workers and processes.
    pub cluster: Cluster,
    /// Run IEG → OFP → DF → DLA (false: IG only, for the IG benchmark).
    pub decisions: bool,
    /// Publish admitted envelopes, decisions and pointer events to this Kafka cluster.
    pub publish: Option<KafkaConn>,
}

impl RunOptions {
    /// A single-process run with `workers` threads, all stages, nothing published.
    pub fn threads(workers: usize) -> Self {
        RunOptions {
            cluster: Cluster::threads(workers),
            decisions: true,
            publish: None,
        }
    }
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// The manifest written.
    pub manifest: Manifest,
    /// Path of the run record.
    pub run_record: String,
    /// Wall-clock seconds.
    pub wall_secs: f64,
    /// Decisions by outcome.
    pub decisions: BTreeMap<String, u64>,
    /// Snapshot records written.
    pub snapshots: u64,
    /// Decision latency `(count, p50, p95, p99, max)` in ms, when decisions were published.
    pub latency: Option<(u64, u64, u64, u64, u64)>,
    /// Kafka records published (this process).
    pub published: u64,
}

/// Counters filled by inspect operators (shared across workers).
#[derive(Clone, Default)]
pub struct OutputStats {
    /// Decisions by outcome.
    pub decisions: Arc<Mutex<BTreeMap<String, u64>>>,
    /// Snapshot records.
    pub snapshots: Arc<Mutex<u64>>,
}

impl OutputStats {
    /// Counts one audit record.
    pub fn decision(&self, r: &AuditRecord) {
        if let Ok(mut g) = self.decisions.lock() {
            *g.entry(r.decision.clone()).or_default() += 1;
        }
    }
    /// Counts one snapshot.
    pub fn snapshot(&self) {
        if let Ok(mut g) = self.snapshots.lock() {
            *g += 1;
        }
    }
    /// Takes the counts.
    pub fn take(&self) -> (BTreeMap<String, u64>, u64) {
        let d = self.decisions.lock().map(|g| g.clone()).unwrap_or_default();
        let s = self.snapshots.lock().map(|g| *g).unwrap_or_default();
        (d, s)
    }
}

/// Builds the decision configuration of a profile; emits for logical times in
/// `[emit_from, emit_until)`.
pub fn decision_config(
    profile: &Profile,
    emit_from: u64,
    emit_until: Option<u64>,
) -> Result<DecisionConfig> {
    let bundle = profile.load_bundle()?;
    Ok(DecisionConfig {
        features: Arc::new(profile.features.clone()),
        ofp: profile.ofp.clone(),
        graph: profile.graph.clone(),
        df: profile.df.clone(),
        policy_rev: profile.decision_policy_rev(&bundle),
        feature_rev: profile.feature_rev(),
        bundle: Arc::new(bundle),
        audit_buckets: profile.dla.buckets,
        emit_from,
        emit_until,
    })
}

#[derive(Serialize)]
struct LatencyRecord {
    decisions: u64,
    p50: u64,
    p95: u64,
    p99: u64,
    max: u64,
}

#[derive(Serialize)]
struct RunRecord<'a> {
    format: &'static str,
    tidemark_version: &'static str,
    profile: &'a str,
    policy_rev: &'a str,
    decision_policy_rev: &'a str,
    ingress: String,
    workers: usize,
    processes: usize,
    basis_id: &'a str,
    basis: &'a [PartitionBasis],
    totals: &'a tidemark_sinks::manifest::ReceiptCounts,
    manifest: String,
    published: u64,
    latency_ms: Option<LatencyRecord>,
    started_at: String,
    finished_at: String,
    wall_ms: u128,
}

/// Runs the whole pipeline (IG → IEG → OFP → DF → DLA) over `ingress` with `workers` threads,
/// writing under `data`.
pub fn run(
    profile: &Profile,
    ingress: &Ingress,
    data: &Path,
    workers: usize,
) -> Result<RunOutcome> {
    run_stages(profile, ingress, data, workers, true)
}

/// Like [`run`]; with `decisions == false` only IG runs (archive, receipts, quarantine), which
/// is what the IG benchmark measures.
pub fn run_stages(
    profile: &Profile,
    ingress: &Ingress,
    data: &Path,
    workers: usize,
    decisions: bool,
) -> Result<RunOutcome> {
    let opts = RunOptions {
        decisions,
        ..RunOptions::threads(workers)
    };
    run_with(profile, ingress, data, &opts)?
        .ok_or_else(|| anyhow!("a single-process run finished without a manifest"))
}

/// Runs the pipeline as one process of `opts.cluster`. Process 0 assembles the manifest and
/// writes the run record and returns the outcome; other processes return `None`.
pub fn run_with(
    profile: &Profile,
    ingress: &Ingress,
    data: &Path,
    opts: &RunOptions,
) -> Result<Option<RunOutcome>> {
    let src = ingress.open()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")?;
    let store = WriteOnceStore::local(data, rt.handle().clone())
        .with_context(|| format!("cannot open data directory {}", data.display()))?;
    let producer = match &opts.publish {
        Some(conn) => Some(Arc::new(
            KafkaProducer::new(&conn.client_config()).context("cannot publish to Kafka")?,
        )),
        None => None,
    };
    let failures = Failures::default();
    let policy_rev: Arc<str> = profile.policy_rev().into();
    let policy = Arc::new(profile.ig.clone());
    let sopts = SourceOptions {
        lateness_ms: millis(policy.allowed_lateness),
        idle_timeout: policy.idle_timeout,
        batch: profile.wiring.source_batch.max(1),
    };
    let interval_ms = millis(profile.archive.interval);
    let buckets = profile.archive.buckets;
    let meta = ManifestMeta {
        policy_rev: policy_rev.to_string(),
        archive_interval_ms: interval_ms,
        buckets,
        receipts_chunk: profile.archive.receipts_chunk,
    };
    let chunk = profile.archive.receipts_chunk;
    let dedup_ms = millis(policy.dedup_window);
    let result: Arc<Mutex<Option<Manifest>>> = Arc::default();
    let dcfg = Arc::new(decision_config(profile, 0, None)?);
    let dcfg_rev = dcfg.policy_rev.clone();
    let audit_ms = millis(profile.dla.audit_interval);
    let stats = OutputStats::default();
    let latency = Latency::default();
    let started = crate::wallclock::now_rfc3339();
    let t0 = Instant::now();
    let decisions = opts.decisions;
    {
        let (failures, result, store) = (failures.clone(), result.clone(), store.clone());
        let (stats, latency, producer) = (stats.clone(), latency.clone(), producer.clone());
        let guards = timely::execute(opts.cluster.config(), move |worker| {
            let stamper = IgStamper::new(policy.clone(), policy_rev.clone());
            worker.dataflow::<u64, _, _>(|scope| {
                let events =
                    ingress_source(scope, src.clone(), stamper, sopts.clone(), failures.clone());
                let mut parts = events.partition(2, |e| match e {
                    SourceEvent::Item(i) => (0, Ok(i)),
                    SourceEvent::Basis(b) => (1, Err(b)),
                });
                let basis = parts.pop().map(|s| s.flat_map(|r| r.err()));
                let items = parts.pop().map(|s| s.flat_map(|r| r.ok()));
                let (Some(basis), Some(items)) = (basis, items) else {
                    return;
                };
                let ig = gate(items, dedup_ms, policy_rev.clone());
                let (st1, st2) = (stats.clone(), stats.clone());
                let mut admitted = ig.admitted.clone();
                if let Some(p) = &producer {
                    admitted = admitted.produce_to(p.clone(), failures.clone(), admitted_record);
                }
                let outs = decide(
                    admitted.clone().filter(move |_| decisions),
                    dcfg.clone(),
                    failures.clone(),
                );
                let mut audit = outs.audit.inspect(move |r| st1.decision(r));
                let mut snapshots = outs.snapshots;
                if let Some(p) = &producer {
                    let lat = latency.clone();
                    audit = audit
                        .inspect(move |r| lat.record(r.source_record_ts))
                        .produce_to(p.clone(), failures.clone(), decision_records);
                    snapshots = snapshots.produce_to(p.clone(), failures.clone(), snapshot_pointer);
                }
                let audit_files = write_audit(
                    audit.close_intervals("CloseAudit", audit_ms, |r| (r.logical_time, r.bucket)),
                    store.clone(),
                    failures.clone(),
                );
                write_snapshots(snapshots, store.clone(), failures.clone())
                    .inspect(move |_| st2.snapshot());
                let closed = admitted.close_intervals("CloseArchive", interval_ms, move |a| {
                    (a.logical_time, bucket_of(&a.partition_key, buckets))
                });
                let archive_files = write_archive(closed, store.clone(), failures.clone());
                let receipt_files =
                    write_receipts(ig.receipts, chunk, store.clone(), failures.clone());
                let mut files = archive_files.concat(receipt_files).concat(audit_files);
                if let Some(p) = &producer {
                    files = files.produce_to(p.clone(), failures.clone(), file_pointer);
                }
                let slot = result.clone();
                write_manifest(files, basis, meta.clone(), store.clone(), failures.clone())
                    .inspect(move |m| {
                        if let Ok(mut g) = slot.lock() {
                            *g = Some(m.clone());
                        }
                    });
            });
        })
        .map_err(|e| anyhow!("cannot start timely workers: {e}"))?;
        for r in guards.join() {
            r.map_err(|e| anyhow!("worker failed: {e}"))?;
        }
    }
    let mut published = 0;
    if let Some(p) = &producer {
        match p.finish(Duration::from_secs(300)) {
            Ok(d) => published = d.delivered,
            Err(e) => failures.push(format!("publishing to Kafka failed: {e}")),
        }
    }
    let wall = t0.elapsed();
    let errors = failures.take_sorted();
    if !errors.is_empty() {
        bail!("run failed:\n  {}", errors.join("\n  "));
    }
    if opts.cluster.process != 0 {
        return Ok(None);
    }
    let manifest = result
        .lock()
        .map_err(|_| anyhow!("result lock poisoned"))?
        .take()
        .ok_or_else(|| anyhow!("run finished without a manifest"))?;
    let latency = latency.summary();
    let record = RunRecord {
        format: "tidemark.run/v1",
        tidemark_version: env!("CARGO_PKG_VERSION"),
        profile: &profile.name,
        policy_rev: &manifest.policy_rev,
        decision_policy_rev: &dcfg_rev,
        ingress: ingress.describe(),
        workers: opts.cluster.peers(),
        processes: opts.cluster.addresses.len().max(1),
        basis_id: &manifest.basis_id,
        basis: &manifest.basis,
        totals: &manifest.totals,
        manifest: tidemark_sinks::layout::manifest_file(&manifest.basis_id),
        published,
        latency_ms: latency.map(|(n, p50, p95, p99, max)| LatencyRecord {
            decisions: n,
            p50,
            p95,
            p99,
            max,
        }),
        started_at: started.clone(),
        finished_at: crate::wallclock::now_rfc3339(),
        wall_ms: wall.as_millis(),
    };
    // Run records are about the processing run (wall clock, pid): they live under runs/ only.
    let run_path = format!(
        "runs/run-{}-{}.json",
        started.replace([':', '-', '.'], ""),
        std::process::id()
    );
    let mut bytes = serde_json::to_vec_pretty(&record)?;
    bytes.push(b'\n');
    store.put_once(&run_path, bytes)?;
    let (decisions, snapshots) = stats.take();
    Ok(Some(RunOutcome {
        manifest,
        run_record: run_path,
        wall_secs: wall.as_secs_f64(),
        decisions,
        snapshots,
        latency,
        published,
    }))
}
