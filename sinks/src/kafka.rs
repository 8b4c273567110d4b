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
    attempt: u32,
}

/// Counts delivery reports and queues rejected records for another attempt; shared by the
/// producer generations of one [`KafkaProducer`].
#[derive(Default)]
pub struct Shared {
    delivered: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    first_error: Mutex<Option<String>>,
    retry: Mutex<Vec<Retry>>,
}

/// The producer context: a handle on the shared counters.
pub struct DeliveryCounter(Arc<Shared>);

impl ClientContext for DeliveryCounter {}

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
            .set("message.timeout.ms", "300000");
        let shared = Arc::new(Shared::default());
        let producer = Self::create(&c, &shared)?;
        Ok(KafkaProducer {
            config: c,
            shared,
            current: std::sync::RwLock::new(producer),
            retired: Mutex::new(Vec::new()),
            sent: AtomicU64::new(0),
        })
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
        self.resend_rejected()?;
        self.send_attempt(topic, partition, key, payload, timestamp, 0)?;
        self.sent.fetch_add(1, Ordering::Relaxed);
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
        for r in &batch {
            self.send_attempt(
                &r.topic,
                r.partition,
                &r.key,
                &r.payload,
                r.timestamp,
                r.attempt,
            )?;
        }
        Ok(batch.len())
    }

    fn send_attempt(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: &[u8],
        timestamp: Option<i64>,
        attempt: u32,
    ) -> Result<(), SinkError> {
        let mut rec = BaseRecord::with_opaque_to(topic, Box::new(attempt))
            .key(key)
            .payload(payload);
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

    /// Flushes (sending rejected records again until none are left), then fails if any
    /// record was not delivered.
    pub fn finish(&self, timeout: Duration) -> Result<Delivered, SinkError> {
        let t0 = Instant::now();
        loop {
            let retired: Vec<Inner> = self.retired.lock().map(|r| r.clone()).unwrap_or_default();
            for p in retired.iter().chain(std::iter::once(&self.producer()?)) {
                p.flush(timeout.saturating_sub(t0.elapsed()))
                    .map_err(|e| SinkError::Kafka(format!("flush: {e}")))?;
            }
            if self.resend_rejected()? == 0 {
                break;
            }
        }
        let ctx = &self.shared;
        let failed = ctx.failed.load(Ordering::Relaxed);
        let sent = self.sent.load(Ordering::Relaxed);
        let delivered = ctx.delivered.load(Ordering::Relaxed);
        if failed > 0 {
            let first = ctx
                .first_error
                .lock()
                .map(|g| g.clone().unwrap_or_default())
                .unwrap_or_default();
            return Err(SinkError::Kafka(format!(
                "{failed} of {sent} records were not delivered (first error: {first})"
            )));
        }
        if delivered != sent {
            return Err(SinkError::Kafka(format!(
                "{delivered} of {sent} records acknowledged after flush"
            )));
        }
        Ok(Delivered {
            sent,
            delivered,
            retried: ctx.retried.load(Ordering::Relaxed),
        })
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
