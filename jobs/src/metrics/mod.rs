//! Prometheus metrics and health endpoints of `tidemark run` (docs/operations.md, SPEC §13).
//!
//! [`Metrics`] is filled by the dataflow (receipts, decisions, files, commits), by the source
//! (per-partition positions and watermarks, worker frontiers) and by a probe thread that asks
//! the ingress broker for its high watermarks. [`serve`] exposes it over HTTP:
//! `/metrics` (Prometheus text format, `prometheus-client`), `/healthz` (the process is alive)
//! and `/readyz` (green / yellow / red, see [`Metrics::health`]); [`start`] does both for a
//! `run` process per its profile.

mod http;

pub use http::{get, sample, serve, start, Endpoint};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use tidemark_operators::decision::AuditRecord;
use tidemark_operators::ingest::Receipt;
use tidemark_operators::{Failures, LogicalTime};
use tidemark_sinks::kafka::KafkaProducer;
use tidemark_sinks::manifest::FileEntry;
use tidemark_sources::KafkaSource;

/// Receipt counter labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiptLabels {
    status: &'static str,
    reason: &'static str,
}

/// Decision counter labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: &'static str,
}

/// File counter labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabels {
    kind: String,
}

/// Readiness thresholds (profile `wiring.ready_*`).
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    /// Yellow above this many records of consumer lag on any partition.
    pub max_lag: u64,
    /// Yellow when any partition's watermark is older than this (wall clock − W_p).
    pub max_watermark_age: Duration,
}

#[derive(Clone, Copy, Debug, Default)]
struct PartitionState {
    /// Next offset the source will read.
    next: u64,
    /// `W_p` (logical ms).
    watermark: LogicalTime,
    /// The broker's high watermark, from the probe.
    high: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    partitions: BTreeMap<u32, PartitionState>,
    frontiers: BTreeMap<usize, LogicalTime>,
    last_commit: Option<Instant>,
    /// The probe's last success and last error.
    broker_ok: Option<Instant>,
    broker_error: Option<String>,
    probing: bool,
}

/// Readiness level of `/readyz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Serving within thresholds.
    Green,
    /// Serving, but behind (lag or watermark age above thresholds) or still starting.
    Yellow,
    /// Not serving: a failure was recorded, the ingress broker is unreachable, or the
    /// producer cannot deliver.
    Red,
}

impl Level {
    /// `green`, `yellow` or `red`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Green => "green",
            Level::Yellow => "yellow",
            Level::Red => "red",
        }
    }
}

/// The metrics of one run process (cheap to clone; all clones share the same values).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

struct Inner {
    registry: Registry,
    records: Family<ReceiptLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    latency: Histogram,
    files: Family<FileLabels, Counter>,
    commits: Counter,
    live: Arc<Live>,
}

