//! Kafka sinks: an idempotent producer shared by a process's workers, and the timely operator
//! that appends a stream's records to a topic.
//!
//! The producer runs with `enable.idempotence=true` and `acks=all`, so a broker restart or a
//! retried request never duplicates or reorders a partition's records within a run. Every
//! delivery report is counted; [`KafkaProducer::finish`] flushes and fails loudly if any
//! record could not be delivered, naming the first error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use timely::dataflow::operators::Inspect;
use timely::dataflow::StreamVec;

use tidemark_operators::{Failures, LogicalTime};

use crate::error::SinkError;

/// How many times a record the broker rejected is sent again before the run fails.
pub const MAX_ATTEMPTS: u32 = 20;

/// A record to send again: the broker rejected it (so it was not written), e.g. a produce
/// answered with an error by a broker that is shutting down.
struct Retry {
    topic: String,
    partition: Option<i32>,
    key: Vec<u8>,
    payload: Vec<u8>,
    timestamp: Option<i64>,
    headers: Option<OwnedHeaders>,
    attempt: u32,
}

/// Counts delivery reports and queues rejected records for another attempt; shared by the
/// producer generations of one [`KafkaProducer`].
#[derive(Default)]
pub struct Shared {
    delivered: AtomicU64,
    /// When the last acknowledgement arrived.
    last_ack: Mutex<Option<Instant>>,
    failed: AtomicU64,
    retried: AtomicU64,
    first_error: Mutex<Option<String>>,
    retry: Mutex<Vec<Retry>>,
    /// The idempotent producer holds its producer id (librdkafka statistics say "Assigned").
    ready: std::sync::atomic::AtomicBool,
}

/// The producer context: a handle on the shared counters.
pub struct DeliveryCounter(Arc<Shared>);

/// The part of librdkafka's statistics [`KafkaProducer::wait_ready`] reads.
#[derive(serde::Deserialize)]
struct IdempStats {
    eos: Option<IdempState>,
}

#[derive(serde::Deserialize)]
struct IdempState {
    idemp_state: String,
}

impl ClientContext for DeliveryCounter {
    fn stats_raw(&self, statistics: &[u8]) {
        if self.0.ready.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(IdempStats { eos: Some(e) }) = serde_json::from_slice(statistics) {
            if e.idemp_state == "Assigned" {
                self.0.ready.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Errors after which the record may or may not have been written, or that no retry fixes:
/// these fail the run instead of risking a duplicate or spinning.
fn final_error(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageTimedOut
                | C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::Fatal
        )
    )
}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = Box<u32>;
    fn delivery(&self, result: &DeliveryResult<'_>, attempt: Box<u32>) {
        use rdkafka::message::Message;
        let this = &self.0;
        match result {
            Ok(_) => {
                this.delivered.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut t) = this.last_ack.lock() {
                    *t = Some(Instant::now());
                }
            }
            Err((e, msg)) if !final_error(e) && *attempt < MAX_ATTEMPTS => {
                this.retried.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    topic = msg.topic(),
                    attempt = *attempt,
                    "delivery rejected, sending again: {e}"
                );
                if let Ok(mut q) = this.retry.lock() {
                    q.push(Retry {
                        topic: msg.topic().to_owned(),
                        partition: (msg.partition() >= 0).then_some(msg.partition()),
                        key: msg.key().unwrap_or_default().to_vec(),
                        payload: msg.payload().unwrap_or_default().to_vec(),
                        timestamp: msg.timestamp().to_millis(),
                        headers: msg.headers().map(|h| h.detach()),
                        attempt: *attempt + 1,
                    });
                }
            }
            Err((e, msg)) => {
                this.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut g) = this.first_error.lock() {
                    if g.is_none() {
                        *g = Some(format!("{}: {e} (attempt {attempt})", msg.topic()));
                    }
                }
            }
        }
    }
}

type Inner = Arc<ThreadedProducer<DeliveryCounter>>;

