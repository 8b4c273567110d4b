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

/// Counts delivery reports.
#[derive(Default)]
pub struct DeliveryCounter {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, msg)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut g) = self.first_error.lock() {
                    if g.is_none() {
                        use rdkafka::message::Message;
                        *g = Some(format!("{}: {e}", msg.topic()));
                    }
                }
            }
        }
    }
}

/// An idempotent producer (one per process, shared by its workers).
pub struct KafkaProducer {
    producer: ThreadedProducer<DeliveryCounter>,
    sent: AtomicU64,
}

/// Delivery totals of a producer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Records sent.
    pub sent: u64,
    /// Records acknowledged by the broker.
    pub delivered: u64,
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
        let producer = c
            .create_with_context(DeliveryCounter::default())
            .map_err(|e| SinkError::Kafka(format!("cannot create producer: {e}")))?;
        Ok(KafkaProducer {
            producer,
            sent: AtomicU64::new(0),
        })
    }

    /// Queues one record; waits while the local queue is full. `partition` is explicit or
    /// chosen by the key's hash; `timestamp` is the record timestamp in epoch ms.
    pub fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: &[u8],
        timestamp: Option<i64>,
    ) -> Result<(), SinkError> {
        let mut rec = BaseRecord::to(topic).key(key).payload(payload);
        if let Some(ts) = timestamp {
            rec = rec.timestamp(ts);
        }
        if let Some(p) = partition {
            rec = rec.partition(p);
        }
        let started = Instant::now();
        loop {
            match self.producer.send(rec) {
                Ok(()) => {
                    self.sent.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
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

    /// Flushes, then fails if any record was not delivered.
    pub fn finish(&self, timeout: Duration) -> Result<Delivered, SinkError> {
        self.producer
            .flush(timeout)
            .map_err(|e| SinkError::Kafka(format!("flush: {e}")))?;
        let ctx = self.producer.context();
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
        Ok(Delivered { sent, delivered })
    }
}

/// One Kafka record: key, payload, record timestamp (epoch ms).
pub struct KafkaRecord {
    /// Topic.
    pub topic: &'static str,
    /// Key bytes.
    pub key: Vec<u8>,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Record timestamp.
    pub timestamp: Option<i64>,
}

/// Appends a stream's records to Kafka.
pub trait ProduceTo<'scope, D> {
    /// Sends `encode(record)` for each record of the stream (zero or more Kafka records each).
    /// Errors are recorded in `failures`.
    fn produce_to<F>(
        self,
        producer: Arc<KafkaProducer>,
        failures: Failures,
        encode: F,
    ) -> StreamVec<'scope, LogicalTime, D>
    where
        F: FnMut(&D, &mut Vec<KafkaRecord>) + 'static;
}

impl<'scope, D: Clone + 'static> ProduceTo<'scope, D> for StreamVec<'scope, LogicalTime, D> {
    fn produce_to<F>(
        self,
        producer: Arc<KafkaProducer>,
        failures: Failures,
        mut encode: F,
    ) -> StreamVec<'scope, LogicalTime, D>
    where
        F: FnMut(&D, &mut Vec<KafkaRecord>) + 'static,
    {
        let mut buf = Vec::new();
        self.inspect(move |d| {
            encode(d, &mut buf);
            for r in buf.drain(..) {
                if let Err(e) = producer.send(r.topic, None, &r.key, &r.payload, r.timestamp) {
                    failures.push(e.to_string());
                }
            }
        })
    }
}