/// What is computed at scrape time (wall-clock ages, lag, producer counters).
struct Live {
    state: Mutex<State>,
    producer: OnceLock<Arc<KafkaProducer>>,
    store: OnceLock<Arc<tidemark_sinks::StoreStats>>,
    failures: OnceLock<Failures>,
    thresholds: Thresholds,
    started: Instant,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

/// How long the broker probe may fail before readiness turns red.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_STALE: Duration = Duration::from_secs(5);
/// Undelivered records with no acknowledgement for this long: the producer cannot deliver.
const DELIVERY_STALL: Duration = Duration::from_secs(15);

impl Metrics {
    /// Empty metrics with readiness `thresholds`.
    pub fn new(thresholds: Thresholds) -> Metrics {
        let mut registry = Registry::with_prefix("tidemark");
        let records = Family::<ReceiptLabels, Counter>::default();
        registry.register(
            "ingress_records",
            "Ingress records by receipt status and reason code",
            records.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register("decisions", "Decisions by outcome", decisions.clone());
        let latency = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        registry.register(
            "decision_latency_seconds",
            "Record timestamp to decision emitted (wall clock)",
            latency.clone(),
        );
        let files = Family::<FileLabels, Counter>::default();
        registry.register("files_written", "Files written by kind", files.clone());
        let commits = Counter::default();
        registry.register("commits", "Commit points written", commits.clone());
        let live = Arc::new(Live {
            state: Mutex::default(),
            producer: OnceLock::new(),
            store: OnceLock::new(),
            failures: OnceLock::new(),
            thresholds,
            started: Instant::now(),
        });
        registry.register_collector(Box::new(live.clone()));
        Metrics {
            inner: Arc::new(Inner {
                registry,
                records,
                decisions,
                latency,
                files,
                commits,
                live,
            }),
        }
    }

    /// Counts one receipt.
    pub fn receipt(&self, r: &Receipt) {
        let labels = ReceiptLabels {
            status: r.status.as_str(),
            reason: r.reason.map_or("", |c| c.as_str()),
        };
        self.inner.records.get_or_create(&labels).inc();
    }

    /// Counts one decision and its latency from the record timestamp (now: wall clock).
    pub fn decision(&self, r: &AuditRecord, now_ms: u64) {
        let labels = DecisionLabels {
            decision: r.decision.as_str(),
        };
        self.inner.decisions.get_or_create(&labels).inc();
        let ms = now_ms.saturating_sub(r.source_record_ts);
        self.inner.latency.observe(ms as f64 / 1000.0);
    }

    /// Counts one written file.
    pub fn file(&self, f: &FileEntry) {
        let kind = serde_json::to_value(f.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.inner.files.get_or_create(&FileLabels { kind }).inc();
    }

    /// Notes a commit point written now.
    pub fn commit(&self) {
        self.inner.commits.inc();
        self.inner
            .live
            .with(|s| s.last_commit = Some(Instant::now()));
    }

    /// The source's state after an activation: per partition `(partition, next offset, W_p)`
    /// and the worker's frontier.
    pub fn source(
        &self,
        worker: usize,
        partitions: &[(u32, u64, LogicalTime)],
        frontier: LogicalTime,
    ) {
        self.inner.live.with(|s| {
            for &(p, next, w) in partitions {
                let e = s.partitions.entry(p).or_default();
                e.next = next;
                e.watermark = w;
            }
            s.frontiers.insert(worker, frontier);
        });
    }

    /// Publishing counters come from this producer.
    pub fn set_producer(&self, p: Arc<KafkaProducer>) {
        let _ = self.inner.live.producer.set(p);
    }

    /// Object-store retry counters come from this store.
    pub fn set_store(&self, stats: Arc<tidemark_sinks::StoreStats>) {
        let _ = self.inner.live.store.set(stats);
    }

    /// Run failures turn readiness red.
    pub fn set_failures(&self, f: Failures) {
        let _ = self.inner.live.failures.set(f);
    }

    /// Starts a thread asking `src`'s broker for its high watermarks every second (consumer
    /// lag, and the broker-reachable signal of `/readyz`). It ends with the process.
    pub fn probe(&self, src: KafkaSource) {
        self.inner.live.with(|s| s.probing = true);
        let live = self.inner.live.clone();
        std::thread::spawn(move || loop {
            let r = src.high_watermarks();
            live.with(|s| match r {
                Ok(highs) => {
                    for (p, h) in highs {
                        s.partitions.entry(p).or_default().high = Some(h);
                    }
                    s.broker_ok = Some(Instant::now());
                    s.broker_error = None;
                }
                Err(e) => s.broker_error = Some(e.to_string()),
            });
            std::thread::sleep(PROBE_EVERY);
        });
    }

    /// Readiness and its reasons. Red: a failure was recorded, the broker probe has not
    /// succeeded for 5 s, or the producer has undelivered records and no acknowledgement
    /// for 15 s (or a delivery failed for good). Yellow: no source progress yet, or a
    /// partition's lag or watermark age above the thresholds. Green otherwise.
    pub fn health(&self) -> (Level, Vec<String>) {
        self.inner.live.health()
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> Result<String> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)
            .map_err(|e| anyhow!("encoding metrics: {e}"))?;
        Ok(out)
    }
}

impl Live {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut g = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    fn health(&self) -> (Level, Vec<String>) {
        let now_ms = crate::wallclock::now_ms();
        let mut red = Vec::new();
        let mut yellow = Vec::new();
        if let Some(f) = self.failures.get() {
            if f.any() {
                red.push("the run recorded a failure (see its log)".to_owned());
            }
        }
        if let Some(p) = self.producer.get() {
            let (c, stalled) = p.progress();
            if c.failed > 0 {
                red.push(format!("producer: {} records failed delivery", c.failed));
            } else if stalled.is_some_and(|d| d >= DELIVERY_STALL) {
                red.push(format!(
                    "producer cannot deliver: {} records unacknowledged",
                    c.sent.saturating_sub(c.delivered)
                ));
            }
        }
        self.with(|s| {
            if s.probing {
                let fresh = s.broker_ok.is_some_and(|t| t.elapsed() < PROBE_STALE);
                let started = self.started.elapsed() >= PROBE_STALE;
                if !fresh && (started || s.broker_error.is_some()) {
                    red.push(format!(
                        "ingress broker unreachable: {}",
                        s.broker_error.as_deref().unwrap_or("no answer")
                    ));
                }
            }
            if s.partitions.is_empty() {
                yellow.push("starting: no partition read yet".to_owned());
            }
            for (p, st) in &s.partitions {
                let lag = st.high.map(|h| h.saturating_sub(st.next));
                if let Some(lag) = lag.filter(|l| *l > self.thresholds.max_lag) {
                    yellow.push(format!("partition {p}: lag {lag} records"));
                }
                let age = Duration::from_millis(now_ms.saturating_sub(st.watermark));
                if age > self.thresholds.max_watermark_age {
                    yellow.push(format!(
                        "partition {p}: watermark {} behind the wall clock",
                        humantime::format_duration(Duration::from_secs(age.as_secs()))
                    ));
                }
            }
        });
        if !red.is_empty() {
            (Level::Red, red)
        } else if !yellow.is_empty() {
            (Level::Yellow, yellow)
        } else {
            (Level::Green, Vec::new())
        }
    }
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&'static str, String)>, f64)],
) -> Result<(), std::fmt::Error> {
    let proto = ConstGauge::new(0.0f64);
    let mut family = enc.encode_descriptor(name, help, None, proto.metric_type())?;
    for (labels, v) in rows {
        ConstGauge::new(*v).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for Live {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now_ms = crate::wallclock::now_ms();
        let (parts, frontiers, commit_age) = self.with(|s| {
            (
                s.partitions.clone(),
                s.frontiers.clone(),
                s.last_commit.map(|t| t.elapsed().as_secs_f64()),
            )
        });
        let by_partition = |f: &dyn Fn(&PartitionState) -> Option<f64>| {
            parts
                .iter()
                .filter_map(|(p, st)| Some((vec![("partition", p.to_string())], f(st)?)))
                .collect::<Vec<_>>()
        };
        gauge(
            &mut enc,
            "ingress_consumer_lag",
            "Records between the broker's high watermark and the next offset read",
            &by_partition(&|st| st.high.map(|h| h.saturating_sub(st.next) as f64)),
        )?;
        gauge(
            &mut enc,
            "ingress_position",
            "Next ingress offset the source reads",
            &by_partition(&|st| Some(st.next as f64)),
        )?;
        gauge(
            &mut enc,
            "ingress_watermark_ms",
            "Partition watermark W_p (logical epoch ms)",
            &by_partition(&|st| Some(st.watermark as f64)),
        )?;
        gauge(
            &mut enc,
            "ingress_watermark_age_seconds",
            "Wall clock minus the partition watermark W_p",
            &by_partition(&|st| Some(now_ms.saturating_sub(st.watermark) as f64 / 1000.0)),
        )?;
        let rows: Vec<_> = frontiers
            .iter()
            .map(|(w, f)| (vec![("worker", w.to_string())], *f as f64))
            .collect();
        gauge(
            &mut enc,
            "worker_frontier_ms",
            "Source frontier of each worker (logical epoch ms)",
            &rows,
        )?;
        if let Some(age) = commit_age {
            gauge(
                &mut enc,
                "last_commit_age_seconds",
                "Seconds since the last commit point",
                &[(vec![], age)],
            )?;
        }
        if let Some(p) = self.producer.get() {
            let (c, _) = p.progress();
            counter(
                &mut enc,
                "published_records",
                "Records handed to the producer",
                c.sent,
            )?;
            counter(
                &mut enc,
                "published_delivered",
                "Records acknowledged by the broker",
                c.delivered,
            )?;
            counter(
                &mut enc,
                "publish_retries",
                "Deliveries rejected and sent again",
                c.retried,
            )?;
            counter(
                &mut enc,
                "publish_errors",
                "Records that failed delivery for good",
                c.failed,
            )?;
            counter(
                &mut enc,
                "publish_skipped",
                "Records already on their topic (resumed run)",
                c.skipped,
            )?;
        }
        if let Some(st) = self.store.get() {
            counter(
                &mut enc,
                "store_retries",
                "Object-store requests retried after a transient failure",
                st.retries(),
            )?;
            counter(
                &mut enc,
                "store_errors",
                "Object-store requests that failed after every retry",
                st.gave_up(),
            )?;
        }
        let (level, _) = self.health();
        let rows: Vec<_> = [Level::Green, Level::Yellow, Level::Red]
            .iter()
            .map(|l| {
                (
                    vec![("state", l.as_str().to_owned())],
                    f64::from(u8::from(*l == level)),
                )
            })
            .collect();
        gauge(
            &mut enc,
            "ready",
            "Readiness (1 for the current state)",
            &rows,
        )
    }
}