/// An idempotent producer (one per process, shared by its workers).
///
/// A broker that goes away mid-request (a restart) can reject in-flight batches, which were
/// then not written; its idempotence state for this producer id may be unusable afterwards.
/// Rejected records are therefore sent again through a fresh producer generation (a new
/// producer id); earlier generations are kept until [`KafkaProducer::finish`] flushes them.
pub struct KafkaProducer {
    config: ClientConfig,
    shared: Arc<Shared>,
    current: std::sync::RwLock<Inner>,
    retired: Mutex<Vec<Inner>>,
    sent: AtomicU64,
    /// Identities of records already on the topics (a resumed run's tail scan): sending one
    /// of them again is skipped, once.
    skip: Mutex<std::collections::HashSet<u128>>,
    skipped: AtomicU64,
    created: Instant,
}

/// The identity of an output record: topic, key and payload. Output records are deterministic,
/// so a record regenerated after a restart has the identity of the one already published.
pub fn record_identity(topic: &str, key: &[u8], payload: &[u8]) -> u128 {
    tidemark_operators::hashing::identity128(&[topic.as_bytes(), key, payload])
}

/// Delivery totals of a producer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Records sent.
    pub sent: u64,
    /// Records acknowledged by the broker.
    pub delivered: u64,
    /// Deliveries the broker rejected that were sent again.
    pub retried: u64,
    /// Records not sent because they were already on their topic (a resumed run).
    pub skipped: u64,
    /// Records whose delivery failed for good (the run fails).
    pub failed: u64,
}

