//! The online run: ingress log → IG (stamp, dedup) → IEG → OFP → DF → DLA, writing the
//! archive, receipts, quarantine, audit and snapshots, publishing to Kafka, committing as the
//! frontier passes each commit boundary, and resuming from the latest commit on restart
//! (SPEC §12, docs/operations.md). A run record goes under `runs/`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use tidemark_dataflows::pipeline::DecisionConfig;
use tidemark_operators::decision::AuditRecord;
use tidemark_operators::time::millis;
use tidemark_operators::{Failures, PartitionBasis};
use tidemark_sinks::commit::CommitEvent;
use tidemark_sinks::kafka::KafkaProducer;
use tidemark_sinks::layout::COMMIT_PREFIX;
use tidemark_sinks::lease::Lease;
use tidemark_sinks::{Manifest, Root, WriteOnceStore};
use tidemark_sources::{FileLog, KafkaConn, KafkaEnd, KafkaSource, KafkaStart, PartitionedSource};

use crate::config::Profile;
use crate::publish::{Latency, Percentiles};
use crate::resume::{Resume, RootState};

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

    /// Whether the ingress ends (file logs and bounded Kafka runs do; `--until none` does not).
    pub fn bounded(&self) -> bool {
        !matches!(
            self,
            Ingress::Kafka {
                end: KafkaEnd::Unbounded,
                ..
            }
        )
    }

    fn explicit_start(&self) -> bool {
        matches!(
            self,
            Ingress::Kafka {
                start: KafkaStart::Offsets(_),
                ..
            }
        )
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
                // Fail before starting workers if the broker or topic is not there, or the
                // client's security settings do not match the broker's listener.
                conn.check().with_context(|| {
                    format!("cannot read ingress {topic} from {}", conn.brokers)
                })?;
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

    pub(crate) fn config(&self) -> timely::Config {
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
    /// Set (by SIGTERM/SIGINT) to stop gracefully: stop reading, commit, exit.
    pub stop: Arc<AtomicBool>,
    /// Allow an explicit `--from` on a root without commits, deciding from cold state
    /// (benchmarks measuring a live tail); refused otherwise.
    pub cold_start: bool,
    /// How long a graceful stop waits for the last commit.
    pub stop_grace: Duration,
    /// Metrics to fill (the CLI serves them on `wiring.metrics_addr`).
    pub metrics: Option<crate::metrics::Metrics>,
}

impl RunOptions {
    /// A single-process run with `workers` threads, all stages, nothing published.
    pub fn threads(workers: usize) -> Self {
        RunOptions {
            cluster: Cluster::threads(workers),
            decisions: true,
            publish: None,
            stop: Arc::default(),
            cold_start: false,
            stop_grace: Duration::from_secs(60),
            metrics: None,
        }
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// A bounded run reached its end and wrote the manifest: the root is sealed.
    Completed,
    /// Stopped by a signal after its last commit; `run` again to continue.
    Stopped,
}

/// The outcome of a run.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// How it ended.
    pub status: RunStatus,
    /// The manifest written (completed runs).
    pub manifest: Option<Manifest>,
    /// The commit this run resumed from, if any.
    pub resumed_from: Option<u64>,
    /// The latest commit boundary when the run ended.
    pub last_commit: Option<u64>,
    /// Path of the run record.
    pub run_record: String,
    /// Wall-clock seconds.
    pub wall_secs: f64,
    /// Decisions by outcome.
    pub decisions: BTreeMap<String, u64>,
    /// Snapshot records written.
    pub snapshots: u64,
    /// End-to-end decision latency `(count, p50, p95, p99, max)` in ms (ingress record
    /// timestamp → decision handed to the producer), when decisions were published.
    pub latency: Option<Percentiles>,
    /// Engine decision latency `(count, p50, p95, p99, max)` in µs (record polled → decision
    /// handed to the producer), when decisions were published.
    pub engine_latency: Option<Percentiles>,
    /// Kafka records published (this process).
    pub published: u64,
    /// Kafka records not sent again because they were already on their topic.
    pub skipped: u64,
}

impl RunOutcome {
    /// The manifest of a completed run.
    pub fn manifest(&self) -> Result<&Manifest> {
        self.manifest
            .as_ref()
            .ok_or_else(|| anyhow!("the run was stopped before its end: no manifest"))
    }
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
            let d = r.decision.as_str();
            match g.get_mut(d) {
                Some(n) => *n += 1,
                None => {
                    g.insert(d.to_owned(), 1);
                }
            }
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
        details: false,
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

impl From<Percentiles> for LatencyRecord {
    fn from((decisions, p50, p95, p99, max): Percentiles) -> Self {
        LatencyRecord {
            decisions,
            p50,
            p95,
            p99,
            max,
        }
    }
}

#[derive(Serialize)]
struct RunRecord<'a> {
    format: &'static str,
    tidemark_version: &'static str,
    status: &'a str,
    error: Option<String>,
    profile: &'a str,
    profile_source: Option<&'a str>,
    policy_rev: &'a str,
    decision_policy_rev: &'a str,
    ingress: String,
    workers: usize,
    processes: usize,
    resumed_from: Option<u64>,
    last_commit: Option<u64>,
    basis_id: Option<&'a str>,
    basis: Option<&'a [PartitionBasis]>,
    totals: Option<&'a tidemark_sinks::manifest::ReceiptCounts>,
    manifest: Option<String>,
    published: u64,
    skipped: u64,
    latency_ms: Option<LatencyRecord>,
    engine_latency_us: Option<LatencyRecord>,
    started_at: String,
    finished_at: String,
    wall_ms: u128,
}

/// Runs the whole pipeline (IG → IEG → OFP → DF → DLA) over `ingress` with `workers` threads,
/// writing under `data`.
pub fn run(
    profile: &Profile,
    ingress: &Ingress,
    data: impl Into<Root>,
    workers: usize,
) -> Result<RunOutcome> {
    run_stages(profile, ingress, data, workers, true)
}

/// Like [`run`]; with `decisions == false` only IG runs (archive, receipts, quarantine), which
/// is what the IG benchmark measures.
pub fn run_stages(
    profile: &Profile,
    ingress: &Ingress,
    data: impl Into<Root>,
    workers: usize,
    decisions: bool,
) -> Result<RunOutcome> {
    let opts = RunOptions {
        decisions,
        ..RunOptions::threads(workers)
    };
    run_with(profile, ingress, data, &opts)?
        .ok_or_else(|| anyhow!("a single-process run finished without an outcome"))
}

/// This host's name (lease holders name it), or `?`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

/// The latest commit boundary written under the root, if any.
pub fn latest_commit(store: &WriteOnceStore) -> Option<u64> {
    store
        .list(COMMIT_PREFIX)
        .ok()?
        .last()
        .and_then(|p| p.rsplit("e=").next())
        .and_then(|s| s.trim_end_matches(".json").parse().ok())
}

/// How a run uses its root.
struct RootPlan {
    /// Continue from this commit.
    resume: Option<Resume>,
    /// Commits at or below this boundary exist already and are not written again (a rerun of
    /// a sealed root).
    committed: u64,
}

/// Refuses what would mix or corrupt a root, and loads the commit to resume from.
fn check_root(
    profile: &Profile,
    ingress: &Ingress,
    store: &WriteOnceStore,
    dcfg: &DecisionConfig,
    opts: &RunOptions,
) -> Result<RootPlan> {
    let state = RootState::load(store)?;
    if let Some(m) = state.manifests.first() {
        // A completed bounded run closed its last intervals: nothing can be appended. A
        // bounded rerun from the beginning must reproduce every file (write-once checks it).
        if !ingress.bounded() || ingress.explicit_start() {
            bail!(
                "data root {} is sealed: a bounded run completed there ({m}) and closed its last intervals, so nothing can be appended; only a bounded rerun from the beginning is allowed. Use a new data root",
                store.description()
            );
        }
        if opts.cluster.process == 0 {
            eprintln!("run: {} is sealed ({m}): rerunning from the beginning; every file must come out identical", store.description());
        }
        return Ok(RootPlan {
            resume: None,
            committed: state.commit.map_or(0, |c| c.boundary),
        });
    }
    let Some(commit) = state.commit else {
        if ingress.explicit_start() && !opts.cold_start {
            bail!(
                "--from on a root without commits would decide from cold state (no windows, graph or dedup history before that offset); start from the beginning, or resume a root that has commits (resume needs no flag)"
            );
        }
        return Ok(RootPlan {
            resume: None,
            committed: 0,
        });
    };
    if ingress.explicit_start() {
        bail!(
            "data root {} has commits: a run resumes from the latest one (boundary {}) by itself; --from is not allowed here",
            store.description(),
            commit.boundary
        );
    }
    if commit.policy_rev != profile.policy_rev() || commit.decision_policy_rev != dcfg.policy_rev {
        bail!(
            "data root {} was committed under policy {} / {}, this run uses {} / {}: one root holds one policy; use the profile it was started with or a new root",
            store.description(),
            commit.policy_rev,
            commit.decision_policy_rev,
            profile.policy_rev(),
            dcfg.policy_rev
        );
    }
    let committed = commit.boundary;
    let r = crate::resume::prepare(
        store,
        commit,
        millis(profile.ig.dedup_window),
        millis(profile.archive.interval),
    )?;
    Ok(RootPlan {
        resume: Some(r),
        committed,
    })
}

/// The genesis commit of a fresh root: every partition from its first offset with a fresh
/// clock, and the output topics' current ends as marks.
fn genesis_commit(
    profile: &Profile,
    dcfg: &DecisionConfig,
    src: &dyn PartitionedSource,
    publish: Option<&KafkaConn>,
) -> Result<tidemark_sinks::commit::CommitRecord> {
    let mut partitions = Vec::new();
    let mut basis_start = BTreeMap::new();
    for p in src.partitions()? {
        let first = src.open(p)?.next_offset();
        basis_start.insert(p, first);
        partitions.push(tidemark_operators::commit::PartitionResume {
            partition: p,
            first_offset: first,
            offset: first,
            clock: tidemark_operators::PartitionClock::new(millis(profile.ig.allowed_lateness)),
            floor: 0,
        });
    }
    let marks = match publish {
        Some(conn) => crate::publish::output_marks(conn)?,
        None => Vec::new(),
    };
    Ok(tidemark_sinks::commit::CommitRecord {
        format: tidemark_sinks::commit::COMMIT_FORMAT.to_owned(),
        boundary: 0,
        policy_rev: profile.policy_rev(),
        decision_policy_rev: dcfg.policy_rev.clone(),
        partitions,
        marks,
        basis_start,
        files: Vec::new(),
    })
}

/// Runs the pipeline as one process of `opts.cluster`. Process 0 returns the outcome; other
/// processes return `None`. See the module docs for commits and resume.
pub fn run_with(
    profile: &Profile,
    ingress: &Ingress,
    data: impl Into<Root>,
    opts: &RunOptions,
) -> Result<Option<RunOutcome>> {
    let data: Root = data.into();
    let started = crate::wallclock::now_rfc3339();
    let t0 = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the I/O runtime")?;
    let store = WriteOnceStore::open(&data, rt.handle().clone())
        .with_context(|| format!("cannot open data root {data}"))?;
    let failures = Failures::default();
    // One writer per data root: process 0 holds the lease for the whole run; losing it (S3:
    // another run took it after this one could not renew) fails the run.
    let _lease = if opts.cluster.process == 0 {
        let holder = format!(
            "pid {} on {} since {started}",
            std::process::id(),
            host_name()
        );
        let lost = failures.clone();
        Some(Lease::acquire(
            &data,
            &store,
            &holder,
            profile.wiring.lease_ttl,
            Box::new(move |why| lost.push(why)),
        )?)
    } else {
        None
    };
    let dcfg = decision_config(profile, 0, None)?;
    let plan = check_root(profile, ingress, &store, &dcfg, opts)?;
    let resume = plan.resume;
    let resumed_from = resume
        .as_ref()
        .map(|r| r.commit.boundary)
        .filter(|b| *b > 0);
    if let (Some(r), 0, Some(_)) = (&resume, opts.cluster.process, resumed_from) {
        eprintln!(
            "run: resuming from commit {} ({}): re-reading {} and rebuilding state from the archive",
            r.commit.boundary,
            tidemark_operators::time::fmt_rfc3339_millis(r.commit.boundary),
            r.commit
                .partitions
                .iter()
                .map(|p| format!("{}:{}", p.partition, p.offset))
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    let src = ingress.open()?;
    // Producer keys come from the environment; a listed key that is missing stops the run
    // before it writes anything.
    let keys = crate::config::signing_keys(profile)?;
    if opts.cluster.process == 0 {
        // SPEC §11: the first run under a policy revision records (and publishes) it, once
        // the ingress is known to be reachable and before the genesis commit takes its marks.
        let activated =
            crate::gov::activate_policy(&store, &dcfg.policy_rev, &profile.name, |f| match &opts
                .publish
            {
                Some(conn) => crate::gov::publish(conn, &[f]),
                None => Ok(()),
            })?;
        if let Some(f) = activated {
            eprintln!(
                "run: policy revision {} activated under this root ({})",
                f.subject,
                crate::gov::policy_path(&f.subject)
            );
        }
    }
    // A fresh root gets a genesis commit (boundary 0) before anything is published: a run
    // killed before its first real commit then resumes from it instead of starting over
    // blind, and knows which output records are already on the topics.
    let resume = match (resume, opts.cluster.process) {
        (None, 0) if plan.committed == 0 => {
            let genesis = genesis_commit(profile, &dcfg, src.as_ref(), opts.publish.as_ref())?;
            store.put_once(&tidemark_sinks::commit::commit_file(0), genesis.to_bytes())?;
            Some(crate::resume::prepare(
                &store,
                genesis,
                millis(profile.ig.dedup_window),
                millis(profile.archive.interval),
            )?)
        }
        (r, _) => r,
    };
    let mut mark_cap = None;
    let producer = match &opts.publish {
        Some(conn) => {
            let p = KafkaProducer::new(&conn.client_config()).context("cannot publish to Kafka")?;
            if let Some(r) = &resume {
                let tail = crate::resume::published_tail(&conn.client_config(), &r.commit)?;
                if let Some(t) = tail.max_time {
                    mark_cap = Some((t, r.commit.marks.clone()));
                }
                p.skip_existing(tail.ids);
            }
            Some(Arc::new(p))
        }
        None => None,
    };
    let stats = OutputStats::default();
    let latency = Latency::default();
    let events: Arc<Mutex<Vec<CommitEvent>>> = Arc::default();
    let halt = Arc::new(AtomicBool::new(false));
    let wiring = crate::dataflow::Wiring {
        profile: profile.clone(),
        src,
        store: store.clone(),
        producer: producer.clone(),
        publish: opts.publish.clone(),
        decisions: opts.decisions,
        stop: opts.stop.clone(),
        resume: resume.map(Arc::new),
        committed: plan.committed,
        mark_cap,
        failures: failures.clone(),
        stats: stats.clone(),
        latency: latency.clone(),
        events: events.clone(),
        keys,
        metrics: opts.metrics.clone(),
    };
    if let Some(m) = &opts.metrics {
        m.set_failures(failures.clone());
        m.set_store(store.stats());
        if let Some(p) = &producer {
            m.set_producer(p.clone());
        }
    }
    let guards = {
        let (wiring, halt) = (Arc::new(wiring), halt.clone());
        timely::execute(opts.cluster.config(), move |worker| {
            crate::slow::log_slow_activations(worker, wiring.profile.wiring.slow_activation);
            crate::dataflow::build(worker, &wiring);
            while !halt.load(Ordering::Relaxed) {
                if !worker.step_or_park(Some(Duration::from_millis(20))) {
                    return;
                }
            }
            for id in worker.installed_dataflows() {
                worker.drop_dataflow(id);
            }
        })
        .map_err(|e| anyhow!("cannot start timely workers: {e}"))?
    };
    let done = Arc::new(AtomicBool::new(false));
    let joiner = {
        let done = done.clone();
        std::thread::spawn(move || {
            let results: Vec<_> = guards.join();
            done.store(true, Ordering::Relaxed);
            results
                .into_iter()
                .map(|r| r.map_err(|e| anyhow!("worker failed: {e}")))
                .collect::<Result<Vec<()>>>()
        })
    };
    // Supervise: a failure or a stop ends the run; otherwise wait for the dataflow's end.
    let mut stopping: Option<(Instant, Option<u64>)> = None;
    let mut status = RunStatus::Completed;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if failures.any() {
            halt.store(true, Ordering::Relaxed);
            break;
        }
        if opts.stop.load(Ordering::Relaxed) {
            status = RunStatus::Stopped;
            let (since, target) = stopping.get_or_insert_with(|| (Instant::now(), None));
            // The last boundary every source has passed is committed once in-flight outputs
            // are durable; wait for the commits to stop advancing.
            let now = latest_commit(&store);
            if *target != now {
                *target = now;
                *since = Instant::now();
            }
            let quiet = since.elapsed() >= Duration::from_millis(1500);
            if quiet || since.elapsed() >= opts.stop_grace {
                halt.store(true, Ordering::Relaxed);
                break;
            }
        }
    }
    let joined = joiner
        .join()
        .map_err(|_| anyhow!("worker supervisor panicked"))?;
    let mut published = 0;
    let mut skipped = 0;
    if let Some(p) = &producer {
        match p.finish(Duration::from_secs(300)) {
            Ok(d) => {
                published = d.delivered;
                skipped = d.skipped;
            }
            Err(e) => failures.push(format!("publishing to Kafka failed: {e}")),
        }
    }
    if let Err(e) = joined {
        failures.push(e.to_string());
    }
    let wall = t0.elapsed();
    let errors = failures.take_sorted();
    let manifest = events.lock().ok().and_then(|g| {
        g.iter().rev().find_map(|e| match e {
            CommitEvent::Manifest(m) => Some((**m).clone()),
            CommitEvent::Committed(_) => None,
        })
    });
    let last_commit = latest_commit(&store);
    let engine_latency = latency.engine_summary();
    let latency = latency.summary();
    let error = (!errors.is_empty()).then(|| errors.join("\n  "));
    if error.is_none()
        && status == RunStatus::Completed
        && manifest.is_none()
        && opts.cluster.process == 0
    {
        failures.push("run finished without a manifest");
    }
    let error = error.or_else(|| {
        let e = failures.take_sorted();
        (!e.is_empty()).then(|| e.join("\n  "))
    });
    let status_str = match (&error, status) {
        (Some(_), _) => "failed",
        (None, RunStatus::Completed) => "completed",
        (None, RunStatus::Stopped) => "stopped",
    };
    let run_path = if opts.cluster.process == 0 {
        let record = RunRecord {
            format: "tidemark.run/v2",
            tidemark_version: env!("CARGO_PKG_VERSION"),
            status: status_str,
            error: error.clone(),
            profile: &profile.name,
            profile_source: profile.source.as_deref(),
            policy_rev: &profile.policy_rev(),
            decision_policy_rev: &dcfg.policy_rev,
            ingress: ingress.describe(),
            workers: opts.cluster.peers(),
            processes: opts.cluster.addresses.len().max(1),
            resumed_from,
            last_commit,
            basis_id: manifest.as_ref().map(|m| m.basis_id.as_str()),
            basis: manifest.as_ref().map(|m| m.basis.as_slice()),
            totals: manifest.as_ref().map(|m| &m.totals),
            manifest: manifest
                .as_ref()
                .map(|m| tidemark_sinks::layout::manifest_file(&m.basis_id)),
            published,
            skipped,
            latency_ms: latency.map(LatencyRecord::from),
            engine_latency_us: engine_latency.map(LatencyRecord::from),
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
        run_path
    } else {
        String::new()
    };
    if let Some(e) = error {
        bail!("run failed:\n  {e}");
    }
    if opts.cluster.process != 0 {
        return Ok(None);
    }
    let (decisions, snapshots) = stats.take();
    Ok(Some(RunOutcome {
        status,
        manifest,
        resumed_from,
        last_commit,
        run_record: run_path,
        wall_secs: wall.as_secs_f64(),
        decisions,
        snapshots,
        latency,
        engine_latency,
        published,
        skipped,
    }))
}