/// Waits until every record `p` was given is acknowledged (or failed) and its delivery report
/// served. rdkafka's own `flush` on a threaded producer waits in steps of 100 ms (its poll
/// competes with the producer's polling thread for the reports), which every commit boundary
/// paid on the worker thread; this checks the queue every millisecond instead.
fn flush_one(p: &Inner, timeout: Duration) -> Result<(), SinkError> {
    // A zero-timeout flush sends what lingers at once; its "timed out" is expected.
    let _ = p.flush(Duration::ZERO);
    let t0 = Instant::now();
    while p.in_flight_count() > 0 {
        if t0.elapsed() >= timeout {
            return Err(SinkError::Kafka(format!(
                "flush: {} records still unacknowledged after {timeout:?}",
                p.in_flight_count()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

impl KafkaProducer {
    /// Creates an idempotent producer from a base client configuration (bootstrap servers and
    /// any security settings).
    pub fn new(base: &ClientConfig) -> Result<Self, SinkError> {
        let mut c = base.clone();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("compression.type", "none")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("message.timeout.ms", "300000")
            // Statistics feed `wait_ready` (the producer id): cheap at this interval.
            .set("statistics.interval.ms", "50");
        let shared = Arc::new(Shared::default());
        let producer = Self::create(&c, &shared)?;
        Ok(KafkaProducer {
            config: c,
            shared,
            current: std::sync::RwLock::new(producer),
            retired: Mutex::new(Vec::new()),
            sent: AtomicU64::new(0),
            skip: Mutex::new(std::collections::HashSet::new()),
            skipped: AtomicU64::new(0),
            created: Instant::now(),
        })
    }

    /// Records already published (by an earlier, interrupted run) that must not be sent again.
    pub fn skip_existing(&self, ids: impl IntoIterator<Item = u128>) {
        if let Ok(mut g) = self.skip.lock() {
            g.extend(ids);
        }
    }

    /// How many sends were skipped because the record was already on its topic.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    fn create(c: &ClientConfig, shared: &Arc<Shared>) -> Result<Inner, SinkError> {
        c.create_with_context(DeliveryCounter(shared.clone()))
            .map(Arc::new)
            .map_err(|e| SinkError::Kafka(format!("cannot create producer: {e}")))
    }

    fn producer(&self) -> Result<Inner, SinkError> {
        self.current
            .read()
            .map(|g| g.clone())
            .map_err(|_| SinkError::Bug("producer lock poisoned".into()))
    }

    /// Queues one record; waits while the local queue is full. `partition` is explicit or
    /// chosen by the key's hash; `timestamp` is the record timestamp in epoch ms. Records the
    /// broker rejected earlier are sent again first.
    pub fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: &[u8],
        timestamp: Option<i64>,
    ) -> Result<(), SinkError> {
        self.send_with_headers(topic, partition, key, payload, timestamp, &[])
    }

    /// [`KafkaProducer::send`] with record headers (name, value), e.g. a producer signature.
    pub fn send_with_headers(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: &[u8],
        timestamp: Option<i64>,
        headers: &[(String, Vec<u8>)],
    ) -> Result<(), SinkError> {
        if let Ok(mut g) = self.skip.lock() {
            if !g.is_empty() && g.remove(&record_identity(topic, key, payload)) {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        self.resend_rejected()?;
        let headers = (!headers.is_empty()).then(|| {
            headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
                h.insert(Header {
                    key: k,
                    value: Some(v),
                })
            })
        });
        self.send_attempt(topic, partition, key, payload, timestamp, headers, 0)?;
        self.sent.fetch_add(1, Ordering::Relaxed);
        tidemark_operators::failpoint::hit("after-produce");
        Ok(())
    }

    /// Sends the records queued by rejected deliveries; returns how many.
    fn resend_rejected(&self) -> Result<usize, SinkError> {
        let batch = match self.shared.retry.lock() {
            Ok(mut q) if !q.is_empty() => std::mem::take(&mut *q),
            _ => return Ok(0),
        };
        // The broker said no: give it a moment, then continue with a new producer id.
        std::thread::sleep(Duration::from_millis(200));
        let fresh = Self::create(&self.config, &self.shared)?;
        let old = match self.current.write() {
            Ok(mut g) => std::mem::replace(&mut *g, fresh),
            Err(_) => return Err(SinkError::Bug("producer lock poisoned".into())),
        };
        if let Ok(mut r) = self.retired.lock() {
            r.push(old);
        }
        let n = batch.len();
        for r in batch {
            self.send_attempt(
                &r.topic,
                r.partition,
                &r.key,
                &r.payload,
                r.timestamp,
                r.headers,
                r.attempt,
            )?;
        }
        Ok(n)
    }

    // One record's parts, borrowed from the hot path's caller: a struct would copy them.
    #[allow(clippy::too_many_arguments)]
    fn send_attempt(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: &[u8],
        timestamp: Option<i64>,
        headers: Option<OwnedHeaders>,
        attempt: u32,
    ) -> Result<(), SinkError> {
        let mut rec = BaseRecord::with_opaque_to(topic, Box::new(attempt))
            .key(key)
            .payload(payload);
        if let Some(h) = headers {
            rec = rec.headers(h);
        }
        if let Some(ts) = timestamp {
            rec = rec.timestamp(ts);
        }
        if let Some(p) = partition {
            rec = rec.partition(p);
        }
        let started = Instant::now();
        let producer = self.producer()?;
        loop {
            match producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                    if started.elapsed() < Duration::from_secs(300) =>
                {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(SinkError::Kafka(format!("producing to {topic}: {e}"))),
            }
        }
    }

    /// Waits until every record sent so far is acknowledged (sending rejected records again
    /// until none are left); fails if any record could not be delivered. A commit is written
    /// only after this succeeded on every worker.
    pub fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        let t0 = Instant::now();
        loop {
            let retired: Vec<Inner> = self.retired.lock().map(|r| r.clone()).unwrap_or_default();
            for p in retired.iter().chain(std::iter::once(&self.producer()?)) {
                flush_one(p, timeout.saturating_sub(t0.elapsed()))?;
            }
            if self.resend_rejected()? == 0 {
                break;
            }
        }
        self.check_failed()
    }

    fn check_failed(&self) -> Result<(), SinkError> {
        let ctx = &self.shared;
        let failed = ctx.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = ctx
                .first_error
                .lock()
                .map(|g| g.clone().unwrap_or_default())
                .unwrap_or_default();
            return Err(SinkError::Kafka(format!(
                "{failed} of {} records were not delivered (first error: {first})",
                self.sent.load(Ordering::Relaxed)
            )));
        }
        Ok(())
    }

    /// Flushes (sending rejected records again until none are left), then fails if any
    /// record was not delivered.
    pub fn finish(&self, timeout: Duration) -> Result<Delivered, SinkError> {
        self.flush(timeout)?;
        let sent = self.sent.load(Ordering::Relaxed);
        let delivered = self.shared.delivered.load(Ordering::Relaxed);
        if delivered != sent {
            return Err(SinkError::Kafka(format!(
                "{delivered} of {sent} records acknowledged after flush"
            )));
        }
        Ok(self.counts())
    }

    /// Waits until the producer can send at once: librdkafka's idempotent producer asks for its
    /// producer id on a 500 ms timer after it is created and holds every record until then, so
    /// a load generator that starts its clock before this sees its first half second of
    /// records arrive late (they set the p95 of our latency probes before this wait).
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), SinkError> {
        let t0 = Instant::now();
        while !self.shared.ready.load(Ordering::Relaxed) {
            if t0.elapsed() >= timeout {
                return Err(SinkError::Kafka(format!(
                    "the producer has no producer id after {timeout:?} (is the broker reachable?)"
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    /// The counters so far.
    pub fn counts(&self) -> Delivered {
        let ctx = &self.shared;
        Delivered {
            sent: self.sent.load(Ordering::Relaxed),
            delivered: ctx.delivered.load(Ordering::Relaxed),
            retried: ctx.retried.load(Ordering::Relaxed),
            skipped: self.skipped(),
            failed: ctx.failed.load(Ordering::Relaxed),
        }
    }

    /// The counters, and — while records are unacknowledged — how long since the last
    /// acknowledgement (or since the producer was created, if none came yet).
    pub fn progress(&self) -> (Delivered, Option<Duration>) {
        let c = self.counts();
        let stalled = (c.sent > c.delivered).then(|| {
            let last = self.shared.last_ack.lock().ok().and_then(|t| *t);
            last.unwrap_or(self.created).elapsed()
        });
        (c, stalled)
    }
}

/// What an encoder of [`ProduceTo`] sends records through: the process's producer, with
/// errors recorded in the run's [`Failures`]. Key and payload are borrowed; librdkafka copies
/// them into its queue.
pub struct Emit<'a> {
    producer: &'a KafkaProducer,
    failures: &'a Failures,
}

impl Emit<'_> {
    /// Sends one record to `topic`, partitioned by the key's hash, with record timestamp
    /// `timestamp` (epoch ms).
    pub fn send(&mut self, topic: &str, key: &[u8], payload: &[u8], timestamp: Option<i64>) {
        if let Err(e) = self.producer.send(topic, None, key, payload, timestamp) {
            self.failures.push(e.to_string());
        }
    }
}

/// Appends a stream's records to Kafka.
pub trait ProduceTo<'scope, D> {
    /// Calls `encode(record, emit)` for each record of the stream; the encoder sends zero or
    /// more Kafka records through `emit`. Errors are recorded in `failures`.
    fn produce_to<F>(
        self,
        producer: Arc<KafkaProducer>,
        failures: Failures,
        encode: F,
    ) -> StreamVec<'scope, LogicalTime, D>
    where
        F: FnMut(&D, &mut Emit<'_>) + 'static;
}

impl<'scope, D: Clone + 'static> ProduceTo<'scope, D> for StreamVec<'scope, LogicalTime, D> {
    fn produce_to<F>(
        self,
        producer: Arc<KafkaProducer>,
        failures: Failures,
        mut encode: F,
    ) -> StreamVec<'scope, LogicalTime, D>
    where
        F: FnMut(&D, &mut Emit<'_>) + 'static,
    {
        self.inspect(move |d| {
            let mut emit = Emit {
                producer: &producer,
                failures: &failures,
            };
            encode(d, &mut emit);
        })
    }
}

/// Key prefix of governance facts that tidemark's offline commands (`backfill`) publish on
/// `fp.bus.control.v1` outside any run: they are not a run's output, so the tail scan of a
/// resumed run ([`published_since`]) ignores them (their wall-clock timestamps would otherwise
/// read as output already published up to that time).
pub const GOV_FACT_KEY_PREFIX: &[u8] = b"gov.fact/";

/// Reads every record of `topic` partition `partition` from `from` up to its current end and
/// returns their identities ([`record_identity`]) with their record timestamps (tidemark
/// stamps every output record with a logical time): what an interrupted run already published
/// above a commit's marks.
pub fn published_since(
    config: &ClientConfig,
    topic: &str,
    partition: u32,
    from: u64,
    timeout: Duration,
) -> Result<Vec<(u128, i64)>, SinkError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let mut c = config.clone();
    c.set("group.id", "tidemark-tail")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = c
        .create()
        .map_err(|e| SinkError::Kafka(format!("tail consumer: {e}")))?;
    let (_, high) = consumer
        .fetch_watermarks(topic, partition as i32, timeout)
        .map_err(|e| SinkError::Kafka(format!("watermarks of {topic}/{partition}: {e}")))?;
    let high = high.max(0) as u64;
    let mut out = Vec::new();
    if from >= high {
        return Ok(out);
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(
        topic,
        partition as i32,
        rdkafka::Offset::Offset(from as i64),
    )
    .map_err(|e| SinkError::Kafka(format!("assign {topic}/{partition}: {e}")))?;
    consumer
        .assign(&tpl)
        .map_err(|e| SinkError::Kafka(format!("assign {topic}/{partition}: {e}")))?;
    let t0 = Instant::now();
    let mut next = from;
    while next < high {
        if t0.elapsed() > timeout {
            return Err(SinkError::Kafka(format!(
                "reading {topic}/{partition} from {from} to {high} timed out at {next}"
            )));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let off = m.offset().max(0) as u64;
                if off < next {
                    continue;
                }
                next = off + 1;
                if m.key().is_some_and(|k| k.starts_with(GOV_FACT_KEY_PREFIX)) {
                    continue;
                }
                out.push((
                    record_identity(
                        topic,
                        m.key().unwrap_or_default(),
                        m.payload().unwrap_or_default(),
                    ),
                    m.timestamp().to_millis().unwrap_or(0),
                ));
            }
            Some(Err(e)) => {
                tracing::warn!(topic, partition, "tail read error, retrying: {e}");
            }
            None => {}
        }
    }
    Ok(out)
}

/// The high watermark of every partition of `topics`.
pub fn high_watermarks(
    config: &ClientConfig,
    topics: &[&str],
    timeout: Duration,
) -> Result<Vec<(String, u32, u64)>, SinkError> {
    Watermarks::new(config)?.read(topics, timeout)
}

/// A client that reads topics' high watermarks, kept for repeated reads: creating a client and
/// connecting it took ~0.2 s, which a commit boundary used to spend on the worker thread.
pub struct Watermarks {
    consumer: rdkafka::consumer::BaseConsumer,
}

impl Watermarks {
    /// A client for the cluster of `config`.
    pub fn new(config: &ClientConfig) -> Result<Self, SinkError> {
        let mut c = config.clone();
        c.set("group.id", "tidemark-marks");
        let consumer = c
            .create()
            .map_err(|e| SinkError::Kafka(format!("marks consumer: {e}")))?;
        Ok(Watermarks { consumer })
    }

    /// The high watermark of every partition of `topics`, in topic order then partition order.
    pub fn read(
        &self,
        topics: &[&str],
        timeout: Duration,
    ) -> Result<Vec<(String, u32, u64)>, SinkError> {
        use rdkafka::consumer::Consumer;
        let mut out = Vec::new();
        for topic in topics {
            let md = self
                .consumer
                .fetch_metadata(Some(topic), timeout)
                .map_err(|e| SinkError::Kafka(format!("metadata of {topic}: {e}")))?;
            let n = md
                .topics()
                .iter()
                .find(|t| t.name() == *topic)
                .map_or(0, |t| t.partitions().len());
            for p in 0..n as i32 {
                let (_, high) = self
                    .consumer
                    .fetch_watermarks(topic, p, timeout)
                    .map_err(|e| SinkError::Kafka(format!("watermarks of {topic}/{p}: {e}")))?;
                out.push(((*topic).to_owned(), p as u32, high.max(0) as u64));
            }
        }
        Ok(out)
    }
}
